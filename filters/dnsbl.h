/* dnsbl: DNS block lists on the client address (ENABLE_DNSBL), at
 * FILTER_CONNECT, in the manner of Postfix's postscreen.
 *
 * Every zone of DNSBL_ZONES ("zone*weight,...") is asked for the A record
 * of the client's reversed address under the zone (IPv4: "4.3.2.1.zone";
 * IPv6: 32 reversed nibbles; an IPv4-mapped IPv6 client is asked as IPv4),
 * all zones at once, each on its own thread, so that the whole check takes
 * at most one DNS timeout. A zone lists the client when it answers with an
 * address in 127.0.0.0/8, except the codes by which a list says it refused
 * the query (Spamhaus 127.255.255.x, e.g. 127.255.255.254 for queries
 * through public resolvers; dnswl.org's 127.0.0.255 for excess queries):
 * those, answers outside 127/8, and DNS failures (timeout, SERVFAIL) skip
 * the zone with a log line.
 *
 * The weights of the listing zones add up (negative weights are
 * allowlists such as list.dnswl.org). A sum of at least DNSBL_THRESHOLD
 * refuses the client at connect with
 *   554 5.7.1 Service unavailable; client [ip] blocked using <zone>
 * naming the listing zone of the greatest weight; otherwise every listing
 * zone becomes a named score DNSBL_<ZONE> (the zone upper-cased, dots as
 * '_') that the connect stage keeps for every message of the session.
 */
#ifndef POSTHORN_DNSBL_H
#define POSTHORN_DNSBL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "dns.h"
#include "filter.h"
#include "settings.h"

extern const struct filter_ops dnsbl_filter;

/* What one zone said about the client. */
enum dnsbl_answer {
    DNSBL_NOT_LISTED,   /* NXDOMAIN / NODATA */
    DNSBL_LISTED,       /* an A record in 127/8 that is not an error code */
    DNSBL_REFUSED,      /* the list's "query refused / error" code */
    DNSBL_BOGUS,        /* an address outside 127/8 (a hijacking resolver) */
    DNSBL_FAILED,       /* timeout, SERVFAIL, ...: skipped */
};

struct dnsbl_zone_result {
    enum dnsbl_answer answer;
    char code[16];      /* the first A record as text, "" when none */
};

/* The lookup of one name (type A); a test fakes it. Must fill *out as
 * dns_sync_query does (freed with dns_answer_free); may run on several
 * threads at once. */
typedef enum dns_status (*dnsbl_query_fn)(void *ctx, const char *name, struct dns_answer *out);

/* The query name for addr (sockaddr_in or sockaddr_in6) under zone, e.g.
 * "2.0.0.127.zen.spamhaus.org". Returns its length, or -1 for another
 * family or when it does not fit in out. */
int dnsbl_query_name(const struct sockaddr *addr, const char *zone, char *out, size_t outlen);

/* What an answer means (pure). */
enum dnsbl_answer dnsbl_classify(const struct dns_answer *a, char *code, size_t codelen);

/* Asks every zone about addr, in parallel (a zone whose thread cannot be
 * started is asked on the calling thread). res has n entries. */
void dnsbl_lookup(const struct sockaddr *addr, const struct dnsbl_zone *zones, size_t n,
                  dnsbl_query_fn query, void *ctx, struct dnsbl_zone_result *res);

/* The summed weight of the listing zones. */
double dnsbl_sum(const struct dnsbl_zone *zones, size_t n, const struct dnsbl_zone_result *res);

/* The filter results for the lookups (pure): one FILTER_REJECT when the
 * sum reaches threshold, else one FILTER_SCORE per listing zone (at most
 * max, the last one gathering the rest as DNSBL_OTHER). Returns how many
 * were written to out. */
size_t dnsbl_results(const struct dnsbl_zone *zones, size_t n,
                     const struct dnsbl_zone_result *res, double threshold,
                     const char *client_ip, struct filter_result *out, size_t max);

/* "DNSBL_ZEN_SPAMHAUS_ORG" for "zen.spamhaus.org". */
void dnsbl_reason_name(const char *zone, char *out, size_t outlen);

#endif
