/* dns: the wire parser on hand-made packets, and real lookups through
 * libunbound against a tiny UDP responder running in a thread of this
 * test (loopback, ephemeral port). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "dns.h"
#include "log.h"
#include "test.h"

/* ---------------------------------------------------------------------- */
/* Packet building                                                        */
/* ---------------------------------------------------------------------- */

struct pkt {
    uint8_t b[1024];
    size_t n;
};

static void put(struct pkt *p, const void *data, size_t n)
{
    if (p->n + n > sizeof p->b)
        abort();
    memcpy(p->b + p->n, data, n);
    p->n += n;
}

static void put8(struct pkt *p, unsigned v)
{
    uint8_t c = (uint8_t)v;
    put(p, &c, 1);
}

static void put16(struct pkt *p, unsigned v)
{
    put8(p, v >> 8);
    put8(p, v & 0xFF);
}

static void put32(struct pkt *p, uint32_t v)
{
    put16(p, v >> 16);
    put16(p, v & 0xFFFF);
}

/* Dotted name in wire form, uncompressed ("" = root). */
static void put_name(struct pkt *p, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        put8(p, (unsigned)n);
        put(p, name, n);
        name += n;
        if (*name == '.')
            name++;
    }
    put8(p, 0);
}

static void put_header(struct pkt *p, unsigned id, unsigned flags, unsigned qd, unsigned an)
{
    put16(p, id);
    put16(p, flags);
    put16(p, qd);
    put16(p, an);
    put16(p, 0);
    put16(p, 0);
}

/* Record header with the owner compressed to the question name at 12. */
static void put_rr_head(struct pkt *p, unsigned type, unsigned rdlen)
{
    put16(p, 0xC00C);
    put16(p, type);
    put16(p, 1);
    put32(p, 60);
    put16(p, rdlen);
}

/* ---------------------------------------------------------------------- */
/* Parser tests                                                           */
/* ---------------------------------------------------------------------- */

struct seen {
    struct dns_rr rr[8];
    int n;
};

static int remember(void *arg, const struct dns_rr *rr)
{
    struct seen *s = arg;
    if (s->n < 8)
        s->rr[s->n++] = *rr;
    return 0;
}

/* An MX answer for example.com: one exchange compressed against the
 * question name, one written out in full. */
static void mx_packet(struct pkt *p)
{
    memset(p, 0, sizeof *p);
    put_header(p, 1, 0x8180, 1, 2);
    put_name(p, "example.com");
    put16(p, DNS_TYPE_MX);
    put16(p, 1);
    put_rr_head(p, DNS_TYPE_MX, 2 + 3 + 2);
    put16(p, 20);
    put8(p, 2);
    put(p, "mx", 2);
    put16(p, 0xC00C);
    put_rr_head(p, DNS_TYPE_MX, 2 + 15);
    put16(p, 10);
    put_name(p, "b.example.com");
}

TEST(parse_mx_with_compression)
{
    struct pkt p;
    mx_packet(&p);
    struct seen s = { .n = 0 };
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_MX, remember, &s), 0);
    CHECK_INT(s.n, 2);
    CHECK_INT(s.rr[0].preference, 20);
    CHECK_STR(s.rr[0].name, "mx.example.com");
    CHECK_INT(s.rr[0].ttl, 60);
    CHECK_INT(s.rr[1].preference, 10);
    CHECK_STR(s.rr[1].name, "b.example.com");
    /* Other types are not reported. */
    s.n = 0;
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_A, remember, &s), 0);
    CHECK_INT(s.n, 0);
}

TEST(parse_truncated_everywhere)
{
    struct pkt p;
    mx_packet(&p);
    for (size_t cut = 0; cut < p.n; cut++) {
        /* Its own allocation, so ASan sees any read past the end. */
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, p.b, cut);
        struct seen s = { .n = 0 };
        int rc = dns_parse_answer(copy, cut, DNS_TYPE_MX, remember, &s);
        if (rc != -1)
            fprintf(stderr, "cut at %zu: %d\n", cut, rc);
        CHECK_INT(rc, -1);
        free(copy);
    }
}

