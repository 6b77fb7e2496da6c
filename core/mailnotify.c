/* mailnotify: change notifications for watched folders (mailnotify.h).
 *
 * Everything but mailnotify_changed() lives on the loop thread. Changes
 * reported from other threads go through a small mutex-protected queue and
 * an ev_async; inotify events arrive on one non-blocking descriptor. Both
 * only mark watches pending; a short timer then calls each pending watch
 * once, so a burst of renames in cur/ (a STORE over many messages) costs
 * one callback per session. */
#include "mailnotify.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"

#define COALESCE_SECONDS 0.02
#define QUEUE_MAX        256   /* reports from other threads between two loop turns */
#define INOTIFY_MASK     (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF \
                          | IN_MOVE_SELF)

/* One watched directory (a folder's new/ or cur/), shared by the watches of
 * every session that has the folder selected. */
struct dirwatch {
    struct dirwatch *next;
    int wd;
    unsigned refs;
};

struct mailnotify_watch {
    struct mailnotify_watch *prev, *next;
    char *address;
    char *folder;                       /* "" for INBOX */
    mailnotify_cb cb;
    void *arg;
    bool pending;
    struct dirwatch *dirs[2];           /* new/, cur/; NULL until they exist */
};

struct report {
    char *address;
    char *folder;
};

static struct {
    struct ev_loop *loop;
    struct mailstore *ms;
    int ifd;
    ev_io io;
    ev_async async;
    ev_timer timer;
    struct mailnotify_watch *watches;
    struct dirwatch *dirs;
    bool warned;
} mn = { .ifd = -1 };

static atomic_uint watch_count;         /* read by mailnotify_changed without the lock */
static pthread_mutex_t queue_mu = PTHREAD_MUTEX_INITIALIZER;
static struct report queue[QUEUE_MAX];
static size_t queue_len;
static bool queue_overflow;             /* reports were dropped: wake every watch */
static atomic_bool initialized;

static const char *folder_key(const char *folder)
{
    return folder ? folder : "";
}

/* --- directories ------------------------------------------------------------- */

static int folder_dir(const char *address, const char *folder, const char *sub, char *out,
                      size_t outlen)
{
    char box[PATH_MAX];
    if (mailstore_mailbox_path(mn.ms, address, box, sizeof box) < 0)
        return -1;
    int n = *folder ? snprintf(out, outlen, "%s/.%s/%s", box, folder, sub)
                    : snprintf(out, outlen, "%s/%s", box, sub);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static struct dirwatch *dir_find(int wd)
{
    for (struct dirwatch *d = mn.dirs; d; d = d->next)
        if (d->wd == wd)
            return d;
    return NULL;
}

static struct dirwatch *dir_acquire(const char *path)
{
    int wd = inotify_add_watch(mn.ifd, path, INOTIFY_MASK | IN_ONLYDIR);
    if (wd < 0) {
        if (errno != ENOENT && !mn.warned) {
            log_warn("mailnotify: cannot watch %s: %s; changes by other programs show at "
                     "the next command", path, strerror(errno));
            mn.warned = true;
        }
        return NULL;
    }
    struct dirwatch *d = dir_find(wd);  /* inotify returns the same wd for a path */
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d) {
            inotify_rm_watch(mn.ifd, wd);
            return NULL;
        }
        d->wd = wd;
        d->next = mn.dirs;
        mn.dirs = d;
    }
    d->refs++;
    return d;
}

/* Drops a directory whose watch the kernel removed (its wd may be reused). */
static void dir_forget(struct dirwatch *d)
{
    for (struct dirwatch **p = &mn.dirs; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            break;
        }
    free(d);
}

static void dir_release(struct dirwatch *d)
{
    if (!d || --d->refs > 0)
        return;
    inotify_rm_watch(mn.ifd, d->wd);
    dir_forget(d);
}

/* Watches the folder's directories that exist and are not watched yet. */
static void watch_dirs(struct mailnotify_watch *w)
{
    if (mn.ifd < 0)
        return;
    static const char *const subs[2] = { "new", "cur" };
    for (int i = 0; i < 2; i++) {
        char path[PATH_MAX];
        if (!w->dirs[i] && folder_dir(w->address, w->folder, subs[i], path, sizeof path) == 0)
            w->dirs[i] = dir_acquire(path);
    }
}

/* --- dispatch ------------------------------------------------------------------ */

static void schedule(void)
{
    if (!ev_is_active(&mn.timer)) {
        ev_timer_set(&mn.timer, COALESCE_SECONDS, 0.0);
        ev_timer_start(mn.loop, &mn.timer);
    }
}

