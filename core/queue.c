#include "queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "log.h"

#define QUEUE_PATH_MAX 4096
/* A stored body larger than this is refused on reading: the limit keeps a
 * corrupted or planted file from exhausting memory. */
#define QUEUE_BODY_MAX ((off_t)1 << 30)

/* Schema migrations: entry i brings the database from version i to i+1.
 * Append only; never edit a released entry. */
static const char *const migrations[] = {
    /* 1: messages and their recipients. */
    "CREATE TABLE messages(id TEXT PRIMARY KEY NOT NULL, sender TEXT NOT NULL,"
    " created INTEGER NOT NULL, size INTEGER NOT NULL,"
    " delay_notified INTEGER NOT NULL DEFAULT 0, ret INTEGER NOT NULL DEFAULT 0,"
    " envid TEXT NOT NULL DEFAULT '', is_bounce INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX messages_created ON messages(created);"
    "CREATE TABLE rcpts(id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
    " address TEXT NOT NULL, domain TEXT NOT NULL, state INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, next_attempt INTEGER NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '', notify INTEGER NOT NULL DEFAULT 0,"
    " orcpt TEXT NOT NULL DEFAULT '', UNIQUE(id, address));"
    "CREATE INDEX rcpts_due ON rcpts(state, next_attempt);",
    /* 2: held messages (queue_new.held), never due until released. */
    "ALTER TABLE messages ADD COLUMN held INTEGER NOT NULL DEFAULT 0;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

#define MSG_COLUMNS "id, sender, created, size, delay_notified, ret, envid, is_bounce, held"
/* A held recipient's next_attempt: never due, and still a date that
 * `setup queue list` can print (9999-12-31T23:59:59Z). */
#define HELD_NEXT_ATTEMPT ((int64_t)253402300799)
#define HELD_REASON "held: its submission is not complete yet"

#define RCPT_COLUMNS "address, domain, state, attempts, next_attempt, last_error, notify, orcpt"

struct queue {
    sqlite3 *db;
    pthread_mutex_t lock;     /* serializes every call on the handle */
    char dir[QUEUE_PATH_MAX]; /* STATE_DIR/queue */
    int dirfd;
    int lockfd;               /* the daemon's flock on queue/.lock, -1 for other handles */
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static char *dup_text(sqlite3_stmt *st, int col)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    return strdup(s ? s : "");
}

static void lower_domain_of(const char *address, char *out, size_t outlen)
{
    const char *at = strrchr(address, '@');
    const char *d = at ? at + 1 : "";
    size_t i = 0;
    for (; d[i] && i + 1 < outlen; i++)
        out[i] = (d[i] >= 'A' && d[i] <= 'Z') ? (char)(d[i] - 'A' + 'a') : d[i];
    out[i] = '\0';
}

static bool valid_id(const char *id)
{
    if (!id || strlen(id) != QUEUE_ID_LEN)
        return false;
    for (size_t i = 0; i < QUEUE_ID_LEN; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

static int new_id(char *id)
{
    unsigned char r[QUEUE_ID_LEN / 2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        return -1;
    for (size_t i = 0; i < sizeof r; i++)
        snprintf(id + 2 * i, 3, "%02x", r[i]);
    return 0;
}

static void db_err(struct queue *q, const char *what, char *err, size_t errlen)
{
    log_error("queue: %s: %s", what, sqlite3_errmsg(q->db));
    if (err && errlen)
        snprintf(err, errlen, "queue database error (%s): %s", what, sqlite3_errmsg(q->db));
}

static sqlite3_stmt *prep(struct queue *q, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) {
        log_error("queue: %s: %s", sql, sqlite3_errmsg(q->db));
        return NULL;
    }
    return st;
}

static int exec(struct queue *q, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(q->db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    log_error("queue: %s: %s", sql, msg ? msg : sqlite3_errmsg(q->db));
    sqlite3_free(msg);
    return -1;
}

static void rollback(struct queue *q)
{
    if (!sqlite3_get_autocommit(q->db))
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* Freeing                                                              */

void queue_msg_free(struct queue_msg *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nrcpts; i++) {
        free(m->rcpts[i].address);
        free(m->rcpts[i].domain);
        free(m->rcpts[i].last_error);
        free(m->rcpts[i].orcpt);
    }
    free(m->rcpts);
    free(m->sender);
    free(m->envid);
    memset(m, 0, sizeof *m);
}

void queue_msgs_free(struct queue_msg *m, size_t n)
{
    if (!m)
        return;
    for (size_t i = 0; i < n; i++)
        queue_msg_free(&m[i]);
    free(m);
}

/* ------------------------------------------------------------------ */
/* Reading records (the caller holds q->lock)                           */

static int read_msg_row(sqlite3_stmt *st, struct queue_msg *m)
{
    memset(m, 0, sizeof *m);
    const char *id = (const char *)sqlite3_column_text(st, 0);
    snprintf(m->id, sizeof m->id, "%s", id ? id : "");
    m->sender = dup_text(st, 1);
    m->created = (time_t)sqlite3_column_int64(st, 2);
    m->size = (uint64_t)sqlite3_column_int64(st, 3);
    m->delay_notified = sqlite3_column_int(st, 4) != 0;
    m->ret = sqlite3_column_int(st, 5);
    m->envid = dup_text(st, 6);
    m->is_bounce = sqlite3_column_int(st, 7) != 0;
    m->held = sqlite3_column_int(st, 8) != 0;
    return m->sender && m->envid ? 0 : -1;
}

static int read_rcpt_row(sqlite3_stmt *st, struct queue_rcpt *r)
{
    r->address = dup_text(st, 0);
    r->domain = dup_text(st, 1);
    r->state = (enum queue_rcpt_state)sqlite3_column_int(st, 2);
    r->attempts = (unsigned)sqlite3_column_int(st, 3);
    r->next_attempt = (time_t)sqlite3_column_int64(st, 4);
    r->last_error = dup_text(st, 5);
    r->notify = (unsigned)sqlite3_column_int(st, 6);
    r->orcpt = dup_text(st, 7);
    return r->address && r->domain && r->last_error && r->orcpt ? 0 : -1;
}

static int load_rcpts(struct queue *q, struct queue_msg *m)
{
    sqlite3_stmt *st = prep(q, "SELECT " RCPT_COLUMNS " FROM rcpts WHERE id = ?1 ORDER BY rowid");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
    int rc, ret = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct queue_rcpt *r = realloc(m->rcpts, (m->nrcpts + 1) * sizeof *r);
        if (!r) {
            ret = -1;
            break;
        }
        m->rcpts = r;
        memset(&r[m->nrcpts], 0, sizeof *r);
        if (read_rcpt_row(st, &r[m->nrcpts++]) < 0) {
            ret = -1;
            break;
        }
    }
    if (ret == 0 && rc != SQLITE_DONE) {
        log_error("queue: reading recipients of %s: %s", m->id, sqlite3_errmsg(q->db));
        ret = -1;
    }
    sqlite3_finalize(st);
    return ret;
}

/* Runs a message query (bound with p1 as int64 when has_p1) and loads each
 * message with its recipients. Returns the count or -1. */
static long load_msgs(struct queue *q, const char *sql, bool has_p1, int64_t p1, int64_t limit,
                      struct queue_msg **out)
{
    *out = NULL;
    sqlite3_stmt *st = prep(q, sql);
    if (!st)
        return -1;
    if (has_p1)
        sqlite3_bind_int64(st, 1, p1);
    sqlite3_bind_int64(st, 2, limit);
    struct queue_msg *v = NULL;
    size_t n = 0;
    int rc;
    bool failed = false;
    while (!failed && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct queue_msg *nv = realloc(v, (n + 1) * sizeof *nv);
        if (!nv) {
            failed = true;
            break;
        }
        v = nv;
        failed = read_msg_row(st, &v[n]) < 0;
        n++;
    }
    if (!failed && rc != SQLITE_DONE) {
        log_error("queue: %s: %s", sql, sqlite3_errmsg(q->db));
        failed = true;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n && !failed; i++)
        failed = load_rcpts(q, &v[i]) < 0;
    if (failed) {
        queue_msgs_free(v, n);
        return -1;
    }
    *out = v;
    return (long)n;
}

/* ------------------------------------------------------------------ */
/* Body files                                                           */

static int write_all(int fd, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            p += w;
            left -= (size_t)w;
        }
    }
    return 0;
}

/* Writes <id>.tmp, fsyncs it, renames it to <id> and fsyncs the
 * directory: when this returns 0 the body survives a crash. */
static int write_body(struct queue *q, const char *id, const struct iovec *iov, int iovcnt,
                      char *err, size_t errlen)
{
    char tmp[QUEUE_ID_LEN + 8], path[QUEUE_ID_LEN + 1];
    snprintf(tmp, sizeof tmp, "%s.tmp", id);
    snprintf(path, sizeof path, "%s", id);
    int fd = openat(q->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create queue file %s/%s: %s", q->dir, tmp, strerror(errno));
        return -1;
    }
    int rc = write_all(fd, iov, iovcnt) == 0 && fsync(fd) == 0 ? 0 : -1;
    int saved = errno;
    if (close(fd) < 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && renameat(q->dirfd, tmp, q->dirfd, path) < 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && fsync(q->dirfd) < 0) {
        snprintf(err, errlen, "cannot fsync %s: %s", q->dir, strerror(errno));
        unlinkat(q->dirfd, path, 0);
        return -1;
    }
    if (rc < 0) {
        snprintf(err, errlen, "cannot write queue file %s/%s: %s", q->dir, tmp, strerror(saved));
        unlinkat(q->dirfd, tmp, 0);
    }
    return rc;
}

static int read_fd(int fd, off_t size, struct buf *out)
{
    buf_reset(out);
    if (buf_reserve(out, (size_t)size + 1) < 0)
        return -1;
    for (;;) {
        if (out->cap - out->len < 4096 && buf_reserve(out, 65536) < 0)
            return -1;
        ssize_t r = read(fd, out->data + out->len, out->cap - out->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return 0;
        out->len += (size_t)r;
        if ((off_t)out->len > QUEUE_BODY_MAX) {
            errno = EFBIG;
            return -1;
        }
    }
}

int queue_read_body(struct queue *q, const char *id, struct buf *out, char *err, size_t errlen)
{
    if (!valid_id(id)) {
        snprintf(err, errlen, "invalid queue id");
        errno = ENOENT;
        return -1;
    }
    int fd = openat(q->dirfd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    int rc = -1;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        if (st.st_size > QUEUE_BODY_MAX)
            errno = EFBIG;
        else
            rc = read_fd(fd, st.st_size, out);
    }
    int saved = errno;
    if (rc < 0)
        snprintf(err, errlen, "cannot read queue file %s/%s: %s", q->dir, id, strerror(saved));
    if (fd >= 0)
        close(fd);
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Opening                                                              */

static int exec_open(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    return db_exec(db, "queue.db", sql, err, errlen);
}

static int configure(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 5000);
    if (db_set_wal(db, "queue.db", err, errlen) < 0)
        return -1;
    /* FULL: a message acknowledged with 250 must survive a power loss. */
    if (exec_open(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;", err, errlen) < 0)
        return -1;
    return db_migrate(db, "queue.db", migrations, SCHEMA_VERSION, err, errlen);
}

static int make_dirs(const char *state_dir, char *qdir, size_t qlen, char *dbpath, size_t dblen,
                     char *err, size_t errlen)
{
    int n1 = snprintf(qdir, qlen, "%s/queue", state_dir);
    int n2 = snprintf(dbpath, dblen, "%s/queue.db", state_dir);
    if (n1 < 0 || (size_t)n1 >= qlen || n2 < 0 || (size_t)n2 >= dblen) {
        snprintf(err, errlen, "STATE_DIR: invalid path");
        return -1;
    }
    if ((mkdir(state_dir, 0750) < 0 && errno != EEXIST) || (mkdir(qdir, 0700) < 0 && errno != EEXIST)) {
        snprintf(err, errlen, "cannot create %s: %s", qdir, strerror(errno));
        return -1;
    }
    int fd = open(dbpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", dbpath, strerror(errno));
        return -1;
    }
    close(fd);
    return 0;
}

/* Whether a record exists for id (1), not (0), or error (-1). */
static int record_exists(struct queue *q, const char *id)
{
    sqlite3_stmt *st = prep(q, "SELECT 1 FROM messages WHERE id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Removes files in queue/ that belong to no record: bodies of a crash
 * between the rename and the commit, and temp files. */
static void remove_orphan_files(struct queue *q)
{
    int fd = dup(q->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        log_error("queue: cannot list %s: %s", q->dir, strerror(errno));
        return;
    }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (valid_id(e->d_name) && record_exists(q, e->d_name) != 0)
            continue;
        if (unlinkat(q->dirfd, e->d_name, 0) == 0)
            log_warn("queue: removed %s/%s: no queue record", q->dir, e->d_name);
        else
            log_error("queue: cannot remove %s/%s: %s", q->dir, e->d_name, strerror(errno));
    }
    closedir(d);
}

/* Removes records whose body file is missing: they could never be sent. */
static void remove_orphan_records(struct queue *q)
{
    sqlite3_stmt *st = prep(q, "SELECT id FROM messages");
    if (!st)
        return;
    char (*gone)[QUEUE_ID_LEN + 1] = NULL;
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        struct stat sb;
        if (id && valid_id(id) && fstatat(q->dirfd, id, &sb, AT_SYMLINK_NOFOLLOW) == 0)
            continue;
        void *ng = realloc(gone, (n + 1) * sizeof *gone);
        if (!ng)
            break;
        gone = ng;
        snprintf(gone[n++], sizeof gone[0], "%s", id ? id : "");
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *del = prep(q, "DELETE FROM messages WHERE id = ?1");
        if (!del)
            break;
        sqlite3_bind_text(del, 1, gone[i], -1, SQLITE_STATIC);
        if (sqlite3_step(del) == SQLITE_DONE)
            log_error("queue: removed the record of %s: its message file is missing", gone[i]);
        else
            log_error("queue: cannot remove the record of %s: %s", gone[i], sqlite3_errmsg(q->db));
        sqlite3_finalize(del);
    }
    free(gone);
}

/* Held records left by an earlier run: their submission never got its
 * reply (the daemon stopped in between), so the client still has the
 * message and will send it again. The bodies go as orphan files next. */
static void remove_stale_held(struct queue *q)
{
    sqlite3_stmt *st = prep(q, "DELETE FROM messages WHERE held = 1");
    if (!st)
        return;
    if (sqlite3_step(st) != SQLITE_DONE)
        log_error("queue: cannot remove held leftovers: %s", sqlite3_errmsg(q->db));
    else if (sqlite3_changes(q->db) > 0)
        log_warn("queue: removed %d held messages of an interrupted submission",
                 sqlite3_changes(q->db));
    sqlite3_finalize(st);
}

/* How long the daemon waits for queue/.lock, polling: only another daemon
 * on the same STATE_DIR keeps it longer (setup never takes it). */
#define LOCK_WAIT_MS 10000
#define LOCK_POLL_MS 100

static int take_daemon_lock(struct queue *q, char *err, size_t errlen)
{
    q->lockfd = openat(q->dirfd, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (q->lockfd < 0) {
        snprintf(err, errlen, "cannot open %s/.lock: %s", q->dir, strerror(errno));
        return -1;
    }
    for (int waited = 0;; waited += LOCK_POLL_MS) {
        if (flock(q->lockfd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= LOCK_WAIT_MS)
            break;
        usleep(LOCK_POLL_MS * 1000);
    }
    snprintf(err, errlen, "cannot lock %s/.lock: %s (is another posthornd using this STATE_DIR?)",
             q->dir, errno == EWOULDBLOCK ? "held by another process" : strerror(errno));
    close(q->lockfd);
    q->lockfd = -1;
    return -1;
}

static struct queue *open_handle(const char *state_dir, char *err, size_t errlen)
{
    if (!state_dir || !*state_dir) {
        snprintf(err, errlen, "STATE_DIR: invalid path");
        return NULL;
    }
    struct queue *q = calloc(1, sizeof *q);
    char dbpath[QUEUE_PATH_MAX];
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->dirfd = q->lockfd = -1;
    if (make_dirs(state_dir, q->dir, sizeof q->dir, dbpath, sizeof dbpath, err, errlen) < 0)
        goto fail;
    q->dirfd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (q->dirfd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", q->dir, strerror(errno));
        goto fail;
    }
    if (sqlite3_open_v2(dbpath, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", dbpath,
                 q->db ? sqlite3_errmsg(q->db) : "out of memory");
        goto fail;
    }
    if (configure(q->db, err, errlen) < 0)
        goto fail;
    pthread_mutex_init(&q->lock, NULL);
    return q;
fail:
    sqlite3_close(q->db);
    if (q->dirfd >= 0)
        close(q->dirfd);
    free(q);
    return NULL;
}

struct queue *queue_open(const char *state_dir, char *err, size_t errlen)
{
    return open_handle(state_dir, err, errlen);
}

/* Cleaning up is only safe when no other process can be between writing a
 * body and committing its record, or between queue_add(held) and
 * queue_release: only the daemon writes bodies and holds entries, so only
 * the daemon cleans, at start, under the lock it keeps for its lifetime. */
struct queue *queue_open_daemon(const char *state_dir, char *err, size_t errlen)
{
    struct queue *q = open_handle(state_dir, err, errlen);
    if (!q)
        return NULL;
    if (take_daemon_lock(q, err, errlen) < 0) {
        queue_close(q);
        return NULL;
    }
    remove_stale_held(q);
    remove_orphan_files(q);
    remove_orphan_records(q);
    return q;
}

void queue_close(struct queue *q)
{
    if (!q)
        return;
    if (sqlite3_close(q->db) != SQLITE_OK)
        log_error("queue: close: %s", sqlite3_errmsg(q->db));
    if (q->lockfd >= 0)
        close(q->lockfd);
    close(q->dirfd);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

/* ------------------------------------------------------------------ */
/* Adding                                                               */

static int insert_msg(struct queue *q, const char *id, const struct queue_new *m, uint64_t size,
                      time_t now)
{
    sqlite3_stmt *st = prep(q, "INSERT INTO messages(" MSG_COLUMNS ")"
                               " VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, m->sender ? m->sender : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (int64_t)now);
    sqlite3_bind_int64(st, 4, (int64_t)size);
    sqlite3_bind_int(st, 5, m->ret);
    sqlite3_bind_text(st, 6, m->envid ? m->envid : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, m->is_bounce ? 1 : 0);
    sqlite3_bind_int(st, 8, m->held ? 1 : 0);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int insert_rcpts(struct queue *q, const char *id, const struct queue_new *m, time_t now)
{
    sqlite3_stmt *st = prep(q, "INSERT OR IGNORE INTO rcpts(id, " RCPT_COLUMNS ")"
                               " VALUES (?1, ?2, ?3, 0, 0, ?4, ?7, ?5, ?6)");
    if (!st)
        return -1;
    int rc = SQLITE_DONE;
    for (size_t i = 0; i < m->nrcpts && rc == SQLITE_DONE; i++) {
        char domain[256];
        lower_domain_of(m->rcpts[i], domain, sizeof domain);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, m->rcpts[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, domain, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 4, m->held ? HELD_NEXT_ATTEMPT : (int64_t)now);
        sqlite3_bind_text(st, 7, m->held ? HELD_REASON : "", -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 5, m->notify ? (int)m->notify[i] : 0);
        sqlite3_bind_text(st, 6, m->orcpt && m->orcpt[i] ? m->orcpt[i] : "", -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static uint64_t iov_size(const struct iovec *iov, int iovcnt)
{
    uint64_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

int queue_add(struct queue *q, const struct queue_new *m, const struct iovec *iov, int iovcnt,
              char *id, char *err, size_t errlen)
{
    if (!m || m->nrcpts == 0) {
        snprintf(err, errlen, "no recipients");
        return -1;
    }
    if (new_id(id) < 0) {
        snprintf(err, errlen, "cannot make a queue id: %s", strerror(errno));
        return -1;
    }
    if (write_body(q, id, iov, iovcnt, err, errlen) < 0)
        return -1;
    time_t now = time(NULL);
    pthread_mutex_lock(&q->lock);
    int rc = -1;
    if (exec(q, "BEGIN IMMEDIATE") == 0 && insert_msg(q, id, m, iov_size(iov, iovcnt), now) == 0 &&
        insert_rcpts(q, id, m, now) == 0 && exec(q, "COMMIT") == 0)
        rc = 0;
    if (rc < 0) {
        db_err(q, "add", err, errlen);
        rollback(q);
    }
    pthread_mutex_unlock(&q->lock);
    if (rc < 0 && unlinkat(q->dirfd, id, 0) < 0)
        log_error("queue: cannot remove %s/%s: %s", q->dir, id, strerror(errno));
    return rc;
}

/* ------------------------------------------------------------------ */
/* Queries                                                              */

long queue_due(struct queue *q, time_t now, size_t max, struct queue_msg **out)
{
    pthread_mutex_lock(&q->lock);
    long n = -1;
    if (exec(q, "BEGIN") == 0) {
        n = load_msgs(q, "SELECT " MSG_COLUMNS " FROM messages m WHERE EXISTS"
                         " (SELECT 1 FROM rcpts r WHERE r.id = m.id AND r.state = 0"
                         " AND r.next_attempt <= ?1) AND m.held = 0"
                         " ORDER BY created, rowid LIMIT ?2",
                      true, (int64_t)now, max > INT64_MAX ? INT64_MAX : (int64_t)max, out);
        rollback(q);
    }
    pthread_mutex_unlock(&q->lock);
    return n;
}

long queue_list(struct queue *q, struct queue_msg **out)
{
    pthread_mutex_lock(&q->lock);
    long n = -1;
    if (exec(q, "BEGIN") == 0) {
        n = load_msgs(q, "SELECT " MSG_COLUMNS " FROM messages ORDER BY created, rowid LIMIT ?2",
                      false, 0, -1, out);
        rollback(q);
    }
    pthread_mutex_unlock(&q->lock);
    return n;
}

time_t queue_next_due(struct queue *q)
{
    pthread_mutex_lock(&q->lock);
    time_t t = 0;
    sqlite3_stmt *st = prep(q, "SELECT min(r.next_attempt) FROM rcpts r JOIN messages m"
                               " ON m.id = r.id WHERE r.state = 0 AND m.held = 0");
    if (st && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        t = (time_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&q->lock);
    return t;
}

int queue_get(struct queue *q, const char *id, struct queue_msg *out)
{
    memset(out, 0, sizeof *out);
    if (!valid_id(id)) {
        errno = ENOENT;
        return -1;
    }
    pthread_mutex_lock(&q->lock);
    int rc = -1, saved = EIO;
    sqlite3_stmt *st = NULL;
    if (exec(q, "BEGIN") == 0 && (st = prep(q, "SELECT " MSG_COLUMNS " FROM messages WHERE id = ?1"))) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW)
            rc = read_msg_row(st, out) == 0 && load_rcpts(q, out) == 0 ? 0 : -1;
        else if (s == SQLITE_DONE)
            saved = ENOENT;
    }
    sqlite3_finalize(st);
    rollback(q);
    pthread_mutex_unlock(&q->lock);
    if (rc < 0) {
        queue_msg_free(out);
        errno = saved;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Changes                                                              */

int queue_update_rcpt(struct queue *q, const char *id, const char *address,
                      enum queue_rcpt_state state, time_t next_attempt, const char *last_error)
{
    pthread_mutex_lock(&q->lock);
    sqlite3_stmt *st = prep(q, "UPDATE rcpts SET state = ?3, next_attempt = ?4, last_error = ?5,"
                               " attempts = attempts + 1 WHERE id = ?1 AND address = ?2");
    int rc = -1, saved = EIO;
    if (st) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, address, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)state);
        sqlite3_bind_int64(st, 4, (int64_t)next_attempt);
        sqlite3_bind_text(st, 5, last_error ? last_error : "", -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            db_err(q, "update recipient", NULL, 0);
        else if (sqlite3_changes(q->db) > 0)
            rc = 0;
        else
            saved = ENOENT;
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&q->lock);
    if (rc < 0)
        errno = saved;
    return rc;
}

/* Runs a one-parameter change; returns the rows changed or -1. */
static long change(struct queue *q, const char *sql, const char *p1, int64_t p2)
{
    pthread_mutex_lock(&q->lock);
    long n = -1;
    sqlite3_stmt *st = prep(q, sql);
    if (st) {
        if (p1)
            sqlite3_bind_text(st, 1, p1, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, p2);
        if (sqlite3_step(st) == SQLITE_DONE)
            n = sqlite3_changes(q->db);
        else
            db_err(q, sql, NULL, 0);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&q->lock);
    return n;
}

int queue_set_delay_notified(struct queue *q, const char *id)
{
    long n = change(q, "UPDATE messages SET delay_notified = 1 WHERE id = ?1", id, 0);
    if (n == 0)
        errno = ENOENT;
    return n > 0 ? 0 : -1;
}

int queue_remove(struct queue *q, const char *id)
{
    if (!valid_id(id)) {
        errno = ENOENT;
        return -1;
    }
    /* The record goes first: a crash before the unlink leaves a body
     * without record, which the next queue_open removes. */
    long n = change(q, "DELETE FROM messages WHERE id = ?1", id, 0);
    if (n <= 0) {
        errno = n == 0 ? ENOENT : EIO;
        return -1;
    }
    if (unlinkat(q->dirfd, id, 0) < 0)
        log_error("queue: cannot remove %s/%s: %s", q->dir, id, strerror(errno));
    return 0;
}

long queue_flush(struct queue *q, const char *id)
{
    if (id && !valid_id(id))
        return 0;
    time_t now = time(NULL);
    /* A held message is not the flush's to release (queue_release is). */
    return id ? change(q, "UPDATE rcpts SET next_attempt = ?2 WHERE state = 0 AND id = ?1"
                          " AND id IN (SELECT id FROM messages WHERE held = 0)", id, now)
              : change(q, "UPDATE rcpts SET next_attempt = ?2 WHERE state = 0"
                          " AND id IN (SELECT id FROM messages WHERE held = 0)", NULL, now);
}

/* Runs one statement bound with (id, now); returns the rows changed or -1. */
static long step_id_now(struct queue *q, const char *sql, const char *id, time_t now)
{
    sqlite3_stmt *st = prep(q, sql);
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)now);
    long n = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(q->db) : -1;
    sqlite3_finalize(st);
    return n;
}

int queue_release(struct queue *q, const char *id)
{
    if (!valid_id(id)) {
        errno = ENOENT;
        return -1;
    }
    time_t now = time(NULL);
    pthread_mutex_lock(&q->lock);
    long n = -1;
    if (exec(q, "BEGIN IMMEDIATE") == 0 &&
        (n = step_id_now(q, "UPDATE messages SET held = 0 WHERE id = ?1", id, now)) > 0 &&
        step_id_now(q, "UPDATE rcpts SET next_attempt = ?2, last_error = ''"
                       " WHERE id = ?1 AND state = 0", id, now) >= 0 &&
        exec(q, "COMMIT") == 0) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    if (n != 0)
        db_err(q, "release", NULL, 0);
    rollback(q);
    pthread_mutex_unlock(&q->lock);
    errno = n == 0 ? ENOENT : EIO;
    return -1;
}

time_t queue_retry_delay(unsigned attempts)
{
    static const time_t schedule[] = { 0, 60, 300, 900, 1800 };
    if (attempts < sizeof schedule / sizeof schedule[0])
        return schedule[attempts];
    return 3600;
}
