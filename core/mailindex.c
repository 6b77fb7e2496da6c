/* mailindex: the per-owner SQLite index beside the Maildir (mailindex.h).
 *
 * The Maildir files are the truth; the index only remembers what the files
 * cannot: which UID each file got, UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, and
 * the RFC 822 size computed once. So whenever the index and the files
 * disagree, the files win: a row whose file is gone is dropped, a file
 * without a row that was never indexed gets the next UID, flags are taken
 * from the file name.
 *
 * Crash safety of expunge: a row is deleted only after its file is gone, and
 * rows are never deleted while their file is present. So after a crash in
 * the middle of an expunge every file still present keeps its row (and its
 * UID); a row left behind for a removed file is dropped by the next sync.
 * A file therefore never gets a second UID under the same UIDVALIDITY.
 *
 * Handles are shared per (mail store, address) in a process-wide table; a
 * per-handle mutex serializes every call on a handle, so one SQLite
 * connection per owner is enough and a sync never races another sync. */
#include "mailindex.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "log.h"

#define INDEX_FILE    "posthorn-index.db"
#define READ_MAX      (1024ULL * 1024 * 1024)  /* mailindex_read refuses bigger files */
#define FLAGS_MAX     52                       /* A-Z and a-z, each at most once */
#define CHUNK         16384
#define BUSY_TIMEOUT  5000                     /* ms; only `setup` could hold the lock */
#define ASIDE_TRIES   100                      /* names tried for a corrupt file */

/* Schema migrations: entry i brings the database from version i to i+1.
 * Append only; never edit a released entry. */
static const char *const migrations[] = {
    /* 1: folders ('' = INBOX) and messages. envelope and bodystructure are
     * IMAP's caches, filled lazily (NULL = not computed yet). */
    "CREATE TABLE folders(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    " uidvalidity INTEGER NOT NULL, uidnext INTEGER NOT NULL,"
    " highestmodseq INTEGER NOT NULL);"
    "CREATE TABLE messages(folder_id INTEGER NOT NULL REFERENCES folders(id),"
    " uid INTEGER NOT NULL, name TEXT NOT NULL, flags TEXT NOT NULL,"
    " size INTEGER NOT NULL, internaldate INTEGER NOT NULL, modseq INTEGER NOT NULL,"
    " envelope BLOB, bodystructure BLOB,"
    " PRIMARY KEY(folder_id, uid), UNIQUE(folder_id, name)) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

enum stmt_id {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK,
    ST_FOLDER_GET, ST_FOLDER_ADD, ST_FOLDER_SET, ST_FOLDER_DEL,
    ST_MSG_LIST, ST_MSG_GET, ST_MSG_ADD, ST_MSG_DEL, ST_MSG_FLAGS, ST_MSG_DEL_ALL,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_FOLDER_GET] = "SELECT id, uidvalidity, uidnext, highestmodseq FROM folders WHERE name = ?1",
    [ST_FOLDER_ADD] = "INSERT INTO folders(name, uidvalidity, uidnext, highestmodseq)"
                      " VALUES (?1, ?2, ?3, ?4)",
    [ST_FOLDER_SET] = "UPDATE folders SET uidvalidity = ?2, uidnext = ?3, highestmodseq = ?4"
                      " WHERE id = ?1",
    [ST_FOLDER_DEL] = "DELETE FROM folders WHERE id = ?1",
    [ST_MSG_LIST] = "SELECT uid, name, flags, size, internaldate, modseq FROM messages"
                    " WHERE folder_id = ?1 ORDER BY uid",
    [ST_MSG_GET] = "SELECT name, flags FROM messages WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_ADD] = "INSERT INTO messages(folder_id, uid, name, flags, size, internaldate, modseq)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_MSG_DEL] = "DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_FLAGS] = "UPDATE messages SET flags = ?3, modseq = ?4 WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_DEL_ALL] = "DELETE FROM messages WHERE folder_id = ?1",
};

struct mailindex {
    struct mailindex *next;     /* registry list, under reg_mu */
    unsigned refs;              /* under reg_mu */
    struct mailstore *ms;
    char *address;
    char path[PATH_MAX];
    pthread_mutex_t mu;         /* serializes every call on the handle */
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    bool corrupt;               /* SQLite reported a damaged file: rebuild */
};

