/* The end of an SMTP transaction: the trace headers, then one worker job
 * that runs the end-of-data filters, queues the copy for remote recipients
 * and stores the local ones, and only then the reply. See smtp_session.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "mailnotify.h"
#include "mailstore.h"
#include "queue.h"
#include "queue_runner.h"
#include "quota.h"
#include "smtp_session.h"
#include "util.h"

#define FROM_ADDRESSES_MAX 16   /* addresses checked in one From: header */

enum delivery_result {
    DELIVERY_OK, DELIVERY_FAILED, DELIVERY_SPOOFED, DELIVERY_OVER_QUOTA,
    DELIVERY_FILTERED,           /* refused by a filter (virus, spam score): fv */
};

struct delivery {
    struct smtp_session *s;
    char qid[13];
    struct buf prefix;           /* Return-Path, then the trace headers */
    size_t trace_off;            /* where the trace headers start in prefix */
    struct mailstore_target *targets;
    size_t ntargets;
    bool check_from;             /* SPOOF_PROTECTION on a submitted message */
    enum delivery_result result;
    char queue_id[QUEUE_ID_LEN + 1];
    char err[256];
    enum quota_result quota;     /* DELIVERY_OVER_QUOTA: for over_quota_rcpt */
    char over_quota_rcpt[ACCOUNTS_ADDR_MAX + 1];
    bool filter;                 /* the session has filters: run the end of data */
    bool filter_data;            /* ... and some have an end-of-data hook */
    struct pipeline_verdict fv;  /* DELIVERY_FILTERED: the reply */
};

const char *smtp_protocol_name(const struct smtp_session *s)
{
    bool tls = conn_is_tls(s->conn);
    if (s->mail.smtputf8)
        return s->authed ? (tls ? "UTF8SMTPSA" : "UTF8SMTPA") : (tls ? "UTF8SMTPS" : "UTF8SMTP");
    if (s->authed)
        return tls ? "ESMTPSA" : "ESMTPA";
    if (!s->esmtp)
        return tls ? "SMTPS" : "SMTP";
    return tls ? "ESMTPS" : "ESMTP";
}

