/* queue_runner: the outbound scheduler (see queue_runner.h).
 *
 * One round for a message: a scan job (worker) takes due messages from the
 * queue, handles lifetime expiry and the delay notice, reads the body and
 * groups the due recipients by route; on the loop the groups wait in one
 * FIFO until the total and per-route connection limits let them start an
 * mta_deliver attempt. As soon as a group's attempt ends, a record job
 * (worker) stores its recipients' outcomes: a delivery is durable at once,
 * however long the message's other routes take, so a restart does not
 * send it again. When every group is recorded, a finish job (worker) sends
 * one DSN for the recipients that failed or that asked for a success
 * notice, and removes the message when nothing is left pending. A message
 * is in at most one round at a time.
 *
 * On SIGTERM, attempts still running after ABORT_AFTER are aborted
 * (mta_abort_all), so that their outcomes are recorded within the
 * daemon's drain time. */
#include "queue_runner.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"
#include "log.h"
#include "mta.h"
#include "relay.h"
#include "smtp_parse.h"

#define LOOK_INTERVAL 5.0   /* seconds: `setup queue flush` is seen this soon */
#define ABORT_AFTER 20.0    /* seconds after SIGTERM; the daemon drains for 30 */
#define ROUTE_KEY_MAX 600

struct work;

struct dsn_entry {
    size_t idx;
    enum dsn_action action;
    char status[16];
    char remote[300];
    char diagnostic[600];
};

/* The recipients of one message that share a route: one attempt. */
struct group {
    struct work *w;
    struct route route;
    char key[ROUTE_KEY_MAX];
    size_t *idx;                     /* indices into w->msg.rcpts */
    const char **rcpts;
    unsigned *notify;
    const char **orcpt;
    size_t n;
    struct mta_job job;
    struct mta_rcpt_result *results;
    bool attempted;                  /* results are valid */
    struct dsn_entry *dsn;           /* filled by the record job */
    size_t ndsn;
    struct group *next_wait;
};

/* One message in a round. */
struct work {
    struct queue_runner *r;
    struct queue_msg msg;
    struct buf body;
    struct group *groups;
    size_t ngroups;
    size_t groups_left;
    bool queued_bounce;              /* finish queued a DSN: look again */
    struct work *next;
};

struct dest {
    char *key;
    unsigned active;
};

struct queue_runner {
    struct server *srv;
    ev_timer timer;
    ev_timer abort_timer;            /* SIGTERM + ABORT_AFTER */
    bool abort_armed;
    bool stopping;
    bool scanning;
    bool rescan;                     /* a kick came during a scan */
    bool more;                       /* the last scan had no room for everything due */
    struct work *inflight;
    size_t ninflight;
    struct group *wait_head, *wait_tail;
    unsigned active;                 /* attempts running */
    struct dest *dests;
    size_t ndests;
};

/* What a scan job needs and returns. */
struct scan {
    struct queue_runner *r;
    char (*skip)[QUEUE_ID_LEN + 1];  /* messages already in a round */
    size_t nskip;
    size_t room;
    struct work *out;
    time_t next_due;
    bool more;                       /* more is due than there was room for */
};

static void schedule(struct queue_runner *r, double after);
static void pump(struct queue_runner *r);
static bool still_queued(struct server *srv, const char *id, bool *pending);

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static size_t inflight_cap(const struct queue_runner *r)
{
    return (size_t)r->srv->settings->outbound_max_connections + 16;
}

static unsigned max_total(const struct queue_runner *r)
{
    unsigned n = r->srv->settings->outbound_max_connections;
    return n ? n : 1;
}

static unsigned max_per_dest(const struct queue_runner *r)
{
    unsigned n = r->srv->settings->outbound_max_per_destination;
    return n ? n : 1;
}

static const char *domain_part(const char *address)
{
    const char *at = strrchr(address, '@');
    return at ? at + 1 : "";
}

static void lower_copy(const char *in, char *out, size_t outlen)
{
    size_t i = 0;
    for (; in[i] && i + 1 < outlen; i++)
        out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    out[i] = '\0';
}

