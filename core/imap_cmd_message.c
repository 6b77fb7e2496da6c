/* The IMAP commands that work on messages: FETCH, STORE, SEARCH, COPY,
 * MOVE, EXPUNGE, CLOSE and APPEND (RFC 3501 6.3.11, 6.4; UIDPLUS RFC 4315;
 * MOVE RFC 6851). See imap_session.h for the command life cycle.
 *
 * Every handler resolves its arguments on the loop thread against the
 * session's snapshot, copies what the worker needs into a job (the worker
 * never sees the session), and applies the results to the snapshot in the
 * done callback, so that imap_done's sync does not report the session's
 * own changes back to it. */
#include "imap_session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imap_bodystructure.h"
#include "imap_fetch.h"
#include "imap_search.h"
#include "log.h"
#include "mailnotify.h"
#include "mime.h"
#include "quota.h"
#include "util.h"

#define ERR_LEN             256
#define FETCH_BATCH_MSGS    200               /* messages per FETCH job */
#define FETCH_BATCH_OCTETS  (4 * 1024 * 1024) /* output per FETCH job, roughly */

static const char txt_serverbug[] = "[SERVERBUG] Internal error occurred, refer to server log";
static const char txt_nomem[] = "[UNAVAILABLE] Out of memory, try again later";
static const char txt_readonly[] = "[READ-ONLY] Mailbox is read-only";
static const char txt_expungeissued[] = "[EXPUNGEISSUED] Some messages were expunged";
static const char txt_trycreate[] = "[TRYCREATE] Mailbox does not exist";
static const char txt_overquota[] = "[OVERQUOTA] Quota exceeded (mailbox for user is full)";

/* --- small helpers ----------------------------------------------------------------- */

/* A message as a worker sees it: copied out of the snapshot, plus what the
 * worker found. */
struct item {
    uint32_t seq, uid;
    size_t pos;              /* FETCH: index into the command's UID list */
    char flags[8];
    char *keywords;          /* malloc'd */
    bool recent;
    uint64_t size;
    time_t internaldate;
    bool vanished;           /* gone from the store */
    bool changed;            /* flags or keywords were written */
    bool kw_changed;
};

static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

static char *dup_folder(const char *folder, bool *ok)
{
    *ok = true;
    if (!folder)
        return NULL;
    char *c = strdup(folder);
    if (!c)
        *ok = false;
    return c;
}

static int item_from_snapshot(const struct imap_mailbox *mb, size_t i, struct item *it)
{
    const struct imap_msg *m = &mb->msgs[i];
    memset(it, 0, sizeof *it);
    it->seq = (uint32_t)(i + 1);
    it->uid = m->uid;
    memcpy(it->flags, m->flags, sizeof it->flags);
    it->flags[sizeof it->flags - 1] = '\0';
    it->recent = m->recent;
    it->size = m->size;
    it->internaldate = m->internaldate;
    it->keywords = dup_str(m->keywords);
    return it->keywords ? 0 : -1;
}

static void items_free(struct item *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i].keywords);
    free(v);
}

/* The snapshot index of a UID (the snapshot is in ascending UID order). */
static bool snap_find(const struct imap_mailbox *mb, uint32_t uid, size_t *idx)
{
    size_t lo = 0, hi = mb->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mb->msgs[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < mb->n && mb->msgs[lo].uid == uid) {
        *idx = lo;
        return true;
    }
    return false;
}

/* Records a flag change this session made, so imap_done's sync does not
 * report it again. keywords NULL keeps them. */
static void snap_set_flags(struct imap_mailbox *mb, uint32_t uid, const char *flags,
                           const char *keywords)
{
    size_t i;
    if (!mb || !snap_find(mb, uid, &i))
        return;
    struct imap_msg *m = &mb->msgs[i];
    snprintf(m->flags, sizeof m->flags, "%s", flags);
    if (keywords) {
        char *k = strdup(keywords);
        if (k) {                /* else the sync reports the difference later */
            free(m->keywords);
            m->keywords = k;
        }
    }
}

/* Removes the messages with the given UIDs (ascending) from the snapshot,
 * telling the client "* n EXPUNGE" for each (ascending, numbers adjusted
 * for the ones already removed) unless silent. */
static void snap_expunge(struct imap_session *s, const uint32_t *uids, size_t n, bool silent)
{
    struct imap_mailbox *mb = s->sel;
    if (!mb || n == 0)
        return;
    size_t j = 0, w = 0, removed = 0;
    for (size_t i = 0; i < mb->n; i++) {
        struct imap_msg *m = &mb->msgs[i];
        while (j < n && uids[j] < m->uid)
            j++;
        if (j < n && uids[j] == m->uid) {
            if (!silent)
                imap_printf(s, "* %zu EXPUNGE\r\n", i + 1 - removed);
            free(m->keywords);
            removed++;
            continue;
        }
        mb->msgs[w++] = *m;
    }
    mb->n = w;
}

/* Appends a UID set in compact form ("1:3,7"), taking v[i] only where
 * keep is NULL or keep[i] is not 0. v must be ascending. */
static int append_uidset(struct buf *b, const uint32_t *v, const uint32_t *keep, size_t n)
{
    bool open = false, first = true;
    uint32_t lo = 0, hi = 0;
    int rc = 0;
    for (size_t i = 0; i <= n && rc == 0; i++) {
        bool end = i == n;
        uint32_t x = 0;
        if (!end) {
            if (keep && keep[i] == 0)
                continue;
            x = v[i];
            if (open && hi != UINT32_MAX && x == hi + 1) {
                hi = x;
                continue;
            }
        }
        if (open) {
            rc = buf_printf(b, "%s%u", first ? "" : ",", lo);
            if (rc == 0 && hi != lo)
                rc = buf_printf(b, ":%u", hi);
            first = false;
        }
        lo = hi = x;
        open = !end;
    }
    return rc;
}

static bool need_selected(struct imap_session *s)
{
    if (s->sel && s->state == IMAP_STATE_SELECTED)
        return true;
    imap_done(s, IMAP_BAD, "No mailbox selected");
    return false;
}

