/* The filter pipeline: stages, verdicts, scores, headers. See pipeline.h. */
#include "pipeline.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filters.h"
#include "log.h"
#include "mime.h"
#include "server.h"
#include "workers.h"

#define STARS_MAX 50            /* X-Spam-Level, as SpamAssassin caps it */
#define FOLD_AT 78              /* header lines are folded before this column */

static const char *const stage_names[FILTER_NSTAGES] = {
    "connect", "helo", "mail", "rcpt", "data",
};

/* --- start and stop ---------------------------------------------------------- */

static bool started;
static bool started_filter[64];   /* which registry entries were started */

int filters_start(struct server *srv)
{
    if (started)
        return 0;
    started = true;
    size_t n;
    const struct filter_ops *const *ops = filters_registry(&n);
    int rc = 0;
    for (size_t i = 0; i < n && i < sizeof started_filter; i++) {
        if (!ops[i]->enabled(srv->settings))
            continue;
        started_filter[i] = true;
        if (ops[i]->start && ops[i]->start(srv) < 0) {
            log_error("filter: %s could not start", ops[i]->name);
            rc = -1;
        }
    }
    return rc;
}

void filters_stop(void)
{
    if (!started)
        return;
    size_t n;
    const struct filter_ops *const *ops = filters_registry(&n);
    for (size_t i = 0; i < n && i < sizeof started_filter; i++) {
        if (started_filter[i] && ops[i]->stop)
            ops[i]->stop();
        started_filter[i] = false;
    }
    started = false;
}

/* --- which stages run ----------------------------------------------------- */

/* Whether op runs for this client at all (not looking at stages). */
static bool applies(const struct filter_ops *op, const struct settings *st, bool trusted)
{
    return (!trusted || op->for_submission) && op->enabled(st);
}

bool pipeline_active_ops(const struct filter_ops *const *ops, size_t n,
                         const struct settings *st, bool trusted)
{
    for (size_t i = 0; i < n; i++)
        if (applies(ops[i], st, trusted))
            return true;
    return false;
}

bool pipeline_wants_ops(const struct filter_ops *const *ops, size_t n,
                        const struct settings *st, enum filter_stage stage, bool trusted)
{
    /* Trusted clients: the end-of-data stage only. */
    if (trusted && stage != FILTER_DATA)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ops[i]->hook[stage] && applies(ops[i], st, trusted))
            return true;
    return false;
}

bool pipeline_active(const struct settings *st, bool trusted)
{
    size_t n;
    const struct filter_ops *const *ops = filters_registry(&n);
    return pipeline_active_ops(ops, n, st, trusted);
}

bool pipeline_wants(const struct settings *st, enum filter_stage stage, bool trusted)
{
    size_t n;
    const struct filter_ops *const *ops = filters_registry(&n);
    return pipeline_wants_ops(ops, n, st, stage, trusted);
}

/* --- per-session state ---------------------------------------------------------- */

struct pipeline_session *pipeline_session_new(void)
{
    return calloc(1, sizeof(struct pipeline_session));
}

static void layer_free(struct pipeline_layer *l)
{
    buf_free(&l->headers);
    buf_free(&l->auth_results);
    free(l->reasons);
    memset(l, 0, sizeof *l);
}

void pipeline_session_free(struct pipeline_session *ps)
{
    if (!ps)
        return;
    for (int i = 0; i < FILTER_NSTAGES; i++)
        layer_free(&ps->layer[i]);
    free(ps);
}

void pipeline_session_clear(struct pipeline_session *ps, enum filter_stage from)
{
    if (!ps)
        return;
    for (int i = from; i < FILTER_NSTAGES; i++) {
        struct pipeline_layer *l = &ps->layer[i];
        buf_reset(&l->headers);
        buf_reset(&l->auth_results);
        l->nreasons = 0;
    }
}

/* --- running a stage --------------------------------------------------------- */

/* Reason names go into headers and log lines: letters, digits, '_', '-',
 * '.' only. */
