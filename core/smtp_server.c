/* The SMTP server session: connections, commands and input, for port 25
 * and the submission ports. See smtp_server.h; AUTH is in smtp_auth.c and
 * the end of a transaction in smtp_deliver.c.
 *
 * A session is a small state machine driven by conn events. It reads one
 * command line at a time (or DATA/BDAT octets), answers it, and pauses
 * reading whenever work goes to the worker pool (recipient lookup,
 * delivery), so that pipelined commands are answered in order. */
#include "smtp_server.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "listener.h"
#include "log.h"
#include "quota.h"
#include "smtp_session.h"

static struct smtp_session *sessions;
static unsigned session_count;
static size_t buffered_total;         /* message octets held by all sessions */


/* --- small helpers ---------------------------------------------------- */

int smtp_strvec_add(struct strvec *sv, const char *str)
{
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 4;
        char **v = realloc(sv->v, cap * sizeof *v);
        if (!v)
            return -1;
        sv->v = v;
        sv->cap = cap;
    }
    char *copy = strdup(str);
    if (!copy)
        return -1;
    sv->v[sv->n++] = copy;
    return 0;
}

bool smtp_strvec_has(const struct strvec *sv, const char *str)
{
    for (size_t i = 0; i < sv->n; i++)
        if (strcmp(sv->v[i], str) == 0)
            return true;
    return false;
}

void smtp_strvec_clear(struct strvec *sv)
{
    for (size_t i = 0; i < sv->n; i++)
        free(sv->v[i]);
    free(sv->v);
    sv->v = NULL;
    sv->n = sv->cap = 0;
}

const char *smtp_hostname(const struct smtp_session *s)
{
    return s->srv->settings->hostname;
}

bool smtp_is_submission(const struct smtp_session *s)
{
    return s->svc != SMTP_SERVICE_MX;
}

/* Sends one reply line; error replies are logged. When `counts`, an error
 * reply counts towards SMTP_ERROR_LIMIT, and the session is dropped with
 * 421 when it is reached. A 421 closes the session. */
static void vreply(struct smtp_session *s, bool counts, int code, const char *enhanced,
                   const char *fmt, va_list ap)
{
    if (!s->conn || s->phase == PHASE_CLOSING)
        return;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    conn_printf(s->conn, "%d %s %s\r\n", code, enhanced, text);
    if (code < 400)
        return;
    log_info("smtp[%s]: %s: reply %d %s %s", s->id, s->peer, code, enhanced, text);
    if (code == 421) {
        smtp_session_close(s);
        return;
    }
    if (counts && ++s->errors >= SMTP_ERROR_LIMIT) {
        log_info("smtp[%s]: %s: too many errors, disconnecting", s->id, s->peer);
        conn_printf(s->conn, "421 4.7.0 %s Error: too many errors\r\n", smtp_hostname(s));
        smtp_session_close(s);
    }
}

void smtp_reply(struct smtp_session *s, int code, const char *enhanced, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreply(s, true, code, enhanced, fmt, ap);
    va_end(ap);
}

/* A refusal that says nothing bad about the client. */
void smtp_reply_nocount(struct smtp_session *s, int code, const char *enhanced,
                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreply(s, false, code, enhanced, fmt, ap);
    va_end(ap);
}

/* Frees the message buffer and its share of the memory budget. */
static void message_drop(struct smtp_session *s)
{
    buffered_total -= s->budgeted;
    s->budgeted = 0;
    buf_free(&s->msg);
}

/* Room for `more` octets of message within the budget; false (and the
 * message dropped) when there is none. */
static bool message_budget(struct smtp_session *s, size_t more)
{
    if (buffered_total + more <= SMTP_MEMORY_BUDGET) {
        buffered_total += more;
        s->budgeted += more;
        return true;
    }
    if (!s->over_budget)
        log_warn("smtp[%s]: %s: messages in memory reached %zu MiB; refusing this one",
                 s->id, s->peer, SMTP_MEMORY_BUDGET >> 20);
    s->over_budget = true;
    message_drop(s);
    return false;
}

void smtp_transaction_reset(struct smtp_session *s)
{
    s->in_mail = false;
    memset(&s->mail, 0, sizeof s->mail);
    smtp_strvec_clear(&s->rcpts);
    smtp_strvec_clear(&s->mailboxes);
    smtp_strvec_clear(&s->remote);
    smtp_strvec_clear(&s->remote_orcpt);
    free(s->remote_notify);
    s->remote_notify = NULL;
    s->rcpt_tried = false;
    message_drop(s);
    s->too_big = false;
    s->over_budget = false;
    s->bdat_used = false;
    s->bdat_last = false;
    s->bdat_discard = false;
    s->bdat_left = 0;
    pipeline_session_clear(s->filters, FILTER_MAIL);
}

void smtp_session_close(struct smtp_session *s)
{
    if (s->phase == PHASE_CLOSING || !s->conn)
        return;
    s->phase = PHASE_CLOSING;
    conn_close(s->conn);
}

static void session_free(struct smtp_session *s)
{
    smtp_transaction_reset(s);
    if (s->counted)
        iplimit_release(s->peer);
    if (s->prev)
        s->prev->next = s->next;
    else
        sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    session_count--;
    pipeline_session_free(s->filters);
    free(s);
}