/* A folder row. */
struct folder {
    sqlite3_int64 id;
    uint32_t uidvalidity;
    uint64_t uidnext;           /* 64-bit so that exhaustion is detectable */
    uint64_t modseq;
    bool dirty;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mailindex *registry;

static pthread_mutex_t uv_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t uv_last;

/* time(NULL), but never twice the same value in this process, so that a
 * folder deleted and recreated (or an index rebuilt) within one second still
 * gets a new UIDVALIDITY. */
static uint32_t new_uidvalidity(void)
{
    pthread_mutex_lock(&uv_mu);
    uint32_t v = (uint32_t)time(NULL);
    if (v <= uv_last)
        v = uv_last + 1;
    if (v == 0)
        v = 1;
    uv_last = v;
    pthread_mutex_unlock(&uv_mu);
    return v;
}

/* "" for INBOX (the index's key), the name otherwise. */
static const char *folder_key(const char *folder)
{
    return !folder || strcasecmp(folder, "INBOX") == 0 ? "" : folder;
}

/* The mail store's name for a folder key. */
static const char *store_folder(const char *key)
{
    return *key ? key : NULL;
}

/* Sorted, deduplicated letters of in. strict: anything else is EINVAL;
 * otherwise other bytes (from foreign file names) are ignored. */
static int norm_flags(const char *in, char out[FLAGS_MAX + 1], bool strict)
{
    bool seen[128] = { false };
    for (const char *p = in ? in : ""; *p; p++) {
        unsigned char c = (unsigned char)*p;
        bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (letter)
            seen[c] = true;
        else if (strict) {
            errno = EINVAL;
            return -1;
        }
    }
    size_t n = 0;
    for (int c = 'A'; c <= 'z'; c++)
        if (seen[c])
            out[n++] = (char)c;
    out[n] = '\0';
    return 0;
}

/* --- SQLite helpers ---------------------------------------------------------- */

static bool is_corrupt_code(int rc)
{
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB;
}

/* Reports the connection's last error; a damaged file is remembered so the
 * next call rebuilds it. */
static int db_fail(struct mailindex *ix, const char *what, char *err, size_t errlen)
{
    int rc = sqlite3_extended_errcode(ix->db);
    if (is_corrupt_code(rc))
        ix->corrupt = true;
    set_err(err, errlen, "%s: %s: %s", ix->path, what, sqlite3_errmsg(ix->db));
    log_warn("mailindex: %s: %s: %s", ix->path, what, sqlite3_errmsg(ix->db));
    errno = EIO;
    return -1;
}

static sqlite3_stmt *stmt(struct mailindex *ix, enum stmt_id id)
{
    sqlite3_stmt *s = ix->st[id];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Runs a statement that returns no rows. */
static int run(struct mailindex *ix, sqlite3_stmt *s, const char *what, char *err, size_t errlen)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : db_fail(ix, what, err, errlen);
}

static int begin(struct mailindex *ix, char *err, size_t errlen)
{
    return run(ix, stmt(ix, ST_BEGIN), "begin", err, errlen);
}

static int commit(struct mailindex *ix, char *err, size_t errlen)
{
    return run(ix, stmt(ix, ST_COMMIT), "commit", err, errlen);
}

static void rollback(struct mailindex *ix)
{
    if (!sqlite3_get_autocommit(ix->db)) {
        sqlite3_stmt *s = stmt(ix, ST_ROLLBACK);
        sqlite3_step(s);
        sqlite3_reset(s);
    }
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* --- Opening, migrating, rebuilding ------------------------------------------ */

enum open_result { OPEN_OK, OPEN_FAIL, OPEN_CORRUPT };

static int set_journal_wal(sqlite3 *db)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    bool wal = mode && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    return wal ? 0 : -1;
}

/* Applies the migrations the file lacks, in one transaction. */
static int migrate(struct mailindex *ix, char *err, size_t errlen)
{
    int version = 0;
    if (exec_sql(ix->db, "BEGIN IMMEDIATE") < 0 || db_query_int(ix->db, "PRAGMA user_version", &version) < 0)
        goto fail;
    if (version > SCHEMA_VERSION) {
        set_err(err, errlen, "%s: schema version %d is newer than this program's (%d)",
                ix->path, version, SCHEMA_VERSION);
        sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    for (int v = version; v < SCHEMA_VERSION; v++)
        if (exec_sql(ix->db, migrations[v]) < 0)
            goto fail;
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", SCHEMA_VERSION);
    if (exec_sql(ix->db, sql) < 0 || exec_sql(ix->db, "COMMIT") < 0)
        goto fail;
    if (version > 0 && version < SCHEMA_VERSION)    /* a new file is not news */
        log_info("mailindex: %s: schema migrated from version %d to %d", ix->path, version,
                 SCHEMA_VERSION);
    return 0;
fail:
    set_err(err, errlen, "%s: schema: %s", ix->path, sqlite3_errmsg(ix->db));
    sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* synchronous=NORMAL: in WAL mode a process crash loses nothing and the file
 * is never corrupted; only an OS crash or power loss can lose the last few
 * commits. Those are recomputed from the Maildir (flags live in the file
 * names, files without a row get UIDs in the same arrival order), so the
 * index does not pay an fsync per change the way accounts.db does. */
static int configure(struct mailindex *ix, char *err, size_t errlen)
{
    sqlite3_extended_result_codes(ix->db, 1);
    sqlite3_busy_timeout(ix->db, BUSY_TIMEOUT);
    if (set_journal_wal(ix->db) < 0
        || exec_sql(ix->db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;") < 0) {
        set_err(err, errlen, "%s: %s", ix->path, sqlite3_errmsg(ix->db));
        return -1;
    }
    if (migrate(ix, err, errlen) < 0)
        return -1;
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v3(ix->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &ix->st[i],
                               NULL) != SQLITE_OK) {
            set_err(err, errlen, "%s: %s: %s", ix->path, stmt_sql[i], sqlite3_errmsg(ix->db));
            return -1;
        }
    }
    return 0;
}

static void db_close(struct mailindex *ix)
{
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(ix->st[i]);
        ix->st[i] = NULL;
    }
    if (ix->db && sqlite3_close(ix->db) != SQLITE_OK)
        log_error("mailindex: %s: close: %s", ix->path, sqlite3_errmsg(ix->db));
    ix->db = NULL;
}

static enum open_result db_open(struct mailindex *ix, char *err, size_t errlen)
{
    /* Created 0600 before SQLite would create it 0644 minus umask; the -wal
     * and -shm files inherit its mode. */
    int fd = open(ix->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        set_err(err, errlen, "cannot open %s: %s", ix->path, strerror(errno));
        return OPEN_FAIL;
    }
    close(fd);
    ix->corrupt = false;
    if (sqlite3_open_v2(ix->path, &ix->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        set_err(err, errlen, "cannot open %s: %s", ix->path,
                ix->db ? sqlite3_errmsg(ix->db) : "out of memory");
        db_close(ix);
        return OPEN_FAIL;
    }
    if (configure(ix, err, errlen) == 0)
        return OPEN_OK;
    /* A file that is not a database, or one missing our tables although
     * its version says they exist, is damaged: the caller rebuilds it. */
    int rc = sqlite3_extended_errcode(ix->db);
    bool damaged = is_corrupt_code(rc) || (rc & 0xff) == SQLITE_ERROR;
    db_close(ix);
    return damaged ? OPEN_CORRUPT : OPEN_FAIL;
}

/* Renames the damaged file to posthorn-index.db.corrupt-<time>[.<n>] (kept
 * for inspection) and drops its -wal and -shm files. */
static int set_aside(struct mailindex *ix, const char *why)
{
    char aside[PATH_MAX + 64], side[PATH_MAX + 8];
    long long now = (long long)time(NULL);
    struct stat st;
    for (int i = 0; i < ASIDE_TRIES; i++) {
        if (i == 0)
            snprintf(aside, sizeof aside, "%s.corrupt-%lld", ix->path, now);
        else
            snprintf(aside, sizeof aside, "%s.corrupt-%lld.%d", ix->path, now, i);
        if (lstat(aside, &st) < 0 && errno == ENOENT)
            break;
    }
    if (rename(ix->path, aside) < 0) {
        log_error("mailindex: %s is damaged (%s) and cannot be moved aside: %s", ix->path, why,
                  strerror(errno));
        return -1;
    }
    snprintf(side, sizeof side, "%s-wal", ix->path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", ix->path);
    unlink(side);
    log_warn("mailindex: %s is damaged (%s); moved to %s, rebuilding with new UIDVALIDITY",
             ix->path, why, aside);
    return 0;
}

/* Opens the database; a damaged one is set aside and created anew. */
static int db_open_or_rebuild(struct mailindex *ix, char *err, size_t errlen)
{
    enum open_result r = db_open(ix, err, errlen);
    if (r == OPEN_CORRUPT) {
        if (set_aside(ix, err && *err ? err : "unreadable") < 0)
            return -1;
        r = db_open(ix, err, errlen);
    }
    if (r != OPEN_OK) {
        log_error("mailindex: %s", err && *err ? err : ix->path);
        return -1;
    }
    return 0;
}

/* Called at the start of each operation: replaces a database found damaged
 * by an earlier one. */
static int recover(struct mailindex *ix, char *err, size_t errlen)
{
    if (ix->db && !ix->corrupt)
        return 0;
    if (ix->db) {
        rollback(ix);
        db_close(ix);
        if (set_aside(ix, "corrupt during use") < 0) {
            set_err(err, errlen, "%s: damaged and cannot be moved aside", ix->path);
            errno = EIO;
            return -1;
        }
    }
    if (db_open_or_rebuild(ix, err, errlen) < 0) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* mkdir of the mailbox directory and its domain, so that the index can be
 * created before the first delivery. The mail store creates cur/new/tmp. */
static int make_mailbox_dir(const char *dir)
{
    char parent[PATH_MAX];
    const char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
        if (mkdir(parent, 0700) < 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(dir, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

static struct mailindex *handle_new(struct mailstore *ms, const char *address, char *err,
                                    size_t errlen)
{
    char dir[PATH_MAX];
    if (mailstore_mailbox_path(ms, address, dir, sizeof dir) < 0) {
        set_err(err, errlen, "invalid mailbox address %s", address);
        return NULL;
    }
    if (make_mailbox_dir(dir) < 0) {
        set_err(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    struct mailindex *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->address = strdup(address))) {
        set_err(err, errlen, "out of memory");
        free(ix);
        return NULL;
    }
    int n = snprintf(ix->path, sizeof ix->path, "%s/%s", dir, INDEX_FILE);
    if (n < 0 || (size_t)n >= sizeof ix->path || db_open_or_rebuild(ix, err, errlen) < 0) {
        if (n < 0 || (size_t)n >= sizeof ix->path)
            set_err(err, errlen, "mailbox path too long for %s", address);
        free(ix->address);
        free(ix);
        return NULL;
    }
    ix->ms = ms;
    ix->refs = 1;
    pthread_mutex_init(&ix->mu, NULL);
    return ix;
}

struct mailindex *mailindex_open(struct mailstore *ms, const char *address,
                                 char *err, size_t errlen)
{
    if (!ms || !address || !*address) {
        set_err(err, errlen, "mailindex: no mail store or address");
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&reg_mu);
    struct mailindex *ix = registry;
    while (ix && !(ix->ms == ms && strcmp(ix->address, address) == 0))
        ix = ix->next;
    if (ix) {
        ix->refs++;
    } else if ((ix = handle_new(ms, address, err, errlen)) != NULL) {
        ix->next = registry;
        registry = ix;
    }
    pthread_mutex_unlock(&reg_mu);
    return ix;
}

void mailindex_close(struct mailindex *ix)
{
    if (!ix)
        return;
    pthread_mutex_lock(&reg_mu);
    bool last = --ix->refs == 0;
    if (last) {
        struct mailindex **p = &registry;
        while (*p != ix)
            p = &(*p)->next;
        *p = ix->next;
    }
    pthread_mutex_unlock(&reg_mu);
    if (!last)
        return;
    db_close(ix);
    pthread_mutex_destroy(&ix->mu);
    free(ix->address);
    free(ix);
}

/* --- Folder rows ----------------------------------------------------------------- */

/* Loads the folder row; when missing and create, adds it with a fresh
 * UIDVALIDITY. Returns 1 found/created, 0 missing, -1 error. */
static int folder_get(struct mailindex *ix, const char *key, bool create, struct folder *f,
                      char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_FOLDER_GET);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        f->id = sqlite3_column_int64(s, 0);
        f->uidvalidity = (uint32_t)sqlite3_column_int64(s, 1);
        f->uidnext = (uint64_t)sqlite3_column_int64(s, 2);
        f->modseq = (uint64_t)sqlite3_column_int64(s, 3);
        f->dirty = false;
        sqlite3_reset(s);
        return 1;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(ix, "folder lookup", err, errlen);
    if (!create)
        return 0;
    f->uidvalidity = new_uidvalidity();
    f->uidnext = 1;
    f->modseq = 1;
    f->dirty = false;
    s = stmt(ix, ST_FOLDER_ADD);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, f->uidvalidity);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)f->uidnext);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)f->modseq);
    if (run(ix, s, "folder insert", err, errlen) < 0)
        return -1;
    f->id = sqlite3_last_insert_rowid(ix->db);
    return 1;
}

static int folder_save(struct mailindex *ix, const struct folder *f, char *err, size_t errlen)
{
    if (!f->dirty)
        return 0;
    sqlite3_stmt *s = stmt(ix, ST_FOLDER_SET);
    sqlite3_bind_int64(s, 1, f->id);
    sqlite3_bind_int64(s, 2, f->uidvalidity);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)f->uidnext);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)f->modseq);
    return run(ix, s, "folder update", err, errlen);
}

