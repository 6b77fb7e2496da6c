/* setup queue list|flush|delete: the outbound queue. The daemon looks at
 * the queue at least every few seconds, so a flush is seen without a
 * signal. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "queue.h"
#include "setup.h"

struct queue_op {
    const char *verb;
    const char *id;      /* NULL: every message (flush) */
};

static void iso_time(time_t t, char *out, size_t outlen)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "-");
}

static const char *state_name(enum queue_rcpt_state s)
{
    switch (s) {
    case QUEUE_RCPT_PENDING: return "pending";
    case QUEUE_RCPT_DELIVERED: return "delivered";
    default: return "failed";
    }
}

static void print_msg(const struct queue_msg *m)
{
    char created[32];
    iso_time(m->created, created, sizeof created);
    printf("%s  %s  %llu  %s\n", m->id, created, (unsigned long long)m->size,
           m->sender[0] ? m->sender : "<>");
    for (size_t i = 0; i < m->nrcpts; i++) {
        const struct queue_rcpt *r = &m->rcpts[i];
        char next[32];
        iso_time(r->next_attempt, next, sizeof next);
        printf("    %s  %s  attempts=%u  next=%s  %s\n", r->address, state_name(r->state),
               r->attempts, r->state == QUEUE_RCPT_PENDING ? next : "-", r->last_error);
    }
}

static int list(struct queue *q)
{
    struct queue_msg *v;
    long n = queue_list(q, &v);
    if (n < 0)
        return setup_fail("cannot list the queue");
    if (n == 0)
        printf("queue is empty\n");
    for (long i = 0; i < n; i++)
        print_msg(&v[i]);
    queue_msgs_free(v, (size_t)n);
    return SETUP_OK;
}

static int flush(struct queue *q, const char *id)
{
    struct queue_msg m;
    if (id) {
        if (queue_get(q, id, &m) < 0)
            return errno == ENOENT ? setup_fail("no such queued message: %s", id)
                                   : setup_fail("cannot read the queue");
        queue_msg_free(&m);
    }
    long n = queue_flush(q, id);
    if (n < 0)
        return setup_fail("cannot flush the queue");
    printf("flushed %ld recipients\n", n);
    return SETUP_OK;
}

static int delete_msg(struct queue *q, const char *id)
{
    if (queue_remove(q, id) == 0) {
        printf("deleted %s\n", id);
        return SETUP_OK;
    }
    return errno == ENOENT ? setup_fail("no such queued message: %s", id)
                           : setup_fail("cannot delete %s", id);
}

static int run_op(const struct settings *s, void *arg)
{
    const struct queue_op *op = arg;
    char err[512];
    struct queue *q = queue_open(s->state_dir, err, sizeof err);
    if (!q)
        return setup_fail("%s", err);
    int rc;
    if (strcmp(op->verb, "list") == 0)
        rc = list(q);
    else if (strcmp(op->verb, "flush") == 0)
        rc = flush(q, op->id);
    else
        rc = delete_msg(q, op->id);
    queue_close(q);
    return rc;
}

int cmd_queue(const struct settings *s, int argc, char **argv)
{
    if (argc < 1)
        return setup_usage_error("usage: setup queue list|flush [<id>]|delete <id>");
    struct queue_op op = { .verb = argv[0], .id = argc > 1 ? argv[1] : NULL };
    if (strcmp(op.verb, "list") == 0) {
        if (argc != 1)
            return setup_usage_error("usage: setup queue list");
    } else if (strcmp(op.verb, "flush") == 0) {
        if (argc > 2)
            return setup_usage_error("usage: setup queue flush [<id>]");
    } else if (strcmp(op.verb, "delete") == 0) {
        if (argc != 2)
            return setup_usage_error("usage: setup queue delete <id>");
    } else {
        return setup_usage_error("unknown queue command '%s' (see setup help)", op.verb);
    }
    return setup_run_as_owner(s, s->state_dir, 0750, run_op, &op);
}
