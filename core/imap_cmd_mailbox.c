/* IMAP commands on mailboxes as a whole: SELECT, EXAMINE, CREATE, DELETE,
 * RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS, GETQUOTA and
 * GETQUOTAROOT. See imap_session.h.
 *
 * Each handler checks its arguments on the loop thread, then does the
 * index work and builds its untagged output on a worker (one job struct
 * for all of them), and writes the output and the tagged reply when the
 * job is back. Mailbox names are Maildir++ folder names: '.' separates
 * levels, and a name may not hold '/' or empty levels. */
#include "imap_session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "log.h"
#include "mailnotify.h"
#include "quota.h"

#define DELIM '.'

static const char *const special_use[][2] = {
    { "Drafts", "\\Drafts" },
    { "Sent", "\\Sent" },
    { "Junk", "\\Junk" },
    { "Trash", "\\Trash" },
    { "Archive", "\\Archive" },
};
#define NSPECIAL (sizeof special_use / sizeof *special_use)


struct mbox_job {
    struct server *srv;
    struct mailindex *ix;
    char address[ACCOUNTS_ADDR_MAX + 1];
    char *name, *name2;            /* wire names (name2: RENAME's target, LIST's pattern) */
    bool flag;                     /* EXAMINE / LSUB / SUBSCRIBE / GETQUOTAROOT */
    unsigned char order[5];        /* STATUS: items as asked (indexes into status_items) */
    size_t nitems;
    struct imap_mailbox *mb;       /* SELECT's new snapshot */
    struct buf out;                /* untagged responses built by the worker */
    int rc, err_no;
    char err[256];
};

static struct mbox_job *job_new(struct imap_session *s)
{
    struct mbox_job *j = calloc(1, sizeof *j);
    if (!j) {
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory.");
        return NULL;
    }
    j->srv = s->srv;
    j->ix = s->ix;
    snprintf(j->address, sizeof j->address, "%s", s->address);
    return j;
}

static void job_free(struct mbox_job *j)
{
    free(j->name);
    free(j->name2);
    imap_mailbox_free(j->mb);
    buf_free(&j->out);
    free(j);
}

static const char *folder_of(const char *name)
{
    return name ? imap_folder(name) : NULL;
}

/* Records a failure of an index call (errno kept for the reply). */
static void job_failed(struct mbox_job *j)
{
    j->rc = -1;
    j->err_no = errno;
}

/* The reply to a failed index call, by errno. */
static void done_failed(struct imap_session *s, struct mbox_job *j, const char *what)
{
    int e = j->err_no;
    if (e == ENOENT)
        imap_done(s, IMAP_NO, "[NONEXISTENT] Mailbox doesn't exist.");
    else if (e == EEXIST)
        imap_done(s, IMAP_NO, "[ALREADYEXISTS] Mailbox already exists.");
    else if (e == EINVAL || e == ENAMETOOLONG)
        imap_done(s, IMAP_NO, "[CANNOT] Invalid mailbox name.");
    else if (e == EPERM)
        imap_done(s, IMAP_NO, "[CANNOT] Not allowed on this mailbox.");
    else {
        log_error("imap[%s]: %s of %s failed for %s: %s", s->id, what,
                  j->name ? j->name : "-", s->address, j->err);
        imap_done(s, IMAP_NO, "[UNAVAILABLE] %s failed, try again later.", what);
    }
}

/* --- names ---------------------------------------------------------------------- */

/* Why a Maildir++ name cannot be a folder, or NULL. */
static const char *name_problem(const char *name, bool creating)
{
    if (strcmp(name, "INBOX") == 0)
        return NULL;
    size_t len = strlen(name);
    if (len == 0 || name[0] == DELIM || name[len - 1] == DELIM)
        return "[CANNOT] Invalid mailbox name: empty hierarchy level.";
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '/')
            return "[CANNOT] Invalid mailbox name: '/' is not allowed.";
        if (name[i] == DELIM && name[i + 1] == DELIM)
            return "[CANNOT] Invalid mailbox name: empty hierarchy level.";
        if (creating && (name[i] == '%' || name[i] == '*'))
            return "[CANNOT] Invalid mailbox name: wildcards are not allowed.";
    }
    return NULL;
}

