/* Greylisting: the triplet state machine over SQLite, and the RCPT-stage
 * filter around it. See greylist.h. */
#include "greylist.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db.h"
#include "log.h"
#include "server.h"
#include "util.h"

#define EXPIRE_EVERY 3600        /* seconds between sweeps of expired entries */
#define KEY_MAX 512              /* sender and recipient, lower-cased */

struct greylist {
    sqlite3 *db;
    pthread_mutex_t lock;
    time_t last_expire;          /* 0: never swept */
};

static const char *const migrations[] = {
    /* 1: triplets and the client networks that passed. */
    "CREATE TABLE triplets(net TEXT NOT NULL, sender TEXT NOT NULL, rcpt TEXT NOT NULL,"
    " first INTEGER NOT NULL, last INTEGER NOT NULL, passed INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(net, sender, rcpt)) WITHOUT ROWID;"
    "CREATE INDEX triplets_last ON triplets(last);"
    "CREATE TABLE clients(net TEXT PRIMARY KEY NOT NULL, passes INTEGER NOT NULL,"
    " last INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX clients_last ON clients(last);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof *migrations))

struct greylist *greylist_open(const char *path, char *err, size_t errlen)
{
    struct greylist *g = calloc(1, sizeof *g);
    if (!g) {
        set_err(err, errlen, "greylist.db: out of memory");
        return NULL;
    }
    pthread_mutex_init(&g->lock, NULL);
    if (sqlite3_open_v2(path, &g->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        set_err(err, errlen, "cannot open %s: %s", path,
                g->db ? sqlite3_errmsg(g->db) : "out of memory");
        greylist_close(g);
        return NULL;
    }
    sqlite3_busy_timeout(g->db, 5000);
    /* Losing the last few greylist updates in a power cut only makes a
     * sender retry once more: NORMAL is enough. */
    if (db_set_wal(g->db, "greylist.db", err, errlen) < 0 ||
        db_exec(g->db, "greylist.db", "PRAGMA synchronous = NORMAL;", err, errlen) < 0 ||
        db_migrate(g->db, "greylist.db", migrations, SCHEMA_VERSION, err, errlen) < 0) {
        greylist_close(g);
        return NULL;
    }
    return g;
}

void greylist_close(struct greylist *g)
{
    if (!g)
        return;
    sqlite3_close(g->db);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

int greylist_network(const char *ip, char *out, size_t outlen)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    int n;
    if (inet_pton(AF_INET, ip, a) == 1) {
        a[3] = 0;
        if (!inet_ntop(AF_INET, a, text, sizeof text))
            return -1;
        n = snprintf(out, outlen, "%s/24", text);
    } else if (inet_pton(AF_INET6, ip, a) == 1) {
        /* An IPv4-mapped address is the IPv4 client it stands for. */
        static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(a, mapped, sizeof mapped) == 0) {
            if (!inet_ntop(AF_INET, a + 12, text, sizeof text))
                return -1;
            return greylist_network(text, out, outlen);
        }
        memset(a + 8, 0, 8);
        if (!inet_ntop(AF_INET6, a, text, sizeof text))
            return -1;
        n = snprintf(out, outlen, "%s/64", text);
    } else {
        return -1;
    }
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* --- SQL helpers ---------------------------------------------------------- */

/* Runs one statement. `types` names the bound parameters in order: 's' a
 * string, 'i' an int64. Up to `nout` integer columns of the first row go
 * to out. Returns 1 when a row came back, 0 when none, -1 on error. */
static int run(struct greylist *g, const char *sql, const char *types, int64_t *out,
               int nout, ...)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(g->db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("greylist: %s", sqlite3_errmsg(g->db));
        return -1;
    }
    va_list ap;
    va_start(ap, nout);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 's')
            sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    int result = -1;
    if (rc == SQLITE_ROW) {
        for (int i = 0; i < nout; i++)
            out[i] = sqlite3_column_int64(st, i);
        result = 1;
    } else if (rc == SQLITE_DONE) {
        result = 0;
    } else {
        log_error("greylist: %s", sqlite3_errmsg(g->db));
    }
    sqlite3_finalize(st);
    return result;
}

