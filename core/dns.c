/* dns: libunbound in threaded async mode (no forked process), its result
 * pipe watched by an ev_io, and one ev_timer per lookup as a hard deadline
 * because libunbound's own retries towards a silent server take far longer
 * than a mail transaction should wait. Records are read from the answer
 * packet with our own bounds-checked parser rather than ub_result->data, so
 * that every record type goes through one audited (and fuzzed) path. */
#include "dns.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unbound.h>

#include "dns_cache.h"
#include "log.h"

/* Records kept per answer; more are ignored (and logged). */
#define DNS_MAX_RECORDS 64
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3

enum query_kind { Q_MX, Q_ADDR, Q_TXT, Q_PTR };

struct dns_query;

/* One libunbound query; an address lookup has one per family. */
struct subquery {
    struct dns_query *q;
    int id;                         /* libunbound's async id while active */
    int family;                     /* AF_INET6 / AF_INET for Q_ADDR */
    bool active;
    enum dns_status status;
    struct sockaddr_storage *addrs; /* Q_ADDR results, malloc'd */
    size_t n;
};

struct dns_query {
    struct dns *d;
    struct dns_query *prev, *next;
    enum query_kind kind;
    union {
        dns_mx_fn mx;
        dns_addr_fn addr;
        dns_txt_fn txt;
        dns_ptr_fn ptr;
    } fn;
    void *arg;
    ev_timer timer;
    struct subquery sub[2];
    unsigned nsub;
    unsigned active;                /* subqueries still waiting */
    char name[DNS_NAME_MAX + 1];
};

struct dns {
    struct ev_loop *loop;
    struct ub_ctx *ub;
    ev_io io;
    double timeout;
    struct dns_query *queries;      /* in flight */
    unsigned pending;
    bool processing;                /* inside ub_process: defer deletion */
    bool dying;                     /* dns_free called while processing */
    /* Blocking lookups: helper threads still inside ub_resolve keep the
     * libunbound context alive; the last one deletes it after dns_free. */
    pthread_mutex_t sync_mu;
    unsigned sync_helpers;
    bool released;                  /* dns_free done with the loop side */
    struct dns_cache *sync_cache;   /* answers of blocking lookups (NULL: none) */
};

static void context_release(struct dns *d);

/* ---------------------------------------------------------------------- */
/* Wire format                                                            */
/* ---------------------------------------------------------------------- */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static bool label_byte_ok(uint8_t c)
{
    return c > 0x20 && c < 0x7f && c != '.';
}

int dns_name_decode(const uint8_t *msg, size_t len, size_t off, char *out, size_t outlen,
                    size_t *next)
{
    size_t pos = off, seg_start = off, wire = 1, o = 0;
    bool jumped = false, unprintable = false;

    if (!out || outlen == 0)
        return -1;
    for (;;) {
        if (pos >= len)
            return -1;
        uint8_t c = msg[pos];
        if (c == 0) {
            if (!jumped)
                *next = pos + 1;
            break;
        }
        if ((c & 0xC0) == 0xC0) {
            if (pos + 1 >= len)
                return -1;
            size_t target = ((size_t)(c & 0x3F) << 8) | msg[pos + 1];
            /* Strictly before the segment being read: every jump goes
             * further back, so no pointer chain can loop. */
            if (target >= seg_start)
                return -1;
            if (!jumped)
                *next = pos + 2;
            jumped = true;
            pos = seg_start = target;
            continue;
        }
        if (c & 0xC0)
            return -1;   /* extended and reserved label types */
        if (pos + 1 + c > len)
            return -1;
        wire += (size_t)c + 1;
        if (wire > 255)
            return -1;
        if (o + (o ? 1 : 0) + c + 1 > outlen)
            return -1;
        if (o)
            out[o++] = '.';
        for (size_t i = 0; i < c; i++) {
            uint8_t b = msg[pos + 1 + i];
            if (!label_byte_ok(b)) {
                unprintable = true;
                b = '?';
            }
            out[o++] = (char)b;
        }
        pos += (size_t)c + 1;
    }
    out[o] = '\0';
    return unprintable ? -2 : 0;
}

/* Checks that TXT rdata is a sequence of complete character-strings. */
static bool txt_valid(const uint8_t *rdata, size_t rdlen)
{
    size_t pos = 0;
    while (pos < rdlen) {
        pos += (size_t)rdata[pos] + 1;
        if (pos > rdlen)
            return false;
    }
    return rdlen > 0;
}

long dns_txt_join(const uint8_t *rdata, size_t rdlen, char *out, size_t outlen)
{
    size_t pos = 0, o = 0;
    if (!txt_valid(rdata, rdlen) || outlen == 0)
        return -1;
    while (pos < rdlen) {
        size_t n = rdata[pos++];
        if (o + n >= outlen || memchr(rdata + pos, '\0', n))
            return -1;
        memcpy(out + o, rdata + pos, n);
        o += n;
        pos += n;
    }
    out[o] = '\0';
    return (long)o;
}