/* "4.4.7" from a reply "451 4.4.7 ..." or the given default. */
static void status_of(const char *enhanced, const char *fallback, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", enhanced && *enhanced ? enhanced : fallback);
}

static void log_outcome(const struct work *w, const char *rcpt, const char *remote,
                        const char *status, const char *reply)
{
    log_info("queue[%s]: to=<%s> relay=%s status=%s (%s)", w->msg.id, rcpt,
             remote && *remote ? remote : "none", status, reply ? reply : "");
}

static void group_free(struct group *g)
{
    free(g->idx);
    free(g->rcpts);
    free(g->notify);
    free(g->orcpt);
    free(g->results);
    free(g->dsn);
}

static void work_free(struct work *w)
{
    for (size_t i = 0; i < w->ngroups; i++)
        group_free(&w->groups[i]);
    free(w->groups);
    buf_free(&w->body);
    queue_msg_free(&w->msg);
    free(w);
}

/* ------------------------------------------------------------------ */
/* DSNs (worker)                                                        */

/* RFC 3461 4.1: without NOTIFY, failures and delays are reported; a
 * success only when asked for; NEVER suppresses everything. */
static bool wants_dsn(unsigned notify, enum dsn_action action)
{
    if (notify & SMTP_NOTIFY_NEVER)
        return false;
    switch (action) {
    case DSN_DELIVERED: return (notify & SMTP_NOTIFY_SUCCESS) != 0;
    case DSN_DELAYED: return notify == 0 || (notify & SMTP_NOTIFY_DELAY) != 0;
    default: return notify == 0 || (notify & SMTP_NOTIFY_FAILURE) != 0;
    }
}

/* Delivers a DSN to the sender: into a local user's INBOX, else through
 * the queue with a null sender. Returns true when it was queued. */
static bool deliver_dsn(struct server *srv, const struct queue_msg *m, const struct buf *dsn)
{
    struct accounts_list local, remote;
    enum accounts_result res = accounts_resolve(srv->accounts, m->sender, &local, &remote);
    struct iovec iov = { dsn->data, dsn->len };
    char err[512] = "";
    bool queued = false;
    if (res == ACCOUNTS_OK && local.n > 0) {
        struct mailstore_target *t = calloc(local.n, sizeof *t);
        for (size_t i = 0; t && i < local.n; i++)
            t[i].address = local.items[i];
        if (t && mailstore_deliver(srv->store, &iov, 1, t, local.n, err, sizeof err) == 0)
            log_info("queue[%s]: notification delivered to local sender <%s>", m->id, m->sender);
        else
            log_error("queue[%s]: cannot deliver the notification to <%s>: %s", m->id, m->sender,
                      t ? err : "out of memory");
        free(t);
    } else if (res == ACCOUNTS_NOT_LOCAL) {
        const char *rcpts[] = { m->sender };
        struct queue_new n = { .sender = "", .rcpts = rcpts, .nrcpts = 1, .is_bounce = true };
        char id[QUEUE_ID_LEN + 1];
        if (queue_add(srv->queue, &n, &iov, 1, id, err, sizeof err) == 0) {
            log_info("queue[%s]: notification to <%s> queued as %s", m->id, m->sender, id);
            queued = true;
        } else {
            log_error("queue[%s]: cannot queue the notification to <%s>: %s", m->id, m->sender, err);
        }
    } else {
        log_warn("queue[%s]: no notification: sender <%s> cannot receive mail here", m->id,
                 m->sender);
    }
    accounts_list_free(&local);
    accounts_list_free(&remote);
    return queued;
}

/* Sends one DSN for the entries that want one. Never for a null sender or
 * a bounce. Returns true when a DSN was queued. */