TEST(name_pointer_loops_rejected)
{
    char out[DNS_NAME_MAX + 1];
    size_t next = 0;
    /* A pointer to itself. */
    uint8_t self[] = { 0xC0, 0x00 };
    CHECK_INT(dns_name_decode(self, sizeof self, 0, out, sizeof out, &next), -1);
    /* A forward pointer. */
    uint8_t fwd[] = { 0xC0, 0x02, 0x01, 'a', 0x00 };
    CHECK_INT(dns_name_decode(fwd, sizeof fwd, 0, out, sizeof out, &next), -1);
    /* Two pointers at each other: 2 -> 0 is backwards, 0 -> 2 is not. */
    uint8_t pair[] = { 0xC0, 0x02, 0xC0, 0x00 };
    CHECK_INT(dns_name_decode(pair, sizeof pair, 2, out, sizeof out, &next), -1);
    /* A label, then a pointer back to that label: a loop via the label. */
    uint8_t via[] = { 0x01, 'a', 0xC0, 0x00 };
    CHECK_INT(dns_name_decode(via, sizeof via, 0, out, sizeof out, &next), -1);
    /* A chain of backward pointers is fine. */
    uint8_t chain[] = { 0x01, 'a', 0x00, 0x01, 'b', 0xC0, 0x00, 0x01, 'c', 0xC0, 0x03 };
    CHECK_INT(dns_name_decode(chain, sizeof chain, 7, out, sizeof out, &next), 0);
    CHECK_STR(out, "c.b.a");
    CHECK_INT(next, sizeof chain);
}

TEST(name_limits)
{
    char out[DNS_NAME_MAX + 1];
    size_t next = 0;
    uint8_t buf[400];
    /* 0x40 and 0x80 label types are not allowed. */
    uint8_t ext[] = { 0x41, 'a', 0x00 };
    CHECK_INT(dns_name_decode(ext, sizeof ext, 0, out, sizeof out, &next), -1);
    uint8_t res[] = { 0x81, 'a', 0x00 };
    CHECK_INT(dns_name_decode(res, sizeof res, 0, out, sizeof out, &next), -1);
    /* Four 63-octet labels: 4 * 64 + 1 = 257 octets > 255. */
    size_t n = 0;
    for (int i = 0; i < 4; i++) {
        buf[n++] = 63;
        memset(buf + n, 'x', 63);
        n += 63;
    }
    buf[n++] = 0;
    CHECK_INT(dns_name_decode(buf, n, 0, out, sizeof out, &next), -1);
    /* 3 * 64 + 62 + 1 = 255 octets is the maximum and fits. */
    buf[192] = 61;
    buf[192 + 62] = 0;
    CHECK_INT(dns_name_decode(buf, 192 + 63, 0, out, sizeof out, &next), 0);
    CHECK_INT(strlen(out), 253);
    /* The same name does not fit a small output buffer. */
    char small[16];
    CHECK_INT(dns_name_decode(buf, 192 + 63, 0, small, sizeof small, &next), -1);
    /* The root. */
    uint8_t root[] = { 0x00 };
    CHECK_INT(dns_name_decode(root, 1, 0, out, sizeof out, &next), 0);
    CHECK_STR(out, "");
    CHECK_INT(next, 1);
    /* A dot or a control byte inside a label. */
    uint8_t dot[] = { 0x03, 'a', '.', 'b', 0x00 };
    CHECK_INT(dns_name_decode(dot, sizeof dot, 0, out, sizeof out, &next), -2);
    CHECK_INT(next, sizeof dot);
    uint8_t nul[] = { 0x03, 'a', 0, 'b', 0x00 };
    CHECK_INT(dns_name_decode(nul, sizeof nul, 0, out, sizeof out, &next), -2);
}

TEST(parse_bad_rdata)
{
    struct pkt p;
    struct seen s = { .n = 0 };
    /* A record with 5 octets. */
    memset(&p, 0, sizeof p);
    put_header(&p, 1, 0x8180, 1, 1);
    put_name(&p, "a.test");
    put16(&p, DNS_TYPE_A);
    put16(&p, 1);
    put_rr_head(&p, DNS_TYPE_A, 5);
    put(&p, "\x01\x02\x03\x04\x05", 5);
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_A, remember, &s), -1);
    /* rdlength beyond the end of the message. */
    memset(&p, 0, sizeof p);
    put_header(&p, 1, 0x8180, 1, 1);
    put_name(&p, "a.test");
    put16(&p, DNS_TYPE_A);
    put16(&p, 1);
    put_rr_head(&p, DNS_TYPE_A, 40);
    put(&p, "\x01\x02\x03\x04", 4);
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_A, remember, &s), -1);
    /* An MX whose name runs past its rdata into the next bytes. */
    memset(&p, 0, sizeof p);
    put_header(&p, 1, 0x8180, 1, 1);
    put_name(&p, "a.test");
    put16(&p, DNS_TYPE_MX);
    put16(&p, 1);
    put_rr_head(&p, DNS_TYPE_MX, 4);
    put16(&p, 10);
    put_name(&p, "mx.a.test");
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_MX, remember, &s), -1);
    /* TXT with a string length past its rdata. */
    memset(&p, 0, sizeof p);
    put_header(&p, 1, 0x8180, 1, 1);
    put_name(&p, "a.test");
    put16(&p, DNS_TYPE_TXT);
    put16(&p, 1);
    put_rr_head(&p, DNS_TYPE_TXT, 3);
    put(&p, "\x05" "ab", 3);
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_TXT, remember, &s), -1);
    CHECK_INT(s.n, 0);
    /* Too short for a header. */
    CHECK_INT(dns_parse_answer(p.b, 11, DNS_TYPE_TXT, remember, &s), -1);
}

