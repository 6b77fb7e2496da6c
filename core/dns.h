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
