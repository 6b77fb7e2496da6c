/* The IMAP server session. See imap_server.h and imap_session.h.
 *
 * A session reads one whole command (its lines and literals) into a buffer
 * it owns only while the command lives, parses it into a per-command arena,
 * checks the state and calls the handler; reading pauses until the handler
 * ends with imap_done(). While a mailbox is selected, imap_done first
 * brings the session's snapshot up to date on a worker and sends the
 * untagged updates. IDLE and the AUTHENTICATE continuation read their own
 * lines while the command is in progress. An idle session keeps only this
 * struct and its conn: no command buffer, no arena. */
#include "imap_server.h"
#include "imap_session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth.h"
#include "buf.h"
#include "conn.h"
#include "imap_fetch.h"
#include "listener.h"
#include "log.h"
#include "mailnotify.h"
#include "sasl.h"
#include "util.h"

#define IMAP_LINE_MAX       CONN_INPUT_MAX          /* a line with its CRLF */
#define IMAP_LITERAL_MAX    (64 * 1024)             /* per literal, except APPEND */
#define IMAP_COMMAND_MAX    (8 * 1024 * 1024)       /* a whole command, except APPEND */
#define IMAP_APPEND_EXTRA   (1024 * 1024)           /* APPEND: beyond its message literal */
#define IMAP_APPEND_DEFAULT (1024ULL * 1024 * 1024) /* no POSTFIX_MESSAGE_SIZE_LIMIT */
#define IMAP_ERROR_LIMIT    20                      /* BAD replies in a row */
#define IMAP_SASL_LINE_MAX  4096
#define IMAP_OUTPUT_POLL    0.02                    /* seconds between drain checks */
#define IMAP_ARENA_BASE     (16 * 1024)

#define CAPS_BASE "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE " \
                  "SPECIAL-USE CHILDREN UNSELECT QUOTA QUOTA=RES-STORAGE"

enum phase {
    PHASE_COMMAND,      /* reading command lines */
    PHASE_LITERAL,      /* reading a literal's octets */
    PHASE_SASL,         /* AUTHENTICATE: reading the client's response line */
    PHASE_IDLE,         /* IDLE: waiting for DONE */
    PHASE_TLS,          /* STARTTLS / implicit TLS handshake in progress */
    PHASE_CLOSING,      /* conn_close called; nothing more is read */
};

struct imap_io {
    struct imap_session *prev, *next;  /* all sessions, for SIGTERM */
    enum phase phase;
    bool counted;                      /* holds an iplimit slot */
    bool refused;                      /* over the connection limits */
    bool greeted;
    bool processing;                   /* inside session_process */
    bool in_command;                   /* between dispatch and the tagged reply */
    bool append;                       /* the command being read is APPEND */
    bool secret;                       /* it carries a password: wipe it */
    unsigned jobs;                     /* worker jobs / logins in flight */
    unsigned errors;                   /* BAD replies in a row */

    struct buf cmd;                    /* the command being read / run */
    uint64_t literal_left;
    struct imap_command parsed;
    char tag[IMAP_TAG_MAX + 1];

    enum imap_status reply_status;     /* the tagged reply waiting for a sync */
    char *reply_text;

    bool waiting_output;               /* output timer running */
    ev_timer output_timer;
    void (*cont)(struct imap_session *s, void *arg); /* imap_when_writable */
    void *cont_arg;

    struct mailnotify_watch *watch;    /* IDLE in SELECTED */
    bool notify_pending;               /* a change arrived during a sync */

    unsigned long long in, out;        /* octets, for the log line */
};

static struct imap_session *sessions;
static unsigned session_count;

static void session_process(struct imap_session *s);
static void finish_command(struct imap_session *s);

/* --- output ---------------------------------------------------------------- */

static bool can_write(const struct imap_session *s)
{
    return s->conn && s->io->phase != PHASE_CLOSING;
}

void imap_write(struct imap_session *s, const void *data, size_t len)
{
    if (!can_write(s))
        return;
    conn_write(s->conn, data, len);
    s->io->out += len;
}

static void imap_vprintf(struct imap_session *s, const char *fmt, va_list ap)
{
    if (!can_write(s))
        return;
    struct buf b = BUF_INIT;
    if (buf_vprintf(&b, fmt, ap) == 0)
        imap_write(s, b.data, b.len);
    buf_free(&b);
}

void imap_printf(struct imap_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    imap_vprintf(s, fmt, ap);
    va_end(ap);
}

static void session_close(struct imap_session *s)
{
    if (!s->conn || s->io->phase == PHASE_CLOSING)
        return;
    s->io->phase = PHASE_CLOSING;
    conn_close(s->conn);
}

static void bye(struct imap_session *s, const char *text)
{
    imap_printf(s, "* BYE %s\r\n", text);
    session_close(s);
}

static const char *capabilities(const struct imap_session *s)
{
    if (s->state != IMAP_STATE_NOT_AUTH)
        return CAPS_BASE;
    if (s->conn && conn_is_tls(s->conn))
        return CAPS_BASE " AUTH=PLAIN";
    return CAPS_BASE " STARTTLS LOGINDISABLED";
}

uint64_t imap_append_limit(const struct imap_session *s)
{
    uint64_t limit = s->srv->settings->message_size_limit;
    return limit ? limit : IMAP_APPEND_DEFAULT;
}

/* --- the snapshot ------------------------------------------------------------ */

int imap_msg_from_index(struct imap_msg *out, const struct mailindex_msg *m, bool recent)
{
    memset(out, 0, sizeof *out);
    out->keywords = strdup(m->keywords ? m->keywords : "");
    if (!out->keywords)
        return -1;
    out->uid = m->uid;
    snprintf(out->flags, sizeof out->flags, "%s", m->flags ? m->flags : "");
    out->recent = recent;
    out->size = m->size;
    out->internaldate = m->internaldate;
    return 0;
}

void imap_mailbox_free(struct imap_mailbox *mb)
{
    if (!mb)
        return;
    for (size_t i = 0; i < mb->n; i++)
        free(mb->msgs[i].keywords);
    free(mb->msgs);
    free(mb->folder);
    free(mb->name);
    free(mb);
}

void imap_unselect(struct imap_session *s)
{
    imap_mailbox_free(s->sel);
    s->sel = NULL;
    if (s->state == IMAP_STATE_SELECTED)
        s->state = IMAP_STATE_AUTH;
}