static void lower_copy(char *out, const char *in)
{
    size_t n = 0;
    for (; in[n] && n < KEY_MAX - 1; n++)
        out[n] = (char)(in[n] >= 'A' && in[n] <= 'Z' ? in[n] + 32 : in[n]);
    out[n] = '\0';
}

/* --- the state machine ----------------------------------------------------- */

struct triplet {
    const char *net, *sender, *rcpt;
    time_t now, cutoff;          /* entries last seen before cutoff have expired */
};

static int expire(struct greylist *g, const struct triplet *t)
{
    if (g->last_expire && t->now >= g->last_expire && t->now - g->last_expire < EXPIRE_EVERY)
        return 0;
    g->last_expire = t->now;
    if (run(g, "DELETE FROM triplets WHERE last < ?", "i", NULL, 0, (int64_t)t->cutoff) < 0 ||
        run(g, "DELETE FROM clients WHERE last < ?", "i", NULL, 0, (int64_t)t->cutoff) < 0)
        return -1;
    return 0;
}

/* Whether the client network is whitelisted (and then marks it seen). */
static int whitelisted(struct greylist *g, const struct triplet *t, unsigned needed)
{
    if (needed == 0)
        return 0;
    int64_t row[2];
    int rc = run(g, "SELECT passes, last FROM clients WHERE net = ?", "s", row, 2, t->net);
    if (rc <= 0 || row[0] < (int64_t)needed || row[1] < (int64_t)t->cutoff)
        return rc < 0 ? -1 : 0;
    if (run(g, "UPDATE clients SET last = ? WHERE net = ?", "is", NULL, 0, (int64_t)t->now,
            t->net) < 0)
        return -1;
    return 1;
}

static int count_pass(struct greylist *g, const struct triplet *t)
{
    return run(g, "INSERT INTO clients(net, passes, last) VALUES(?, 1, ?)"
               " ON CONFLICT(net) DO UPDATE SET passes = passes + 1, last = excluded.last",
               "si", NULL, 0, t->net, (int64_t)t->now);
}

static enum greylist_verdict decide(struct greylist *g, const struct triplet *t,
                                    const struct greylist_params *p, unsigned *wait_left)
{
    if (expire(g, t) < 0)
        return GREYLIST_ERROR;
    int w = whitelisted(g, t, p->auto_whitelist);
    if (w != 0)
        return w > 0 ? GREYLIST_PASS : GREYLIST_ERROR;
    int64_t row[3];   /* first, last, passed */
    int rc = run(g, "SELECT first, last, passed FROM triplets"
                 " WHERE net = ? AND sender = ? AND rcpt = ?", "sss", row, 3,
                 t->net, t->sender, t->rcpt);
    if (rc < 0)
        return GREYLIST_ERROR;
    if (rc == 0 || row[1] < (int64_t)t->cutoff) {
        /* New, or expired but not swept yet: starts over. */
        row[0] = t->now;
        row[2] = 0;
        if (run(g, "INSERT OR REPLACE INTO triplets(net, sender, rcpt, first, last, passed)"
                " VALUES(?, ?, ?, ?, ?, 0)", "sssii", NULL, 0, t->net, t->sender, t->rcpt,
                (int64_t)t->now, (int64_t)t->now) < 0)
            return GREYLIST_ERROR;
    }
    int64_t waited = (int64_t)t->now - row[0];
    bool passes = row[2] || waited >= (int64_t)p->delay;
    if (run(g, "UPDATE triplets SET last = ?, passed = ? WHERE net = ? AND sender = ?"
            " AND rcpt = ?", "iisss", NULL, 0, (int64_t)t->now, (int64_t)passes, t->net,
            t->sender, t->rcpt) < 0)
        return GREYLIST_ERROR;
    if (!passes) {
        if (wait_left)
            *wait_left = (unsigned)((int64_t)p->delay - waited);
        return GREYLIST_DEFER;
    }
    /* A triplet that waited and came back is a well-behaved client: it
     * counts towards the network's whitelisting, once per triplet. */
    if (!row[2] && count_pass(g, t) < 0)
        return GREYLIST_ERROR;
    if (row[2] && run(g, "UPDATE clients SET last = ? WHERE net = ?", "is", NULL, 0,
                      (int64_t)t->now, t->net) < 0)
        return GREYLIST_ERROR;
    return GREYLIST_PASS;
}