/* A mailbox argument, NUL-terminated in the arena; with `creating`, one
 * trailing delimiter is dropped (RFC 3501 6.3.3). Answers and returns -1
 * when it is not usable. */
static int mailbox_arg(struct imap_session *s, const struct imap_arg *a, bool creating,
                       const char **name)
{
    const char *err;
    size_t len;
    if (imap_arg_mailbox(a, name, &len, s->arena, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err);
        return -1;
    }
    if (creating && len > 1 && (*name)[len - 1] == DELIM) {
        char *copy = imap_arena_alloc(s->arena, len);
        if (!copy) {
            imap_done(s, IMAP_BAD, "Command too complex");
            return -1;
        }
        memcpy(copy, *name, len - 1);
        copy[len - 1] = '\0';
        *name = copy;
        if (imap_mailbox_is_inbox(copy, len - 1))
            *name = "INBOX";
    }
    const char *problem = name_problem(*name, creating);
    if (problem) {
        imap_done(s, IMAP_NO, "%s", problem);
        return -1;
    }
    return 0;
}

/* An IMAP string: quoted when it can be, else a literal. */
static int put_string(struct buf *b, const char *s, size_t len)
{
    bool quotable = true;
    for (size_t i = 0; i < len && quotable; i++)
        quotable = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f;
    if (!quotable) {
        if (buf_printf(b, "{%zu}\r\n", len) < 0)
            return -1;
        return buf_append(b, s, len);
    }
    if (buf_append(b, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if ((s[i] == '"' || s[i] == '\\') && buf_append(b, "\\", 1) < 0)
            return -1;
        if (buf_append(b, &s[i], 1) < 0)
            return -1;
    }
    return buf_append(b, "\"", 1);
}

/* --- SELECT / EXAMINE ----------------------------------------------------------------- */

/* Whether the space-separated list seen[0..len) holds kw[0..n), ignoring
 * case. */
static bool has_keyword(const char *seen, size_t len, const char *kw, size_t n)
{
    size_t pos = 0;
    while (pos < len) {
        const char *sp = memchr(seen + pos, ' ', len - pos);
        size_t m = (sp ? (size_t)(sp - seen) : len) - pos;
        if (m == n && strncasecmp(seen + pos, kw, n) == 0)
            return true;
        pos += m + 1;
    }
    return false;
}

/* Appends kw's keywords not yet in `seen` (" kw1 kw2", compared ignoring
 * case) to it. */
static int collect_keywords(struct buf *seen, const char *kw)
{
    while (kw && *kw) {
        while (*kw == ' ')
            kw++;
        size_t n = strcspn(kw, " ");
        if (n == 0)
            break;
        if (!has_keyword(seen->data, seen->len, kw, n) &&
            (buf_append(seen, " ", 1) < 0 || buf_append(seen, kw, n) < 0))
            return -1;
        kw += n;
    }
    return 0;
}

/* The SELECT responses before the tagged OK (RFC 3501 6.3.1). */
static int select_output(struct mbox_job *j, const struct mailindex_view *v)
{
    struct imap_mailbox *mb = j->mb;
    struct buf kw = BUF_INIT;
    size_t unseen = 0, recent = 0;
    for (size_t i = 0; i < mb->n; i++) {
        if (!unseen && !strchr(mb->msgs[i].flags, 'S'))
            unseen = i + 1;
        recent += mb->msgs[i].recent;
        if (collect_keywords(&kw, mb->msgs[i].keywords) < 0) {
            buf_free(&kw);
            return -1;
        }
    }
    struct buf *o = &j->out;
    int rc = buf_printf(o, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft%.*s)\r\n",
                        (int)kw.len, kw.data ? kw.data : "");
    if (rc == 0)
        rc = buf_printf(o, "* OK [PERMANENTFLAGS (%s)] %s\r\n",
                        mb->readonly ? "" : "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*",
                        mb->readonly ? "No permanent flags permitted." : "Flags permitted.");
    buf_free(&kw);
    if (rc == 0)
        rc = buf_printf(o, "* %zu EXISTS\r\n* %zu RECENT\r\n", mb->n, recent);
    if (rc == 0 && unseen)
        rc = buf_printf(o, "* OK [UNSEEN %zu] First unseen.\r\n", unseen);
    if (rc == 0)
        rc = buf_printf(o, "* OK [UIDVALIDITY %u] UIDs valid\r\n* OK [UIDNEXT %u] "
                           "Predicted next UID\r\n", v->uidvalidity, v->uidnext);
    return rc;
}