/* --- session lifetime ---------------------------------------------------------- */

static void index_close_work(void *arg)
{
    mailindex_close(arg);
}

static void release_index(struct imap_session *s)
{
    if (!s->ix)
        return;
    if (workers_submit(s->srv->workers, index_close_work, NULL, s->ix) < 0)
        mailindex_close(s->ix);
    s->ix = NULL;
}

static void free_command(struct imap_session *s)
{
    struct imap_io *io = s->io;
    if (io->secret && io->cmd.data)
        explicit_bzero(io->cmd.data, io->cmd.cap);
    buf_free(&io->cmd);
    free(s->arena);     /* the arena struct heads its own block */
    s->arena = NULL;
    s->cmd = NULL;
    io->secret = false;
    io->append = false;
    io->literal_left = 0;
}

static void session_free(struct imap_session *s)
{
    struct imap_io *io = s->io;
    log_info("imap[%s]: session closed, %s user=%s in=%llu out=%llu", s->id, s->peer,
             s->address[0] ? s->address : "-", io->in, io->out);
    if (io->watch)
        mailnotify_unwatch(io->watch);
    ev_timer_stop(s->srv->loop, &io->output_timer);
    free_command(s);
    free(io->reply_text);
    imap_unselect(s);
    release_index(s);
    if (io->counted)
        iplimit_release(s->peer);
    if (io->prev)
        io->prev->io->next = io->next;
    else
        sessions = io->next;
    if (io->next)
        io->next->io->prev = io->prev;
    session_count--;
    free(s);
}

/* Frees the session when the connection is gone and nothing refers to it. */
static bool release_if_gone(struct imap_session *s)
{
    if (s->conn)
        return false;
    if (s->io->jobs == 0 && !s->io->cont)
        session_free(s);
    return true;
}

/* --- the end of a command ------------------------------------------------------- */

static void command_end(struct imap_session *s)
{
    struct imap_io *io = s->io;
    free_command(s);
    io->in_command = false;
    if (release_if_gone(s))
        return;
    if (io->phase == PHASE_CLOSING || io->phase == PHASE_TLS)
        return;
    io->phase = PHASE_COMMAND;
    if (s->state == IMAP_STATE_LOGOUT) {
        session_close(s);
        return;
    }
    if (io->errors >= IMAP_ERROR_LIMIT) {
        log_info("imap[%s]: %s: too many errors, disconnecting", s->id, s->peer);
        bye(s, "Too many errors");
        return;
    }
    if (s->srv->stopping) {
        bye(s, "Server shutting down");
        return;
    }
    conn_resume_read(s->conn);
    if (!io->processing)
        session_process(s);
}

static void count_reply(struct imap_session *s, enum imap_status st)
{
    if (st == IMAP_BAD)
        s->io->errors++;
    else if (st == IMAP_OK)
        s->io->errors = 0;
}

static const char *status_word(enum imap_status st)
{
    return st == IMAP_OK ? "OK" : st == IMAP_NO ? "NO" : "BAD";
}

/* Writes the tagged reply stored by imap_done and ends the command. */
static void finish_command(struct imap_session *s)
{
    struct imap_io *io = s->io;
    enum imap_status st = io->reply_status;
    imap_printf(s, "%s %s %s\r\n", io->tag, status_word(st),
                io->reply_text ? io->reply_text : "completed");
    if (st != IMAP_OK)
        log_debug("imap[%s]: %s %s %s", s->id, io->tag, status_word(st),
                  io->reply_text ? io->reply_text : "");
    count_reply(s, st);
    free(io->reply_text);
    io->reply_text = NULL;
    command_end(s);
}

/* A reply to a command that never started (parse errors, refused
 * literals): no sync, no handler. */
static void reply_now(struct imap_session *s, const char *tag, enum imap_status st,
                      const char *text)
{
    imap_printf(s, "%s %s %s\r\n", tag, status_word(st), text);
    count_reply(s, st);
    if (s->io->errors >= IMAP_ERROR_LIMIT) {
        log_info("imap[%s]: %s: too many errors, disconnecting", s->id, s->peer);
        bye(s, "Too many errors");
    }
}

/* --- workers ----------------------------------------------------------------------- */

struct run_job {
    struct imap_session *s;
    void (*work)(void *arg);
    void (*done)(struct imap_session *s, void *arg);
    void *arg;
};

static void run_work(void *arg)
{
    struct run_job *j = arg;
    j->work(j->arg);
}

static void run_done(void *arg)
{
    struct run_job *j = arg;
    struct imap_session *s = j->s;
    void (*done)(struct imap_session *, void *) = j->done;
    void *a = j->arg;
    free(j);
    s->io->jobs--;
    done(s, a);
}

void imap_run(struct imap_session *s, void (*work)(void *arg),
              void (*done)(struct imap_session *s, void *arg), void *arg)
{
    struct run_job *j = malloc(sizeof *j);
    if (j) {
        *j = (struct run_job){ s, work, done, arg };
        if (workers_submit(s->srv->workers, run_work, run_done, j) == 0) {
            s->io->jobs++;
            if (s->conn)
                conn_pause_read(s->conn);
            return;
        }
        free(j);
    }
    /* Out of memory: do it here rather than fail the command. */
    log_warn("imap[%s]: cannot queue work, running it on the loop thread", s->id);
    work(arg);
    done(s, arg);
}

/* --- the update sync (RFC 3501 7.4.1, 5.2) -------------------------------------------- */

enum sync_purpose { SYNC_COMMAND, SYNC_IDLE };

struct sync_job {
    struct mailindex *ix;
    char *folder;
    bool claim;
    enum sync_purpose purpose;
    struct mailindex_view view;
    uint32_t first_recent;
    bool claimed;
    int rc, err_no;
    char err[256];
};

static void sync_work(void *arg)
{
    struct sync_job *j = arg;
    j->rc = mailindex_sync(j->ix, j->folder, &j->view, j->err, sizeof j->err);
    if (j->rc < 0) {
        j->err_no = errno;
        return;
    }
    /* Only when something new arrived: claiming writes to the index. */
    if (j->claim && j->view.recent_mark < j->view.uidnext &&
        mailindex_claim_recent(j->ix, j->folder, &j->first_recent, j->err, sizeof j->err) == 0)
        j->claimed = true;
}