static bool send_dsn(struct server *srv, const struct queue_msg *m, const struct buf *body,
                     const struct dsn_entry *e, size_t n)
{
    if (m->sender[0] == '\0' || m->is_bounce || n == 0)
        return false;
    struct dsn_rcpt *dr = calloc(n, sizeof *dr);
    if (!dr)
        return false;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const struct queue_rcpt *qr = &m->rcpts[e[i].idx];
        if (!wants_dsn(qr->notify, e[i].action))
            continue;
        dr[k++] = (struct dsn_rcpt){
            .address = qr->address, .orcpt = qr->orcpt, .action = e[i].action,
            .status = e[i].status, .remote = e[i].remote, .diagnostic = e[i].diagnostic,
        };
    }
    /* Only successes: the headers are enough, unless RET=FULL asked for
     * the whole message (RFC 3461 4.3). */
    bool only_success = true;
    for (size_t i = 0; i < k; i++)
        only_success &= dr[i].action == DSN_DELIVERED;
    char from[300];
    snprintf(from, sizeof from, "MAILER-DAEMON@%s", srv->settings->hostname);
    struct dsn_info info = {
        .hostname = srv->settings->hostname, .from = from, .to = m->sender,
        .envid = m->envid[0] ? m->envid : NULL, .queue_id = m->id, .arrival = m->created,
        .ret_hdrs_only = m->ret == SMTP_RET_HDRS || (only_success && m->ret != SMTP_RET_FULL),
    };
    struct buf dsn = BUF_INIT;
    bool queued = false;
    if (k > 0) {
        if (dsn_build(&info, dr, k, body->data, body->len, &dsn) == 0)
            queued = deliver_dsn(srv, m, &dsn);
        else
            log_error("queue[%s]: cannot build the notification", m->id);
    }
    buf_free(&dsn);
    free(dr);
    return queued;
}

/* ------------------------------------------------------------------ */
/* Scan (worker)                                                        */

static bool lifetime_over(const struct server *srv, const struct queue_msg *m, time_t now)
{
    unsigned life = srv->settings->queue_lifetime;
    return life > 0 && now - m->created >= (time_t)life;
}

/* Fails every pending recipient of an expired message; returns whether a
 * DSN was queued. */
static bool expire(struct server *srv, struct queue_msg *m, const struct buf *body, time_t now)
{
    bool pending;
    if (!still_queued(srv, m->id, &pending))
        return false;
    struct dsn_entry *e = calloc(m->nrcpts, sizeof *e);
    size_t n = 0;
    for (size_t i = 0; e && i < m->nrcpts; i++) {
        struct queue_rcpt *qr = &m->rcpts[i];
        if (qr->state != QUEUE_RCPT_PENDING)
            continue;
        struct dsn_entry *d = &e[n++];
        d->idx = i;
        d->action = DSN_FAILED;
        snprintf(d->status, sizeof d->status, "4.4.7");
        snprintf(d->diagnostic, sizeof d->diagnostic, "delivery time expired%s%s",
                 qr->last_error[0] ? ": " : "", qr->last_error);
        if (queue_update_rcpt(srv->queue, m->id, qr->address, QUEUE_RCPT_FAILED, now,
                              d->diagnostic) < 0)
            log_error("queue[%s]: cannot record the expiry of <%s>", m->id, qr->address);
        log_info("queue[%s]: to=<%s> relay=none status=bounced (%s)", m->id, qr->address,
                 d->diagnostic);
    }
    bool queued = send_dsn(srv, m, body, e, n);
    free(e);
    if (queue_remove(srv->queue, m->id) < 0)
        log_error("queue[%s]: cannot remove: %s", m->id, strerror(errno));
    return queued;
}

/* Sends the delay notice once, for pending recipients that want it. */
static bool delay_notice(struct server *srv, struct queue_msg *m, const struct buf *body,
                         time_t now)
{
    unsigned warn = srv->settings->queue_delay_warning;
    bool pending;
    if (warn == 0 || m->delay_notified || now - m->created < (time_t)warn ||
        !still_queued(srv, m->id, &pending))
        return false;
    struct dsn_entry *e = calloc(m->nrcpts, sizeof *e);
    size_t n = 0;
    for (size_t i = 0; e && i < m->nrcpts; i++) {
        const struct queue_rcpt *qr = &m->rcpts[i];
        if (qr->state != QUEUE_RCPT_PENDING)
            continue;
        struct dsn_entry *d = &e[n++];
        d->idx = i;
        d->action = DSN_DELAYED;
        snprintf(d->status, sizeof d->status, "4.4.7");
        snprintf(d->diagnostic, sizeof d->diagnostic, "%s",
                 qr->last_error[0] ? qr->last_error : "delivery not yet completed");
    }
    bool queued = send_dsn(srv, m, body, e, n);
    free(e);
    if (queue_set_delay_notified(srv->queue, m->id) < 0)
        log_error("queue[%s]: cannot record the delay notice", m->id);
    return queued;
}

