/* spf: the SPF check (RFC 7208) of the MAIL FROM identity, or of the HELO
 * identity when MAIL FROM is <> (as "postmaster@<HELO>", RFC 7208 2.4),
 * at FILTER_MAIL on port 25 (ENABLE_POLICYD_SPF).
 *
 * libspf2 (1.2.10) evaluates the records; its DNS layer is ours, so every
 * query goes through dns_sync_query() to DNS_RESOLVER with its timeout and
 * libunbound's cache. Where libspf2 deviates from RFC 7208 we correct it:
 *   - records are fetched, selected and checked by us before libspf2 sees
 *     them: only TXT is asked (3.1; libspf2 asks type 99 first), "v=spf1"
 *     alone is a record (4.5), several SPF records are a permerror (4.5),
 *     and a strict parser of the record grammar (4.6.1, 5, 6, 7.1;
 *     spf_record.h) turns any syntax error into permerror (libspf2
 *     accepts "a:", "a:foo", duplicate redirect=/exp=, "/024", and
 *     answers neutral or none where its own parser fails);
 *   - "/0" prefix lengths (ip4, ip6, a, mx) are valid (4.6.1 ABNF; 5.3,
 *     5.4, 5.6): libspf2 refuses them, so terms are rewritten into
 *     equivalents it accepts (see spf_record_rewrite in spf_record.h);
 *   - the limit of 10 DNS-querying terms counts across include and
 *     redirect (4.6.4; libspf2 restarts its count in every include), and
 *     more than 2 void lookups give permerror (4.6.4; libspf2 has none);
 *   - an include or redirect target without an SPF record, or with a DNS
 *     error, gives permerror / temperror (5.2, 6.1);
 *   - more than 10 PTR names: the excess is ignored (4.6.4; libspf2 gives
 *     permerror);
 *   - exp= is ignored unless its name has exactly one TXT record whose
 *     macro-string is valid (6.2);
 *   - loopback clients are checked like any other (libspf2 passes them;
 *     RFC 7208 has no such rule; trusted networks are the pipeline's
 *     business);
 *   - a malformed or single-label identity domain gives none (4.3).
 * The whole check gives up with temperror after SPF_TIME_LIMIT seconds
 * (4.6.4 suggests at least 20).
 *
 * Policy (filter hook): fail → 550 5.7.23 "SPF check failed: <explanation>";
 * temperror → 451 4.7.24, or an accept logged as SPF_SKIPPED when
 * SPF_DNS_ERROR=skip; permerror → score 1.0 SPF_PERMERROR; softfail →
 * score 1.0 SPF_SOFTFAIL; neutral, none, pass → nothing. Every checked
 * message gets a Received-SPF field (RFC 7208 9.1) and "spf=<result>
 * smtp.mailfrom=<domain>" (smtp.helo=<helo> for <>) for
 * Authentication-Results. */
#ifndef POSTHORN_SPF_H
#define POSTHORN_SPF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "dns.h"
#include "filter.h"

extern const struct filter_ops spf_filter;

#define SPF_TIME_LIMIT 20.0
#define SPF_TERM_LIMIT 10         /* DNS-querying terms, RFC 7208 4.6.4 */
#define SPF_VOID_LIMIT 2          /* void lookups, RFC 7208 4.6.4 */

/* RFC 7208 section 2.6. */
enum spf_result {
    SPF_R_NONE,
    SPF_R_NEUTRAL,
    SPF_R_PASS,
    SPF_R_FAIL,
    SPF_R_SOFTFAIL,
    SPF_R_TEMPERROR,
    SPF_R_PERMERROR,
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror". */
const char *spf_result_name(enum spf_result r);

/* libspf2's answer (its SPF_result_t and SPF_errcode_t values) as one of
 * the seven: its "invalid" result and its errors become temperror when the
 * error is a DNS failure, permerror otherwise. */
enum spf_result spf_map_libspf2(int result, int errcode);

/* Where the checker's queries go: dns_sync_query on the server's context,
 * or a fake in the unit tests. Same contract as dns_sync_query. */
struct spf_resolver {
    enum dns_status (*query)(void *arg, const char *name, int type, struct dns_answer *out);
    void *arg;
};

struct spf_request {
    const struct sockaddr *client;   /* AF_INET or AF_INET6 (v4-mapped is v4) */
    const char *helo;                /* may be NULL or "" */
    const char *mail_from;           /* "" for <>; syntax already checked */
    const char *receiver;            /* our host name, for the header */
};

struct spf_outcome {
    enum spf_result result;
    bool helo_identity;              /* MAIL FROM was <>: postmaster@<HELO> */
    char domain[DNS_NAME_MAX + 1];   /* the domain checked ("" when none) */
    /* All three are printable ASCII, no more than their size. */
    char comment[512];               /* "domain of x designates 192.0.2.1 as permitted sender" */
    char explanation[256];           /* fail: the domain's exp= text, or a default */
    char problem[160];               /* temperror / permerror: what went wrong */
};

/* check_host() for the request. Never fails: every error is a result. */
void spf_check(const struct spf_resolver *dns, const struct spf_request *req,
               struct spf_outcome *out);

/* The policy above, for one outcome: fills r (verdict, score and reason,
 * or the reply). skip_dns_errors is SPF_DNS_ERROR=skip. */
void spf_policy(const struct spf_outcome *o, bool skip_dns_errors, struct filter_result *r);

/* Sends libspf2's warnings and debug output to our log instead of stdio
 * (the filter's start does it; tests call it). Loop thread, before any
 * check. */
void spf_init(void);

#endif