static int build_snapshot(struct mbox_job *j, const struct mailindex_view *v, uint32_t first_recent)
{
    struct imap_mailbox *mb = calloc(1, sizeof *mb);
    if (!mb)
        return -1;
    j->mb = mb;
    mb->readonly = j->flag;
    mb->uidvalidity = v->uidvalidity;
    mb->uidnext = v->uidnext;
    mb->first_recent = first_recent;
    const char *folder = imap_folder(j->name);
    if ((folder && !(mb->folder = strdup(folder))) || !(mb->name = strdup(j->name)))
        return -1;
    if (v->n && !(mb->msgs = calloc(v->n, sizeof *mb->msgs)))
        return -1;
    mb->cap = v->n;
    for (size_t i = 0; i < v->n; i++) {
        if (imap_msg_from_index(&mb->msgs[i], &v->msgs[i], v->msgs[i].uid >= first_recent) < 0)
            return -1;
        mb->n++;
    }
    return select_output(j, v);
}

static void select_work(void *arg)
{
    struct mbox_job *j = arg;
    struct mailindex_view v = { 0 };
    const char *folder = imap_folder(j->name);
    if (mailindex_sync(j->ix, folder, &v, j->err, sizeof j->err) < 0) {
        job_failed(j);
        return;
    }
    /* EXAMINE shows \Recent without taking it from the next session. */
    uint32_t first_recent = v.recent_mark;
    if (!j->flag && mailindex_claim_recent(j->ix, folder, &first_recent, j->err,
                                           sizeof j->err) < 0) {
        log_warn("imap: cannot claim \\Recent in %s of %s: %s", j->name, j->address, j->err);
        first_recent = v.uidnext;
    }
    if (build_snapshot(j, &v, first_recent) < 0) {
        errno = ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
        job_failed(j);
    }
    mailindex_view_free(&v);
}

static void select_done(struct imap_session *s, void *arg)
{
    struct mbox_job *j = arg;
    if (j->rc < 0) {
        done_failed(s, j, "SELECT");
    } else {
        imap_write(s, j->out.data, j->out.len);
        s->sel = j->mb;
        j->mb = NULL;
        s->state = IMAP_STATE_SELECTED;
        bool ro = s->sel->readonly;
        imap_done(s, IMAP_OK, "[%s] %s completed.", ro ? "READ-ONLY" : "READ-WRITE",
                  ro ? "Examine" : "Select");
    }
    job_free(j);
}

void imap_cmd_select(struct imap_session *s)
{
    const char *name;
    /* RFC 3501 6.3.1: a failed SELECT leaves no mailbox selected. */
    imap_unselect(s);
    if (s->cmd->nargs != 1) {
        imap_done(s, IMAP_BAD, "%s takes one mailbox name", s->cmd->name);
        return;
    }
    if (mailbox_arg(s, s->cmd->args, false, &name) < 0)
        return;
    struct mbox_job *j = job_new(s);
    if (!j)
        return;
    j->flag = strcmp(s->cmd->name, "EXAMINE") == 0;
    if (!(j->name = strdup(name))) {
        job_free(j);
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory.");
        return;
    }
    imap_run(s, select_work, select_done, j);
}

