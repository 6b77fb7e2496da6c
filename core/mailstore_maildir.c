/* mailstore_maildir: the Maildir++ backend of the mail store.
 *
 * Every path is relative to a directory fd on MAIL_DIR (openat & co.), so a
 * delivery resolves only the few components below the root. Names coming
 * from callers (addresses, folders, message names) are validated before
 * they touch a path: nothing may climb out of MAIL_DIR/<domain>/<local>.
 *
 * Delivery follows the Maildir protocol: write tmp/<unique>, fsync, rename
 * into new/ (or cur/ with flags), fsync the directory. A missing maildir is
 * only created after the first open of tmp/ fails with ENOENT, so the usual
 * delivery costs one openat, writev, fsync, close and renameat per copy,
 * plus one directory fsync per destination directory, shared with the
 * deliveries into that directory running at the same time (group commit). */
#include "mailstore_backend.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define TMP_MAX_AGE   (36 * 3600)   /* tmp/ files older than this are debris */
#define HOST_MAX      100           /* sanitized hostname in unique names */
#define FLAGS_MAX     52            /* A-Z and a-z, each at most once */
#define REL_MAX       1024          /* "<domain>/<local>/.<folder>" */
#define RM_DEPTH_MAX  16            /* a maildir is 3 levels deep */
#define DEL_PREFIX    ".posthorn-del."  /* hidden names of trees being removed */
#define FOLDER_DEL_PREFIX "." DEL_PREFIX    /* in a mailbox: not a valid folder */

/* Group commit of directory fsyncs: concurrent deliveries into the same
 * directory share one fsync that started after all their renames, instead
 * of each issuing its own. A slot serves one directory at a time; a
 * delivery whose slot is busy with another directory syncs on its own. */
#define DSYNC_SLOTS 64

struct dsync {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char dir[REL_MAX + 8];      /* "<box>/new" */
    unsigned users;             /* threads inside for `dir` */
    uint64_t started, done;     /* numbers of syncs started / last finished */
    uint64_t failed;            /* number of the last failed sync, 0 = none */
    int failed_errno;
    bool running;
};

struct maildir {
    int rootfd;
    char *root;
    char host[HOST_MAX + 1];
    pid_t pid;
    struct timespec started;    /* with pid: tells us from an earlier process */
    struct dsync dsync[DSYNC_SLOTS];
};

/* The only mutable state shared between threads. */
static atomic_ullong unique_counter;

/* --- Name validation --------------------------------------------------- */

static bool bad_byte(unsigned char c)
{
    return c < 0x20 || c == 0x7f || c == '/';
}

/* A domain or local part used as one directory name. The leading-dot rule
 * also excludes "." and "..". */
