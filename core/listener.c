/* listener: parses *_LISTEN specs, binds the sockets, and runs the accept
 * loop on libev; plus the per-address connection counts used for limits. */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LISTEN_BACKLOG 511
#define MAX_SPEC_ITEMS 32
#define MAX_ITEM_LEN 80
#define ACCEPTS_PER_WAKEUP 64
#define ACCEPT_PAUSE_SECONDS 0.5

/* One parsed "addr:port" item. */
struct listen_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    bool any;          /* ":port": dual-stack [::], falling back to 0.0.0.0 */
    char text[MAX_ITEM_LEN + 8];
};

struct listen_sock {
    ev_io io;
    int fd;
    struct sockaddr_storage bound;   /* as bound (getsockname), for listener_is_local */
    struct listener *owner;
    char text[MAX_ITEM_LEN + 8];
};

struct listener {
    char setting[64];
    struct listen_sock *socks;
    size_t count;
    struct ev_loop *loop;
    listener_accept_fn fn;
    void *arg;
    ev_timer pause;
    bool started;
};

/* ---- spec parsing ---- */

static int parse_port(const char *setting, const char *item, const char *p, size_t len,
                      uint16_t *port, char *err, size_t errlen)
{
    unsigned long v = 0;
    if (len == 0 || len > 5)
        goto bad;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            goto bad;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (v < 1 || v > 65535)
        goto bad;
    *port = (uint16_t)v;
    return 0;
bad:
    snprintf(err, errlen, "%s: '%s': the port must be a number from 1 to 65535", setting, item);
    return -1;
}

static void set_v4(struct listen_addr *a, const struct in_addr *ip, uint16_t port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
    sin->sin_family = AF_INET;
    sin->sin_addr = *ip;
    sin->sin_port = htons(port);
    a->len = sizeof *sin;
}

static void set_v6(struct listen_addr *a, const struct in6_addr *ip, uint16_t port)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = *ip;
    sin6->sin6_port = htons(port);
    a->len = sizeof *sin6;
}

/* item is NUL-terminated and already trimmed. */
static int parse_item(const char *setting, const char *item, struct listen_addr *a, char *err,
                      size_t errlen)
{
    char host[MAX_ITEM_LEN + 1];
    const char *port_str;
    bool bracketed = item[0] == '[';
    memset(a, 0, sizeof *a);
    if (bracketed) {
        const char *close = strchr(item, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "%s: '%s': expected [IPv6 address]:port", setting, item);
            return -1;
        }
        size_t hlen = (size_t)(close - item - 1);
        memcpy(host, item + 1, hlen);
        host[hlen] = '\0';
        port_str = close + 2;
    } else {
        const char *colon = strrchr(item, ':');
        if (!colon) {
            snprintf(err, errlen, "%s: '%s': expected address:port or :port", setting, item);
            return -1;
        }
        size_t hlen = (size_t)(colon - item);
        memcpy(host, item, hlen);
        host[hlen] = '\0';
        port_str = colon + 1;
        if (memchr(host, ':', hlen)) {
            snprintf(err, errlen, "%s: '%s': write IPv6 addresses in brackets: [addr]:port",
                     setting, item);
            return -1;
        }
    }
    uint16_t port;
    if (parse_port(setting, item, port_str, strlen(port_str), &port, err, errlen) < 0)
        return -1;

    struct in_addr v4;
    struct in6_addr v6;
    if (!bracketed && host[0] == '\0') {
        a->any = true;
        set_v6(a, &in6addr_any, port);
    } else if (!bracketed && strcmp(host, "localhost") == 0) {
        v4.s_addr = htonl(INADDR_LOOPBACK);
        set_v4(a, &v4, port);
    } else if (!bracketed && inet_pton(AF_INET, host, &v4) == 1) {
        set_v4(a, &v4, port);
    } else if (bracketed && inet_pton(AF_INET6, host, &v6) == 1) {
        set_v6(a, &v6, port);
    } else {
        snprintf(err, errlen, "%s: '%s': the address must be numeric (IPv4, [IPv6], localhost "
                 "or empty for all addresses)", setting, item);
        return -1;
    }
    snprintf(a->text, sizeof a->text, "%s", item);
    return 0;
}

/* Splits spec on commas; *count = 0 for an empty spec. */
static int parse_spec(const char *setting, const char *spec, struct listen_addr *out,
                      size_t *count, char *err, size_t errlen)
{
    *count = 0;
    if (!spec)
        return 0;
    const char *p = spec;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0) {
            snprintf(err, errlen, "%s: empty entry in '%.100s'", setting, spec);
            return -1;
        }
        if (len > MAX_ITEM_LEN) {
            snprintf(err, errlen, "%s: entry too long: '%.*s...'", setting, 40, p);
            return -1;
        }
        if (*count == MAX_SPEC_ITEMS) {
            snprintf(err, errlen, "%s: more than %d addresses", setting, MAX_SPEC_ITEMS);
            return -1;
        }
        char item[MAX_ITEM_LEN + 1];
        memcpy(item, p, len);
        item[len] = '\0';
        if (parse_item(setting, item, &out[*count], err, errlen) < 0)
            return -1;
        (*count)++;
        if (!end)
            return 0;
        p = end + 1;
    }
}