static uint64_t next_modseq(struct folder *f)
{
    f->dirty = true;
    return ++f->modseq;
}

/* The folder vanished from the Maildir: forget it, so that a folder created
 * again under that name starts over with a new UIDVALIDITY. */
static void folder_forget(struct mailindex *ix, const char *key)
{
    struct folder f;
    char err[256];
    if (begin(ix, err, sizeof err) < 0)
        return;
    if (folder_get(ix, key, false, &f, err, sizeof err) == 1) {
        sqlite3_stmt *s = stmt(ix, ST_MSG_DEL_ALL);
        sqlite3_bind_int64(s, 1, f.id);
        if (run(ix, s, "forget folder", err, sizeof err) == 0) {
            s = stmt(ix, ST_FOLDER_DEL);
            sqlite3_bind_int64(s, 1, f.id);
            if (run(ix, s, "forget folder", err, sizeof err) == 0
                && commit(ix, err, sizeof err) == 0)
                return;
        }
    }
    rollback(ix);
}

/* --- Message rows -------------------------------------------------------------- */

struct rows {
    struct mailindex_msg *m;    /* ascending UID; name NULL = deleted */
    size_t n, cap;
};

static void rows_free(struct rows *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->m[i].name);
        free(r->m[i].flags);
    }
    free(r->m);
    r->m = NULL;
    r->n = r->cap = 0;
}