TEST(parse_skips_unprintable_names_and_reports_rcode)
{
    struct pkt p;
    memset(&p, 0, sizeof p);
    put_header(&p, 1, 0x8183, 1, 2);   /* NXDOMAIN, odd but parseable */
    put_name(&p, "a.test");
    put16(&p, DNS_TYPE_PTR);
    put16(&p, 1);
    put_rr_head(&p, DNS_TYPE_PTR, 5);
    put(&p, "\x03" "a\nb" "\x00", 5);
    put_rr_head(&p, DNS_TYPE_PTR, 5);
    put(&p, "\x03" "abc" "\x00", 5);
    struct seen s = { .n = 0 };
    CHECK_INT(dns_parse_answer(p.b, p.n, DNS_TYPE_PTR, remember, &s), 3);
    CHECK_INT(s.n, 1);
    CHECK_STR(s.rr[0].name, "abc");
}

TEST(txt_join)
{
    char out[64];
    const uint8_t two[] = "\x07v=spf1 \x04-all";
    CHECK_INT(dns_txt_join(two, sizeof two - 1, out, sizeof out), 11);
    CHECK_STR(out, "v=spf1 -all");
    const uint8_t nul[] = "\x03" "a\0b";
    CHECK_INT(dns_txt_join(nul, 4, out, sizeof out), -1);
    CHECK_INT(dns_txt_join(two, sizeof two - 1, out, 11), -1);   /* no room for NUL */
    const uint8_t empty_string[] = "\x00";
    CHECK_INT(dns_txt_join(empty_string, 1, out, sizeof out), 0);
    CHECK_STR(out, "");
}

/* ---------------------------------------------------------------------- */
/* A tiny authoritative responder                                         */
/* ---------------------------------------------------------------------- */

struct responder {
    int fd;
    int port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int queries;
};

static void answer_a(struct pkt *r, const char *ip)
{
    uint8_t b[4];
    inet_pton(AF_INET, ip, b);
    put_rr_head(r, DNS_TYPE_A, 4);
    put(r, b, 4);
}

static void answer_aaaa(struct pkt *r, const char *ip)
{
    uint8_t b[16];
    inet_pton(AF_INET6, ip, b);
    put_rr_head(r, DNS_TYPE_AAAA, 16);
    put(r, b, 16);
}

static void answer_mx(struct pkt *r, unsigned pref, const char *host)
{
    struct pkt tmp = { .n = 0 };
    put_name(&tmp, host);
    put_rr_head(r, DNS_TYPE_MX, 2 + (unsigned)tmp.n);
    put16(r, pref);
    put(r, tmp.b, tmp.n);
}

static void answer_name(struct pkt *r, unsigned type, const char *host)
{
    struct pkt tmp = { .n = 0 };
    put_name(&tmp, host);
    put_rr_head(r, type, (unsigned)tmp.n);
    put(r, tmp.b, tmp.n);
}

/* Fills the answer section; returns the rcode, or -1 for no reply. */
static int zone(const char *name, unsigned type, struct pkt *r, unsigned *an)
{
    unsigned before = (unsigned)r->n;
    (void)before;
#define IS(n) (strcasecmp(name, n) == 0)
    if (IS("timeout.test") || IS("x.timeout.test"))
        return -1;
    if (IS("servfail.test"))
        return 2;
    if (IS("refused.test"))
        return 5;
    if (IS("mx.test")) {
        if (type == DNS_TYPE_MX) {
            answer_mx(r, 30, "c.mx.test");
            answer_mx(r, 10, "a.mx.test");
            answer_mx(r, 20, "b.mx.test");
            *an = 3;
        }
        return 0;
    }
    if (IS("nullmx.test")) {
        if (type == DNS_TYPE_MX) {
            answer_mx(r, 0, "");
            *an = 1;
        }
        return 0;
    }
    if (IS("host.test")) {
        if (type == DNS_TYPE_A) {
            answer_a(r, "192.0.2.1");
            answer_a(r, "192.0.2.2");
            *an = 2;
        } else if (type == DNS_TYPE_AAAA) {
            answer_aaaa(r, "2001:db8::1");
            *an = 1;
        }
        return 0;
    }
    if (IS("v4only.test")) {
        if (type == DNS_TYPE_A) {
            answer_a(r, "192.0.2.5");
            *an = 1;
        }
        return 0;
    }
    if (IS("v6fails.test")) {
        if (type == DNS_TYPE_AAAA)
            return 2;
        if (type == DNS_TYPE_A) {
            answer_a(r, "192.0.2.6");
            *an = 1;
        }
        return 0;
    }
    if (IS("txt.test")) {
        if (type == DNS_TYPE_TXT) {
            put_rr_head(r, DNS_TYPE_TXT, 13);
            put(r, "\x07v=spf1 \x04-all", 13);
            put_rr_head(r, DNS_TYPE_TXT, 6);
            put(r, "\x05hello", 6);
            *an = 2;
        }
        return 0;
    }
    if (IS("7.2.0.192.in-addr.arpa") || IS("2.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa")) {
        if (type == DNS_TYPE_PTR) {
            answer_name(r, DNS_TYPE_PTR, "host.test");
            *an = 1;
        }
        return 0;
    }
#undef IS
    return 3;
}