static struct group *find_or_add_group(struct work *w, const struct route *rt, const char *key)
{
    for (size_t i = 0; i < w->ngroups; i++)
        if (strcmp(w->groups[i].key, key) == 0)
            return &w->groups[i];
    size_t cap = w->msg.nrcpts;   /* groups never outnumber recipients */
    if (!w->groups && !(w->groups = calloc(cap, sizeof *w->groups)))
        return NULL;
    struct group *g = &w->groups[w->ngroups];
    g->w = w;
    g->route = *rt;
    snprintf(g->key, sizeof g->key, "%s", key);
    g->idx = calloc(cap, sizeof *g->idx);
    g->rcpts = calloc(cap, sizeof *g->rcpts);
    g->notify = calloc(cap, sizeof *g->notify);
    g->orcpt = calloc(cap, sizeof *g->orcpt);
    g->results = calloc(cap, sizeof *g->results);
    g->dsn = calloc(cap, sizeof *g->dsn);
    if (!g->idx || !g->rcpts || !g->notify || !g->orcpt || !g->results || !g->dsn) {
        group_free(g);
        memset(g, 0, sizeof *g);
        return NULL;
    }
    w->ngroups++;
    return g;
}

/* A local problem (database, file) before the attempt: tried again later
 * like a temporary failure, so that it does not come back every scan. */
static void defer(struct server *srv, const struct queue_msg *m, const struct queue_rcpt *qr,
                  time_t now, const char *why)
{
    char reply[600];
    snprintf(reply, sizeof reply, "451 4.3.0 %s", why);
    if (queue_update_rcpt(srv->queue, m->id, qr->address, QUEUE_RCPT_PENDING,
                          now + queue_retry_delay(qr->attempts + 1), reply) < 0)
        log_error("queue[%s]: cannot record the outcome for <%s>", m->id, qr->address);
    log_info("queue[%s]: to=<%s> relay=none status=deferred (%s)", m->id, qr->address, reply);
}

static void defer_all_due(struct server *srv, const struct queue_msg *m, time_t now,
                          const char *why)
{
    for (size_t i = 0; i < m->nrcpts; i++)
        if (m->rcpts[i].state == QUEUE_RCPT_PENDING && m->rcpts[i].next_attempt <= now)
            defer(srv, m, &m->rcpts[i], now, why);
}

/* Groups the due pending recipients by route. */
static void make_groups(struct server *srv, struct work *w, time_t now)
{
    char sender_domain[256];
    lower_copy(domain_part(w->msg.sender), sender_domain, sizeof sender_domain);
    for (size_t i = 0; i < w->msg.nrcpts; i++) {
        struct queue_rcpt *qr = &w->msg.rcpts[i];
        if (qr->state != QUEUE_RCPT_PENDING || qr->next_attempt > now)
            continue;
        struct route rt;
        char err[256] = "", key[ROUTE_KEY_MAX];
        if (relay_route(srv->settings, srv->accounts, sender_domain, qr->domain, &rt, err,
                        sizeof err) < 0) {
            log_error("queue[%s]: no route for <%s>: %s", w->msg.id, qr->address, err);
            defer(srv, &w->msg, qr, now, "cannot decide the route (database error)");
            continue;
        }
        relay_route_key(&rt, qr->domain, key, sizeof key);
        struct group *g = find_or_add_group(w, &rt, key);
        if (!g) {
            log_error("queue[%s]: out of memory", w->msg.id);
            continue;
        }
        g->idx[g->n] = i;
        g->rcpts[g->n] = qr->address;
        g->notify[g->n] = qr->notify;
        g->orcpt[g->n] = qr->orcpt[0] ? qr->orcpt : NULL;
        g->n++;
    }
}

static bool skipped(const struct scan *s, const char *id)
{
    for (size_t i = 0; i < s->nskip; i++)
        if (strcmp(s->skip[i], id) == 0)
            return true;
    return false;
}