/* --- CREATE, DELETE, RENAME, SUBSCRIBE ---------------------------------------------------- */

static void create_work(void *arg)
{
    struct mbox_job *j = arg;
    if (mailindex_folder_create(j->ix, j->name, j->err, sizeof j->err) < 0)
        job_failed(j);
    else
        mailnotify_changed(j->address, j->name);
}

static void delete_work(void *arg)
{
    struct mbox_job *j = arg;
    if (mailindex_folder_delete(j->ix, j->name, j->err, sizeof j->err) < 0)
        job_failed(j);
    else
        mailnotify_changed(j->address, j->name);
}

static void rename_work(void *arg)
{
    struct mbox_job *j = arg;
    const char *from = folder_of(j->name), *to = j->name2;
    if (mailindex_folder_rename(j->ix, from, to, j->err, sizeof j->err) < 0) {
        job_failed(j);
        return;
    }
    mailnotify_changed(j->address, from);
    mailnotify_changed(j->address, to);
}

static void subscribe_work(void *arg)
{
    struct mbox_job *j = arg;
    if (mailindex_subscribe(j->ix, j->name, j->flag, j->err, sizeof j->err) < 0)
        job_failed(j);
}

static void simple_done(struct imap_session *s, void *arg)
{
    struct mbox_job *j = arg;
    const char *what = s->cmd->name;
    if (j->rc < 0)
        done_failed(s, j, what);
    else
        imap_done(s, IMAP_OK, "%s completed.", what);
    job_free(j);
}

/* Starts a job on name (and name2). */
static void run_simple(struct imap_session *s, void (*work)(void *), const char *name,
                       const char *name2, bool flag)
{
    struct mbox_job *j = job_new(s);
    if (!j)
        return;
    j->flag = flag;
    if (!(j->name = strdup(name)) || (name2 && !(j->name2 = strdup(name2)))) {
        job_free(j);
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory.");
        return;
    }
    imap_run(s, work, simple_done, j);
}

void imap_cmd_create(struct imap_session *s)
{
    const char *name;
    if (s->cmd->nargs != 1) {
        imap_done(s, IMAP_BAD, "CREATE takes one mailbox name");
        return;
    }
    if (mailbox_arg(s, s->cmd->args, true, &name) < 0)
        return;
    if (strcmp(name, "INBOX") == 0) {
        imap_done(s, IMAP_NO, "[ALREADYEXISTS] INBOX always exists.");
        return;
    }
    run_simple(s, create_work, name, NULL, false);
}

void imap_cmd_delete(struct imap_session *s)
{
    const char *name;
    if (s->cmd->nargs != 1) {
        imap_done(s, IMAP_BAD, "DELETE takes one mailbox name");
        return;
    }
    if (mailbox_arg(s, s->cmd->args, false, &name) < 0)
        return;
    if (strcmp(name, "INBOX") == 0) {
        imap_done(s, IMAP_NO, "[CANNOT] INBOX cannot be deleted.");
        return;
    }
    run_simple(s, delete_work, name, NULL, false);
}

void imap_cmd_rename(struct imap_session *s)
{
    const char *from, *to;
    if (s->cmd->nargs != 2) {
        imap_done(s, IMAP_BAD, "RENAME takes two mailbox names");
        return;
    }
    if (mailbox_arg(s, s->cmd->args, false, &from) < 0 ||
        mailbox_arg(s, s->cmd->args->next, true, &to) < 0)
        return;
    size_t flen = strlen(from);
    if (strcmp(to, "INBOX") == 0 || strcmp(from, to) == 0) {
        imap_done(s, IMAP_NO, "[ALREADYEXISTS] Target mailbox already exists.");
        return;
    }
    if (strncmp(to, from, flen) == 0 && to[flen] == DELIM) {
        imap_done(s, IMAP_NO, "[CANNOT] Cannot rename a mailbox into itself.");
        return;
    }
    run_simple(s, rename_work, from, to, false);
}