/* Work went to the pool: stop reading until it is answered. */
void smtp_session_suspend(struct smtp_session *s)
{
    s->busy = true;
    conn_pause_read(s->conn);
}

/* Back from the pool. Returns false when the session is gone (freed). */
bool smtp_session_resume(struct smtp_session *s)
{
    s->busy = false;
    if (!s->conn) {
        session_free(s);
        return false;
    }
    if (s->phase != PHASE_CLOSING)
        conn_resume_read(s->conn);
    return true;
}

/* After SIGTERM a session ends at the first point where it has no
 * transaction under way. */
bool smtp_stop_if_shutting_down(struct smtp_session *s)
{
    if (!s->srv->stopping)
        return false;
    smtp_reply(s, 421, "4.3.2", "%s Service shutting down, closing transmission channel",
          smtp_hostname(s));
    return true;
}

/* --- filters (filters/pipeline.h) -------------------------------------------- */

void smtp_filter_txn(const struct smtp_session *s, struct filter_txn *t)
{
    memset(t, 0, sizeof *t);
    t->srv = s->srv;
    t->id = s->id;
    t->client = &s->peer_sa;
    t->client_ip = s->peer;
    t->helo = s->helo;
    t->mail_from = s->in_mail ? s->mail.from.mailbox : NULL;
    t->authenticated = s->authed;
}

/* Runs the filters of `stage` on the pool when some enabled filter acts
 * there: 1 (submitted, the session waits for `done`), 0 (nothing to run),
 * or -1 (out of memory). */
static int filter_stage(struct smtp_session *s, enum filter_stage stage, pipeline_done_fn done)
{
    if (!s->filters || !pipeline_wants(s->srv->settings, stage, s->filter_trusted))
        return 0;
    struct filter_txn t;
    smtp_filter_txn(s, &t);
    if (pipeline_submit(s->srv, s->filters, stage, &t, s->filter_trusted, done, s) < 0)
        return -1;
    smtp_session_suspend(s);
    return 1;
}

static void reply_verdict(struct smtp_session *s, const struct pipeline_verdict *v)
{
    if (v->verdict == FILTER_TEMPFAIL)
        smtp_reply_nocount(s, v->code, v->enhanced, "%s", v->text);
    else
        smtp_reply(s, v->code, v->enhanced, "%s", v->text);
}

/* --- recipient lookup ---------------------------------------------------- */

struct lookup {
    struct smtp_session *s;
    bool sender;                       /* MAIL FROM ownership (SPOOF_PROTECTION), not RCPT */
    char address[SMTP_PATH_MAX + 1];   /* what the client gave */
    char key[SMTP_PATH_MAX + 1];       /* what is looked up */
    unsigned notify;                   /* RCPT's DSN parameters */
    char orcpt[SMTP_ORCPT_MAX + 1];
    enum accounts_result result;
    bool owned;                        /* sender: the address is the user's */
    struct accounts_list local, remote;
    enum quota_result quota;           /* of the first local mailbox without room */
    const char *full;                  /* that mailbox, in local */
    bool filter;                       /* run the RCPT-stage filters for a local recipient */
    struct pipeline_verdict fv;        /* their verdict */
};

/* Quotas (quota.h): a local mailbox that is full, or smaller than the
 * declared SIZE, refuses this recipient only; the others still get the
 * message. */
static void check_quotas(struct lookup *l)
{
    struct server *srv = l->s->srv;
    uint64_t size = l->s->mail.size_given ? l->s->mail.size : 0;
    for (size_t i = 0; i < l->local.n && !l->full; i++) {
        l->quota = quota_check(srv->accounts, srv->store, srv->settings, l->local.items[i],
                               size, NULL);
        if (l->quota != QUOTA_OK)
            l->full = l->local.items[i];
    }
}

static void lookup_work(void *arg)
{
    struct lookup *l = arg;
    struct accounts *acc = l->s->srv->accounts;
    if (l->sender) {
        l->owned = smtp_address_owned(acc, l->key, l->s->user);
        return;
    }
    l->result = accounts_resolve(acc, l->key, &l->local, &l->remote);
    if (l->result == ACCOUNTS_OK)
        check_quotas(l);
    /* Filters (greylisting) only for a recipient that would be accepted,
     * in the same job as the lookup. */
    if (l->filter && l->result == ACCOUNTS_OK && !l->full) {
        struct filter_txn t;
        smtp_filter_txn(l->s, &t);
        t.rcpt = l->address;
        pipeline_run(l->s->filters, FILTER_RCPT, &t, l->s->filter_trusted, &l->fv);
    }
    if (l->result != ACCOUNTS_INVALID)
        return;
    /* Valid SMTP, but no address an account can have (a quoted local part,
     * an address literal): a permanent refusal, never a 4xx retried for
     * days. */
    const char *at = strrchr(l->key, '@');
    char domain[SMTP_DOMAIN_MAX + 1];
    size_t n = 0;
    if (at)
        for (at++; *at && n < sizeof domain - 1; at++)
            domain[n++] = (char)(*at >= 'A' && *at <= 'Z' ? *at + 32 : *at);
    domain[n] = '\0';
    l->result = n && accounts_domain_is_local(acc, domain) ? ACCOUNTS_NO_SUCH_USER
                                                            : ACCOUNTS_NOT_LOCAL;
}