static void copy_reason(char *out, const char *in)
{
    size_t n = 0;
    for (size_t i = 0; in[i] && i < FILTER_REASON_MAX && n < FILTER_REASON_MAX - 1; i++) {
        char c = in[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
        if (ok)
            out[n++] = c;
    }
    out[n] = '\0';
}

static int add_reason(struct pipeline_layer *l, const char *name, double score)
{
    if (l->nreasons == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct filter_reason *r = realloc(l->reasons, cap * sizeof *r);
        if (!r)
            return -1;
        l->reasons = r;
        l->cap = cap;
    }
    struct filter_reason *r = &l->reasons[l->nreasons];
    copy_reason(r->name, name);
    if (!r->name[0])
        return 0;
    r->score = isfinite(score) ? score : 0.0;
    l->nreasons++;
    return 0;
}

void filter_add_score(const struct filter_txn *t, const char *reason, double score)
{
    if (t->scores && add_reason(t->scores, reason, score) < 0)
        log_warn("filter: %s: out of memory, score %s dropped", t->id ? t->id : "-", reason);
}

/* Keeps what one filter added: its header fields (completed with CRLF) and
 * its method result (joined with ";" and a fold). */
static void keep_additions(struct pipeline_layer *l, const struct buf *hdr, const struct buf *ar)
{
    if (hdr->len) {
        buf_append(&l->headers, hdr->data, hdr->len);
        if (hdr->len < 2 || memcmp(hdr->data + hdr->len - 2, "\r\n", 2) != 0)
            buf_append(&l->headers, "\r\n", 2);
    }
    if (ar->len) {
        if (l->auth_results.len)
            buf_append(&l->auth_results, ";\r\n\t", 4);
        buf_append(&l->auth_results, ar->data, ar->len);
    }
}

/* The reply of a refusal: a 4xx for a tempfail, a 5xx for a reject, with
 * an enhanced code of the same class and one line of printable text. */
static void set_refusal(struct pipeline_verdict *v, const struct filter_result *r,
                        const struct filter_ops *op)
{
    bool temp = r->verdict == FILTER_TEMPFAIL;
    int lo = temp ? 400 : 500;
    v->verdict = r->verdict;
    v->filter = op->name;
    v->code = r->code >= lo && r->code < lo + 100 ? r->code : (temp ? 451 : 550);
    const char *def = temp ? "4.7.1" : "5.7.1";
    bool enh_ok = r->enhanced[0] == (temp ? '4' : '5') && r->enhanced[1] == '.' &&
                  strlen(r->enhanced) < sizeof v->enhanced &&
                  strspn(r->enhanced, "0123456789.") == strlen(r->enhanced);
    snprintf(v->enhanced, sizeof v->enhanced, "%s", enh_ok ? r->enhanced : def);
    size_t n = 0;
    for (size_t i = 0; r->text[i] && i < FILTER_TEXT_MAX && n < sizeof v->text - 1; i++) {
        unsigned char c = (unsigned char)r->text[i];
        v->text[n++] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    v->text[n] = '\0';
    if (!n)
        snprintf(v->text, sizeof v->text, "%s",
                 temp ? "Service temporarily unavailable, try again later" : "Refused");
}

static void log_refusal(const struct filter_txn *t, enum filter_stage stage,
                        const struct pipeline_verdict *v, const char *reason)
{
    log_info("filter: %s stage=%s filter=%s client=%s from=<%s>%s%s%s reasons=%s action=%s "
             "reply=%d %s %s", t->id ? t->id : "-", stage_names[stage], v->filter,
             t->client_ip ? t->client_ip : "", t->mail_from ? t->mail_from : "",
             t->rcpt ? " to=<" : "", t->rcpt ? t->rcpt : "", t->rcpt ? ">" : "",
             *reason ? reason : "-", v->verdict == FILTER_TEMPFAIL ? "tempfail" : "reject",
             v->code, v->enhanced, v->text);
}

void pipeline_run_ops(const struct filter_ops *const *ops, size_t n,
                      struct pipeline_session *ps, enum filter_stage stage,
                      struct filter_txn *t, bool trusted, struct pipeline_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->verdict = FILTER_ACCEPT;
    struct pipeline_layer *l = &ps->layer[stage];
    size_t h0 = l->headers.len, a0 = l->auth_results.len, r0 = l->nreasons;
    struct mime_part *mime = NULL;
    log_debug("filter: %s stage=%s", t->id ? t->id : "-", stage_names[stage]);
    for (size_t i = 0; i < n; i++) {
        const struct filter_ops *op = ops[i];
        if (!op->hook[stage] || !applies(op, t->srv->settings, trusted))
            continue;
        if (stage == FILTER_DATA && !t->mime && t->msg)
            t->mime = mime = mime_parse(t->msg, t->len);
        struct filter_result r;
        memset(&r, 0, sizeof r);
        struct buf hdr = BUF_INIT, ar = BUF_INIT;
        t->add_headers = &hdr;
        t->auth_results = &ar;
        t->scores = l;
        op->hook[stage](t, &r);
        t->add_headers = t->auth_results = NULL;
        t->scores = NULL;
        if (r.verdict == FILTER_TEMPFAIL || r.verdict == FILTER_REJECT) {
            buf_free(&hdr);
            buf_free(&ar);
            set_refusal(v, &r, op);
            /* Nothing of a refused stage is kept (a refused recipient's
             * greylist reason must not follow the message). */
            l->headers.len = h0;
            l->auth_results.len = a0;
            l->nreasons = r0;
            log_refusal(t, stage, v, r.reason);
            break;
        }
        keep_additions(l, &hdr, &ar);
        buf_free(&hdr);
        buf_free(&ar);
        if (r.verdict == FILTER_SCORE || r.reason[0])
            add_reason(l, r.reason, r.verdict == FILTER_SCORE ? r.score : 0.0);
    }
    if (mime) {
        mime_free(mime);
        t->mime = NULL;
    }
}

void pipeline_run(struct pipeline_session *ps, enum filter_stage stage, struct filter_txn *t,
                  bool trusted, struct pipeline_verdict *v)
{
    size_t n;
    const struct filter_ops *const *ops = filters_registry(&n);
    pipeline_run_ops(ops, n, ps, stage, t, trusted, v);
}

struct job {
    struct pipeline_session *ps;
    enum filter_stage stage;
    struct filter_txn txn;
    bool trusted;
    struct pipeline_verdict v;
    pipeline_done_fn done;
    void *arg;
};

static void job_work(void *arg)
{
    struct job *j = arg;
    pipeline_run(j->ps, j->stage, &j->txn, j->trusted, &j->v);
}

static void job_done(void *arg)
{
    struct job *j = arg;
    j->done(j->arg, &j->v);
    free(j);
}

int pipeline_submit(struct server *srv, struct pipeline_session *ps, enum filter_stage stage,
                    const struct filter_txn *t, bool trusted, pipeline_done_fn done, void *arg)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->ps = ps;
    j->stage = stage;
    j->txn = *t;
    j->trusted = trusted;
    j->done = done;
    j->arg = arg;
    if (workers_submit(srv->workers, job_work, job_done, j) < 0) {
        free(j);
        return -1;
    }
    return 0;
}

/* --- end of data: the decision ------------------------------------------------- */

double pipeline_score(const struct pipeline_session *ps)
{
    double sum = 0.0;
    for (int i = 0; i < FILTER_NSTAGES; i++)
        for (size_t k = 0; k < ps->layer[i].nreasons; k++)
            sum += ps->layer[i].reasons[k].score;
    return sum;
}

enum pipeline_action pipeline_spam_action(double score, const struct settings *st)
{
    if (!st->enable_spamassassin)
        return PIPELINE_ACCEPT;
    if (score >= st->sa_kill)
        return PIPELINE_REJECT;
    if (score >= st->sa_tag2)
        return PIPELINE_SPAM;
    if (score >= st->sa_tag)
        return PIPELINE_TAG;
    return PIPELINE_ACCEPT;
}

const char *pipeline_action_name(const struct pipeline_outcome *o)
{
    switch (o->action) {
    case PIPELINE_ACCEPT: return "accept";
    case PIPELINE_TAG:    return "tag";
    case PIPELINE_SPAM:   return o->folder ? "junk" : "spam";
    case PIPELINE_REJECT: return "reject";
    }
    return "accept";
}

void pipeline_format_score(double score, char *out, size_t outlen)
{
    if (!isfinite(score))
        score = 0.0;
    snprintf(out, outlen, "%.2f", score);
    size_t n = strlen(out);
    /* "6.30" -> "6.3", "2.00" -> "2.0" */
    if (n >= 4 && out[n - 1] == '0' && out[n - 3] == '.')
        out[n - 1] = '\0';
    if (strcmp(out, "-0.0") == 0)
        snprintf(out, outlen, "0.0");
}

int pipeline_format_reasons(const struct pipeline_session *ps, struct buf *out)
{
    int rc = 0;
    bool first = true;
    for (int i = 0; i < FILTER_NSTAGES; i++) {
        const struct pipeline_layer *l = &ps->layer[i];
        for (size_t k = 0; k < l->nreasons; k++) {
            char score[32];
            pipeline_format_score(l->reasons[k].score, score, sizeof score);
            rc |= buf_printf(out, "%s%s(%s)", first ? "" : ",", l->reasons[k].name, score);
            first = false;
        }
    }
    return rc ? -1 : 0;
}

void pipeline_log(const struct pipeline_session *ps, const char *qid, const char *from,
                  double score, const char *action)
{
    struct buf reasons = BUF_INIT;
    pipeline_format_reasons(ps, &reasons);
    const char *r = buf_cstr(&reasons);
    char sc[32];
    pipeline_format_score(score, sc, sizeof sc);
    log_info("filter: %s from=<%s> score=%s reasons=%s action=%s", qid, from, sc,
             r && *r ? r : "-", action);
    buf_free(&reasons);
}

/* --- end of data: headers ------------------------------------------------------- */

int pipeline_auth_results_header(const char *authserv_id, const char *methods, size_t len,
                                 struct buf *out)
{
    if (!len)
        return buf_printf(out, "Authentication-Results: %s; none\r\n", authserv_id);
    return buf_printf(out, "Authentication-Results: %s;\r\n\t%.*s\r\n", authserv_id, (int)len,
                      methods);
}

/* Appends "item" to a folded comma-separated list; *col is the column. */
static int append_folded(struct buf *out, size_t *col, const char *item, bool first)
{
    size_t len = strlen(item);
    int rc = 0;
    if (!first) {
        rc |= buf_append(out, ",", 1);
        (*col)++;
        if (*col + len > FOLD_AT) {
            rc |= buf_append(out, "\r\n\t", 3);
            *col = 8;
        }
    }
    rc |= buf_append(out, item, len);
    *col += len;
    return rc;
}

int pipeline_spam_headers(const struct pipeline_session *ps, const struct settings *st,
                          double score, enum pipeline_action action, struct buf *out)
{
    char sc[32], req[32];
    pipeline_format_score(score, sc, sizeof sc);
    pipeline_format_score(st->sa_tag2, req, sizeof req);
    bool spam = action == PIPELINE_SPAM || action == PIPELINE_REJECT;
    int rc = buf_printf(out, "X-Spam-Flag: %s\r\nX-Spam-Score: %s\r\n", spam ? "YES" : "NO", sc);
    if (score >= 1.0) {
        char stars[STARS_MAX + 1];
        int n = score >= STARS_MAX ? STARS_MAX : (int)score;
        memset(stars, '*', (size_t)n);
        stars[n] = '\0';
        rc |= buf_printf(out, "X-Spam-Level: %s\r\n", stars);
    }
    rc |= buf_printf(out, "X-Spam-Status: %s, score=%s required=%s tests=",
                     spam ? "Yes" : "No", sc, req);
    size_t col = strlen("X-Spam-Status: Yes, score= required= tests=") + strlen(sc) + strlen(req);
    bool first = true;
    for (int i = 0; i < FILTER_NSTAGES; i++)
        for (size_t k = 0; k < ps->layer[i].nreasons; k++) {
            rc |= append_folded(out, &col, ps->layer[i].reasons[k].name, first);
            first = false;
        }
    if (first)
        rc |= buf_append(out, "none", 4);
    rc |= buf_append(out, "\r\n", 2);
    return rc ? -1 : 0;
}

/* The end of the header section: just past the empty line, or len. */
static size_t header_end(const char *msg, size_t len)
{
    size_t p = 0;
    while (p < len) {
        if (msg[p] == '\n' || (msg[p] == '\r' && p + 1 < len && msg[p + 1] == '\n'))
            return p;   /* the empty line */
        const char *lf = memchr(msg + p, '\n', len - p);
        if (!lf)
            return len;
        p = (size_t)(lf - msg) + 1;
    }
    return len;
}

/* The length of the field starting at msg[p] (its continuation lines
 * included), within the header section ending at end. */
static size_t field_len(const char *msg, size_t p, size_t end)
{
    size_t q = p;
    do {
        const char *lf = memchr(msg + q, '\n', end - q);
        q = lf ? (size_t)(lf - msg) + 1 : end;
    } while (q < end && (msg[q] == ' ' || msg[q] == '\t'));
    return q - p;
}

size_t pipeline_strip_fields(char *msg, size_t len,
                             bool (*match)(const char *field, size_t flen, const void *arg),
                             const void *arg)
{
    size_t end = header_end(msg, len);
    size_t p = 0;
    while (p < end) {
        size_t flen = field_len(msg, p, end);
        if (!match(msg + p, flen, arg)) {
            p += flen;
            continue;
        }
        memmove(msg + p, msg + p + flen, len - p - flen);
        len -= flen;
        end -= flen;
    }
    return len;
}

/* Whether the field is called `name` (case-insensitive); *value is then
 * just past the colon. */
static bool field_named(const char *field, size_t flen, const char *name, size_t *value)
{
    size_t n = strlen(name);
    if (flen <= n || strncasecmp(field, name, n) != 0)
        return false;
    size_t i = n;
    while (i < flen && (field[i] == ' ' || field[i] == '\t'))
        i++;
    if (i >= flen || field[i] != ':')
        return false;
    *value = i + 1;
    return true;
}

static bool is_fws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool pipeline_is_our_auth_results(const char *field, size_t flen, const void *authserv_id)
{
    const char *id = authserv_id;
    size_t i;
    if (!field_named(field, flen, "Authentication-Results", &i))
        return false;
    /* CFWS before the authserv-id: spaces, folds and (non-nested) comments */
    for (;;) {
        while (i < flen && is_fws(field[i]))
            i++;
        if (i >= flen || field[i] != '(')
            break;
        const char *close = memchr(field + i, ')', flen - i);
        if (!close)
            return false;
        i = (size_t)(close - field) + 1;
    }
    size_t idlen = strlen(id);
    if (flen - i < idlen || strncasecmp(field + i, id, idlen) != 0)
        return false;
    i += idlen;
    return i >= flen || is_fws(field[i]) || field[i] == ';' || field[i] == '(';
}

static bool is_spam_field(const char *field, size_t flen, const void *arg)
{
    (void)arg;
    static const char *const names[] = { "X-Spam-Flag", "X-Spam-Score", "X-Spam-Level",
                                         "X-Spam-Status" };
    size_t v;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (field_named(field, flen, names[i], &v))
            return true;
    return false;
}

int pipeline_prefix_subject(struct buf *msg, const char *prefix, struct buf *headers)
{
    size_t plen = strlen(prefix);
    if (!plen)
        return 0;
    size_t end = header_end(msg->data, msg->len);
    for (size_t p = 0; p < end;) {
        size_t flen = field_len(msg->data, p, end), v;
        if (!field_named(msg->data + p, flen, "Subject", &v)) {
            p += flen;
            continue;
        }
        size_t at = p + v;
        if (at < msg->len && msg->data[at] == ' ')
            at++;
        if (buf_reserve(msg, plen) < 0)
            return -1;
        memmove(msg->data + at + plen, msg->data + at, msg->len - at);
        memcpy(msg->data + at, prefix, plen);
        msg->len += plen;
        return 0;
    }
    while (plen && prefix[plen - 1] == ' ')
        plen--;
    return buf_printf(headers, "Subject: %.*s\r\n", (int)plen, prefix);
}

int pipeline_finish(const struct pipeline_session *ps, const struct settings *st,
                    const char *hostname, bool trusted, struct buf *msg,
                    struct pipeline_outcome *out)
{
    out->score = pipeline_score(ps);
    out->action = trusted ? PIPELINE_ACCEPT : pipeline_spam_action(out->score, st);
    out->folder = out->flags = NULL;
    if (out->action == PIPELINE_REJECT)
        return 0;
    int rc = 0;
    if (!trusted) {
        msg->len = pipeline_strip_fields(msg->data, msg->len, pipeline_is_our_auth_results,
                                         hostname);
        struct buf methods = BUF_INIT;
        for (int i = 0; i < FILTER_NSTAGES; i++) {
            const struct buf *a = &ps->layer[i].auth_results;
            if (!a->len)
                continue;
            if (methods.len)
                rc |= buf_append(&methods, ";\r\n\t", 4);
            rc |= buf_append(&methods, a->data, a->len);
        }
        rc |= pipeline_auth_results_header(hostname, methods.data, methods.len, &out->headers);
        buf_free(&methods);
    }
    for (int i = 0; i < FILTER_NSTAGES; i++)
        if (ps->layer[i].headers.len)
            rc |= buf_append(&out->headers, ps->layer[i].headers.data,
                             ps->layer[i].headers.len);
    if (!trusted && st->enable_spamassassin) {
        msg->len = pipeline_strip_fields(msg->data, msg->len, is_spam_field, NULL);
        if (out->action != PIPELINE_ACCEPT)
            rc |= pipeline_spam_headers(ps, st, out->score, out->action, &out->headers);
    }
    if (out->action == PIPELINE_SPAM) {
        rc |= pipeline_prefix_subject(msg, st->spam_subject, &out->headers);
        out->folder = st->move_spam_to_junk ? "Junk" : NULL;
        out->flags = st->mark_spam_as_read ? "S" : NULL;
    }
    return rc ? -1 : 0;
}
