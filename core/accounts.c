#include "accounts.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ascii.h"
#include "db.h"
#include "log.h"
#include "password.h"

#define RESOLVE_MAX_DEPTH 10
#define RESOLVE_MAX_ADDRESSES 1000
#define HASH_MAX 512

/* Verified against when the user does not exist, so that a login attempt
 * for an unknown user takes as long as one for a known user. */
static const char dummy_hash[] = "$y$j9T$lj72NKD7TKGIb1mxgFT16.$zDlWJwrbFMynfWgjxqk6tgHrCDvxFtUrMKTDI1GG1G/";

/* Schema migrations: entry i brings the database from version i to i+1.
 * Append only; never edit a released entry. */
static const char *const migrations[] = {
    /* 1: domains, users, aliases. aliases.domain is the domain of the
     * source, so that the domains table can be kept in step. */
    "CREATE TABLE domains(name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE users(address TEXT PRIMARY KEY NOT NULL,"
    " domain TEXT NOT NULL REFERENCES domains(name),"
    " hash TEXT NOT NULL, created INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX users_domain ON users(domain);"
    "CREATE TABLE aliases(source TEXT NOT NULL, target TEXT NOT NULL,"
    " domain TEXT NOT NULL REFERENCES domains(name),"
    " PRIMARY KEY(source, target)) WITHOUT ROWID;"
    "CREATE INDEX aliases_domain ON aliases(domain);",
    /* 2: relays chosen by the sender's domain (setup relay ...). The relay
     * password must be given to the relay in AUTH, so it is stored as it
     * is, not hashed — as docker-mailserver's postfix-sasl-password.cf
     * does; accounts.db is mode 0600 and owned by the mail user. */
    "CREATE TABLE relay_domains(domain TEXT PRIMARY KEY NOT NULL,"
    " host TEXT NOT NULL, port INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE relay_auth(domain TEXT PRIMARY KEY NOT NULL,"
    " user TEXT NOT NULL, password TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE relay_excluded(domain TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;",
    /* 3: per-user mailbox quotas in bytes (setup quota set; 0 = unlimited).
     * A user's quota goes with the user. */
    "CREATE TABLE quotas(address TEXT PRIMARY KEY NOT NULL"
    " REFERENCES users(address) ON DELETE CASCADE,"
    " bytes INTEGER NOT NULL CHECK(bytes >= 0)) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

enum stmt_id {
    ST_BEGIN_READ, ST_BEGIN_WRITE, ST_COMMIT, ST_ROLLBACK,
    ST_ALIAS_TARGETS, ST_ALIAS_SOURCE_EXISTS, ST_ALIAS_EXISTS,
    ST_ALIAS_INSERT, ST_ALIAS_DELETE, ST_ALIAS_LIST,
    ST_USER_EXISTS, ST_USER_HASH, ST_USER_INSERT, ST_USER_SET_HASH,
    ST_USER_DELETE, ST_USER_LIST,
    ST_DOMAIN_EXISTS, ST_DOMAIN_ADD, ST_DOMAIN_GC,
    ST_RELAY_DOMAIN_SET, ST_RELAY_AUTH_SET, ST_RELAY_EXCLUDE,
    ST_RELAY_DOMAIN_GET, ST_RELAY_AUTH_GET, ST_RELAY_EXCLUDED_GET, ST_RELAY_LIST,
    ST_QUOTA_SET, ST_QUOTA_GET, ST_QUOTA_DEL,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN_READ] = "BEGIN",
    [ST_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_ALIAS_TARGETS] = "SELECT target FROM aliases WHERE source = ?1 ORDER BY target",
    [ST_ALIAS_SOURCE_EXISTS] = "SELECT 1 FROM aliases WHERE source = ?1 LIMIT 1",
    [ST_ALIAS_EXISTS] = "SELECT 1 FROM aliases WHERE source = ?1 AND target = ?2",
    [ST_ALIAS_INSERT] = "INSERT INTO aliases(source, target, domain) VALUES (?1, ?2, ?3)",
    [ST_ALIAS_DELETE] = "DELETE FROM aliases WHERE source = ?1 AND target = ?2",
    [ST_ALIAS_LIST] = "SELECT source || ' ' || target FROM aliases ORDER BY source, target",
    [ST_USER_EXISTS] = "SELECT 1 FROM users WHERE address = ?1",
    [ST_USER_HASH] = "SELECT hash FROM users WHERE address = ?1",
    [ST_USER_INSERT] = "INSERT INTO users(address, domain, hash, created) VALUES (?1, ?2, ?3, ?4)",
    [ST_USER_SET_HASH] = "UPDATE users SET hash = ?2 WHERE address = ?1",
    [ST_USER_DELETE] = "DELETE FROM users WHERE address = ?1",
    [ST_USER_LIST] = "SELECT address FROM users ORDER BY address",
    [ST_DOMAIN_EXISTS] = "SELECT 1 FROM domains WHERE name = ?1",
    [ST_DOMAIN_ADD] = "INSERT OR IGNORE INTO domains(name) VALUES (?1)",
    [ST_DOMAIN_GC] = "DELETE FROM domains WHERE name = ?1"
                     " AND NOT EXISTS (SELECT 1 FROM users WHERE domain = ?1)"
                     " AND NOT EXISTS (SELECT 1 FROM aliases WHERE domain = ?1)",
    [ST_RELAY_DOMAIN_SET] = "INSERT OR REPLACE INTO relay_domains(domain, host, port)"
                            " VALUES (?1, ?2, ?3)",
    [ST_RELAY_AUTH_SET] = "INSERT OR REPLACE INTO relay_auth(domain, user, password)"
                          " VALUES (?1, ?2, ?3)",
    [ST_RELAY_EXCLUDE] = "INSERT OR IGNORE INTO relay_excluded(domain) VALUES (?1)",
    [ST_RELAY_DOMAIN_GET] = "SELECT host, port FROM relay_domains WHERE domain = ?1",
    [ST_RELAY_AUTH_GET] = "SELECT user, password FROM relay_auth WHERE domain = ?1",
    [ST_RELAY_EXCLUDED_GET] = "SELECT 1 FROM relay_excluded WHERE domain = ?1",
    [ST_RELAY_LIST] = "SELECT line FROM ("
                      " SELECT domain AS d, 1 AS k, domain || ' relay ' || host || ':' || port"
                      "  AS line FROM relay_domains"
                      " UNION ALL SELECT domain, 2, domain || ' auth ' || user FROM relay_auth"
                      " UNION ALL SELECT domain, 3, domain || ' excluded' FROM relay_excluded)"
                      " ORDER BY d, k",
    [ST_QUOTA_SET] = "INSERT OR REPLACE INTO quotas(address, bytes) VALUES (?1, ?2)",
    [ST_QUOTA_GET] = "SELECT bytes FROM quotas WHERE address = ?1",
    [ST_QUOTA_DEL] = "DELETE FROM quotas WHERE address = ?1",
};