/* Prepares one due message; returns NULL when there is nothing to try. */
static struct work *prepare(struct scan *s, struct queue_msg *m, time_t now)
{
    struct server *srv = s->r->srv;
    struct work *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->r = s->r;
    w->msg = *m;
    memset(m, 0, sizeof *m);   /* owned by w now */
    char err[512] = "";
    if (queue_read_body(srv->queue, w->msg.id, &w->body, err, sizeof err) < 0) {
        log_error("queue[%s]: %s", w->msg.id, err);
        defer_all_due(srv, &w->msg, now, "cannot read the queued message");
        work_free(w);
        return NULL;
    }
    if (lifetime_over(srv, &w->msg, now)) {
        s->more |= expire(srv, &w->msg, &w->body, now);   /* a DSN was queued */
        work_free(w);
        return NULL;
    }
    if (!w->msg.is_bounce && w->msg.sender[0] && delay_notice(srv, &w->msg, &w->body, now))
        s->more = true;
    make_groups(srv, w, now);
    if (w->ngroups == 0) {
        work_free(w);
        return NULL;
    }
    w->groups_left = w->ngroups;
    return w;
}

static void scan_work(void *arg)
{
    struct scan *s = arg;
    struct server *srv = s->r->srv;
    time_t now = time(NULL);
    struct queue_msg *v = NULL;
    long n = queue_due(srv->queue, now, s->nskip + s->room + 1, &v);
    size_t taken = 0;
    struct work **tail = &s->out;
    for (long i = 0; i < n; i++) {
        if (skipped(s, v[i].id))
            continue;
        if (taken == s->room) {
            s->more = true;
            break;
        }
        taken++;
        struct work *w = prepare(s, &v[i], now);
        if (w) {
            *tail = w;
            tail = &w->next;
        }
    }
    queue_msgs_free(v, n > 0 ? (size_t)n : 0);
    s->next_due = queue_next_due(srv->queue);
}

/* ------------------------------------------------------------------ */
/* Recording and finishing (worker)                                     */

static void add_dsn_entry(struct group *g, size_t idx, enum dsn_action action,
                          const struct mta_rcpt_result *res, const char *fallback,
                          const char *diagnostic)
{
    struct dsn_entry *d = &g->dsn[g->ndsn++];
    d->idx = idx;
    d->action = action;
    status_of(res->enhanced, fallback, d->status, sizeof d->status);
    snprintf(d->remote, sizeof d->remote, "%s", res->remote);
    snprintf(d->diagnostic, sizeof d->diagnostic, "%s", diagnostic);
}

/* Records one recipient's outcome; adds a DSN entry for a failure, and
 * for a delivery whose sender asked NOTIFY=SUCCESS from a server that will
 * not report it itself (no DSN extension: "relayed", RFC 3461 5.2.2). */
static void record(struct server *srv, struct group *g, size_t k, time_t now)
{
    struct work *w = g->w;
    const struct mta_rcpt_result *res = &g->results[k];
    size_t idx = g->idx[k];
    struct queue_msg *m = &w->msg;
    struct queue_rcpt *qr = &m->rcpts[idx];
    enum queue_rcpt_state state = QUEUE_RCPT_FAILED;
    time_t next = now;
    const char *word = "bounced";
    char reply[600];
    snprintf(reply, sizeof reply, "%s", res->reply);
    if (res->status == MTA_DELIVERED) {
        state = QUEUE_RCPT_DELIVERED;
        word = "sent";
    } else if (res->status == MTA_TEMPFAIL && !lifetime_over(srv, m, now)) {
        state = QUEUE_RCPT_PENDING;
        next = now + queue_retry_delay(qr->attempts + 1);
        word = "deferred";
    } else if (res->status == MTA_TEMPFAIL) {
        snprintf(reply, sizeof reply, "delivery time expired: %s", res->reply);
    }
    if (queue_update_rcpt(srv->queue, m->id, qr->address, state, next, reply) < 0) {
        if (errno == ENOENT)
            log_info("queue[%s]: deleted during the attempt; outcome for <%s> not recorded",
                     m->id, qr->address);
        else
            log_error("queue[%s]: cannot record the outcome for <%s>", m->id, qr->address);
    }
    qr->state = state;   /* this group's recipients only: no other job touches them */
    log_outcome(w, qr->address, res->remote, word, reply);
    if (state == QUEUE_RCPT_FAILED)
        add_dsn_entry(g, idx, DSN_FAILED, res, res->status == MTA_TEMPFAIL ? "4.4.7" : "5.0.0",
                      reply);
    else if (state == QUEUE_RCPT_DELIVERED && !res->remote_dsn &&
             wants_dsn(qr->notify, DSN_DELIVERED))
        add_dsn_entry(g, idx, DSN_DELIVERED, res, "2.0.0", reply);
}

