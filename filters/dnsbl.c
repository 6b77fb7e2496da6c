/* DNS block lists on the client address. See dnsbl.h. */
#include "dnsbl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server.h"

#define THREAD_STACK (256 * 1024)

/* --- query names ------------------------------------------------------------- */

/* The IPv4 address inside a mapped IPv6 one (::ffff:a.b.c.d), or NULL. */
static const uint8_t *mapped_v4(const struct sockaddr_in6 *sin6)
{
    static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    const uint8_t *a = sin6->sin6_addr.s6_addr;
    return memcmp(a, prefix, sizeof prefix) == 0 ? a + 12 : NULL;
}

int dnsbl_query_name(const struct sockaddr *addr, const char *zone, char *out, size_t outlen)
{
    const uint8_t *v4 = NULL, *v6 = NULL;
    if (addr->sa_family == AF_INET) {
        v4 = (const uint8_t *)&((const struct sockaddr_in *)(const void *)addr)->sin_addr;
    } else if (addr->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const void *)addr;
        v4 = mapped_v4(sin6);
        if (!v4)
            v6 = sin6->sin6_addr.s6_addr;
    } else {
        return -1;
    }
    int n;
    if (v4) {
        n = snprintf(out, outlen, "%u.%u.%u.%u.%s", v4[3], v4[2], v4[1], v4[0], zone);
    } else {
        static const char hex[] = "0123456789abcdef";
        char nibbles[64];
        for (int i = 0; i < 16; i++) {
            uint8_t b = v6[15 - i];
            nibbles[i * 4] = hex[b & 0xf];
            nibbles[i * 4 + 1] = '.';
            nibbles[i * 4 + 2] = hex[b >> 4];
            nibbles[i * 4 + 3] = '.';
        }
        n = snprintf(out, outlen, "%.64s%s", nibbles, zone);
    }
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

void dnsbl_reason_name(const char *zone, char *out, size_t outlen)
{
    int w = snprintf(out, outlen, "DNSBL_");
    if (w < 0 || (size_t)w >= outlen)
        return;
    size_t n = (size_t)w;
    for (size_t i = 0; zone[i] && n + 1 < outlen; i++) {
        char c = zone[i];
        out[n++] = c == '.' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    if (n < outlen)
        out[n] = '\0';
}

/* --- answers --------------------------------------------------------------------- */

/* The codes by which a list says it did not answer the question: Spamhaus
 * 127.255.255.0/24 (252 typing error, 254 public resolver, 255 excessive
 * queries) and dnswl.org's 127.0.0.255 (query limit exceeded). */
static bool is_error_code(const uint8_t a[4])
{
    return a[0] == 127 && ((a[1] == 255 && a[2] == 255) || (a[1] == 0 && a[2] == 0 && a[3] == 255));
}

enum dnsbl_answer dnsbl_classify(const struct dns_answer *a, char *code, size_t codelen)
{
    if (codelen)
        code[0] = '\0';
    if (a->status == DNS_NXDOMAIN || a->status == DNS_NODATA)
        return DNSBL_NOT_LISTED;
    if (a->status != DNS_OK)
        return DNSBL_FAILED;
    enum dnsbl_answer best = DNSBL_NOT_LISTED;
    for (size_t i = 0; i < a->n; i++) {
        if (a->rec[i].addr.ss_family != AF_INET)
            continue;
        const struct sockaddr_in *sin = (const void *)&a->rec[i].addr;
        const uint8_t *b = (const uint8_t *)&sin->sin_addr;
        enum dnsbl_answer this = b[0] != 127 ? DNSBL_BOGUS
                               : is_error_code(b) ? DNSBL_REFUSED : DNSBL_LISTED;
        /* listed beats refused beats bogus; the code shown is the winner's */
        bool better = best == DNSBL_NOT_LISTED || this == DNSBL_LISTED ||
                      (this == DNSBL_REFUSED && best == DNSBL_BOGUS);
        if (better && this != best) {
            best = this;
            if (codelen)
                inet_ntop(AF_INET, &sin->sin_addr, code, (socklen_t)codelen);
        }
    }
    return best;
}

/* --- lookups ------------------------------------------------------------------------ */

struct zone_job {
    const struct sockaddr *addr;
    const struct dnsbl_zone *zone;
    dnsbl_query_fn query;
    void *ctx;
    struct dnsbl_zone_result *res;
    pthread_t thread;
    bool started;
};

static void ask_zone(struct zone_job *j)
{
    char name[DNS_NAME_MAX + 2];
    if (dnsbl_query_name(j->addr, j->zone->zone, name, sizeof name) < 0) {
        j->res->answer = DNSBL_FAILED;
        j->res->code[0] = '\0';
        return;
    }
    struct dns_answer a;
    memset(&a, 0, sizeof a);
    j->query(j->ctx, name, &a);
    j->res->answer = dnsbl_classify(&a, j->res->code, sizeof j->res->code);
    dns_answer_free(&a);
}

static void *zone_thread(void *arg)
{
    ask_zone(arg);
    return NULL;
}

void dnsbl_lookup(const struct sockaddr *addr, const struct dnsbl_zone *zones, size_t n,
                  dnsbl_query_fn query, void *ctx, struct dnsbl_zone_result *res)
{
    struct zone_job jobs[SETTINGS_DNSBL_ZONES_MAX];
    if (n > SETTINGS_DNSBL_ZONES_MAX)
        n = SETTINGS_DNSBL_ZONES_MAX;
    pthread_attr_t attr;
    bool attr_ok = pthread_attr_init(&attr) == 0;
    if (attr_ok)
        pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (size_t i = 0; i < n; i++) {
        jobs[i] = (struct zone_job){ .addr = addr, .zone = &zones[i], .query = query,
                                     .ctx = ctx, .res = &res[i] };
        /* The last zone is asked here: one thread fewer. */
        if (i + 1 < n)
            jobs[i].started = pthread_create(&jobs[i].thread, attr_ok ? &attr : NULL,
                                             zone_thread, &jobs[i]) == 0;
    }
    if (attr_ok)
        pthread_attr_destroy(&attr);
    for (size_t i = 0; i < n; i++)
        if (!jobs[i].started)
            ask_zone(&jobs[i]);
    for (size_t i = 0; i < n; i++)
        if (jobs[i].started)
            pthread_join(jobs[i].thread, NULL);
}

/* --- decision ------------------------------------------------------------------------ */

double dnsbl_sum(const struct dnsbl_zone *zones, size_t n, const struct dnsbl_zone_result *res)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        if (res[i].answer == DNSBL_LISTED)
            sum += zones[i].weight;
    return sum;
}

