/* dns_cache: see dns_cache.h. */
#include "dns_cache.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ascii.h"

struct slot {
    char name[DNS_NAME_MAX + 1];   /* "" when empty */
    int type;
    double expires;                /* CLOCK_MONOTONIC seconds */
    struct dns_answer ans;
};

struct dns_cache {
    pthread_mutex_t mu;
    struct slot slots[DNS_CACHE_SLOTS];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* FNV-1a over the lower-cased name and the type: names compare without case. */
static size_t slot_of(const char *name, int type)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(unsigned)type;
    for (const char *p = name; *p; p++) {
        h ^= (unsigned char)ascii_lower(*p);
        h *= 1099511628211ULL;
    }
    return (size_t)(h % DNS_CACHE_SLOTS);
}

/* A deep copy; false when out of memory (out is then empty). */
static bool answer_copy(const struct dns_answer *in, struct dns_answer *out)
{
    memset(out, 0, sizeof *out);
    out->status = in->status;
    if (in->n == 0)
        return true;
    out->rec = calloc(in->n, sizeof *out->rec);
    if (!out->rec)
        return false;
    for (size_t i = 0; i < in->n; i++) {
        out->rec[i] = in->rec[i];
        out->rec[i].text = NULL;
        if (in->rec[i].text && !(out->rec[i].text = strdup(in->rec[i].text))) {
            out->n = i;
            dns_answer_free(out);
            return false;
        }
    }
    out->n = in->n;
    return true;
}

struct dns_cache *dns_cache_new(void)
{
    struct dns_cache *c = calloc(1, sizeof *c);
    if (c)
        pthread_mutex_init(&c->mu, NULL);
    return c;
}

void dns_cache_free(struct dns_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < DNS_CACHE_SLOTS; i++)
        dns_answer_free(&c->slots[i].ans);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool dns_cache_get(struct dns_cache *c, const char *name, int type, struct dns_answer *out)
{
    if (!c || strlen(name) > DNS_NAME_MAX)
        return false;
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    struct slot *s = &c->slots[slot_of(name, type)];
    double t = now();
    if (s->name[0] && s->type == type && strcasecmp(s->name, name) == 0 && s->expires > t
        && answer_copy(&s->ans, out)) {
        uint32_t left = (uint32_t)(s->expires - t);
        for (size_t i = 0; i < out->n; i++)
            if (out->rec[i].ttl > left)
                out->rec[i].ttl = left;
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void dns_cache_put(struct dns_cache *c, const char *name, int type, const struct dns_answer *a)
{
    if (!c || strlen(name) > DNS_NAME_MAX)
        return;
    uint32_t ttl;
    if (a->status == DNS_OK) {
        ttl = DNS_CACHE_TTL_MAX;
        for (size_t i = 0; i < a->n; i++)
            if (a->rec[i].ttl < ttl)
                ttl = a->rec[i].ttl;
    } else if (a->status == DNS_NXDOMAIN || a->status == DNS_NODATA) {
        ttl = DNS_CACHE_NEGATIVE_TTL;
    } else {
        return;
    }
    if (ttl == 0)
        return;
    struct dns_answer copy;
    if (!answer_copy(a, &copy))
        return;
    pthread_mutex_lock(&c->mu);
    struct slot *s = &c->slots[slot_of(name, type)];
    dns_answer_free(&s->ans);
    s->ans = copy;
    memcpy(s->name, name, strlen(name) + 1);
    s->type = type;
    s->expires = now() + ttl;
    pthread_mutex_unlock(&c->mu);
}