static bool valid_part(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX || s[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (bad_byte((unsigned char)s[i]) || s[i] == '@')
            return false;
    return true;
}

/* "Archive.2024": '.'-separated, no empty component, fits ".<name>". */
static bool valid_folder(const char *f)
{
    size_t len = strlen(f);
    if (len == 0 || len >= NAME_MAX || f[0] == '.' || f[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (bad_byte((unsigned char)f[i]))
            return false;
        if (f[i] == '.' && f[i + 1] == '.')
            return false;
    }
    return true;
}

/* A message base name as returned by list(): one file name, no info. */
static bool valid_msg_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > NAME_MAX - 3 - FLAGS_MAX || n[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (bad_byte((unsigned char)n[i]) || n[i] == ':')
            return false;
    return true;
}

/* Writes "<domain>/<local>" into out; *domlen gets the domain's length. */
static int mailbox_rel(const char *address, char *out, size_t outlen, size_t *domlen)
{
    const char *at = address ? strchr(address, '@') : NULL;
    if (!at || strchr(at + 1, '@')) {
        errno = EINVAL;
        return -1;
    }
    size_t loclen = (size_t)(at - address);
    const char *dom = at + 1;
    size_t dlen = strlen(dom);
    if (!valid_part(address, loclen) || !valid_part(dom, dlen)) {
        errno = EINVAL;
        return -1;
    }
    int n = snprintf(out, outlen, "%s/%.*s", dom, (int)loclen, address);
    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (domlen)
        *domlen = dlen;
    return 0;
}

static bool is_inbox(const char *folder)
{
    return !folder || strcasecmp(folder, "INBOX") == 0;
}

/* Writes the directory of a folder ("<domain>/<local>" for INBOX,
 * "<domain>/<local>/.<folder>" otherwise) into out. */
static int box_rel(const char *address, const char *folder, char *out, size_t outlen)
{
    if (mailbox_rel(address, out, outlen, NULL) < 0)
        return -1;
    if (is_inbox(folder))
        return 0;
    if (!valid_folder(folder)) {
        errno = EINVAL;
        return -1;
    }
    size_t used = strlen(out);
    int n = snprintf(out + used, outlen - used, "/.%s", folder);
    if (n < 0 || (size_t)n >= outlen - used) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* Sorts and deduplicates Maildir info flags into out (FLAGS_MAX + 1). */
static int norm_flags(const char *in, char *out)
{
    bool seen[128] = { false };
    for (const char *p = in ? in : ""; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) {
            errno = EINVAL;
            return -1;
        }
        seen[c] = true;
    }
    size_t n = 0;
    for (int c = 'A'; c <= 'z'; c++)
        if (seen[c])
            out[n++] = (char)c;
    out[n] = '\0';
    return 0;
}

static int join(char *out, size_t outlen, const char *a, const char *b)
{
    int n = snprintf(out, outlen, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* --- Unique names -------------------------------------------------------- */

/* Maildir convention: '/' and ':' escaped as octal; ',' too since ",S="
 * follows the hostname. Anything unprintable becomes '_'. */
static void sanitize_host(const char *in, char *out)
{
    size_t n = 0;
    for (const char *p = in && *in ? in : "localhost"; *p; p++) {
        const char *esc = *p == '/' ? "\\057" : *p == ':' ? "\\072" : *p == ',' ? "\\054" : NULL;
        size_t need = esc ? 4 : 1;
        if (n + need > HOST_MAX)
            break;
        if (esc) {
            memcpy(out + n, esc, 4);
        } else {
            unsigned char c = (unsigned char)*p;
            out[n] = (c <= 0x20 || c >= 0x7f) ? '_' : (char)c;
        }
        n += need;
    }
    out[n] = '\0';
}

static void unique_name(const struct maildir *md, uint64_t size, char *out, size_t outlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long q = atomic_fetch_add(&unique_counter, 1);
    uint32_t rnd = 0;
    /* Uniqueness within the process comes from the counter, across
     * processes from pid and time; the random part guards against pid reuse
     * with a clock step back, so a failed getrandom is not fatal. */
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)(q * 2654435761u) ^ (uint32_t)ts.tv_nsec;
    snprintf(out, outlen, "%lld.M%06ldP%ldQ%lluR%08x.%s,S=%llu", (long long)ts.tv_sec,
             ts.tv_nsec / 1000, (long)md->pid, q, (unsigned)rnd, md->host,
             (unsigned long long)size);
}

/* Digits only (strtoull would accept spaces and signs). */
static bool take_num(const char **p, int base, unsigned long long *out, int *ndigits)
{
    unsigned long long v = 0;
    int n = 0;
    for (;; n++) {
        char c = (*p)[n];
        int d = c >= '0' && c <= '9' ? c - '0'
              : base == 16 && c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            break;
        if (n >= 19)
            return false;
        v = v * (unsigned)base + (unsigned)d;
    }
    if (n == 0)
        return false;
    *p += n;
    *out = v;
    if (ndigits)
        *ndigits = n;
    return true;
}

struct parsed_name {
    unsigned long long sec, usec, pid;
    const char *host;
    size_t hostlen;
};

/* Parses "<sec>.M<usec>P<pid>Q<counter>R<8 hex>.<host>[,S=<size>]". */
static bool parse_unique(const char *name, struct parsed_name *pn)
{
    const char *p = name;
    unsigned long long q, r;
    int nhex;
    if (!take_num(&p, 10, &pn->sec, NULL) || strncmp(p, ".M", 2) != 0)
        return false;
    p += 2;
    if (!take_num(&p, 10, &pn->usec, NULL) || *p++ != 'P')
        return false;
    if (!take_num(&p, 10, &pn->pid, NULL) || *p++ != 'Q')
        return false;
    if (!take_num(&p, 10, &q, NULL) || *p++ != 'R')
        return false;
    if (!take_num(&p, 16, &r, &nhex) || nhex != 8 || *p++ != '.')
        return false;
    pn->host = p;
    const char *end = strpbrk(p, ",:");
    pn->hostlen = end ? (size_t)(end - p) : strlen(p);
    return true;
}

/* --- Directories ----------------------------------------------------------- */

static int fsync_dir(int dirfd, const char *rel)
{
    int fd = openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

/* mkdir that tolerates a concurrent creator; *created tells who won. */
static int make_dir(int dirfd, const char *rel, bool *created)
{
    if (mkdirat(dirfd, rel, 0700) == 0) {
        *created = true;
        return 0;
    }
    *created = false;
    return errno == EEXIST ? 0 : -1;
}

/* Creates rel and, when it is new, makes its entry durable in parent. */
static int make_dir_durable(int rootfd, const char *rel, const char *parent)
{
    bool created;
    if (make_dir(rootfd, rel, &created) < 0)
        return -1;
    return created ? fsync_dir(rootfd, parent) : 0;
}

/* cur/new/tmp of a maildir; *created when any was new. */
static int make_subdirs(int rootfd, const char *box, bool *created, char *failed, size_t flen)
{
    static const char *const subs[] = { "cur", "new", "tmp" };
    *created = false;
    for (size_t i = 0; i < 3; i++) {
        bool c;
        if (join(failed, flen, box, subs[i]) < 0 || make_dir(rootfd, failed, &c) < 0)
            return -1;
        *created |= c;
    }
    return 0;
}

static int make_folder_marker(int rootfd, const char *box, char *failed, size_t flen)
{
    if (join(failed, flen, box, "maildirfolder") < 0)
        return -1;
    int fd = openat(rootfd, failed, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Creates the maildir `box` ("<domain>/<local>[/.<folder>]") with its
 * parents, fsyncing each parent whose entries changed. On failure the
 * offending path (relative) is left in failed. */
static int ensure_box(const struct maildir *md, const char *box, char *failed, size_t flen)
{
    char dom[REL_MAX], mbox[REL_MAX];
    const char *slash = strchr(box, '/');
    const char *folder = slash ? strchr(slash + 1, '/') : NULL;
    if (!slash) {
        errno = EINVAL;
        return -1;
    }
    snprintf(dom, sizeof(dom), "%.*s", (int)(slash - box), box);
    snprintf(mbox, sizeof(mbox), "%.*s", (int)(folder ? (size_t)(folder - box) : strlen(box)), box);
    bool created;

    snprintf(failed, flen, "%s", dom);
    if (make_dir_durable(md->rootfd, dom, ".") < 0)
        return -1;
    snprintf(failed, flen, "%s", mbox);
    if (make_dir_durable(md->rootfd, mbox, dom) < 0)
        return -1;
    if (make_subdirs(md->rootfd, mbox, &created, failed, flen) < 0)
        return -1;
    snprintf(failed, flen, "%s", mbox);
    if (created && fsync_dir(md->rootfd, mbox) < 0)
        return -1;
    if (!folder)
        return 0;
    snprintf(failed, flen, "%s", box);
    if (make_dir_durable(md->rootfd, box, mbox) < 0)
        return -1;
    if (make_subdirs(md->rootfd, box, &created, failed, flen) < 0
        || make_folder_marker(md->rootfd, box, failed, flen) < 0)
        return -1;
    snprintf(failed, flen, "%s", box);
    return fsync_dir(md->rootfd, box);
}

/* Removes dirfd/name and everything below it, never following symlinks. */
static int rm_tree(int dirfd, const char *name, int depth)
{
    if (depth > RM_DEPTH_MAX) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOTDIR || errno == ELOOP)
            return unlinkat(dirfd, name, 0);
        return -1;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        int r = (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN)
                ? rm_tree(fd, e->d_name, depth + 1) : unlinkat(fd, e->d_name, 0);
        if (r < 0)
            rc = -1;
    }
    int saved = errno;
    closedir(d);
    if (rc < 0) {
        errno = saved;
        return -1;
    }
    return unlinkat(dirfd, name, AT_REMOVEDIR);
}

/* Opens a directory below the root without following a final symlink. */
static int open_dir(int dirfd, const char *rel)
{
    return openat(dirfd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* --- Open / close ----------------------------------------------------------- */

static void *md_open(const char *root, const char *hostname, char *err, size_t errlen)
{
    if (!root || !*root) {
        set_err(err, errlen, "mail store: empty MAIL_DIR");
        errno = EINVAL;
        return NULL;
    }
    struct maildir *md = calloc(1, sizeof(*md));
    if (!md || !(md->root = strdup(root))) {
        set_err(err, errlen, "mail store: out of memory");
        free(md);
        errno = ENOMEM;
        return NULL;
    }
    size_t len = strlen(md->root);
    while (len > 1 && md->root[len - 1] == '/')
        md->root[--len] = '\0';
    if (mkdir_p(md->root, 0700) < 0 || (md->rootfd = open(md->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        int saved = errno;
        set_err(err, errlen, "cannot open mail directory %s: %s", md->root, strerror(saved));
        free(md->root);
        free(md);
        errno = saved;
        return NULL;
    }
    for (size_t i = 0; i < DSYNC_SLOTS; i++) {
        pthread_mutex_init(&md->dsync[i].mu, NULL);
        pthread_cond_init(&md->dsync[i].cv, NULL);
    }
    sanitize_host(hostname, md->host);
    md->pid = getpid();
    clock_gettime(CLOCK_REALTIME, &md->started);
    return md;
}

static void md_close(void *be)
{
    struct maildir *md = be;
    for (size_t i = 0; i < DSYNC_SLOTS; i++) {
        pthread_mutex_destroy(&md->dsync[i].mu);
        pthread_cond_destroy(&md->dsync[i].cv);
    }
    close(md->rootfd);
    free(md->root);
    free(md);
}

/* --- Delivery -------------------------------------------------------------- */

enum copy_state { COPY_NONE, COPY_TMP, COPY_FINAL };

struct copy {
    char box[REL_MAX];
    char name[NAME_MAX + 1];
    char flags[FLAGS_MAX + 1];
    bool to_cur;
    time_t mtime;               /* 0: leave the time of writing */
    enum copy_state state;
};

static int write_all(int fd, const struct iovec *iov, int iovcnt)
{
    struct iovec win[64];
    int i = 0;
    size_t off = 0;
    while (i < iovcnt) {
        if (off == iov[i].iov_len) {
            i++;
            off = 0;
            continue;
        }
        win[0].iov_base = (char *)iov[i].iov_base + off;
        win[0].iov_len = iov[i].iov_len - off;
        int n = 1;
        for (; n < 64 && i + n < iovcnt; n++)
            win[n] = iov[i + n];
        ssize_t w = writev(fd, win, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        for (size_t left = (size_t)w; left > 0;) {
            size_t avail = iov[i].iov_len - off;
            if (left < avail) {
                off += left;
                left = 0;
            } else {
                left -= avail;
                i++;
                off = 0;
            }
        }
    }
    return 0;
}

/* Gives an open file its internal date (before the fsync, so that both
 * become durable together). */
static int set_mtime(int fd, time_t mtime)
{
    if (mtime == 0)
        return 0;
    struct timespec ts[2] = { { mtime, 0 }, { mtime, 0 } };
    return futimens(fd, ts);
}

static void copy_path(const struct copy *c, enum copy_state where, char *out, size_t outlen)
{
    if (where == COPY_TMP)
        snprintf(out, outlen, "%s/tmp/%s", c->box, c->name);
    else if (c->to_cur)
        snprintf(out, outlen, "%s/cur/%s:2,%s", c->box, c->name, c->flags);
    else
        snprintf(out, outlen, "%s/new/%s", c->box, c->name);
}

static int prepare_copy(const struct maildir *md, const struct mailstore_target *t,
                        uint64_t size, struct copy *c, char *err, size_t errlen)
{
    if (!t->address || box_rel(t->address, t->folder, c->box, sizeof(c->box)) < 0) {
        set_err(err, errlen, "invalid mailbox %s%s%s", t->address ? t->address : "(null)",
                t->folder ? " folder " : "", t->folder ? t->folder : "");
        errno = EINVAL;
        return -1;
    }
    if (norm_flags(t->flags, c->flags) < 0) {
        set_err(err, errlen, "invalid flags for %s", t->address);
        return -1;
    }
    c->to_cur = t->flags != NULL && c->flags[0] != '\0';
    unique_name(md, size, c->name, sizeof(c->name));
    return 0;
}

static int write_copy(const struct maildir *md, struct copy *c, const struct iovec *iov,
                      int iovcnt, char *err, size_t errlen)
{
    char path[PATH_MAX], failed[PATH_MAX];
    copy_path(c, COPY_TMP, path, sizeof(path));
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    int fd = openat(md->rootfd, path, flags, 0600);
    if (fd < 0 && errno == ENOENT) {
        if (ensure_box(md, c->box, failed, sizeof(failed)) < 0) {
            int saved = errno;
            set_err(err, errlen, "cannot create %s/%s: %s", md->root, failed, strerror(saved));
            errno = saved;
            return -1;
        }
        fd = openat(md->rootfd, path, flags, 0600);
    }
    if (fd >= 0) {
        c->state = COPY_TMP;
        if (write_all(fd, iov, iovcnt) == 0 && set_mtime(fd, c->mtime) == 0 && fsync(fd) == 0) {
            if (close(fd) == 0)
                return 0;
            fd = -1;
        }
    }
    int saved = errno;
    if (fd >= 0)
        close(fd);
    set_err(err, errlen, "cannot write %s/%s: %s", md->root, path, strerror(saved));
    errno = saved;
    return -1;
}

static int commit_copy(const struct maildir *md, struct copy *c, char *err, size_t errlen)
{
    char from[PATH_MAX], to[PATH_MAX];
    copy_path(c, COPY_TMP, from, sizeof(from));
    copy_path(c, COPY_FINAL, to, sizeof(to));
    if (renameat(md->rootfd, from, md->rootfd, to) < 0) {
        int saved = errno;
        set_err(err, errlen, "cannot rename %s/%s to %s: %s", md->root, from, to, strerror(saved));
        errno = saved;
        return -1;
    }
    c->state = COPY_FINAL;
    return 0;
}

static struct dsync *dsync_slot(struct maildir *md, const char *dir)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (const char *p = dir; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &md->dsync[h % DSYNC_SLOTS];
}

/* Waits for (or runs) an fsync of dir that started after the caller's
 * rename. Called with s->mu held and s->dir == dir. */
static int dsync_wait(struct maildir *md, struct dsync *s, const char *dir)
{
    uint64_t target = s->started + 1;
    while (s->done < target) {
        if (s->running) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        uint64_t mine = ++s->started;
        s->running = true;
        pthread_mutex_unlock(&s->mu);
        int rc = fsync_dir(md->rootfd, dir);
        int saved = errno;
        pthread_mutex_lock(&s->mu);
        if (rc < 0) {
            s->failed = mine;
            s->failed_errno = saved;
        }
        s->done = mine;
        s->running = false;
        pthread_cond_broadcast(&s->cv);
    }
    /* Conservative: a failure of any sync at or after ours counts as ours. */
    if (s->failed >= target) {
        errno = s->failed_errno;
        return -1;
    }
    return 0;
}

static int group_fsync_dir(struct maildir *md, const char *dir)
{
    struct dsync *s = dsync_slot(md, dir);
    pthread_mutex_lock(&s->mu);
    if (s->users > 0 && strcmp(s->dir, dir) != 0) {
        pthread_mutex_unlock(&s->mu);
        return fsync_dir(md->rootfd, dir);
    }
    if (s->users++ == 0)
        snprintf(s->dir, sizeof(s->dir), "%s", dir);
    int rc = dsync_wait(md, s, dir);
    int saved = errno;
    s->users--;
    pthread_mutex_unlock(&s->mu);
    errno = saved;
    return rc;
}

/* fsyncs each distinct destination directory once. */
static int sync_dests(struct maildir *md, const struct copy *c, size_t n,
                      char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = c[j].to_cur == c[i].to_cur && strcmp(c[j].box, c[i].box) == 0;
        if (dup)
            continue;
        char dir[REL_MAX + 8];
        snprintf(dir, sizeof(dir), "%s/%s", c[i].box, c[i].to_cur ? "cur" : "new");
        if (group_fsync_dir(md, dir) < 0) {
            int saved = errno;
            set_err(err, errlen, "cannot fsync %s/%s: %s", md->root, dir, strerror(saved));
            errno = saved;
            return -1;
        }
    }
    return 0;
}

static void undo_copies(const struct maildir *md, const struct copy *c, size_t n)
{
    char path[PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        if (c[i].state == COPY_NONE)
            continue;
        copy_path(&c[i], c[i].state, path, sizeof(path));
        if (unlinkat(md->rootfd, path, 0) < 0 && errno != ENOENT)
            log_warn("mailstore: cannot remove %s/%s after failed delivery: %s",
                     md->root, path, strerror(errno));
    }
}

static int total_size(const struct iovec *iov, int iovcnt, uint64_t *size)
{
    if (iovcnt < 0 || (iovcnt > 0 && !iov)) {
        errno = EINVAL;
        return -1;
    }
    uint64_t s = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > UINT64_MAX - s) {
            errno = EOVERFLOW;
            return -1;
        }
        s += iov[i].iov_len;
    }
    *size = s;
    return 0;
}

static int md_deliver(void *be, const struct iovec *iov, int iovcnt,
                      const struct mailstore_target *targets, size_t ntargets,
                      char *err, size_t errlen)
{
    struct maildir *md = be;
    uint64_t size;
    if (ntargets == 0 || !targets || total_size(iov, iovcnt, &size) < 0) {
        set_err(err, errlen, "invalid delivery request");
        errno = EINVAL;
        return -1;
    }
    struct copy *c = calloc(ntargets, sizeof(*c));
    if (!c) {
        set_err(err, errlen, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < ntargets && rc == 0; i++)
        rc = prepare_copy(md, &targets[i], size, &c[i], err, errlen);
    for (size_t i = 0; i < ntargets && rc == 0; i++)
        rc = write_copy(md, &c[i], iov, iovcnt, err, errlen);
    /* Renames only once every copy is on disk: a failure before this point
     * leaves no visible copy, so the sender's retry cannot duplicate. */
    for (size_t i = 0; i < ntargets && rc == 0; i++)
        rc = commit_copy(md, &c[i], err, errlen);
    if (rc == 0)
        rc = sync_dests(md, c, ntargets, err, errlen);
    if (rc < 0) {
        int saved = errno;
        undo_copies(md, c, ntargets);
        errno = saved;
    }
    free(c);
    return rc;
}

/* --- tmp/ cleanup ------------------------------------------------------------ */

static bool is_stale(const struct maildir *md, const char *name, const struct stat *st, time_t now)
{
    if (now - st->st_mtime > TMP_MAX_AGE)
        return true;
    struct parsed_name pn;
    if (!parse_unique(name, &pn) || pn.hostlen != strlen(md->host)
        || memcmp(pn.host, md->host, pn.hostlen) != 0)
        return false;   /* another program's or another host's: only age counts */
    if (pn.pid != (unsigned long long)md->pid)
        return true;
    /* Same pid: an earlier process if it wrote before we started. */
    unsigned long long st_sec = (unsigned long long)md->started.tv_sec;
    unsigned long long st_usec = (unsigned long long)md->started.tv_nsec / 1000;
    return pn.sec < st_sec || (pn.sec == st_sec && pn.usec < st_usec);
}

static long clean_tmp(const struct maildir *md, int boxfd, const char *boxrel, time_t now)
{
    int fd = open_dir(boxfd, "tmp");
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    long removed = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' || fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0
            || !S_ISREG(st.st_mode) || !is_stale(md, e->d_name, &st, now))
            continue;
        if (unlinkat(fd, e->d_name, 0) == 0) {
            log_info("mailstore: removed stale %s/%s/tmp/%s", md->root, boxrel, e->d_name);
            removed++;
        } else {
            log_warn("mailstore: cannot remove %s/%s/tmp/%s: %s", md->root, boxrel,
                     e->d_name, strerror(errno));
        }
    }
    closedir(d);
    return removed;
}

typedef long (*subdir_fn)(const struct maildir *md, int fd, const char *rel, time_t now);

/* Calls fn on each subdirectory of dirfd (hidden ones: valid folders only;
 * otherwise: non-hidden ones), never through a symlink. */
static long each_subdir(const struct maildir *md, int dirfd, const char *rel, bool folders,
                        subdir_fn fn, time_t now)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    long total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        bool hidden = e->d_name[0] == '.';
        if (folders ? !(hidden && valid_folder(e->d_name + 1)) : hidden)
            continue;
        char sub[PATH_MAX];
        int sfd;
        if (rel[0] && join(sub, sizeof(sub), rel, e->d_name) < 0)
            continue;
        if (!rel[0])
            snprintf(sub, sizeof(sub), "%s", e->d_name);
        if ((sfd = open_dir(fd, e->d_name)) < 0)
            continue;
        total += fn(md, sfd, sub, now);
        close(sfd);
    }
    closedir(d);
    return total;
}

static long clean_mailbox(const struct maildir *md, int fd, const char *rel, time_t now)
{
    return clean_tmp(md, fd, rel, now) + each_subdir(md, fd, rel, true, clean_tmp, now);
}

static long clean_domain(const struct maildir *md, int fd, const char *rel, time_t now)
{
    return each_subdir(md, fd, rel, false, clean_mailbox, now);
}

static long md_cleanup_tmp(void *be)
{
    struct maildir *md = be;
    return each_subdir(md, md->rootfd, "", false, clean_domain, time(NULL));
}

/* --- Reading ----------------------------------------------------------------- */

struct msgvec {
    struct mailstore_msg *m;
    size_t n, cap;
};

static int push_msg(struct msgvec *v, const char *file, const struct stat *st, bool recent)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        struct mailstore_msg *m = realloc(v->m, cap * sizeof(*m));
        if (!m)
            return -1;
        v->m = m;
        v->cap = cap;
    }
    const char *colon = strchr(file, ':');
    size_t baselen = colon ? (size_t)(colon - file) : strlen(file);
    const char *flags = colon && strncmp(colon, ":2,", 3) == 0 ? colon + 3 : "";
    struct mailstore_msg *m = &v->m[v->n];
    m->name = strndup(file, baselen);
    m->flags = strdup(flags);
    if (!m->name || !m->flags) {
        free(m->name);
        free(m->flags);
        return -1;
    }
    m->size = (uint64_t)st->st_size;
    m->mtime = st->st_mtime;
    m->recent = recent;
    v->n++;
    return 0;
}

static int list_sub(int boxfd, const char *sub, bool recent, struct msgvec *v)
{
    int fd = open_dir(boxfd, sub);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return errno == ENOENT ? 0 : -1;    /* a maildir missing cur/ is empty */
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' || fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0
            || !S_ISREG(st.st_mode))
            continue;
        rc = push_msg(v, e->d_name, &st, recent);
    }
    closedir(d);
    return rc;
}