static void respond(struct responder *rs, const uint8_t *q, size_t n,
                    const struct sockaddr_storage *from, socklen_t fromlen)
{
    char name[DNS_NAME_MAX + 1];
    size_t next = 0;
    if (n < 12 || dns_name_decode(q, n, 12, name, sizeof name, &next) != 0 || next + 4 > n)
        return;
    unsigned type = (unsigned)(q[next] << 8 | q[next + 1]);
    struct pkt r = { .n = 0 };
    put_header(&r, (unsigned)(q[0] << 8 | q[1]), 0x8580, 1, 0);
    put(&r, q + 12, next + 4 - 12);
    unsigned an = 0;
    int rcode = zone(name, type, &r, &an);
    atomic_fetch_add(&rs->queries, 1);
    if (rcode < 0)
        return;
    r.b[3] = (uint8_t)((r.b[3] & 0xF0) | rcode);
    r.b[6] = (uint8_t)(an >> 8);
    r.b[7] = (uint8_t)an;
    sendto(rs->fd, r.b, r.n, 0, (const struct sockaddr *)from, fromlen);
}

static void *responder_main(void *arg)
{
    struct responder *rs = arg;
    while (!atomic_load(&rs->stop)) {
        struct pollfd pfd = { .fd = rs->fd, .events = POLLIN };
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        uint8_t buf[1500];
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(rs->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fromlen);
        if (n > 0)
            respond(rs, buf, (size_t)n, &from, fromlen);
    }
    return NULL;
}

static int responder_start(struct responder *rs)
{
    memset(rs, 0, sizeof *rs);
    rs->fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    if (rs->fd < 0 || bind(rs->fd, (struct sockaddr *)&sin, sizeof sin) < 0
        || getsockname(rs->fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    rs->port = ntohs(sin.sin_port);
    return pthread_create(&rs->thread, NULL, responder_main, rs) == 0 ? 0 : -1;
}

static void responder_stop(struct responder *rs)
{
    atomic_store(&rs->stop, true);
    pthread_join(rs->thread, NULL);
    close(rs->fd);
}

/* ---------------------------------------------------------------------- */
/* Lookups                                                                */
/* ---------------------------------------------------------------------- */

static struct responder responder;
static struct ev_loop *loop;

struct result {
    int calls;
    enum dns_status status;
    size_t n;
    char text[8][DNS_NAME_MAX + 1];
    int pref[8];
    struct sockaddr_storage addrs[8];
    struct dns *free_me;   /* dns_free from inside the callback */
};

static void on_mx(void *arg, enum dns_status st, const struct dns_mx *mx, size_t n)
{
    struct result *r = arg;
    r->calls++;
    r->status = st;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        r->pref[i] = mx[i].preference;
        snprintf(r->text[i], sizeof r->text[i], "%s", mx[i].host);
    }
    if (r->free_me)
        dns_free(r->free_me);
}

static void on_addr(void *arg, enum dns_status st, const struct sockaddr_storage *a, size_t n)
{
    struct result *r = arg;
    r->calls++;
    r->status = st;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        r->addrs[i] = a[i];
}

static void on_text(void *arg, enum dns_status st, const char *const *t, size_t n)
{
    struct result *r = arg;
    r->calls++;
    r->status = st;
    r->n = n;
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(r->text[i], sizeof r->text[i], "%s", t[i]);
}

static void deadline_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    *(bool *)w->data = true;
}

/* Runs the loop until *calls is non-zero or `seconds` passed. */
static void wait_for(const int *calls, double seconds)
{
    bool expired = false;
    ev_timer t;
    ev_timer_init(&t, deadline_cb, seconds, 0.);
    t.data = &expired;
    ev_timer_start(loop, &t);
    while (!*calls && !expired)
        ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &t);
}