/* A recipient in another domain, or an alias target there: the message
 * goes to the outbound queue for it. */
static int add_remote(struct smtp_session *s, const char *address, unsigned notify,
                      const char *orcpt)
{
    if (smtp_strvec_has(&s->remote, address))
        return 0;
    if (smtp_strvec_add(&s->remote, address) < 0 || smtp_strvec_add(&s->remote_orcpt, orcpt) < 0)
        return -1;
    unsigned *n = realloc(s->remote_notify, s->remote.n * sizeof *n);
    if (!n)
        return -1;
    s->remote_notify = n;
    n[s->remote.n - 1] = notify;
    return 0;
}

static void sender_answer(struct smtp_session *s, struct lookup *l)
{
    if (!l->owned) {
        s->in_mail = false;
        smtp_reply(s, 553, "5.7.1", "<%s>: Sender address rejected: not owned by user %s",
                   l->address, s->user);
        return;
    }
    smtp_reply(s, 250, "2.1.0", "Ok");
}

static void lookup_answer(struct smtp_session *s, struct lookup *l)
{
    if (l->sender) {
        sender_answer(s, l);
        return;
    }
    if (l->filter && l->fv.verdict != FILTER_ACCEPT) {
        s->junk++;
        smtp_reply_nocount(s, l->fv.code, l->fv.enhanced, "%s", l->fv.text);
        return;
    }
    if (l->result == ACCOUNTS_NOT_LOCAL && (s->authed || s->permitted)) {
        if (add_remote(s, l->address, l->notify, l->orcpt) < 0 ||
            smtp_strvec_add(&s->rcpts, l->address) < 0) {
            smtp_reply(s, 451, "4.3.0", "Error: out of memory");
            return;
        }
        smtp_reply(s, 250, "2.1.5", "Ok");
        return;
    }
    if (l->result == ACCOUNTS_OK && l->full) {
        log_info("smtp[%s]: refused client=%s to=<%s>: mailbox %s full", s->id, s->peer,
                 l->address, l->full);
        if (l->quota == QUOTA_TOO_BIG)
            smtp_reply_nocount(s, 552, "5.2.2", "<%s>: Mailbox full: message larger than "
                               "the mailbox quota", l->address);
        else
            smtp_reply_nocount(s, 452, "4.2.2", "<%s>: Mailbox full, try again later",
                               l->address);
        return;
    }
    switch (l->result) {
    case ACCOUNTS_OK:
        for (size_t i = 0; i < l->remote.n; i++) {
            if (add_remote(s, l->remote.items[i], 0, "") < 0) {
                smtp_reply(s, 451, "4.3.0", "Error: out of memory");
                return;
            }
        }
        for (size_t i = 0; i < l->local.n; i++) {
            if (smtp_strvec_has(&s->mailboxes, l->local.items[i]))
                continue;
            if (smtp_strvec_add(&s->mailboxes, l->local.items[i]) < 0) {
                smtp_reply(s, 451, "4.3.0", "Error: out of memory");
                return;
            }
        }
        if (smtp_strvec_add(&s->rcpts, l->address) < 0) {
            smtp_reply(s, 451, "4.3.0", "Error: out of memory");
            return;
        }
        smtp_reply(s, 250, "2.1.5", "Ok");
        return;
    /* A sender with a few stale addresses is not misbehaving: refused
     * recipients count towards the junk limit, not the error limit. */
    case ACCOUNTS_NO_SUCH_USER:
        s->junk++;
        smtp_reply_nocount(s, 550, "5.1.1", "<%s>: Recipient address rejected: User unknown",
                      l->address);
        return;
    case ACCOUNTS_NOT_LOCAL:
        s->junk++;
        smtp_reply_nocount(s, 554, "5.7.1", "<%s>: Relay access denied", l->address);
        return;
    default:
        smtp_reply(s, 451, "4.3.0", "<%s>: Temporary lookup failure", l->address);
        return;
    }
}

static void lookup_done(void *arg)
{
    struct lookup *l = arg;
    struct smtp_session *s = l->s;
    if (smtp_session_resume(s)) {
        lookup_answer(s, l);
    } else {
        s = NULL;
    }
    accounts_list_free(&l->local);
    accounts_list_free(&l->remote);
    free(l);
    if (s)
        smtp_session_process(s);
}

/* --- commands ------------------------------------------------------------ */

static void reply_error(struct smtp_session *s, const struct smtp_error *e)
{
    smtp_reply(s, e->code, e->enhanced, "%s", e->text);
}

static void helo_reply(struct smtp_session *s);

static void helo_filter_done(void *arg, const struct pipeline_verdict *v)
{
    struct smtp_session *s = arg;
    if (!smtp_session_resume(s))
        return;
    if (v->verdict == FILTER_ACCEPT) {
        helo_reply(s);
    } else {
        s->greeted = false;
        s->helo[0] = '\0';
        reply_verdict(s, v);
    }
    smtp_session_process(s);
}

