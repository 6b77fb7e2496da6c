/* mailindex: the per-owner SQLite index beside the Maildir (mailindex.h).
 *
 * The Maildir files are the truth; the index only remembers what the files
 * cannot: which UID each file got, UIDVALIDITY/UIDNEXT/HIGHESTMODSEQ, and
 * the RFC 822 size computed once. So whenever the index and the files
 * disagree, the files win: a row whose file is gone is dropped, a file
 * without a row that was never indexed gets the next UID, flags are taken
 * from the file name.
 *
 * Crash safety of expunge and move: a row is deleted only after its file
 * is gone (removed, or renamed into another folder and both directories
 * fsynced), and rows are never deleted while their file is present. So
 * after a crash in the middle of an expunge every file still present keeps
 * its row (and its UID); a row left behind for a removed file is dropped by
 * the next sync, and a moved file without its row shows up as new in its
 * new folder. A file therefore never gets a second UID under the same
 * UIDVALIDITY. Copies and appends are made durable before they are indexed.
 *
 * The dovecot-uidlist file in each folder directory repeats the UIDs (in
 * Dovecot's format 3; mailindex_uidlist.h), so that an index that is
 * deleted or damaged is rebuilt with the same UIDVALIDITY and UIDs, and so
 * that a Maildir migrated from Dovecot keeps its UIDs. It is only a recovery aid: lines
 * are appended (one write per sync, append or copy, no fsync) before the
 * transaction that assigns the UIDs commits, and the whole file is
 * rewritten (temporary file and rename) when UIDVALIDITY changes or when
 * it holds many more lines than the folder has messages. A file that is
 * inconsistent (UIDs not ascending, a bad header) is ignored on import:
 * the folder then gets a new UIDVALIDITY, which is always safe.
 *
 * Handles are shared per (mail store, address) in a process-wide table; a
 * per-handle mutex serializes every call on a handle, so one SQLite
 * connection per owner is enough and a sync never races another sync. */
#include "mailindex.h"
#include "mailindex_uidlist.h"
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
#define KEYWORD_MAX   128                      /* octets in one IMAP keyword */
#define KEYWORDS_MAX  4096                     /* octets in a message's keyword list */
#define FOLDER_NAME_MAX 254                    /* ".<name>" is one directory name */
#define SUBSCRIPTION_MAX 1024                  /* octets in a subscribed name */
#define RESERVED_PREFIX "posthorn-del"         /* the store's trash names */

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
    /* 2: IMAP. Keywords per message ('' = none) and the BODY cache;
     * recent_mark per folder (a folder first indexed now counts everything
     * as recent, one indexed before does not); uidlist_lines counts the
     * lines of the folder's dovecot-uidlist (0 = none written yet);
     * subscriptions. */
    "ALTER TABLE messages ADD COLUMN keywords TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE messages ADD COLUMN body BLOB;"
    "ALTER TABLE folders ADD COLUMN recent_mark INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE folders ADD COLUMN uidlist_lines INTEGER NOT NULL DEFAULT 0;"
    "UPDATE folders SET recent_mark = uidnext;"
    "CREATE TABLE subscriptions(name TEXT PRIMARY KEY) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

enum stmt_id {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK,
    ST_FOLDER_GET, ST_FOLDER_ADD, ST_FOLDER_SET, ST_FOLDER_DEL, ST_FOLDER_LIST,
    ST_FOLDER_RENAME,
    ST_MSG_LIST, ST_MSG_GET, ST_MSG_ADD, ST_MSG_DEL, ST_MSG_FLAGS, ST_MSG_FLAGS_KW,
    ST_MSG_DEL_ALL, ST_MSG_CLONE, ST_CACHE_GET, ST_CACHE_PUT,
    ST_SUB_ADD, ST_SUB_DEL, ST_SUB_LIST,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_FOLDER_GET] = "SELECT id, uidvalidity, uidnext, highestmodseq, recent_mark, uidlist_lines"
                      " FROM folders WHERE name = ?1",
    [ST_FOLDER_ADD] = "INSERT INTO folders(name, uidvalidity, uidnext, highestmodseq, recent_mark,"
                      " uidlist_lines) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_FOLDER_SET] = "UPDATE folders SET uidvalidity = ?2, uidnext = ?3, highestmodseq = ?4,"
                      " recent_mark = ?5, uidlist_lines = ?6 WHERE id = ?1",
    [ST_FOLDER_DEL] = "DELETE FROM folders WHERE id = ?1",
    [ST_FOLDER_LIST] = "SELECT id, name FROM folders",
    [ST_FOLDER_RENAME] = "UPDATE folders SET name = ?2 WHERE id = ?1",
    [ST_MSG_LIST] = "SELECT uid, name, flags, size, internaldate, modseq, keywords FROM messages"
                    " WHERE folder_id = ?1 ORDER BY uid",
    [ST_MSG_GET] = "SELECT name, flags, keywords FROM messages WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_ADD] = "INSERT INTO messages(folder_id, uid, name, flags, size, internaldate, modseq,"
                   " keywords) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_MSG_DEL] = "DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_FLAGS] = "UPDATE messages SET flags = ?3, modseq = ?4 WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_FLAGS_KW] = "UPDATE messages SET flags = ?3, modseq = ?4, keywords = ?5"
                        " WHERE folder_id = ?1 AND uid = ?2",
    [ST_MSG_DEL_ALL] = "DELETE FROM messages WHERE folder_id = ?1",
    /* A copy of a row under another folder, UID and file name. */
    [ST_MSG_CLONE] = "INSERT INTO messages(folder_id, uid, name, flags, keywords, size,"
                     " internaldate, modseq, envelope, bodystructure, body)"
                     " SELECT ?1, ?2, ?3, flags, keywords, size, internaldate, ?4, envelope,"
                     " bodystructure, body FROM messages WHERE folder_id = ?5 AND uid = ?6",
    [ST_CACHE_GET] = "SELECT envelope, bodystructure, body FROM messages"
                     " WHERE folder_id = ?1 AND uid = ?2",
    [ST_CACHE_PUT] = "UPDATE messages SET envelope = ?3, bodystructure = ?4, body = ?5"
                     " WHERE folder_id = ?1 AND uid = ?2",
    [ST_SUB_ADD] = "INSERT OR IGNORE INTO subscriptions(name) VALUES (?1)",
    [ST_SUB_DEL] = "DELETE FROM subscriptions WHERE name = ?1",
    [ST_SUB_LIST] = "SELECT name FROM subscriptions ORDER BY name",
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
    uint64_t recent_mark;       /* UIDs >= it are \Recent for the next claimer */
    uint64_t uidlist_lines;     /* lines in its dovecot-uidlist, 0 = none known */
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

/* A UIDVALIDITY taken from a dovecot-uidlist: later new values stay above
 * it, as long as it is not in the future. */
static void uv_note(uint32_t v)
{
    pthread_mutex_lock(&uv_mu);
    if (v > uv_last && v <= (uint32_t)time(NULL))
        uv_last = v;
    pthread_mutex_unlock(&uv_mu);
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

/* IMAP's atom characters minus the ones a flag keyword cannot hold. */
static bool keyword_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\]", c);
}