void imap_cmd_subscribe(struct imap_session *s)
{
    const char *name;
    if (s->cmd->nargs != 1) {
        imap_done(s, IMAP_BAD, "%s takes one mailbox name", s->cmd->name);
        return;
    }
    if (mailbox_arg(s, s->cmd->args, false, &name) < 0)
        return;
    run_simple(s, subscribe_work, name, NULL, strcmp(s->cmd->name, "SUBSCRIBE") == 0);
}

/* --- LIST and LSUB ---------------------------------------------------------------------- */

struct entry {
    char *name;
    bool exists;           /* a folder (LIST) / subscribed (LSUB) */
    bool children;
};

struct entries {
    struct entry *v;
    size_t n, cap;
};

static void entries_free(struct entries *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i].name);
    free(e->v);
}

static int entries_add(struct entries *e, const char *name, size_t len, bool exists)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 32;
        struct entry *v = realloc(e->v, cap * sizeof *v);
        if (!v)
            return -1;
        e->v = v;
        e->cap = cap;
    }
    char *copy = strndup(name, len);
    if (!copy)
        return -1;
    e->v[e->n++] = (struct entry){ copy, exists, false };
    return 0;
}

/* INBOX first, then byte order. */
static int entry_cmp(const void *a, const void *b)
{
    const char *x = ((const struct entry *)a)->name, *y = ((const struct entry *)b)->name;
    bool xi = strcmp(x, "INBOX") == 0, yi = strcmp(y, "INBOX") == 0;
    if (xi || yi)
        return yi - xi;
    return strcmp(x, y);
}

static struct entry *entries_find(struct entries *e, const char *name)
{
    struct entry key = { (char *)name, false, false };
    return bsearch(&key, e->v, e->n, sizeof *e->v, entry_cmp);
}

/* Adds names and, when `parents`, every level above them that is not
 * there itself; then sorts, merges duplicates and marks \HasChildren. */
static int entries_build(struct entries *e, char **names, size_t n, bool parents)
{
    for (size_t i = 0; i < n; i++) {
        if (entries_add(e, names[i], strlen(names[i]), true) < 0)
            return -1;
        for (const char *p = names[i]; parents && (p = strchr(p, DELIM)); p++)
            if (entries_add(e, names[i], (size_t)(p - names[i]), false) < 0)
                return -1;
    }
    qsort(e->v, e->n, sizeof *e->v, entry_cmp);
    size_t w = 0;
    for (size_t i = 0; i < e->n; i++) {
        if (w > 0 && strcmp(e->v[w - 1].name, e->v[i].name) == 0) {
            e->v[w - 1].exists |= e->v[i].exists;
            free(e->v[i].name);
            continue;
        }
        e->v[w++] = e->v[i];
    }
    e->n = w;
    for (size_t i = 0; i < e->n; i++) {
        const char *dot = strrchr(e->v[i].name, DELIM);
        if (!dot)
            continue;
        char *up = strndup(e->v[i].name, (size_t)(dot - e->v[i].name));
        if (!up)
            return -1;
        struct entry *parent = entries_find(e, up);
        free(up);
        if (parent)
            parent->children = true;
    }
    return 0;
}

static const char *special_use_of(const char *name)
{
    for (size_t i = 0; i < NSPECIAL; i++)
        if (strcmp(name, special_use[i][0]) == 0)
            return special_use[i][1];
    return NULL;
}