/* Fills rr from one record's rdata. Returns 1 to deliver, 0 to skip (an
 * unrepresentable name), -1 for malformed rdata. */
static int decode_rdata(const uint8_t *msg, size_t rd, struct dns_rr *rr)
{
    size_t next = 0, name_off = rd;
    int rc;

    switch (rr->type) {
    case DNS_TYPE_A:
        return rr->rdlen == 4 ? 1 : -1;
    case DNS_TYPE_AAAA:
        return rr->rdlen == 16 ? 1 : -1;
    case DNS_TYPE_TXT:
        return txt_valid(rr->rdata, rr->rdlen) ? 1 : -1;
    case DNS_TYPE_MX:
        if (rr->rdlen < 3)
            return -1;
        rr->preference = get16(msg + rd);
        name_off = rd + 2;
        /* fall through */
    case DNS_TYPE_PTR:
    case DNS_TYPE_CNAME:
    case DNS_TYPE_NS:
        /* The name may point anywhere earlier, but must end with the rdata. */
        rc = dns_name_decode(msg, rd + rr->rdlen, name_off, rr->name, sizeof rr->name, &next);
        if (rc == -1 || next != rd + rr->rdlen)
            return -1;
        return rc == 0 ? 1 : 0;
    default:
        return 1;
    }
}

/* Skips the name at *pos. */
static int skip_name(const uint8_t *msg, size_t len, size_t *pos)
{
    char scratch[DNS_NAME_MAX + 1];
    size_t next = 0;
    if (dns_name_decode(msg, len, *pos, scratch, sizeof scratch, &next) == -1)
        return -1;
    *pos = next;
    return 0;
}

int dns_parse_answer(const uint8_t *msg, size_t len, uint16_t type, dns_rr_fn fn, void *arg)
{
    if (!msg || len < 12)
        return -1;
    int rcode = msg[3] & 0x0F;
    unsigned qdcount = get16(msg + 4), ancount = get16(msg + 6);
    size_t pos = 12;

    for (unsigned i = 0; i < qdcount; i++) {
        if (skip_name(msg, len, &pos) < 0 || pos + 4 > len)
            return -1;
        pos += 4;
    }
    bool stopped = false;
    for (unsigned i = 0; i < ancount; i++) {
        if (skip_name(msg, len, &pos) < 0 || pos + 10 > len)
            return -1;
        struct dns_rr rr;
        memset(&rr, 0, sizeof rr);
        rr.type = get16(msg + pos);
        uint16_t klass = get16(msg + pos + 2);
        rr.ttl = get32(msg + pos + 4);
        rr.rdlen = get16(msg + pos + 8);
        size_t rd = pos + 10;
        if (rd + rr.rdlen > len)
            return -1;
        rr.rdata = msg + rd;
        pos = rd + rr.rdlen;
        if (stopped || rr.type != type || klass != 1)
            continue;
        int use = decode_rdata(msg, rd, &rr);
        if (use < 0)
            return -1;
        if (use > 0 && fn && fn(arg, &rr) != 0)
            stopped = true;
    }
    return rcode;
}

/* ---------------------------------------------------------------------- */
/* Names                                                                  */
/* ---------------------------------------------------------------------- */

/* A name we are willing to ask for: non-empty labels of at most 63
 * printable octets, 253 in all (a trailing dot allowed). */
static bool name_valid(const char *name)
{
    size_t len = strnlen(name, DNS_NAME_MAX + 1);
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (c <= 0x20 || c >= 0x7f || c == '\\' || ++label > 63)
            return false;
    }
    return label > 0;
}

