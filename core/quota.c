/* quota: the limit rules, the size syntax of `setup quota set`, and the
 * usage cache. See quota.h. */
#include "quota.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* --- Sizes --------------------------------------------------------------- */

/* Powers of 1024 for a unit ("" = bytes), as a shift; -1 when unknown. */
static int unit_shift(const char *u)
{
    static const char units[] = "BKMGT";
    if (u[0] == '\0')
        return 0;
    char c = u[0] >= 'a' && u[0] <= 'z' ? (char)(u[0] - 'a' + 'A') : u[0];
    const char *p = strchr(units, c);
    if (!p)
        return -1;
    int shift = (int)(p - units) * 10;
    if (u[1] == '\0')
        return shift;
    if (p != units && (u[1] == 'B' || u[1] == 'b') && u[2] == '\0')
        return shift;   /* KB, MB, ... (but not BB) */
    return -1;
}

bool quota_parse_size(const char *s, uint64_t *bytes)
{
    if (!s || s[0] < '0' || s[0] > '9')
        return false;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        uint64_t digit = (uint64_t)(*s - '0');
        if (v > (ACCOUNTS_QUOTA_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    int shift = unit_shift(s);
    if (shift < 0 || v > (ACCOUNTS_QUOTA_MAX >> shift))
        return false;
    *bytes = v << shift;
    return true;
}

/* --- Limits -------------------------------------------------------------- */

uint64_t quota_effective_limit(bool enable_quotas, bool has_user_quota, uint64_t user_quota,
                               uint64_t mailbox_size_limit)
{
    if (!enable_quotas)
        return 0;
    return has_user_quota ? user_quota : mailbox_size_limit;
}

int quota_limit(struct accounts *a, const struct settings *st, const char *address,
                uint64_t *limit)
{
    *limit = 0;
    if (!st->enable_quotas)
        return 0;
    uint64_t own = 0;
    enum accounts_result r = accounts_quota_get(a, address, &own);
    if (r != ACCOUNTS_OK && r != ACCOUNTS_NO_SUCH_USER) {
        log_error("quota: cannot read the quota of %s", address);
        return -1;
    }
    *limit = quota_effective_limit(true, r == ACCOUNTS_OK, own, st->mailbox_size_limit);
    return 0;
}

/* --- The usage cache ------------------------------------------------------- */

struct slot {
    char *address;       /* NULL = empty */
    uint64_t usage;
    uint64_t scanned_ms; /* monotonic time the scan started */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot cache[QUOTA_CACHE_SLOTS];
static unsigned cache_ttl_ms = QUOTA_CACHE_TTL_MS;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* FNV-1a */
static struct slot *slot_of(const char *address)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)address; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &cache[h % QUOTA_CACHE_SLOTS];
}

static void slot_clear(struct slot *sl)
{
    free(sl->address);
    *sl = (struct slot){ 0 };
}

/* The cached usage when fresh. The caller holds cache_lock. */
static bool cached(const char *address, uint64_t now, uint64_t *bytes)
{
    struct slot *sl = slot_of(address);
    if (!sl->address || strcmp(sl->address, address) != 0 ||
        now - sl->scanned_ms >= cache_ttl_ms)
        return false;
    *bytes = sl->usage;
    return true;
}

/* Without memory the value is simply not cached. */
static void store(const char *address, uint64_t usage, uint64_t scanned_ms)
{
    char *copy = strdup(address);
    if (!copy)
        return;
    pthread_mutex_lock(&cache_lock);
    struct slot *sl = slot_of(address);
    slot_clear(sl);
    *sl = (struct slot){ .address = copy, .usage = usage, .scanned_ms = scanned_ms };
    pthread_mutex_unlock(&cache_lock);
}

int quota_usage(struct mailstore *ms, const char *address, uint64_t *bytes)
{
    uint64_t now = now_ms();
    pthread_mutex_lock(&cache_lock);
    bool hit = cached(address, now, bytes);
    pthread_mutex_unlock(&cache_lock);
    if (hit)
        return 0;
    /* Scanned without the lock: one big Maildir must not stall the
     * checks of every other mailbox. */
    if (mailstore_usage(ms, address, bytes) < 0) {
        log_error("quota: cannot compute the usage of %s: %m", address);
        return -1;
    }
    store(address, *bytes, now);
    return 0;
}

void quota_charge(const char *address, uint64_t bytes)
{
    pthread_mutex_lock(&cache_lock);
    struct slot *sl = slot_of(address);
    if (sl->address && strcmp(sl->address, address) == 0)
        sl->usage = sl->usage > UINT64_MAX - bytes ? UINT64_MAX : sl->usage + bytes;
    pthread_mutex_unlock(&cache_lock);
}

void quota_forget(const char *address)
{
    pthread_mutex_lock(&cache_lock);
    struct slot *sl = slot_of(address);
    if (sl->address && strcmp(sl->address, address) == 0)
        slot_clear(sl);
    pthread_mutex_unlock(&cache_lock);
}

void quota_cache_reset(unsigned ttl_ms)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < QUOTA_CACHE_SLOTS; i++)
        slot_clear(&cache[i]);
    cache_ttl_ms = ttl_ms;
    pthread_mutex_unlock(&cache_lock);
}

/* --- The check --------------------------------------------------------------- */

uint64_t quota_grace(uint64_t limit)
{
    return limit / 10;
}

/* Written without sums that could wrap: usage may be anything the disk
 * says. */
enum quota_result quota_fits(uint64_t limit, uint64_t usage, uint64_t incoming)
{
    uint64_t ceiling = limit + quota_grace(limit);   /* limit <= INT64_MAX: no wrap */
    if (incoming > ceiling)
        return QUOTA_TOO_BIG;
    if (usage <= limit && incoming <= limit - usage)
        return QUOTA_OK;
    if (usage < limit && incoming <= ceiling - usage)
        return QUOTA_OK;    /* the grace */
    return QUOTA_OVER;
}

enum quota_result quota_check(struct accounts *a, struct mailstore *ms,
                              const struct settings *st, const char *address,
                              uint64_t incoming, struct quota_status *out)
{
    struct quota_status q = { 0 };
    enum quota_result r = QUOTA_OK;
    if (quota_limit(a, st, address, &q.limit) < 0 || q.limit == 0)
        goto done;
    if (incoming > q.limit + quota_grace(q.limit)) {
        r = QUOTA_TOO_BIG;  /* no need to know the usage */
        goto done;
    }
    if (quota_usage(ms, address, &q.usage) < 0)
        goto done;      /* logged; fail open */
    /* incoming 0: any message needs at least one octet */
    r = quota_fits(q.limit, q.usage, incoming ? incoming : 1);
done:
    if (out)
        *out = q;
    return r;
}