static int cmp_msg(const void *a, const void *b)
{
    const struct mailstore_msg *x = a, *y = b;
    if (x->mtime != y->mtime)
        return x->mtime < y->mtime ? -1 : 1;
    int c = strcmp(x->name, y->name);
    if (c != 0)
        return c;
    return (int)x->recent - (int)y->recent;     /* the cur/ entry first */
}

/* A message moved from new/ to cur/ while we listed appears twice (new/ is
 * read first, so none is missed); keep the cur/ entry. */
static void drop_dups(struct msgvec *v)
{
    size_t out = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (out > 0 && strcmp(v->m[out - 1].name, v->m[i].name) == 0) {
            free(v->m[i].name);
            free(v->m[i].flags);
            continue;
        }
        v->m[out++] = v->m[i];
    }
    v->n = out;
}

static int open_box(const struct maildir *md, const char *address, const char *folder)
{
    char box[REL_MAX];
    if (box_rel(address, folder, box, sizeof(box)) < 0)
        return -1;
    return open_dir(md->rootfd, box);
}

static int md_list(void *be, const char *address, const char *folder,
                   struct mailstore_msglist *out)
{
    struct maildir *md = be;
    out->msgs = NULL;
    out->n = 0;
    int boxfd = open_box(md, address, folder);
    if (boxfd < 0)
        return -1;
    struct msgvec v = { NULL, 0, 0 };
    int rc = list_sub(boxfd, "new", true, &v);
    if (rc == 0)
        rc = list_sub(boxfd, "cur", false, &v);
    int saved = errno;
    close(boxfd);
    if (rc < 0) {
        struct mailstore_msglist l = { v.m, v.n };
        mailstore_msglist_free(&l);
        errno = saved ? saved : ENOMEM;
        return -1;
    }
    if (v.n > 1) {
        qsort(v.m, v.n, sizeof(*v.m), cmp_msg);
        drop_dups(&v);
    }
    out->msgs = v.m;
    out->n = v.n;
    return 0;
}

