/* dns: asynchronous DNS lookups for the event loop (MX, A/AAAA, TXT, PTR),
 * over libunbound. With DNS_RESOLVER=IP:PORT every query is forwarded to
 * that one server (tests run their own); empty uses /etc/resolv.conf.
 * libunbound's cache honours TTLs. Answers arrive through libunbound's file
 * descriptor watched by an ev_io, so nothing blocks the loop.
 *
 * A callback runs exactly once, on the loop thread, possibly before the
 * lookup function returns when the answer is cached. Whoever starts a
 * lookup keeps `arg` alive until its callback ran. */
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

#endif
