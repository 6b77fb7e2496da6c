/* workers: a fixed pool of threads for blocking work (fsync, SQLite,
 * password hashing, later DNS/ClamAV). A job's work function runs on a
 * worker thread; its done function then runs on the event-loop thread that
 * submitted it (woken through ev_async), in submission-independent order.
 * A job is never cancelled: whoever submits it keeps its argument alive
 * until done runs. */
#ifndef POSTHORN_WORKERS_H
#define POSTHORN_WORKERS_H

#include <ev.h>

struct workers;

typedef void (*worker_fn)(void *arg);   /* on a worker thread */
typedef void (*worker_done_fn)(void *arg); /* on the loop thread, after worker_fn */

/* Creates the pool and its ev_async watcher on `loop`. Returns NULL on
 * failure (errno set). */
struct workers *workers_create(struct ev_loop *loop, unsigned nthreads);

/* Queues a job. Returns 0, or -1 when out of memory (nothing queued).
 * Must be called from the loop thread. `done` may be NULL. */
int workers_submit(struct workers *w, worker_fn work, worker_done_fn done, void *arg);

/* Jobs queued or running whose done has not yet run. */
unsigned workers_pending(const struct workers *w);

/* Waits for every queued job to finish and runs the done functions, then
 * stops the threads and frees the pool. Call from the loop thread. */
void workers_destroy(struct workers *w);

#endif