/* Validates space-separated IMAP keywords and joins them with single
 * spaces, without duplicates (compared case-insensitively, the first
 * spelling kept) into *out (malloc'ed; "" for none). EINVAL for a bad
 * keyword or too many. */
static int norm_keywords(const char *in, char **out)
{
    const char *p = in ? in : "";
    size_t inlen = strlen(p);
    *out = NULL;
    if (inlen > KEYWORDS_MAX) {
        errno = EINVAL;
        return -1;
    }
    char *o = malloc(inlen + 1);
    if (!o) {
        errno = ENOMEM;
        return -1;
    }
    size_t n = 0;
    while (*p) {
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t len = 0;
        while (p[len] && p[len] != ' ')
            len++;
        bool ok = len <= KEYWORD_MAX;
        for (size_t i = 0; ok && i < len; i++)
            ok = keyword_char((unsigned char)p[i]);
        if (!ok) {
            free(o);
            errno = EINVAL;
            return -1;
        }
        bool dup = false;
        for (size_t i = 0; i < n && !dup; ) {      /* o is not terminated yet */
            size_t wl = 0;
            while (i + wl < n && o[i + wl] != ' ')
                wl++;
            dup = wl == len && strncasecmp(o + i, p, len) == 0;
            i += wl + 1;
        }
        if (!dup) {
            if (n > 0)
                o[n++] = ' ';
            memcpy(o + n, p, len);
            n += len;
        }
        p += len;
    }
    o[n] = '\0';
    *out = o;
    return 0;
}

/* A folder name the store can hold and IMAP may create: '.'-separated
 * components, none empty, no '/', no control characters, not the store's
 * reserved trash prefix, short enough to be one directory name. */
static int check_folder_name(const char *name, char *err, size_t errlen)
{
    size_t len = name ? strlen(name) : 0;
    bool ok = len > 0 && len <= FOLDER_NAME_MAX && name[0] != '.' && name[len - 1] != '.'
              && strncasecmp(name, RESERVED_PREFIX, sizeof RESERVED_PREFIX - 1) != 0;
    for (size_t i = 0; ok && i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        ok = c >= 0x20 && c != 0x7f && c != '/' && !(c == '.' && name[i + 1] == '.');
    }
    if (ok)
        return 0;
    set_err(err, errlen, "invalid folder name");
    errno = EINVAL;
    return -1;
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
    log_warn("mailindex: %s is damaged (%s); moved to %s, rebuilding from the Maildir",
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
 * UIDVALIDITY (everything recent). Returns 1 found, 2 created, 0 missing,
 * -1 error. */
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
        f->recent_mark = (uint64_t)sqlite3_column_int64(s, 4);
        f->uidlist_lines = (uint64_t)sqlite3_column_int64(s, 5);
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
    f->recent_mark = 1;
    f->uidlist_lines = 0;
    f->dirty = false;
    s = stmt(ix, ST_FOLDER_ADD);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, f->uidvalidity);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)f->uidnext);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)f->modseq);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)f->recent_mark);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)f->uidlist_lines);
    if (run(ix, s, "folder insert", err, errlen) < 0)
        return -1;
    f->id = sqlite3_last_insert_rowid(ix->db);
    return 2;
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
    sqlite3_bind_int64(s, 5, (sqlite3_int64)f->recent_mark);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)f->uidlist_lines);
    return run(ix, s, "folder update", err, errlen);
}

static uint64_t next_modseq(struct folder *f)
{
    f->dirty = true;
    return ++f->modseq;
}

/* Deletes a folder row with its messages (inside a transaction). */
static int folder_drop_id(struct mailindex *ix, sqlite3_int64 id, char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_DEL_ALL);
    sqlite3_bind_int64(s, 1, id);
    if (run(ix, s, "folder drop", err, errlen) < 0)
        return -1;
    s = stmt(ix, ST_FOLDER_DEL);
    sqlite3_bind_int64(s, 1, id);
    return run(ix, s, "folder drop", err, errlen);
}

/* Forgets a folder that is gone from the Maildir (deleted, or renamed
 * behind our back), so that a folder created again under that name starts
 * over with a new UIDVALIDITY. Its own transaction. */
static int folder_forget(struct mailindex *ix, const char *key, char *err, size_t errlen)
{
    struct folder f;
    if (begin(ix, err, errlen) < 0)
        return -1;
    int found = folder_get(ix, key, false, &f, err, errlen);
    int rc = found < 0 ? -1 : 0;
    if (found == 1)
        rc = folder_drop_id(ix, f.id, err, errlen);
    if (rc == 0)
        rc = commit(ix, err, errlen);
    if (rc < 0)
        rollback(ix);
    return rc;
}

/* --- Message rows -------------------------------------------------------------- */

struct rows {
    struct mailindex_msg *m;    /* ascending UID; name NULL = deleted */
    size_t n, cap;
};

static void msg_clear(struct mailindex_msg *m)
{
    free(m->name);
    free(m->flags);
    free(m->keywords);
    m->name = m->flags = m->keywords = NULL;
}

static void rows_free(struct rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        msg_clear(&r->m[i]);
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
        const char *kw = (const char *)sqlite3_column_text(s, 6);
        struct mailindex_msg *m = rows_push(r);
        if (m && name && flags && kw && (m->name = strdup(name)) && (m->flags = strdup(flags)))
            m->keywords = strdup(kw);
        if (!m || !m->keywords) {
            if (m) {
                msg_clear(m);
                r->n--;     /* keep only complete rows */
            }
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

/* Looks up the file name of a UID, and optionally its flags (into a
 * FLAGS_MAX + 1 buffer) and keywords (malloc'ed). Returns 1 found (*name
 * malloc'ed), 0 missing, -1 error. */
static int msg_name(struct mailindex *ix, sqlite3_int64 folder_id, uint32_t uid, char **name,
                    char *flags, char **keywords, char *err, size_t errlen)
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
    const char *k = (const char *)sqlite3_column_text(s, 2);
    if (flags)
        snprintf(flags, FLAGS_MAX + 1, "%s", f ? f : "");
    *name = n ? strdup(n) : NULL;
    bool ok = *name != NULL;
    if (keywords) {
        *keywords = strdup(k ? k : "");
        ok = ok && *keywords;
    }
    sqlite3_reset(s);
    if (!ok) {
        free(*name);
        *name = NULL;
        if (keywords) {
            free(*keywords);
            *keywords = NULL;
        }
        set_err(err, errlen, "%s: out of memory", ix->path);
        errno = ENOMEM;
        return -1;
    }
    return 1;
}

static int msg_insert(struct mailindex *ix, sqlite3_int64 folder_id, const struct mailindex_msg *m,
                      char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_ADD);
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, m->uid);
    sqlite3_bind_text(s, 3, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, m->flags, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, (sqlite3_int64)m->size);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)m->internaldate);
    sqlite3_bind_int64(s, 7, (sqlite3_int64)m->modseq);
    sqlite3_bind_text(s, 8, m->keywords ? m->keywords : "", -1, SQLITE_STATIC);
    return run(ix, s, "message insert", err, errlen);
}

