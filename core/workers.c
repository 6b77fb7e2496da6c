#include "workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "log.h"

/* Large enough for SQLite and yescrypt (which needs well over 64 KB); the
 * pages are only committed when touched. */
#define WORKER_STACK_SIZE (1024 * 1024)

struct job {
    worker_fn work;
    worker_done_fn done;
    void *arg;
    struct job *next;
};

struct job_queue {
    struct job *head;
    struct job *tail;
};

struct workers {
    struct ev_loop *loop;
    ev_async async;
    pthread_mutex_t lock;
    pthread_cond_t has_job;      /* signalled when todo gains a job or on stop */
    pthread_cond_t job_finished; /* signalled when a job moves to done */
    struct job_queue todo;       /* guarded by lock */
    struct job_queue done;       /* guarded by lock */
    bool stopping;               /* guarded by lock */
    unsigned pending;            /* loop thread only */
    unsigned nthreads;
    pthread_t *threads;
};

static void queue_push(struct job_queue *q, struct job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static struct job *queue_pop(struct job_queue *q)
{
    struct job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
    }
    return j;
}

/* Takes the whole queue at once so done functions run without the lock. */
static struct job *queue_take_all(struct job_queue *q)
{
    struct job *j = q->head;
    q->head = q->tail = NULL;
    return j;
}

static void *worker_main(void *p)
{
    struct workers *w = p;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        struct job *j = queue_pop(&w->todo);
        if (!j) {
            if (w->stopping)
                break;
            pthread_cond_wait(&w->has_job, &w->lock);
            continue;
        }
        pthread_mutex_unlock(&w->lock);
        j->work(j->arg);
        pthread_mutex_lock(&w->lock);
        queue_push(&w->done, j);
        pthread_cond_signal(&w->job_finished);
        ev_async_send(w->loop, &w->async);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* The async watcher keeps the loop alive only while jobs are outstanding,
 * so an idle pool never prevents ev_run from returning. */
static void pending_inc(struct workers *w)
{
    if (w->pending++ == 0)
        ev_ref(w->loop);
}

static void pending_dec(struct workers *w)
{
    if (--w->pending == 0)
        ev_unref(w->loop);
}

static void run_done_list(struct workers *w, struct job *j)
{
    while (j) {
        struct job *next = j->next;
        if (j->done)
            j->done(j->arg);
        free(j);
        pending_dec(w);
        j = next;
    }
}

static void on_async(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct workers *w = a->data;
    pthread_mutex_lock(&w->lock);
    struct job *list = queue_take_all(&w->done);
    pthread_mutex_unlock(&w->lock);
    run_done_list(w, list);
}

static void stop_threads(struct workers *w, unsigned started)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->has_job);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(w->threads[i], NULL);
}

static int start_threads(struct workers *w)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0)
        rc = pthread_attr_setstacksize(&attr, WORKER_STACK_SIZE);
    unsigned i = 0;
    for (; rc == 0 && i < w->nthreads; i++)
        rc = pthread_create(&w->threads[i], &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        /* i counts the failed attempt too */
        stop_threads(w, i > 0 ? i - 1 : 0);
        errno = rc;
        return -1;
    }
    return 0;
}

static void free_pool(struct workers *w)
{
    pthread_cond_destroy(&w->job_finished);
    pthread_cond_destroy(&w->has_job);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w);
}

struct workers *workers_create(struct ev_loop *loop, unsigned nthreads)
{
    if (nthreads == 0) {
        errno = EINVAL;
        return NULL;
    }
    struct workers *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->threads = calloc(nthreads, sizeof *w->threads);
    if (!w->threads) {
        free(w);
        return NULL;
    }
    w->loop = loop;
    w->nthreads = nthreads;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->has_job, NULL);
    pthread_cond_init(&w->job_finished, NULL);
    ev_async_init(&w->async, on_async);
    w->async.data = w;
    if (start_threads(w) < 0) {
        int saved = errno;
        log_error("workers: cannot start %u threads: error %d", nthreads, saved);
        free_pool(w);
        errno = saved;
        return NULL;
    }
    ev_async_start(loop, &w->async);
    ev_unref(loop);
    return w;
}

int workers_submit(struct workers *w, worker_fn work, worker_done_fn done, void *arg)
{
    struct job *j = malloc(sizeof *j);
    if (!j) {
        log_error("workers: out of memory queueing a job");
        return -1;
    }
    j->work = work;
    j->done = done;
    j->arg = arg;
    pending_inc(w);
    pthread_mutex_lock(&w->lock);
    queue_push(&w->todo, j);
    pthread_cond_signal(&w->has_job);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

unsigned workers_pending(const struct workers *w)
{
    return w->pending;
}

/* Runs done functions as jobs finish until nothing is outstanding; a done
 * function may submit further jobs, which are waited for too. */
static void drain(struct workers *w)
{
    while (w->pending > 0) {
        pthread_mutex_lock(&w->lock);
        while (!w->done.head)
            pthread_cond_wait(&w->job_finished, &w->lock);
        struct job *list = queue_take_all(&w->done);
        pthread_mutex_unlock(&w->lock);
        run_done_list(w, list);
    }
}

void workers_destroy(struct workers *w)
{
    if (!w)
        return;
    drain(w);
    stop_threads(w, w->nthreads);
    /* Balance the ev_unref in workers_create before stopping the watcher,
     * as libev requires. */
    ev_ref(w->loop);
    ev_async_stop(w->loop, &w->async);
    free_pool(w);
}