static int list_line(struct buf *o, const char *verb, const struct entry *e, bool lsub)
{
    const char *attrs;
    const char *su = special_use_of(e->name);
    if (lsub)
        attrs = e->exists ? "" : "\\Noselect";
    else if (!e->exists)
        attrs = "\\Noselect \\HasChildren";
    else
        attrs = e->children ? "\\HasChildren" : "\\HasNoChildren";
    if (buf_printf(o, "* %s (%s%s%s) \"%c\" ", verb, attrs, su && !lsub && e->exists ? " " : "",
                   su && !lsub && e->exists ? su : "", DELIM) < 0 ||
        put_string(o, e->name, strlen(e->name)) < 0)
        return -1;
    return buf_append(o, "\r\n", 2);
}

static int list_names(struct mbox_job *j, char **names, size_t n)
{
    /* INBOX is a folder of every account, listed or not. */
    char **all = malloc((n + 1) * sizeof *all);
    if (!all)
        return -1;
    all[0] = "INBOX";
    memcpy(all + 1, names, n * sizeof *names);
    struct entries e = { 0 };
    int rc = entries_build(&e, all, n + 1, true);
    free(all);
    const char *pattern = j->name2;
    size_t plen = strlen(pattern);
    for (size_t i = 0; rc == 0 && i < e.n; i++)
        if (imap_pattern_match(pattern, plen, e.v[i].name, strlen(e.v[i].name), DELIM))
            rc = list_line(&j->out, "LIST", &e.v[i], false);
    entries_free(&e);
    return rc;
}

/* LSUB: subscribed names; with a trailing "%", levels above a subscribed
 * name that are not subscribed themselves show as \Noselect (RFC 3501
 * 6.3.9). */
static int lsub_names(struct mbox_job *j, char **names, size_t n)
{
    const char *pattern = j->name2;
    size_t plen = strlen(pattern);
    bool parents = plen > 0 && pattern[plen - 1] == '%';
    struct entries e = { 0 };
    int rc = entries_build(&e, names, n, parents);
    for (size_t i = 0; rc == 0 && i < e.n; i++)
        if (imap_pattern_match(pattern, plen, e.v[i].name, strlen(e.v[i].name), DELIM))
            rc = list_line(&j->out, "LSUB", &e.v[i], true);
    entries_free(&e);
    return rc;
}

static void list_work(void *arg)
{
    struct mbox_job *j = arg;
    char **names = NULL;
    size_t n = 0;
    int rc = j->flag ? mailindex_subscriptions(j->ix, &names, &n, j->err, sizeof j->err)
                     : mailindex_folders(j->ix, &names, &n, j->err, sizeof j->err);
    if (rc < 0) {
        job_failed(j);
        return;
    }
    rc = j->flag ? lsub_names(j, names, n) : list_names(j, names, n);
    mailstore_folders_free(names, n);
    if (rc < 0) {
        errno = ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
        job_failed(j);
    }
}

static void list_done(struct imap_session *s, void *arg)
{
    struct mbox_job *j = arg;
    if (j->rc < 0) {
        done_failed(s, j, s->cmd->name);
    } else {
        imap_write(s, j->out.data, j->out.len);
        imap_done(s, IMAP_OK, "%s completed.", j->flag ? "Lsub" : "List");
    }
    job_free(j);
}

void imap_cmd_list(struct imap_session *s)
{
    const char *ref, *pattern, *combined, *err;
    size_t ref_len, pattern_len, combined_len;
    bool lsub = strcmp(s->cmd->name, "LSUB") == 0;
    if (imap_parse_list(s->cmd->args, &ref, &ref_len, &pattern, &pattern_len, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err);
        return;
    }
    if (pattern_len == 0) {
        /* RFC 3501 6.3.8: the delimiter and the root of the reference. */
        if (!lsub)
            imap_printf(s, "* LIST (\\Noselect) \"%c\" \"\"\r\n", DELIM);
        imap_done(s, IMAP_OK, "%s completed.", lsub ? "Lsub" : "List");
        return;
    }
    if (imap_list_combine(ref, ref_len, pattern, pattern_len, DELIM, &combined, &combined_len,
                          s->arena, &err) < 0) {
        imap_done(s, IMAP_BAD, "%s", err);
        return;
    }
    struct mbox_job *j = job_new(s);
    if (!j)
        return;
    j->flag = lsub;
    if (!(j->name2 = strdup(combined))) {
        job_free(j);
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory.");
        return;
    }
    imap_run(s, list_work, list_done, j);
}