static struct mailindex_msg *rows_push(struct rows *r)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct mailindex_msg *m = realloc(r->m, cap * sizeof *m);
        if (!m)
            return NULL;
        r->m = m;
        r->cap = cap;
    }
    struct mailindex_msg *m = &r->m[r->n++];
    memset(m, 0, sizeof *m);
    return m;
}

static int load_rows(struct mailindex *ix, sqlite3_int64 folder_id, struct rows *r,
                     char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_LIST);
    sqlite3_bind_int64(s, 1, folder_id);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 1);
        const char *flags = (const char *)sqlite3_column_text(s, 2);
        struct mailindex_msg *m = rows_push(r);
        if (!m || !name || !flags || !(m->name = strdup(name)) || !(m->flags = strdup(flags))) {
            sqlite3_reset(s);
            set_err(err, errlen, "%s: out of memory loading the index", ix->path);
            errno = ENOMEM;
            return -1;
        }
        m->uid = (uint32_t)sqlite3_column_int64(s, 0);
        m->size = (uint64_t)sqlite3_column_int64(s, 3);
        m->internaldate = (time_t)sqlite3_column_int64(s, 4);
        m->modseq = (uint64_t)sqlite3_column_int64(s, 5);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : db_fail(ix, "message list", err, errlen);
}