static void cmd_helo(struct smtp_session *s, const struct smtp_command *cmd, bool extended)
{
    struct smtp_error e;
    if (smtp_parse_helo(cmd->args, cmd->args_len, &e) < 0) {
        reply_error(s, &e);
        return;
    }
    smtp_transaction_reset(s);
    size_t n = cmd->args_len < sizeof s->helo ? cmd->args_len : sizeof s->helo - 1;
    memcpy(s->helo, cmd->args, n);
    s->helo[n] = '\0';
    s->greeted = true;
    s->esmtp = extended;
    pipeline_session_clear(s->filters, FILTER_HELO);
    int f = filter_stage(s, FILTER_HELO, helo_filter_done);
    if (f < 0) {
        s->greeted = false;
        smtp_reply(s, 451, "4.3.0", "Error: out of memory");
    }
    if (f == 0)
        helo_reply(s);
}

static void helo_reply(struct smtp_session *s)
{
    if (!s->esmtp) {
        conn_printf(s->conn, "250 %s\r\n", smtp_hostname(s));
        return;
    }
    conn_printf(s->conn, "250-%s\r\n250-PIPELINING\r\n", smtp_hostname(s));
    uint64_t limit = s->srv->settings->message_size_limit;
    if (limit)
        conn_printf(s->conn, "250-SIZE %llu\r\n", (unsigned long long)limit);
    else
        conn_printf(s->conn, "250-SIZE\r\n");
    if (!conn_is_tls(s->conn))
        conn_printf(s->conn, "250-STARTTLS\r\n");
    else if (smtp_is_submission(s))
        conn_printf(s->conn, "250-AUTH PLAIN LOGIN\r\n250-DSN\r\n");
    conn_printf(s->conn, "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                         "250 CHUNKING\r\n");
}

static void mail_accepted(struct smtp_session *s);

static void mail_filter_done(void *arg, const struct pipeline_verdict *v)
{
    struct smtp_session *s = arg;
    if (!smtp_session_resume(s))
        return;
    if (v->verdict == FILTER_ACCEPT) {
        mail_accepted(s);
    } else {
        s->in_mail = false;
        pipeline_session_clear(s->filters, FILTER_MAIL);
        reply_verdict(s, v);
    }
    smtp_session_process(s);
}

static void cmd_mail(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!s->greeted) {
        smtp_reply(s, 503, "5.5.1", "Error: send HELO/EHLO first");
        return;
    }
    if (s->in_mail) {
        smtp_reply(s, 503, "5.5.1", "Error: nested MAIL command");
        return;
    }
    struct smtp_error e;
    if (smtp_parse_mail(cmd->args, cmd->args_len, &s->mail, &e) < 0) {
        reply_error(s, &e);
        return;
    }
    /* Parameters of extensions this port does not offer (DSN: submission
     * only; AUTH=: a submitter's own identity is the login). */
    bool dsn = s->authed;
    if (s->mail.body == SMTP_BODY_BINARYMIME ||
        (!dsn && (s->mail.ret != SMTP_RET_NONE || s->mail.envid[0])) ||
        (!s->authed && s->mail.auth[0])) {
        smtp_reply(s, 555, "5.5.4", "Unsupported parameter");
        return;
    }
    uint64_t limit = s->srv->settings->message_size_limit;
    if (limit && s->mail.size_given && s->mail.size > limit) {
        smtp_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
        return;
    }
    s->in_mail = true;
    int f = filter_stage(s, FILTER_MAIL, mail_filter_done);
    if (f != 0) {
        if (f < 0) {
            s->in_mail = false;
            smtp_reply(s, 451, "4.3.0", "Error: out of memory");
        }
        return;
    }
    mail_accepted(s);
}

/* MAIL passed the filters: the reply, or on submission with
 * SPOOF_PROTECTION the ownership lookup first. */
static void mail_accepted(struct smtp_session *s)
{
    if (!s->authed || !s->srv->settings->spoof_protection || s->mail.from.is_null) {
        smtp_reply(s, 250, "2.1.0", "Ok");
        return;
    }
    /* SPOOF_PROTECTION: the sender must be one of the user's addresses. */
    struct lookup *l = calloc(1, sizeof *l);
    if (l) {
        l->s = s;
        l->sender = true;
        snprintf(l->address, sizeof l->address, "%s", s->mail.from.mailbox);
        snprintf(l->key, sizeof l->key, "%s", s->mail.from.mailbox);
    }
    if (!l || workers_submit(s->srv->workers, lookup_work, lookup_done, l) < 0) {
        free(l);
        s->in_mail = false;
        smtp_reply(s, 451, "4.3.0", "Error: out of memory");
        return;
    }
    smtp_session_suspend(s);
}