static int ptr_name(const struct sockaddr *sa, char *out, size_t outlen)
{
    const uint8_t *b;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        b = s6->sin6_addr.s6_addr;
        if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            static const char hex[] = "0123456789abcdef";
            size_t o = 0;
            if (outlen < 64 + sizeof "ip6.arpa")
                return -1;
            for (int i = 15; i >= 0; i--) {
                out[o++] = hex[b[i] & 0x0F];
                out[o++] = '.';
                out[o++] = hex[b[i] >> 4];
                out[o++] = '.';
            }
            memcpy(out + o, "ip6.arpa", sizeof "ip6.arpa");
            return 0;
        }
        b += 12;   /* IPv4-mapped: the IPv4 reverse name */
    } else if (sa->sa_family == AF_INET) {
        b = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr.s_addr;
    } else {
        return -1;
    }
    int n = snprintf(out, outlen, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

static const char *status_name(enum dns_status s)
{
    switch (s) {
    case DNS_OK: return "ok";
    case DNS_NXDOMAIN: return "nxdomain";
    case DNS_NODATA: return "nodata";
    case DNS_TEMPFAIL: return "tempfail";
    case DNS_PERMFAIL: return "permfail";
    }
    return "?";
}

static const char *type_name(int type)
{
    switch (type) {
    case DNS_TYPE_A: return "A";
    case DNS_TYPE_AAAA: return "AAAA";
    case DNS_TYPE_MX: return "MX";
    case DNS_TYPE_TXT: return "TXT";
    case DNS_TYPE_PTR: return "PTR";
    }
    return "?";
}

/* ---------------------------------------------------------------------- */
/* Query bookkeeping                                                      */
/* ---------------------------------------------------------------------- */

static void io_update(struct dns *d)
{
    if (d->pending > 0 && !ev_is_active(&d->io))
        ev_io_start(d->loop, &d->io);
    else if (d->pending == 0 && ev_is_active(&d->io))
        ev_io_stop(d->loop, &d->io);
}

static void query_link(struct dns *d, struct dns_query *q)
{
    q->next = d->queries;
    if (d->queries)
        d->queries->prev = q;
    d->queries = q;
    d->pending++;
    io_update(d);
}

/* Takes q out of the in-flight list before its callback runs, so that
 * dns_free from inside the callback never sees it. */
static void query_unlink(struct dns_query *q)
{
    struct dns *d = q->d;
    ev_timer_stop(d->loop, &q->timer);
    if (q->prev)
        q->prev->next = q->next;
    else
        d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    q->prev = q->next = NULL;
    d->pending--;
    io_update(d);
}

static void query_free(struct dns_query *q)
{
    for (unsigned i = 0; i < q->nsub; i++)
        free(q->sub[i].addrs);
    free(q);
}

static void query_cancel_subs(struct dns_query *q)
{
    for (unsigned i = 0; i < q->nsub; i++) {
        if (q->sub[i].active) {
            ub_cancel(q->d->ub, q->sub[i].id);
            q->sub[i].active = false;
            q->sub[i].status = DNS_TEMPFAIL;
        }
    }
    q->active = 0;
}

static enum dns_status rcode_status(int err, const struct ub_result *r, const char *name)
{
    if (err) {
        log_debug("dns: %s: resolver error: %s", name, ub_strerror(err));
        return DNS_TEMPFAIL;
    }
    if (r->bogus)
        return DNS_PERMFAIL;
    switch (r->rcode) {
    case 0:
        return r->havedata ? DNS_OK : DNS_NODATA;
    case DNS_RCODE_NXDOMAIN:
        return DNS_NXDOMAIN;
    case DNS_RCODE_SERVFAIL:
        return DNS_TEMPFAIL;
    default:
        return DNS_PERMFAIL;
    }
}

/* Parses the answer packet of r with fn; the status after parsing. */
static enum dns_status parse_result(struct dns_query *q, int err, struct ub_result *r, int type,
                                    dns_rr_fn fn, void *collector, const size_t *count)
{
    enum dns_status st = rcode_status(err, r, q->name);
    if (st == DNS_OK) {
        if (!r->answer_packet || r->answer_len <= 0
            || dns_parse_answer(r->answer_packet, (size_t)r->answer_len, (uint16_t)type, fn,
                                collector) < 0) {
            log_warn("dns: %s %s: malformed answer", type_name(type), q->name);
            st = DNS_PERMFAIL;
        } else if (*count == 0) {
            st = DNS_NODATA;
        }
    }
    log_debug("dns: %s %s: %s (%zu records)", type_name(type), q->name, status_name(st),
              st == DNS_OK ? *count : 0);
    return st;
}

/* ---------------------------------------------------------------------- */
/* Collectors: answer records into the arrays the callbacks receive       */
/* ---------------------------------------------------------------------- */

struct mx_set {
    struct dns_mx mx[DNS_MAX_RECORDS];
    size_t n;
};

static int collect_mx(void *arg, const struct dns_rr *rr)
{
    struct mx_set *s = arg;
    if (s->n == DNS_MAX_RECORDS)
        return 1;
    /* Insertion keeps equal preferences in answer order (n is small). */
    size_t i = s->n++;
    while (i > 0 && s->mx[i - 1].preference > rr->preference) {
        s->mx[i] = s->mx[i - 1];
        i--;
    }
    s->mx[i].preference = rr->preference;
    memcpy(s->mx[i].host, rr->name, sizeof s->mx[i].host);
    return 0;
}

struct addr_set {
    struct sockaddr_storage *addrs;
    size_t n;
};

static int collect_addr(void *arg, const struct dns_rr *rr)
{
    struct addr_set *s = arg;
    if (s->n == DNS_MAX_RECORDS)
        return 1;
    struct sockaddr_storage *ss = &s->addrs[s->n++];
    memset(ss, 0, sizeof *ss);
    if (rr->type == DNS_TYPE_AAAA) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, rr->rdata, 16);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, rr->rdata, 4);
    }
    return 0;
}

struct text_set {
    char *text[DNS_MAX_RECORDS];
    size_t n;
    bool nomem;
};

