/* Unit tests for the worker pool: every job runs exactly once on a worker
 * thread, its done function runs on the loop thread, the pending count
 * tracks outstanding jobs, and destroy drains what is still queued. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include <ev.h>

#include "test.h"
#include "workers.h"

#define NJOBS 1000

struct job_state {
    atomic_int runs;
    int dones;
    pthread_t work_thread;
    pthread_t done_thread;
    int done_saw_work;      /* done ran after work had finished */
};

static pthread_t loop_thread;
static int total_done;

static void work_fn(void *arg)
{
    struct job_state *s = arg;
    s->work_thread = pthread_self();
    atomic_fetch_add(&s->runs, 1);
}

static void done_fn(void *arg)
{
    struct job_state *s = arg;
    s->done_thread = pthread_self();
    s->done_saw_work = atomic_load(&s->runs);
    s->dones++;
    total_done++;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs the loop until `target` done functions ran or the deadline passes. */
static void run_until_done(struct ev_loop *loop, int target, double seconds)
{
    double deadline = now() + seconds;
    while (total_done < target && now() < deadline)
        ev_run(loop, EVRUN_ONCE);
}

TEST(jobs_run_once_done_on_loop_thread)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct workers *w = workers_create(loop, 4);
    CHECK(w != NULL);
    struct job_state *st = calloc(NJOBS, sizeof *st);
    total_done = 0;
    for (int i = 0; i < NJOBS; i++)
        CHECK_INT(workers_submit(w, work_fn, done_fn, &st[i]), 0);
    CHECK(workers_pending(w) > 0);
    run_until_done(loop, NJOBS, 10.0);
    CHECK_INT(total_done, NJOBS);
    CHECK_INT(workers_pending(w), 0);
    int bad_runs = 0, bad_dones = 0, bad_thread = 0, on_loop_thread = 0;
    for (int i = 0; i < NJOBS; i++) {
        bad_runs += atomic_load(&st[i].runs) != 1;
        bad_dones += st[i].dones != 1 || st[i].done_saw_work != 1;
        bad_thread += !pthread_equal(st[i].done_thread, loop_thread);
        on_loop_thread += pthread_equal(st[i].work_thread, loop_thread);
    }
    CHECK_INT(bad_runs, 0);
    CHECK_INT(bad_dones, 0);
    CHECK_INT(bad_thread, 0);
    CHECK_INT(on_loop_thread, 0);
    workers_destroy(w);
    free(st);
    ev_loop_destroy(loop);
}

/* Distinct worker threads are used when jobs block concurrently. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int arrived;
    int need;
};

static void gate_work(void *arg)
{
    struct gate *g = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&g->lock);
    g->arrived++;
    pthread_cond_broadcast(&g->cond);
    while (g->arrived < g->need)
        if (pthread_cond_timedwait(&g->cond, &g->lock, &until) != 0)
            break;
    pthread_mutex_unlock(&g->lock);
}

static void count_done(void *arg)
{
    (void)arg;
    total_done++;
}

TEST(jobs_run_in_parallel)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct workers *w = workers_create(loop, 3);
    struct gate g = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 3 };
    total_done = 0;
    for (int i = 0; i < 3; i++)
        workers_submit(w, gate_work, count_done, &g);
    run_until_done(loop, 3, 10.0);
    CHECK_INT(total_done, 3);
    /* all three met at the gate: they ran at the same time */
    CHECK_INT(g.arrived, 3);
    workers_destroy(w);
    ev_loop_destroy(loop);
}

static void slow_work(void *arg)
{
    struct timespec ts = { 0, 2 * 1000 * 1000 };
    nanosleep(&ts, NULL);   /* simulated blocking work, not a test wait */
    atomic_fetch_add((atomic_int *)arg, 1);
}

static struct workers *resubmit_pool;
static atomic_int resubmit_runs;

static void resubmit_done(void *arg)
{
    (void)arg;
    total_done++;
    if (total_done == 1)
        workers_submit(resubmit_pool, slow_work, count_done, &resubmit_runs);
}

TEST(destroy_drains_queue)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct workers *w = workers_create(loop, 2);
    atomic_int runs = 0;
    total_done = 0;
    for (int i = 0; i < 50; i++)
        workers_submit(w, slow_work, count_done, &runs);
    workers_submit(w, slow_work, NULL, &runs);   /* done may be NULL */
    CHECK_INT(workers_pending(w), 51);
    /* the loop never ran: destroy must wait and run every done itself */
    workers_destroy(w);
    CHECK_INT(atomic_load(&runs), 51);
    CHECK_INT(total_done, 50);
    ev_loop_destroy(loop);
}

TEST(destroy_waits_for_jobs_submitted_by_done)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    resubmit_pool = workers_create(loop, 1);
    atomic_store(&resubmit_runs, 0);
    total_done = 0;
    workers_submit(resubmit_pool, slow_work, resubmit_done, &resubmit_runs);
    workers_destroy(resubmit_pool);
    CHECK_INT(atomic_load(&resubmit_runs), 2);
    CHECK_INT(total_done, 2);
    ev_loop_destroy(loop);
}

/* An idle pool must not keep ev_run alive; outstanding jobs must. */
TEST(loop_alive_only_while_jobs_pending)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct workers *w = workers_create(loop, 2);
    atomic_int runs = 0;
    total_done = 0;
    ev_run(loop, 0);   /* returns at once: nothing active */
    for (int i = 0; i < 10; i++)
        workers_submit(w, slow_work, count_done, &runs);
    ev_run(loop, 0);   /* returns once every done ran */
    CHECK_INT(total_done, 10);
    CHECK_INT(workers_pending(w), 0);
    workers_destroy(w);
    ev_loop_destroy(loop);
}

TEST(create_rejects_zero_threads)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    CHECK(workers_create(loop, 0) == NULL);
    ev_loop_destroy(loop);
}

int main(void)
{
    loop_thread = pthread_self();
    RUN(jobs_run_once_done_on_loop_thread);
    RUN(jobs_run_in_parallel);
    RUN(destroy_drains_queue);
    RUN(destroy_waits_for_jobs_submitted_by_done);
    RUN(loop_alive_only_while_jobs_pending);
    RUN(create_rejects_zero_threads);
    return test_summary();
}
