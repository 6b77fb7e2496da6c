/* filters: the registry of every filter, in the order the pipeline runs
 * them at each stage (the first tempfail or reject ends a stage). Each
 * filter's `enabled` says whether its setting turns it on. */
#ifndef POSTHORN_FILTERS_H
#define POSTHORN_FILTERS_H

#include <stddef.h>

#include "filter.h"

extern const struct filter_ops gtube_filter;     /* gtube.c */
extern const struct filter_ops greylist_filter;  /* greylist.c */

/* Every filter built in; *n is set to their number. */
const struct filter_ops *const *filters_registry(size_t *n);

#endif