static int collect_txt(void *arg, const struct dns_rr *rr)
{
    struct text_set *s = arg;
    if (s->n == DNS_MAX_RECORDS)
        return 1;
    char *t = malloc((size_t)rr->rdlen + 1);
    if (!t) {
        s->nomem = true;
        return 1;
    }
    if (dns_txt_join(rr->rdata, rr->rdlen, t, (size_t)rr->rdlen + 1) < 0) {
        free(t);   /* a NUL inside: not something a C string can carry */
        return 0;
    }
    s->text[s->n++] = t;
    return 0;
}

static int collect_name(void *arg, const struct dns_rr *rr)
{
    struct text_set *s = arg;
    if (s->n == DNS_MAX_RECORDS)
        return 1;
    char *t = strdup(rr->name);
    if (!t) {
        s->nomem = true;
        return 1;
    }
    s->text[s->n++] = t;
    return 0;
}

static void text_set_free(struct text_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->text[i]);
}

/* ---------------------------------------------------------------------- */
/* Completion                                                             */
/* ---------------------------------------------------------------------- */

static void finish_mx(struct dns_query *q, int err, struct ub_result *r)
{
    struct mx_set *set = calloc(1, sizeof *set);
    enum dns_status st = DNS_TEMPFAIL;
    if (set && r)
        st = parse_result(q, err, r, DNS_TYPE_MX, collect_mx, set, &set->n);
    query_unlink(q);
    q->fn.mx(q->arg, st, set && st == DNS_OK ? set->mx : NULL, st == DNS_OK ? set->n : 0);
    free(set);
    query_free(q);
}

static void finish_text(struct dns_query *q, int err, struct ub_result *r)
{
    struct text_set set = { .n = 0 };
    enum dns_status st = DNS_TEMPFAIL;
    int type = q->kind == Q_TXT ? DNS_TYPE_TXT : DNS_TYPE_PTR;
    if (r)
        st = parse_result(q, err, r, type, q->kind == Q_TXT ? collect_txt : collect_name, &set,
                          &set.n);
    if (set.nomem) {
        st = DNS_TEMPFAIL;
        text_set_free(&set);
        set.n = 0;
    }
    size_t n = st == DNS_OK ? set.n : 0;
    const char *const *list = n ? (const char *const *)set.text : NULL;
    query_unlink(q);
    if (q->kind == Q_TXT)
        q->fn.txt(q->arg, st, list, n);
    else
        q->fn.ptr(q->arg, st, list, n);
    text_set_free(&set);
    query_free(q);
}

/* When one family failed and the other has data, the data wins; otherwise
 * the most hopeful failure is reported. */
static enum dns_status merge_status(enum dns_status a, enum dns_status b)
{
    static const enum dns_status order[] = { DNS_TEMPFAIL, DNS_NODATA, DNS_NXDOMAIN };
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (a == order[i] || b == order[i])
            return order[i];
    return DNS_PERMFAIL;
}

static void finish_addr(struct dns_query *q)
{
    size_t total = 0;
    enum dns_status st = q->sub[0].status;
    for (unsigned i = 0; i < q->nsub; i++)
        total += q->sub[i].n;
    if (q->nsub == 2)
        st = merge_status(q->sub[0].status, q->sub[1].status);
    struct sockaddr_storage *all = total ? calloc(total, sizeof *all) : NULL;
    if (total && !all)
        total = 0;
    size_t k = 0;
    for (unsigned i = 0; i < q->nsub && all; i++) {
        if (q->sub[i].n)
            memcpy(all + k, q->sub[i].addrs, q->sub[i].n * sizeof *all);
        k += q->sub[i].n;
    }
    if (total)
        st = DNS_OK;
    log_debug("dns: address %s: %s (%zu addresses)", q->name, status_name(st), total);
    query_unlink(q);
    q->fn.addr(q->arg, st, all, total);
    free(all);
    query_free(q);
}

static void addr_result(struct subquery *s, int err, struct ub_result *r)
{
    struct dns_query *q = s->q;
    int type = s->family == AF_INET6 ? DNS_TYPE_AAAA : DNS_TYPE_A;
    struct addr_set set = { .addrs = calloc(DNS_MAX_RECORDS, sizeof *set.addrs) };
    s->status = DNS_TEMPFAIL;
    if (set.addrs && r)
        s->status = parse_result(q, err, r, type, collect_addr, &set, &set.n);
    if (s->status == DNS_OK) {
        s->addrs = set.addrs;
        s->n = set.n;
    } else {
        free(set.addrs);
    }
    if (q->active == 0)
        finish_addr(q);
}