/* Finds "<name>" or "<name>:<info>" in sub/; writes "sub/<file>" to out. */
static int scan_for(int boxfd, const char *sub, const char *name, char *out, size_t outlen)
{
    int fd = open_dir(boxfd, sub);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t len = strlen(name);
    int rc = -1;
    struct dirent *e;
    while (rc < 0 && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, name, len) == 0 && (e->d_name[len] == ':' || e->d_name[len] == '\0'))
            rc = join(out, outlen, sub, e->d_name);
    }
    closedir(d);
    if (rc < 0)
        errno = ENOENT;
    return rc;
}

/* Locates a message by base name: new/<name> directly (fresh mail), else a
 * scan of cur/ (its flags are unknown) and of new/ for an info suffix. */
static int find_msg(int boxfd, const char *name, char *out, size_t outlen)
{
    if (!name || !valid_msg_name(name)) {
        errno = EINVAL;
        return -1;
    }
    struct stat st;
    if (join(out, outlen, "new", name) == 0 && fstatat(boxfd, out, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    if (scan_for(boxfd, "cur", name, out, outlen) == 0)
        return 0;
    return scan_for(boxfd, "new", name, out, outlen);
}

/* A message can move (flags changed by another session) between finding
 * and using it: `use` is retried a few times while it fails with ENOENT.
 * `use` gets the message's current path relative to the folder and returns
 * 0 (or an fd) on success, -1 with errno set on failure. */
#define MSG_RETRIES 3

typedef int (*msg_use_fn)(int boxfd, const char *path, void *arg);

static int with_msg(void *be, const char *address, const char *folder, const char *name,
                    msg_use_fn use, void *arg)
{
    int boxfd = open_box(be, address, folder);
    if (boxfd < 0)
        return -1;
    char path[PATH_MAX];
    int rc = -1;
    for (int i = 0; i < MSG_RETRIES && rc < 0; i++) {
        if (find_msg(boxfd, name, path, sizeof(path)) < 0)
            break;
        rc = use(boxfd, path, arg);
        if (rc < 0 && errno != ENOENT)
            break;
    }
    int saved = errno;
    close(boxfd);
    if (rc < 0)
        errno = saved;
    return rc;
}

static int open_found(int boxfd, const char *path, void *arg)
{
    (void)arg;
    return openat(boxfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
}

static int md_open_msg(void *be, const char *address, const char *folder, const char *name)
{
    return with_msg(be, address, folder, name, open_found, NULL);
}

struct rename_to {
    const char *name;
    const char *flags;
};

static int rename_found(int boxfd, const char *path, void *arg)
{
    const struct rename_to *r = arg;
    char to[PATH_MAX];
    snprintf(to, sizeof(to), "cur/%s:2,%s", r->name, r->flags);
    return strcmp(path, to) == 0 || renameat(boxfd, path, boxfd, to) == 0 ? 0 : -1;
}

static int md_set_flags(void *be, const char *address, const char *folder,
                        const char *name, const char *flags)
{
    char norm[FLAGS_MAX + 1];
    if (norm_flags(flags, norm) < 0)
        return -1;
    struct rename_to r = { name, norm };
    return with_msg(be, address, folder, name, rename_found, &r);
}

static int unlink_found(int boxfd, const char *path, void *arg)
{
    (void)arg;
    return unlinkat(boxfd, path, 0);
}

static int md_remove(void *be, const char *address, const char *folder, const char *name)
{
    return with_msg(be, address, folder, name, unlink_found, NULL);
}

/* --- Single messages, for IMAP ----------------------------------------------------- */

/* rename that refuses to replace an existing target. */
static int rename_noreplace(int fromfd, const char *from, int tofd, const char *to)
{
    if (renameat2(fromfd, from, tofd, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    struct stat st;
    if (fstatat(tofd, to, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        errno = EEXIST;
        return -1;
    }
    return renameat(fromfd, from, tofd, to);
}

static int copy_name_out(const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s", name);
    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

static int md_append(void *be, const char *address, const char *folder, const char *data,
                     size_t len, const char *flags, time_t mtime, char *name, size_t namelen,
                     char *err, size_t errlen)
{
    struct maildir *md = be;
    struct copy c;
    struct stat st;
    memset(&c, 0, sizeof(c));
    struct mailstore_target t = { address, folder, flags };
    if ((len > 0 && !data) || !name || namelen <= NAME_MAX) {
        set_err(err, errlen, "invalid append request");
        errno = EINVAL;
        return -1;
    }
    if (prepare_copy(md, &t, len, &c, err, errlen) < 0)
        return -1;
    c.to_cur = flags != NULL;   /* ":2," even without flags: seen by a client */
    c.mtime = mtime;
    if (!is_inbox(folder) && fstatat(md->rootfd, c.box, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        int saved = errno;
        set_err(err, errlen, "no folder %s: %s", folder, strerror(saved));
        errno = saved;
        return -1;
    }
    struct iovec iov = { (void *)data, len };
    char dir[REL_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/%s", c.box, c.to_cur ? "cur" : "new");
    int rc = write_copy(md, &c, &iov, 1, err, errlen);
    if (rc == 0)
        rc = commit_copy(md, &c, err, errlen);
    if (rc == 0 && (rc = group_fsync_dir(md, dir)) < 0) {
        int saved = errno;
        set_err(err, errlen, "cannot fsync %s/%s: %s", md->root, dir, strerror(saved));
        errno = saved;
    }
    if (rc < 0) {
        int saved = errno;
        undo_copies(md, &c, 1);
        errno = saved;
        return -1;
    }
    return copy_name_out(c.name, name, namelen);
}

/* What copy and move do with a found message. */
struct transfer {
    const struct maildir *md;
    int dstfd;
    char newname[NAME_MAX + 1];
};

/* Splits "cur/<base>:2,FS" into the subdirectory ("cur") and the info
 * (":2,FS", or "" for none). */
static void split_path(const char *path, char *sub, size_t sublen, const char **info)
{
    const char *slash = strchr(path, '/');
    snprintf(sub, sublen, "%.*s", (int)(slash - path), path);
    const char *colon = strchr(slash + 1, ':');
    *info = colon ? colon : "";
}

/* Fallback of a failed link: copy into dst's tmp/, fsync, rename. */
static int copy_file(int boxfd, const char *path, int dstfd, const char *tmp, const char *to)
{
    int in = openat(boxfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0)
        return -1;
    int out = openat(dstfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st;
    int rc = out < 0 || fstat(in, &st) < 0 ? -1 : 0;
    char buf[16384];
    while (rc == 0) {
        ssize_t got = read(in, buf, sizeof(buf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            rc = got < 0 ? -1 : 0;
            break;
        }
        struct iovec iov = { buf, (size_t)got };
        rc = write_all(out, &iov, 1);
    }
    if (rc == 0)
        rc = set_mtime(out, st.st_mtime) == 0 && fsync(out) == 0 ? 0 : -1;
    int saved = errno;
    close(in);
    if (out >= 0 && close(out) < 0 && rc == 0) {
        saved = errno;
        rc = -1;
    }
    if (rc == 0 && renameat(dstfd, tmp, dstfd, to) < 0) {
        saved = errno;
        rc = -1;
    }
    if (rc < 0 && out >= 0)
        unlinkat(dstfd, tmp, 0);
    errno = saved == ENOENT ? EIO : saved;  /* ENOENT would mean "moved: retry" */
    return rc;
}

static int link_found(int boxfd, const char *path, void *arg)
{
    struct transfer *t = arg;
    char sub[8], to[PATH_MAX], tmp[PATH_MAX];
    const char *info;
    struct stat st;
    if (fstatat(boxfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    split_path(path, sub, sizeof(sub), &info);
    unique_name(t->md, (uint64_t)st.st_size, t->newname, sizeof(t->newname));
    snprintf(to, sizeof(to), "%s/%s%s", sub, t->newname, info);
    if (linkat(boxfd, path, t->dstfd, to, 0) == 0)
        return 0;
    if (errno == ENOENT || errno == EEXIST)
        return -1;      /* moved meanwhile (retried), or impossible */
    snprintf(tmp, sizeof(tmp), "tmp/%s", t->newname);
    return copy_file(boxfd, path, t->dstfd, tmp, to);
}

static int move_found(int boxfd, const char *path, void *arg)
{
    struct transfer *t = arg;
    char sub[8], to[PATH_MAX];
    const char *info;
    split_path(path, sub, sizeof(sub), &info);
    const char *base = strchr(path, '/') + 1;
    size_t baselen = info[0] ? (size_t)(info - base) : strlen(base);
    snprintf(t->newname, sizeof(t->newname), "%.*s", (int)baselen, base);
    snprintf(to, sizeof(to), "%s/%s%s", sub, t->newname, info);
    if (rename_noreplace(boxfd, path, t->dstfd, to) == 0)
        return 0;
    if (errno != EEXIST)
        return -1;
    /* The same name in dst (a message moved back and forth): a new one. */
    unique_name(t->md, 0, t->newname, sizeof(t->newname));
    snprintf(to, sizeof(to), "%s/%s%s", sub, t->newname, info);
    return rename_noreplace(boxfd, path, t->dstfd, to);
}

static int transfer(void *be, const char *address, const char *src, const char *name,
                    const char *dst, char *newname, size_t namelen, msg_use_fn use)
{
    struct transfer t = { be, -1, "" };
    if (!newname || namelen <= NAME_MAX) {
        errno = EINVAL;
        return -1;
    }
    if ((t.dstfd = open_box(be, address, dst)) < 0)
        return -1;
    int rc = with_msg(be, address, src, name, use, &t);
    int saved = errno;
    close(t.dstfd);
    if (rc < 0) {
        errno = saved;
        return -1;
    }
    return copy_name_out(t.newname, newname, namelen);
}

static int md_copy(void *be, const char *address, const char *src, const char *name,
                   const char *dst, char *newname, size_t namelen)
{
    return transfer(be, address, src, name, dst, newname, namelen, link_found);
}

static int md_move(void *be, const char *address, const char *src, const char *name,
                   const char *dst, char *newname, size_t namelen)
{
    return transfer(be, address, src, name, dst, newname, namelen, move_found);
}

static int md_sync_folder(void *be, const char *address, const char *folder)
{
    struct maildir *md = be;
    int boxfd = open_box(md, address, folder);
    if (boxfd < 0)
        return -1;
    int rc = 0;
    if (fsync_dir(boxfd, "new") < 0 && errno != ENOENT)
        rc = -1;
    if (fsync_dir(boxfd, "cur") < 0 && errno != ENOENT)
        rc = -1;
    int saved = errno;
    close(boxfd);
    errno = saved;
    return rc;
}

/* --- Metadata files beside the messages ----------------------------------------------- */

#define META_TMP_SUFFIX ".posthorn-tmp"

static bool valid_meta_name(const char *file)
{
    static const char *const own[] = { "cur", "new", "tmp", "maildirfolder" };
    size_t len = file ? strlen(file) : 0;
    if (!valid_part(file, len) || len + sizeof(META_TMP_SUFFIX) > NAME_MAX || strchr(file, ':'))
        return false;
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strcmp(file, own[i]) == 0)
            return false;
    return true;
}

static int read_meta_fd(int fd, char **data, size_t *len, size_t max)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    if (!S_ISREG(st.st_mode)) {
        errno = EINVAL;
        return -1;
    }
    if ((uint64_t)st.st_size > max) {
        errno = EFBIG;
        return -1;
    }
    size_t size = (size_t)st.st_size, got = 0;
    char *buf = malloc(size + 1);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            free(buf);
            errno = saved;
            return -1;
        }
        if (n == 0)
            break;      /* shrunk meanwhile */
        got += (size_t)n;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return 0;
}

static int md_meta_read(void *be, const char *address, const char *folder, const char *file,
                        char **data, size_t *len, size_t max)
{
    *data = NULL;
    *len = 0;
    if (!valid_meta_name(file)) {
        errno = EINVAL;
        return -1;
    }
    int boxfd = open_box(be, address, folder);
    if (boxfd < 0)
        return -1;
    int fd = openat(boxfd, file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int rc = fd < 0 ? -1 : read_meta_fd(fd, data, len, max);
    int saved = errno;
    if (fd >= 0)
        close(fd);
    close(boxfd);
    errno = saved;
    return rc;
}

static int write_meta_fd(int fd, const char *data, size_t len)
{
    struct iovec iov = { (void *)data, len };
    int rc = write_all(fd, &iov, 1);
    int saved = errno;
    if (close(fd) < 0 && rc == 0)
        return -1;
    errno = saved;
    return rc;
}

static int md_meta_write(void *be, const char *address, const char *folder, const char *file,
                         const char *data, size_t len, bool append)
{
    char tmp[NAME_MAX + 1];
    if (!valid_meta_name(file) || (len > 0 && !data)) {
        errno = EINVAL;
        return -1;
    }
    int boxfd = open_box(be, address, folder);
    if (boxfd < 0)
        return -1;
    int rc;
    if (append) {
        int fd = openat(boxfd, file, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
        rc = fd < 0 ? -1 : write_meta_fd(fd, data, len);
    } else {
        snprintf(tmp, sizeof(tmp), "%s%s", file, META_TMP_SUFFIX);
        int fd = openat(boxfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        rc = fd < 0 ? -1 : write_meta_fd(fd, data, len);
        if (rc == 0)
            rc = renameat(boxfd, tmp, boxfd, file);
        if (rc < 0 && fd >= 0) {
            int saved = errno;
            unlinkat(boxfd, tmp, 0);
            errno = saved;
        }
    }
    int saved = errno;
    close(boxfd);
    errno = saved;
    return rc;
}

/* --- Folders -------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the folder names of an open mailbox; with prefix, only those
 * starting with it. */
static int collect_folders(int mbfd, const char *prefix, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    int fd = openat(mbfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t cap = 0, plen = prefix ? strlen(prefix) : 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        struct stat st;
        const char *f = e->d_name + 1;
        if (e->d_name[0] != '.' || !valid_folder(f) || (prefix && strncmp(f, prefix, plen) != 0)
            || fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(*names, cap * sizeof(char *));
            if (!grown) {
                rc = -1;
                break;
            }
            *names = grown;
        }
        if (!((*names)[*n] = strdup(f)))
            rc = -1;
        else
            (*n)++;
    }
    closedir(d);
    if (rc < 0) {
        mailstore_folders_free(*names, *n);
        *names = NULL;
        *n = 0;
        errno = ENOMEM;
        return -1;
    }
    if (*n > 1)
        qsort(*names, *n, sizeof(char *), cmp_str);
    return 0;
}

static int md_folders(void *be, const char *address, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    int mbfd = open_box(be, address, NULL);
    if (mbfd < 0)
        return -1;
    int rc = collect_folders(mbfd, NULL, names, n);
    int saved = errno;
    close(mbfd);
    errno = saved;
    return rc;
}

static int md_folder_create(void *be, const char *address, const char *folder)
{
    struct maildir *md = be;
    char box[REL_MAX], failed[PATH_MAX];
    struct stat st;
    if (is_inbox(folder) || box_rel(address, folder, box, sizeof(box)) < 0) {
        errno = EINVAL;
        return -1;
    }
    if (fstatat(md->rootfd, box, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        errno = EEXIST;
        return -1;
    }
    if (ensure_box(md, box, failed, sizeof(failed)) < 0) {
        log_warn("mailstore: cannot create %s/%s: %s", md->root, failed, strerror(errno));
        return -1;
    }
    return 0;
}

/* A hidden name for a tree about to be removed, unique like a message. */
static void doomed_name(const struct maildir *md, const char *prefix, char *out, size_t outlen)
{
    char u[NAME_MAX + 1];
    unique_name(md, 0, u, sizeof(u));
    snprintf(out, outlen, "%s%.*s", prefix, (int)(NAME_MAX - strlen(prefix)), u);
}

/* Renames dirfd/name out of sight first, so that it disappears atomically,
 * then deletes it. */
static int remove_tree(const struct maildir *md, int dirfd, const char *name,
                       const char *prefix)
{
    char doomed[NAME_MAX + 1];
    doomed_name(md, prefix, doomed, sizeof(doomed));
    if (renameat(dirfd, name, dirfd, doomed) < 0)
        return -1;
    if (fsync(dirfd) < 0)
        log_warn("mailstore: fsync after removing %s/%s: %s", md->root, name, strerror(errno));
    if (rm_tree(dirfd, doomed, 0) < 0)
        log_warn("mailstore: cannot fully remove %s (renamed %s) in %s: %s", name, doomed,
                 md->root, strerror(errno));
    return 0;
}

static int md_folder_delete(void *be, const char *address, const char *folder)
{
    char dot[NAME_MAX + 1];
    if (is_inbox(folder) || !valid_folder(folder)) {
        errno = EINVAL;
        return -1;
    }
    int mbfd = open_box(be, address, NULL);
    if (mbfd < 0)
        return -1;
    snprintf(dot, sizeof(dot), ".%s", folder);
    int rc = remove_tree(be, mbfd, dot, FOLDER_DEL_PREFIX);
    int saved = errno;
    close(mbfd);
    errno = saved;
    return rc;
}

static int rename_new(int dirfd, const char *from, const char *to)
{
    return rename_noreplace(dirfd, from, dirfd, to);
}

/* Refuses a rename before touching anything: every target ".<to>" and
 * ".<to>.x" must be free and short enough. */
static int check_targets(int mbfd, char **kids, size_t n, size_t fromlen, const char *to)
{
    char b[NAME_MAX + 2];
    struct stat st;
    for (size_t i = 0; i <= n; i++) {
        int bl = snprintf(b, sizeof(b), ".%s%s", to, i < n ? kids[i] + fromlen : "");
        if (bl < 0 || (size_t)bl > NAME_MAX) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (fstatat(mbfd, b, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            errno = EEXIST;
            return -1;
        }
        if (errno != ENOENT)
            return -1;
    }
    return 0;
}

/* Renames ".<from>.x" to ".<to>.x" for each collected child "from.x". */
static int rename_children(const struct maildir *md, int mbfd, char **kids, size_t n,
                           size_t fromlen, const char *to)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char a[NAME_MAX + 2], b[NAME_MAX + 2];
        int bl = snprintf(b, sizeof(b), ".%s%s", to, kids[i] + fromlen);
        snprintf(a, sizeof(a), ".%s", kids[i]);
        if (bl < 0 || (size_t)bl > NAME_MAX) {
            errno = ENAMETOOLONG;
            rc = -1;
        } else if (rename_new(mbfd, a, b) < 0) {
            rc = -1;
        }
        if (rc < 0)
            log_warn("mailstore: cannot rename folder %s/%s to %s: %s", md->root, a, b,
                     strerror(errno));
    }
    return rc;
}

static int md_folder_rename(void *be, const char *address, const char *from, const char *to)
{
    struct maildir *md = be;
    char kidprefix[NAME_MAX + 2], a[NAME_MAX + 2], b[NAME_MAX + 2];
    size_t flen = from ? strlen(from) : 0;
    if (is_inbox(from) || is_inbox(to) || !valid_folder(from) || !valid_folder(to)
        || strcmp(from, to) == 0 || (strncmp(to, from, flen) == 0 && to[flen] == '.')) {
        errno = EINVAL;
        return -1;
    }
    int mbfd = open_box(md, address, NULL);
    if (mbfd < 0)
        return -1;
    char **kids;
    size_t nkids;
    snprintf(kidprefix, sizeof(kidprefix), "%s.", from);
    struct stat st;
    snprintf(a, sizeof(a), ".%s", from);
    int rc = collect_folders(mbfd, kidprefix, &kids, &nkids);
    if (rc == 0 && nkids == 0 && fstatat(mbfd, a, &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = -1;    /* no such folder (ENOENT) comes before a taken target */
    if (rc == 0)
        rc = check_targets(mbfd, kids, nkids, flen, to);
    if (rc < 0)
        mailstore_folders_free(kids, nkids);
    if (rc == 0) {
        snprintf(b, sizeof(b), ".%s", to);
        rc = rename_new(mbfd, a, b);
        if (rc < 0 && errno == ENOENT && nkids > 0)
            rc = 0;     /* only the children exist: the parent is implicit */
        if (rc == 0)
            rc = rename_children(md, mbfd, kids, nkids, flen, to);
        mailstore_folders_free(kids, nkids);
    }
    int saved = errno;
    if (rc == 0 && fsync(mbfd) < 0)
        log_warn("mailstore: fsync of %s after folder rename: %s", md->root, strerror(errno));
    close(mbfd);
    errno = saved;
    return rc;
}

static int md_remove_mailbox(void *be, const char *address)
{
    struct maildir *md = be;
    char rel[REL_MAX];
    size_t domlen;
    if (mailbox_rel(address, rel, sizeof(rel), &domlen) < 0)
        return -1;
    rel[domlen] = '\0';     /* rel = domain, rel + domlen + 1 = local part */
    int domfd = open_dir(md->rootfd, rel);
    if (domfd < 0)
        return -1;
    int rc = remove_tree(md, domfd, rel + domlen + 1, DEL_PREFIX);
    int saved = errno;
    close(domfd);
    errno = saved;
    if (rc == 0)
        log_info("mailstore: removed mailbox %s", address);
    return rc;
}

static int md_mailbox_path(void *be, const char *address, char *out, size_t outlen)
{
    struct maildir *md = be;
    char rel[REL_MAX];
    if (mailbox_rel(address, rel, sizeof(rel), NULL) < 0)
        return -1;
    int n = snprintf(out, outlen, "%s/%s", md->root, rel);
    if (n < 0 || (size_t)n >= outlen) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* --- Usage (quotas) --------------------------------------------------------- */

/* The size recorded in a Maildir name ("...,S=<size>[,...][:2,...]"), as
 * Dovecot and posthorn write it. */
static bool size_from_name(const char *name, uint64_t *size)
{
    const char *colon = strchr(name, ':');
    size_t len = colon ? (size_t)(colon - name) : strlen(name);
    const char *p = memmem(name, len, ",S=", 3);
    if (!p)
        return false;
    p += 3;
    uint64_t v = 0;
    int digits = 0;
    for (; p < name + len && *p >= '0' && *p <= '9'; p++, digits++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    if (digits == 0 || (p < name + len && *p != ','))
        return false;
    *size = v;
    return true;
}

/* Adds the message sizes in boxfd's sub/ to *total. */
static int usage_sub(int boxfd, const char *sub, uint64_t *total)
{
    int fd = open_dir(boxfd, sub);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return errno == ENOENT ? 0 : -1;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t size;
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        if (!size_from_name(e->d_name, &size)) {
            if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                continue;   /* gone meanwhile (expunged, moved): not there */
            size = (uint64_t)st.st_size;
        }
        *total += size;
    }
    closedir(d);
    return 0;
}

static int usage_box(int boxfd, uint64_t *total)
{
    return usage_sub(boxfd, "new", total) == 0 && usage_sub(boxfd, "cur", total) == 0 ? 0 : -1;
}

static int md_usage(void *be, const char *address, uint64_t *bytes)
{
    *bytes = 0;
    char rel[REL_MAX];
    if (mailbox_rel(address, rel, sizeof(rel), NULL) < 0)
        return -1;
    int mbfd = open_dir(((struct maildir *)be)->rootfd, rel);
    if (mbfd < 0)
        return errno == ENOENT ? 0 : -1;    /* nothing delivered yet */
    char **folders = NULL;
    size_t n = 0;
    uint64_t total = 0;
    int rc = usage_box(mbfd, &total);
    if (rc == 0)
        rc = collect_folders(mbfd, NULL, &folders, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char sub[NAME_MAX + 2];
        snprintf(sub, sizeof(sub), ".%s", folders[i]);
        int fd = open_dir(mbfd, sub);
        if (fd < 0 && errno == ENOENT)
            continue;       /* deleted meanwhile */
        rc = fd < 0 ? -1 : usage_box(fd, &total);
        if (fd >= 0)
            close(fd);
    }
    int saved = errno;
    mailstore_folders_free(folders, n);
    close(mbfd);
    errno = saved;
    if (rc == 0)
        *bytes = total;
    return rc;
}

const struct mailstore_backend_ops mailstore_maildir_ops = {
    .name = "maildir",
    .open = md_open,
    .close = md_close,
    .cleanup_tmp = md_cleanup_tmp,
    .deliver = md_deliver,
    .list = md_list,
    .open_msg = md_open_msg,
    .set_flags = md_set_flags,
    .remove = md_remove,
    .append = md_append,
    .copy = md_copy,
    .move = md_move,
    .sync_folder = md_sync_folder,
    .meta_read = md_meta_read,
    .meta_write = md_meta_write,
    .folders = md_folders,
    .folder_create = md_folder_create,
    .folder_delete = md_folder_delete,
    .folder_rename = md_folder_rename,
    .remove_mailbox = md_remove_mailbox,
    .mailbox_path = md_mailbox_path,
    .usage = md_usage,
};