/* One group's outcomes, as soon as its attempt ended (worker). */
static void record_work(void *arg)
{
    struct group *g = arg;
    time_t now = time(NULL);
    for (size_t k = 0; g->attempted && k < g->n; k++)
        record(g->w->r->srv, g, k, now);
}

/* The message as stored now; false when it is gone (`setup queue delete`
 * during the round) or unreadable. */
static bool still_queued(struct server *srv, const char *id, bool *pending)
{
    struct queue_msg m;
    *pending = true;   /* unknown state: keep it (a later round decides) */
    if (queue_get(srv->queue, id, &m) < 0) {
        bool gone = errno == ENOENT;
        if (gone)
            log_info("queue[%s]: deleted during the delivery round; no notification", id);
        else
            log_error("queue[%s]: cannot read the record after the round", id);
        return !gone;
    }
    bool any = false;
    for (size_t i = 0; i < m.nrcpts; i++)
        any |= m.rcpts[i].state == QUEUE_RCPT_PENDING;
    queue_msg_free(&m);
    *pending = any;
    return true;
}

/* The end of the round (worker): one DSN, then the message goes when
 * nothing is left pending. */
static void finish_work(void *arg)
{
    struct work *w = arg;
    struct server *srv = w->r->srv;
    bool pending;
    if (!still_queued(srv, w->msg.id, &pending))
        return;
    size_t ne = 0;
    for (size_t g = 0; g < w->ngroups; g++)
        ne += w->groups[g].ndsn;
    struct dsn_entry *e = ne ? calloc(ne, sizeof *e) : NULL;
    if (ne && !e) {
        log_error("queue[%s]: out of memory; no notification", w->msg.id);
        ne = 0;
    }
    size_t k = 0;
    for (size_t g = 0; e && g < w->ngroups; g++) {
        memcpy(e + k, w->groups[g].dsn, w->groups[g].ndsn * sizeof *e);
        k += w->groups[g].ndsn;
    }
    w->queued_bounce = send_dsn(srv, &w->msg, &w->body, e, ne);
    free(e);
    if (!pending && queue_remove(srv->queue, w->msg.id) < 0)
        log_error("queue[%s]: cannot remove: %s", w->msg.id, strerror(errno));
}

/* ------------------------------------------------------------------ */
/* Loop side                                                            */

static void unlink_inflight(struct queue_runner *r, struct work *w)
{
    for (struct work **p = &r->inflight; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            r->ninflight--;
            return;
        }
    }
}

static void finish_done(void *arg)
{
    struct work *w = arg;
    struct queue_runner *r = w->r;
    bool again = w->queued_bounce || r->more;
    unlink_inflight(r, w);
    work_free(w);
    if (again && !r->stopping)
        queue_runner_kick(r);
}

/* A group is recorded (or was never attempted): the round ends with the
 * last one. */
static void group_finished(struct group *g)
{
    struct work *w = g->w;
    if (--w->groups_left > 0)
        return;
    if (workers_submit(w->r->srv->workers, finish_work, finish_done, w) < 0) {
        /* The outcomes are recorded; the DSN and the removal are not: a
         * message with nothing pending is not due again, so say so. */
        log_error("queue[%s]: cannot finish the round: out of memory", w->msg.id);
        finish_done(w);
    }
}

static void record_done(void *arg)
{
    group_finished(arg);
}

/* The attempt ended: record its outcomes now, not at the end of the
 * round. */