static void on_result(void *mydata, int err, struct ub_result *r)
{
    struct subquery *s = mydata;
    struct dns_query *q = s->q;
    s->active = false;
    q->active--;
    switch (q->kind) {
    case Q_MX:
        finish_mx(q, err, r);
        break;
    case Q_ADDR:
        addr_result(s, err, r);
        break;
    case Q_TXT:
    case Q_PTR:
        finish_text(q, err, r);
        break;
    }
    if (r)
        ub_resolve_free(r);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dns_query *q = w->data;
    if (q->active)
        log_debug("dns: %s: no answer within %.1f s", q->name, q->d->timeout);
    query_cancel_subs(q);
    switch (q->kind) {
    case Q_MX:
        finish_mx(q, 0, NULL);
        break;
    case Q_ADDR:
        finish_addr(q);
        break;
    case Q_TXT:
    case Q_PTR:
        finish_text(q, 0, NULL);
        break;
    }
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dns *d = w->data;
    d->processing = true;
    int err = ub_process(d->ub);
    d->processing = false;
    if (d->dying) {
        context_release(d);
        return;
    }
    if (err)
        log_warn("dns: processing answers: %s", ub_strerror(err));
}

/* ---------------------------------------------------------------------- */
/* Starting lookups                                                       */
/* ---------------------------------------------------------------------- */

static struct dns_query *query_new(struct dns *d, enum query_kind kind, const char *name,
                                   void *arg)
{
    struct dns_query *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->d = d;
    q->kind = kind;
    q->arg = arg;
    memcpy(q->name, name, strnlen(name, DNS_NAME_MAX));
    ev_timer_init(&q->timer, on_timeout, d->timeout, 0.);
    q->timer.data = q;
    return q;
}

static int sub_start(struct dns_query *q, unsigned i, int type)
{
    struct subquery *s = &q->sub[i];
    s->q = q;
    s->status = DNS_TEMPFAIL;
    int err = ub_resolve_async(q->d->ub, q->name, type, 1, s, on_result, &s->id);
    if (err) {
        log_warn("dns: %s %s: cannot start query: %s", type_name(type), q->name,
                 ub_strerror(err));
        return -1;
    }
    s->active = true;
    q->active++;
    log_debug("dns: %s %s: query", type_name(type), q->name);
    return 0;
}

/* Starts q's subqueries (types[0..n)); on failure cancels any started. */
static int query_start(struct dns *d, struct dns_query *q, const int *types, unsigned n)
{
    q->nsub = n;
    for (unsigned i = 0; i < n; i++) {
        if (sub_start(q, i, types[i]) < 0) {
            query_cancel_subs(q);
            query_free(q);
            return -1;
        }
    }
    query_link(d, q);
    ev_timer_start(d->loop, &q->timer);
    return 0;
}

int dns_lookup_mx(struct dns *d, const char *domain, dns_mx_fn fn, void *arg)
{
    if (!d || !fn || !domain || !name_valid(domain))
        return -1;
    struct dns_query *q = query_new(d, Q_MX, domain, arg);
    if (!q)
        return -1;
    q->fn.mx = fn;
    static const int types[] = { DNS_TYPE_MX };
    return query_start(d, q, types, 1);
}

int dns_lookup_txt(struct dns *d, const char *name, dns_txt_fn fn, void *arg)
{
    if (!d || !fn || !name || !name_valid(name))
        return -1;
    struct dns_query *q = query_new(d, Q_TXT, name, arg);
    if (!q)
        return -1;
    q->fn.txt = fn;
    static const int types[] = { DNS_TYPE_TXT };
    return query_start(d, q, types, 1);
}

int dns_lookup_ptr(struct dns *d, const struct sockaddr *addr, dns_ptr_fn fn, void *arg)
{
    char name[DNS_NAME_MAX + 1];
    if (!d || !fn || !addr || ptr_name(addr, name, sizeof name) < 0)
        return -1;
    struct dns_query *q = query_new(d, Q_PTR, name, arg);
    if (!q)
        return -1;
    q->fn.ptr = fn;
    static const int types[] = { DNS_TYPE_PTR };
    return query_start(d, q, types, 1);
}

/* An IP literal needs no query: it is reported from the (zero) timer, so
 * the callback still runs from the loop like any other answer. */
static int addr_literal(struct dns *d, struct dns_query *q, int family)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    if (family != AF_INET && inet_pton(AF_INET6, q->name, &s6->sin6_addr) == 1)
        s6->sin6_family = AF_INET6;
    else if (family != AF_INET6 && inet_pton(AF_INET, q->name, &s4->sin_addr) == 1)
        s4->sin_family = AF_INET;
    else
        return 0;
    q->nsub = 1;
    q->sub[0].addrs = malloc(sizeof ss);
    if (!q->sub[0].addrs)
        return -1;
    memcpy(q->sub[0].addrs, &ss, sizeof ss);
    q->sub[0].n = 1;
    q->sub[0].status = DNS_OK;
    ev_timer_set(&q->timer, 0., 0.);
    query_link(d, q);
    ev_timer_start(d->loop, &q->timer);
    return 1;
}