static struct dns *new_dns(void)
{
    char resolver[64], err[256] = "";
    snprintf(resolver, sizeof resolver, "127.0.0.1:%d", responder.port);
    struct dns *d = dns_new(loop, resolver, err, sizeof err);
    if (!d)
        fprintf(stderr, "dns_new: %s\n", err);
    return d;
}

static const char *ntop(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    if (ss->ss_family == AF_INET6)
        return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
                         (socklen_t)len);
    if (ss->ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf,
                         (socklen_t)len);
    return "?";
}

TEST(new_rejects_bad_resolver)
{
    char err[256] = "";
    CHECK(dns_new(loop, "not-an-ip:53", err, sizeof err) == NULL);
    CHECK(strstr(err, "DNS_RESOLVER") != NULL);
    CHECK(dns_new(loop, "127.0.0.1:99999", err, sizeof err) == NULL);
    CHECK(dns_new(loop, "[::1", err, sizeof err) == NULL);
    struct dns *d = dns_new(loop, "[::1]:5353", err, sizeof err);
    CHECK(d != NULL);
    dns_free(d);
}

TEST(invalid_names_refused)
{
    struct dns *d = new_dns();
    struct result r = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "", on_mx, &r), -1);
    CHECK_INT(dns_lookup_mx(d, "a..b", on_mx, &r), -1);
    CHECK_INT(dns_lookup_mx(d, "a b.test", on_mx, &r), -1);
    CHECK_INT(dns_lookup_txt(d, ".", on_text, &r), -1);
    char longlabel[80];
    memset(longlabel, 'x', 64);
    memcpy(longlabel + 64, ".test", 6);
    CHECK_INT(dns_lookup_addr(d, longlabel, AF_UNSPEC, on_addr, &r), -1);
    CHECK_INT(dns_lookup_addr(d, "host.test", 12345, on_addr, &r), -1);
    CHECK_INT(dns_pending(d), 0);
    CHECK_INT(r.calls, 0);
    dns_free(d);
}

TEST(mx_sorted)
{
    struct dns *d = new_dns();
    struct result r = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "mx.test", on_mx, &r), 0);
    CHECK_INT(dns_pending(d), 1);
    wait_for(&r.calls, 5);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.status, DNS_OK);
    CHECK_INT(r.n, 3);
    CHECK_INT(r.pref[0], 10);
    CHECK_STR(r.text[0], "a.mx.test");
    CHECK_INT(r.pref[1], 20);
    CHECK_STR(r.text[1], "b.mx.test");
    CHECK_INT(r.pref[2], 30);
    CHECK_STR(r.text[2], "c.mx.test");
    CHECK_INT(dns_pending(d), 0);

    struct result z = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "nullmx.test", on_mx, &z), 0);
    wait_for(&z.calls, 5);
    CHECK_INT(z.status, DNS_OK);
    CHECK_INT(z.n, 1);
    CHECK_INT(z.pref[0], 0);
    CHECK_STR(z.text[0], "");
    dns_free(d);
}

TEST(nxdomain_and_nodata)
{
    struct dns *d = new_dns();
    struct result nx = { .calls = 0 }, nd = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "nosuch.test", on_mx, &nx), 0);
    CHECK_INT(dns_lookup_mx(d, "host.test", on_mx, &nd), 0);
    wait_for(&nx.calls, 5);
    wait_for(&nd.calls, 5);
    CHECK_INT(nx.status, DNS_NXDOMAIN);
    CHECK_INT(nx.n, 0);
    CHECK_INT(nd.status, DNS_NODATA);
    CHECK_INT(nd.n, 0);
    dns_free(d);
}

