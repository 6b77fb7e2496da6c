/* Unit tests of mailnotify: reports from another thread and changes made
 * to the Maildir by "another program" both reach a watch on the loop
 * thread, coalesced, and only the watches of that folder. */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "mailnotify.h"
#include "mailstore.h"
#include "test.h"

static char root[64];
static struct mailstore *ms;
static struct ev_loop *loop;

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p);
}

struct counter {
    int calls;
};

static void count_cb(void *arg)
{
    ((struct counter *)arg)->calls++;
}

/* Runs the loop until *calls reaches want or 2 s pass. */
static void run_until(const int *calls, int want)
{
    double deadline = ev_time() + 2.0;
    while (*calls < want && ev_time() < deadline)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(2000);
    /* let any extra (wrong) callbacks show up */
    double settle = ev_time() + 0.1;
    while (ev_time() < settle)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(2000);
}

static void *report_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 50; i++)
        mailnotify_changed("u@example.test", "Junk");
    return NULL;
}

TEST(reports_from_other_threads_are_coalesced)
{
    struct counter junk = { 0 }, inbox = { 0 };
    struct mailnotify_watch *wj = mailnotify_watch("u@example.test", "Junk", count_cb, &junk);
    struct mailnotify_watch *wi = mailnotify_watch("u@example.test", NULL, count_cb, &inbox);
    CHECK(wj && wi);
    pthread_t t;
    pthread_create(&t, NULL, report_thread, NULL);
    pthread_join(t, NULL);
    run_until(&junk.calls, 1);
    CHECK(junk.calls >= 1 && junk.calls <= 3);   /* one burst, at most a few calls */
    CHECK_INT(inbox.calls, 0);
    mailnotify_unwatch(wj);
    mailnotify_unwatch(wi);
}

TEST(delivery_by_another_program_is_seen)
{
    static const char msg[] = "Subject: x\r\n\r\nbody\r\n";
    struct iovec iov = { (void *)msg, sizeof msg - 1 };
    struct mailstore_target t = { "v@example.test", NULL, NULL };
    char err[256];
    /* The mailbox must exist for inotify to watch it. */
    CHECK_INT(mailstore_deliver(ms, &iov, 1, &t, 1, err, sizeof err), 0);
    struct counter c = { 0 };
    struct mailnotify_watch *w = mailnotify_watch("v@example.test", NULL, count_cb, &c);
    CHECK(w != NULL);
    CHECK_INT(mailstore_deliver(ms, &iov, 1, &t, 1, err, sizeof err), 0);  /* no report */
    run_until(&c.calls, 1);
    CHECK(c.calls >= 1);
    mailnotify_unwatch(w);
}

TEST(unwatched_folders_cost_nothing)
{
    struct counter c = { 0 };
    struct mailnotify_watch *w = mailnotify_watch("w@example.test", NULL, count_cb, &c);
    mailnotify_unwatch(w);
    mailnotify_changed("w@example.test", NULL);
    run_until(&c.calls, 1);
    CHECK_INT(c.calls, 0);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/posthorn-mn-%d", (int)getpid());
    char err[256];
    ms = mailstore_open(root, "test.example", err, sizeof err);
    loop = ev_loop_new(EVFLAG_AUTO);
    if (!ms || !loop || mailnotify_init(loop, ms) < 0) {
        fprintf(stderr, "setup failed: %s\n", err);
        return 1;
    }
    RUN(reports_from_other_threads_are_coalesced);
    RUN(delivery_by_another_program_is_seen);
    RUN(unwatched_folders_cost_nothing);
    mailnotify_shutdown();
    ev_loop_destroy(loop);
    mailstore_close(ms);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
