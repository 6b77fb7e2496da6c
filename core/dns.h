/* dns: asynchronous DNS lookups for the event loop (MX, A/AAAA, TXT, PTR),
 * over libunbound. With DNS_RESOLVER=IP:PORT every query is forwarded to
 * that one server (tests run their own); empty uses /etc/resolv.conf.
 * libunbound's cache honours TTLs. Answers arrive through libunbound's file
 * descriptor watched by an ev_io, so nothing blocks the loop.
 *
 * A callback runs exactly once, on the loop thread, possibly before the
 * lookup function returns when the answer is cached. Whoever starts a
 * lookup keeps `arg` alive until its callback ran.
 *
 * Linking: libev exports libevent-compatible event_* symbols, and
 * libunbound's resolver thread calls libevent by those names. Executables
 * must therefore list libevent before libev (see LIBS in the Makefile);
 * dns_new refuses to start, with that reason, when they do not.
 *
 * A REFUSED answer from the forwarder reaches us through libunbound as
 * SERVFAIL, hence DNS_TEMPFAIL. */
#ifndef POSTHORN_DNS_H
#define POSTHORN_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

#define DNS_NAME_MAX 255

struct dns;

enum dns_status {
    DNS_OK,          /* answer records present */
    DNS_NXDOMAIN,    /* the name does not exist */
    DNS_NODATA,      /* the name exists, no record of that type */
    DNS_TEMPFAIL,    /* SERVFAIL, timeout, network error: try again later */
    DNS_PERMFAIL,    /* malformed name or answer, REFUSED */
};

struct dns_mx {
    uint16_t preference;
    char host[DNS_NAME_MAX + 1];   /* without the trailing dot; "" for a null MX "." */
};

typedef void (*dns_mx_fn)(void *arg, enum dns_status status, const struct dns_mx *mx, size_t n);
/* Addresses as sockaddr_in / sockaddr_in6 with port 0. */
typedef void (*dns_addr_fn)(void *arg, enum dns_status status,
                            const struct sockaddr_storage *addrs, size_t n);
/* TXT: each record's strings concatenated, NUL-terminated. */
typedef void (*dns_txt_fn)(void *arg, enum dns_status status, const char *const *txt,
                           size_t n);
typedef void (*dns_ptr_fn)(void *arg, enum dns_status status, const char *const *names,
                           size_t n);

/* resolver: "" or "IP:PORT" / "[IPv6]:PORT". Returns NULL with a reason. */
struct dns *dns_new(struct ev_loop *loop, const char *resolver, char *err, size_t errlen);
/* Cancels what is in flight (their callbacks do not run) and frees. */
void dns_free(struct dns *d);

/* Each returns 0, or -1 (callback not called) for an invalid name or out
 * of memory. MX answers are sorted by preference. dns_lookup_addr asks A
 * and AAAA (family AF_UNSPEC) or one of them, IPv6 first. */
int dns_lookup_mx(struct dns *d, const char *domain, dns_mx_fn fn, void *arg);
int dns_lookup_addr(struct dns *d, const char *host, int family, dns_addr_fn fn, void *arg);
int dns_lookup_txt(struct dns *d, const char *name, dns_txt_fn fn, void *arg);
int dns_lookup_ptr(struct dns *d, const struct sockaddr *addr, dns_ptr_fn fn, void *arg);

/* Lookups in flight (tests, shutdown). */
unsigned dns_pending(const struct dns *d);

/* Seconds after which a lookup gives up and reports DNS_TEMPFAIL, whatever
 * libunbound is still trying (default DNS_TIMEOUT_DEFAULT). Applies to
 * lookups started afterwards. */
#define DNS_TIMEOUT_DEFAULT 8.0
void dns_set_timeout(struct dns *d, double seconds);

/* Blocking lookups, for worker threads (filters: SPF, DNSBL). They use the
 * same libunbound context as the loop, hence the same cache, DNS_RESOLVER
 * and timeout, through ub_resolve (thread-safe; it never touches the
 * loop's ev_io or in-flight list). ub_resolve cannot be interrupted and
 * its retries towards a silent server grow to tens of seconds, so each
 * lookup runs on a short-lived helper thread while the caller waits at
 * most the timeout; a lookup abandoned at its deadline finishes on its
 * helper and is discarded (dns_free leaves the context to the last
 * helper). Never call them on the loop thread.
 *
 * Each record carries its TTL as the server gave it (libunbound's cache
 * answers with the remaining TTL). */