/* Looks up the file name of a UID. Returns 1 found (*name malloc'ed), 0
 * missing, -1 error. */
static int msg_name(struct mailindex *ix, sqlite3_int64 folder_id, uint32_t uid, char **name,
                    char *flags, char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_GET);
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, uid);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        return rc == SQLITE_DONE ? 0 : db_fail(ix, "message lookup", err, errlen);
    }
    const char *n = (const char *)sqlite3_column_text(s, 0);
    const char *f = (const char *)sqlite3_column_text(s, 1);
    if (flags)
        snprintf(flags, FLAGS_MAX + 1, "%s", f ? f : "");
    *name = n ? strdup(n) : NULL;
    sqlite3_reset(s);
    if (!*name) {
        set_err(err, errlen, "%s: out of memory", ix->path);
        errno = ENOMEM;
        return -1;
    }
    return 1;
}

static int msg_delete(struct mailindex *ix, sqlite3_int64 folder_id, uint32_t uid,
                      char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_DEL);
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, uid);
    return run(ix, s, "message delete", err, errlen);
}

static int msg_set_flags(struct mailindex *ix, sqlite3_int64 folder_id, uint32_t uid,
                         const char *flags, uint64_t modseq, char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_FLAGS);
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, uid);
    sqlite3_bind_text(s, 3, flags, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)modseq);
    return run(ix, s, "flags update", err, errlen);
}

/* --- RFC 822 sizes ---------------------------------------------------------------- */

/* Dovecot's ",W=<n>" (the size with CRLF line endings) in a base name. */
static bool name_crlf_size(const char *name, uint64_t *out)
{
    const char *p = strstr(name, ",W=");
    if (!p)
        return false;
    p += 3;
    uint64_t v = 0;
    int n = 0;
    for (; p[n] >= '0' && p[n] <= '9'; n++) {
        if (n >= 18)
            return false;
        v = v * 10 + (uint64_t)(p[n] - '0');
    }
    if (n == 0 || (p[n] != '\0' && p[n] != ','))
        return false;
    *out = v;
    return true;
}

/* The file's size with every bare LF counted as CRLF, by reading it once.
 * Our own files are stored with CRLF, but ",S=" alone cannot tell whether a
 * file came from us, so it is not trusted. */
static int crlf_size(struct mailindex *ix, const char *folder, const char *name, uint64_t *out)
{
    if (name_crlf_size(name, out))
        return 0;
    int fd = mailstore_open_msg(ix->ms, ix->address, folder, name);
    if (fd < 0)
        return -1;
    char buf[CHUNK];
    uint64_t total = 0;
    char prev = '\0';
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            close(fd);
            errno = saved;
            return -1;
        }
        for (ssize_t i = 0; i < got; i++) {
            if (buf[i] == '\n' && prev != '\r')
                total++;
            prev = buf[i];
        }
        total += (uint64_t)got;
    }
    close(fd);
    *out = total;
    return 0;
}

/* --- Sync --------------------------------------------------------------------------- */

static int cmp_row_name(const void *a, const void *b)
{
    return strcmp((*(struct mailindex_msg *const *)a)->name, (*(struct mailindex_msg *const *)b)->name);
}

static int cmp_file_name(const void *a, const void *b)
{
    return strcmp((*(struct mailstore_msg *const *)a)->name, (*(struct mailstore_msg *const *)b)->name);
}

/* Applies one matched pair: the file's flags win. */
static int reconcile_flags(struct mailindex *ix, struct folder *f, struct mailindex_msg *row,
                           const struct mailstore_msg *file, char *err, size_t errlen)
{
    char norm[FLAGS_MAX + 1];
    norm_flags(file->flags, norm, false);
    if (strcmp(norm, row->flags) == 0)
        return 0;
    char *copy = strdup(norm);
    if (!copy) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    uint64_t modseq = next_modseq(f);
    if (msg_set_flags(ix, f->id, row->uid, norm, modseq, err, errlen) < 0) {
        free(copy);
        return -1;
    }
    free(row->flags);
    row->flags = copy;
    row->modseq = modseq;
    return 0;
}