static void group_attempted(struct group *g)
{
    g->attempted = true;
    if (workers_submit(g->w->r->srv->workers, record_work, record_done, g) < 0) {
        /* Nothing recorded: the recipients stay due and are tried again. */
        log_error("queue[%s]: cannot record outcomes: out of memory", g->w->msg.id);
        g->attempted = false;
        group_finished(g);
    }
}

static struct dest *dest_find(struct queue_runner *r, const char *key, bool create)
{
    for (size_t i = 0; i < r->ndests; i++)
        if (strcmp(r->dests[i].key, key) == 0)
            return &r->dests[i];
    if (!create)
        return NULL;
    struct dest *d = realloc(r->dests, (r->ndests + 1) * sizeof *d);
    if (!d)
        return NULL;
    r->dests = d;
    d = &r->dests[r->ndests];
    if (!(d->key = strdup(key)))
        return NULL;
    d->active = 0;
    r->ndests++;
    return d;
}

static void dest_release(struct queue_runner *r, const char *key)
{
    struct dest *d = dest_find(r, key, false);
    if (!d || --d->active > 0)
        return;
    free(d->key);
    *d = r->dests[--r->ndests];
}

static void mta_done(void *arg, const struct mta_rcpt_result *results, size_t n)
{
    struct group *g = arg;
    struct queue_runner *r = g->w->r;
    for (size_t i = 0; i < n && i < g->n; i++)
        g->results[i] = results[i];
    for (size_t i = n; i < g->n; i++) {   /* not answered: try again later */
        g->results[i].status = MTA_TEMPFAIL;
        snprintf(g->results[i].reply, sizeof g->results[i].reply, "no result from the attempt");
    }
    r->active--;
    dest_release(r, g->key);
    group_attempted(g);
    pump(r);
}

static void start_group(struct queue_runner *r, struct group *g, struct dest *d)
{
    struct work *w = g->w;
    g->job = (struct mta_job){
        .route = &g->route, .rcpt_domain = w->msg.rcpts[g->idx[0]].domain,
        .sender = w->msg.sender, .rcpts = g->rcpts, .notify = g->notify, .orcpt = g->orcpt,
        .nrcpts = g->n, .ret = w->msg.ret, .envid = w->msg.envid[0] ? w->msg.envid : NULL,
        .body = &w->body, .log_id = w->msg.id,
    };
    d->active++;
    r->active++;
    if (mta_deliver(r->srv, &g->job, mta_done, g) == 0)
        return;
    struct mta_rcpt_result res = { .status = MTA_TEMPFAIL };
    snprintf(res.reply, sizeof res.reply, "451 4.3.0 cannot start the attempt: out of memory");
    snprintf(res.enhanced, sizeof res.enhanced, "4.3.0");
    for (size_t i = 0; i < g->n; i++)
        g->results[i] = res;
    r->active--;
    dest_release(r, g->key);
    group_attempted(g);
}

/* Starts waiting attempts as far as the limits allow, oldest first; a
 * group whose route is at its limit does not hold up other routes. */
static void pump(struct queue_runner *r)
{
    struct group **p = &r->wait_head, *prev = NULL;
    while (*p && r->active < max_total(r) && !r->stopping) {
        struct group *g = *p;
        struct dest *d = dest_find(r, g->key, true);
        if (!d || d->active >= max_per_dest(r)) {
            prev = g;
            p = &g->next_wait;
            continue;
        }
        *p = g->next_wait;
        if (r->wait_tail == g)
            r->wait_tail = prev;
        g->next_wait = NULL;
        start_group(r, g, d);
    }
}

static void enqueue_groups(struct queue_runner *r, struct work *w)
{
    for (size_t i = 0; i < w->ngroups; i++) {
        struct group *g = &w->groups[i];
        if (r->wait_tail)
            r->wait_tail->next_wait = g;
        else
            r->wait_head = g;
        r->wait_tail = g;
    }
}