struct accounts {
    sqlite3 *db;
    pthread_mutex_t lock;   /* serializes every call on the handle */
    sqlite3_stmt *st[ST_COUNT];
};

/* ------------------------------------------------------------------ */
/* Address syntax                                                       */

/* RFC 5322 atext, minus '/', which would name a directory in MAIL_DIR. */
static bool is_atext(char c)
{
    return ascii_is_alnum(c) || (c != '\0' && strchr("!#$%&'*+-=?^_`{|}~", c) != NULL);
}

static bool local_part_valid(const char *s, size_t len)
{
    if (len == 0 || len > ACCOUNTS_LOCAL_MAX || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!is_atext(s[i])) {
            return false;
        }
    }
    return true;
}

static bool domain_valid(const char *s, size_t len)
{
    if (len == 0 || len > ACCOUNTS_DOMAIN_MAX)
        return false;
    size_t label = 0, dots = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            dots++;
            continue;
        }
        if (!ascii_is_alnum(c) && !(c == '-' && label > 0))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[len - 1] != '-' && dots > 0;
}

/* Lowercases len bytes of in into out (NUL-terminated); out may be in. */
static void copy_lower(const char *in, size_t len, char *out, bool *changed)
{
    bool ch = false;
    for (size_t i = 0; i < len; i++) {
        char c = ascii_lower(in[i]);
        ch |= c != in[i];
        out[i] = c;
    }
    out[len] = '\0';
    if (changed)
        *changed = ch;
}

bool accounts_normalize_domain(const char *in, char *out, size_t outlen, bool *changed)
{
    if (changed)
        *changed = false;
    if (!in || !out)
        return false;
    size_t len = strnlen(in, ACCOUNTS_DOMAIN_MAX + 1);
    if (len >= outlen || !domain_valid(in, len))
        return false;
    copy_lower(in, len, out, changed);
    return true;
}

bool accounts_normalize_address(const char *in, char *out, size_t outlen, bool *changed)
{
    if (changed)
        *changed = false;
    if (!in || !out)
        return false;
    size_t len = strnlen(in, ACCOUNTS_ADDR_MAX + 1);
    if (len > ACCOUNTS_ADDR_MAX || len >= outlen)
        return false;
    const char *at = memrchr(in, '@', len);
    if (!at)
        return false;
    size_t llen = (size_t)(at - in);
    if (!local_part_valid(in, llen) || !domain_valid(at + 1, len - llen - 1))
        return false;
    copy_lower(in, len, out, changed);
    return true;
}

static const char *domain_of(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : address;
}

/* ------------------------------------------------------------------ */
/* Lists                                                                */

void accounts_list_free(struct accounts_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static bool list_contains(const struct accounts_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i], s) == 0)
            return true;
    return false;
}

static int list_push(struct accounts_list *l, const char *s)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof *items);
    if (!items)
        return -1;
    l->items = items;
    if (!(l->items[l->n] = strdup(s)))
        return -1;
    l->n++;
    return 0;
}

static int list_add_unique(struct accounts_list *l, const char *s)
{
    return list_contains(l, s) ? 0 : list_push(l, s);
}

/* ------------------------------------------------------------------ */
/* Statement helpers (the caller holds a->lock)                         */