TEST(addresses_v6_first)
{
    struct dns *d = new_dns();
    struct result r = { .calls = 0 };
    char buf[INET6_ADDRSTRLEN];
    CHECK_INT(dns_lookup_addr(d, "host.test", AF_UNSPEC, on_addr, &r), 0);
    wait_for(&r.calls, 5);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.status, DNS_OK);
    CHECK_INT(r.n, 3);
    CHECK_STR(ntop(&r.addrs[0], buf, sizeof buf), "2001:db8::1");
    char second[INET6_ADDRSTRLEN];
    ntop(&r.addrs[1], second, sizeof second);
    ntop(&r.addrs[2], buf, sizeof buf);
    CHECK(strcmp(second, "192.0.2.1") == 0 || strcmp(second, "192.0.2.2") == 0);
    CHECK(strcmp(buf, "192.0.2.1") == 0 || strcmp(buf, "192.0.2.2") == 0);
    CHECK(strcmp(second, buf) != 0);
    CHECK_INT(((struct sockaddr_in *)&r.addrs[1])->sin_port, 0);

    struct result v4 = { .calls = 0 };
    CHECK_INT(dns_lookup_addr(d, "host.test", AF_INET, on_addr, &v4), 0);
    wait_for(&v4.calls, 5);
    CHECK_INT(v4.n, 2);
    CHECK_INT(v4.addrs[0].ss_family, AF_INET);

    struct result only = { .calls = 0 };
    CHECK_INT(dns_lookup_addr(d, "v4only.test", AF_UNSPEC, on_addr, &only), 0);
    wait_for(&only.calls, 5);
    CHECK_INT(only.status, DNS_OK);
    CHECK_INT(only.n, 1);
    CHECK_STR(ntop(&only.addrs[0], buf, sizeof buf), "192.0.2.5");

    struct result v6nodata = { .calls = 0 };
    CHECK_INT(dns_lookup_addr(d, "v4only.test", AF_INET6, on_addr, &v6nodata), 0);
    wait_for(&v6nodata.calls, 5);
    CHECK_INT(v6nodata.status, DNS_NODATA);

    /* AAAA answers SERVFAIL, A has data: the data is reported. */
    struct result half = { .calls = 0 };
    CHECK_INT(dns_lookup_addr(d, "v6fails.test", AF_UNSPEC, on_addr, &half), 0);
    wait_for(&half.calls, 8);
    CHECK_INT(half.status, DNS_OK);
    CHECK_INT(half.n, 1);
    CHECK_STR(ntop(&half.addrs[0], buf, sizeof buf), "192.0.2.6");

    /* A literal needs no query but still answers through the loop. */
    struct result lit = { .calls = 0 };
    CHECK_INT(dns_lookup_addr(d, "2001:db8::9", AF_UNSPEC, on_addr, &lit), 0);
    CHECK_INT(lit.calls, 0);
    wait_for(&lit.calls, 2);
    CHECK_INT(lit.status, DNS_OK);
    CHECK_INT(lit.n, 1);
    CHECK_STR(ntop(&lit.addrs[0], buf, sizeof buf), "2001:db8::9");
    dns_free(d);
}

TEST(txt_records)
{
    struct dns *d = new_dns();
    struct result r = { .calls = 0 };
    CHECK_INT(dns_lookup_txt(d, "txt.test", on_text, &r), 0);
    wait_for(&r.calls, 5);
    CHECK_INT(r.status, DNS_OK);
    CHECK_INT(r.n, 2);
    /* Record order is the server's; accept either. */
    bool first_spf = strcmp(r.text[0], "v=spf1 -all") == 0;
    CHECK_STR(r.text[first_spf ? 0 : 1], "v=spf1 -all");
    CHECK_STR(r.text[first_spf ? 1 : 0], "hello");
    dns_free(d);
}

TEST(ptr_records)
{
    struct dns *d = new_dns();
    struct result r4 = { .calls = 0 }, r6 = { .calls = 0 }, mapped = { .calls = 0 };
    struct sockaddr_in sin = { .sin_family = AF_INET };
    inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "2001:db8::12", &sin6.sin6_addr);
    struct sockaddr_in6 map = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &map.sin6_addr);
    CHECK_INT(dns_lookup_ptr(d, (struct sockaddr *)&sin, on_text, &r4), 0);
    CHECK_INT(dns_lookup_ptr(d, (struct sockaddr *)&sin6, on_text, &r6), 0);
    CHECK_INT(dns_lookup_ptr(d, (struct sockaddr *)&map, on_text, &mapped), 0);
    wait_for(&r4.calls, 5);
    wait_for(&r6.calls, 5);
    wait_for(&mapped.calls, 5);
    CHECK_INT(r4.status, DNS_OK);
    CHECK_INT(r4.n, 1);
    CHECK_STR(r4.text[0], "host.test");
    CHECK_INT(r6.status, DNS_OK);
    CHECK_STR(r6.text[0], "host.test");
    CHECK_INT(mapped.status, DNS_OK);
    dns_free(d);
}

TEST(servfail_is_tempfail)
{
    struct dns *d = new_dns();
    struct result r = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "servfail.test", on_mx, &r), 0);
    wait_for(&r.calls, DNS_TIMEOUT_DEFAULT + 2);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.status, DNS_TEMPFAIL);
    dns_free(d);
}

TEST(free_with_queries_in_flight)
{
    struct dns *d = new_dns();
    struct result a = { .calls = 0 }, b = { .calls = 0 }, c = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "mx.test", on_mx, &a), 0);
    CHECK_INT(dns_lookup_addr(d, "timeout.test", AF_UNSPEC, on_addr, &b), 0);
    CHECK_INT(dns_lookup_addr(d, "192.0.2.9", AF_UNSPEC, on_addr, &c), 0);
    CHECK_INT(dns_pending(d), 3);
    dns_free(d);
    /* Give any stray answer time to arrive: nothing may call back. */
    int never = 0;
    wait_for(&never, 0.5);
    CHECK_INT(a.calls + b.calls + c.calls, 0);
}

