/* setup spam learn|forget|check|stats: trains and inspects the Bayes
 * classifier (filters/bayes.h) in STATE_DIR/bayes.db.
 *
 * Inputs are Maildirs (a directory with cur/ or new/: the messages in
 * both), mbox files (a file starting with "From "), single message files,
 * or directories of those (each file in it, not recursing).
 *
 * The database belongs to the mail user, so the step that opens it runs
 * as that user (setup_run_as_owner); the inputs may be anywhere the
 * caller can read (root's home, a 0700 directory). So a reader process
 * with the caller's identity reads them and passes each message through
 * a pipe to the step that learns or checks it. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bayes.h"
#include "buf.h"
#include "setup.h"

#define FILE_MAX ((size_t)1 << 30)     /* largest mbox or message file read */
#define MAX_ENTRIES 1000000            /* files taken from one directory */

enum spam_verb { VERB_LEARN, VERB_FORGET, VERB_CHECK };

struct spam_op {
    enum spam_verb verb;
    enum bayes_class cls;        /* learn */
    char **paths;
    int npaths;
    struct bayes *b;
    int fd;                      /* the reader: the pipe to write messages to */
    bool pipe_broken;
    time_t now;
    /* counts */
    unsigned long messages, learned, already, relearned, forgotten, errors;
};

/* --- reading inputs ---------------------------------------------------------------- */

static int read_file(const char *path, struct buf *out)
{
    buf_reset(out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    int e = 0;
    if (fstat(fd, &st) < 0)
        e = errno;
    else if ((uint64_t)st.st_size > FILE_MAX)
        e = EFBIG;
    if (e) {
        close(fd);
        errno = e;
        return -1;
    }
    if (buf_reserve(out, (size_t)st.st_size + 1) < 0) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        if (buf_reserve(out, 65536) < 0 || out->len > FILE_MAX) {
            close(fd);
            errno = out->len > FILE_MAX ? EFBIG : ENOMEM;
            return -1;
        }
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        out->len += (size_t)n;
    }
    close(fd);
    return 0;
}

static void handle_message(struct spam_op *op, const char *msg, size_t len, const char *name,
                           unsigned long index)
{
    op->messages++;
    if (op->verb == VERB_CHECK) {
        struct bayes_score sc;
        if (bayes_classify(op->b, msg, len, NULL, &sc) < 0) {
            op->errors++;
            fprintf(stderr, "setup: %s: cannot classify\n", name);
            return;
        }
        const struct bayes_band *band = bayes_band_of(sc.prob);
        if (index)
            printf("%.6f %s %.1f %s#%lu\n", sc.prob, band->name, band->score, name, index);
        else
            printf("%.6f %s %.1f %s\n", sc.prob, band->name, band->score, name);
        return;
    }
    if (op->verb == VERB_FORGET) {
        int rc = bayes_forget(op->b, msg, len);
        if (rc < 0)
            op->errors++;
        else
            op->forgotten += (unsigned long)rc;
        return;
    }
    switch (bayes_learn(op->b, msg, len, NULL, op->cls, op->now)) {
    case BAYES_LEARNED: op->learned++; break;
    case BAYES_ALREADY: op->already++; break;
    case BAYES_RELEARNED: op->relearned++; break;
    case BAYES_LEARN_ERROR: op->errors++; break;
    }
}

/* --- the pipe between the reader and the learner -------------------------------- */

/* A frame: this header, then the name, then the message. */
struct frame {
    uint64_t name_len, msg_len, index;
};

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Returns 1 when n octets were read, 0 at a clean end, -1 otherwise. */
static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r == 0 && got == 0 ? 0 : -1;
        got += (size_t)r;
    }
    return 1;
}

/* In the reader: one message goes down the pipe. */
static void one_message(struct spam_op *op, const char *msg, size_t len, const char *name,
                        unsigned long index)
{
    if (op->pipe_broken)
        return;
    struct frame f = { strlen(name), len, index };
    if (write_all(op->fd, &f, sizeof f) < 0 || write_all(op->fd, name, f.name_len) < 0 ||
        write_all(op->fd, msg, len) < 0)
        op->pipe_broken = true;
}