static sqlite3_stmt *stmt(struct accounts *a, enum stmt_id id)
{
    sqlite3_stmt *st = a->st[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (s)
        sqlite3_bind_text(st, idx, s, -1, SQLITE_STATIC);
}

static void log_db_error(struct accounts *a, const char *what)
{
    log_error("accounts: %s: %s", what, sqlite3_errmsg(a->db));
}

/* The helpers below log database errors; callers only pass the reason on. */
static void set_db_err(struct accounts *a, const char *what, char *err, size_t errlen)
{
    if (err && errlen)
        snprintf(err, errlen, "database error (%s): %s", what, sqlite3_errmsg(a->db));
}

/* Runs a statement that returns no rows. Returns 0 or -1 (logged). */
static int run(struct accounts *a, enum stmt_id id, const char *p1, const char *p2)
{
    sqlite3_stmt *st = stmt(a, id);
    bind_text(st, 1, p1);
    bind_text(st, 2, p2);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_db_error(a, stmt_sql[id]);
        return -1;
    }
    return 0;
}

/* Returns 1 when the query yields a row, 0 when not, -1 on error. */
static int exists(struct accounts *a, enum stmt_id id, const char *p1, const char *p2)
{
    sqlite3_stmt *st = stmt(a, id);
    bind_text(st, 1, p1);
    bind_text(st, 2, p2);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    log_db_error(a, stmt_sql[id]);
    return -1;
}

/* Appends the first column of every row to out. Returns 0 or -1. */
static int collect(struct accounts *a, enum stmt_id id, const char *p1, struct accounts_list *out)
{
    sqlite3_stmt *st = stmt(a, id);
    bind_text(st, 1, p1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(st, 0);
        if (s && list_push(out, s) < 0) {
            sqlite3_reset(st);
            log_error("accounts: out of memory");
            return -1;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_db_error(a, stmt_sql[id]);
        return -1;
    }
    return 0;
}

static int begin(struct accounts *a, bool write)
{
    return run(a, write ? ST_BEGIN_WRITE : ST_BEGIN_READ, NULL, NULL);
}

static void rollback(struct accounts *a)
{
    if (!sqlite3_get_autocommit(a->db))
        run(a, ST_ROLLBACK, NULL, NULL);
}

/* Commits; on failure rolls back and reports. */
static enum accounts_result commit(struct accounts *a, char *err, size_t errlen)
{
    if (run(a, ST_COMMIT, NULL, NULL) == 0)
        return ACCOUNTS_OK;
    set_db_err(a, "commit", err, errlen);
    rollback(a);
    return ACCOUNTS_ERROR;
}

/* Takes the lock and starts a write transaction; on failure the lock is
 * released again. */
static bool begin_write(struct accounts *a, char *err, size_t errlen)
{
    pthread_mutex_lock(&a->lock);
    if (begin(a, true) == 0)
        return true;
    set_db_err(a, "begin", err, errlen);
    pthread_mutex_unlock(&a->lock);
    return false;
}

/* Ends a write transaction with the given outcome and releases the lock. */
static enum accounts_result finish(struct accounts *a, enum accounts_result r, char *err,
                                   size_t errlen)
{
    if (r == ACCOUNTS_OK)
        r = commit(a, err, errlen);
    else
        rollback(a);
    pthread_mutex_unlock(&a->lock);
    return r;
}

/* ------------------------------------------------------------------ */
/* Opening and the schema                                               */

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    return db_exec(db, "accounts.db", sql, err, errlen);
}

/* Creates the file with mode 0600 before SQLite does (SQLite would use
 * 0644 minus umask); the -wal and -shm files inherit its mode. */
static int create_db_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

static int configure(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    if (db_set_wal(db, "accounts.db", err, errlen) < 0)
        return -1;
    /* FULL: a change `setup` reported as done must survive a power loss. */
    if (exec_sql(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;", err, errlen) < 0)
        return -1;
    return db_migrate(db, "accounts.db", migrations, SCHEMA_VERSION, err, errlen);
}

static int prepare_all(struct accounts *a, char *err, size_t errlen)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(a->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &a->st[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "accounts.db: %s: %s", stmt_sql[i], sqlite3_errmsg(a->db));
            return -1;
        }
    }
    return 0;
}

struct accounts *accounts_open(const char *state_dir, char *err, size_t errlen)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/accounts.db", state_dir ? state_dir : "");
    if (!state_dir || !*state_dir || n < 0 || (size_t)n >= sizeof path) {
        snprintf(err, errlen, "STATE_DIR: invalid path");
        return NULL;
    }
    if (create_db_file(path, err, errlen) < 0)
        return NULL;
    struct accounts *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (sqlite3_open_v2(path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 a->db ? sqlite3_errmsg(a->db) : "out of memory");
        goto fail;
    }
    if (configure(a->db, err, errlen) < 0 || prepare_all(a, err, errlen) < 0)
        goto fail;
    pthread_mutex_init(&a->lock, NULL);
    return a;
fail:
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(a->st[i]);
    sqlite3_close(a->db);
    free(a);
    return NULL;
}

void accounts_close(struct accounts *a)
{
    if (!a)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(a->st[i]);
    if (sqlite3_close(a->db) != SQLITE_OK)
        log_error("accounts: close: %s", sqlite3_errmsg(a->db));
    pthread_mutex_destroy(&a->lock);
    free(a);
}