static void fail_serverbug(struct imap_session *s, const char *what, const char *err)
{
    log_warn("imap[%s]: %s: %s failed for %s: %s", s->id, s->peer, what, s->address, err);
    imap_done(s, IMAP_NO, "%s", txt_serverbug);
}

/* Resolves a sequence set argument (sequence numbers, or UIDs for the UID
 * form) against the snapshot into the UIDs it names, ascending. Returns 0,
 * or -1 after ending the command (BAD for a bad set or a sequence number
 * beyond the mailbox, NO when out of memory). */
static int select_set(struct imap_session *s, const struct imap_arg *arg, uint32_t **uids,
                      size_t *n)
{
    const struct imap_mailbox *mb = s->sel;
    const char *err = NULL;
    struct imap_seqset set, res;
    *uids = NULL;
    *n = 0;
    uint32_t star = s->cmd->uid ? (mb->n ? mb->msgs[mb->n - 1].uid : 0) : (uint32_t)mb->n;
    if (imap_arg_seqset(arg, &set, s->arena, &err) < 0 ||
        imap_seqset_resolve(&set, star, &res, s->arena, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid sequence set");
        return -1;
    }
    /* "1:*" in an empty mailbox names nothing: clients send it blindly. */
    if (!s->cmd->uid && mb->n == 0 && set.has_star)
        return 0;
    if (!s->cmd->uid && res.count > 0 && res.ranges[res.count - 1].hi > mb->n) {
        imap_done(s, IMAP_BAD, "Invalid sequence number");
        return -1;
    }
    size_t count = 0;
    if (s->cmd->uid) {
        for (size_t i = 0; i < mb->n; i++)
            if (imap_seqset_contains(&res, mb->msgs[i].uid))
                count++;
    } else {
        for (size_t r = 0; r < res.count; r++)
            count += (size_t)res.ranges[r].hi - res.ranges[r].lo + 1;
    }
    if (count == 0)
        return 0;
    uint32_t *v = malloc(count * sizeof *v);
    if (!v) {
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return -1;
    }
    size_t k = 0;
    if (s->cmd->uid) {
        for (size_t i = 0; i < mb->n; i++)
            if (imap_seqset_contains(&res, mb->msgs[i].uid))
                v[k++] = mb->msgs[i].uid;
    } else {
        for (size_t r = 0; r < res.count; r++)
            for (uint64_t q = res.ranges[r].lo; q <= res.ranges[r].hi; q++)
                v[k++] = mb->msgs[q - 1].uid;
    }
    *uids = v;
    *n = k;
    return 0;
}

/* --- FETCH ------------------------------------------------------------------------- */

struct fetch_state {
    struct imap_fetch f;          /* parsed into the command's arena */
    struct mailindex *ix;
    char *folder;
    char id[sizeof ((struct imap_session *)0)->id]; /* the session's, for log lines */
    uint32_t *uids;               /* what the command names, ascending */
    size_t n, next;               /* next: first UID not yet fetched */
    bool uid_cmd, sets_seen;
    bool expunged;                /* some message had gone: EXPUNGEISSUED */
    bool changed;                 /* \Seen was set on some message */
};

struct fetch_job {
    const struct fetch_state *st; /* read-only on the worker */
    struct item *items;
    size_t n, done;               /* done: items the worker got through */
    struct buf out;
    bool failed;
    char err[ERR_LEN];
};

struct fetch_bufs {
    struct buf msg, env, bs, body;
};

static void fetch_bufs_free(struct fetch_bufs *b)
{
    buf_free(&b->msg);
    buf_free(&b->env);
    buf_free(&b->bs);
    buf_free(&b->body);
}

/* ENVELOPE, BODYSTRUCTURE and BODY of a freshly parsed message, into the
 * buffers the cache would have filled, then stored in the cache (a failed
 * store costs only a later re-parse). */
static int fetch_build_cache(const struct fetch_state *st, uint32_t uid,
                             const struct mime_part *mime, struct fetch_bufs *b)
{
    buf_reset(&b->env);
    buf_reset(&b->bs);
    buf_reset(&b->body);
    if (imap_envelope(&b->env, mime) < 0 || imap_bodystructure(&b->bs, mime, true) < 0 ||
        imap_bodystructure(&b->body, mime, false) < 0)
        return -1;
    char err[ERR_LEN];
    if (mailindex_put_cache(st->ix, st->folder, uid, b->env.data, b->env.len, b->bs.data,
                            b->bs.len, b->body.data, b->body.len, err, sizeof err) < 0)
        log_warn("imap[%s]: caching the structure of UID %u failed: %s", st->id, uid, err);
    return 0;
}

/* FETCH's implicit \Seen, added to a message's current flags. */
struct seen_update {
    char flags[8];                /* out: the new Maildir letters */
    char *keywords;               /* out: the current keywords (malloc'd) */
};

static int seen_update_fn(void *arg, const char *flags, const char *keywords,
                          char *new_flags, char **new_keywords)
{
    struct seen_update *u = arg;
    if (!(u->keywords = strdup(keywords)))
        return -1;
    imap_flags_to_maildir(imap_flags_from_maildir(flags) | IMAP_FLAG_SEEN, flags, u->flags);
    snprintf(new_flags, MAILINDEX_FLAGS_MAX + 1, "%s", u->flags);
    *new_keywords = NULL;
    return 0;
}

/* One message's FETCH response into out. Returns 0, 1 when the message
 * has gone from the store, or -1 with err set. */
static int fetch_one(const struct fetch_state *st, struct item *it, struct fetch_bufs *b,
                     struct buf *out, char *err, size_t errlen)
{
    bool cached = false;
    struct imap_fetch_needs need = imap_fetch_needs(&st->f, true);
    if (need.structure) {
        if (mailindex_get_cache(st->ix, st->folder, it->uid, &b->env, &b->bs, &b->body,
                                &cached, err, errlen) < 0)
            return errno == ENOENT ? 1 : -1;
        need = imap_fetch_needs(&st->f, cached);
    }
    struct mime_part *mime = NULL;
    if (need.message) {
        if (mailindex_read(st->ix, st->folder, it->uid, &b->msg, err, errlen) < 0)
            return errno == ENOENT ? 1 : -1;
        mime = mime_parse(b->msg.data ? b->msg.data : "", b->msg.len);
        if (!mime || (need.structure && !cached && fetch_build_cache(st, it->uid, mime, b) < 0)) {
            mime_free(mime);
            set_err(err, errlen, "out of memory");
            return -1;
        }
        cached = need.structure;
    }
    unsigned system = imap_flags_from_maildir(it->flags);
    bool add_flags = false;
    if (st->sets_seen && !(system & IMAP_FLAG_SEEN)) {
        /* \Seen is added to the current flags, not the snapshot's. */
        struct seen_update u = { .flags = "" };
        if (mailindex_update_flags(st->ix, st->folder, it->uid, seen_update_fn, &u, err,
                                   errlen) < 0) {
            int e = errno;
            free(u.keywords);
            mime_free(mime);
            return e == ENOENT ? 1 : -1;
        }
        memcpy(it->flags, u.flags, sizeof it->flags);
        free(it->keywords);
        it->keywords = u.keywords;
        it->changed = true;
        system = imap_flags_from_maildir(it->flags);
        add_flags = true;
    }
    struct imap_fetch_msg m = {
        .uid = it->uid, .system = system, .keywords = it->keywords, .recent = it->recent,
        .internaldate = it->internaldate, .size = it->size,
        .msg = need.message ? (b->msg.data ? b->msg.data : "") : NULL,
        .len = need.message ? b->msg.len : 0,
        .mime = mime,
    };
    if (cached) {
        m.envelope = b->env.data ? b->env.data : "";
        m.envelope_len = b->env.len;
        m.bodystructure = b->bs.data ? b->bs.data : "";
        m.bodystructure_len = b->bs.len;
        m.body = b->body.data ? b->body.data : "";
        m.body_len = b->body.len;
    }
    size_t mark = out->len;
    int rc = buf_printf(out, "* %u FETCH ", it->seq);
    if (rc == 0)
        rc = imap_fetch_render(out, &st->f, &m, st->uid_cmd, add_flags);
    if (rc == 0)
        rc = buf_append(out, "\r\n", 2);
    mime_free(mime);
    if (rc < 0) {
        out->len = mark;
        set_err(err, errlen, "rendering UID %u failed", it->uid);
        return -1;
    }
    return 0;
}

static void fetch_work(void *arg)
{
    struct fetch_job *j = arg;
    struct fetch_bufs b = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT };
    size_t i;
    for (i = 0; i < j->n; i++) {
        if (i > 0 && j->out.len >= FETCH_BATCH_OCTETS)
            break;
        int rc = fetch_one(j->st, &j->items[i], &b, &j->out, j->err, sizeof j->err);
        if (rc < 0) {
            j->failed = true;
            break;
        }
        if (rc > 0)
            j->items[i].vanished = true;
    }
    j->done = i;
    fetch_bufs_free(&b);
}