TEST(free_from_inside_a_callback)
{
    struct dns *d = new_dns();
    struct result a = { .calls = 0, .free_me = d }, b = { .calls = 0 };
    CHECK_INT(dns_lookup_mx(d, "timeout.test", on_mx, &b), 0);
    CHECK_INT(dns_lookup_mx(d, "mx.test", on_mx, &a), 0);
    wait_for(&a.calls, 5);
    CHECK_INT(a.calls, 1);
    int never = 0;
    wait_for(&never, 0.3);
    CHECK_INT(b.calls, 0);
}

/* ---------------------------------------------------------------------- */
/* Blocking lookups                                                       */
/* ---------------------------------------------------------------------- */

TEST(sync_records_and_ttls)
{
    struct dns *d = new_dns();
    struct dns_answer a;
    char buf[INET6_ADDRSTRLEN];

    CHECK_INT(dns_sync_query(d, "host.test", DNS_TYPE_A, &a), DNS_OK);
    CHECK_INT(a.n, 2);
    CHECK_INT(a.rec[0].addr.ss_family, AF_INET);
    CHECK(a.rec[0].ttl > 0 && a.rec[0].ttl <= 60);
    CHECK(a.rec[0].text == NULL);
    ntop(&a.rec[0].addr, buf, sizeof buf);
    CHECK(strcmp(buf, "192.0.2.1") == 0 || strcmp(buf, "192.0.2.2") == 0);
    dns_answer_free(&a);

    CHECK_INT(dns_sync_query(d, "host.test", DNS_TYPE_AAAA, &a), DNS_OK);
    CHECK_INT(a.n, 1);
    CHECK_STR(ntop(&a.rec[0].addr, buf, sizeof buf), "2001:db8::1");
    dns_answer_free(&a);

    CHECK_INT(dns_sync_query(d, "mx.test", DNS_TYPE_MX, &a), DNS_OK);
    CHECK_INT(a.n, 3);
    CHECK_INT(a.rec[0].preference, 10);
    CHECK_STR(a.rec[0].text, "a.mx.test");
    CHECK_STR(a.rec[2].text, "c.mx.test");
    CHECK_INT(a.rec[2].ttl, a.rec[0].ttl);
    dns_answer_free(&a);
    CHECK(a.rec == NULL && a.n == 0);

    CHECK_INT(dns_sync_query(d, "txt.test", DNS_TYPE_TXT, &a), DNS_OK);
    CHECK_INT(a.n, 2);
    bool first_spf = strcmp(a.rec[0].text, "v=spf1 -all") == 0;
    CHECK_STR(a.rec[first_spf ? 1 : 0].text, "hello");
    dns_answer_free(&a);

    struct sockaddr_in sin = { .sin_family = AF_INET };
    inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
    CHECK_INT(dns_sync_ptr(d, (struct sockaddr *)&sin, &a), DNS_OK);
    CHECK_INT(a.n, 1);
    CHECK_STR(a.rec[0].text, "host.test");
    dns_answer_free(&a);
    CHECK_INT(dns_sync_query(d, "7.2.0.192.in-addr.arpa", DNS_TYPE_PTR, &a), DNS_OK);
    dns_answer_free(&a);
    dns_free(d);
}

TEST(sync_failures)
{
    struct dns *d = new_dns();
    struct dns_answer a;
    CHECK_INT(dns_sync_query(d, "nosuch.test", DNS_TYPE_TXT, &a), DNS_NXDOMAIN);
    CHECK(a.n == 0 && a.rec == NULL);
    CHECK_INT(dns_sync_query(d, "host.test", DNS_TYPE_MX, &a), DNS_NODATA);
    CHECK_INT(a.n, 0);
    CHECK_INT(dns_sync_query(d, "servfail.test", DNS_TYPE_A, &a), DNS_TEMPFAIL);
    /* Refused without a query. */
    CHECK_INT(dns_sync_query(d, "a..b", DNS_TYPE_A, &a), DNS_PERMFAIL);
    CHECK_INT(dns_sync_query(d, "host.test", DNS_TYPE_NS, &a), DNS_PERMFAIL);
    CHECK_INT(dns_sync_query(NULL, "host.test", DNS_TYPE_A, &a), DNS_PERMFAIL);
    dns_answer_free(&a);
    dns_free(d);
}

/* Worker threads resolving while the loop runs asynchronous lookups on the
 * same context: every answer arrives, each on its own side. */