static void cmd_rcpt(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (!s->in_mail) {
        smtp_reply(s, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (s->bdat_used) {
        smtp_reply(s, 503, "5.5.1", "Error: RCPT after BDAT");
        return;
    }
    s->rcpt_tried = true;
    if (s->rcpts.n >= s->srv->settings->smtp_max_recipients) {
        /* A sender splitting a large list is not misbehaving. */
        smtp_reply_nocount(s, 452, "4.5.3", "Error: too many recipients");
        return;
    }
    struct smtp_rcpt_args args;
    struct smtp_error e;
    if (smtp_parse_rcpt(cmd->args, cmd->args_len, s->mail.smtputf8, &args, &e) < 0) {
        reply_error(s, &e);
        return;
    }
    if (!s->authed && (args.notify || args.orcpt[0])) {
        smtp_reply(s, 555, "5.5.4", "Unsupported parameter");
        return;
    }
    struct lookup *l = calloc(1, sizeof *l);
    if (!l) {
        smtp_reply(s, 451, "4.3.0", "Error: out of memory");
        return;
    }
    l->s = s;
    l->notify = args.notify;
    l->filter = s->filters && pipeline_wants(s->srv->settings, FILTER_RCPT, s->filter_trusted);
    snprintf(l->orcpt, sizeof l->orcpt, "%s", args.orcpt);
    if (args.to.is_postmaster) {
        snprintf(l->address, sizeof l->address, "postmaster");
        snprintf(l->key, sizeof l->key, "%s", s->srv->settings->postmaster_address);
    } else {
        snprintf(l->address, sizeof l->address, "%s", args.to.mailbox);
        snprintf(l->key, sizeof l->key, "%s", args.to.mailbox);
    }
    if (workers_submit(s->srv->workers, lookup_work, lookup_done, l) < 0) {
        free(l);
        smtp_reply(s, 451, "4.3.0", "Error: out of memory");
        return;
    }
    smtp_session_suspend(s);
}

/* DATA or BDAT may start: 0, or the refusal already sent. */
static int message_may_start(struct smtp_session *s, int *refusal)
{
    if (!s->in_mail) {
        *refusal = 503;
        return -1;
    }
    if (s->rcpts.n == 0) {
        *refusal = s->rcpt_tried ? 554 : 503;
        return -1;
    }
    return 0;
}

static void refuse_message(struct smtp_session *s, int code)
{
    if (code == 554)
        smtp_reply(s, 554, "5.5.1", "Error: no valid recipients");
    else if (!s->in_mail)
        smtp_reply(s, 503, "5.5.1", "Error: need MAIL command");
    else
        smtp_reply(s, 503, "5.5.1", "Error: need RCPT command");
}

static void cmd_data(struct smtp_session *s, const struct smtp_command *cmd)
{
    int refusal;
    if (cmd->args_len) {
        smtp_reply(s, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    if (s->bdat_used) {
        smtp_reply(s, 503, "5.5.1", "Error: DATA after BDAT");
        return;
    }
    if (message_may_start(s, &refusal) < 0) {
        refuse_message(s, refusal);
        return;
    }
    smtp_data_init(&s->dec);
    buf_reset(&s->msg);
    s->too_big = false;
    s->phase = PHASE_DATA;
    conn_printf(s->conn, "354 End data with <CR><LF>.<CR><LF>\r\n");
}

/* The message could not be kept (size limit or memory budget): answers,
 * ends the transaction and returns true. */
static bool message_refused(struct smtp_session *s)
{
    if (!s->too_big && !s->over_budget)
        return false;
    bool too_big = s->too_big;
    smtp_transaction_reset(s);
    if (too_big)
        smtp_reply(s, 552, "5.3.4", "Message size exceeds fixed limit");
    else
        smtp_reply_nocount(s, 452, "4.3.1", "Insufficient system storage, try again later");
    return true;
}

static void data_finished(struct smtp_session *s)
{
    s->phase = PHASE_COMMAND;
    if (s->dec.bad_line_ending) {
        smtp_transaction_reset(s);
        smtp_reply(s, 550, "5.6.0", "Message contains bare CR or LF; lines must end with CRLF");
        return;
    }
    if (message_refused(s))
        return;
    smtp_message_complete(s);
}

static void cmd_bdat(struct smtp_session *s, const struct smtp_command *cmd)
{
    uint64_t size;
    bool last;
    struct smtp_error e;
    if (smtp_parse_bdat(cmd->args, cmd->args_len, &size, &last, &e) < 0) {
        /* The chunk's length is unknown, so what follows cannot be framed. */
        reply_error(s, &e);
        smtp_session_close(s);
        return;
    }
    s->bdat_left = size;
    s->bdat_chunk = size;
    s->bdat_last = last;
    s->bdat_discard = false;
    int refusal;
    if (message_may_start(s, &refusal) < 0) {
        s->bdat_discard = true;
        s->bdat_refusal = refusal;
    } else if (!s->bdat_used) {
        s->bdat_used = true;
        buf_reset(&s->msg);
        s->too_big = false;
    }
    s->phase = PHASE_BDAT;
}

static void bdat_chunk_done(struct smtp_session *s)
{
    s->phase = PHASE_COMMAND;
    if (s->bdat_discard) {
        refuse_message(s, s->bdat_refusal);
        return;
    }
    if (message_refused(s))
        return;
    if (s->bdat_last) {
        smtp_message_complete(s);
        return;
    }
    smtp_reply(s, 250, "2.0.0", "%llu octets received", (unsigned long long)s->bdat_chunk);
}

static void cmd_starttls(struct smtp_session *s, const struct smtp_command *cmd)
{
    if (cmd->args_len) {
        smtp_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    if (conn_is_tls(s->conn)) {
        smtp_reply(s, 503, "5.5.1", "Error: TLS already active");
        return;
    }
    conn_printf(s->conn, "220 2.0.0 Ready to start TLS\r\n");
    /* RFC 3207 4.2: forget everything learnt before TLS. */
    smtp_transaction_reset(s);
    s->greeted = false;
    s->esmtp = false;
    s->helo[0] = '\0';
    s->phase = PHASE_TLS;
    if (conn_starttls(s->conn, tls_server_ctx(s->srv->tls)) < 0)
        smtp_session_close(s);
}

/* Counts a command that does not move towards a message; true (and the
 * session closing) when there have been too many. */
static bool junk_exceeded(struct smtp_session *s)
{
    if (++s->junk <= SMTP_JUNK_LIMIT)
        return false;
    smtp_reply(s, 421, "4.7.0", "%s Error: too many commands without a message", smtp_hostname(s));
    return true;
}

static void cmd_junk(struct smtp_session *s, int code, const char *enhanced, const char *text)
{
    if (!junk_exceeded(s))
        smtp_reply(s, code, enhanced, "%s", text);
}

/* The submission ports' rules (RFC 8314, RFC 6409): on 587 nothing but
 * the greeting commands and STARTTLS before TLS, and no mail before AUTH.
 * Returns false after refusing. */
static bool submission_allows(struct smtp_session *s, enum smtp_verb verb)
{
    if (!smtp_is_submission(s))
        return true;
    bool greeting = verb == SMTP_EHLO || verb == SMTP_HELO || verb == SMTP_NOOP ||
                    verb == SMTP_RSET || verb == SMTP_QUIT;
    if (!conn_is_tls(s->conn) && !greeting && verb != SMTP_STARTTLS) {
        smtp_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        return false;
    }
    bool mail = verb == SMTP_MAIL || verb == SMTP_RCPT || verb == SMTP_DATA ||
                verb == SMTP_BDAT;
    if (mail && !s->authed) {
        smtp_reply(s, 530, "5.7.0", "Authentication required");
        if (verb == SMTP_BDAT)
            smtp_session_close(s); /* the chunk that follows cannot be framed as commands */
        return false;
    }
    return true;
}

static void handle_command(struct smtp_session *s, const char *line, size_t len)
{
    struct smtp_command cmd;
    if (memchr(line, '\0', len) || smtp_parse_command(line, len, &cmd) < 0) {
        smtp_reply(s, 500, "5.5.2", "Error: command not recognized");
        return;
    }
    /* AUTH's arguments carry credentials: never logged. */
    int shown = cmd.verb == SMTP_AUTH ? 4 : (int)(len > 80 ? 80 : len);
    log_trace("smtp[%s]: command %.*s", s->id, shown, line);
    /* After SIGTERM a transaction already under way may finish (its 250 is
     * followed by the 421); anything else is refused. */
    if (cmd.verb != SMTP_QUIT && !(s->in_mail && cmd.verb != SMTP_RSET) &&
        smtp_stop_if_shutting_down(s))
        return;
    if (s->filter_refused && cmd.verb != SMTP_QUIT) {
        /* Refused at connect (RFC 5321 3.1: a 554 greeting): nothing but
         * QUIT, until the error limit drops the client. */
        smtp_reply(s, 554, "5.7.1", "%s", s->filter_text);
        return;
    }
    if (!submission_allows(s, cmd.verb))
        return;
    switch (cmd.verb) {
    case SMTP_HELO:
    case SMTP_EHLO:
    case SMTP_MAIL:
        /* Counted as junk until a message is accepted: a client that loops
         * over EHLO or MAIL without ever sending is going nowhere. */
        if (junk_exceeded(s))
            break;
        if (cmd.verb == SMTP_MAIL)
            cmd_mail(s, &cmd);
        else
            cmd_helo(s, &cmd, cmd.verb == SMTP_EHLO);
        break;
    case SMTP_RCPT: cmd_rcpt(s, &cmd); break;
    case SMTP_DATA: cmd_data(s, &cmd); break;
    case SMTP_BDAT: cmd_bdat(s, &cmd); break;
    case SMTP_STARTTLS: cmd_starttls(s, &cmd); break;
    case SMTP_RSET:
        smtp_transaction_reset(s);
        cmd_junk(s, 250, "2.0.0", "Ok");
        break;
    case SMTP_NOOP: cmd_junk(s, 250, "2.0.0", "Ok"); break;
    case SMTP_VRFY:
        cmd_junk(s, 252, "2.0.0", "Cannot VRFY user; send mail and delivery will be attempted");
        break;
    case SMTP_EXPN: cmd_junk(s, 502, "5.5.1", "Error: EXPN is not available"); break;
    case SMTP_HELP: cmd_junk(s, 214, "2.0.0", "See RFC 5321, https://www.rfc-editor.org/rfc/rfc5321"); break;
    case SMTP_AUTH: smtp_cmd_auth(s, &cmd); break;
    case SMTP_QUIT:
        smtp_reply(s, 221, "2.0.0", "Bye");
        smtp_session_close(s);
        break;
    default:
        smtp_reply(s, 500, "5.5.2", "Error: command not recognized");
        break;
    }
}

/* --- input ----------------------------------------------------------------- */

static bool process_data(struct smtp_session *s)
{
    size_t avail;
    const char *in = conn_input(s->conn, &avail);
    if (avail == 0)
        return false;
    bool keep = !s->too_big && !s->over_budget && message_budget(s, avail);
    size_t before = s->msg.len;
    size_t used = smtp_data_feed(&s->dec, in, avail, keep ? &s->msg : NULL);
    conn_consume(s->conn, used);
    if (keep) {
        /* the decoder may produce fewer octets than it read (dot-stuffing) */
        size_t unused = avail - (s->msg.len - before);
        buffered_total -= unused;
        s->budgeted -= unused;
    }
    uint64_t limit = s->srv->settings->message_size_limit;
    /* out_failed: memory ran out while appending; refuse rather than store a
     * truncated message. */
    if (!s->too_big && ((limit && s->dec.octets > limit) || s->dec.out_failed)) {
        s->too_big = true;
        message_drop(s);
    }
    if (s->dec.done)
        data_finished(s);
    return true;
}

static bool process_bdat(struct smtp_session *s)
{
    if (s->bdat_left > 0) {
        size_t avail;
        const char *in = conn_input(s->conn, &avail);
        if (avail == 0)
            return false;
        size_t n = avail < s->bdat_left ? avail : (size_t)s->bdat_left;
        uint64_t limit = s->srv->settings->message_size_limit;
        if (!s->bdat_discard && !s->too_big && !s->over_budget) {
            if (limit && s->msg.len + n > limit) {
                s->too_big = true;
                message_drop(s);
            } else if (message_budget(s, n) && buf_append(&s->msg, in, n) < 0) {
                s->too_big = true; /* out of memory: refuse rather than crash */
                message_drop(s);
            }
        }
        conn_consume(s->conn, n);
        s->bdat_left -= n;
        if (s->bdat_left > 0)
            return true;
    }
    bdat_chunk_done(s);
    return true;
}

static bool process_command(struct smtp_session *s)
{
    const char *line;
    size_t len, used;
    int r = conn_peek_line(s->conn, SMTP_LINE_MAX + 2, &line, &len, &used, NULL);
    if (r == 0)
        return false;
    if (r < 0 || len > SMTP_LINE_MAX) {
        smtp_reply(s, 500, "5.5.2", "Error: line too long");
        smtp_session_close(s);
        return false;
    }
    /* Copy before consuming: a command (STARTTLS) may drop the input. */
    memcpy(s->line, line, len);
    s->line[len] = '\0';
    conn_consume(s->conn, used);
    if (s->phase == PHASE_AUTH)
        smtp_auth_response(s, s->line, len);
    else
        handle_command(s, s->line, len);
    return true;
}

void smtp_session_process(struct smtp_session *s)
{
    bool progress = true;
    while (progress && s->conn && !s->busy) {
        switch (s->phase) {
        case PHASE_COMMAND:
        case PHASE_AUTH:    progress = process_command(s); break;
        case PHASE_DATA:    progress = process_data(s); break;
        case PHASE_BDAT:    progress = process_bdat(s); break;
        default:            progress = false; break;
        }
    }
}

/* --- connection events --------------------------------------------------- */

static void greet(struct smtp_session *s)
{
    s->phase = PHASE_COMMAND;
    s->banner_sent = true;
    conn_printf(s->conn, "220 %s ESMTP posthorn\r\n", smtp_hostname(s));
}

static void connect_filter_done(void *arg, const struct pipeline_verdict *v)
{
    struct smtp_session *s = arg;
    if (!smtp_session_resume(s))
        return;
    if (v->verdict == FILTER_TEMPFAIL) {
        /* A 4xx greeting is a 421 (RFC 5321 3.8), which closes. */
        smtp_reply(s, 421, "4.7.0", "%s %s", smtp_hostname(s), v->text);
        return;
    }
    if (v->verdict == FILTER_REJECT) {
        s->phase = PHASE_COMMAND;
        s->banner_sent = true;
        s->filter_refused = true;
        snprintf(s->filter_text, sizeof s->filter_text, "%s", v->text);
        conn_printf(s->conn, "%d %s %s\r\n", v->code, v->enhanced, v->text);
    } else {
        greet(s);
    }
    smtp_session_process(s);
}

/* The filters that apply to this client, and the connect stage's; then
 * the greeting. */
static void start_session(struct smtp_session *s, bool implicit)
{
    struct server *srv = s->srv;
    /* Normally already done by the daemon before serving; the first
     * session does it otherwise (tests, and a main that does not yet). */
    filters_start(srv);
    s->filter_trusted = smtp_is_submission(s) || s->permitted;
    if (pipeline_active(srv->settings, s->filter_trusted)) {
        s->filters = pipeline_session_new();
        if (!s->filters) {
            smtp_reply(s, 421, "4.3.0", "%s Error: out of memory", smtp_hostname(s));
            return;
        }
    }
    if (implicit) {
        s->phase = PHASE_TLS;
        return;
    }
    int f = filter_stage(s, FILTER_CONNECT, connect_filter_done);
    if (f < 0)
        smtp_reply(s, 421, "4.3.0", "%s Error: out of memory", smtp_hostname(s));
    else if (f == 0)
        greet(s);
}

static void on_conn_event(struct conn *c, enum conn_event ev, void *arg)
{
    struct smtp_session *s = arg;
    switch (ev) {
    case CONN_EV_READ:
        smtp_session_process(s);
        break;
    case CONN_EV_TLS_READY:
        log_info("smtp[%s]: %s: TLS established, %s %s", s->id, s->peer, conn_tls_version(c),
                 conn_tls_cipher(c));
        if (s->svc == SMTP_SERVICE_SUBMISSIONS && !s->banner_sent)
            greet(s); /* implicit TLS: the greeting comes after the handshake */
        s->phase = PHASE_COMMAND;
        smtp_session_process(s);
        break;
    case CONN_EV_TIMEOUT:
        if (s->busy) {
            conn_set_timeout(c, s->srv->settings->smtp_timeout);
            break; /* our own work is slow, not the client */
        }
        log_info("smtp[%s]: %s: idle timeout", s->id, s->peer);
        conn_printf(c, "421 4.4.2 %s Error: timeout exceeded\r\n", smtp_hostname(s));
        smtp_session_close(s);
        break;
    case CONN_EV_CLOSED:
        if (s->refused) {
            free(s);
            break;
        }
        log_info("smtp[%s]: disconnect from %s messages=%u errors=%u", s->id, s->peer,
                 s->messages, s->errors);
        s->conn = NULL;
        if (!s->busy)
            session_free(s);
        break;
    }
}

static void accept_service(enum smtp_service svc, int fd, const struct sockaddr *peer,
                           socklen_t peerlen, struct server *srv)
{
    const struct settings *set = srv->settings;
    struct smtp_session *s = calloc(1, sizeof *s);
    if (!s) {
        log_error("smtp: out of memory accepting a connection");
        close(fd);
        return;
    }
    SSL_CTX *implicit = svc == SMTP_SERVICE_SUBMISSIONS ? tls_server_ctx(srv->tls) : NULL;
    struct conn *c = conn_new(srv->loop, fd, peer, peerlen, implicit, on_conn_event, s);
    if (!c) {
        free(s);
        return;
    }
    s->srv = srv;
    s->conn = c;
    s->svc = svc;
    if (peerlen <= sizeof s->peer_sa)
        memcpy(&s->peer_sa, peer, peerlen);
    random_hex(s->id, 8);
    snprintf(s->peer, sizeof s->peer, "%s", conn_peer_addr(c));
    if (srv->stopping || !iplimit_acquire(s->peer, set->max_connections_per_ip,
                                          set->max_connections)) {
        log_info("smtp[%s]: %s: refused, too many connections", s->id, s->peer);
        conn_printf(c, "421 4.7.0 %s Error: too many connections from %s\r\n",
                    set->hostname, s->peer);
        s->refused = true;
        smtp_session_close(s);
        return;
    }
    s->counted = true;
    s->next = sessions;
    if (sessions)
        sessions->prev = s;
    sessions = s;
    session_count++;
    static const char *const names[] = { "smtp", "submission", "submissions" };
    log_info("smtp[%s]: %s connect from %s:%u to %s:%u", s->id, names[svc], s->peer,
             conn_peer_port(c), conn_local_addr(c), conn_local_port(c));
    if (svc == SMTP_SERVICE_MX && netmatch_contains(srv->permit_networks, s->peer)) {
        s->permitted = true;
        log_info("smtp[%s]: client in PERMIT_NETWORKS: may relay", s->id);
    }
    conn_set_timeout(c, set->smtp_timeout);
    start_session(s, implicit != NULL);
}

void smtp_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server)
{
    accept_service(SMTP_SERVICE_MX, fd, peer, peerlen, server);
}

void smtp_accept_submission(int fd, const struct sockaddr *peer, socklen_t peerlen,
                            void *server)
{
    accept_service(SMTP_SERVICE_SUBMISSION, fd, peer, peerlen, server);
}

void smtp_accept_submissions(int fd, const struct sockaddr *peer, socklen_t peerlen,
                             void *server)
{
    accept_service(SMTP_SERVICE_SUBMISSIONS, fd, peer, peerlen, server);
}

void smtp_shutdown(struct server *srv)
{
    srv->stopping = true;
    for (struct smtp_session *s = sessions, *next; s; s = next) {
        next = s->next;
        if (s->busy || !s->conn)
            continue; /* answered, then closed, when its work completes */
        if (s->phase == PHASE_COMMAND && !s->in_mail)
            smtp_stop_if_shutting_down(s);
        else if (s->phase == PHASE_TLS) {
            /* A 421 cannot be said into a half-made handshake. */
            s->phase = PHASE_CLOSING;
            conn_abort(s->conn);
        }
        /* In a transaction: it may finish; the 421 follows its reply. */
    }
}

unsigned smtp_session_count(void)
{
    return session_count;
}

void smtp_abort_all(void)
{
    for (struct smtp_session *s = sessions; s; s = s->next)
        if (s->conn && s->phase != PHASE_CLOSING) {
            s->phase = PHASE_CLOSING;
            conn_abort(s->conn);
        }
}