static bool expunge_allowed(const struct imap_session *s, enum sync_purpose purpose)
{
    if (purpose == SYNC_IDLE || !s->cmd)
        return true;
    const struct imap_command *c = s->cmd;
    if (c->uid)
        return true;
    return strcmp(c->name, "FETCH") != 0 && strcmp(c->name, "STORE") != 0 &&
           strcmp(c->name, "SEARCH") != 0;
}

static void send_flags(struct imap_session *s, size_t seq, const struct imap_msg *m)
{
    struct buf b = BUF_INIT;
    if (buf_printf(&b, "* %zu FETCH (FLAGS ", seq) == 0 &&
        imap_write_flags(&b, imap_flags_from_maildir(m->flags), m->keywords, m->recent) == 0 &&
        buf_append(&b, ")\r\n", 3) == 0)
        imap_write(s, b.data, b.len);
    buf_free(&b);
}

/* Marks vanished messages and applies changed flags; returns the index in
 * view of the first message the snapshot does not have. */
static size_t mark_changes(struct imap_session *s, const struct mailindex_view *v,
                           bool *changed)
{
    struct imap_mailbox *mb = s->sel;
    size_t i = 0, k = 0;
    while (i < mb->n) {
        struct imap_msg *m = &mb->msgs[i];
        while (k < v->n && v->msgs[k].uid < m->uid)
            k++;                       /* unknown to us yet older: cannot be, skip */
        if (k == v->n || v->msgs[k].uid != m->uid) {
            m->expunged = true;
            i++;
            continue;
        }
        const struct mailindex_msg *x = &v->msgs[k];
        const char *kw = x->keywords ? x->keywords : "";
        /* Compared as the snapshot holds them (seven letters at most), or a
         * longer Maildir info would count as a change at every sync. */
        char fl[sizeof m->flags];
        snprintf(fl, sizeof fl, "%s", x->flags ? x->flags : "");
        if (!m->expunged && (strcmp(m->flags, fl) != 0 || strcmp(m->keywords, kw) != 0)) {
            char *copy = strdup(kw);
            if (copy) {
                free(m->keywords);
                m->keywords = copy;
                snprintf(m->flags, sizeof m->flags, "%s", fl);
                changed[i] = true;
            }
        }
        i++;
        k++;
    }
    /* New messages: everything beyond the highest UID we know. */
    uint32_t top = mb->n ? mb->msgs[mb->n - 1].uid : 0;
    size_t first_new = v->n;
    while (first_new > 0 && v->msgs[first_new - 1].uid > top)
        first_new--;
    return first_new;
}

/* Sends EXPUNGE for marked messages from the highest sequence number down
 * (the numbers below stay valid) and drops them; `changed` follows. */
static void send_expunges(struct imap_session *s, bool *changed)
{
    struct imap_mailbox *mb = s->sel;
    for (size_t i = mb->n; i-- > 0;)
        if (mb->msgs[i].expunged)
            imap_printf(s, "* %zu EXPUNGE\r\n", i + 1);
    size_t w = 0;
    for (size_t i = 0; i < mb->n; i++) {
        if (mb->msgs[i].expunged) {
            free(mb->msgs[i].keywords);
            continue;
        }
        changed[w] = changed[i];
        mb->msgs[w++] = mb->msgs[i];
    }
    mb->n = w;
}

static int add_new(struct imap_session *s, const struct mailindex_view *v, size_t from,
                   const struct sync_job *j)
{
    struct imap_mailbox *mb = s->sel;
    size_t add = v->n - from;
    if (add == 0)
        return 0;
    if (mb->n + add > mb->cap) {
        size_t cap = mb->n + add + mb->n / 2 + 16;
        struct imap_msg *p = realloc(mb->msgs, cap * sizeof *p);
        if (!p)
            return -1;
        mb->msgs = p;
        mb->cap = cap;
    }
    for (size_t k = from; k < v->n; k++) {
        bool recent = j->claimed && v->msgs[k].uid >= j->first_recent;
        if (mb->readonly)
            recent = v->msgs[k].uid >= v->recent_mark;
        if (imap_msg_from_index(&mb->msgs[mb->n], &v->msgs[k], recent) < 0)
            return -1;
        mb->n++;
    }
    return 1;
}

static void apply_sync(struct imap_session *s, struct sync_job *j)
{
    struct imap_mailbox *mb = s->sel;
    if (!mb || s->state != IMAP_STATE_SELECTED)
        return;
    if (j->rc < 0 && j->err_no != ENOENT) {
        log_error("imap[%s]: %s: cannot sync %s of %s: %s", s->id, s->peer,
                  mb->folder ? mb->folder : "INBOX", s->address, j->err);
        return;
    }
    if (j->rc == 0 && j->view.uidvalidity != mb->uidvalidity) {
        /* The index was rebuilt: our UIDs mean nothing any more. */
        log_warn("imap[%s]: UIDVALIDITY of %s changed, disconnecting", s->id, mb->name);
        bye(s, "Mailbox UIDVALIDITY changed, please reconnect");
        return;
    }
    /* A missing folder (deleted or renamed meanwhile) is an empty view. */
    struct mailindex_view empty = { .uidvalidity = mb->uidvalidity, .uidnext = mb->uidnext };
    const struct mailindex_view *v = j->rc == 0 ? &j->view : &empty;
    bool *changed = mb->n ? calloc(mb->n, sizeof *changed) : NULL;
    if (mb->n && !changed)
        return;
    size_t before = mb->n;
    size_t first_new = mark_changes(s, v, changed);
    bool pending_expunge = false;
    for (size_t i = 0; i < mb->n; i++)
        pending_expunge |= mb->msgs[i].expunged;
    if (pending_expunge && expunge_allowed(s, j->purpose))
        send_expunges(s, changed);
    for (size_t i = 0; i < mb->n; i++)
        if (changed[i])
            send_flags(s, i + 1, &mb->msgs[i]);
    free(changed);
    if (j->claimed)
        mb->first_recent = j->first_recent;
    if (v->uidnext > mb->uidnext)
        mb->uidnext = v->uidnext;
    int added = add_new(s, v, first_new, j);
    if (added < 0)
        log_error("imap[%s]: out of memory adding new messages", s->id);
    if (added != 0 || mb->n > before) {
        size_t recent = 0;
        for (size_t i = 0; i < mb->n; i++)
            recent += mb->msgs[i].recent;
        imap_printf(s, "* %zu EXISTS\r\n* %zu RECENT\r\n", mb->n, recent);
    }
}