/* --- STATUS ------------------------------------------------------------------------------------ */

/* In the order of the values status_work computes. */
static const struct {
    const char *name;
    unsigned bit;
} status_items[] = {
    { "MESSAGES", 0x01u },
    { "RECENT", 0x02u },
    { "UIDNEXT", 0x04u },
    { "UIDVALIDITY", 0x08u },
    { "UNSEEN", 0x10u },
};
#define NSTATUS (sizeof status_items / sizeof *status_items)
_Static_assert(NSTATUS == sizeof ((struct mbox_job *)0)->order, "one order slot per item");

static void status_work(void *arg)
{
    struct mbox_job *j = arg;
    struct mailindex_view v = { 0 };
    if (mailindex_sync(j->ix, imap_folder(j->name), &v, j->err, sizeof j->err) < 0) {
        job_failed(j);
        return;
    }
    size_t recent = 0, unseen = 0;
    for (size_t i = 0; i < v.n; i++) {
        recent += v.msgs[i].uid >= v.recent_mark;
        unseen += !(v.msgs[i].flags && strchr(v.msgs[i].flags, 'S'));
    }
    unsigned long long value[NSTATUS] = { v.n, recent, v.uidnext, v.uidvalidity, unseen };
    struct buf *o = &j->out;
    int rc = buf_append(o, "* STATUS ", 9);
    if (rc == 0)
        rc = put_string(o, j->name, strlen(j->name));
    if (rc == 0)
        rc = buf_append(o, " (", 2);
    for (size_t k = 0; rc == 0 && k < j->nitems; k++) {
        size_t i = j->order[k];
        rc = buf_printf(o, "%s%s %llu", k ? " " : "", status_items[i].name, value[i]);
    }
    if (rc == 0)
        rc = buf_append(o, ")\r\n", 3);
    mailindex_view_free(&v);
    if (rc < 0) {
        errno = ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
        job_failed(j);
    }
}

static void status_done(struct imap_session *s, void *arg)
{
    struct mbox_job *j = arg;
    if (j->rc < 0) {
        done_failed(s, j, "STATUS");
    } else {
        imap_write(s, j->out.data, j->out.len);
        imap_done(s, IMAP_OK, "Status completed.");
    }
    job_free(j);
}

void imap_cmd_status(struct imap_session *s)
{
    const char *name;
    const struct imap_arg *list = s->cmd->args ? s->cmd->args->next : NULL;
    if (s->cmd->nargs != 2 || list->type != IMAP_ARG_LIST || list->len == 0) {
        imap_done(s, IMAP_BAD, "STATUS takes a mailbox name and a list of items");
        return;
    }
    unsigned items = 0;
    unsigned char order[NSTATUS];
    size_t nitems = 0;
    for (const struct imap_arg *a = list->list; a; a = a->next) {
        size_t i = 0;
        while (i < NSTATUS && !imap_arg_is_atom(a, status_items[i].name))
            i++;
        if (a->type != IMAP_ARG_ATOM || i == NSTATUS) {
            imap_done(s, IMAP_BAD, "Unknown STATUS item");
            return;
        }
        if (!(items & status_items[i].bit))
            order[nitems++] = (unsigned char)i;
        items |= status_items[i].bit;
    }
    if (mailbox_arg(s, s->cmd->args, false, &name) < 0)
        return;
    struct mbox_job *j = job_new(s);
    if (!j)
        return;
    memcpy(j->order, order, nitems);
    j->nitems = nitems;
    if (!(j->name = strdup(name))) {
        job_free(j);
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory.");
        return;
    }
    imap_run(s, status_work, status_done, j);
}