enum greylist_verdict greylist_check(struct greylist *g, const char *client_ip,
                                     const char *sender, const char *rcpt, time_t now,
                                     const struct greylist_params *p, unsigned *wait_left)
{
    char net[INET6_ADDRSTRLEN + 8], s[KEY_MAX], r[KEY_MAX];
    if (greylist_network(client_ip, net, sizeof net) < 0) {
        log_error("greylist: not an IP address: %s", client_ip);
        return GREYLIST_ERROR;
    }
    lower_copy(s, sender);
    lower_copy(r, rcpt);
    struct triplet t = {
        .net = net, .sender = s, .rcpt = r, .now = now,
        .cutoff = now - (time_t)p->max_age_days * 86400,
    };
    pthread_mutex_lock(&g->lock);
    enum greylist_verdict v = GREYLIST_ERROR;
    if (run(g, "BEGIN IMMEDIATE", "", NULL, 0) >= 0) {
        v = decide(g, &t, p, wait_left);
        if (run(g, v == GREYLIST_ERROR ? "ROLLBACK" : "COMMIT", "", NULL, 0) < 0)
            v = GREYLIST_ERROR;
    }
    pthread_mutex_unlock(&g->lock);
    return v;
}

/* --- the filter ---------------------------------------------------------------- */

/* Opened on first use, on a worker thread (never the loop), and kept. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct greylist *shared;
static bool open_failed;

static struct greylist *shared_handle(const struct settings *st)
{
    pthread_mutex_lock(&open_lock);
    if (!shared && !open_failed) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/greylist.db", st->state_dir);
        shared = greylist_open(path, err, sizeof err);
        if (!shared) {
            /* Logged once; greylisting is then skipped, not a reason to
             * refuse mail. */
            open_failed = true;
            log_error("greylist: %s; greylisting is off until restart", err);
        }
    }
    struct greylist *g = shared;
    pthread_mutex_unlock(&open_lock);
    return g;
}

static bool enabled(const struct settings *st)
{
    return st->enable_postgrey;
}

static void stop(void)
{
    pthread_mutex_lock(&open_lock);
    greylist_close(shared);
    shared = NULL;
    open_failed = false;
    pthread_mutex_unlock(&open_lock);
}

static void rcpt_hook(const struct filter_txn *t, struct filter_result *r)
{
    const struct settings *st = t->srv->settings;
    struct greylist *g = shared_handle(st);
    r->verdict = FILTER_ACCEPT;
    if (!g)
        return;
    struct greylist_params p = {
        .delay = st->postgrey_delay,
        .max_age_days = st->postgrey_max_age,
        .auto_whitelist = st->postgrey_auto_whitelist_clients,
    };
    unsigned left = 0;
    switch (greylist_check(g, t->client_ip, t->mail_from, t->rcpt, time(NULL), &p, &left)) {
    case GREYLIST_PASS:
        return;
    case GREYLIST_ERROR:
        /* A broken database must not stop mail: skipped, and logged. */
        log_warn("greylist: check failed for %s; accepted without greylisting", t->client_ip);
        return;
    case GREYLIST_DEFER:
        break;
    }
    r->verdict = FILTER_TEMPFAIL;
    r->code = 450;
    snprintf(r->enhanced, sizeof r->enhanced, "4.2.0");
    snprintf(r->text, sizeof r->text, "<%s>: Recipient address rejected: %s", t->rcpt,
             st->postgrey_text);
    snprintf(r->reason, sizeof r->reason, "GREYLIST");
    log_debug("greylist: %s from=<%s> to=<%s> deferred, %u s left", t->client_ip,
              t->mail_from, t->rcpt, left);
}

const struct filter_ops greylist_filter = {
    .name = "greylist",
    .enabled = enabled,
    .stop = stop,
    .hook = { [FILTER_RCPT] = rcpt_hook },
};