static int drop_row(struct mailindex *ix, struct folder *f, struct mailindex_msg *row,
                    char *err, size_t errlen)
{
    if (msg_delete(ix, f->id, row->uid, err, errlen) < 0)
        return -1;
    next_modseq(f);
    free(row->name);
    free(row->flags);
    row->name = row->flags = NULL;
    return 0;
}

/* Joins rows and files by name (both sorted by name: O(n log n)): rows
 * whose file is gone are deleted, flags are updated, and files without a
 * row are marked in isnew[] (indexed like files->msgs). */
static int reconcile(struct mailindex *ix, struct folder *f, struct rows *r,
                     const struct mailstore_msglist *files, bool *isnew, char *err, size_t errlen)
{
    struct mailindex_msg **rs = malloc((r->n ? r->n : 1) * sizeof *rs);
    struct mailstore_msg **fs = malloc((files->n ? files->n : 1) * sizeof *fs);
    int rc = -1;
    if (!rs || !fs) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < r->n; i++)
        rs[i] = &r->m[i];
    for (size_t i = 0; i < files->n; i++)
        fs[i] = &files->msgs[i];
    qsort(rs, r->n, sizeof *rs, cmp_row_name);
    qsort(fs, files->n, sizeof *fs, cmp_file_name);
    size_t i = 0, j = 0;
    rc = 0;
    while (rc == 0 && (i < r->n || j < files->n)) {
        int c = i == r->n ? 1 : j == files->n ? -1 : strcmp(rs[i]->name, fs[j]->name);
        if (c < 0) {
            rc = drop_row(ix, f, rs[i++], err, errlen);
        } else if (c > 0) {
            isnew[fs[j++] - files->msgs] = true;
        } else {
            rc = reconcile_flags(ix, f, rs[i++], fs[j++], err, errlen);
        }
    }
out:
    free(rs);
    free(fs);
    return rc;
}

/* UIDs ran out (2^32 - 1): start the folder over under a new UIDVALIDITY,
 * every file becoming new. */
static int renumber(struct mailindex *ix, struct folder *f, struct rows *r, bool *isnew,
                    size_t nfiles, char *err, size_t errlen)
{
    log_warn("mailindex: %s: folder %lld ran out of UIDs; new UIDVALIDITY", ix->path,
             (long long)f->id);
    sqlite3_stmt *s = stmt(ix, ST_MSG_DEL_ALL);
    sqlite3_bind_int64(s, 1, f->id);
    if (run(ix, s, "renumber", err, errlen) < 0)
        return -1;
    rows_free(r);
    for (size_t i = 0; i < nfiles; i++)
        isnew[i] = true;
    f->uidvalidity = new_uidvalidity();
    f->uidnext = 1;
    f->dirty = true;
    return 0;
}

static int add_file(struct mailindex *ix, struct folder *f, const char *key, struct rows *r,
                    const struct mailstore_msg *file, char *err, size_t errlen)
{
    uint64_t size;
    if (crlf_size(ix, store_folder(key), file->name, &size) < 0) {
        if (errno == ENOENT)
            return 0;   /* removed since the listing: never indexed */
        log_warn("mailindex: %s: cannot read %s for its size: %s; using the file size",
                 ix->path, file->name, strerror(errno));
        size = file->size;
    }
    char norm[FLAGS_MAX + 1];
    norm_flags(file->flags, norm, false);
    struct mailindex_msg *m = rows_push(r);
    if (!m || !(m->name = strdup(file->name)) || !(m->flags = strdup(norm))) {
        if (m) {
            free(m->name);
            r->n--;     /* keep only complete rows */
        }
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    m->uid = (uint32_t)f->uidnext++;
    m->size = size;
    m->internaldate = file->mtime;
    m->modseq = next_modseq(f);
    sqlite3_stmt *s = stmt(ix, ST_MSG_ADD);
    sqlite3_bind_int64(s, 1, f->id);
    sqlite3_bind_int64(s, 2, m->uid);
    sqlite3_bind_text(s, 3, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, m->flags, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)m->size);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)m->internaldate);
    sqlite3_bind_int64(s, 7, (sqlite3_int64)m->modseq);
    return run(ix, s, "message insert", err, errlen);
}

/* New files get UIDs in the listing's order: arrival (mtime, then name). */
static int add_new(struct mailindex *ix, struct folder *f, const char *key, struct rows *r,
                   const struct mailstore_msglist *files, bool *isnew, char *err, size_t errlen)
{
    size_t nnew = 0;
    for (size_t i = 0; i < files->n; i++)
        nnew += isnew[i];
    if (nnew > 0 && f->uidnext + nnew > UINT32_MAX
        && renumber(ix, f, r, isnew, files->n, err, errlen) < 0)
        return -1;
    for (size_t i = 0; i < files->n; i++)
        if (isnew[i] && add_file(ix, f, key, r, &files->msgs[i], err, errlen) < 0)
            return -1;
    return 0;
}