int listener_spec_check(const char *setting, const char *spec, char *err, size_t errlen)
{
    struct listen_addr addrs[MAX_SPEC_ITEMS];
    size_t n;
    return parse_spec(setting, spec, addrs, &n, err, errlen);
}

/* ---- binding ---- */

/* Returns the bound fd, or -1 with errno set. */
static int bind_one(const struct sockaddr_storage *ss, socklen_t len, int v6only)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (ss->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* ":port" means every address: [::] accepting IPv4 too, or 0.0.0.0 where
 * IPv6 is missing (no kernel support, or disabled in the container). */
static int bind_addr(struct listen_addr *a)
{
    if (!a->any)
        return bind_one(&a->ss, a->len, 1);
    int fd = bind_one(&a->ss, a->len, 0);
    if (fd >= 0 || (errno != EAFNOSUPPORT && errno != EADDRNOTAVAIL))
        return fd;
    uint16_t port = ntohs(((struct sockaddr_in6 *)&a->ss)->sin6_port);
    struct in_addr any = { .s_addr = htonl(INADDR_ANY) };
    memset(&a->ss, 0, sizeof a->ss);
    set_v4(a, &any, port);
    return bind_one(&a->ss, a->len, 0);
}

struct listener *listener_open(const char *setting, const char *spec, char *err, size_t errlen)
{
    struct listen_addr addrs[MAX_SPEC_ITEMS];
    size_t n;
    if (parse_spec(setting, spec, addrs, &n, err, errlen) < 0)
        return NULL;
    struct listener *l = calloc(1, sizeof *l);
    if (!l || (n && !(l->socks = calloc(n, sizeof *l->socks)))) {
        free(l);
        snprintf(err, errlen, "%s: out of memory", setting);
        return NULL;
    }
    snprintf(l->setting, sizeof l->setting, "%s", setting);
    for (size_t i = 0; i < n; i++) {
        int fd = bind_addr(&addrs[i]);
        if (fd < 0) {
            snprintf(err, errlen, "%s: cannot bind %s: %s", setting, addrs[i].text,
                     strerror(errno));
            listener_free(l);
            return NULL;
        }
        struct listen_sock *ls = &l->socks[l->count++];
        ls->fd = fd;
        ls->owner = l;
        socklen_t blen = sizeof ls->bound;
        if (getsockname(fd, (struct sockaddr *)&ls->bound, &blen) < 0)
            ls->bound = addrs[i].ss;
        snprintf(ls->text, sizeof ls->text, "%s", addrs[i].text);
    }
    return l;
}

size_t listener_socket_count(const struct listener *l)
{
    return l->count;
}

/* ---- accepting ---- */

static void set_watchers(struct listener *l, bool on)
{
    for (size_t i = 0; i < l->count; i++) {
        if (l->socks[i].fd < 0)
            continue;
        if (on)
            ev_io_start(l->loop, &l->socks[i].io);
        else
            ev_io_stop(l->loop, &l->socks[i].io);
    }
}

static void on_pause_end(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    set_watchers(w->data, true);
}

/* Out of descriptors: the pending connection stays in the backlog and
 * keeps the socket readable, so keep watching and we would spin. */
static void pause_accepting(struct listener *l, const struct listen_sock *ls)
{
    log_warn("%s: accept on %s: %s; pausing accepts for %.1f s", l->setting, ls->text,
             strerror(errno), ACCEPT_PAUSE_SECONDS);
    set_watchers(l, false);
    ev_timer_stop(l->loop, &l->pause);
    ev_timer_set(&l->pause, ACCEPT_PAUSE_SECONDS, 0.);
    ev_timer_start(l->loop, &l->pause);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct listen_sock *ls = (struct listen_sock *)w;
    struct listener *l = ls->owner;
    for (int i = 0; i < ACCEPTS_PER_WAKEUP && ls->fd >= 0; i++) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(ls->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            /* Replies often go out in more than one write (an untagged
             * response, then the tagged one); with Nagle's algorithm the
             * second waits for the client's delayed ACK, ~40 ms. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            /* The callback may call listener_stop: ls->fd is rechecked. */
            l->fn(fd, (struct sockaddr *)&peer, plen, l->arg);
            continue;
        }
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return;
        case EINTR:
        case ECONNABORTED:
        case EPROTO:
        case EPERM: /* firewall rules; this connection only */
            continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            pause_accepting(l, ls);
            return;
        default:
            log_error("%s: accept on %s: %s", l->setting, ls->text, strerror(errno));
            return;
        }
    }
}

void listener_start(struct listener *l, struct ev_loop *loop, listener_accept_fn fn, void *arg)
{
    if (l->started)
        return;
    l->loop = loop;
    l->fn = fn;
    l->arg = arg;
    ev_timer_init(&l->pause, on_pause_end, ACCEPT_PAUSE_SECONDS, 0.);
    l->pause.data = l;
    for (size_t i = 0; i < l->count; i++)
        ev_io_init(&l->socks[i].io, on_accept, l->socks[i].fd, EV_READ);
    l->started = true;
    set_watchers(l, true);
}