static void scan_done(void *arg)
{
    struct scan *s = arg;
    struct queue_runner *r = s->r;
    r->scanning = false;
    bool added = s->out != NULL;
    while (s->out) {
        struct work *w = s->out;
        s->out = w->next;
        w->next = r->inflight;
        r->inflight = w;
        r->ninflight++;
        enqueue_groups(r, w);
    }
    time_t now = time(NULL), next_due = s->next_due;
    r->more |= s->more;
    free(s->skip);
    free(s);
    if (r->stopping) {
        queue_runner_stop(r);   /* drops what this scan added */
        return;
    }
    pump(r);
    double after = LOOK_INTERVAL;
    if (next_due > now && (double)(next_due - now) < after)
        after = (double)(next_due - now);
    if (r->rescan || (r->more && added && r->ninflight < inflight_cap(r)))
        after = 0;
    r->rescan = false;
    schedule(r, after);
}

static void start_scan(struct queue_runner *r)
{
    if (r->stopping)
        return;
    if (r->scanning) {
        r->rescan = true;
        return;
    }
    size_t cap = inflight_cap(r);
    if (r->ninflight >= cap) {
        r->more = true;   /* a finishing message looks again */
        schedule(r, LOOK_INTERVAL);
        return;
    }
    struct scan *s = calloc(1, sizeof *s);
    if (s && r->ninflight > 0)
        s->skip = calloc(r->ninflight, sizeof *s->skip);
    if (!s || (r->ninflight > 0 && !s->skip)) {
        log_error("queue: out of memory; looking again later");
        free(s);
        schedule(r, LOOK_INTERVAL);
        return;
    }
    s->r = r;
    s->room = cap - r->ninflight;
    for (struct work *w = r->inflight; w; w = w->next)
        memcpy(s->skip[s->nskip++], w->msg.id, QUEUE_ID_LEN + 1);
    r->more = false;
    r->scanning = true;
    if (workers_submit(r->srv->workers, scan_work, scan_done, s) < 0) {
        r->scanning = false;
        free(s->skip);
        free(s);
        schedule(r, LOOK_INTERVAL);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    start_scan(t->data);
}

static void schedule(struct queue_runner *r, double after)
{
    ev_timer_stop(r->srv->loop, &r->timer);
    ev_timer_set(&r->timer, after < 0 ? 0 : after, 0);
    ev_timer_start(r->srv->loop, &r->timer);
}

/* SIGTERM was ABORT_AFTER ago: attempts still running are cut short so
 * that their outcomes are recorded before the daemon's drain ends. */
static void abort_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct queue_runner *r = t->data;
    if (r->active == 0)
        return;
    log_warn("queue: %u delivery attempts still running %.0f s after the stop; aborting them",
             r->active, ABORT_AFTER);
    mta_abort_all();
}

struct queue_runner *queue_runner_start(struct server *srv)
{
    struct queue_runner *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = srv;
    ev_timer_init(&r->timer, timer_cb, 0, 0);
    r->timer.data = r;
    ev_timer_init(&r->abort_timer, abort_cb, ABORT_AFTER, 0);
    r->abort_timer.data = r;
    schedule(r, 0);
    return r;
}

void queue_runner_kick(struct queue_runner *r)
{
    if (r && !r->stopping)
        schedule(r, 0);
}

void queue_runner_stop(struct queue_runner *r)
{
    if (!r)
        return;
    r->stopping = true;
    ev_timer_stop(r->srv->loop, &r->timer);
    if (!r->abort_armed) {
        r->abort_armed = true;
        ev_timer_start(r->srv->loop, &r->abort_timer);
    }
    /* Waiting attempts are dropped: their recipients keep their state and
     * are tried after the restart. */
    while (r->wait_head) {
        struct group *g = r->wait_head;
        r->wait_head = g->next_wait;
        g->next_wait = NULL;
        group_finished(g);
    }
    r->wait_tail = NULL;
}

unsigned queue_runner_busy(const struct queue_runner *r)
{
    return r ? (unsigned)r->ninflight + (r->scanning ? 1u : 0u) : 0;
}

void queue_runner_free(struct queue_runner *r)
{
    if (!r)
        return;
    ev_timer_stop(r->srv->loop, &r->timer);
    ev_timer_stop(r->srv->loop, &r->abort_timer);
    if (r->ninflight || r->scanning)
        log_warn("queue: runner freed with %zu messages in flight", r->ninflight);
    for (size_t i = 0; i < r->ndests; i++)
        free(r->dests[i].key);
    free(r->dests);
    free(r);
}