/* Moves the live rows into the view. */
static void fill_view(const struct folder *f, struct rows *r, struct mailindex_view *out)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->m[i].name)
            r->m[n++] = r->m[i];
    out->uidvalidity = f->uidvalidity;
    out->uidnext = (uint32_t)f->uidnext;
    out->highestmodseq = f->modseq;
    out->msgs = r->m;
    out->n = n;
    r->m = NULL;
    r->n = r->cap = 0;
}

static int sync_once(struct mailindex *ix, const char *key, const struct mailstore_msglist *files,
                     struct mailindex_view *out, char *err, size_t errlen)
{
    struct folder f;
    struct rows r = { NULL, 0, 0 };
    bool *isnew = calloc(files->n ? files->n : 1, sizeof *isnew);
    if (!isnew) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    int rc = begin(ix, err, errlen);
    if (rc == 0)
        rc = folder_get(ix, key, true, &f, err, errlen) < 0 ? -1 : 0;
    if (rc == 0)
        rc = load_rows(ix, f.id, &r, err, errlen);
    if (rc == 0)
        rc = reconcile(ix, &f, &r, files, isnew, err, errlen);
    if (rc == 0)
        rc = add_new(ix, &f, key, &r, files, isnew, err, errlen);
    if (rc == 0)
        rc = folder_save(ix, &f, err, errlen);
    if (rc == 0)
        rc = commit(ix, err, errlen);
    if (rc == 0) {
        fill_view(&f, &r, out);
    } else {
        int saved = errno;
        rollback(ix);
        errno = saved;
    }
    rows_free(&r);
    free(isnew);
    return rc;
}

void mailindex_view_free(struct mailindex_view *v)
{
    if (!v)
        return;
    struct rows r = { v->msgs, v->n, v->n };
    rows_free(&r);
    memset(v, 0, sizeof *v);
}

int mailindex_sync(struct mailindex *ix, const char *folder, struct mailindex_view *out,
                   char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *key = folder_key(folder);
    struct mailstore_msglist files = { NULL, 0 };
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0 && mailstore_list(ix->ms, ix->address, store_folder(key), &files) < 0) {
        int saved = errno;
        if (saved != ENOENT || *key) {
            set_err(err, errlen, "cannot list %s folder %s: %s", ix->address,
                    *key ? key : "INBOX", strerror(saved));
            if (saved == ENOENT)
                folder_forget(ix, key);
            rc = -1;
        }
        errno = saved;      /* INBOX not created yet: an empty listing */
    }
    if (rc == 0) {
        rc = sync_once(ix, key, &files, out, err, errlen);
        /* A file found damaged now is rebuilt and the sync done again. */
        if (rc < 0 && ix->corrupt && recover(ix, err, errlen) == 0)
            rc = sync_once(ix, key, &files, out, err, errlen);
    }
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    mailstore_msglist_free(&files);
    errno = saved;
    return rc;
}

/* --- Reading ------------------------------------------------------------------------ */

/* Looks up a UID's file name under the handle lock. */
static int find_uid(struct mailindex *ix, const char *key, uint32_t uid, char **name,
                    char *flags, struct folder *f, char *err, size_t errlen)
{
    int found = folder_get(ix, key, false, f, err, errlen);
    if (found == 1)
        found = msg_name(ix, f->id, uid, name, flags, err, errlen);
    if (found == 0) {
        set_err(err, errlen, "no message with UID %u in %s", (unsigned)uid, *key ? key : "INBOX");
        errno = ENOENT;
        return -1;
    }
    return found < 0 ? -1 : 0;
}

/* Reads up to size bytes of fd into out. */
static int read_fd(int fd, size_t size, struct buf *out)
{
    if (buf_reserve(out, size) < 0) {
        errno = ENOMEM;
        return -1;
    }
    while (out->len < size) {
        ssize_t got = read(fd, out->data + out->len, size - out->len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        out->len += (size_t)got;
    }
    return 0;
}

/* Turns each bare LF of out into CRLF, in place, working from the end. */
static int expand_lf(struct buf *out)
{
    size_t bare = 0;
    for (size_t i = 0; i < out->len; i++)
        if (out->data[i] == '\n' && (i == 0 || out->data[i - 1] != '\r'))
            bare++;
    if (bare == 0)
        return 0;
    if (buf_reserve(out, bare) < 0) {
        errno = ENOMEM;
        return -1;
    }
    size_t src = out->len, dst = out->len + bare;
    while (src > 0) {
        char c = out->data[--src];
        out->data[--dst] = c;
        if (c == '\n' && (src == 0 || out->data[src - 1] != '\r'))
            out->data[--dst] = '\r';
    }
    out->len += bare;
    return 0;
}

static int read_message(struct mailindex *ix, const char *key, const char *name, struct buf *out,
                        char *err, size_t errlen)
{
    int fd = mailstore_open_msg(ix->ms, ix->address, store_folder(key), name);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int saved = errno;
        set_err(err, errlen, "cannot open message %s: %s", name, strerror(saved));
        if (fd >= 0)
            close(fd);
        errno = saved;
        return -1;
    }
    if ((uint64_t)st.st_size > READ_MAX) {
        close(fd);
        set_err(err, errlen, "message %s is larger than 1 GiB", name);
        errno = EFBIG;
        return -1;
    }
    int rc = read_fd(fd, (size_t)st.st_size, out);
    int saved = errno;
    close(fd);
    if (rc == 0)
        rc = expand_lf(out);
    else
        errno = saved;
    if (rc < 0)
        set_err(err, errlen, "cannot read message %s: %s", name, strerror(errno));
    return rc;
}