/* In the learner: every message from the pipe. */
static int consume(struct spam_op *op, int fd)
{
    struct buf name = BUF_INIT, msg = BUF_INIT;
    struct frame f;
    int rc;
    while ((rc = read_all(fd, &f, sizeof f)) == 1) {
        if (f.name_len > 8192 || f.msg_len > FILE_MAX) {
            rc = -1;
            break;
        }
        buf_reset(&name);
        buf_reset(&msg);
        if (buf_reserve(&name, (size_t)f.name_len + 1) < 0 ||
            buf_reserve(&msg, (size_t)f.msg_len + 1) < 0 ||
            read_all(fd, name.data, (size_t)f.name_len) < 0 ||
            read_all(fd, msg.data, (size_t)f.msg_len) < 0) {
            rc = -1;
            break;
        }
        name.len = (size_t)f.name_len;
        msg.len = (size_t)f.msg_len;
        handle_message(op, msg.data, msg.len, buf_cstr(&name), (unsigned long)f.index);
    }
    buf_free(&name);
    buf_free(&msg);
    return rc;
}

/* An mbox: messages start at lines beginning with "From " (the From_
 * line itself is not part of the message). */
static void mbox(struct spam_op *op, const char *data, size_t len, const char *name)
{
    size_t pos = 0;
    unsigned long index = 0;
    while (pos < len) {
        const char *lf = memchr(data + pos, '\n', len - pos);
        size_t start = lf ? (size_t)(lf - data) + 1 : len;
        const char *next = memmem(data + start, len - start, "\nFrom ", 6);
        size_t end = next ? (size_t)(next - data) + 1 : len;
        if (end > start)
            one_message(op, data + start, end - start, name, ++index);
        pos = end;
    }
}

static void one_file(struct spam_op *op, const char *path, struct buf *data)
{
    if (read_file(path, data) < 0) {
        op->errors++;
        fprintf(stderr, "setup: cannot read %s: %s\n", path, strerror(errno));
        return;
    }
    const char *d = data->data ? data->data : "";
    if (data->len >= 5 && memcmp(d, "From ", 5) == 0)
        mbox(op, d, data->len, path);
    else
        one_message(op, d, data->len, path, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The regular files of dir, sorted, hidden ones left out. */
static int list_dir(const char *dir, char ***names, size_t *n)
{
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && *n < MAX_ENTRIES) {
        if (e->d_name[0] == '.')
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            char **p = realloc(*names, cap * sizeof *p);
            if (!p) {
                rc = -1;
                break;
            }
            *names = p;
        }
        if (!((*names)[*n] = strdup(e->d_name))) {
            rc = -1;
            break;
        }
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*names, *n, sizeof **names, cmp_str);
    return rc;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void files_in(struct spam_op *op, const char *dir, struct buf *data)
{
    char **names;
    size_t n;
    if (list_dir(dir, &names, &n) < 0) {
        op->errors++;
        fprintf(stderr, "setup: cannot read %s: %s\n", dir, strerror(errno));
        free_list(names, n);
        return;
    }
    char path[4096];
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (len < 0 || (size_t)len >= sizeof path || is_dir(path))
            continue;
        one_file(op, path, data);
    }
    free_list(names, n);
}

static void one_path(struct spam_op *op, const char *path, struct buf *data)
{
    if (!is_dir(path)) {
        one_file(op, path, data);
        return;
    }
    char cur[4096], new_[4096];
    snprintf(cur, sizeof cur, "%s/cur", path);
    snprintf(new_, sizeof new_, "%s/new", path);
    bool maildir = false;
    if (is_dir(cur)) {
        files_in(op, cur, data);
        maildir = true;
    }
    if (is_dir(new_)) {
        files_in(op, new_, data);
        maildir = true;
    }
    if (!maildir)
        files_in(op, path, data);
}

/* --- the commands ----------------------------------------------------------------- */

static struct bayes *open_store(const struct settings *s)
{
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/bayes.db", s->state_dir);
    struct bayes *b = bayes_open(path, err, sizeof err);
    if (!b)
        setup_fail("%s", err);
    return b;
}