static void fetch_finish(struct imap_session *s, struct fetch_state *st, bool failed,
                         const char *err)
{
    if (st->changed)
        mailnotify_changed(s->address, st->folder);
    bool expunged = st->expunged && !st->uid_cmd;
    free(st->folder);
    free(st->uids);
    free(st);
    if (failed)
        fail_serverbug(s, "FETCH", err);
    else if (expunged)
        imap_done(s, IMAP_NO, "%s", txt_expungeissued);
    else
        imap_done(s, IMAP_OK, "Fetch completed");
}

static void fetch_next(struct imap_session *s, void *arg);

static void fetch_done(struct imap_session *s, void *arg)
{
    struct fetch_job *j = arg;
    struct fetch_state *st = (struct fetch_state *)j->st;
    if (j->out.len)
        imap_write(s, j->out.data, j->out.len);
    for (size_t i = 0; i < j->done; i++) {
        struct item *it = &j->items[i];
        if (it->vanished) {
            st->expunged = true;
        } else if (it->changed) {
            st->changed = true;
            snap_set_flags(s->sel, it->uid, it->flags, it->keywords);
        }
    }
    if (j->done < j->n)
        st->next = j->items[j->done].pos;   /* the worker stopped early: resume there */
    bool failed = j->failed;
    char err[ERR_LEN];
    snprintf(err, sizeof err, "%s", j->err);
    buf_free(&j->out);
    items_free(j->items, j->n);
    free(j);
    if (failed || !s->conn || st->next >= st->n) {
        fetch_finish(s, st, failed, err);
        return;
    }
    imap_when_writable(s, fetch_next, st);
}

/* Builds and runs the next batch: up to FETCH_BATCH_MSGS messages that
 * are still in the snapshot. */
static void fetch_next(struct imap_session *s, void *arg)
{
    struct fetch_state *st = arg;
    const struct imap_mailbox *mb = s->sel;
    if (!s->conn || !mb) {
        fetch_finish(s, st, false, "");
        return;
    }
    struct fetch_job *j = calloc(1, sizeof *j);
    if (j)
        j->items = calloc(FETCH_BATCH_MSGS, sizeof *j->items);
    if (!j || !j->items) {
        free(j);
        fetch_finish(s, st, true, "out of memory");
        return;
    }
    j->st = st;
    while (st->next < st->n && j->n < FETCH_BATCH_MSGS) {
        size_t idx, pos = st->next++;
        if (!snap_find(mb, st->uids[pos], &idx) || mb->msgs[idx].expunged) {
            st->expunged = true;
            continue;
        }
        struct item *it = &j->items[j->n];
        if (item_from_snapshot(mb, idx, it) < 0) {
            items_free(j->items, j->n);
            free(j);
            fetch_finish(s, st, true, "out of memory");
            return;
        }
        it->pos = pos;
        j->n++;
    }
    if (j->n == 0) {
        free(j->items);
        free(j);
        fetch_finish(s, st, false, "");
        return;
    }
    imap_run(s, fetch_work, fetch_done, j);
}