/* ------------------------------------------------------------------ */
/* Resolution                                                           */

struct resolve {
    struct accounts *a;
    struct accounts_list *local, *remote;
    struct accounts_list seen;   /* addresses already expanded: loop guard */
};

static enum accounts_result lookup(struct resolve *r, const char *addr, int depth);

/* Resolves one alias target; what is neither delivered locally nor an
 * error is a forward to another domain. Returns 0 or -1. */
static int expand_target(struct resolve *r, const char *target, int depth)
{
    if (depth > RESOLVE_MAX_DEPTH) {
        log_warn("accounts: alias chain deeper than %d at %s; not followed", RESOLVE_MAX_DEPTH,
                 target);
        return 0;
    }
    switch (lookup(r, target, depth)) {
    case ACCOUNTS_OK:
        return 0;
    case ACCOUNTS_NOT_LOCAL:
        return list_add_unique(r->remote, target);
    case ACCOUNTS_NO_SUCH_USER:
        log_warn("accounts: alias target %s does not exist; skipped", target);
        return 0;
    default:
        return -1;
    }
}

/* Steps 1 and 2 for one exact address (or "@domain"). Returns 1 when the
 * address was handled (now or earlier in this resolution, which is what
 * stops alias loops), 0 when it is neither an alias nor a user, -1 on
 * error. No recursion happens on the path that returns 0, so the address
 * pushed onto `seen` is still the last one there. */
static int lookup_exact(struct resolve *r, const char *addr, int depth)
{
    if (list_contains(&r->seen, addr))
        return 1;
    if (r->seen.n >= RESOLVE_MAX_ADDRESSES) {
        log_error("accounts: more than %d addresses in one resolution", RESOLVE_MAX_ADDRESSES);
        return -1;
    }
    if (list_push(&r->seen, addr) < 0)
        return -1;
    struct accounts_list targets = { 0 };
    if (collect(r->a, ST_ALIAS_TARGETS, addr, &targets) < 0)
        goto fail;
    if (targets.n > 0) {
        for (size_t i = 0; i < targets.n; i++)
            if (strcmp(targets.items[i], addr) != 0 &&
                expand_target(r, targets.items[i], depth + 1) < 0)
                goto fail;
        accounts_list_free(&targets);
        return 1;
    }
    int user = exists(r->a, ST_USER_EXISTS, addr, NULL);
    if (user == 1 && list_add_unique(r->local, addr) < 0)
        return -1;
    if (user == 0) {
        /* Not handled: a later lookup of the same address (another
         * forward to the same domain) must reach steps 3 to 5 again. */
        r->seen.n--;
        free(r->seen.items[r->seen.n]);
    }
    return user;
fail:
    accounts_list_free(&targets);
    return -1;
}

/* Writes "local@domain" without the "+tag" into out; false when addr
 * carries no tag. */
static bool strip_plus_tag(const char *addr, char *out, size_t outlen)
{
    const char *at = strrchr(addr, '@');
    const char *plus = at ? memchr(addr, '+', (size_t)(at - addr)) : NULL;
    if (!plus || plus == addr)
        return false;
    int n = snprintf(out, outlen, "%.*s%s", (int)(plus - addr), addr, at);
    return n > 0 && (size_t)n < outlen;
}

/* Steps 1 to 5 for one address. */
static enum accounts_result lookup(struct resolve *r, const char *addr, int depth)
{
    char buf[ACCOUNTS_ADDR_MAX + 2];
    int found = lookup_exact(r, addr, depth);
    if (found == 0 && strip_plus_tag(addr, buf, sizeof buf))
        found = lookup_exact(r, buf, depth);
    const char *domain = domain_of(addr);
    if (found == 0) {
        snprintf(buf, sizeof buf, "@%s", domain);
        found = lookup_exact(r, buf, depth);
    }
    if (found < 0)
        return ACCOUNTS_ERROR;
    if (found > 0)
        return ACCOUNTS_OK;
    int local = exists(r->a, ST_DOMAIN_EXISTS, domain, NULL);
    if (local < 0)
        return ACCOUNTS_ERROR;
    return local ? ACCOUNTS_NO_SUCH_USER : ACCOUNTS_NOT_LOCAL;
}

enum accounts_result accounts_resolve(struct accounts *a, const char *address,
                                      struct accounts_list *local,
                                      struct accounts_list *remote)
{
    *local = (struct accounts_list){ 0 };
    *remote = (struct accounts_list){ 0 };
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return ACCOUNTS_INVALID;
    struct resolve r = { .a = a, .local = local, .remote = remote };
    enum accounts_result res = ACCOUNTS_ERROR;
    pthread_mutex_lock(&a->lock);
    if (begin(a, false) == 0) {
        /* One read transaction: the whole expansion sees one snapshot. */
        res = lookup(&r, addr, 0);
        rollback(a);
    }
    pthread_mutex_unlock(&a->lock);
    accounts_list_free(&r.seen);
    if (res == ACCOUNTS_OK && local->n == 0 && remote->n == 0)
        res = ACCOUNTS_NO_SUCH_USER;
    if (res != ACCOUNTS_OK) {
        accounts_list_free(local);
        accounts_list_free(remote);
    }
    return res;
}