int dns_lookup_addr(struct dns *d, const char *host, int family, dns_addr_fn fn, void *arg)
{
    if (!d || !fn || !host || !name_valid(host)
        || (family != AF_UNSPEC && family != AF_INET && family != AF_INET6))
        return -1;
    struct dns_query *q = query_new(d, Q_ADDR, host, arg);
    if (!q)
        return -1;
    q->fn.addr = fn;
    int lit = addr_literal(d, q, family);
    if (lit != 0) {
        if (lit < 0)
            query_free(q);
        return lit < 0 ? -1 : 0;
    }
    int types[2];
    unsigned n = 0;
    if (family != AF_INET) {
        q->sub[n].family = AF_INET6;
        types[n++] = DNS_TYPE_AAAA;
    }
    if (family != AF_INET6) {
        q->sub[n].family = AF_INET;
        types[n++] = DNS_TYPE_A;
    }
    return query_start(d, q, types, n);
}

/* ---------------------------------------------------------------------- */
/* Blocking lookups (worker threads)                                      */
/* ---------------------------------------------------------------------- */

struct sync_set {
    struct dns_record *rec;   /* DNS_MAX_RECORDS entries */
    size_t n;
    bool nomem;
};

static int collect_sync(void *arg, const struct dns_rr *rr)
{
    struct sync_set *s = arg;
    if (s->n == DNS_MAX_RECORDS)
        return 1;
    struct dns_record *r = &s->rec[s->n];
    memset(r, 0, sizeof *r);
    r->ttl = rr->ttl;
    switch (rr->type) {
    case DNS_TYPE_A: {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&r->addr;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, rr->rdata, 4);
        break;
    }
    case DNS_TYPE_AAAA: {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->addr;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, rr->rdata, 16);
        break;
    }
    case DNS_TYPE_TXT:
        r->text = malloc((size_t)rr->rdlen + 1);
        if (!r->text) {
            s->nomem = true;
            return 1;
        }
        if (dns_txt_join(rr->rdata, rr->rdlen, r->text, (size_t)rr->rdlen + 1) < 0) {
            free(r->text);   /* a NUL inside: skipped, as in the async path */
            r->text = NULL;
            return 0;
        }
        break;
    default:   /* MX, PTR */
        r->preference = rr->preference;
        r->text = strdup(rr->name);
        if (!r->text) {
            s->nomem = true;
            return 1;
        }
        break;
    }
    s->n++;
    return 0;
}

/* Stable insertion sort by preference (n is small). */
static void sort_mx(struct dns_record *rec, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct dns_record r = rec[i];
        size_t j = i;
        while (j > 0 && rec[j - 1].preference > r.preference) {
            rec[j] = rec[j - 1];
            j--;
        }
        rec[j] = r;
    }
}

void dns_answer_free(struct dns_answer *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        free(a->rec[i].text);
    free(a->rec);
    a->rec = NULL;
    a->n = 0;
}

static bool sync_type_ok(int type)
{
    return type == DNS_TYPE_A || type == DNS_TYPE_AAAA || type == DNS_TYPE_MX
        || type == DNS_TYPE_TXT || type == DNS_TYPE_PTR;
}

/* ub_resolve and the parse, on the calling thread: no deadline of its own
 * (libunbound's retries towards a silent server grow to many seconds). */
static void resolve_blocking(struct dns *d, const char *name, int type, struct dns_answer *out)
{
    struct sync_set set = { .rec = calloc(DNS_MAX_RECORDS, sizeof *set.rec) };
    out->status = DNS_TEMPFAIL;
    if (!set.rec)
        return;
    struct ub_result *r = NULL;
    int err = ub_resolve(d->ub, name, type, 1, &r);
    enum dns_status st = rcode_status(err, r, name);
    if (st == DNS_OK) {
        if (!r->answer_packet || r->answer_len <= 0
            || dns_parse_answer(r->answer_packet, (size_t)r->answer_len, (uint16_t)type,
                                collect_sync, &set) < 0) {
            log_warn("dns: %s %s: malformed answer", type_name(type), name);
            st = DNS_PERMFAIL;
        } else if (set.nomem) {
            st = DNS_TEMPFAIL;
        } else if (set.n == 0) {
            st = DNS_NODATA;
        }
    }
    if (r)
        ub_resolve_free(r);
    log_debug("dns: %s %s: %s (%zu records, blocking)", type_name(type), name, status_name(st),
              st == DNS_OK ? set.n : 0);
    out->status = st;
    out->rec = set.rec;
    out->n = set.n;
    if (st != DNS_OK)
        dns_answer_free(out);
    else if (type == DNS_TYPE_MX)
        sort_mx(out->rec, out->n);
}

/* One blocking lookup handed to a helper thread so that the caller can
 * stop waiting at its deadline (ub_resolve cannot be interrupted). The
 * caller and the helper each hold a reference; the last one frees. */
struct sync_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool done;
    struct dns *d;
    int type;
    char name[DNS_NAME_MAX + 1];
    struct dns_answer ans;
};

static void sync_job_unref(struct sync_job *j)
{
    pthread_mutex_lock(&j->mu);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last)
        return;
    dns_answer_free(&j->ans);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