void listener_stop(struct listener *l)
{
    if (l->started) {
        set_watchers(l, false);
        ev_timer_stop(l->loop, &l->pause);
    }
    for (size_t i = 0; i < l->count; i++) {
        if (l->socks[i].fd >= 0)
            close(l->socks[i].fd);
        l->socks[i].fd = -1;
    }
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    listener_stop(l);
    free(l->socks);
    free(l);
}

/* ---- per-address connection counts ---- */

#define IPLIMIT_BUCKETS 1024
#define IPLIMIT_KEY_MAX 64

struct ip_entry {
    struct ip_entry *next;
    unsigned count;
    char addr[IPLIMIT_KEY_MAX];
};

static struct ip_entry *ip_buckets[IPLIMIT_BUCKETS];
static unsigned ip_total;
static uint32_t ip_seed;

/* FNV-1a with a per-process seed, so a client cannot aim many addresses at
 * one chain in advance. */
static size_t ip_hash(const char *addr)
{
    if (ip_seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ip_seed = ((uint32_t)ts.tv_nsec ^ (uint32_t)getpid() * 2654435761u) | 1u;
    }
    uint32_t h = 2166136261u ^ ip_seed;
    for (const unsigned char *p = (const unsigned char *)addr; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h % IPLIMIT_BUCKETS;
}

static struct ip_entry **ip_find(const char *addr)
{
    struct ip_entry **pp = &ip_buckets[ip_hash(addr)];
    while (*pp && strcmp((*pp)->addr, addr) != 0)
        pp = &(*pp)->next;
    return pp;
}

bool iplimit_acquire(const char *addr, unsigned max_per_ip, unsigned max_total)
{
    if (strlen(addr) >= IPLIMIT_KEY_MAX || ip_total >= max_total)
        return false;
    struct ip_entry **pp = ip_find(addr);
    struct ip_entry *e = *pp;
    if (e && e->count >= max_per_ip)
        return false;
    if (!e) {
        if (max_per_ip == 0)
            return false;
        e = calloc(1, sizeof *e);
        if (!e)
            return false;
        snprintf(e->addr, sizeof e->addr, "%s", addr);
        *pp = e;
    }
    e->count++;
    ip_total++;
    return true;
}

void iplimit_release(const char *addr)
{
    struct ip_entry **pp = ip_find(addr);
    struct ip_entry *e = *pp;
    if (!e) {
        log_error("iplimit: release of %.64s, which holds no connection", addr);
        return;
    }
    ip_total--;
    if (--e->count == 0) {
        *pp = e->next;
        free(e);
    }
}

/* ---- mail-loop detection ---- */

static const unsigned char v4_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* The address as 16 bytes (IPv4 as IPv4-mapped IPv6) and its port; false
 * for other families. */
static bool addr_key(const struct sockaddr *sa, unsigned char key[16], unsigned *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(key, v4_prefix, 12);
        memcpy(key + 12, &in->sin_addr, 4);
        *port = ntohs(in->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        memcpy(key, &in6->sin6_addr, 16);
        *port = ntohs(in6->sin6_port);
        return true;
    }
    return false;
}

/* Whether a wildcard socket bound to `bound` accepts connections to key:
 * 0.0.0.0 takes IPv4 only; [::] takes both (dual-stack, as ":port" binds). */
static bool wildcard_covers(const unsigned char bound[16], const unsigned char key[16])
{
    static const unsigned char zero[16] = { 0 };
    if (memcmp(bound, zero, 16) == 0)
        return true;
    return memcmp(bound, v4_prefix, 12) == 0 && memcmp(bound + 12, zero, 4) == 0 &&
           memcmp(key, v4_prefix, 12) == 0;
}

/* True when key is an address of one of this machine's interfaces. */
static bool is_interface_address(const unsigned char key[16])
{
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) < 0) {
        log_warn("listener: getifaddrs: %s", strerror(errno));
        return false;
    }
    bool found = false;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next) {
        unsigned char k[16];
        unsigned port;
        if (i->ifa_addr && addr_key(i->ifa_addr, k, &port))
            found = memcmp(k, key, 16) == 0;
    }
    freeifaddrs(ifs);
    return found;
}

bool listener_is_local(const struct listener *l, const struct sockaddr *addr, unsigned port)
{
    unsigned char key[16];
    unsigned ignored;
    if (!l || !addr || !addr_key(addr, key, &ignored))
        return false;
    bool wildcard = false;
    for (size_t i = 0; i < l->count; i++) {
        unsigned char bound[16];
        unsigned bport;
        if (!addr_key((const struct sockaddr *)&l->socks[i].bound, bound, &bport) ||
            bport != port)
            continue;
        if (memcmp(bound, key, 16) == 0)
            return true;
        wildcard |= wildcard_covers(bound, key);
    }
    return wildcard && is_interface_address(key);
}