bool accounts_domain_is_local(struct accounts *a, const char *domain)
{
    char d[ACCOUNTS_DOMAIN_MAX + 1];
    if (!accounts_normalize_domain(domain, d, sizeof d, NULL))
        return false;
    pthread_mutex_lock(&a->lock);
    int r = exists(a, ST_DOMAIN_EXISTS, d, NULL);
    pthread_mutex_unlock(&a->lock);
    return r == 1;
}

/* Copies the user's hash into out; false when there is none. */
static bool fetch_hash(struct accounts *a, const char *addr, char *out, size_t outlen)
{
    bool found = false;
    pthread_mutex_lock(&a->lock);
    sqlite3_stmt *st = stmt(a, ST_USER_HASH);
    bind_text(st, 1, addr);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(st, 0);
        size_t len = h ? strlen(h) : 0;
        if (h && len < outlen) {
            memcpy(out, h, len + 1);
            found = true;
        }
    } else if (rc != SQLITE_DONE) {
        log_db_error(a, "password lookup");
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&a->lock);
    return found;
}

bool accounts_check_password(struct accounts *a, const char *address, const char *password)
{
    char addr[ACCOUNTS_ADDR_MAX + 1];
    char hash[HASH_MAX];
    if (!password || !accounts_normalize_address(address, addr, sizeof addr, NULL))
        return false;
    if (!fetch_hash(a, addr, hash, sizeof hash)) {
        password_verify(dummy_hash, password);
        return false;
    }
    return password_verify(hash, password);
}

/* ------------------------------------------------------------------ */
/* Management                                                           */

static enum accounts_result invalid_address(const char *address, char *err, size_t errlen)
{
    snprintf(err, errlen, "invalid address: %.*s", ACCOUNTS_ADDR_MAX,
             address ? address : "(none)");
    return ACCOUNTS_INVALID;
}

static enum accounts_result check_hash(const char *hash, char *err, size_t errlen)
{
    if (!hash || strlen(hash) >= HASH_MAX || !password_hash_is_supported(hash)) {
        snprintf(err, errlen, "unsupported password hash");
        return ACCOUNTS_INVALID;
    }
    return ACCOUNTS_OK;
}

/* Removes the domain row when nothing refers to it any more. */
static enum accounts_result domain_gc(struct accounts *a, const char *domain, char *err,
                                      size_t errlen)
{
    if (run(a, ST_DOMAIN_GC, domain, NULL) < 0) {
        set_db_err(a, "domain cleanup", err, errlen);
        return ACCOUNTS_ERROR;
    }
    return ACCOUNTS_OK;
}

static enum accounts_result user_insert(struct accounts *a, const char *addr, const char *hash,
                                        char *err, size_t errlen)
{
    int alias = exists(a, ST_ALIAS_SOURCE_EXISTS, addr, NULL);
    int user = alias == 0 ? exists(a, ST_USER_EXISTS, addr, NULL) : 0;
    if (alias < 0 || user < 0) {
        set_db_err(a, "user lookup", err, errlen);
        return ACCOUNTS_ERROR;
    }
    if (alias) {
        snprintf(err, errlen, "%s is an alias", addr);
        return ACCOUNTS_EXISTS;
    }
    if (user) {
        snprintf(err, errlen, "%s already exists", addr);
        return ACCOUNTS_EXISTS;
    }
    if (run(a, ST_DOMAIN_ADD, domain_of(addr), NULL) < 0) {
        set_db_err(a, "domain insert", err, errlen);
        return ACCOUNTS_ERROR;
    }
    sqlite3_stmt *st = stmt(a, ST_USER_INSERT);
    bind_text(st, 1, addr);
    bind_text(st, 2, domain_of(addr));
    bind_text(st, 3, hash);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)time(NULL));
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_db_error(a, "user insert");
        set_db_err(a, "user insert", err, errlen);
        return ACCOUNTS_ERROR;
    }
    return ACCOUNTS_OK;
}

enum accounts_result accounts_user_add(struct accounts *a, const char *address, const char *hash,
                                       char *err, size_t errlen)
{
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return invalid_address(address, err, errlen);
    if (check_hash(hash, err, errlen) != ACCOUNTS_OK)
        return ACCOUNTS_INVALID;
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    enum accounts_result r = user_insert(a, addr, hash, err, errlen);
    return finish(a, r, err, errlen);
}

enum accounts_result accounts_user_set_hash(struct accounts *a, const char *address,
                                            const char *hash, char *err, size_t errlen)
{
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return invalid_address(address, err, errlen);
    if (check_hash(hash, err, errlen) != ACCOUNTS_OK)
        return ACCOUNTS_INVALID;
    enum accounts_result r = ACCOUNTS_OK;
    pthread_mutex_lock(&a->lock);
    if (run(a, ST_USER_SET_HASH, addr, hash) < 0) {
        set_db_err(a, "password update", err, errlen);
        r = ACCOUNTS_ERROR;
    } else if (sqlite3_changes(a->db) == 0) {
        snprintf(err, errlen, "no such user: %s", addr);
        r = ACCOUNTS_NO_SUCH_USER;
    }
    pthread_mutex_unlock(&a->lock);
    return r;
}