static void context_delete(struct dns *d)
{
    ub_ctx_delete(d->ub);
    dns_cache_free(d->sync_cache);
    pthread_mutex_destroy(&d->sync_mu);
    free(d);
}

/* The loop side is finished with d: delete it now, or leave that to the
 * last helper thread still resolving. */
static void context_release(struct dns *d)
{
    pthread_mutex_lock(&d->sync_mu);
    d->released = true;
    bool now = d->sync_helpers == 0;
    pthread_mutex_unlock(&d->sync_mu);
    if (now)
        context_delete(d);
}

static void *sync_helper(void *arg)
{
    struct sync_job *j = arg;
    struct dns *d = j->d;
    struct dns_answer ans;
    memset(&ans, 0, sizeof ans);
    resolve_blocking(d, j->name, j->type, &ans);
    pthread_mutex_lock(&j->mu);
    j->ans = ans;
    j->done = true;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    sync_job_unref(j);

    pthread_mutex_lock(&d->sync_mu);
    bool last = --d->sync_helpers == 0 && d->released;
    pthread_mutex_unlock(&d->sync_mu);
    if (last)
        context_delete(d);
    return NULL;
}

static struct sync_job *sync_job_new(struct dns *d, const char *name, int type)
{
    struct sync_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        free(j);
        return NULL;
    }
    pthread_mutex_init(&j->mu, NULL);
    j->refs = 2;
    j->d = d;
    j->type = type;
    memcpy(j->name, name, strnlen(name, DNS_NAME_MAX));
    return j;
}

static bool sync_start(struct sync_job *j)
{
    struct dns *d = j->d;
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&d->sync_mu);
    d->sync_helpers++;
    int rc = pthread_create(&t, &attr, sync_helper, j);
    if (rc != 0)
        d->sync_helpers--;
    pthread_mutex_unlock(&d->sync_mu);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        log_warn("dns: %s: cannot start a lookup thread: %s", j->name, strerror(rc));
    return rc == 0;
}

enum dns_status dns_sync_query(struct dns *d, const char *name, int type, struct dns_answer *out)
{
    memset(out, 0, sizeof *out);
    out->status = DNS_PERMFAIL;
    if (!d || !name || !name_valid(name) || !sync_type_ok(type))
        return out->status;
    if (dns_cache_get(d->sync_cache, name, type, out))
        return out->status;
    out->status = DNS_TEMPFAIL;
    struct sync_job *j = sync_job_new(d, name, type);
    if (!j)
        return out->status;
    if (!sync_start(j)) {
        free(j);   /* never shared */
        return out->status;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    double secs = d->timeout;
    until.tv_sec += (time_t)secs;
    until.tv_nsec += (long)((secs - (double)(time_t)secs) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&j->mu);
    while (!j->done && pthread_cond_timedwait(&j->cv, &j->mu, &until) == 0)
        ;
    if (j->done) {
        *out = j->ans;
        memset(&j->ans, 0, sizeof j->ans);
        dns_cache_put(d->sync_cache, name, type, out);
    } else {
        log_debug("dns: %s %s: no answer within %.1f s (blocking)", type_name(type), name, secs);
    }
    pthread_mutex_unlock(&j->mu);
    sync_job_unref(j);
    return out->status;
}

enum dns_status dns_sync_ptr(struct dns *d, const struct sockaddr *addr, struct dns_answer *out)
{
    char name[DNS_NAME_MAX + 1];
    if (!addr || ptr_name(addr, name, sizeof name) < 0) {
        memset(out, 0, sizeof *out);
        out->status = DNS_PERMFAIL;
        return out->status;
    }
    return dns_sync_query(d, name, DNS_TYPE_PTR, out);
}

/* ---------------------------------------------------------------------- */
/* Context                                                                */
/* ---------------------------------------------------------------------- */

/* "IP:PORT", "[IPv6]:PORT", or a bare IP (port 53) into unbound's
 * "IP@PORT". */
static int resolver_parse(const char *s, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *port = NULL, *ip_start = s;
    size_t ip_len;
    const char *colon = strrchr(s, ':');
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (close[1] != '\0' && close[1] != ':'))
            return -1;
        ip_start = s + 1;
        ip_len = (size_t)(close - ip_start);
        port = close[1] == ':' ? close + 2 : NULL;
    } else if (colon && strchr(s, ':') == colon) {
        ip_len = (size_t)(colon - s);
        port = colon + 1;
    } else {
        ip_len = strlen(s);
    }
    if (ip_len == 0 || ip_len >= sizeof ip)
        return -1;
    memcpy(ip, ip_start, ip_len);
    ip[ip_len] = '\0';
    unsigned char bin[16];
    if (inet_pton(AF_INET, ip, bin) != 1 && inet_pton(AF_INET6, ip, bin) != 1)
        return -1;
    unsigned long p = 53;
    if (port) {
        char *end;
        if (port[0] < '0' || port[0] > '9' || strlen(port) > 5)
            return -1;
        p = strtoul(port, &end, 10);
        if (*end || p == 0 || p > 65535)
            return -1;
    }
    int n = snprintf(out, outlen, "%s@%lu", ip, p);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* Options that only tune behaviour; a failure is logged, not fatal. */
