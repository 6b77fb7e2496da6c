/* dns_cache: the answers of blocking lookups (dns_sync_query), kept for
 * their TTL, so that a filter asking the same question for message after
 * message (the SPF record of a busy sender domain, a frequent client's
 * DNSBL listings) is answered from memory. Each blocking lookup through
 * libunbound costs a resolver set-up (about 1.4 ms of CPU even when
 * libunbound has the answer cached); a hit here costs a hash and a copy.
 *
 * Positive answers live for their smallest record TTL, capped at
 * DNS_CACHE_TTL_MAX; NXDOMAIN and NODATA for DNS_CACHE_NEGATIVE_TTL;
 * temporary and permanent failures are never kept. The table is
 * direct-mapped (a collision only costs a lookup), bounded, and guarded by
 * one mutex: callers are worker threads. */
#ifndef POSTHORN_DNS_CACHE_H
#define POSTHORN_DNS_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "dns.h"

#define DNS_CACHE_SLOTS        4096
#define DNS_CACHE_TTL_MAX      3600
#define DNS_CACHE_NEGATIVE_TTL 60

struct dns_cache;

/* NULL when out of memory (lookups then simply go uncached). */
struct dns_cache *dns_cache_new(void);
void dns_cache_free(struct dns_cache *c);

/* A fresh copy of the cached answer into *out (records' TTLs lowered to
 * what remains), true; false when there is none. */
bool dns_cache_get(struct dns_cache *c, const char *name, int type, struct dns_answer *out);

/* Keeps a copy of an answer (only DNS_OK, DNS_NXDOMAIN, DNS_NODATA). */
void dns_cache_put(struct dns_cache *c, const char *name, int type, const struct dns_answer *a);

#endif