enum accounts_result accounts_user_del(struct accounts *a, const char *address, char *err,
                                       size_t errlen)
{
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return invalid_address(address, err, errlen);
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    enum accounts_result r = ACCOUNTS_OK;
    if (run(a, ST_USER_DELETE, addr, NULL) < 0) {
        set_db_err(a, "user delete", err, errlen);
        r = ACCOUNTS_ERROR;
    } else if (sqlite3_changes(a->db) == 0) {
        snprintf(err, errlen, "no such user: %s", addr);
        r = ACCOUNTS_NO_SUCH_USER;
    } else {
        r = domain_gc(a, domain_of(addr), err, errlen);
    }
    return finish(a, r, err, errlen);
}

static enum accounts_result list_query(struct accounts *a, enum stmt_id id,
                                       struct accounts_list *out)
{
    *out = (struct accounts_list){ 0 };
    pthread_mutex_lock(&a->lock);
    int rc = collect(a, id, NULL, out);
    pthread_mutex_unlock(&a->lock);
    if (rc < 0) {
        accounts_list_free(out);
        return ACCOUNTS_ERROR;
    }
    return ACCOUNTS_OK;
}

enum accounts_result accounts_user_list(struct accounts *a, struct accounts_list *out)
{
    return list_query(a, ST_USER_LIST, out);
}

enum accounts_result accounts_alias_list(struct accounts *a, struct accounts_list *out)
{
    return list_query(a, ST_ALIAS_LIST, out);
}

/* Normalises an alias source: an address or "@domain" (catch-all). */
static bool normalize_alias_source(const char *in, char *out, size_t outlen)
{
    if (in && in[0] == '@') {
        if (outlen < 2 || !accounts_normalize_domain(in + 1, out + 1, outlen - 1, NULL))
            return false;
        out[0] = '@';
        return true;
    }
    return accounts_normalize_address(in, out, outlen, NULL);
}

static enum accounts_result alias_insert(struct accounts *a, const char *src, const char *dst,
                                         char *err, size_t errlen)
{
    int user = exists(a, ST_USER_EXISTS, src, NULL);
    int dup = user == 0 ? exists(a, ST_ALIAS_EXISTS, src, dst) : 0;
    if (user < 0 || dup < 0) {
        set_db_err(a, "alias lookup", err, errlen);
        return ACCOUNTS_ERROR;
    }
    if (user) {
        snprintf(err, errlen, "%s is an account", src);
        return ACCOUNTS_EXISTS;
    }
    if (dup) {
        snprintf(err, errlen, "alias %s -> %s already exists", src, dst);
        return ACCOUNTS_EXISTS;
    }
    if (run(a, ST_DOMAIN_ADD, domain_of(src), NULL) < 0) {
        set_db_err(a, "domain insert", err, errlen);
        return ACCOUNTS_ERROR;
    }
    sqlite3_stmt *st = stmt(a, ST_ALIAS_INSERT);
    bind_text(st, 1, src);
    bind_text(st, 2, dst);
    bind_text(st, 3, domain_of(src));
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_db_error(a, "alias insert");
        set_db_err(a, "alias insert", err, errlen);
        return ACCOUNTS_ERROR;
    }
    return ACCOUNTS_OK;
}

enum accounts_result accounts_alias_add(struct accounts *a, const char *alias, const char *target,
                                        char *err, size_t errlen)
{
    char src[ACCOUNTS_ADDR_MAX + 1], dst[ACCOUNTS_ADDR_MAX + 1];
    if (!normalize_alias_source(alias, src, sizeof src))
        return invalid_address(alias, err, errlen);
    if (!accounts_normalize_address(target, dst, sizeof dst, NULL))
        return invalid_address(target, err, errlen);
    if (strcmp(src, dst) == 0) {
        snprintf(err, errlen, "%s cannot be an alias of itself", src);
        return ACCOUNTS_INVALID;
    }
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    return finish(a, alias_insert(a, src, dst, err, errlen), err, errlen);
}

enum accounts_result accounts_alias_del(struct accounts *a, const char *alias, const char *target,
                                        char *err, size_t errlen)
{
    char src[ACCOUNTS_ADDR_MAX + 1], dst[ACCOUNTS_ADDR_MAX + 1];
    if (!normalize_alias_source(alias, src, sizeof src))
        return invalid_address(alias, err, errlen);
    if (!accounts_normalize_address(target, dst, sizeof dst, NULL))
        return invalid_address(target, err, errlen);
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    enum accounts_result r = ACCOUNTS_OK;
    if (run(a, ST_ALIAS_DELETE, src, dst) < 0) {
        set_db_err(a, "alias delete", err, errlen);
        r = ACCOUNTS_ERROR;
    } else if (sqlite3_changes(a->db) == 0) {
        snprintf(err, errlen, "no such alias: %s -> %s", src, dst);
        r = ACCOUNTS_NO_SUCH_USER;
    } else {
        r = domain_gc(a, domain_of(src), err, errlen);
    }
    return finish(a, r, err, errlen);
}

