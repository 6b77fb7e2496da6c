/* The filter registry. Order: connection-level checks first (DNSBL), then
 * the envelope (SPF at MAIL, greylisting at RCPT), then the content (virus
 * scan before spam scoring, so a virus is refused as a virus). */
#include "filters.h"
#include "antivirus.h"

#if __has_include("spf.h")
#include "spf.h"
#define HAVE_SPF_FILTER 1
#endif

static const struct filter_ops *const registry[] = {
#ifdef HAVE_SPF_FILTER
    &spf_filter,
#endif
    &greylist_filter,
    &clamav_filter,
    &gtube_filter,
};

const struct filter_ops *const *filters_registry(size_t *n)
{
    *n = sizeof registry / sizeof *registry;
    return registry;
}