struct dns_record {
    uint32_t ttl;
    uint16_t preference;            /* MX */
    struct sockaddr_storage addr;   /* A / AAAA: sockaddr_in / sockaddr_in6, port 0 */
    /* TXT: the record's strings concatenated; MX exchange ("" for a null
     * MX); PTR target. NUL-terminated, NULL for A / AAAA. */
    char *text;
};

struct dns_answer {
    enum dns_status status;
    size_t n;                       /* records, 0 unless DNS_OK */
    struct dns_record *rec;         /* malloc'd; MX sorted by preference */
};

/* Looks up `name` for type DNS_TYPE_A, _AAAA, _MX, _TXT or _PTR (a reverse
 * name such as "4.3.2.1.in-addr.arpa"). Waits at most the timeout (see
 * dns_set_timeout) and reports DNS_TEMPFAIL after it; DNS_TEMPFAIL too
 * when no helper thread can be started. An invalid name or
 * unsupported type gives DNS_PERMFAIL without a query; out of memory
 * DNS_TEMPFAIL. Always fills *out (free it with dns_answer_free); returns
 * out->status. At most 64 records are kept. */
enum dns_status dns_sync_query(struct dns *d, const char *name, int type, struct dns_answer *out);
/* PTR records of an address (IPv4-mapped IPv6 uses the IPv4 name). */
enum dns_status dns_sync_ptr(struct dns *d, const struct sockaddr *addr, struct dns_answer *out);
void dns_answer_free(struct dns_answer *a);

/* DNS message parsing. Answers come from the network, so the parser trusts
 * nothing: every read is bounds-checked, compression pointers must point
 * strictly backwards (no loops), names are limited to 255 octets. Exposed
 * for the unit tests and the fuzz target. */
enum {
    DNS_TYPE_A = 1,
    DNS_TYPE_NS = 2,
    DNS_TYPE_CNAME = 5,
    DNS_TYPE_PTR = 12,
    DNS_TYPE_MX = 15,
    DNS_TYPE_TXT = 16,
    DNS_TYPE_AAAA = 28,
};

struct dns_rr {
    uint16_t type;
    uint32_t ttl;
    uint16_t preference;            /* MX */
    char name[DNS_NAME_MAX + 1];    /* MX exchange, PTR/CNAME/NS target; "" = root */
    const uint8_t *rdata;           /* inside the message; A: 4 octets, AAAA: 16 */
    uint16_t rdlen;
};

/* Called for each answer record of the wanted type and class IN; a
 * non-zero return stops the walk. */
typedef int (*dns_rr_fn)(void *arg, const struct dns_rr *rr);

/* Decodes the name at msg[off] into out as dotted text without the trailing
 * dot ("" for the root); *next is the offset just after the name where it
 * starts. Returns 0; -1 for a malformed name (out of bounds, bad label type,
 * forward or looping pointer, longer than 255 octets, out too small); -2
 * when the name is well formed but a label holds a byte outside printable
 * ASCII or a '.', which the text form could not represent (*next is set). */
int dns_name_decode(const uint8_t *msg, size_t len, size_t off, char *out, size_t outlen,
                    size_t *next);

/* Walks the answer section of a DNS message, calling fn for records of
 * `type` (records whose names are unrepresentable, see -2 above, are
 * skipped). A/AAAA must have 4/16 octets of rdata, MX/PTR/CNAME/NS names
 * must fill their rdata exactly, TXT rdata must be a sequence of complete
 * character-strings. Returns the message's RCODE (0..15), or -1 when the
 * message is malformed. */
int dns_parse_answer(const uint8_t *msg, size_t len, uint16_t type, dns_rr_fn fn, void *arg);

/* Concatenates the character-strings of TXT rdata into out (NUL-terminated).
 * Returns the length, or -1 when the rdata is malformed, holds a NUL byte,
 * or does not fit. */
long dns_txt_join(const uint8_t *rdata, size_t rdlen, char *out, size_t outlen);

#endif