static void idle_resume(struct imap_session *s);

static void sync_done(struct imap_session *s, void *arg)
{
    struct sync_job *j = arg;
    if (s->conn)
        apply_sync(s, j);
    enum sync_purpose purpose = j->purpose;
    mailindex_view_free(&j->view);
    free(j->folder);
    free(j);
    if (purpose == SYNC_COMMAND)
        finish_command(s);
    else
        idle_resume(s);
}

/* Returns false when no sync was started (then nothing waits for it). */
static bool start_sync(struct imap_session *s, enum sync_purpose purpose)
{
    struct sync_job *j = calloc(1, sizeof *j);
    if (!j)
        return false;
    j->ix = s->ix;
    j->claim = !s->sel->readonly;
    j->purpose = purpose;
    if (s->sel->folder && !(j->folder = strdup(s->sel->folder))) {
        free(j);
        return false;
    }
    imap_run(s, sync_work, sync_done, j);
    return true;
}

static bool skip_sync(const struct imap_session *s)
{
    const struct imap_command *c = s->cmd;
    return !c || strcmp(c->name, "SELECT") == 0 || strcmp(c->name, "EXAMINE") == 0 ||
           strcmp(c->name, "LOGOUT") == 0;
}

void imap_done(struct imap_session *s, enum imap_status st, const char *fmt, ...)
{
    struct imap_io *io = s->io;
    if (!io->in_command) {
        log_error("imap[%s]: imap_done without a command in progress", s->id);
        return;
    }
    free(io->reply_text);
    io->reply_text = NULL;
    struct buf b = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    io->reply_text = rc == 0 ? buf_cstr(&b) : NULL;
    if (!io->reply_text)
        buf_free(&b);
    io->reply_status = st;
    if (s->conn && s->state == IMAP_STATE_SELECTED && s->sel && s->ix && !skip_sync(s) &&
        start_sync(s, SYNC_COMMAND))
        return;
    finish_command(s);
}

/* --- output backpressure ---------------------------------------------------------------- */

static void on_output_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct imap_session *s = w->data;
    if (s->conn && conn_output_pending(s->conn) > IMAP_OUTPUT_HIGH)
        return;
    ev_timer_stop(loop, w);
    s->io->waiting_output = false;
    void (*cont)(struct imap_session *, void *) = s->io->cont;
    if (cont) {
        s->io->cont = NULL;
        cont(s, s->io->cont_arg);
        return;
    }
    if (s->conn) {
        conn_resume_read(s->conn);
        session_process(s);
    }
}

static void wait_output(struct imap_session *s)
{
    s->io->waiting_output = true;
    ev_timer_set(&s->io->output_timer, IMAP_OUTPUT_POLL, IMAP_OUTPUT_POLL);
    ev_timer_start(s->srv->loop, &s->io->output_timer);
}

void imap_when_writable(struct imap_session *s,
                        void (*cont)(struct imap_session *s, void *arg), void *arg)
{
    if (!s->conn || conn_output_pending(s->conn) <= IMAP_OUTPUT_HIGH) {
        cont(s, arg);
        return;
    }
    s->io->cont = cont;
    s->io->cont_arg = arg;
    wait_output(s);
}

/* A client that pipelines commands without reading the answers: stop
 * taking commands until the output has drained below the mark. */
static bool output_backlog(struct imap_session *s)
{
    if (conn_output_pending(s->conn) <= IMAP_OUTPUT_HIGH)
        return false;
    conn_pause_read(s->conn);
    wait_output(s);
    return true;
}

/* --- any state ------------------------------------------------------------------------------ */

static bool no_args(struct imap_session *s)
{
    if (s->cmd->nargs == 0)
        return true;
    imap_done(s, IMAP_BAD, "%s takes no arguments", s->cmd->name);
    return false;
}

static void cmd_capability(struct imap_session *s)
{
    if (!no_args(s))
        return;
    imap_printf(s, "* CAPABILITY %s\r\n", capabilities(s));
    imap_done(s, IMAP_OK, "Capability completed.");
}

static void cmd_noop(struct imap_session *s)
{
    if (no_args(s))
        imap_done(s, IMAP_OK, "%s completed.", s->cmd->name);
}

static void cmd_logout(struct imap_session *s)
{
    if (!no_args(s))
        return;
    imap_printf(s, "* BYE Logging out\r\n");
    s->state = IMAP_STATE_LOGOUT;
    imap_done(s, IMAP_OK, "Logout completed.");
}

static void cmd_id(struct imap_session *s)
{
    const struct imap_arg *a = s->cmd->args;
    if (s->cmd->nargs != 1 || (a->type != IMAP_ARG_NIL && a->type != IMAP_ARG_LIST)) {
        imap_done(s, IMAP_BAD, "ID takes NIL or a parameter list");
        return;
    }
    imap_printf(s, "* ID (\"name\" \"posthorn\")\r\n");
    imap_done(s, IMAP_OK, "ID completed.");
}

/* RFC 5161: nothing we support needs enabling (no CONDSTORE, no UTF8). */
static void cmd_enable(struct imap_session *s)
{
    if (s->cmd->nargs == 0) {
        imap_done(s, IMAP_BAD, "ENABLE needs at least one capability");
        return;
    }
    for (const struct imap_arg *a = s->cmd->args; a; a = a->next)
        if (a->type != IMAP_ARG_ATOM) {
            imap_done(s, IMAP_BAD, "ENABLE takes capability names");
            return;
        }
    imap_printf(s, "* ENABLED\r\n");
    imap_done(s, IMAP_OK, "Enabled.");
}

