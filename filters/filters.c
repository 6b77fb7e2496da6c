/* The filter registry. Order: connection-level checks first (DNSBL), then
 * the envelope (SPF at MAIL, greylisting at RCPT), then the content (virus
 * scan before spam scoring, so a virus is refused as a virus). */
#include "filters.h"
#include "antivirus.h"
#include "bayes.h"
#include "dnsbl.h"
#include "rules.h"
#include "spf.h"

static const struct filter_ops *const registry[] = {
    &dnsbl_filter,
    &spf_filter,
    &greylist_filter,
    &clamav_filter,
    &gtube_filter,
    &rules_filter,
    &bayes_filter,
};

const struct filter_ops *const *filters_registry(size_t *n)
{
    *n = sizeof registry / sizeof *registry;
    return registry;
}