/* Whether the header section of msg has a field called `name`. */
static bool has_header(const struct buf *msg, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = msg->data, *end = msg->data + msg->len;
    while (p && p < end) {
        if (p + 2 <= end && p[0] == '\r' && p[1] == '\n')
            return false; /* the blank line: end of the header section */
        if ((size_t)(end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':')
            return true;
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        p = lf ? lf + 1 : NULL;
    }
    return false;
}

static void rfc5322_date(char *out, size_t outlen, time_t when)
{
    struct tm tm;
    gmtime_r(&when, &tm);
    strftime(out, outlen, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

/* Return-Path for the local copies, then the Received header (without the
 * client's address on submission: docker-mailserver hides it too), and on
 * submission a Message-ID and Date when the message has none. */
static int trace_headers(struct smtp_session *s, struct delivery *d)
{
    char date[64];
    time_t now = time(NULL);
    rfc5322_date(date, sizeof date, now);
    struct buf *out = &d->prefix;

    int rc = buf_printf(out, "Return-Path: <%s>\r\n", s->mail.from.mailbox);
    d->trace_off = out->len;
    if (s->authed)
        rc |= buf_printf(out, "Received: from %s\r\n\tby %s (posthorn) with %s id %s", s->helo,
                         smtp_hostname(s), smtp_protocol_name(s), d->qid);
    else
        rc |= buf_printf(out, "Received: from %s ([%s])\r\n\tby %s (posthorn) with %s id %s",
                         s->helo, s->peer, smtp_hostname(s), smtp_protocol_name(s), d->qid);
    if (conn_is_tls(s->conn))
        rc |= buf_printf(out, "\r\n\t(using %s with cipher %s)", conn_tls_version(s->conn),
                         conn_tls_cipher(s->conn));
    size_t nrcpts = s->rcpts.n;
    if (nrcpts == 1)
        rc |= buf_printf(out, "\r\n\tfor <%s>", s->rcpts.v[0]);
    rc |= buf_printf(out, "; %s\r\n", date);
    if (smtp_is_submission(s)) {
        if (!has_header(&s->msg, "Message-ID"))
            rc |= buf_printf(out, "Message-ID: <%s.%lld@%s>\r\n", d->qid, (long long)now,
                             smtp_hostname(s));
        if (!has_header(&s->msg, "Date"))
            rc |= buf_printf(out, "Date: %s\r\n", date);
    }
    return rc ? -1 : 0;
}

/* --- SPOOF_PROTECTION: the From: header -------------------------------- */

/* Finds the From: fields of the header section: returns how many there
 * are (RFC 5322 allows one), and copies the unfolded value of the first
 * into out; *truncated says it did not fit. */
static int from_fields(const struct buf *msg, char *out, size_t outlen, bool *truncated)
{
    int count = 0;
    *truncated = false;
    out[0] = '\0';
    const char *p = msg->data, *end = msg->data + msg->len;
    while (p && p < end && !(p + 2 <= end && p[0] == '\r' && p[1] == '\n')) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if ((size_t)(end - p) > 5 && strncasecmp(p, "From:", 5) == 0 && count++ == 0) {
            size_t n = 0;
            const char *v = p + 5;
            /* the field and its continuation lines */
            while (v < end) {
                const char *eol = memchr(v, '\n', (size_t)(end - v));
                const char *stop = eol ? eol : end;
                for (; v < stop; v++) {
                    if (*v == '\r')
                        continue;
                    if (n + 1 >= outlen) {
                        *truncated = true;
                        break;
                    }
                    out[n++] = *v;
                }
                if (!eol || eol + 1 >= end || (eol[1] != ' ' && eol[1] != '\t'))
                    break;
                v = eol + 1;
            }
            out[n] = '\0';
        }
        p = lf ? lf + 1 : NULL;
    }
    return count;
}

struct addr_scan {
    char angle[ACCOUNTS_ADDR_MAX + 1], bare[ACCOUNTS_ADDR_MAX + 1];
    size_t alen, blen;
    bool has_angle, too_long;
};

static void scan_put(char *buf, size_t *len, bool *too_long, char c)
{
    if (*len + 1 >= ACCOUNTS_ADDR_MAX + 1) {
        *too_long = true;
        return;
    }
    buf[(*len)++] = c;
    buf[*len] = '\0';
}

/* Ends one mailbox of the list: its angle-addr when it has one, else the
 * bare addr-spec. Returns false when the list holds more than max. */
static bool scan_emit(struct addr_scan *sc, char addrs[][ACCOUNTS_ADDR_MAX + 1], size_t *n,
                      size_t max)
{
    const char *addr = sc->has_angle ? sc->angle : sc->bare;
    bool ok = true;
    if (*addr || sc->too_long) {
        if (*n >= max || sc->too_long)
            ok = false;
        else
            snprintf(addrs[(*n)++], ACCOUNTS_ADDR_MAX + 1, "%s", addr);
    }
    memset(sc, 0, sizeof *sc);
    return ok;
}

/* Splits an RFC 5322 address list into mailboxes, the way a mail reader
 * shows them: comments and quoted display names skipped, group names
 * dropped, every mailbox kept, bracketed or bare. Returns the count, or -1
 * for a list it cannot check (too many, too long, unbalanced). */
static int from_addresses(const char *value, char addrs[][ACCOUNTS_ADDR_MAX + 1], size_t max)
{
    struct addr_scan sc;
    memset(&sc, 0, sizeof sc);
    size_t n = 0;
    int comment = 0;
    bool quoted = false, in_angle = false;
    for (const char *v = value; *v; v++) {
        char ch = *v;
        if ((quoted || comment) && ch == '\\' && v[1]) {
            v++;
            continue;
        }
        if (quoted) {
            quoted = ch != '"';
        } else if (comment) {
            comment += ch == '(' ? 1 : ch == ')' ? -1 : 0;
        } else if (ch == '(') {
            comment = 1;
        } else if (in_angle) {
            if (ch == '>')
                in_angle = false;
            else if (ch != ' ' && ch != '\t')
                scan_put(sc.angle, &sc.alen, &sc.too_long, ch);
        } else if (ch == '"') {
            quoted = true;
        } else if (ch == '<') {
            in_angle = sc.has_angle = true;
            sc.alen = 0;
        } else if (ch == ':') {
            sc.blen = 0; /* a group's display name */
            sc.bare[0] = '\0';
        } else if (ch == ',' || ch == ';') {
            if (!scan_emit(&sc, addrs, &n, max))
                return -1;
        } else if (ch != ' ' && ch != '\t') {
            scan_put(sc.bare, &sc.blen, &sc.too_long, ch);
        }
    }
    if (quoted || comment || in_angle || !scan_emit(&sc, addrs, &n, max))
        return -1;
    return (int)n;
}

/* Whether `address` belongs to `user`: the user's own address, or one that
 * resolves to them (an alias, a catch-all, plus-addressing). Blocking. */
bool smtp_address_owned(struct accounts *acc, const char *address, const char *user)
{
    struct accounts_list local, remote;
    bool owned = false;
    if (accounts_resolve(acc, address, &local, &remote) == ACCOUNTS_OK)
        for (size_t i = 0; i < local.n && !owned; i++)
            owned = strcmp(local.items[i], user) == 0;
    accounts_list_free(&local);
    accounts_list_free(&remote);
    return owned;
}

static bool from_header_owned(struct smtp_session *s)
{
    char value[4096];
    char addrs[FROM_ADDRESSES_MAX][ACCOUNTS_ADDR_MAX + 1];
    bool truncated;
    int fields = from_fields(&s->msg, value, sizeof value, &truncated);
    if (fields == 0)
        return true; /* no From: at all is not spoofing anyone */
    if (fields > 1 || truncated)
        return false;
    int n = from_addresses(value, addrs, FROM_ADDRESSES_MAX);
    if (n <= 0)
        return false;
    for (int i = 0; i < n; i++)
        if (!smtp_address_owned(s->srv->accounts, addrs[i], s->user))
            return false;
    return true;
}

/* --- filters ------------------------------------------------------------------ */

/* Puts `headers` in front of the trace headers (after Return-Path), so
 * that the queued copy carries them too. */
static int insert_headers(struct delivery *d, const struct buf *headers)
{
    if (!headers->len)
        return 0;
    struct buf out = BUF_INIT;
    int rc = buf_append(&out, d->prefix.data, d->trace_off);
    rc |= buf_append(&out, headers->data, headers->len);
    rc |= buf_append(&out, d->prefix.data + d->trace_off, d->prefix.len - d->trace_off);
    if (rc) {
        buf_free(&out);
        return -1;
    }
    buf_free(&d->prefix);
    d->prefix = out;
    return 0;
}

static void refuse(struct delivery *d, enum filter_verdict verdict, int code,
                   const char *enhanced, const char *text)
{
    d->fv.verdict = verdict;
    d->fv.code = code;
    snprintf(d->fv.enhanced, sizeof d->fv.enhanced, "%s", enhanced);
    snprintf(d->fv.text, sizeof d->fv.text, "%s", text);
}

/* The end-of-data filters, then the verdict on the whole message (spam
 * score), its headers and where the local copies go. Returns false when
 * the message is refused (d->fv says how). Blocking. */
static bool filter_message(struct smtp_session *s, struct delivery *d)
{
    const struct settings *st = s->srv->settings;
    const char *from = s->mail.from.mailbox;
    if (d->filter_data) {
        struct filter_txn t;
        smtp_filter_txn(s, &t);
        t.rcpts = (const char *const *)s->rcpts.v;
        t.nrcpts = s->rcpts.n;
        t.msg = s->msg.data;
        t.len = s->msg.len;
        pipeline_run(s->filters, FILTER_DATA, &t, s->filter_trusted, &d->fv);
        if (d->fv.verdict != FILTER_ACCEPT) {
            pipeline_log(s->filters, d->qid, from, pipeline_score(s->filters),
                         d->fv.verdict == FILTER_TEMPFAIL ? "tempfail" : "reject");
            return false;
        }
    }
    struct pipeline_outcome o;
    memset(&o, 0, sizeof o);
    if (pipeline_finish(s->filters, st, smtp_hostname(s), s->filter_trusted, &s->msg, &o) < 0 ||
        insert_headers(d, &o.headers) < 0) {
        buf_free(&o.headers);
        refuse(d, FILTER_TEMPFAIL, 451, "4.3.0", "Error: out of memory, try again later");
        return false;
    }
    buf_free(&o.headers);
    pipeline_log(s->filters, d->qid, from, o.score, pipeline_action_name(&o));
    if (o.action == PIPELINE_REJECT) {
        refuse(d, FILTER_REJECT, 554, "5.7.1", "Spam message rejected");
        return false;
    }
    for (size_t i = 0; i < d->ntargets; i++) {
        d->targets[i].folder = o.folder;
        d->targets[i].flags = o.flags;
    }
    return true;
}

/* --- the worker job -------------------------------------------------------- */

static int queue_remote(struct smtp_session *s, struct delivery *d)
{
    struct iovec iov[2] = {
        { d->prefix.data + d->trace_off, d->prefix.len - d->trace_off },
        { s->msg.data, s->msg.len },
    };
    const char *const *orcpt = (const char *const *)s->remote_orcpt.v;
    struct queue_new m = {
        .sender = s->mail.from.mailbox,
        .rcpts = (const char *const *)s->remote.v,
        .notify = s->remote_notify,
        .orcpt = orcpt,
        .nrcpts = s->remote.n,
        .ret = s->mail.ret,
        .envid = s->mail.envid,
        /* Held until the local copies are stored too, so the runner can
         * never send a message whose submission then fails. */
        .held = d->ntargets > 0,
    };
    return queue_add(s->srv->queue, &m, iov, 2, d->queue_id, d->err, sizeof d->err);
}

/* Quotas (quota.h): one reply per DATA, so the message goes to nobody when
 * a local mailbox has no room for it: 552 when it can never fit there
 * (that wins), else 452. RCPT refuses mailboxes that are already full, and
 * too small for a declared SIZE, so this only catches what RCPT could not
 * know. */
static bool over_quota(struct smtp_session *s, struct delivery *d, uint64_t size)
{
    d->quota = QUOTA_OK;
    for (size_t i = 0; i < d->ntargets && d->quota != QUOTA_TOO_BIG; i++) {
        enum quota_result q = quota_check(s->srv->accounts, s->srv->store, s->srv->settings,
                                          d->targets[i].address, size, NULL);
        if (q == QUOTA_OK || (q == QUOTA_OVER && d->quota == QUOTA_OVER))
            continue;
        d->quota = q;
        snprintf(d->over_quota_rcpt, sizeof d->over_quota_rcpt, "%s", d->targets[i].address);
    }
    return d->quota != QUOTA_OK;
}

static void delivery_work(void *arg)
{
    struct delivery *d = arg;
    struct smtp_session *s = d->s;
    if (d->check_from && !from_header_owned(s)) {
        d->result = DELIVERY_SPOOFED;
        return;
    }
    if (d->filter && !filter_message(s, d)) {
        d->result = DELIVERY_FILTERED;
        return;
    }
    uint64_t size = (uint64_t)d->prefix.len + s->msg.len;
    if (over_quota(s, d, size)) {
        d->result = DELIVERY_OVER_QUOTA;
        return;
    }
    d->result = DELIVERY_FAILED;
    if (s->remote.n && queue_remote(s, d) < 0)
        return;
    if (d->ntargets) {
        struct iovec iov[2] = {
            { d->prefix.data, d->prefix.len },
            { s->msg.data, s->msg.len },
        };
        if (mailstore_deliver(s->srv->store, iov, 2, d->targets, d->ntargets, d->err,
                              sizeof d->err) < 0) {
            /* All or nothing: the sender will send again. */
            if (d->queue_id[0])
                queue_remove(s->srv->queue, d->queue_id);
            d->queue_id[0] = '\0';
            return;
        }
        for (size_t i = 0; i < d->ntargets; i++) {
            quota_charge(d->targets[i].address, size);
            /* inotify sees it too, but not in a mailbox created just now */
            mailnotify_changed(d->targets[i].address, d->targets[i].folder);
        }
        /* The local copies are durable: the queued one may go. If the
         * release fails, the record stays held and the next start drops
         * it, so the sender must not get a 250 now. */
        if (d->queue_id[0] && queue_release(s->srv->queue, d->queue_id) < 0) {
            set_err(d->err, sizeof d->err, "cannot release queued message %s", d->queue_id);
            return;
        }
    }
    d->result = DELIVERY_OK;
}

static void log_delivery(struct smtp_session *s, const struct delivery *d)
{
    struct buf to = BUF_INIT;
    for (size_t i = 0; i < s->rcpts.n; i++)
        buf_printf(&to, "%s<%s>", i ? "," : "", s->rcpts.v[i]);
    const char *rcpts = buf_cstr(&to);
    bool tls = conn_is_tls(s->conn);
    switch (d->result) {
    case DELIVERY_OK:
        log_info("smtp[%s]: %s: accepted client=%s%s%s from=<%s> to=%s mailboxes=%zu "
                 "queued=%s size=%zu proto=%s%s%s",
                 s->id, d->qid, s->peer, s->authed ? " user=" : "", s->authed ? s->user : "",
                 s->mail.from.mailbox, rcpts ? rcpts : "", d->ntargets,
                 d->queue_id[0] ? d->queue_id : "-", s->msg.len, smtp_protocol_name(s),
                 tls ? " tls=" : "", tls ? conn_tls_version(s->conn) : "");
        break;
    case DELIVERY_SPOOFED:
        log_info("smtp[%s]: %s: refused client=%s user=%s: From: header not owned", s->id,
                 d->qid, s->peer, s->user);
        break;
    case DELIVERY_FAILED:
        log_error("smtp[%s]: %s: not stored, client=%s from=<%s> to=%s: %s", s->id, d->qid,
                  s->peer, s->mail.from.mailbox, rcpts ? rcpts : "", d->err);
        break;
    case DELIVERY_OVER_QUOTA:
        log_info("smtp[%s]: %s: refused client=%s from=<%s> to=%s size=%zu: mailbox %s %s",
                 s->id, d->qid, s->peer, s->mail.from.mailbox, rcpts ? rcpts : "", s->msg.len,
                 d->over_quota_rcpt,
                 d->quota == QUOTA_TOO_BIG ? "quota smaller than the message" : "full");
        break;
    case DELIVERY_FILTERED:
        log_info("smtp[%s]: %s: refused client=%s from=<%s> to=%s: %d %s %s", s->id, d->qid,
                 s->peer, s->mail.from.mailbox, rcpts ? rcpts : "", d->fv.code,
                 d->fv.enhanced, d->fv.text);
        break;
    }
    buf_free(&to);
}

static void delivery_free(struct delivery *d)
{
    buf_free(&d->prefix);
    free(d->targets);
    free(d);
}

static void delivery_done(void *arg)
{
    struct delivery *d = arg;
    struct smtp_session *s = d->s;
    if (s->conn)
        log_delivery(s, d);
    else if (d->result == DELIVERY_OK)
        log_info("smtp[%s]: %s: accepted, but the client left before the reply", s->id, d->qid);
    if (d->queue_id[0] && s->srv->runner)
        queue_runner_kick(s->srv->runner);
    enum delivery_result result = d->result;
    char qid[sizeof d->qid];
    memcpy(qid, d->qid, sizeof qid);
    bool too_big = d->quota == QUOTA_TOO_BIG;
    /* The reply names the mailbox only when the client named it: an
     * alias's targets are not the sender's business. */
    char full[sizeof d->over_quota_rcpt + 4] = "";
    if (smtp_strvec_has(&s->rcpts, d->over_quota_rcpt))
        snprintf(full, sizeof full, "<%s>: ", d->over_quota_rcpt);
    struct pipeline_verdict fv = d->fv;
    delivery_free(d);

    smtp_transaction_reset(s);
    if (!smtp_session_resume(s))
        return;
    switch (result) {
    case DELIVERY_OK:
        s->messages++;
        s->junk = 0;
        smtp_reply(s, 250, "2.0.0", "Ok: queued as %s", qid);
        break;
    case DELIVERY_SPOOFED:
        smtp_reply(s, 553, "5.7.1", "From: header address not owned by user %s", s->user);
        break;
    case DELIVERY_FAILED:
        smtp_reply(s, 451, "4.3.0", "Error: local storage failure, try again later");
        break;
    case DELIVERY_OVER_QUOTA:
        if (too_big)
            smtp_reply_nocount(s, 552, "5.2.2", "%sMailbox full: message larger than "
                               "the mailbox quota", full);
        else
            smtp_reply_nocount(s, 452, "4.2.2", "%sMailbox full, try again later", full);
        break;
    case DELIVERY_FILTERED:
        if (fv.verdict == FILTER_TEMPFAIL)
            smtp_reply_nocount(s, fv.code, fv.enhanced, "%s", fv.text);
        else
            smtp_reply(s, fv.code, fv.enhanced, "%s", fv.text);
        break;
    }
    if (!smtp_stop_if_shutting_down(s))
        smtp_session_process(s);
}

void smtp_message_complete(struct smtp_session *s)
{
    s->phase = PHASE_COMMAND;
    struct delivery *d = calloc(1, sizeof *d);
    if (d && s->mailboxes.n)
        d->targets = calloc(s->mailboxes.n, sizeof *d->targets);
    if (!d || (s->mailboxes.n && !d->targets)) {
        free(d);
        smtp_transaction_reset(s);
        smtp_reply(s, 451, "4.3.0", "Error: out of memory, try again later");
        return;
    }
    d->s = s;
    random_hex(d->qid, 12);
    d->ntargets = s->mailboxes.n;
    for (size_t i = 0; i < s->mailboxes.n; i++)
        d->targets[i].address = s->mailboxes.v[i];
    d->check_from = s->authed && s->srv->settings->spoof_protection;
    d->filter = s->filters != NULL;
    d->filter_data = d->filter &&
                     pipeline_wants(s->srv->settings, FILTER_DATA, s->filter_trusted);
    if (trace_headers(s, d) < 0 ||
        workers_submit(s->srv->workers, delivery_work, delivery_done, d) < 0) {
        delivery_free(d);
        smtp_transaction_reset(s);
        smtp_reply(s, 451, "4.3.0", "Error: out of memory, try again later");
        return;
    }
    smtp_session_suspend(s);
}