void imap_cmd_fetch(struct imap_session *s)
{
    if (!need_selected(s))
        return;
    const struct imap_command *c = s->cmd;
    if (c->nargs != 2) {
        imap_done(s, IMAP_BAD, "FETCH needs a sequence set and data items");
        return;
    }
    struct imap_fetch f;
    const char *err = NULL;
    if (imap_parse_fetch(c->args->next, &f, s->arena, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid FETCH items");
        return;
    }
    uint32_t *uids;
    size_t n;
    if (select_set(s, c->args, &uids, &n) < 0)
        return;
    if (n == 0) {
        imap_done(s, IMAP_OK, "Fetch completed");
        return;
    }
    struct fetch_state *st = calloc(1, sizeof *st);
    bool ok = false;
    if (st)
        st->folder = dup_folder(s->sel->folder, &ok);
    if (!st || !ok) {
        free(st);
        free(uids);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return;
    }
    st->f = f;
    st->ix = s->ix;
    snprintf(st->id, sizeof st->id, "%s", s->id);
    st->uids = uids;
    st->n = n;
    st->uid_cmd = c->uid;
    st->sets_seen = !s->sel->readonly && imap_fetch_sets_seen(&f);
    fetch_next(s, st);
}

/* --- STORE ------------------------------------------------------------------------- */

struct store_job {
    struct mailindex *ix;
    char *folder;
    const struct imap_store *op;   /* in the command's arena */
    bool uid_cmd;
    struct item *items;
    size_t n;
    struct buf out;                /* the untagged FETCH responses */
    bool failed, changed, vanished;
    char err[ERR_LEN];
};

/* What a STORE computes for one message, from its current flags (run
 * under the index's lock by mailindex_update_flags). */
struct store_update {
    const struct imap_store *op;
    struct buf *kw;                /* scratch for the new keyword list */
    char flags[8];                 /* out: the new Maildir letters */
    char *keywords;                /* out: the new keywords (malloc'd) */
    bool failed;                   /* too many keywords or out of memory */
};

static int store_update_fn(void *arg, const char *flags, const char *keywords,
                           char *new_flags, char **new_keywords)
{
    struct store_update *u = arg;
    unsigned system = imap_flags_from_maildir(flags);
    buf_reset(u->kw);
    if (imap_flags_apply(u->op->op, &u->op->flags, &system, keywords, u->kw) < 0 ||
        !buf_cstr(u->kw) || !(u->keywords = strdup(u->kw->data))) {
        u->failed = true;
        return -1;
    }
    imap_flags_to_maildir(system, flags, u->flags);
    snprintf(new_flags, MAILINDEX_FLAGS_MAX + 1, "%s", u->flags);
    *new_keywords = NULL;
    if (strcmp(u->keywords, keywords) != 0 && !(*new_keywords = strdup(u->keywords))) {
        u->failed = true;
        return -1;
    }
    return 0;
}

/* Applies the STORE to one message: the change is made to its current
 * flags, not the snapshot's, so that what another session set meanwhile
 * stays. Returns 0, 1 when it has gone, -1. */
static int store_one(struct store_job *j, struct item *it, struct buf *kw)
{
    struct store_update u = { .op = j->op, .kw = kw };
    if (mailindex_update_flags(j->ix, j->folder, it->uid, store_update_fn, &u, j->err,
                               sizeof j->err) < 0) {
        int e = errno;
        free(u.keywords);
        if (u.failed) {
            set_err(j->err, sizeof j->err, "too many keywords or out of memory");
            return -1;
        }
        return e == ENOENT ? 1 : -1;
    }
    it->kw_changed = strcmp(u.keywords, it->keywords) != 0;
    it->changed = it->kw_changed || strcmp(u.flags, it->flags) != 0;
    free(it->keywords);
    it->keywords = u.keywords;
    memcpy(it->flags, u.flags, sizeof it->flags);
    if (j->op->silent)
        return 0;
    int rc = buf_printf(&j->out, "* %u FETCH (", it->seq);
    if (rc == 0 && j->uid_cmd)
        rc = buf_printf(&j->out, "UID %u ", it->uid);
    if (rc == 0)
        rc = buf_append(&j->out, "FLAGS ", 6);
    if (rc == 0)
        rc = imap_write_flags(&j->out, imap_flags_from_maildir(it->flags), it->keywords,
                              it->recent);
    if (rc == 0)
        rc = buf_append(&j->out, ")\r\n", 3);
    if (rc < 0) {
        set_err(j->err, sizeof j->err, "out of memory");
        return -1;
    }
    return 0;
}

static void store_work(void *arg)
{
    struct store_job *j = arg;
    struct buf kw = BUF_INIT;
    for (size_t i = 0; i < j->n; i++) {
        int rc = store_one(j, &j->items[i], &kw);
        if (rc < 0) {
            j->failed = true;
            break;
        }
        if (rc > 0) {
            j->items[i].vanished = true;
            j->vanished = true;
        } else if (j->items[i].changed) {
            j->changed = true;
        }
    }
    buf_free(&kw);
}

static void store_done(struct imap_session *s, void *arg)
{
    struct store_job *j = arg;
    if (j->out.len)
        imap_write(s, j->out.data, j->out.len);
    for (size_t i = 0; i < j->n; i++) {
        const struct item *it = &j->items[i];
        if (it->changed && !it->vanished)
            snap_set_flags(s->sel, it->uid, it->flags, it->kw_changed ? it->keywords : NULL);
    }
    if (j->changed)
        mailnotify_changed(s->address, j->folder);
    bool failed = j->failed, expunged = j->vanished && !j->uid_cmd;
    char err[ERR_LEN];
    snprintf(err, sizeof err, "%s", j->err);
    buf_free(&j->out);
    items_free(j->items, j->n);
    free(j->folder);
    free(j);
    if (failed)
        fail_serverbug(s, "STORE", err);
    else if (expunged)
        imap_done(s, IMAP_NO, "%s", txt_expungeissued);
    else
        imap_done(s, IMAP_OK, "Store completed");
}

void imap_cmd_store(struct imap_session *s)
{
    if (!need_selected(s))
        return;
    const struct imap_command *c = s->cmd;
    if (c->nargs < 3) {
        imap_done(s, IMAP_BAD, "STORE needs a sequence set, an item and flags");
        return;
    }
    struct imap_store *op = imap_arena_alloc(s->arena, sizeof *op);
    const char *err = NULL;
    if (!op) {
        imap_done(s, IMAP_BAD, "Command too complex");
        return;
    }
    if (imap_parse_store(c->args->next, op, s->arena, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid STORE arguments");
        return;
    }
    if (s->sel->readonly) {
        imap_done(s, IMAP_NO, "%s", txt_readonly);
        return;
    }
    uint32_t *uids;
    size_t n;
    if (select_set(s, c->args, &uids, &n) < 0)
        return;
    struct store_job *j = calloc(1, sizeof *j);
    bool ok = false, expunged = false;
    if (j) {
        j->folder = dup_folder(s->sel->folder, &ok);
        j->items = calloc(n ? n : 1, sizeof *j->items);
    }
    for (size_t i = 0; ok && j->items && i < n; i++) {
        size_t idx;
        if (!snap_find(s->sel, uids[i], &idx) || s->sel->msgs[idx].expunged) {
            expunged = true;
            continue;
        }
        if (item_from_snapshot(s->sel, idx, &j->items[j->n]) < 0)
            ok = false;
        else
            j->n++;
    }
    free(uids);
    if (!j || !ok || !j->items) {
        if (j) {
            items_free(j->items, j->n);
            free(j->folder);
        }
        free(j);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return;
    }
    j->ix = s->ix;
    j->op = op;
    j->uid_cmd = c->uid;
    j->vanished = expunged;
    if (j->n == 0) {
        store_done(s, j);
        return;
    }
    imap_run(s, store_work, store_done, j);
}

/* --- SEARCH ------------------------------------------------------------------------ */

struct search_job {
    struct mailindex *ix;
    char *folder;
    const struct imap_search *root;   /* prepared, in the command's arena */
    bool need_msg, uid_cmd;
    struct item *items;
    size_t n;
    struct buf out;
    bool failed;
    char err[ERR_LEN];
};

/* Returns 1 (match), 0, or -1 with j->err set. */
static int search_one(struct search_job *j, const struct item *it, struct buf *msg)
{
    struct imap_search_msg m = {
        .seq = it->seq, .uid = it->uid, .system = imap_flags_from_maildir(it->flags),
        .recent = it->recent, .keywords = it->keywords, .size = it->size,
        .internaldate = it->internaldate,
    };
    struct mime_part *mime = NULL;
    if (j->need_msg) {
        if (mailindex_read(j->ix, j->folder, it->uid, msg, j->err, sizeof j->err) < 0)
            return errno == ENOENT ? 0 : -1;
        m.msg = msg->data ? msg->data : "";
        m.len = msg->len;
        mime = mime_parse(m.msg, m.len);
        if (!mime) {
            set_err(j->err, sizeof j->err, "out of memory");
            return -1;
        }
        m.mime = mime;
    }
    int rc = imap_search_match(j->root, &m);
    mime_free(mime);
    if (rc < 0)
        set_err(j->err, sizeof j->err, "evaluating the search failed (UID %u)", it->uid);
    return rc;
}

static void search_work(void *arg)
{
    struct search_job *j = arg;
    struct buf msg = BUF_INIT;
    int rc = buf_append(&j->out, "* SEARCH", 8);
    for (size_t i = 0; rc == 0 && i < j->n; i++) {
        int m = search_one(j, &j->items[i], &msg);
        if (m < 0) {
            j->failed = true;
            break;
        }
        if (m > 0)
            rc = buf_printf(&j->out, " %u", j->uid_cmd ? j->items[i].uid : j->items[i].seq);
    }
    if (rc == 0)
        rc = buf_append(&j->out, "\r\n", 2);
    if (rc < 0) {
        j->failed = true;
        set_err(j->err, sizeof j->err, "out of memory");
    }
    buf_free(&msg);
}

static void search_done(struct imap_session *s, void *arg)
{
    struct search_job *j = arg;
    bool failed = j->failed;
    if (!failed)
        imap_write(s, j->out.data, j->out.len);
    char err[ERR_LEN];
    snprintf(err, sizeof err, "%s", j->err);
    buf_free(&j->out);
    items_free(j->items, j->n);
    free(j->folder);
    free(j);
    if (failed)
        fail_serverbug(s, "SEARCH", err);
    else
        imap_done(s, IMAP_OK, "Search completed");
}

void imap_cmd_search(struct imap_session *s)
{
    if (!need_selected(s))
        return;
    const struct imap_command *c = s->cmd;
    const struct imap_mailbox *mb = s->sel;
    enum imap_charset charset;
    struct imap_search *root = NULL;
    const char *err = NULL;
    if (!c->args) {
        imap_done(s, IMAP_BAD, "SEARCH needs search keys");
        return;
    }
    int rc = imap_parse_search(c->args, &charset, &root, s->arena, &err);
    if (rc == IMAP_ERR_BADCHARSET) {
        imap_done(s, IMAP_NO, "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset");
        return;
    }
    struct imap_search_ctx ctx = {
        .count = (uint32_t)mb->n,
        .max_uid = mb->n ? mb->msgs[mb->n - 1].uid : 0,
        .arena = s->arena,
    };
    if (rc < 0 || !root || imap_search_prepare(root, &ctx, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid search");
        return;
    }
    struct search_job *j = calloc(1, sizeof *j);
    bool ok = false;
    if (j) {
        j->folder = dup_folder(mb->folder, &ok);
        j->items = calloc(mb->n ? mb->n : 1, sizeof *j->items);
    }
    /* Messages already gone from the store are left out. */
    for (size_t i = 0; ok && j->items && i < mb->n; i++) {
        if (mb->msgs[i].expunged)
            continue;
        if (item_from_snapshot(mb, i, &j->items[j->n]) < 0)
            ok = false;
        else
            j->n++;
    }
    if (!j || !ok || !j->items) {
        if (j) {
            items_free(j->items, j->n);
            free(j->folder);
        }
        free(j);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return;
    }
    j->ix = s->ix;
    j->root = root;
    j->need_msg = imap_search_needs_message(root);
    j->uid_cmd = c->uid;
    imap_run(s, search_work, search_done, j);
}

/* --- COPY and MOVE ----------------------------------------------------------------- */

enum copy_result { COPY_OK, COPY_TRYCREATE, COPY_OVERQUOTA, COPY_FAILED };

struct copy_job {
    struct server *srv;
    struct mailindex *ix;
    char address[ACCOUNTS_ADDR_MAX + 1];
    char *src, *dst;
    bool move;
    uint32_t *uids, *dst_uids;
    size_t n;
    uint64_t total;                 /* octets, for the quota check */
    uint32_t uidvalidity;
    long count;
    enum copy_result result;
    char err[ERR_LEN];
};

static void copy_job_free(struct copy_job *j)
{
    free(j->src);
    free(j->dst);
    free(j->uids);
    free(j->dst_uids);
    free(j);
}

static void copy_work(void *arg)
{
    struct copy_job *j = arg;
    if (!j->move) {
        enum quota_result q = quota_check(j->srv->accounts, j->srv->store, j->srv->settings,
                                          j->address, j->total, NULL);
        if (q != QUOTA_OK) {
            j->result = COPY_OVERQUOTA;
            return;
        }
    }
    j->count = j->move
        ? mailindex_move(j->ix, j->src, j->uids, j->n, j->dst, &j->uidvalidity, j->dst_uids,
                         j->err, sizeof j->err)
        : mailindex_copy(j->ix, j->src, j->uids, j->n, j->dst, &j->uidvalidity, j->dst_uids,
                         j->err, sizeof j->err);
    if (j->count < 0)
        j->result = errno == ENOENT ? COPY_TRYCREATE : COPY_FAILED;
    else
        j->result = COPY_OK;
}

/* "[COPYUID <uidvalidity> <src set> <dst set>]" into b. */
static int copyuid_code(struct buf *b, const struct copy_job *j)
{
    int rc = buf_printf(b, "[COPYUID %u ", j->uidvalidity);
    if (rc == 0)
        rc = append_uidset(b, j->uids, j->dst_uids, j->n);
    if (rc == 0)
        rc = buf_append(b, " ", 1);
    if (rc == 0)
        rc = append_uidset(b, j->dst_uids, j->dst_uids, j->n);
    if (rc == 0)
        rc = buf_append(b, "]", 1);
    return rc == 0 && buf_cstr(b) ? 0 : -1;
}

/* Moving or copying a message into Junk says "spam", out of Junk "not
 * spam" (except into Trash: deleting spam says nothing): the daemon's
 * junk_moved hook (the Bayes classifier) learns it on the worker pool, from
 * the copies in dst. */
static void learn_junk(struct imap_session *s, const struct copy_job *j)
{
    bool to_junk = j->dst && strcmp(j->dst, "Junk") == 0;
    bool from_junk = j->src && strcmp(j->src, "Junk") == 0;
    if (to_junk == from_junk || (from_junk && j->dst && strcmp(j->dst, "Trash") == 0))
        return;
    if (s->srv->junk_moved)
        s->srv->junk_moved(s->srv, s->address, j->dst, j->dst_uids, j->n, to_junk);
}

static void copy_done(struct imap_session *s, void *arg)
{
    struct copy_job *j = arg;
    const char *what = j->move ? "MOVE" : "COPY";
    switch (j->result) {
    case COPY_TRYCREATE:
        copy_job_free(j);
        imap_done(s, IMAP_NO, "%s", txt_trycreate);
        return;
    case COPY_OVERQUOTA:
        copy_job_free(j);
        imap_done(s, IMAP_NO, "%s", txt_overquota);
        return;
    case COPY_FAILED: {
        char err[ERR_LEN];
        snprintf(err, sizeof err, "%s", j->err);
        copy_job_free(j);
        /* A failed MOVE may have moved some: imap_done's sync reports them. */
        fail_serverbug(s, what, err);
        return;
    }
    case COPY_OK:
        break;
    }
    quota_forget(j->address);
    if (j->count > 0) {
        mailnotify_changed(j->address, j->dst);
        if (j->move)
            mailnotify_changed(j->address, j->src);
    }
    struct buf code = BUF_INIT;
    bool have_code = j->count > 0 && copyuid_code(&code, j) == 0;
    bool expunged = j->count < (long)j->n && !s->cmd->uid;
    if (j->move && j->count > 0) {
        /* RFC 6851 3.3: COPYUID goes in an untagged OK before the EXPUNGEs. */
        if (have_code)
            imap_printf(s, "* OK %s Moved UIDs.\r\n", code.data);
        size_t k = 0;
        for (size_t i = 0; i < j->n; i++)
            if (j->dst_uids[i])
                j->uids[k++] = j->uids[i];
        snap_expunge(s, j->uids, k, false);
    }
    if (j->count > 0)
        learn_junk(s, j);
    long count = j->count;
    bool move = j->move;
    copy_job_free(j);
    if (count == 0 && expunged)
        imap_done(s, IMAP_NO, "%s", txt_expungeissued);
    else if (count == 0)
        imap_done(s, IMAP_OK, "No messages %s", move ? "moved" : "copied");
    else if (move)
        imap_done(s, IMAP_OK, "Move completed");
    else if (have_code)
        imap_done(s, IMAP_OK, "%s Copy completed", code.data);
    else
        imap_done(s, IMAP_OK, "Copy completed");
    buf_free(&code);
}

static void copy_or_move(struct imap_session *s, bool move)
{
    if (!need_selected(s))
        return;
    const struct imap_command *c = s->cmd;
    const char *cmd = move ? "MOVE" : "COPY";
    if (c->nargs != 2) {
        imap_done(s, IMAP_BAD, "%s needs a sequence set and a mailbox", cmd);
        return;
    }
    const char *name, *err = NULL;
    size_t name_len;
    if (imap_arg_mailbox(c->args->next, &name, &name_len, s->arena, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid mailbox name");
        return;
    }
    if (move && s->sel->readonly) {
        imap_done(s, IMAP_NO, "%s", txt_readonly);
        return;
    }
    const char *dst = imap_folder(name);
    const char *src = s->sel->folder;
    if (move && ((!dst && !src) || (dst && src && strcmp(dst, src) == 0))) {
        imap_done(s, IMAP_NO, "[CANNOT] Source and destination mailbox are the same");
        return;
    }
    uint32_t *uids;
    size_t n;
    if (select_set(s, c->args, &uids, &n) < 0)
        return;
    if (n == 0) {
        imap_done(s, IMAP_OK, "No messages %s", move ? "moved" : "copied");
        return;
    }
    struct copy_job *j = calloc(1, sizeof *j);
    bool ok_src = false, ok_dst = false;
    if (j) {
        j->src = dup_folder(src, &ok_src);
        j->dst = dup_folder(dst, &ok_dst);
        j->dst_uids = calloc(n, sizeof *j->dst_uids);
        j->uids = uids;
    }
    if (!j || !ok_src || !ok_dst || !j->dst_uids) {
        if (j)
            copy_job_free(j);
        else
            free(uids);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        size_t idx;
        if (snap_find(s->sel, uids[i], &idx))
            j->total += s->sel->msgs[idx].size;
    }
    j->srv = s->srv;
    j->ix = s->ix;
    snprintf(j->address, sizeof j->address, "%s", s->address);
    j->move = move;
    j->n = n;
    imap_run(s, copy_work, copy_done, j);
}

void imap_cmd_copy(struct imap_session *s)
{
    copy_or_move(s, false);
}

void imap_cmd_move(struct imap_session *s)
{
    copy_or_move(s, true);
}

/* --- EXPUNGE and CLOSE ------------------------------------------------------------- */

struct expunge_job {
    struct mailindex *ix;
    char address[ACCOUNTS_ADDR_MAX + 1];
    char *folder;
    uint32_t *known;                /* the snapshot's UIDs, ascending */
    size_t nknown;
    const struct imap_seqset *set;  /* UID EXPUNGE: resolved, in the arena; else NULL */
    bool close;
    uint32_t *removed;              /* UIDs expunged, ascending */
    size_t nremoved;
    bool failed;
    char err[ERR_LEN];
};

static bool uid_known(const struct expunge_job *j, uint32_t uid)
{
    size_t lo = 0, hi = j->nknown;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (j->known[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < j->nknown && j->known[lo] == uid;
}

/* The store's current flags decide, not the snapshot's: another session
 * may have changed \Deleted since this one last heard. Only messages the
 * client knows are removed (their EXPUNGE needs a sequence number). */
static void expunge_work(void *arg)
{
    struct expunge_job *j = arg;
    struct mailindex_view v;
    if (mailindex_sync(j->ix, j->folder, &v, j->err, sizeof j->err) < 0) {
        j->failed = true;
        return;
    }
    j->removed = malloc((v.n ? v.n : 1) * sizeof *j->removed);
    if (!j->removed) {
        mailindex_view_free(&v);
        set_err(j->err, sizeof j->err, "out of memory");
        j->failed = true;
        return;
    }
    for (size_t i = 0; i < v.n; i++) {
        const struct mailindex_msg *m = &v.msgs[i];
        if (!m->flags || !strchr(m->flags, 'T') || !uid_known(j, m->uid))
            continue;
        if (j->set && !imap_seqset_contains(j->set, m->uid))
            continue;
        j->removed[j->nremoved++] = m->uid;
    }
    mailindex_view_free(&v);
    if (j->nremoved &&
        mailindex_expunge(j->ix, j->folder, j->removed, j->nremoved, j->err, sizeof j->err) < 0)
        j->failed = true;
}

static void expunge_job_free(struct expunge_job *j)
{
    free(j->folder);
    free(j->known);
    free(j->removed);
    free(j);
}

static void expunge_done(struct imap_session *s, void *arg)
{
    struct expunge_job *j = arg;
    bool failed = j->failed, close = j->close;
    char err[ERR_LEN];
    snprintf(err, sizeof err, "%s", j->err);
    if (!failed && j->nremoved) {
        quota_forget(j->address);
        mailnotify_changed(j->address, j->folder);
        if (!close)
            snap_expunge(s, j->removed, j->nremoved, false);
    }
    expunge_job_free(j);
    if (close) {
        if (failed)
            log_warn("imap[%s]: %s: CLOSE: expunge failed for %s: %s", s->id, s->peer,
                     s->address, err);
        imap_unselect(s);
        imap_done(s, IMAP_OK, "Close completed");
    } else if (failed) {
        fail_serverbug(s, "EXPUNGE", err);
    } else {
        imap_done(s, IMAP_OK, "Expunge completed");
    }
}

static void expunge_start(struct imap_session *s, const struct imap_seqset *set, bool close)
{
    const struct imap_mailbox *mb = s->sel;
    struct expunge_job *j = calloc(1, sizeof *j);
    bool ok = false;
    if (j) {
        j->folder = dup_folder(mb->folder, &ok);
        j->known = malloc((mb->n ? mb->n : 1) * sizeof *j->known);
    }
    if (!j || !ok || !j->known) {
        if (j)
            expunge_job_free(j);
        if (close) {
            imap_unselect(s);
            imap_done(s, IMAP_OK, "Close completed");
        } else {
            imap_done(s, IMAP_NO, "%s", txt_nomem);
        }
        return;
    }
    for (size_t i = 0; i < mb->n; i++)
        if (!mb->msgs[i].expunged)
            j->known[j->nknown++] = mb->msgs[i].uid;
    j->ix = s->ix;
    snprintf(j->address, sizeof j->address, "%s", s->address);
    j->set = set;
    j->close = close;
    imap_run(s, expunge_work, expunge_done, j);
}

void imap_cmd_expunge(struct imap_session *s)
{
    if (!need_selected(s))
        return;
    const struct imap_command *c = s->cmd;
    const struct imap_seqset *set = NULL;
    if (c->uid) {
        struct imap_seqset in, *res = imap_arena_alloc(s->arena, sizeof *res);
        const struct imap_mailbox *mb = s->sel;
        const char *err = NULL;
        if (c->nargs != 1) {
            imap_done(s, IMAP_BAD, "UID EXPUNGE needs a UID set");
            return;
        }
        if (!res || imap_arg_seqset(c->args, &in, s->arena, &err) < 0 ||
            imap_seqset_resolve(&in, mb->n ? mb->msgs[mb->n - 1].uid : 0, res, s->arena,
                                &err) < 0) {
            imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid UID set");
            return;
        }
        set = res;
    } else if (c->nargs != 0) {
        imap_done(s, IMAP_BAD, "EXPUNGE takes no arguments");
        return;
    }
    if (s->sel->readonly) {
        imap_done(s, IMAP_NO, "%s", txt_readonly);
        return;
    }
    expunge_start(s, set, false);
}

void imap_cmd_close(struct imap_session *s)
{
    if (!need_selected(s))
        return;
    if (s->cmd->nargs != 0) {
        imap_done(s, IMAP_BAD, "CLOSE takes no arguments");
        return;
    }
    if (s->sel->readonly) {
        imap_unselect(s);
        imap_done(s, IMAP_OK, "Close completed");
        return;
    }
    expunge_start(s, NULL, true);
}

/* --- APPEND ------------------------------------------------------------------------ */

struct append_job {
    struct server *srv;
    struct mailindex *ix;
    char address[ACCOUNTS_ADDR_MAX + 1];
    char *folder;
    const char *data;               /* the literal (in the command) or conv */
    size_t len;
    char *conv;                     /* bare LF converted to CRLF, or NULL */
    char flags[8];
    char *keywords;
    time_t date;
    uint32_t uidvalidity, uid;
    enum copy_result result;
    char err[ERR_LEN];
};

static void append_work(void *arg)
{
    struct append_job *j = arg;
    enum quota_result q = quota_check(j->srv->accounts, j->srv->store, j->srv->settings,
                                      j->address, j->len, NULL);
    if (q != QUOTA_OK) {
        j->result = COPY_OVERQUOTA;
        return;
    }
    if (mailindex_append(j->ix, j->folder, j->data, j->len, j->flags, j->keywords, j->date,
                         &j->uidvalidity, &j->uid, j->err, sizeof j->err) < 0)
        j->result = errno == ENOENT ? COPY_TRYCREATE : COPY_FAILED;
    else
        j->result = COPY_OK;
}

static void append_job_free(struct append_job *j)
{
    free(j->folder);
    free(j->conv);
    free(j->keywords);
    free(j);
}

static void append_done(struct imap_session *s, void *arg)
{
    struct append_job *j = arg;
    enum copy_result r = j->result;
    uint32_t uidvalidity = j->uidvalidity, uid = j->uid;
    char err[ERR_LEN];
    snprintf(err, sizeof err, "%s", j->err);
    if (r == COPY_OK) {
        quota_forget(j->address);
        mailnotify_changed(j->address, j->folder);
    }
    append_job_free(j);
    switch (r) {
    case COPY_OK:
        imap_done(s, IMAP_OK, "[APPENDUID %u %u] Append completed", uidvalidity, uid);
        break;
    case COPY_TRYCREATE:
        imap_done(s, IMAP_NO, "%s", txt_trycreate);
        break;
    case COPY_OVERQUOTA:
        imap_done(s, IMAP_NO, "%s", txt_overquota);
        break;
    case COPY_FAILED:
        fail_serverbug(s, "APPEND", err);
        break;
    }
}

/* A copy of data with every bare LF turned into CRLF, or NULL (with
 * *oom false) when there is none. */
static char *crlf_copy(const char *data, size_t len, size_t *out_len, bool *oom)
{
    size_t bare = 0;
    *oom = false;
    for (size_t i = 0; i < len; i++)
        if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
            bare++;
    if (bare == 0)
        return NULL;
    char *c = malloc(len + bare);
    if (!c) {
        *oom = true;
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
            c[k++] = '\r';
        c[k++] = data[i];
    }
    *out_len = k;
    return c;
}

/* APPEND's optional flag list and date-time into the job. Returns 0, or
 * -1 after ending the command with BAD. */
static int append_options(struct imap_session *s, const struct imap_arg *a,
                          const struct imap_arg *last, struct append_job *j)
{
    const char *err = NULL;
    struct imap_flags fl = { 0, NULL, 0 };
    if (a != last && a->type == IMAP_ARG_LIST) {
        if (imap_parse_flag_list(a, &fl, s->arena, &err) < 0) {
            imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid flags");
            return -1;
        }
        a = a->next;
    }
    if (a != last) {
        const char *d;
        size_t dlen;
        int tz;
        if (a->next != last || imap_arg_string(a, &d, &dlen, &err) < 0 ||
            imap_parse_datetime(d, dlen, &j->date, &tz, &err) < 0) {
            imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid APPEND arguments");
            return -1;
        }
    }
    imap_flags_to_maildir(fl.system, "", j->flags);
    struct buf kw = BUF_INIT;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < fl.nkeywords; i++)
        rc = buf_printf(&kw, "%s%s", i ? " " : "", fl.keywords[i]);
    j->keywords = rc == 0 ? buf_cstr(&kw) : NULL;     /* owns kw's memory */
    if (!j->keywords) {
        buf_free(&kw);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return -1;
    }
    return 0;
}

void imap_cmd_append(struct imap_session *s)
{
    const struct imap_command *c = s->cmd;
    if (c->nargs < 2 || c->nargs > 4) {
        imap_done(s, IMAP_BAD, "APPEND needs a mailbox and a message");
        return;
    }
    const char *name, *err = NULL, *data;
    size_t name_len, len;
    const struct imap_arg *last = c->args;
    while (last->next)
        last = last->next;
    if (imap_arg_mailbox(c->args, &name, &name_len, s->arena, &err) < 0 ||
        imap_arg_string(last, &data, &len, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err ? err : "Invalid APPEND arguments");
        return;
    }
    if (!s->ix) {
        imap_done(s, IMAP_NO, "%s", txt_serverbug);
        return;
    }
    struct append_job *j = calloc(1, sizeof *j);
    bool ok = false;
    if (j)
        j->folder = dup_folder(imap_folder(name), &ok);
    if (!j || !ok) {
        free(j);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return;
    }
    if (append_options(s, c->args->next, last, j) < 0) {
        append_job_free(j);
        return;
    }
    if (len == 0) {
        append_job_free(j);
        imap_done(s, IMAP_NO, "Can't save a zero byte message");
        return;
    }
    bool oom;
    j->data = data;
    j->len = len;
    j->conv = crlf_copy(data, len, &j->len, &oom);
    if (oom) {
        append_job_free(j);
        imap_done(s, IMAP_NO, "%s", txt_nomem);
        return;
    }
    if (j->conv)
        j->data = j->conv;
    j->srv = s->srv;
    j->ix = s->ix;
    snprintf(j->address, sizeof j->address, "%s", s->address);
    imap_run(s, append_work, append_done, j);
}