static void cmd_namespace(struct imap_session *s)
{
    if (!no_args(s))
        return;
    imap_printf(s, "* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
    imap_done(s, IMAP_OK, "Namespace completed.");
}

static void cmd_unselect(struct imap_session *s)
{
    if (!no_args(s))
        return;
    imap_unselect(s);
    imap_done(s, IMAP_OK, "Unselect completed.");
}

static void cmd_setquota(struct imap_session *s)
{
    imap_done(s, IMAP_NO, "[NOPERM] Quotas are set by the administrator.");
}

/* --- NOT AUTHENTICATED ---------------------------------------------------------------------- */

static void cmd_starttls(struct imap_session *s)
{
    if (!no_args(s))
        return;
    if (conn_is_tls(s->conn)) {
        imap_done(s, IMAP_BAD, "TLS is already active.");
        return;
    }
    imap_done(s, IMAP_OK, "Begin TLS negotiation now.");
    if (!s->conn || s->io->phase == PHASE_CLOSING)
        return;
    /* conn drops whatever the client pipelined after the command. */
    s->io->phase = PHASE_TLS;
    if (conn_starttls(s->conn, tls_server_ctx(s->srv->tls)) < 0)
        session_close(s);
}

/* RFC 3501 6.2.3 / DESIGN.md: credentials never cross a plaintext connection. */
static bool require_tls(struct imap_session *s)
{
    if (conn_is_tls(s->conn))
        return true;
    imap_done(s, IMAP_NO, "[PRIVACYREQUIRED] Plaintext authentication disallowed on "
                          "non-secure connections, use STARTTLS first.");
    return false;
}

struct open_job {
    struct mailstore *store;
    char address[ACCOUNTS_ADDR_MAX + 1];
    struct mailindex *ix;
    char err[256];
};

static void open_work(void *arg)
{
    struct open_job *j = arg;
    j->ix = mailindex_open(j->store, j->address, j->err, sizeof j->err);
    if (j->ix)
        imap_special_use_prepare(j->ix);
}

static void open_done(struct imap_session *s, void *arg)
{
    struct open_job *j = arg;
    struct mailindex *ix = j->ix;
    if (!ix)
        log_error("imap[%s]: %s: cannot open the mailbox of %s: %s", s->id, s->peer,
                  s->address, j->err);
    free(j);
    if (!ix) {
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Unable to open the mailbox, try again later.");
        return;
    }
    s->ix = ix;
    s->state = IMAP_STATE_AUTH;
    log_info("imap[%s]: %s: login user=%s", s->id, s->peer, s->address);
    imap_done(s, IMAP_OK, "[CAPABILITY %s] Logged in", capabilities(s));
}

static void login_done(void *arg, enum auth_result result, const char *address)
{
    struct imap_session *s = arg;
    s->io->jobs--;
    if (!s->conn) {
        imap_done(s, IMAP_NO, "Connection gone.");
        return;
    }
    switch (result) {
    case AUTH_OK: {
        struct open_job *j = calloc(1, sizeof *j);
        if (!j) {
            imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory, try again later.");
            return;
        }
        snprintf(s->address, sizeof s->address, "%s", address);
        j->store = s->srv->store;
        snprintf(j->address, sizeof j->address, "%s", address);
        imap_run(s, open_work, open_done, j);
        return;
    }
    case AUTH_FAILED:
        imap_done(s, IMAP_NO, "[AUTHENTICATIONFAILED] Authentication failed.");
        return;
    case AUTH_THROTTLED:
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Too many failed logins from your address, "
                              "try again later.");
        return;
    case AUTH_TEMPFAIL:
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Authentication is temporarily unavailable.");
        return;
    }
}

static void start_login(struct imap_session *s, const char *user, const char *pass)
{
    if (auth_login_proto(s->srv, "imap", s->peer, user, pass, login_done, s) < 0) {
        imap_done(s, IMAP_NO, "[UNAVAILABLE] Out of memory, try again later.");
        return;
    }
    s->io->jobs++;
    conn_pause_read(s->conn);
}

