/* queue: the outbound queue's storage in STATE_DIR. One durable record per
 * message in STATE_DIR/queue.db (SQLite, WAL, synchronous=FULL) with its
 * recipients and per-recipient state, and the message itself in
 * STATE_DIR/queue/<id> (written to a temp name, fsynced, renamed, the
 * directory fsynced, before the record is committed). A crash at any point
 * loses nothing that queue_add reported as stored; a body file without a
 * record is removed by queue_open_daemon as a leftover.
 *
 * All calls block: worker threads only (and the setup CLI). A handle may be
 * used from several threads; calls are serialized. The daemon's scheduler
 * (queue_runner.h) decides when to try what; this module only stores. */
#ifndef POSTHORN_QUEUE_H
#define POSTHORN_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <time.h>

#include "buf.h"

#define QUEUE_ID_LEN 16   /* hex characters */

struct queue;

enum queue_rcpt_state {
    QUEUE_RCPT_PENDING = 0,   /* to be tried at next_attempt */
    QUEUE_RCPT_DELIVERED,
    QUEUE_RCPT_FAILED,        /* permanent failure (5xx, expiry): bounced */
};

struct queue_rcpt {
    char *address;
    char *domain;             /* lowercased domain of address */
    enum queue_rcpt_state state;
    unsigned attempts;
    time_t next_attempt;
    char *last_error;         /* the remote reply or local reason, "" if none */
    unsigned notify;          /* DSN NOTIFY bits (smtp_parse.h SMTP_NOTIFY_*), 0 = default */
    char *orcpt;              /* DSN ORCPT as given (xtext), "" if none */
};

struct queue_msg {
    char id[QUEUE_ID_LEN + 1];
    char *sender;             /* envelope sender, "" for <> */
    time_t created;
    uint64_t size;
    bool delay_notified;      /* the delay DSN was sent */
    int ret;                  /* DSN RET: smtp_parse.h SMTP_RET_* */
    char *envid;              /* DSN ENVID, "" if none */
    bool is_bounce;           /* a DSN we generated: never bounced itself */
    bool held;                /* added held, not released yet: never due */
    struct queue_rcpt *rcpts;
    size_t nrcpts;
};
void queue_msg_free(struct queue_msg *m);          /* frees the contents */
void queue_msgs_free(struct queue_msg *m, size_t n); /* frees an array and contents */

/* Opens (creating) STATE_DIR/queue.db and STATE_DIR/queue/. Never cleans
 * up: this is the handle for the setup CLI and tests. */
struct queue *queue_open(const char *state_dir, char *err, size_t errlen);

/* The daemon's handle (one per STATE_DIR): waits (bounded, about 10 s) for
 * an exclusive flock on STATE_DIR/queue/.lock and keeps it until
 * queue_close; then removes what an earlier run left: held records (their
 * submission never got its reply), body files without a record, and
 * records without a body. Fails (NULL, reason in err) when the lock cannot
 * be had: another daemon uses this STATE_DIR. */
struct queue *queue_open_daemon(const char *state_dir, char *err, size_t errlen);
void queue_close(struct queue *q);

/* What queue_add stores. */
struct queue_new {
    const char *sender;
    const char *const *rcpts;
    const unsigned *notify;     /* per recipient, may be NULL */
    const char *const *orcpt;   /* per recipient, may be NULL */
    size_t nrcpts;
    int ret;
    const char *envid;          /* may be NULL */
    bool is_bounce;
    bool held;                  /* stored but never due until queue_release */
};

/* Stores a message durably; every recipient PENDING with next_attempt =
 * now, or, when held, with next_attempt far in the future (9999-12-31) and
 * last_error "held: ..." so that `setup queue list` shows why: neither
 * queue_due, queue_next_due nor queue_flush picks a held message up.
 * Writes the new id into id (QUEUE_ID_LEN + 1). Returns 0 or -1. */
int queue_add(struct queue *q, const struct queue_new *m, const struct iovec *iov, int iovcnt,
              char *id, char *err, size_t errlen);

/* Messages with a PENDING recipient whose next_attempt <= now, oldest
 * first, at most max. Returns the count or -1. *out is freed with
 * queue_msgs_free. */
long queue_due(struct queue *q, time_t now, size_t max, struct queue_msg **out);

/* The earliest next_attempt of any PENDING recipient, or 0 when none. */
time_t queue_next_due(struct queue *q);

/* One message by id. Returns 0, or -1 (errno ENOENT when unknown). */
int queue_get(struct queue *q, const char *id, struct queue_msg *out);

/* Reads the stored message into out. */
int queue_read_body(struct queue *q, const char *id, struct buf *out, char *err, size_t errlen);

/* Records the outcome of an attempt for one recipient. */
int queue_update_rcpt(struct queue *q, const char *id, const char *address,
                      enum queue_rcpt_state state, time_t next_attempt, const char *last_error);
int queue_set_delay_notified(struct queue *q, const char *id);

/* Removes the record and the body (all recipients final, or setup queue
 * delete). Returns 0, or -1 (errno ENOENT when unknown). */
int queue_remove(struct queue *q, const char *id);

/* Every message (setup queue list), oldest first. */
long queue_list(struct queue *q, struct queue_msg **out);

/* Sets next_attempt = now for every PENDING recipient (id NULL) or those of
 * one message, held messages excepted. Returns how many recipients were changed, or -1. */
long queue_flush(struct queue *q, const char *id);

/* Releases a held message: next_attempt = now for its PENDING recipients.
 * Returns 0, or -1 (errno ENOENT when unknown). Releasing a message that is
 * not held is harmless. The submission path is queue_add(held), store the
 * local copies, then queue_release, or queue_remove when they failed, so
 * the runner never sends a message whose submission then fails. */
int queue_release(struct queue *q, const char *id);

/* Retry schedule: the delay before attempt number `attempts` + 1
 * (1, 5, 15, 30 minutes, then hourly). */
time_t queue_retry_delay(unsigned attempts);

#endif