int mailindex_read(struct mailindex *ix, const char *folder, uint32_t uid, struct buf *out,
                   char *err, size_t errlen)
{
    const char *key = folder_key(folder);
    struct folder f;
    char *name = NULL;
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = find_uid(ix, key, uid, &name, NULL, &f, err, errlen);
    pthread_mutex_unlock(&ix->mu);
    /* The file itself is read outside the lock: other sessions of the user
     * need not wait for a large message. */
    buf_reset(out);
    if (rc == 0)
        rc = read_message(ix, key, name, out, err, errlen);
    int saved = errno;
    free(name);
    errno = saved;
    return rc;
}

/* --- Changing ------------------------------------------------------------------------ */

static int set_flags_locked(struct mailindex *ix, const char *key, uint32_t uid,
                            const char *norm, char *err, size_t errlen)
{
    struct folder f;
    char *name = NULL, old[FLAGS_MAX + 1];
    if (begin(ix, err, errlen) < 0)
        return -1;
    int rc = find_uid(ix, key, uid, &name, old, &f, err, errlen);
    if (rc == 0 && mailstore_set_flags(ix->ms, ix->address, store_folder(key), name, norm) < 0) {
        set_err(err, errlen, "cannot set flags of %s: %s", name, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && strcmp(old, norm) != 0) {
        rc = msg_set_flags(ix, f.id, uid, norm, next_modseq(&f), err, errlen);
        if (rc == 0)
            rc = folder_save(ix, &f, err, errlen);
    }
    if (rc == 0)
        rc = commit(ix, err, errlen);
    int saved = errno;
    if (rc < 0)
        rollback(ix);   /* the file's new name is the truth: the next sync adopts it */
    free(name);
    errno = saved;
    return rc;
}

int mailindex_set_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                        const char *flags, char *err, size_t errlen)
{
    char norm[FLAGS_MAX + 1];
    if (norm_flags(flags, norm, true) < 0) {
        set_err(err, errlen, "invalid flags");
        return -1;
    }
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = set_flags_locked(ix, folder_key(folder), uid, norm, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

/* Removes one message: file first, then its row (see the top of the file).
 * Returns 1 removed, 0 unknown UID, -1 error. */
static int expunge_one(struct mailindex *ix, struct folder *f, const char *key, uint32_t uid,
                       char *err, size_t errlen)
{
    char *name = NULL;
    int found = msg_name(ix, f->id, uid, &name, NULL, err, errlen);
    if (found <= 0)
        return found;
    int rc = 1;
    if (mailstore_remove(ix->ms, ix->address, store_folder(key), name) < 0 && errno != ENOENT) {
        set_err(err, errlen, "cannot remove %s: %s", name, strerror(errno));
        rc = -1;
    }
    if (rc == 1 && msg_delete(ix, f->id, uid, err, errlen) < 0)
        rc = -1;
    if (rc == 1)
        next_modseq(f);
    free(name);
    return rc;
}

/* Stops at the first failure but commits the rows of the files already
 * removed; the result is then -1 and err says which file failed. */
static long expunge_locked(struct mailindex *ix, const char *key, const uint32_t *uids, size_t n,
                           char *err, size_t errlen)
{
    struct folder f;
    if (begin(ix, err, errlen) < 0)
        return -1;
    int found = folder_get(ix, key, false, &f, err, errlen);
    if (found <= 0) {
        rollback(ix);
        if (found < 0)
            return -1;
        set_err(err, errlen, "no folder %s in the index", *key ? key : "INBOX");
        errno = ENOENT;
        return -1;
    }
    long removed = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc >= 0; i++) {
        rc = expunge_one(ix, &f, key, uids[i], err, errlen);
        if (rc > 0)
            removed++;
    }
    int saved = errno;
    if (folder_save(ix, &f, err, errlen) < 0 || commit(ix, err, errlen) < 0) {
        rollback(ix);   /* files already gone: the next sync drops their rows */
        return -1;
    }
    errno = saved;
    return rc < 0 ? -1 : removed;
}

long mailindex_expunge(struct mailindex *ix, const char *folder, const uint32_t *uids,
                       size_t n, char *err, size_t errlen)
{
    if (n > 0 && !uids) {
        set_err(err, errlen, "no UIDs");
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&ix->mu);
    long rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = expunge_locked(ix, folder_key(folder), uids, n, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}
