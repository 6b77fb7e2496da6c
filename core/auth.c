/* Password logins with failure delays and per-address throttling. See
 * auth.h.
 *
 * The failure table lives on the loop thread only: it is read and written
 * in auth_login and in the done functions of the worker jobs, which run on
 * the loop. Records are kept per client address for AUTH_WINDOW seconds
 * after their first failure. */
#include "auth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accounts.h"
#include "log.h"

#define AUTH_WINDOW        600.0  /* seconds a failure record lasts */
#define AUTH_MAX_FAILURES  10     /* more than this within the window: throttled */
#define AUTH_DELAY_FIRST   1.0    /* seconds, doubled per failure */
#define AUTH_DELAY_MAX     8.0
#define AUTH_TABLE_MAX     4096   /* addresses tracked; the oldest is dropped beyond */
#define AUTH_PASS_MAX      1024
#define AUTH_ADDR_MAX      64     /* a textual IPv6 address fits */

struct failure {
    char addr[AUTH_ADDR_MAX];
    unsigned count;
    double first;                 /* monotonic seconds of the first failure */
};

static double delay_unit = 1.0;
static struct failure *table;
static size_t table_n, table_cap;

struct login {
    struct server *srv;
    auth_done_fn done;
    void *arg;
    const char *proto;            /* static string or NULL */
    char client[AUTH_ADDR_MAX];
    char user[ACCOUNTS_ADDR_MAX + 1];
    char address[ACCOUNTS_ADDR_MAX + 1];
    char password[AUTH_PASS_MAX + 1];
    bool valid;                   /* user and password within limits */
    bool ok;
    enum auth_result result;
    ev_timer delay;
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- the failure table ---------------------------------------------------- */

static void table_expire(double now)
{
    size_t j = 0;
    for (size_t i = 0; i < table_n; i++)
        if (now - table[i].first < AUTH_WINDOW)
            table[j++] = table[i];
    table_n = j;
}

static struct failure *table_find(const char *addr)
{
    table_expire(now_mono());
    for (size_t i = 0; i < table_n; i++)
        if (strcmp(table[i].addr, addr) == 0)
            return &table[i];
    return NULL;
}

static void table_drop_oldest(void)
{
    size_t oldest = 0;
    for (size_t i = 1; i < table_n; i++)
        if (table[i].first < table[oldest].first)
            oldest = i;
    table[oldest] = table[--table_n];
}

/* Counts one failure; returns the address's count including it. When
 * memory runs out the failure is still delayed, just not remembered. */
static unsigned table_add_failure(const char *addr)
{
    struct failure *f = table_find(addr);
    if (f)
        return ++f->count;
    if (table_n == AUTH_TABLE_MAX)
        table_drop_oldest();
    if (table_n == table_cap) {
        size_t cap = table_cap ? table_cap * 2 : 16;
        struct failure *t = realloc(table, cap * sizeof *t);
        if (!t)
            return 1;
        table = t;
        table_cap = cap;
    }
    f = &table[table_n++];
    snprintf(f->addr, sizeof f->addr, "%s", addr);
    f->count = 1;
    f->first = now_mono();
    return 1;
}

unsigned auth_failures(const char *client_addr)
{
    const struct failure *f = table_find(client_addr);
    return f ? f->count : 0;
}

static double failure_delay(unsigned count)
{
    double d = AUTH_DELAY_FIRST;
    for (unsigned i = 1; i < count && d < AUTH_DELAY_MAX; i++)
        d *= 2;
    return (d < AUTH_DELAY_MAX ? d : AUTH_DELAY_MAX) * delay_unit;
}

void auth_set_delay_unit(double seconds)
{
    delay_unit = seconds;
}

/* --- logging ------------------------------------------------------------------ */

/* A user name from the network, made safe for one log line. */
static void printable(const char *in, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; in[i] && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)in[i];
        out[o++] = c > ' ' && c < 0x7f ? (char)c : '?';
    }
    out[o] = '\0';
}

static void log_login(const struct login *l, bool ok, unsigned failures)
{
    char user[ACCOUNTS_ADDR_MAX + 1];
    printable(l->user, user, sizeof user);
    const char *proto = l->proto ? l->proto : "";
    const char *sep = l->proto ? " " : "";
    if (ok)
        log_info("auth: %s%slogin ok user=%s client=%s", proto, sep, user, l->client);
    else
        log_info("auth: %s%slogin failed user=%s client=%s failures=%u%s", proto, sep, user,
                 l->client, failures, l->result == AUTH_THROTTLED ? " throttled" : "");
}

/* --- the login ------------------------------------------------------------------ */

static void login_free(struct login *l)
{
    explicit_bzero(l->password, sizeof l->password);
    free(l);
}

static void finish(struct login *l)
{
    auth_done_fn done = l->done;
    void *arg = l->arg;
    enum auth_result result = l->result;
    char address[sizeof l->address];
    memcpy(address, l->address, sizeof address);
    login_free(l);
    done(arg, result, result == AUTH_OK ? address : NULL);
}

static void on_delay(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    finish(w->data);
}

/* A refusal: remembered for the address, answered after the delay. */
static void fail_later(struct login *l, enum auth_result result)
{
    unsigned count = table_add_failure(l->client);
    l->result = result;
    log_login(l, false, count);
    ev_timer_init(&l->delay, on_delay, failure_delay(count), 0.);
    l->delay.data = l;
    ev_timer_start(l->srv->loop, &l->delay);
}

static void check_work(void *arg)
{
    struct login *l = arg;
    if (l->valid)
        l->ok = accounts_check_password(l->srv->accounts, l->address, l->password);
    else
        l->ok = false;
    explicit_bzero(l->password, sizeof l->password);
}

static void check_done(void *arg)
{
    struct login *l = arg;
    if (!l->ok) {
        fail_later(l, AUTH_FAILED);
        return;
    }
    l->result = AUTH_OK;
    log_login(l, true, 0);
    finish(l);
}

static void lowercase_copy(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    for (; in[i] && i + 1 < outlen; i++)
        out[i] = in[i] >= 'A' && in[i] <= 'Z' ? (char)(in[i] - 'A' + 'a') : in[i];
    out[i] = '\0';
}

int auth_login_proto(struct server *srv, const char *proto, const char *client_addr,
                     const char *user, const char *password, auth_done_fn done, void *arg)
{
    struct login *l = calloc(1, sizeof *l);
    if (!l)
        return -1;
    l->srv = srv;
    l->proto = proto;
    l->done = done;
    l->arg = arg;
    snprintf(l->client, sizeof l->client, "%s", client_addr);
    lowercase_copy(user, l->user, sizeof l->user);
    size_t plen = strnlen(password, AUTH_PASS_MAX + 1);
    l->valid = strnlen(user, sizeof l->user) < sizeof l->user && plen <= AUTH_PASS_MAX &&
               accounts_normalize_address(l->user, l->address, sizeof l->address, NULL);
    if (l->valid)
        memcpy(l->password, password, plen + 1);

    const struct failure *f = table_find(l->client);
    if (f && f->count >= AUTH_MAX_FAILURES) {
        explicit_bzero(l->password, sizeof l->password);
        fail_later(l, AUTH_THROTTLED);
        return 0;
    }
    if (workers_submit(srv->workers, check_work, check_done, l) < 0) {
        login_free(l);
        return -1;
    }
    return 0;
}

int auth_login(struct server *srv, const char *client_addr, const char *user,
               const char *password, auth_done_fn done, void *arg)
{
    return auth_login_proto(srv, NULL, client_addr, user, password, done, arg);
}