static void set_option(struct ub_ctx *ub, const char *opt, const char *val)
{
    int err = ub_ctx_set_option(ub, opt, val);
    if (err)
        log_debug("dns: unbound option %s %s: %s", opt, val, ub_strerror(err));
}

static int configure(struct ub_ctx *ub, const char *resolver, char *err, size_t errlen)
{
    int rc;
    /* No trust anchor is configured: skip the validator module entirely. */
    set_option(ub, "module-config:", "iterator");
    set_option(ub, "outbound-msg-retry:", "2");
    /* Keep the server's record order; the MTA makes its own choices. */
    set_option(ub, "rrset-roundrobin:", "no");
    if (resolver && resolver[0]) {
        char fwd[INET6_ADDRSTRLEN + 8];
        if (resolver_parse(resolver, fwd, sizeof fwd) < 0) {
            snprintf(err, errlen, "DNS_RESOLVER: expected IP:PORT or [IPv6]:PORT, got \"%s\"",
                     resolver);
            return -1;
        }
        /* Every query goes to that server, test networks included: no
         * built-in answers for loopback, private ranges or .test. */
        set_option(ub, "do-not-query-localhost:", "no");
        set_option(ub, "unblock-lan-zones:", "yes");
        set_option(ub, "insecure-lan-zones:", "yes");
        set_option(ub, "local-zone:", "test. transparent");
        rc = ub_ctx_set_fwd(ub, fwd);
        if (rc) {
            snprintf(err, errlen, "DNS_RESOLVER %s: %s", resolver, ub_strerror(rc));
            return -1;
        }
        return 0;
    }
    rc = ub_ctx_resolvconf(ub, NULL);
    if (rc) {
        snprintf(err, errlen, "reading /etc/resolv.conf: %s", ub_strerror(rc));
        return -1;
    }
    rc = ub_ctx_hosts(ub, NULL);
    if (rc)
        log_warn("dns: reading /etc/hosts: %s", ub_strerror(rc));
    return 0;
}

/* libev exports libevent-compatible event_* functions. When libev comes
 * before libevent in the link, libunbound's thread calls libev's versions
 * and aborts; the executable must link libevent first (see the Makefile). */
static bool event_symbols_ok(void)
{
    void *fn = dlsym(RTLD_DEFAULT, "event_base_new");
    Dl_info info;
    if (!fn || !dladdr(fn, &info) || !info.dli_fname)
        return true;
    return strstr(info.dli_fname, "libev.") == NULL;
}

struct dns *dns_new(struct ev_loop *loop, const char *resolver, char *err, size_t errlen)
{
    if (!event_symbols_ok()) {
        snprintf(err, errlen, "libunbound would call libev's libevent emulation: link "
                 "libevent before libev (-Wl,--push-state,--no-as-needed "
                 "-l:libevent-2.1.so.7 -Wl,--pop-state -lev)");
        return NULL;
    }
    struct dns *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->loop = loop;
    d->timeout = DNS_TIMEOUT_DEFAULT;
    d->ub = ub_ctx_create();
    if (!d->ub) {
        snprintf(err, errlen, "cannot create the libunbound context");
        free(d);
        return NULL;
    }
    pthread_mutex_init(&d->sync_mu, NULL);
    d->sync_cache = dns_cache_new();
    int rc = ub_ctx_async(d->ub, 1);
    if (rc) {
        snprintf(err, errlen, "libunbound threads: %s", ub_strerror(rc));
        goto fail;
    }
    if (configure(d->ub, resolver, err, errlen) < 0)
        goto fail;
    int fd = ub_fd(d->ub);
    if (fd < 0) {
        snprintf(err, errlen, "libunbound has no result descriptor");
        goto fail;
    }
    ev_io_init(&d->io, on_readable, fd, EV_READ);
    d->io.data = d;
    log_debug("dns: resolver %s", resolver && resolver[0] ? resolver : "from /etc/resolv.conf");
    return d;
fail:
    context_delete(d);
    return NULL;
}

void dns_set_timeout(struct dns *d, double seconds)
{
    if (d && seconds > 0)
        d->timeout = seconds;
}

void dns_free(struct dns *d)
{
    if (!d)
        return;
    while (d->queries) {
        struct dns_query *q = d->queries;
        query_cancel_subs(q);
        query_unlink(q);
        query_free(q);
    }
    if (ev_is_active(&d->io))
        ev_io_stop(d->loop, &d->io);
    if (d->processing) {
        d->dying = true;   /* on_readable releases once ub_process returns */
        return;
    }
    context_release(d);
}

unsigned dns_pending(const struct dns *d)
{
    return d ? d->pending : 0;
}