/* An astring copied NUL-terminated into out (outlen > max). */
static int copy_astring(const struct imap_arg *a, char *out, size_t outlen)
{
    const char *v, *err;
    size_t len;
    if (imap_arg_astring(a, &v, &len, &err) < 0 || len == 0 || len >= outlen ||
        memchr(v, '\0', len))
        return -1;
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

static void cmd_login(struct imap_session *s)
{
    s->io->secret = true;
    if (!require_tls(s))
        return;
    char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
    if (s->cmd->nargs != 2 || copy_astring(s->cmd->args, user, sizeof user) < 0 ||
        copy_astring(s->cmd->args->next, pass, sizeof pass) < 0) {
        imap_done(s, IMAP_BAD, "LOGIN takes a user name and a password");
        return;
    }
    start_login(s, user, pass);
    explicit_bzero(pass, sizeof pass);
}

static void sasl_plain(struct imap_session *s, const char *b64, size_t len)
{
    char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
    unsigned char raw[IMAP_SASL_LINE_MAX];
    const char *reason;
    long n = sasl_base64_decode(b64, len, raw, sizeof raw);
    explicit_bzero(raw, sizeof raw);
    if (n < 0) {
        imap_done(s, IMAP_BAD, "Invalid base64 data.");
        return;
    }
    /* Well-formed but unacceptable (empty, another authzid): a failed login. */
    if (sasl_plain_parse(b64, len, user, sizeof user, pass, sizeof pass, &reason) < 0) {
        imap_done(s, IMAP_NO, "[AUTHENTICATIONFAILED] %s", reason);
        return;
    }
    start_login(s, user, pass);
    explicit_bzero(pass, sizeof pass);
}

static void cmd_authenticate(struct imap_session *s)
{
    s->io->secret = true;
    if (!require_tls(s))
        return;
    const struct imap_arg *mech = s->cmd->args;
    if (s->cmd->nargs < 1 || s->cmd->nargs > 2 || mech->type != IMAP_ARG_ATOM) {
        imap_done(s, IMAP_BAD, "AUTHENTICATE takes a mechanism and an initial response");
        return;
    }
    if (!imap_arg_is_atom(mech, "PLAIN")) {
        imap_done(s, IMAP_NO, "[CANNOT] Unsupported authentication mechanism.");
        return;
    }
    const struct imap_arg *ir = mech->next;
    if (ir) {
        if (ir->type != IMAP_ARG_ATOM) {
            imap_done(s, IMAP_BAD, "Invalid initial response");
            return;
        }
        sasl_plain(s, ir->str, ir->len);
        return;
    }
    s->io->phase = PHASE_SASL;
    imap_write(s, "+ \r\n", 4);
    conn_resume_read(s->conn);
}

static bool read_sasl(struct imap_session *s)
{
    const char *line;
    size_t len, used;
    int r = conn_peek_line(s->conn, IMAP_SASL_LINE_MAX, &line, &len, &used, NULL);
    if (r == 0)
        return false;
    s->io->phase = PHASE_COMMAND;
    conn_pause_read(s->conn);
    if (r < 0) {
        imap_done(s, IMAP_BAD, "Line too long");
        bye(s, "Line too long");
        return false;
    }
    s->io->in += used;
    if (len == 1 && line[0] == '*') {
        conn_consume(s->conn, used);
        imap_done(s, IMAP_BAD, "Authentication cancelled.");
        return true;
    }
    char b64[IMAP_SASL_LINE_MAX];
    memcpy(b64, line, len);
    conn_consume(s->conn, used);
    sasl_plain(s, b64, len);
    explicit_bzero(b64, len);
    return true;
}

/* --- IDLE (RFC 2177) ---------------------------------------------------------------------------- */

static void on_notify(void *arg)
{
    struct imap_session *s = arg;
    if (s->io->phase != PHASE_IDLE || !s->conn || !s->sel)
        return;
    if (s->io->jobs) {
        s->io->notify_pending = true;
        return;
    }
    start_sync(s, SYNC_IDLE);
}

/* After a sync during IDLE. */
static void idle_resume(struct imap_session *s)
{
    struct imap_io *io = s->io;
    if (release_if_gone(s) || io->phase != PHASE_IDLE)
        return;
    if (s->srv->stopping) {
        bye(s, "Server shutting down");
        return;
    }
    if (io->notify_pending && s->sel) {
        io->notify_pending = false;
        if (start_sync(s, SYNC_IDLE))
            return;
    }
    conn_resume_read(s->conn);
    if (!io->processing)
        session_process(s);
}

static void cmd_idle(struct imap_session *s)
{
    if (!no_args(s))
        return;
    struct imap_io *io = s->io;
    imap_write(s, "+ idling\r\n", 10);
    /* An idle session keeps no command memory: the tag is in io. */
    free_command(s);
    io->phase = PHASE_IDLE;
    io->notify_pending = false;
    conn_set_timeout(s->conn, IMAP_IDLE_TIMEOUT);
    if (s->state == IMAP_STATE_SELECTED && s->sel) {
        io->watch = mailnotify_watch(s->address, s->sel->folder, on_notify, s);
        /* Catch up with what happened before the watch existed. */
        if (start_sync(s, SYNC_IDLE))
            return;
    }
    conn_resume_read(s->conn);
}

static void end_idle(struct imap_session *s, bool done)
{
    struct imap_io *io = s->io;
    if (io->watch) {
        mailnotify_unwatch(io->watch);
        io->watch = NULL;
    }
    io->phase = PHASE_COMMAND;
    io->reply_status = done ? IMAP_OK : IMAP_BAD;
    free(io->reply_text);
    io->reply_text = strdup(done ? "IDLE terminated." : "Expected DONE.");
    finish_command(s);
}

static bool read_idle(struct imap_session *s)
{
    const char *line;
    size_t len, used;
    int r = conn_peek_line(s->conn, IMAP_LINE_MAX, &line, &len, &used, NULL);
    if (r == 0)
        return false;
    if (r < 0) {
        bye(s, "Line too long");
        return false;
    }
    bool done = len == 4 && strncasecmp(line, "DONE", 4) == 0;
    conn_consume(s->conn, used);
    s->io->in += used;
    end_idle(s, done);
    return true;
}

/* --- dispatch ------------------------------------------------------------------------------------ */

#define ST_NA  (1u << IMAP_STATE_NOT_AUTH)
#define ST_AU  (1u << IMAP_STATE_AUTH)
#define ST_SE  (1u << IMAP_STATE_SELECTED)
#define ST_ANY (ST_NA | ST_AU | ST_SE)

struct command_def {
    const char *name;
    unsigned states;
    bool uid;            /* also valid after UID */
    void (*fn)(struct imap_session *s);
};

static const struct command_def commands[] = {
    { "CAPABILITY", ST_ANY, false, cmd_capability },
    { "NOOP", ST_ANY, false, cmd_noop },
    { "LOGOUT", ST_ANY, false, cmd_logout },
    { "ID", ST_ANY, false, cmd_id },
    { "STARTTLS", ST_NA, false, cmd_starttls },
    { "LOGIN", ST_NA, false, cmd_login },
    { "AUTHENTICATE", ST_NA, false, cmd_authenticate },
    { "ENABLE", ST_AU | ST_SE, false, cmd_enable },
    { "SELECT", ST_AU | ST_SE, false, imap_cmd_select },
    { "EXAMINE", ST_AU | ST_SE, false, imap_cmd_select },
    { "CREATE", ST_AU | ST_SE, false, imap_cmd_create },
    { "DELETE", ST_AU | ST_SE, false, imap_cmd_delete },
    { "RENAME", ST_AU | ST_SE, false, imap_cmd_rename },
    { "SUBSCRIBE", ST_AU | ST_SE, false, imap_cmd_subscribe },
    { "UNSUBSCRIBE", ST_AU | ST_SE, false, imap_cmd_subscribe },
    { "LIST", ST_AU | ST_SE, false, imap_cmd_list },
    { "LSUB", ST_AU | ST_SE, false, imap_cmd_list },
    { "STATUS", ST_AU | ST_SE, false, imap_cmd_status },
    { "APPEND", ST_AU | ST_SE, false, imap_cmd_append },
    { "GETQUOTA", ST_AU | ST_SE, false, imap_cmd_getquota },
    { "GETQUOTAROOT", ST_AU | ST_SE, false, imap_cmd_getquota },
    { "SETQUOTA", ST_AU | ST_SE, false, cmd_setquota },
    { "NAMESPACE", ST_AU | ST_SE, false, cmd_namespace },
    { "IDLE", ST_AU | ST_SE, false, cmd_idle },
    { "CHECK", ST_SE, false, cmd_noop },
    { "CLOSE", ST_SE, false, imap_cmd_close },
    { "UNSELECT", ST_SE, false, cmd_unselect },
    { "EXPUNGE", ST_SE, true, imap_cmd_expunge },
    { "SEARCH", ST_SE, true, imap_cmd_search },
    { "FETCH", ST_SE, true, imap_cmd_fetch },
    { "STORE", ST_SE, true, imap_cmd_store },
    { "COPY", ST_SE, true, imap_cmd_copy },
    { "MOVE", ST_SE, true, imap_cmd_move },
};

static const struct command_def *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static const char *wrong_state(const struct imap_session *s)
{
    switch (s->state) {
    case IMAP_STATE_NOT_AUTH: return "Log in first.";
    case IMAP_STATE_AUTH: return "No mailbox selected.";
    default: return "Not valid in this state.";
    }
}

static void dispatch(struct imap_session *s)
{
    struct imap_io *io = s->io;
    size_t len = io->cmd.len >= 2 ? io->cmd.len - 2 : 0;   /* without the last CRLF */
    size_t size = IMAP_ARENA_BASE + 4 * (len < IMAP_ARENA_DEFAULT ? len : IMAP_ARENA_DEFAULT);
    if (size > IMAP_ARENA_DEFAULT)
        size = IMAP_ARENA_DEFAULT;
    struct imap_arena *arena = malloc(sizeof *arena + size);
    if (!arena) {
        reply_now(s, "*", IMAP_NO, "[SERVERBUG] Out of memory");
        free_command(s);
        return;
    }
    imap_arena_init(arena, arena + 1, size);
    s->arena = arena;
    const char *err = NULL;
    if (imap_parse_command(io->cmd.data, len, &io->parsed, arena, &err) < 0) {
        const char *tag = io->parsed.tag ? io->parsed.tag : "*";
        reply_now(s, tag, IMAP_BAD, err ? err : "Syntax error");
        free_command(s);
        return;
    }
    const struct imap_command *c = &io->parsed;
    snprintf(io->tag, sizeof io->tag, "%s", c->tag);
    const struct command_def *def = find_command(c->name);
    const char *bad = NULL;
    if (!def || (c->uid && !def->uid))
        bad = "Unknown command.";
    else if (!(def->states & (1u << s->state)))
        bad = s->state == IMAP_STATE_NOT_AUTH || def->states != ST_NA ? wrong_state(s)
                                                                      : "Already logged in.";
    if (bad) {
        reply_now(s, io->tag, IMAP_BAD, bad);
        free_command(s);
        return;
    }
    log_trace("imap[%s]: %s %s%s", s->id, io->tag, c->uid ? "UID " : "", c->name);
    s->cmd = c;
    io->in_command = true;
    conn_pause_read(s->conn);
    def->fn(s);
}

/* --- reading commands ------------------------------------------------------------------------------ */

/* The tag of a command line as far as it can be read, for replies to a
 * command that is refused before it is parsed. */
static void early_tag(const char *line, size_t len, char *out, size_t outlen)
{
    size_t n = 0;
    while (n < len && n < IMAP_TAG_MAX && line[n] > ' ' && line[n] < 0x7f &&
           !strchr("(){%*\"\\+", line[n]))
        n++;
    if (n == 0 || n == len || line[n] != ' ')
        snprintf(out, outlen, "*");
    else
        snprintf(out, outlen, "%.*s", (int)n, line);
}

static bool line_is_append(const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    if (!sp)
        return false;
    size_t rest = len - (size_t)(sp + 1 - line);
    return rest > 7 && strncasecmp(sp + 1, "APPEND ", 7) == 0;
}

/* A literal that is too big: refused before its octets come when the
 * client waits for "+", otherwise the octets are on their way and the
 * only way out is to close. */
static void refuse_literal(struct imap_session *s, bool non_sync)
{
    struct imap_io *io = s->io;
    char tag[IMAP_TAG_MAX + 1];
    early_tag(io->cmd.data, io->cmd.len, tag, sizeof tag);
    bool append = io->append && s->state != IMAP_STATE_NOT_AUTH;
    free_command(s);
    if (non_sync) {
        reply_now(s, tag, IMAP_BAD, "Literal too large.");
        bye(s, "Literal too large");
    } else if (append) {
        reply_now(s, tag, IMAP_NO, "[TOOBIG] Message too large.");
    } else {
        reply_now(s, tag, IMAP_BAD, "Literal too large.");
    }
}

static bool literal_fits(struct imap_session *s, uint64_t n)
{
    struct imap_io *io = s->io;
    bool append = io->append && s->state != IMAP_STATE_NOT_AUTH;
    uint64_t limit = append ? imap_append_limit(s) : IMAP_LITERAL_MAX;
    uint64_t total = append ? imap_append_limit(s) + IMAP_APPEND_EXTRA : IMAP_COMMAND_MAX;
    return n <= limit && io->cmd.len + n <= total;
}

static bool read_command_line(struct imap_session *s)
{
    struct imap_io *io = s->io;
    const char *line;
    size_t len, used;
    int r = conn_peek_line(s->conn, IMAP_LINE_MAX, &line, &len, &used, NULL);
    if (r == 0)
        return false;
    if (r < 0) {
        log_info("imap[%s]: %s: line too long, disconnecting", s->id, s->peer);
        free_command(s);
        imap_printf(s, "* BAD Line too long\r\n");
        session_close(s);
        return false;
    }
    if (io->cmd.len == 0) {
        io->append = line_is_append(line, len);
        if (len == 0) {
            conn_consume(s->conn, used);
            io->in += used;
            reply_now(s, "*", IMAP_BAD, "Empty command line.");
            return true;
        }
    }
    uint64_t n = 0;
    bool non_sync = false;
    int lit = imap_literal_suffix(line, len, &n, &non_sync);
    if (buf_append(&io->cmd, line, len) < 0 || buf_append(&io->cmd, "\r\n", 2) < 0) {
        free_command(s);
        bye(s, "Out of memory");
        return false;
    }
    conn_consume(s->conn, used);
    io->in += used;
    if (lit != 1) {
        dispatch(s);
        return true;
    }
    if (!literal_fits(s, n)) {
        refuse_literal(s, non_sync);
        return true;
    }
    if (!non_sync)
        imap_write(s, "+ Ready for literal data\r\n", 26);
    io->literal_left = n;
    if (n > 0)
        io->phase = PHASE_LITERAL;
    return true;
}

static bool read_literal(struct imap_session *s)
{
    struct imap_io *io = s->io;
    size_t have;
    const char *data = conn_input(s->conn, &have);
    size_t take = have < io->literal_left ? have : (size_t)io->literal_left;
    if (take == 0)
        return false;
    if (buf_append(&io->cmd, data, take) < 0) {
        free_command(s);
        bye(s, "Out of memory");
        return false;
    }
    conn_consume(s->conn, take);
    io->in += take;
    io->literal_left -= take;
    if (io->literal_left == 0)
        io->phase = PHASE_COMMAND;
    return true;
}

static bool can_read(const struct imap_session *s)
{
    const struct imap_io *io = s->io;
    if (!s->conn || io->jobs || io->waiting_output)
        return false;
    switch (io->phase) {
    case PHASE_COMMAND:
    case PHASE_LITERAL:
        return !io->in_command;
    case PHASE_SASL:
    case PHASE_IDLE:
        return true;
    default:
        return false;
    }
}

static void session_process(struct imap_session *s)
{
    struct imap_io *io = s->io;
    if (io->processing)
        return;
    io->processing = true;
    while (can_read(s)) {
        bool progress;
        if (io->phase == PHASE_SASL)
            progress = read_sasl(s);
        else if (io->phase == PHASE_IDLE)
            progress = read_idle(s);
        else if (io->phase == PHASE_LITERAL)
            progress = read_literal(s);
        else if (io->cmd.len == 0 && output_backlog(s))
            progress = false;
        else
            progress = read_command_line(s);
        if (!progress)
            break;
    }
    io->processing = false;
}

/* --- connection events --------------------------------------------------------------------------------- */

static void greet(struct imap_session *s)
{
    s->io->greeted = true;
    s->io->phase = PHASE_COMMAND;
    imap_printf(s, "* OK [CAPABILITY %s] posthorn ready.\r\n", capabilities(s));
}

static void on_closed(struct imap_session *s)
{
    struct imap_io *io = s->io;
    s->conn = NULL;
    if (io->watch) {
        mailnotify_unwatch(io->watch);
        io->watch = NULL;
    }
    void (*cont)(struct imap_session *, void *) = io->cont;
    if (cont) {
        /* The command waiting for output finishes now, into the void. */
        ev_timer_stop(s->srv->loop, &io->output_timer);
        io->waiting_output = false;
        io->cont = NULL;
        cont(s, io->cont_arg);
        return;
    }
    if (io->jobs)
        return;   /* freed when the job is back */
    session_free(s);
}

static void on_conn_event(struct conn *c, enum conn_event ev, void *arg)
{
    struct imap_session *s = arg;
    switch (ev) {
    case CONN_EV_READ:
        session_process(s);
        break;
    case CONN_EV_TLS_READY:
        log_info("imap[%s]: %s: TLS established, %s %s", s->id, s->peer, conn_tls_version(c),
                 conn_tls_cipher(c));
        if (!s->io->greeted)
            greet(s);
        s->io->phase = PHASE_COMMAND;
        if (s->srv->stopping)
            bye(s, "Server shutting down");
        else
            session_process(s);
        break;
    case CONN_EV_TIMEOUT:
        if (s->io->jobs || s->io->waiting_output)
            break; /* our own work is slow, not the client */
        log_info("imap[%s]: %s: idle timeout", s->id, s->peer);
        bye(s, "Autologout; idle for too long");
        break;
    case CONN_EV_CLOSED:
        if (s->io->refused) {
            free(s);
            break;
        }
        on_closed(s);
        break;
    }
}

static void accept_one(int fd, const struct sockaddr *peer, socklen_t peerlen,
                       struct server *srv, bool implicit_tls)
{
    const struct settings *set = srv->settings;
    struct imap_session *s = calloc(1, sizeof *s + sizeof *s->io);
    if (!s) {
        log_error("imap: out of memory accepting a connection");
        close(fd);
        return;
    }
    s->io = (struct imap_io *)(s + 1);
    SSL_CTX *ctx = implicit_tls ? tls_server_ctx(srv->tls) : NULL;
    struct conn *c = conn_new(srv->loop, fd, peer, peerlen, ctx, on_conn_event, s);
    if (!c) {
        free(s);
        return;
    }
    s->srv = srv;
    s->conn = c;
    s->state = IMAP_STATE_NOT_AUTH;
    random_hex(s->id, 8);
    snprintf(s->peer, sizeof s->peer, "%s", conn_peer_addr(c));
    struct imap_io *io = s->io;
    if (srv->stopping || !iplimit_acquire(s->peer, set->max_connections_per_ip,
                                          set->max_connections)) {
        log_info("imap[%s]: %s: refused, too many connections", s->id, s->peer);
        io->refused = true;
        if (implicit_tls) {
            conn_abort(c);  /* nothing can be said before the handshake */
        } else {
            conn_printf(c, "* BYE [UNAVAILABLE] Too many connections from %s\r\n", s->peer);
            conn_close(c);
        }
        return;
    }
    io->counted = true;
    ev_timer_init(&io->output_timer, on_output_timer, IMAP_OUTPUT_POLL, IMAP_OUTPUT_POLL);
    io->output_timer.data = s;
    io->next = sessions;
    if (sessions)
        sessions->io->prev = s;
    sessions = s;
    session_count++;
    log_info("imap[%s]: connect from %s:%u to %s:%u%s", s->id, s->peer, conn_peer_port(c),
             conn_local_addr(c), conn_local_port(c), implicit_tls ? " (TLS)" : "");
    conn_set_timeout(c, IMAP_IDLE_TIMEOUT);
    if (implicit_tls)
        io->phase = PHASE_TLS;   /* the greeting follows the handshake */
    else
        greet(s);
}

void imap_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server)
{
    accept_one(fd, peer, peerlen, server, false);
}

void imaps_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server)
{
    accept_one(fd, peer, peerlen, server, true);
}

void imap_shutdown(struct server *srv)
{
    srv->stopping = true;
    for (struct imap_session *s = sessions, *next; s; s = next) {
        next = s->io->next;
        struct imap_io *io = s->io;
        if (!s->conn || io->phase == PHASE_CLOSING || io->jobs)
            continue; /* answered, then closed, when its work completes */
        if (io->phase == PHASE_TLS) {
            /* Nothing can be said into a half-made handshake. */
            io->phase = PHASE_CLOSING;
            conn_abort(s->conn);
        } else if (!io->in_command || io->phase == PHASE_IDLE || io->phase == PHASE_SASL) {
            bye(s, "Server shutting down");
        }
        /* A command waiting for output ends with its reply, then BYE. */
    }
}

unsigned imap_session_count(void)
{
    return session_count;
}

void imap_abort_all(void)
{
    for (struct imap_session *s = sessions; s; s = s->io->next)
        if (s->conn && s->io->phase != PHASE_CLOSING) {
            s->io->phase = PHASE_CLOSING;
            conn_abort(s->conn);
        }
}