static void mark(const char *address, const char *folder)
{
    for (struct mailnotify_watch *w = mn.watches; w; w = w->next)
        if (!address || (strcmp(w->address, address) == 0 && strcmp(w->folder, folder) == 0)) {
            w->pending = true;
            schedule();
        }
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)t, (void)revents;
    /* A callback may unwatch itself or others: restart the scan after each. */
    bool again = true;
    while (again) {
        again = false;
        for (struct mailnotify_watch *w = mn.watches; w; w = w->next) {
            if (!w->pending)
                continue;
            w->pending = false;
            watch_dirs(w);      /* a folder created since the watch began */
            w->cb(w->arg);
            again = true;
            break;
        }
    }
}

static void on_async(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop, (void)a, (void)revents;
    struct report batch[QUEUE_MAX];
    pthread_mutex_lock(&queue_mu);
    size_t n = queue_len;
    bool overflow = queue_overflow;
    memcpy(batch, queue, n * sizeof *batch);
    queue_len = 0;
    queue_overflow = false;
    pthread_mutex_unlock(&queue_mu);
    if (overflow)
        mark(NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        mark(batch[i].address, batch[i].folder);
        free(batch[i].address);
        free(batch[i].folder);
    }
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop, (void)io, (void)revents;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t len = read(mn.ifd, buf, sizeof buf);
        if (len <= 0)
            return;     /* EAGAIN: drained */
        for (char *p = buf; p < buf + len;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                mark(NULL, NULL);
                continue;
            }
            struct dirwatch *d = dir_find(ev->wd);
            if (!d)
                continue;
            bool gone = ev->mask & IN_IGNORED;   /* the directory went away */
            for (struct mailnotify_watch *w = mn.watches; w; w = w->next)
                for (int i = 0; i < 2; i++)
                    if (w->dirs[i] == d) {
                        if (gone)
                            w->dirs[i] = NULL;
                        w->pending = true;
                        schedule();
                    }
            if (gone)
                dir_forget(d);
        }
    }
}

/* --- interface ---------------------------------------------------------------- */

int mailnotify_init(struct ev_loop *loop, struct mailstore *ms)
{
    mn.loop = loop;
    mn.ms = ms;
    ev_async_init(&mn.async, on_async);
    ev_async_start(loop, &mn.async);
    ev_unref(loop);     /* the async watcher alone must not keep the loop running */
    ev_init(&mn.timer, on_timer);
    initialized = true;
    mn.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (mn.ifd < 0) {
        log_warn("mailnotify: inotify unavailable (%s); changes by other programs show at "
                 "the next command", strerror(errno));
        return -1;
    }
    ev_io_init(&mn.io, on_inotify, mn.ifd, EV_READ);
    ev_io_start(loop, &mn.io);
    ev_unref(loop);
    return 0;
}

void mailnotify_shutdown(void)
{
    if (!initialized)
        return;
    while (mn.watches)
        mailnotify_unwatch(mn.watches);
    ev_ref(mn.loop);
    ev_async_stop(mn.loop, &mn.async);
    ev_timer_stop(mn.loop, &mn.timer);
    if (mn.ifd >= 0) {
        ev_ref(mn.loop);
        ev_io_stop(mn.loop, &mn.io);
        close(mn.ifd);
        mn.ifd = -1;
    }
    pthread_mutex_lock(&queue_mu);
    for (size_t i = 0; i < queue_len; i++) {
        free(queue[i].address);
        free(queue[i].folder);
    }
    queue_len = 0;
    pthread_mutex_unlock(&queue_mu);
    initialized = false;
}

struct mailnotify_watch *mailnotify_watch(const char *address, const char *folder,
                                          mailnotify_cb cb, void *arg)
{
    if (!initialized)
        return NULL;
    struct mailnotify_watch *w = calloc(1, sizeof *w);
    if (!w || !(w->address = strdup(address)) || !(w->folder = strdup(folder_key(folder)))) {
        if (w)
            free(w->address);
        free(w);
        return NULL;
    }
    w->cb = cb;
    w->arg = arg;
    watch_dirs(w);
    w->next = mn.watches;
    if (mn.watches)
        mn.watches->prev = w;
    mn.watches = w;
    atomic_fetch_add(&watch_count, 1);
    return w;
}

void mailnotify_unwatch(struct mailnotify_watch *w)
{
    if (!w)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        mn.watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    dir_release(w->dirs[0]);
    dir_release(w->dirs[1]);
    atomic_fetch_sub(&watch_count, 1);
    free(w->address);
    free(w->folder);
    free(w);
}

void mailnotify_changed(const char *address, const char *folder)
{
    if (!initialized || atomic_load(&watch_count) == 0 || !address)
        return;
    char *a = strdup(address), *f = strdup(folder_key(folder));
    pthread_mutex_lock(&queue_mu);
    if (a && f && queue_len < QUEUE_MAX) {
        queue[queue_len].address = a;
        queue[queue_len].folder = f;
        queue_len++;
        a = f = NULL;
    } else {
        queue_overflow = true;
    }
    pthread_mutex_unlock(&queue_mu);
    free(a);
    free(f);
    ev_async_send(mn.loop, &mn.async);
}