size_t dnsbl_results(const struct dnsbl_zone *zones, size_t n,
                     const struct dnsbl_zone_result *res, double threshold,
                     const char *client_ip, struct filter_result *out, size_t max)
{
    if (!max)
        return 0;
    double sum = dnsbl_sum(zones, n, res);
    if (sum >= threshold) {
        size_t worst = n;
        for (size_t i = 0; i < n; i++)
            if (res[i].answer == DNSBL_LISTED &&
                (worst == n || zones[i].weight > zones[worst].weight))
                worst = i;
        if (worst == n)
            return 0;
        struct filter_result *r = &out[0];
        memset(r, 0, sizeof *r);
        r->verdict = FILTER_REJECT;
        r->code = 554;
        snprintf(r->enhanced, sizeof r->enhanced, "5.7.1");
        dnsbl_reason_name(zones[worst].zone, r->reason, sizeof r->reason);
        snprintf(r->text, sizeof r->text,
                 "Service unavailable; client [%.45s] blocked using %.160s", client_ip,
                 zones[worst].zone);
        return 1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i].answer != DNSBL_LISTED)
            continue;
        if (k == max) {
            /* out of slots: the last one gathers the rest */
            struct filter_result *last = &out[max - 1];
            last->score += zones[i].weight;
            snprintf(last->reason, sizeof last->reason, "DNSBL_OTHER");
            continue;
        }
        struct filter_result *r = &out[k++];
        memset(r, 0, sizeof *r);
        r->verdict = FILTER_SCORE;
        r->score = zones[i].weight;
        dnsbl_reason_name(zones[i].zone, r->reason, sizeof r->reason);
    }
    return k;
}

/* --- the filter --------------------------------------------------------------------- */

static bool enabled(const struct settings *st)
{
    return st->enable_dnsbl;
}

static enum dns_status sync_query(void *ctx, const char *name, struct dns_answer *out)
{
    return dns_sync_query(ctx, name, DNS_TYPE_A, out);
}

static void log_zones(const struct filter_txn *t, const struct dnsbl_zone *zones, size_t n,
                      const struct dnsbl_zone_result *res)
{
    const char *id = t->id ? t->id : "-";
    const char *ip = t->client_ip ? t->client_ip : "?";
    for (size_t i = 0; i < n; i++) {
        const struct dnsbl_zone_result *r = &res[i];
        switch (r->answer) {
        case DNSBL_NOT_LISTED:
            break;
        case DNSBL_LISTED:
            log_info("dnsbl: %s client=%s listed by %s (%s), weight %g", id, ip,
                     zones[i].zone, r->code, zones[i].weight);
            break;
        case DNSBL_REFUSED:
            log_warn("dnsbl: %s client=%s: %s refused the query (%s), zone skipped", id,
                     ip, zones[i].zone, r->code);
            break;
        case DNSBL_BOGUS:
            log_warn("dnsbl: %s client=%s: %s answered %s, outside 127.0.0.0/8, zone skipped",
                     id, ip, zones[i].zone, r->code);
            break;
        case DNSBL_FAILED:
            log_warn("dnsbl: %s client=%s: lookup in %s failed (DNS timeout or error), "
                     "zone skipped", id, ip, zones[i].zone);
            break;
        }
    }
}

static void check(const struct filter_txn *t, struct filter_result *r)
{
    r->verdict = FILTER_ACCEPT;
    const struct settings *st = t->srv->settings;
    struct dnsbl_zone zones[SETTINGS_DNSBL_ZONES_MAX];
    int n = settings_dnsbl_zones(st->dnsbl_zones, zones, SETTINGS_DNSBL_ZONES_MAX);
    if (n <= 0 || !t->client || !t->srv->dns)
        return;
    struct dnsbl_zone_result res[SETTINGS_DNSBL_ZONES_MAX];
    dnsbl_lookup((const struct sockaddr *)t->client, zones, (size_t)n, sync_query,
                 t->srv->dns, res);
    log_zones(t, zones, (size_t)n, res);
    struct filter_result found[SETTINGS_DNSBL_ZONES_MAX];
    size_t k = dnsbl_results(zones, (size_t)n, res, (double)st->dnsbl_threshold,
                             t->client_ip ? t->client_ip : "", found, SETTINGS_DNSBL_ZONES_MAX);
    if (k == 1 && found[0].verdict == FILTER_REJECT) {
        *r = found[0];
        return;
    }
    for (size_t i = 0; i < k; i++)
        filter_add_score(t, found[i].reason, found[i].score);
}

const struct filter_ops dnsbl_filter = {
    .name = "dnsbl",
    .enabled = enabled,
    .hook = { [FILTER_CONNECT] = check },
};