/* Copies row (src, uid) to (dst, new_uid) under the file name `name`. */
static int msg_clone(struct mailindex *ix, sqlite3_int64 src, uint32_t uid, sqlite3_int64 dst,
                     uint32_t new_uid, const char *name, uint64_t modseq, char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_CLONE);
    sqlite3_bind_int64(s, 1, dst);
    sqlite3_bind_int64(s, 2, new_uid);
    sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)modseq);
    sqlite3_bind_int64(s, 5, src);
    sqlite3_bind_int64(s, 6, uid);
    if (run(ix, s, "message copy", err, errlen) < 0)
        return -1;
    if (sqlite3_changes(ix->db) == 1)
        return 0;
    set_err(err, errlen, "%s: message %u vanished while copied", ix->path, (unsigned)uid);
    errno = ENOENT;
    return -1;
}

static int msg_delete(struct mailindex *ix, sqlite3_int64 folder_id, uint32_t uid,
                      char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_MSG_DEL);
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, uid);
    return run(ix, s, "message delete", err, errlen);
}

/* Sets flags and, unless NULL, keywords. */
static int msg_set_flags(struct mailindex *ix, sqlite3_int64 folder_id, uint32_t uid,
                         const char *flags, const char *keywords, uint64_t modseq,
                         char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, keywords ? ST_MSG_FLAGS_KW : ST_MSG_FLAGS);
    sqlite3_bind_int64(s, 1, folder_id);
    sqlite3_bind_int64(s, 2, uid);
    sqlite3_bind_text(s, 3, flags, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)modseq);
    if (keywords)
        sqlite3_bind_text(s, 5, keywords, -1, SQLITE_STATIC);
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

/* --- dovecot-uidlist (mailindex_uidlist.c) ----------------------------------------- */

static struct uidlist_at uidlist_where(struct mailindex *ix, const char *key)
{
    return (struct uidlist_at){ ix->ms, ix->address, store_folder(key), ix->path };
}

/* Rewrites the folder's uidlist: the header, then the live rows m[0..n)
 * (ascending UIDs). A failure is only logged (the file is a recovery aid);
 * uidlist_lines is then 0, so that the next change tries again. */
static void uidlist_rewrite(struct mailindex *ix, const char *key, struct folder *f,
                            const struct mailindex_msg *m, size_t n)
{
    struct uidlist_at at = uidlist_where(ix, key);
    uint64_t now = uidlist_write(&at, f->uidvalidity, f->uidnext, m, n);
    if (now != f->uidlist_lines) {
        f->uidlist_lines = now;
        f->dirty = true;
    }
}

/* Rewrites it from the rows in the database (inside the transaction, so
 * rows just inserted are included). */
static void uidlist_rewrite_db(struct mailindex *ix, const char *key, struct folder *f)
{
    struct rows r = { NULL, 0, 0 };
    if (load_rows(ix, f->id, &r, NULL, 0) == 0) {
        uidlist_rewrite(ix, key, f, r.m, r.n);
    } else if (f->uidlist_lines != 0) {
        f->uidlist_lines = 0;
        f->dirty = true;
    }
    rows_free(&r);
}

/* Records newly assigned UIDs m[0..n): one appended write, or a rewrite
 * when no file is known. */
static void uidlist_add(struct mailindex *ix, const char *key, struct folder *f,
                        const struct mailindex_msg *m, size_t n)
{
    if (n == 0)
        return;
    if (f->uidlist_lines == 0) {
        uidlist_rewrite_db(ix, key, f);
        return;
    }
    struct uidlist_at at = uidlist_where(ix, key);
    uint64_t lines;
    int rc = uidlist_append(&at, m, n, &lines);
    if (rc < 0 && errno == ENOENT) {
        uidlist_rewrite_db(ix, key, f);     /* removed behind our back */
        return;
    }
    f->uidlist_lines = rc < 0 ? 0 : f->uidlist_lines + lines;
    f->dirty = true;
}

/* After a sync: a rewrite when forced (a new or renumbered folder), when
 * none is known, or when expunged messages left too many stale lines;
 * otherwise the new rows r->m[before..n) are appended. */
static void uidlist_update(struct mailindex *ix, const char *key, struct folder *f,
                           const struct rows *r, size_t before, bool force)
{
    if (force || uidlist_rewrite_due(f->uidlist_lines, r->m, r->n))
        uidlist_rewrite(ix, key, f, r->m, r->n);
    else if (r->n > before)
        uidlist_add(ix, key, f, r->m + before, r->n - before);
}

/* For a folder the index has just added: takes UIDVALIDITY, UIDNEXT and
 * the UIDs of named files from its dovecot-uidlist when there is one (an
 * index rebuilt, or a Maildir from Dovecot). Messages there count as
 * seen by an earlier session (not recent). Returns true when imported. */