static int run_op(const struct settings *s, void *arg)
{
    struct spam_op *op = arg;
    if (!(op->b = open_store(s)))
        return SETUP_FAILED;
    op->now = time(NULL);
    if (consume(op, op->fd) < 0) {
        op->errors++;
        fprintf(stderr, "setup: the message reader failed\n");
    }
    bayes_close(op->b);
    if (op->verb == VERB_LEARN)
        printf("%lu messages learned as %s (%lu already learned, %lu relearned from %s)\n",
               op->learned + op->relearned, op->cls == BAYES_SPAM ? "spam" : "ham",
               op->already, op->relearned, op->cls == BAYES_SPAM ? "ham" : "spam");
    else if (op->verb == VERB_FORGET)
        printf("%lu messages forgotten (%lu not learned)\n", op->forgotten,
               op->messages - op->forgotten - op->errors);
    if (op->errors)
        return setup_fail("%lu errors", op->errors);
    return SETUP_OK;
}

static int stats(const struct settings *s, void *arg)
{
    (void)arg;
    struct bayes *b = open_store(s);
    if (!b)
        return SETUP_FAILED;
    struct bayes_totals t;
    int rc = bayes_totals_full(b, &t);
    bayes_close(b);
    if (rc < 0)
        return setup_fail("cannot read the Bayes totals");
    unsigned min = bayes_min_learned(s);
    printf("spam: %llu\nham: %llu\ntokens: %llu\n", (unsigned long long)t.spam,
           (unsigned long long)t.ham, (unsigned long long)t.tokens);
    if (t.spam >= min && t.ham >= min)
        printf("scoring: %s\n", s->enable_spamassassin ? "on" : "off (ENABLE_SPAMASSASSIN=0)");
    else
        printf("scoring: waiting for %u spam and %u ham (BAYES_MIN_LEARNED)\n", min, min);
    return SETUP_OK;
}

/* The reader: walks the inputs with the caller's identity and writes
 * every message to fd. Its exit status says whether every input was read. */
static int reader(struct spam_op *op, int fd)
{
    signal(SIGPIPE, SIG_IGN);
    op->fd = fd;
    struct buf data = BUF_INIT;
    for (int i = 0; i < op->npaths && !op->pipe_broken; i++)
        one_path(op, op->paths[i], &data);
    buf_free(&data);
    return op->errors ? SETUP_FAILED : SETUP_OK;
}

static int run_with_reader(const struct settings *s, struct spam_op *op)
{
    int p[2];
    if (pipe(p) < 0)
        return setup_fail("pipe: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return setup_fail("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(p[0]);
        int rc = reader(op, p[1]);
        close(p[1]);
        fflush(stderr);
        _exit(rc);
    }
    close(p[1]);
    op->fd = p[0];
    int rc = setup_run_as_owner(s, s->state_dir, 0750, run_op, op);
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return setup_fail("waitpid: %s", strerror(errno));
    }
    if (rc == SETUP_OK && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        rc = setup_fail("some inputs could not be read");
    return rc;
}

int cmd_spam(const struct settings *s, int argc, char **argv)
{
    static const char usage[] = "usage: setup spam learn spam|ham <Maildir, mbox or file>...,"
                                " setup spam forget|check <...>..., setup spam stats";
    if (argc < 1)
        return setup_usage_error("%s", usage);
    struct spam_op op = { 0 };
    if (strcmp(argv[0], "stats") == 0) {
        if (argc != 1)
            return setup_usage_error("%s", usage);
        return setup_run_as_owner(s, s->state_dir, 0750, stats, NULL);
    }
    if (strcmp(argv[0], "learn") == 0) {
        if (argc < 3 || (strcmp(argv[1], "spam") != 0 && strcmp(argv[1], "ham") != 0))
            return setup_usage_error("%s", usage);
        op.verb = VERB_LEARN;
        op.cls = strcmp(argv[1], "spam") == 0 ? BAYES_SPAM : BAYES_HAM;
        op.paths = argv + 2;
        op.npaths = argc - 2;
    } else if (strcmp(argv[0], "forget") == 0 || strcmp(argv[0], "check") == 0) {
        if (argc < 2)
            return setup_usage_error("%s", usage);
        op.verb = argv[0][0] == 'f' ? VERB_FORGET : VERB_CHECK;
        op.paths = argv + 1;
        op.npaths = argc - 1;
    } else {
        return setup_usage_error("unknown spam command '%s' (see setup help)", argv[0]);
    }
    return run_with_reader(s, &op);
}