/* --- QUOTA (RFC 9208): one root "" holding the whole mailbox ---------------------------------- */

static void quota_work(void *arg)
{
    struct mbox_job *j = arg;
    struct quota_status st = { 0 };
    quota_check(j->srv->accounts, j->srv->store, j->srv->settings, j->address, 0, &st);
    struct buf *o = &j->out;
    int rc = 0;
    if (j->flag) {
        rc = buf_append(o, "* QUOTAROOT ", 12);
        if (rc == 0)
            rc = put_string(o, j->name, strlen(j->name));
        if (rc == 0)
            rc = buf_append(o, " \"\"\r\n", 5);
    }
    if (rc == 0 && st.limit)
        rc = buf_printf(o, "* QUOTA \"\" (STORAGE %llu %llu)\r\n",
                        (unsigned long long)((st.usage + 1023) / 1024),
                        (unsigned long long)(st.limit / 1024));
    else if (rc == 0)
        rc = buf_printf(o, "* QUOTA \"\" ()\r\n");
    if (rc < 0) {
        errno = ENOMEM;
        snprintf(j->err, sizeof j->err, "out of memory");
        job_failed(j);
    }
}

static void quota_done(struct imap_session *s, void *arg)
{
    struct mbox_job *j = arg;
    if (j->rc < 0) {
        done_failed(s, j, s->cmd->name);
    } else {
        imap_write(s, j->out.data, j->out.len);
        imap_done(s, IMAP_OK, "%s completed.", j->flag ? "Getquotaroot" : "Getquota");
    }
    job_free(j);
}

void imap_cmd_getquota(struct imap_session *s)
{
    bool root = strcmp(s->cmd->name, "GETQUOTAROOT") == 0;
    const char *name = "", *err;
    size_t len;
    if (s->cmd->nargs != 1) {
        imap_done(s, IMAP_BAD, "%s takes one argument", s->cmd->name);
        return;
    }
    if (root) {
        if (mailbox_arg(s, s->cmd->args, false, &name) < 0)
            return;
    } else {
        if (imap_arg_astring(s->cmd->args, &name, &len, &err) < 0) {
            imap_done(s, IMAP_BAD, "%s", err);
            return;
        }
        if (len != 0) {
            imap_done(s, IMAP_NO, "[NONEXISTENT] No such quota root.");
            return;
        }
    }
    struct mbox_job *j = job_new(s);
    if (!j)
        return;
    j->flag = root;
    if (!(j->name = strdup(name))) {
        job_free(j);
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory.");
        return;
    }
    imap_run(s, quota_work, quota_done, j);
}

/* --- after login ---------------------------------------------------------------------------------- */

void imap_special_use_prepare(struct mailindex *ix)
{
    char **names = NULL, err[256];
    size_t n = 0;
    if (mailindex_folders(ix, &names, &n, err, sizeof err) < 0) {
        log_warn("imap: cannot list folders: %s", err);
        return;
    }
    bool created = false;
    for (size_t i = 0; i < NSPECIAL; i++) {
        const char *want = special_use[i][0];
        bool have = false;
        for (size_t k = 0; k < n && !have; k++)
            have = strcmp(names[k], want) == 0;
        if (have)
            continue;
        /* Only what this call creates is subscribed: a user may unsubscribe. */
        if (mailindex_folder_create(ix, want, err, sizeof err) < 0) {
            if (errno != EEXIST)
                log_warn("imap: cannot create %s: %s", want, err);
            continue;
        }
        created = true;
        if (mailindex_subscribe(ix, want, true, err, sizeof err) < 0)
            log_warn("imap: cannot subscribe %s: %s", want, err);
    }
    if (created && mailindex_subscribe(ix, "INBOX", true, err, sizeof err) < 0)
        log_warn("imap: cannot subscribe INBOX: %s", err);
    mailstore_folders_free(names, n);
}