static bool uidlist_import(struct mailindex *ix, const char *key, struct folder *f,
                           struct uidmap *m)
{
    struct uidlist_at at = uidlist_where(ix, key);
    uint32_t uv;
    uint64_t next;
    if (!uidlist_read(&at, m, &uv, &next))
        return false;
    f->uidvalidity = uv;
    f->uidnext = next;
    f->recent_mark = next;
    f->dirty = true;
    uv_note(uv);
    return true;
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

static int cmp_row_uid(const void *a, const void *b)
{
    uint32_t x = ((const struct mailindex_msg *)a)->uid, y = ((const struct mailindex_msg *)b)->uid;
    return x < y ? -1 : x > y;
}

/* Applies one matched pair: the file's flags win; keywords (which the
 * file name does not hold) stay. */
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
    if (msg_set_flags(ix, f->id, row->uid, norm, NULL, modseq, err, errlen) < 0) {
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
    msg_clear(row);
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
    f->recent_mark = 1;
    f->dirty = true;
    return 0;
}

static int add_file(struct mailindex *ix, struct folder *f, const char *key, struct rows *r,
                    const struct mailstore_msg *file, uint32_t uid, char *err, size_t errlen)
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
    if (m && (m->name = strdup(file->name)) && (m->flags = strdup(norm)))
        m->keywords = strdup("");
    if (!m || !m->keywords) {
        if (m) {
            msg_clear(m);
            r->n--;     /* keep only complete rows */
        }
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    if (uid == 0)
        uid = (uint32_t)f->uidnext++;
    m->uid = uid;
    m->size = size;
    m->internaldate = file->mtime;
    m->modseq = next_modseq(f);
    return msg_insert(ix, f->id, m, err, errlen);
}

/* New files get UIDs in the listing's order: arrival (mtime, then name);
 * those a dovecot-uidlist named (map) get its UIDs first. */
static int add_new(struct mailindex *ix, struct folder *f, const char *key, struct rows *r,
                   const struct mailstore_msglist *files, bool *isnew, const struct uidmap *map,
                   char *err, size_t errlen)
{
    size_t nnew = 0;
    for (size_t i = 0; i < files->n; i++)
        nnew += isnew[i];
    if (nnew > 0 && f->uidnext + nnew > UINT32_MAX) {
        if (renumber(ix, f, r, isnew, files->n, err, errlen) < 0)
            return -1;
        map = NULL;
    }
    for (size_t i = 0; map && map->n > 0 && i < files->n; i++) {
        uint32_t uid = isnew[i] ? uidmap_find(map, files->msgs[i].name) : 0;
        if (uid == 0)
            continue;
        if (add_file(ix, f, key, r, &files->msgs[i], uid, err, errlen) < 0)
            return -1;
        isnew[i] = false;
    }
    for (size_t i = 0; i < files->n; i++)
        if (isnew[i] && add_file(ix, f, key, r, &files->msgs[i], 0, err, errlen) < 0)
            return -1;
    if (map && map->n > 0)
        qsort(r->m, r->n, sizeof *r->m, cmp_row_uid);
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
    out->recent_mark = (uint32_t)f->recent_mark;
    out->msgs = r->m;
    out->n = n;
    r->m = NULL;
    r->n = r->cap = 0;
}

static int sync_once(struct mailindex *ix, const char *key, const struct mailstore_msglist *files,
                     struct mailindex_view *out, char *err, size_t errlen)
{
    struct folder f = { .id = 0 };
    struct rows r = { NULL, 0, 0 };
    struct uidmap map = UIDMAP_INIT;
    bool *isnew = calloc(files->n ? files->n : 1, sizeof *isnew);
    if (!isnew) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    int rc = begin(ix, err, errlen), got = 0;
    if (rc == 0 && (got = folder_get(ix, key, true, &f, err, errlen)) < 0)
        rc = -1;
    if (rc == 0 && got == 2)
        uidlist_import(ix, key, &f, &map);
    uint32_t uv = f.uidvalidity;
    if (rc == 0)
        rc = load_rows(ix, f.id, &r, err, errlen);
    if (rc == 0)
        rc = reconcile(ix, &f, &r, files, isnew, err, errlen);
    size_t before = r.n;
    if (rc == 0)
        rc = add_new(ix, &f, key, &r, files, isnew, &map, err, errlen);
    if (rc == 0)
        uidlist_update(ix, key, &f, &r, before, got == 2 || f.uidvalidity != uv);
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
    uidmap_free(&map);
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

/* mailindex_sync with the handle locked. */
static int sync_locked(struct mailindex *ix, const char *key, struct mailindex_view *out,
                       char *err, size_t errlen)
{
    struct mailstore_msglist files = { NULL, 0 };
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (mailstore_list(ix->ms, ix->address, store_folder(key), &files) < 0) {
        int saved = errno;
        if (saved != ENOENT || *key) {
            set_err(err, errlen, "cannot list %s folder %s: %s", ix->address,
                    *key ? key : "INBOX", strerror(saved));
            if (saved == ENOENT)
                folder_forget(ix, key, NULL, 0);
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
    mailstore_msglist_free(&files);
    errno = saved;
    return rc;
}

int mailindex_sync(struct mailindex *ix, const char *folder, struct mailindex_view *out,
                   char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = sync_locked(ix, folder_key(folder), out, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

/* Loads a folder's row; a folder the index has not seen yet is synced
 * first, so that its files and its dovecot-uidlist are taken in before
 * anything is added. Returns 0, or -1 (ENOENT for a missing folder).
 * Outside a transaction. */
static int folder_load(struct mailindex *ix, const char *key, struct folder *f,
                       char *err, size_t errlen)
{
    int found = folder_get(ix, key, false, f, err, errlen);
    if (found == 0) {
        struct mailindex_view v;
        if (sync_locked(ix, key, &v, err, errlen) < 0)
            return -1;
        mailindex_view_free(&v);
        found = folder_get(ix, key, false, f, err, errlen);
    }
    if (found == 0) {
        set_err(err, errlen, "no folder %s", *key ? key : "INBOX");
        errno = ENOENT;
    }
    return found == 1 ? 0 : -1;
}

/* --- Reading ------------------------------------------------------------------------ */

/* Looks up a UID's file name under the handle lock. */
static int find_uid(struct mailindex *ix, const char *key, uint32_t uid, char **name,
                    char *flags, char **keywords, struct folder *f, char *err, size_t errlen)
{
    int found = folder_get(ix, key, false, f, err, errlen);
    if (found == 1)
        found = msg_name(ix, f->id, uid, name, flags, keywords, err, errlen);
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
        rc = find_uid(ix, key, uid, &name, NULL, NULL, &f, err, errlen);
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

/* Reads the current flags and keywords, lets update() compute the new
 * ones, and writes them (file name first, then the row), all under the
 * handle lock and in one transaction. */
static int update_flags_locked(struct mailindex *ix, const char *key, uint32_t uid,
                               mailindex_flags_fn update, void *arg, bool rename_always,
                               char *err, size_t errlen)
{
    struct folder f;
    char *name = NULL, *old_kw = NULL, *kw = NULL, old[FLAGS_MAX + 1];
    char want[MAILINDEX_FLAGS_MAX + 1] = "", norm[FLAGS_MAX + 1];
    char *want_kw = NULL;
    if (begin(ix, err, errlen) < 0)
        return -1;
    int rc = find_uid(ix, key, uid, &name, old, &old_kw, &f, err, errlen);
    if (rc == 0 && update(arg, old, old_kw, want, &want_kw) < 0) {
        set_err(err, errlen, "cannot compute the new flags of UID %u", (unsigned)uid);
        errno = EINVAL;
        rc = -1;
    }
    if (rc == 0 && (norm_flags(want, norm, true) < 0 ||
                    (want_kw && norm_keywords(want_kw, &kw) < 0))) {
        set_err(err, errlen, errno == ENOMEM ? "out of memory" : "invalid flags or keywords");
        rc = -1;
    }
    if (rc == 0 && kw && strcmp(kw, old_kw) == 0) {
        free(kw);
        kw = NULL;          /* unchanged */
    }
    /* mailindex_set_flags renames the file even when the row already
     * agrees: its name may not (another program changed it since the last
     * sync). An update that changes nothing skips the directory scan. */
    bool changed = rc == 0 && (strcmp(old, norm) != 0 || kw);
    if ((changed || (rc == 0 && rename_always)) &&
        mailstore_set_flags(ix->ms, ix->address, store_folder(key), name, norm) < 0) {
        set_err(err, errlen, "cannot set flags of %s: %s", name, strerror(errno));
        rc = -1;
    }
    if (rc == 0 && changed) {
        rc = msg_set_flags(ix, f.id, uid, norm, kw, next_modseq(&f), err, errlen);
        if (rc == 0)
            rc = folder_save(ix, &f, err, errlen);
    }
    if (rc == 0)
        rc = commit(ix, err, errlen);
    int saved = errno;
    if (rc < 0)
        rollback(ix);   /* the file's new name is the truth: the next sync adopts it */
    free(name);
    free(old_kw);
    free(kw);
    free(want_kw);
    errno = saved;
    return rc;
}

static int update_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                        mailindex_flags_fn update, void *arg, bool rename_always, char *err,
                        size_t errlen)
{
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = update_flags_locked(ix, folder_key(folder), uid, update, arg, rename_always, err,
                                 errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

int mailindex_update_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                           mailindex_flags_fn update, void *arg, char *err, size_t errlen)
{
    return update_flags(ix, folder, uid, update, arg, false, err, errlen);
}

struct set_flags_arg {
    const char *flags, *keywords;
};

static int set_flags_fn(void *arg, const char *flags, const char *keywords, char *new_flags,
                        char **new_keywords)
{
    (void)flags, (void)keywords;
    const struct set_flags_arg *a = arg;
    snprintf(new_flags, MAILINDEX_FLAGS_MAX + 1, "%s", a->flags);
    *new_keywords = a->keywords ? strdup(a->keywords) : NULL;
    return a->keywords && !*new_keywords ? -1 : 0;
}

int mailindex_set_flags(struct mailindex *ix, const char *folder, uint32_t uid,
                        const char *flags, const char *keywords, char *err, size_t errlen)
{
    char norm[FLAGS_MAX + 1], *kw = NULL;
    if (norm_flags(flags, norm, true) < 0 || (keywords && norm_keywords(keywords, &kw) < 0)) {
        set_err(err, errlen, errno == ENOMEM ? "out of memory" : "invalid flags or keywords");
        return -1;
    }
    free(kw);
    struct set_flags_arg a = { norm, keywords };
    return update_flags(ix, folder, uid, set_flags_fn, &a, true, err, errlen);
}

/* Removes one message: file first, then its row (see the top of the file).
 * Returns 1 removed, 0 unknown UID, -1 error. */
static int expunge_one(struct mailindex *ix, struct folder *f, const char *key, uint32_t uid,
                       char *err, size_t errlen)
{
    char *name = NULL;
    int found = msg_name(ix, f->id, uid, &name, NULL, NULL, err, errlen);
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

/* --- IMAP: appending ------------------------------------------------------------------ */

static int append_locked(struct mailindex *ix, const char *key, const char *data, size_t len,
                         char *flags, char *keywords, time_t when, uint32_t *uidvalidity,
                         uint32_t *uid, char *err, size_t errlen)
{
    struct folder f;
    char name[NAME_MAX + 1];
    bool to_cur = flags[0] || keywords[0];
    if (folder_load(ix, key, &f, err, errlen) < 0
        || mailstore_append(ix->ms, ix->address, store_folder(key), data, len,
                            to_cur ? flags : NULL, when, name, sizeof name, err, errlen) < 0)
        return -1;
    struct mailindex_msg m = { .name = name, .flags = flags, .keywords = keywords,
                               .size = len, .internaldate = when };
    int found = begin(ix, err, errlen) < 0 ? -1 : folder_get(ix, key, false, &f, err, errlen);
    if (found == 0) {
        set_err(err, errlen, "folder %s vanished", *key ? key : "INBOX");
        errno = ENOENT;
    } else if (found == 1 && f.uidnext > UINT32_MAX) {
        set_err(err, errlen, "folder %s has no UIDs left", *key ? key : "INBOX");
        errno = EOVERFLOW;
        found = -1;
    }
    int rc = found == 1 ? 0 : -1;
    if (rc == 0) {
        m.uid = (uint32_t)f.uidnext++;
        m.modseq = next_modseq(&f);
        rc = msg_insert(ix, f.id, &m, err, errlen);
    }
    if (rc == 0) {
        uidlist_add(ix, key, &f, &m, 1);
        rc = folder_save(ix, &f, err, errlen);
    }
    if (rc == 0)
        rc = commit(ix, err, errlen);
    if (rc < 0) {
        int saved = errno;
        rollback(ix);
        if (mailstore_remove(ix->ms, ix->address, store_folder(key), name) < 0 && errno != ENOENT)
            log_warn("mailindex: %s: cannot remove %s after a failed append: %s", ix->path,
                     name, strerror(errno));
        errno = saved;
        return -1;
    }
    *uidvalidity = f.uidvalidity;
    *uid = m.uid;
    return 0;
}

int mailindex_append(struct mailindex *ix, const char *folder, const char *data, size_t len,
                     const char *flags, const char *keywords, time_t internaldate,
                     uint32_t *uidvalidity, uint32_t *uid, char *err, size_t errlen)
{
    char norm[FLAGS_MAX + 1], *kw = NULL;
    const char *key = folder_key(folder);
    if ((len > 0 && !data) || !uidvalidity || !uid || norm_flags(flags, norm, true) < 0
        || norm_keywords(keywords, &kw) < 0) {
        set_err(err, errlen, errno == ENOMEM ? "out of memory" : "invalid append request");
        if (errno != ENOMEM)
            errno = EINVAL;
        return -1;
    }
    if (*key && check_folder_name(key, err, errlen) < 0) {
        free(kw);
        return -1;
    }
    time_t when = internaldate != 0 ? internaldate : time(NULL);
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = append_locked(ix, key, data, len, norm, kw, when, uidvalidity, uid, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    free(kw);
    errno = saved;
    return rc;
}

/* --- IMAP: copying and moving ------------------------------------------------------------ */

/* One message being copied or moved. */
struct xfer {
    uint32_t uid;       /* in the source folder */
    char *name;         /* its file's base name in the destination; NULL = not done */
};

/* A message the store could not find: gone (expunged meanwhile: skipped
 * like an unknown UID), unless it is the destination that is missing. */
static bool vanished(struct mailindex *ix, const char *skey, const char *name)
{
    int fd = mailstore_open_msg(ix->ms, ix->address, store_folder(skey), name);
    if (fd < 0)
        return true;
    close(fd);
    errno = ENOENT;
    return false;
}

/* The file step: each message is linked/copied or renamed into dst. Stops
 * at the first failure; the messages done so far are marked in x. */
static int xfer_files(struct mailindex *ix, const char *skey, sqlite3_int64 src_id,
                      const char *dkey, const uint32_t *uids, size_t n, struct xfer *x,
                      bool move, size_t *done, char *err, size_t errlen)
{
    char newname[NAME_MAX + 1];
    *done = 0;
    for (size_t i = 0; i < n; i++) {
        char *name = NULL;
        int found = msg_name(ix, src_id, uids[i], &name, NULL, NULL, err, errlen);
        if (found < 0)
            return -1;
        if (found == 0)
            continue;
        int rc = (move ? mailstore_move : mailstore_copy)(ix->ms, ix->address, store_folder(skey),
                                                          name, store_folder(dkey), newname,
                                                          sizeof newname);
        int saved = errno;
        if (rc < 0 && saved == ENOENT && vanished(ix, skey, name)) {
            free(name);
            continue;
        }
        if (rc < 0)
            set_err(err, errlen, "cannot %s %s to %s: %s", move ? "move" : "copy", name,
                    *dkey ? dkey : "INBOX", strerror(saved));
        free(name);
        if (rc < 0) {
            errno = saved;
            return -1;
        }
        x[i].uid = uids[i];
        if (!(x[i].name = strdup(newname))) {
            /* A copy is removed by the caller's undo only when named: do it here. */
            if (!move)
                mailstore_remove(ix->ms, ix->address, store_folder(dkey), newname);
            set_err(err, errlen, "out of memory");
            errno = ENOMEM;
            return -1;
        }
        (*done)++;
    }
    return 0;
}

/* The index step: rows cloned into dst under its next UIDs (dst_uids),
 * and for a move deleted from src, in one transaction. */
static int xfer_index(struct mailindex *ix, const char *skey, const char *dkey,
                      const struct xfer *x, size_t n, bool move, uint32_t *dst_uids,
                      uint32_t *dst_uidvalidity, char *err, size_t errlen)
{
    struct folder sf, df;
    bool same = strcmp(skey, dkey) == 0;
    struct folder *sp = same ? &df : &sf;
    struct mailindex_msg *added = calloc(n ? n : 1, sizeof *added);
    size_t k = 0;
    int found = !added ? -1 : begin(ix, err, errlen) < 0 ? -1
                : folder_get(ix, dkey, false, &df, err, errlen);
    if (found == 1 && !same)
        found = folder_get(ix, skey, false, &sf, err, errlen);
    if (!added) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
    }
    if (found == 0) {
        set_err(err, errlen, "folder vanished during a %s", move ? "move" : "copy");
        errno = ENOENT;
    }
    int rc = found == 1 ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!x[i].name)
            continue;
        if (df.uidnext > UINT32_MAX) {
            set_err(err, errlen, "folder %s has no UIDs left", *dkey ? dkey : "INBOX");
            errno = EOVERFLOW;
            rc = -1;
            break;
        }
        uint32_t uid = (uint32_t)df.uidnext++;
        rc = msg_clone(ix, sp->id, x[i].uid, df.id, uid, x[i].name, next_modseq(&df), err, errlen);
        if (rc == 0 && move && (rc = msg_delete(ix, sp->id, x[i].uid, err, errlen)) == 0)
            next_modseq(sp);
        added[k].uid = dst_uids[i] = uid;
        added[k++].name = x[i].name;
    }
    if (rc == 0) {
        uidlist_add(ix, dkey, &df, added, k);
        rc = folder_save(ix, &df, err, errlen);
    }
    if (rc == 0 && !same)
        rc = folder_save(ix, &sf, err, errlen);
    if (rc == 0)
        rc = commit(ix, err, errlen);
    int saved = errno;
    if (rc < 0) {
        rollback(ix);
        for (size_t i = 0; i < n; i++)
            dst_uids[i] = 0;
    } else {
        *dst_uidvalidity = df.uidvalidity;
    }
    free(added);
    errno = saved;
    return rc;
}

static void undo_copies(struct mailindex *ix, const char *dkey, const struct xfer *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (x[i].name && mailstore_remove(ix->ms, ix->address, store_folder(dkey), x[i].name) < 0
            && errno != ENOENT)
            log_warn("mailindex: %s: cannot remove the copy %s after a failed copy: %s",
                     ix->path, x[i].name, strerror(errno));
}

/* fsyncs the directories the files went into (and out of). */
static int xfer_sync(struct mailindex *ix, const char *skey, const char *dkey, bool move,
                     char *err, size_t errlen)
{
    if (mailstore_sync_folder(ix->ms, ix->address, store_folder(dkey)) == 0
        && (!move || mailstore_sync_folder(ix->ms, ix->address, store_folder(skey)) == 0))
        return 0;
    set_err(err, errlen, "cannot fsync folder after a %s: %s", move ? "move" : "copy",
            strerror(errno));
    return -1;
}

/* Copy and move. A copy that fails anywhere removes its files. A move
 * that fails part way still indexes what it moved (the files are in dst
 * now), then reports the failure. */
static long transfer_locked(struct mailindex *ix, const char *skey, const uint32_t *uids,
                            size_t n, const char *dkey, uint32_t *dst_uidvalidity,
                            uint32_t *dst_uids, bool move, char *err, size_t errlen)
{
    struct folder sf, df;
    for (size_t i = 0; i < n; i++)
        dst_uids[i] = 0;
    if (folder_load(ix, dkey, &df, err, errlen) < 0 || folder_load(ix, skey, &sf, err, errlen) < 0)
        return -1;
    *dst_uidvalidity = df.uidvalidity;
    struct xfer *x = calloc(n ? n : 1, sizeof *x);
    if (!x) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    size_t done = 0;
    int rc = xfer_files(ix, skey, sf.id, dkey, uids, n, x, move, &done, err, errlen);
    int saved = errno;
    char ferr[256] = "";
    if (rc < 0)
        set_err(ferr, sizeof ferr, "%s", err && errlen ? err : strerror(saved));
    if ((rc == 0 || move) && done > 0) {
        /* A copy is indexed only once durable; a move in any case, since
         * its files are in dst now. */
        int later = xfer_sync(ix, skey, dkey, move, err, errlen);
        int later_errno = errno;
        if ((later == 0 || move)
            && xfer_index(ix, skey, dkey, x, n, move, dst_uids, dst_uidvalidity, err, errlen) < 0) {
            later = -1;
            later_errno = errno;
        }
        if (later < 0 && rc == 0) {
            rc = -1;
            saved = later_errno;
        }
    }
    if (rc < 0 && ferr[0])
        set_err(err, errlen, "%s", ferr);
    if (rc < 0 && !move)
        undo_copies(ix, dkey, x, n);
    for (size_t i = 0; i < n; i++)
        free(x[i].name);
    free(x);
    errno = saved;
    return rc < 0 ? -1 : (long)done;
}

static long transfer(struct mailindex *ix, const char *src, const uint32_t *uids, size_t n,
                     const char *dst, uint32_t *dst_uidvalidity, uint32_t *dst_uids, bool move,
                     char *err, size_t errlen)
{
    const char *skey = folder_key(src), *dkey = folder_key(dst);
    if ((n > 0 && (!uids || !dst_uids)) || !dst_uidvalidity) {
        set_err(err, errlen, "invalid %s request", move ? "move" : "copy");
        errno = EINVAL;
        return -1;
    }
    if ((*skey && check_folder_name(skey, err, errlen) < 0)
        || (*dkey && check_folder_name(dkey, err, errlen) < 0))
        return -1;
    pthread_mutex_lock(&ix->mu);
    long rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = transfer_locked(ix, skey, uids, n, dkey, dst_uidvalidity, dst_uids, move, err,
                             errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

long mailindex_copy(struct mailindex *ix, const char *src, const uint32_t *uids, size_t n,
                    const char *dst, uint32_t *dst_uidvalidity, uint32_t *dst_uids,
                    char *err, size_t errlen)
{
    return transfer(ix, src, uids, n, dst, dst_uidvalidity, dst_uids, false, err, errlen);
}

long mailindex_move(struct mailindex *ix, const char *src, const uint32_t *uids, size_t n,
                    const char *dst, uint32_t *dst_uidvalidity, uint32_t *dst_uids,
                    char *err, size_t errlen)
{
    return transfer(ix, src, uids, n, dst, dst_uidvalidity, dst_uids, true, err, errlen);
}

/* --- IMAP: \Recent and the cache -------------------------------------------------------- */

/* The folder row for a call that needs it to exist. Returns 0 or -1. */
static int need_folder(struct mailindex *ix, const char *key, struct folder *f,
                       char *err, size_t errlen)
{
    int found = folder_get(ix, key, false, f, err, errlen);
    if (found == 0) {
        set_err(err, errlen, "no folder %s in the index", *key ? key : "INBOX");
        errno = ENOENT;
    }
    return found == 1 ? 0 : -1;
}

static int claim_locked(struct mailindex *ix, const char *key, uint32_t *first_recent,
                        char *err, size_t errlen)
{
    struct folder f;
    if (begin(ix, err, errlen) < 0)
        return -1;
    int rc = need_folder(ix, key, &f, err, errlen);
    if (rc == 0) {
        *first_recent = (uint32_t)f.recent_mark;
        if (f.recent_mark != f.uidnext) {
            f.recent_mark = f.uidnext;
            f.dirty = true;
        }
        rc = folder_save(ix, &f, err, errlen);
    }
    if (rc == 0)
        rc = commit(ix, err, errlen);
    if (rc < 0) {
        int saved = errno;
        rollback(ix);
        errno = saved;
    }
    return rc;
}

int mailindex_claim_recent(struct mailindex *ix, const char *folder, uint32_t *first_recent,
                           char *err, size_t errlen)
{
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = claim_locked(ix, folder_key(folder), first_recent, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

/* Replaces out with column col of the current row (NULL: empty). */
static int column_to_buf(sqlite3_stmt *s, int col, struct buf *out)
{
    const void *p = sqlite3_column_blob(s, col);
    int len = sqlite3_column_bytes(s, col);
    buf_reset(out);
    return len > 0 && p ? buf_append(out, p, (size_t)len) : 0;
}

static int get_cache_locked(struct mailindex *ix, const char *key, uint32_t uid,
                            struct buf *bufs[3], bool *found, char *err, size_t errlen)
{
    struct folder f;
    if (need_folder(ix, key, &f, err, errlen) < 0)
        return -1;
    sqlite3_stmt *s = stmt(ix, ST_CACHE_GET);
    sqlite3_bind_int64(s, 1, f.id);
    sqlite3_bind_int64(s, 2, uid);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            return db_fail(ix, "cache lookup", err, errlen);
        set_err(err, errlen, "no message with UID %u in %s", (unsigned)uid, *key ? key : "INBOX");
        errno = ENOENT;
        return -1;
    }
    int res = 0;
    if (sqlite3_column_type(s, 0) != SQLITE_NULL) {
        for (int i = 0; i < 3 && res == 0; i++)
            res = column_to_buf(s, i, bufs[i]);
        *found = res == 0;
    }
    sqlite3_reset(s);
    if (res < 0) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
    }
    return res;
}

int mailindex_get_cache(struct mailindex *ix, const char *folder, uint32_t uid,
                        struct buf *envelope, struct buf *bodystructure, struct buf *body,
                        bool *found, char *err, size_t errlen)
{
    struct buf *bufs[3] = { envelope, bodystructure, body };
    *found = false;
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = get_cache_locked(ix, folder_key(folder), uid, bufs, found, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

static int put_cache_locked(struct mailindex *ix, const char *key, uint32_t uid,
                            const char *const texts[3], const size_t lens[3],
                            char *err, size_t errlen)
{
    struct folder f;
    if (need_folder(ix, key, &f, err, errlen) < 0)
        return -1;
    sqlite3_stmt *s = stmt(ix, ST_CACHE_PUT);
    sqlite3_bind_int64(s, 1, f.id);
    sqlite3_bind_int64(s, 2, uid);
    /* A non-NULL pointer: an empty text is an empty blob, not NULL. */
    for (int i = 0; i < 3; i++)
        sqlite3_bind_blob64(s, 3 + i, texts[i] ? texts[i] : "", texts[i] ? lens[i] : 0,
                            SQLITE_STATIC);
    if (run(ix, s, "cache update", err, errlen) < 0)
        return -1;
    if (sqlite3_changes(ix->db) == 0) {
        set_err(err, errlen, "no message with UID %u in %s", (unsigned)uid, *key ? key : "INBOX");
        errno = ENOENT;
        return -1;
    }
    return 0;
}

int mailindex_put_cache(struct mailindex *ix, const char *folder, uint32_t uid,
                        const char *envelope, size_t envelope_len,
                        const char *bodystructure, size_t bodystructure_len,
                        const char *body, size_t body_len, char *err, size_t errlen)
{
    const char *const texts[3] = { envelope, bodystructure, body };
    const size_t lens[3] = { envelope_len, bodystructure_len, body_len };
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = put_cache_locked(ix, folder_key(folder), uid, texts, lens, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

/* --- IMAP: folders ----------------------------------------------------------------------- */

int mailindex_folders(struct mailindex *ix, char ***names, size_t *n, char *err, size_t errlen)
{
    if (mailstore_folders(ix->ms, ix->address, names, n) == 0)
        return 0;
    if (errno == ENOENT)
        return 0;       /* no mailbox directory yet: no folders */
    set_err(err, errlen, "cannot list the folders of %s: %s", ix->address, strerror(errno));
    return -1;
}

/* Gives a folder just created on disk a fresh row (replacing a stale one
 * left by a folder deleted behind our back) and a uidlist. A failure is
 * only logged: the next sync adds the row. */
static void index_new_folder(struct mailindex *ix, const char *key)
{
    struct folder f;
    char err[256] = "";
    int found = begin(ix, err, sizeof err) < 0 ? -1 : folder_get(ix, key, false, &f, err, sizeof err);
    int rc = found < 0 ? -1 : 0;
    if (found == 1)
        rc = folder_drop_id(ix, f.id, err, sizeof err);
    if (rc == 0 && folder_get(ix, key, true, &f, err, sizeof err) < 0)
        rc = -1;
    if (rc == 0) {
        uidlist_rewrite(ix, key, &f, NULL, 0);
        rc = folder_save(ix, &f, err, sizeof err);
    }
    if (rc == 0 && commit(ix, err, sizeof err) == 0)
        return;
    rollback(ix);
    log_warn("mailindex: %s: cannot index the new folder %s: %s", ix->path, key, err);
}

int mailindex_folder_create(struct mailindex *ix, const char *folder, char *err, size_t errlen)
{
    if (check_folder_name(folder, err, errlen) < 0)
        return -1;
    if (strcasecmp(folder, "INBOX") == 0) {
        set_err(err, errlen, "INBOX exists");
        errno = EEXIST;
        return -1;
    }
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0 && (rc = mailstore_folder_create(ix->ms, ix->address, folder)) < 0)
        set_err(err, errlen, "cannot create folder %s: %s", folder, strerror(errno));
    if (rc == 0)
        index_new_folder(ix, folder);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

int mailindex_folder_delete(struct mailindex *ix, const char *folder, char *err, size_t errlen)
{
    if (!folder || strcasecmp(folder, "INBOX") == 0) {
        set_err(err, errlen, "INBOX cannot be deleted");
        errno = EPERM;
        return -1;
    }
    if (check_folder_name(folder, err, errlen) < 0)
        return -1;
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0 && (rc = mailstore_folder_delete(ix->ms, ix->address, folder)) < 0)
        set_err(err, errlen, "cannot delete folder %s: %s", folder, strerror(errno));
    int saved = errno;
    char ferr[256] = "";
    if ((rc == 0 || saved == ENOENT) && folder_forget(ix, folder, ferr, sizeof ferr) < 0)
        log_warn("mailindex: %s: cannot forget folder %s: %s", ix->path, folder, ferr);
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

/* "from" itself or a subfolder "from.x". */
static bool is_under(const char *name, const char *from, size_t flen)
{
    return strncmp(name, from, flen) == 0 && (name[flen] == '\0' || name[flen] == '.');
}

struct folder_ref {
    sqlite3_int64 id;
    char *name;
    char *to;           /* its new name, when renamed */
};

static void refs_free(struct folder_ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(refs[i].name);
        free(refs[i].to);
    }
    free(refs);
}

/* Every folder row, with the new names of those a rename moves. */
static int load_refs(struct mailindex *ix, const char *from, const char *to,
                     struct folder_ref **out, size_t *n, char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_FOLDER_LIST);
    struct folder_ref *refs = NULL;
    size_t cap = 0, flen = strlen(from), tlen = strlen(to);
    int rc, bad = 0;
    *n = 0;
    while (!bad && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 1);
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            struct folder_ref *g = realloc(refs, cap * sizeof *g);
            if (!g) {
                bad = 1;
                break;
            }
            refs = g;
        }
        struct folder_ref *r = &refs[(*n)++];
        r->id = sqlite3_column_int64(s, 0);
        r->name = name ? strdup(name) : NULL;
        r->to = NULL;
        if (r->name && is_under(r->name, from, flen)) {
            size_t need = tlen + strlen(r->name + flen) + 1;
            if ((r->to = malloc(need)) != NULL)
                snprintf(r->to, need, "%s%s", to, r->name + flen);
        }
        bad = !r->name || (is_under(r->name, from, flen) && !r->to);
    }
    sqlite3_reset(s);
    *out = refs;
    if (bad) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    return rc == SQLITE_DONE ? 0 : db_fail(ix, "folder list", err, errlen);
}

/* The index follows a folder rename: rows already under a target name
 * (stale: the store checked that no such folder exists) are dropped, then
 * the moved rows take their new names (UIDVALIDITY and UIDs kept). */
static int rename_rows(struct mailindex *ix, const char *from, const char *to,
                       char *err, size_t errlen)
{
    struct folder_ref *refs = NULL;
    size_t n = 0;
    int rc = begin(ix, err, errlen);
    if (rc == 0)
        rc = load_refs(ix, from, to, &refs, &n, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++)
        for (size_t j = 0; rc == 0 && refs[i].to && j < n; j++)
            if (!refs[j].to && strcmp(refs[j].name, refs[i].to) == 0)
                rc = folder_drop_id(ix, refs[j].id, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!refs[i].to)
            continue;
        sqlite3_stmt *s = stmt(ix, ST_FOLDER_RENAME);
        sqlite3_bind_int64(s, 1, refs[i].id);
        sqlite3_bind_text(s, 2, refs[i].to, -1, SQLITE_STATIC);
        rc = run(ix, s, "folder rename", err, errlen);
    }
    if (rc == 0)
        rc = commit(ix, err, errlen);
    if (rc < 0)
        rollback(ix);
    refs_free(refs, n);
    return rc;
}

/* RFC 3501 6.3.5: every INBOX message moves into the new folder `to`. */
static int rename_inbox_locked(struct mailindex *ix, const char *to, char *err, size_t errlen)
{
    struct mailindex_view v;
    if (mailstore_folder_create(ix->ms, ix->address, to) < 0) {
        set_err(err, errlen, "cannot create folder %s: %s", to, strerror(errno));
        return -1;
    }
    index_new_folder(ix, to);
    if (sync_locked(ix, "", &v, err, errlen) < 0)
        return -1;
    uint32_t *uids = malloc((v.n ? v.n : 1) * sizeof *uids);
    uint32_t *dst = malloc((v.n ? v.n : 1) * sizeof *dst), uv;
    long moved = -1;
    if (uids && dst) {
        for (size_t i = 0; i < v.n; i++)
            uids[i] = v.msgs[i].uid;
        moved = transfer_locked(ix, "", uids, v.n, to, &uv, dst, true, err, errlen);
    } else {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
    }
    int saved = errno;
    free(uids);
    free(dst);
    mailindex_view_free(&v);
    errno = saved;
    return moved < 0 ? -1 : 0;
}

static int rename_locked(struct mailindex *ix, const char *from, const char *to,
                         char *err, size_t errlen)
{
    char rerr[256] = "";
    if (mailstore_folder_rename(ix->ms, ix->address, from, to) < 0) {
        set_err(err, errlen, "cannot rename folder %s to %s: %s", from, to, strerror(errno));
        return -1;
    }
    /* The directories moved: a failure here only delays the index, whose
     * next syncs forget the old names and take the new ones in with
     * their dovecot-uidlist (same UIDs). */
    if (rename_rows(ix, from, to, rerr, sizeof rerr) < 0)
        log_warn("mailindex: %s: folder %s renamed to %s, but not in the index: %s", ix->path,
                 from, to, rerr);
    return 0;
}

int mailindex_folder_rename(struct mailindex *ix, const char *from, const char *to,
                            char *err, size_t errlen)
{
    bool inbox = !from || strcasecmp(from, "INBOX") == 0;
    if (check_folder_name(to, err, errlen) < 0 || (!inbox && check_folder_name(from, err, errlen) < 0))
        return -1;
    if (strcasecmp(to, "INBOX") == 0) {
        set_err(err, errlen, "INBOX exists");
        errno = EEXIST;
        return -1;
    }
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = inbox ? rename_inbox_locked(ix, to, err, errlen) : rename_locked(ix, from, to, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

/* --- IMAP: subscriptions ------------------------------------------------------------------ */

int mailindex_subscribe(struct mailindex *ix, const char *name, bool subscribe,
                        char *err, size_t errlen)
{
    size_t len = name ? strlen(name) : 0;
    bool ok = len > 0 && len <= SUBSCRIPTION_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
    if (!ok) {
        set_err(err, errlen, "invalid subscription name");
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0) {
        sqlite3_stmt *s = stmt(ix, subscribe ? ST_SUB_ADD : ST_SUB_DEL);
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        rc = run(ix, s, "subscription", err, errlen);
    }
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    errno = saved;
    return rc;
}

static int subscriptions_locked(struct mailindex *ix, char ***names, size_t *n,
                                char *err, size_t errlen)
{
    sqlite3_stmt *s = stmt(ix, ST_SUB_LIST);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(s, 0);
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **g = realloc(*names, cap * sizeof *g);
            if (!g)
                break;
            *names = g;
        }
        if (!name || !((*names)[*n] = strdup(name)))
            break;
        (*n)++;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc == SQLITE_ROW) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    return db_fail(ix, "subscription list", err, errlen);
}

int mailindex_subscriptions(struct mailindex *ix, char ***names, size_t *n,
                            char *err, size_t errlen)
{
    *names = NULL;
    *n = 0;
    pthread_mutex_lock(&ix->mu);
    int rc = recover(ix, err, errlen);
    if (rc == 0)
        rc = subscriptions_locked(ix, names, n, err, errlen);
    int saved = errno;
    pthread_mutex_unlock(&ix->mu);
    if (rc < 0) {
        mailstore_folders_free(*names, *n);
        *names = NULL;
        *n = 0;
    }
    errno = saved;
    return rc;
}