/* ------------------------------------------------------------------ */
/* Relays                                                               */

static enum accounts_result invalid_domain(const char *domain, char *err, size_t errlen)
{
    snprintf(err, errlen, "invalid domain: %.*s", ACCOUNTS_DOMAIN_MAX, domain ? domain : "(none)");
    return ACCOUNTS_INVALID;
}

static bool is_ip_literal(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* A relay host: an IP literal, or a host name of LDH labels (a single
 * label is allowed: containers name each other that way). */
static bool relay_host_valid(const char *h)
{
    size_t len = strnlen(h, ACCOUNTS_DOMAIN_MAX + 1);
    if (len == 0 || len > ACCOUNTS_DOMAIN_MAX)
        return false;
    if (is_ip_literal(h))
        return true;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
        } else if (!ascii_is_alnum(c) && !(c == '-' && label > 0)) {
            return false;
        } else if (++label > 63) {
            return false;
        }
    }
    return label > 0 && h[len - 1] != '-';
}

/* Runs one relay write (statement with up to three parameters, the third
 * text or, when p3 is NULL, the integer n) in a transaction. */
static enum accounts_result relay_write(struct accounts *a, enum stmt_id id, const char *p1,
                                        const char *p2, const char *p3, long n, char *err,
                                        size_t errlen)
{
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    sqlite3_stmt *st = stmt(a, id);
    bind_text(st, 1, p1);
    bind_text(st, 2, p2);
    if (p3)
        bind_text(st, 3, p3);
    else if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, n);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    enum accounts_result r = ACCOUNTS_OK;
    if (rc != SQLITE_DONE) {
        log_db_error(a, "relay update");
        set_db_err(a, "relay update", err, errlen);
        r = ACCOUNTS_ERROR;
    }
    return finish(a, r, err, errlen);
}

enum accounts_result accounts_relay_add_domain(struct accounts *a, const char *domain,
                                               const char *host, unsigned port, char *err,
                                               size_t errlen)
{
    char d[ACCOUNTS_DOMAIN_MAX + 1];
    if (!accounts_normalize_domain(domain, d, sizeof d, NULL))
        return invalid_domain(domain, err, errlen);
    if (!host || !relay_host_valid(host)) {
        snprintf(err, errlen, "invalid relay host: %.*s", ACCOUNTS_DOMAIN_MAX,
                 host ? host : "(none)");
        return ACCOUNTS_INVALID;
    }
    if (port == 0 || port > 65535) {
        snprintf(err, errlen, "invalid port: %u", port);
        return ACCOUNTS_INVALID;
    }
    char h[ACCOUNTS_DOMAIN_MAX + 1];
    copy_lower(host, strlen(host), h, NULL);
    return relay_write(a, ST_RELAY_DOMAIN_SET, d, h, NULL, (long)port, err, errlen);
}

enum accounts_result accounts_relay_add_auth(struct accounts *a, const char *domain,
                                             const char *user, const char *password, char *err,
                                             size_t errlen)
{
    char d[ACCOUNTS_DOMAIN_MAX + 1];
    if (!accounts_normalize_domain(domain, d, sizeof d, NULL))
        return invalid_domain(domain, err, errlen);
    if (!user || !*user || strlen(user) >= ACCOUNTS_RELAY_SECRET_MAX) {
        snprintf(err, errlen, "invalid relay user (1 to %d characters)",
                 ACCOUNTS_RELAY_SECRET_MAX - 1);
        return ACCOUNTS_INVALID;
    }
    if (!password || !*password || strlen(password) >= ACCOUNTS_RELAY_SECRET_MAX) {
        snprintf(err, errlen, "invalid relay password (1 to %d characters)",
                 ACCOUNTS_RELAY_SECRET_MAX - 1);
        return ACCOUNTS_INVALID;
    }
    return relay_write(a, ST_RELAY_AUTH_SET, d, user, password, 0, err, errlen);
}

enum accounts_result accounts_relay_exclude_domain(struct accounts *a, const char *domain,
                                                   char *err, size_t errlen)
{
    char d[ACCOUNTS_DOMAIN_MAX + 1];
    if (!accounts_normalize_domain(domain, d, sizeof d, NULL))
        return invalid_domain(domain, err, errlen);
    return relay_write(a, ST_RELAY_EXCLUDE, d, NULL, NULL, 0, err, errlen);
}

static void copy_column(sqlite3_stmt *st, int col, char *out, size_t outlen)
{
    const char *v = (const char *)sqlite3_column_text(st, col);
    snprintf(out, outlen, "%s", v ? v : "");
}

/* Steps a lookup statement; returns SQLITE_ROW, SQLITE_DONE or an error. */
static int relay_step(struct accounts *a, enum stmt_id id, const char *domain)
{
    sqlite3_stmt *st = stmt(a, id);
    bind_text(st, 1, domain);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        log_db_error(a, stmt_sql[id]);
    return rc;
}