struct sync_worker {
    pthread_t thread;
    struct dns *d;
    int ok;
};

static void *sync_worker_main(void *arg)
{
    struct sync_worker *w = arg;
    for (int i = 0; i < 20; i++) {
        struct dns_answer a;
        const char *name = (i % 2) ? "mx.test" : "v4only.test";
        int type = (i % 2) ? DNS_TYPE_MX : DNS_TYPE_A;
        if (dns_sync_query(w->d, name, type, &a) == DNS_OK && a.n == ((i % 2) ? 3u : 1u))
            w->ok++;
        dns_answer_free(&a);
    }
    return NULL;
}

TEST(sync_from_threads_beside_the_loop)
{
    struct dns *d = new_dns();
    struct sync_worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct sync_worker){ .d = d };
        CHECK_INT(pthread_create(&w[i].thread, NULL, sync_worker_main, &w[i]), 0);
    }
    struct result r[10];
    for (int i = 0; i < 10; i++) {
        r[i] = (struct result){ .calls = 0 };
        CHECK_INT(dns_lookup_addr(d, "host.test", AF_INET, on_addr, &r[i]), 0);
    }
    for (int i = 0; i < 10; i++) {
        wait_for(&r[i].calls, 5);
        CHECK_INT(r[i].calls, 1);
        CHECK_INT(r[i].n, 2);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(w[i].thread, NULL);
        CHECK_INT(w[i].ok, 20);
    }
    CHECK_INT(dns_pending(d), 0);
    dns_free(d);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A server that never answers: DNS_TEMPFAIL within the timeout. Its own
 * context, so that the server being marked down stays there. */
TEST(sync_no_answer_within_the_timeout)
{
    struct dns *d = new_dns();
    dns_set_timeout(d, 2.0);
    struct dns_answer a;
    double start = now_seconds();
    CHECK_INT(dns_sync_query(d, "timeout.test", DNS_TYPE_TXT, &a), DNS_TEMPFAIL);
    CHECK(now_seconds() - start < 3.0);
    CHECK(a.n == 0 && a.rec == NULL);
    /* libunbound's own retries grow (9 s, 18 s...) once the server is
     * known to be slow; the deadline holds regardless. */
    for (int i = 0; i < 2; i++) {
        start = now_seconds();
        CHECK_INT(dns_sync_query(d, "x.timeout.test", DNS_TYPE_A, &a), DNS_TEMPFAIL);
        CHECK(now_seconds() - start < 3.0);
    }
    /* Freed while helper threads are still inside ub_resolve: the last
     * one deletes the context (ASan would see a use after free). */
    dns_free(d);
}

/* Last: a silent server may be marked down in this context's cache. */
TEST(no_answer_is_tempfail_by_the_deadline)
{
    struct dns *d = new_dns();
    dns_set_timeout(d, 1.5);
    struct result r = { .calls = 0 };
    ev_now_update(loop);
    ev_tstamp start = ev_now(loop);
    CHECK_INT(dns_lookup_mx(d, "timeout.test", on_mx, &r), 0);
    wait_for(&r.calls, 10);
    CHECK_INT(r.calls, 1);
    CHECK_INT(r.status, DNS_TEMPFAIL);
    CHECK(ev_now(loop) - start < 3.0);
    CHECK_INT(dns_pending(d), 0);
    dns_free(d);
}

int main(void)
{
    if (getenv("TEST_DNS_DEBUG"))
        log_set_level(LOG_DEBUG);
    RUN(parse_mx_with_compression);
    RUN(parse_truncated_everywhere);
    RUN(name_pointer_loops_rejected);
    RUN(name_limits);
    RUN(parse_bad_rdata);
    RUN(parse_skips_unprintable_names_and_reports_rcode);
    RUN(txt_join);

    loop = ev_default_loop(0);
    if (responder_start(&responder) < 0) {
        fprintf(stderr, "cannot start the DNS responder: %s\n", strerror(errno));
        return 1;
    }
    RUN(new_rejects_bad_resolver);
    RUN(invalid_names_refused);
    RUN(mx_sorted);
    RUN(nxdomain_and_nodata);
    RUN(addresses_v6_first);
    RUN(txt_records);
    RUN(ptr_records);
    RUN(servfail_is_tempfail);
    RUN(free_with_queries_in_flight);
    RUN(free_from_inside_a_callback);
    RUN(sync_records_and_ttls);
    RUN(sync_failures);
    RUN(sync_from_threads_beside_the_loop);
    RUN(sync_no_answer_within_the_timeout);
    RUN(no_answer_is_tempfail_by_the_deadline);
    responder_stop(&responder);
    return test_summary();
}