static int relay_lookup_locked(struct accounts *a, const char *d, struct accounts_relay *out)
{
    int rc = relay_step(a, ST_RELAY_DOMAIN_GET, d);
    if (rc == SQLITE_ROW) {
        sqlite3_stmt *st = a->st[ST_RELAY_DOMAIN_GET];
        copy_column(st, 0, out->host, sizeof out->host);
        sqlite3_int64 port = sqlite3_column_int64(st, 1);
        out->port = port > 0 && port <= 65535 ? (unsigned)port : 25;
    }
    sqlite3_reset(a->st[ST_RELAY_DOMAIN_GET]);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    rc = relay_step(a, ST_RELAY_AUTH_GET, d);
    if (rc == SQLITE_ROW) {
        copy_column(a->st[ST_RELAY_AUTH_GET], 0, out->user, sizeof out->user);
        copy_column(a->st[ST_RELAY_AUTH_GET], 1, out->password, sizeof out->password);
    }
    sqlite3_reset(a->st[ST_RELAY_AUTH_GET]);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return -1;
    rc = relay_step(a, ST_RELAY_EXCLUDED_GET, d);
    out->excluded = rc == SQLITE_ROW;
    sqlite3_reset(a->st[ST_RELAY_EXCLUDED_GET]);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

enum accounts_result accounts_relay_lookup(struct accounts *a, const char *domain,
                                           struct accounts_relay *out)
{
    *out = (struct accounts_relay){ 0 };
    char d[ACCOUNTS_DOMAIN_MAX + 1];
    if (!domain || !*domain)
        return ACCOUNTS_OK;   /* <> has no domain: nothing configured */
    if (!accounts_normalize_domain(domain, d, sizeof d, NULL))
        return ACCOUNTS_INVALID;
    pthread_mutex_lock(&a->lock);
    int rc = begin(a, false);
    if (rc == 0) {
        rc = relay_lookup_locked(a, d, out);
        if (rc == 0)
            rc = run(a, ST_COMMIT, NULL, NULL);
        rollback(a);
    }
    pthread_mutex_unlock(&a->lock);
    if (rc < 0) {
        *out = (struct accounts_relay){ 0 };
        return ACCOUNTS_ERROR;
    }
    return ACCOUNTS_OK;
}

enum accounts_result accounts_relay_list(struct accounts *a, struct accounts_list *out)
{
    return list_query(a, ST_RELAY_LIST, out);
}

/* ------------------------------------------------------------------ */
/* Quotas                                                               */

/* The caller holds the lock in a write transaction. */
static enum accounts_result quota_write(struct accounts *a, const char *addr, bool set,
                                        uint64_t bytes, char *err, size_t errlen)
{
    int user = exists(a, ST_USER_EXISTS, addr, NULL);
    if (user < 0) {
        set_db_err(a, "user lookup", err, errlen);
        return ACCOUNTS_ERROR;
    }
    if (!user) {
        snprintf(err, errlen, "no such user: %s", addr);
        return ACCOUNTS_NO_SUCH_USER;
    }
    sqlite3_stmt *st = stmt(a, set ? ST_QUOTA_SET : ST_QUOTA_DEL);
    bind_text(st, 1, addr);
    if (set)
        sqlite3_bind_int64(st, 2, (sqlite3_int64)bytes);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_db_error(a, "quota update");
        set_db_err(a, "quota update", err, errlen);
        return ACCOUNTS_ERROR;
    }
    return ACCOUNTS_OK;
}

enum accounts_result accounts_quota_set(struct accounts *a, const char *address, uint64_t bytes,
                                        char *err, size_t errlen)
{
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return invalid_address(address, err, errlen);
    if (bytes > ACCOUNTS_QUOTA_MAX) {
        snprintf(err, errlen, "quota too large (at most %llu bytes)",
                 (unsigned long long)ACCOUNTS_QUOTA_MAX);
        return ACCOUNTS_INVALID;
    }
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    return finish(a, quota_write(a, addr, true, bytes, err, errlen), err, errlen);
}

enum accounts_result accounts_quota_del(struct accounts *a, const char *address, char *err,
                                        size_t errlen)
{
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return invalid_address(address, err, errlen);
    if (!begin_write(a, err, errlen))
        return ACCOUNTS_ERROR;
    return finish(a, quota_write(a, addr, false, 0, err, errlen), err, errlen);
}

enum accounts_result accounts_quota_get(struct accounts *a, const char *address, uint64_t *bytes)
{
    *bytes = 0;
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!accounts_normalize_address(address, addr, sizeof addr, NULL))
        return ACCOUNTS_INVALID;
    enum accounts_result r = ACCOUNTS_NO_SUCH_USER;
    pthread_mutex_lock(&a->lock);
    sqlite3_stmt *st = stmt(a, ST_QUOTA_GET);
    bind_text(st, 1, addr);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite3_int64 v = sqlite3_column_int64(st, 0);
        *bytes = v > 0 ? (uint64_t)v : 0;
        r = ACCOUNTS_OK;
    } else if (rc != SQLITE_DONE) {
        log_db_error(a, stmt_sql[ST_QUOTA_GET]);
        r = ACCOUNTS_ERROR;
    }
    sqlite3_reset(st);
    pthread_mutex_unlock(&a->lock);
    return r;
}
