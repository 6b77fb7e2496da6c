/* The POP3 server session. See pop3_server.h.
 *
 * A session is a small state machine driven by conn events: AUTHORIZATION
 * until a login succeeds and the maildrop is open, then TRANSACTION; QUIT
 * performs the UPDATE. Logins, opening the maildrop, reading messages and
 * the final expunge go to the worker pool; reading pauses meanwhile
 * (`busy`), so pipelined commands are answered in order. */
#include "pop3_server.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "auth.h"
#include "buf.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "mailindex.h"
#include "pop3_parse.h"

#define POP3_ERROR_LIMIT   10            /* -ERR replies before the session is dropped */
#define POP3_OUTPUT_HIGH   (1024 * 1024) /* pending output above which commands wait */
#define POP3_OUTPUT_POLL   0.02          /* seconds between checks while waiting */

enum phase {
    PHASE_COMMAND,       /* reading command lines */
    PHASE_SASL,          /* reading an AUTH PLAIN response line */
    PHASE_TLS,           /* STLS / implicit TLS handshake in progress */
    PHASE_CLOSING,       /* conn_close called; nothing more is read */
};

enum state { STATE_AUTHORIZATION, STATE_TRANSACTION };

struct pop3_session {
    struct server *srv;
    struct conn *conn;                 /* NULL once CONN_EV_CLOSED arrived */
    struct pop3_session *prev, *next;  /* all sessions, for SIGTERM */
    char id[9];
    char peer[64];
    bool counted;                      /* holds an iplimit slot */
    bool refused;                      /* over the connection limits */
    bool greeted;
    enum phase phase;
    enum state state;
    bool busy;                         /* a worker job or login is in flight */
    bool waiting_output;               /* paused until output drains */
    ev_timer output_timer;

    bool have_user;                    /* USER given, PASS expected */
    char user[POP3_USER_MAX + 1];

    /* TRANSACTION state. */
    char address[POP3_USER_MAX + 1];   /* the logged-in mailbox */
    bool locked;                       /* holds the mailbox lock */
    struct mailindex *ix;
    struct mailindex_view view;        /* the maildrop: msgs[i] is message i+1 */
    bool *deleted;
    size_t ndeleted;
    uint64_t deleted_size, total_size;

    unsigned errors, retrieved;
    char line[POP3_SASL_LINE_MAX + 1];
};

static struct pop3_session *sessions;
static unsigned session_count;

static void session_process(struct pop3_session *s);

/* --- the mailbox locks (RFC 1939 4: one session per maildrop) ------------- */

static char **locks;
static size_t nlocks, locks_cap;

static bool mailbox_lock(const char *address)
{
    for (size_t i = 0; i < nlocks; i++)
        if (strcmp(locks[i], address) == 0)
            return false;
    if (nlocks == locks_cap) {
        size_t cap = locks_cap ? locks_cap * 2 : 16;
        char **v = realloc(locks, cap * sizeof *v);
        if (!v)
            return false;
        locks = v;
        locks_cap = cap;
    }
    char *copy = strdup(address);
    if (!copy)
        return false;
    locks[nlocks++] = copy;
    return true;
}

static void mailbox_unlock(const char *address)
{
    for (size_t i = 0; i < nlocks; i++)
        if (strcmp(locks[i], address) == 0) {
            free(locks[i]);
            locks[i] = locks[--nlocks];
            return;
        }
}

/* --- small helpers ------------------------------------------------------------ */

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ')
            return false;
    return true;
}

static void session_close(struct pop3_session *s)
{
    if (s->phase == PHASE_CLOSING || !s->conn)
        return;
    s->phase = PHASE_CLOSING;
    conn_close(s->conn);
}

static void ok(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void ok(struct pop3_session *s, const char *fmt, ...)
{
    if (!s->conn || s->phase == PHASE_CLOSING)
        return;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    conn_printf(s->conn, "+OK %s\r\n", text);
}

/* An -ERR reply. When `counts`, it counts towards POP3_ERROR_LIMIT and the
 * session is dropped when that is reached. */
static void verr(struct pop3_session *s, bool counts, const char *fmt, va_list ap)
{
    if (!s->conn || s->phase == PHASE_CLOSING)
        return;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    conn_printf(s->conn, "-ERR %s\r\n", text);
    log_debug("pop3[%s]: %s: -ERR %s", s->id, s->peer, text);
    if (counts && ++s->errors >= POP3_ERROR_LIMIT) {
        log_info("pop3[%s]: %s: too many errors, disconnecting", s->id, s->peer);
        conn_printf(s->conn, "-ERR Too many errors, closing connection\r\n");
        session_close(s);
    }
}

static void err(struct pop3_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void err(struct pop3_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(s, true, fmt, ap);
    va_end(ap);
}

/* A refusal that says nothing bad about the client. */
static void err_nocount(struct pop3_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void err_nocount(struct pop3_session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(s, false, fmt, ap);
    va_end(ap);
}

static bool shut_down_if_stopping(struct pop3_session *s)
{
    if (!s->srv->stopping || s->phase == PHASE_CLOSING)
        return false;
    err_nocount(s, "[SYS/TEMP] Server shutting down, try again later");
    session_close(s);
    return true;
}

/* --- session lifetime ------------------------------------------------------------ */

static void index_close_work(void *arg)
{
    mailindex_close(arg);
}

/* Closing the index may touch SQLite: on the pool when possible. */
static void release_index(struct server *srv, struct mailindex *ix)
{
    if (!ix)
        return;
    if (workers_submit(srv->workers, index_close_work, NULL, ix) < 0)
        mailindex_close(ix);
}

static void maildrop_reset(struct pop3_session *s)
{
    release_index(s->srv, s->ix);
    s->ix = NULL;
    mailindex_view_free(&s->view);
    memset(&s->view, 0, sizeof s->view);
    free(s->deleted);
    s->deleted = NULL;
    s->ndeleted = 0;
    s->deleted_size = s->total_size = 0;
    if (s->locked)
        mailbox_unlock(s->address);
    s->locked = false;
}

static void session_free(struct pop3_session *s)
{
    maildrop_reset(s);
    ev_timer_stop(s->srv->loop, &s->output_timer);
    explicit_bzero(s->line, sizeof s->line);
    if (s->counted)
        iplimit_release(s->peer);
    if (s->prev)
        s->prev->next = s->next;
    else
        sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    session_count--;
    free(s);
}

static void session_suspend(struct pop3_session *s)
{
    s->busy = true;
    conn_pause_read(s->conn);
}

/* Back from the pool. Returns false when the session is gone (freed). */
static bool session_resume(struct pop3_session *s)
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

/* After a job's answer: go on with pipelined input, or end on SIGTERM. */
static void session_continue(struct pop3_session *s)
{
    if (!shut_down_if_stopping(s))
        session_process(s);
}

/* --- AUTHORIZATION ------------------------------------------------------------------ */

struct open_job {
    struct pop3_session *s;
    struct mailindex *ix;
    struct mailindex_view view;
    int rc;
    char err[256];
};

static void open_work(void *arg)
{
    struct open_job *j = arg;
    j->ix = mailindex_open(j->s->srv->store, j->s->address, j->err, sizeof j->err);
    if (!j->ix) {
        j->rc = -1;
        return;
    }
    j->rc = mailindex_sync(j->ix, NULL, &j->view, j->err, sizeof j->err);
    if (j->rc < 0) {
        mailindex_close(j->ix);
        j->ix = NULL;
    }
}

static void maildrop_opened(struct pop3_session *s, int rc, const char *why)
{
    if (rc == 0 && s->view.n > 0 && !(s->deleted = calloc(s->view.n, sizeof *s->deleted))) {
        rc = -1;
        why = "out of memory";
    }
    if (rc < 0) {
        log_error("pop3[%s]: %s: cannot open the mailbox of %s: %s", s->id, s->peer,
                  s->address, why);
        maildrop_reset(s);
        err_nocount(s, "[SYS/TEMP] Unable to open the mailbox, try again later");
        return;
    }
    s->state = STATE_TRANSACTION;
    for (size_t i = 0; i < s->view.n; i++)
        s->total_size += s->view.msgs[i].size;
    log_info("pop3[%s]: %s: login user=%s messages=%zu size=%llu", s->id, s->peer, s->address,
             s->view.n, (unsigned long long)s->total_size);
    ok(s, "Logged in, %zu messages (%llu octets)", s->view.n,
       (unsigned long long)s->total_size);
}

static void open_done(void *arg)
{
    struct open_job *j = arg;
    struct pop3_session *s = j->s;
    s->ix = j->ix;
    s->view = j->view;
    int rc = j->rc;
    char why[sizeof j->err];
    memcpy(why, j->err, sizeof why);
    free(j);
    if (!session_resume(s))
        return;
    maildrop_opened(s, rc, why);
    session_continue(s);
}

static void open_maildrop(struct pop3_session *s)
{
    struct open_job *j = calloc(1, sizeof *j);
    if (j)
        j->s = s;
    if (!j || workers_submit(s->srv->workers, open_work, open_done, j) < 0) {
        free(j);
        maildrop_reset(s);
        err_nocount(s, "[SYS/TEMP] Out of memory, try again later");
        return;
    }
    session_suspend(s);
}

static void login_done(void *arg, enum auth_result result, const char *address)
{
    struct pop3_session *s = arg;
    if (!session_resume(s))
        return;
    switch (result) {
    case AUTH_OK:
        snprintf(s->address, sizeof s->address, "%s", address);
        if (!mailbox_lock(s->address)) {
            err_nocount(s, "[IN-USE] Mailbox is locked by another POP3 session");
            break;
        }
        s->locked = true;
        open_maildrop(s);
        if (s->busy)
            return;
        break;
    case AUTH_FAILED:
        err(s, "[AUTH] Authentication failed");
        break;
    case AUTH_THROTTLED:
        err(s, "[SYS/TEMP] Too many failed logins from your address, try again later");
        break;
    case AUTH_TEMPFAIL:
        err_nocount(s, "[SYS/TEMP] Authentication is temporarily unavailable");
        break;
    }
    session_continue(s);
}

static void start_login(struct pop3_session *s, const char *user, const char *pass)
{
    if (auth_login_proto(s->srv, "pop3", s->peer, user, pass, login_done, s) < 0) {
        err_nocount(s, "[SYS/TEMP] Out of memory, try again later");
        return;
    }
    session_suspend(s);
}

/* RFC 2595 / DESIGN.md: credentials never cross a plaintext connection. */
static bool require_tls(struct pop3_session *s)
{
    if (conn_is_tls(s->conn))
        return true;
    err(s, "[AUTH] Plaintext authentication disallowed on non-secure connections, use STLS first");
    return false;
}

static void cmd_user(struct pop3_session *s, const struct pop3_command *cmd)
{
    const char *reason;
    if (!require_tls(s))
        return;
    if (pop3_parse_user(cmd->args, cmd->args_len, s->user, sizeof s->user, &reason) < 0) {
        s->have_user = false;
        err(s, "%s", reason);
        return;
    }
    s->have_user = true;
    ok(s, "Send your password");
}

static void cmd_pass(struct pop3_session *s, const struct pop3_command *cmd)
{
    char pass[POP3_PASS_MAX + 1];
    const char *reason;
    if (!require_tls(s))
        return;
    if (!s->have_user) {
        err(s, "No user name given, send USER first");
        return;
    }
    s->have_user = false;
    if (pop3_parse_pass(cmd->args, cmd->args_len, pass, sizeof pass, &reason) < 0) {
        err(s, "%s", reason);
        return;
    }
    start_login(s, s->user, pass);
    explicit_bzero(pass, sizeof pass);
}

static void sasl_plain(struct pop3_session *s, const char *b64, size_t len)
{
    char user[POP3_USER_MAX + 1], pass[POP3_PASS_MAX + 1];
    const char *reason;
    if (sasl_plain_parse(b64, len, user, sizeof user, pass, sizeof pass, &reason) < 0) {
        err(s, "%s", reason);
        return;
    }
    start_login(s, user, pass);
    explicit_bzero(pass, sizeof pass);
}

static void cmd_auth(struct pop3_session *s, const struct pop3_command *cmd)
{
    const char *mech, *ir, *reason;
    size_t mech_len, ir_len;
    s->have_user = false;
    if (!require_tls(s))
        return;
    if (blank(cmd->args, cmd->args_len)) {
        /* The pre-RFC 5034 listing some clients still ask for. */
        conn_printf(s->conn, "+OK Supported mechanisms follow\r\nPLAIN\r\n.\r\n");
        return;
    }
    if (pop3_parse_auth(cmd->args, cmd->args_len, &mech, &mech_len, &ir, &ir_len, &reason) < 0) {
        err(s, "%s", reason);
        return;
    }
    if (mech_len != 5 || strncasecmp(mech, "PLAIN", 5) != 0) {
        err(s, "Unsupported authentication mechanism");
        return;
    }
    if (ir) {
        sasl_plain(s, ir, ir_len);
        return;
    }
    s->phase = PHASE_SASL;
    conn_printf(s->conn, "+ \r\n");
}

static void sasl_response(struct pop3_session *s, const char *line, size_t len)
{
    s->phase = PHASE_COMMAND;
    if (len == 1 && line[0] == '*') {
        err(s, "Authentication cancelled");
        return;
    }
    sasl_plain(s, line, len);
}

static void cmd_stls(struct pop3_session *s)
{
    if (conn_is_tls(s->conn)) {
        err(s, "TLS is already active");
        return;
    }
    if (s->state != STATE_AUTHORIZATION) {
        err(s, "STLS is only valid before login");
        return;
    }
    ok(s, "Begin TLS negotiation");
    /* RFC 2595 4: forget what was said before TLS. */
    s->have_user = false;
    s->phase = PHASE_TLS;
    if (conn_starttls(s->conn, tls_server_ctx(s->srv->tls)) < 0)
        session_close(s);
}

static void cmd_capa(struct pop3_session *s)
{
    bool tls = conn_is_tls(s->conn);
    bool auth = s->state == STATE_AUTHORIZATION;
    conn_printf(s->conn, "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
                         "AUTH-RESP-CODE\r\nPIPELINING\r\n");
    if (auth && tls)
        conn_printf(s->conn, "USER\r\nSASL PLAIN\r\n");
    if (auth && !tls)
        conn_printf(s->conn, "STLS\r\n");
    conn_printf(s->conn, "IMPLEMENTATION posthorn\r\n.\r\n");
}

/* --- TRANSACTION: the maildrop listing ------------------------------------------------ */

/* Message `num`, or NULL after an -ERR reply. */
static const struct mailindex_msg *message(struct pop3_session *s, uint32_t num)
{
    if (num == 0 || num > s->view.n) {
        err(s, "No such message, only %zu messages in maildrop", s->view.n);
        return NULL;
    }
    if (s->deleted[num - 1]) {
        err(s, "Message %u already deleted", num);
        return NULL;
    }
    return &s->view.msgs[num - 1];
}

static size_t live_count(const struct pop3_session *s)
{
    return s->view.n - s->ndeleted;
}

static uint64_t live_size(const struct pop3_session *s)
{
    return s->total_size - s->deleted_size;
}

static void cmd_stat(struct pop3_session *s)
{
    ok(s, "%zu %llu", live_count(s), (unsigned long long)live_size(s));
}

static void write_uidl(struct pop3_session *s, size_t num, const struct mailindex_msg *m,
                       bool single)
{
    conn_printf(s->conn, "%s%zu %08X%08X\r\n", single ? "+OK " : "", num, (unsigned)m->uid,
                (unsigned)s->view.uidvalidity);
}

static void cmd_list_or_uidl(struct pop3_session *s, const struct pop3_command *cmd, bool uidl)
{
    bool given;
    uint32_t num = 0;
    const char *reason;
    if (pop3_parse_msgnum(cmd->args, cmd->args_len, true, &given, &num, &reason) < 0) {
        err(s, "%s", reason);
        return;
    }
    if (given) {
        const struct mailindex_msg *m = message(s, num);
        if (!m)
            return;
        if (uidl)
            write_uidl(s, num, m, true);
        else
            ok(s, "%u %llu", num, (unsigned long long)m->size);
        return;
    }
    if (uidl)
        ok(s, "Unique-ID listing follows");
    else
        ok(s, "%zu messages (%llu octets)", live_count(s), (unsigned long long)live_size(s));
    for (size_t i = 0; i < s->view.n; i++) {
        if (s->deleted[i])
            continue;
        if (uidl)
            write_uidl(s, i + 1, &s->view.msgs[i], false);
        else
            conn_printf(s->conn, "%zu %llu\r\n", i + 1, (unsigned long long)s->view.msgs[i].size);
    }
    conn_printf(s->conn, ".\r\n");
}

static void cmd_dele(struct pop3_session *s, const struct pop3_command *cmd)
{
    bool given;
    uint32_t num;
    const char *reason;
    if (pop3_parse_msgnum(cmd->args, cmd->args_len, false, &given, &num, &reason) < 0) {
        err(s, "%s", reason);
        return;
    }
    const struct mailindex_msg *m = message(s, num);
    if (!m)
        return;
    s->deleted[num - 1] = true;
    s->ndeleted++;
    s->deleted_size += m->size;
    ok(s, "Message %u deleted", num);
}

static void cmd_rset(struct pop3_session *s)
{
    if (s->view.n)
        memset(s->deleted, 0, s->view.n * sizeof *s->deleted);
    s->ndeleted = 0;
    s->deleted_size = 0;
    ok(s, "Maildrop has %zu messages (%llu octets)", s->view.n,
       (unsigned long long)s->total_size);
}

/* --- TRANSACTION: RETR and TOP --------------------------------------------------------- */

struct read_job {
    struct pop3_session *s;
    uint32_t num, uid;
    bool top;
    uint32_t lines;          /* TOP's body line count */
    struct buf msg;
    int rc;
    char err[256];
};

static void read_work(void *arg)
{
    struct read_job *j = arg;
    j->rc = mailindex_read(j->s->ix, NULL, j->uid, &j->msg, j->err, sizeof j->err);
}

/* TOP: the header, the blank line and `lines` lines of the body. */
static size_t top_length(const char *msg, size_t len, uint32_t lines)
{
    size_t pos;
    if (len >= 2 && msg[0] == '\r' && msg[1] == '\n') {
        pos = 2;                                 /* no header at all */
    } else {
        const char *end = memmem(msg, len, "\r\n\r\n", 4);
        if (!end)
            return len;                          /* all header */
        pos = (size_t)(end - msg) + 4;
    }
    for (uint32_t i = 0; i < lines && pos < len; i++) {
        const char *nl = memchr(msg + pos, '\n', len - pos);
        pos = nl ? (size_t)(nl - msg) + 1 : len;
    }
    return pos;
}

/* Sends msg[0..len) as a multi-line response body: dot-stuffed, ending
 * with CRLF and the terminating ".". */
static void send_stuffed(struct conn *c, const char *msg, size_t len)
{
    size_t start = 0, pos = 0;
    while (pos < len) {
        if (msg[pos] == '.') {
            conn_write(c, msg + start, pos - start);
            conn_write(c, ".", 1);
            start = pos;
        }
        const char *nl = memchr(msg + pos, '\n', len - pos);
        pos = nl ? (size_t)(nl - msg) + 1 : len;
    }
    conn_write(c, msg + start, len - start);
    if (len > 0 && msg[len - 1] != '\n')
        conn_write(c, "\r\n", 2);
    conn_write(c, ".\r\n", 3);
}

static void read_done(void *arg)
{
    struct read_job *j = arg;
    struct pop3_session *s = j->s;
    if (session_resume(s)) {
        if (j->rc < 0) {
            log_error("pop3[%s]: %s: cannot read message %u (uid %u) of %s: %s", s->id,
                      s->peer, j->num, j->uid, s->address, j->err);
            err_nocount(s, "Message %u could not be read, it may have been removed", j->num);
        } else if (j->top) {
            ok(s, "Top of message %u follows", j->num);
            send_stuffed(s->conn, j->msg.data, top_length(j->msg.data, j->msg.len, j->lines));
        } else {
            s->retrieved++;
            ok(s, "%zu octets", j->msg.len);
            send_stuffed(s->conn, j->msg.data, j->msg.len);
        }
    } else {
        s = NULL;
    }
    buf_free(&j->msg);
    free(j);
    if (s)
        session_continue(s);
}

static void cmd_retr_or_top(struct pop3_session *s, const struct pop3_command *cmd, bool top)
{
    uint32_t num, lines = 0;
    bool given;
    const char *reason;
    int rc = top ? pop3_parse_top(cmd->args, cmd->args_len, &num, &lines, &reason)
                 : pop3_parse_msgnum(cmd->args, cmd->args_len, false, &given, &num, &reason);
    if (rc < 0) {
        err(s, "%s", reason);
        return;
    }
    const struct mailindex_msg *m = message(s, num);
    if (!m)
        return;
    struct read_job *j = calloc(1, sizeof *j);
    if (!j) {
        err_nocount(s, "[SYS/TEMP] Out of memory, try again later");
        return;
    }
    /* Filled in before the job can start. */
    j->s = s;
    j->num = num;
    j->uid = m->uid;
    j->top = top;
    j->lines = lines;
    if (workers_submit(s->srv->workers, read_work, read_done, j) < 0) {
        free(j);
        err_nocount(s, "[SYS/TEMP] Out of memory, try again later");
        return;
    }
    session_suspend(s);
}

/* --- QUIT and UPDATE ----------------------------------------------------------------------- */

struct expunge_job {
    struct pop3_session *s;
    uint32_t *uids;
    size_t n;
    long removed;
    char err[256];
};

static void expunge_work(void *arg)
{
    struct expunge_job *j = arg;
    j->removed = mailindex_expunge(j->s->ix, NULL, j->uids, j->n, j->err, sizeof j->err);
}

static void expunge_done(void *arg)
{
    struct expunge_job *j = arg;
    struct pop3_session *s = j->s;
    if (j->removed < 0)
        log_error("pop3[%s]: %s: UPDATE of %s failed: %s", s->id, s->peer, s->address, j->err);
    else
        log_info("pop3[%s]: %s: UPDATE of %s: %ld of %zu messages deleted", s->id, s->peer,
                 s->address, j->removed, j->n);
    long removed = j->removed;
    size_t n = j->n;
    free(j->uids);
    free(j);
    if (!session_resume(s))
        return;
    if (removed < 0)
        err_nocount(s, "[SYS/TEMP] Deleted messages could not be removed, try again later");
    else
        ok(s, "posthorn POP3 server signing off (%zu messages deleted)", n);
    session_close(s);
}

static void cmd_quit(struct pop3_session *s)
{
    if (s->state != STATE_TRANSACTION || s->ndeleted == 0) {
        ok(s, "posthorn POP3 server signing off");
        session_close(s);
        return;
    }
    struct expunge_job *j = calloc(1, sizeof *j);
    if (j)
        j->uids = malloc(s->ndeleted * sizeof *j->uids);
    if (!j || !j->uids) {
        if (j)
            free(j);
        err_nocount(s, "[SYS/TEMP] Out of memory, nothing deleted");
        session_close(s);
        return;
    }
    j->s = s;
    for (size_t i = 0; i < s->view.n; i++)
        if (s->deleted[i])
            j->uids[j->n++] = s->view.msgs[i].uid;
    if (workers_submit(s->srv->workers, expunge_work, expunge_done, j) < 0) {
        free(j->uids);
        free(j);
        err_nocount(s, "[SYS/TEMP] Out of memory, nothing deleted");
        session_close(s);
        return;
    }
    session_suspend(s);
}

/* --- dispatch ------------------------------------------------------------------------------ */

static bool no_args(struct pop3_session *s, const struct pop3_command *cmd)
{
    if (blank(cmd->args, cmd->args_len))
        return true;
    err(s, "%s takes no arguments", pop3_verb_name(cmd->verb));
    return false;
}

static void handle_authorization(struct pop3_session *s, const struct pop3_command *cmd)
{
    switch (cmd->verb) {
    case POP3_USER: cmd_user(s, cmd); break;
    case POP3_PASS: cmd_pass(s, cmd); break;
    case POP3_AUTH: cmd_auth(s, cmd); break;
    case POP3_APOP: err(s, "APOP is not supported"); break;
    default: err(s, "%s is only valid after login", pop3_verb_name(cmd->verb)); break;
    }
}

static void handle_transaction(struct pop3_session *s, const struct pop3_command *cmd)
{
    switch (cmd->verb) {
    case POP3_STAT: if (no_args(s, cmd)) cmd_stat(s); break;
    case POP3_LIST: cmd_list_or_uidl(s, cmd, false); break;
    case POP3_UIDL: cmd_list_or_uidl(s, cmd, true); break;
    case POP3_RETR: cmd_retr_or_top(s, cmd, false); break;
    case POP3_TOP:  cmd_retr_or_top(s, cmd, true); break;
    case POP3_DELE: cmd_dele(s, cmd); break;
    case POP3_RSET: if (no_args(s, cmd)) cmd_rset(s); break;
    case POP3_NOOP: if (no_args(s, cmd)) ok(s, "Nothing to do"); break;
    default: err(s, "Already logged in"); break;
    }
}

static void handle_command(struct pop3_session *s, const char *line, size_t len)
{
    struct pop3_command cmd;
    if (memchr(line, '\0', len) || pop3_parse_command(line, len, &cmd) < 0) {
        err(s, "Unknown command");
        return;
    }
    log_trace("pop3[%s]: command %s", s->id, pop3_verb_name(cmd.verb));
    if (cmd.verb != POP3_QUIT && shut_down_if_stopping(s))
        return;
    if (cmd.verb != POP3_USER && cmd.verb != POP3_PASS)
        s->have_user = false;   /* RFC 1939: PASS must follow USER */
    switch (cmd.verb) {
    case POP3_CAPA: if (no_args(s, &cmd)) cmd_capa(s); break;
    case POP3_QUIT: if (no_args(s, &cmd)) cmd_quit(s); break;
    case POP3_STLS: if (no_args(s, &cmd)) cmd_stls(s); break;
    default:
        if (s->state == STATE_AUTHORIZATION)
            handle_authorization(s, &cmd);
        else
            handle_transaction(s, &cmd);
        break;
    }
}

/* --- input ------------------------------------------------------------------------------- */

static bool process_line(struct pop3_session *s)
{
    size_t max = s->phase == PHASE_SASL ? POP3_SASL_LINE_MAX : POP3_LINE_MAX;
    const char *line;
    size_t len, used;
    int r = conn_peek_line(s->conn, max + 2, &line, &len, &used, NULL);
    if (r == 0)
        return false;
    if (r < 0 || len > max) {
        log_info("pop3[%s]: %s: line too long, disconnecting", s->id, s->peer);
        conn_printf(s->conn, "-ERR line too long\r\n");
        session_close(s);
        return false;
    }
    /* Copy before consuming: STLS drops the input. */
    memcpy(s->line, line, len);
    s->line[len] = '\0';
    conn_consume(s->conn, used);
    if (s->phase == PHASE_SASL)
        sasl_response(s, s->line, len);
    else
        handle_command(s, s->line, len);
    explicit_bzero(s->line, len);   /* it may have held a password */
    return true;
}

static void on_output_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct pop3_session *s = w->data;
    if (s->conn && conn_output_pending(s->conn) > POP3_OUTPUT_HIGH)
        return;
    ev_timer_stop(loop, w);
    s->waiting_output = false;
    if (s->conn && s->phase != PHASE_CLOSING && !s->busy) {
        conn_resume_read(s->conn);
        session_process(s);
    }
}

/* A client that pipelines RETRs without reading the answers: stop taking
 * commands until the output has drained below the mark. */
static bool wait_for_output(struct pop3_session *s)
{
    if (conn_output_pending(s->conn) <= POP3_OUTPUT_HIGH)
        return false;
    log_debug("pop3[%s]: %zu octets of output pending, pausing commands", s->id,
              conn_output_pending(s->conn));
    s->waiting_output = true;
    conn_pause_read(s->conn);
    ev_timer_set(&s->output_timer, POP3_OUTPUT_POLL, POP3_OUTPUT_POLL);
    ev_timer_start(s->srv->loop, &s->output_timer);
    return true;
}

static void session_process(struct pop3_session *s)
{
    while (s->conn && !s->busy && !s->waiting_output &&
           (s->phase == PHASE_COMMAND || s->phase == PHASE_SASL)) {
        if (wait_for_output(s) || !process_line(s))
            return;
    }
}

/* --- connection events ------------------------------------------------------------------- */

static void greet(struct pop3_session *s)
{
    s->greeted = true;
    s->phase = PHASE_COMMAND;
    ok(s, "posthorn POP3 ready");
}

static void on_conn_event(struct conn *c, enum conn_event ev, void *arg)
{
    struct pop3_session *s = arg;
    switch (ev) {
    case CONN_EV_READ:
        session_process(s);
        break;
    case CONN_EV_TLS_READY:
        log_info("pop3[%s]: %s: TLS established, %s %s", s->id, s->peer, conn_tls_version(c),
                 conn_tls_cipher(c));
        if (!s->greeted)
            greet(s);
        s->phase = PHASE_COMMAND;
        if (!shut_down_if_stopping(s))
            session_process(s);
        break;
    case CONN_EV_TIMEOUT:
        if (s->busy)
            break; /* our own work is slow, not the client */
        log_info("pop3[%s]: %s: idle timeout", s->id, s->peer);
        err_nocount(s, "Disconnected for inactivity");
        session_close(s);
        break;
    case CONN_EV_CLOSED:
        if (s->refused) {
            free(s);
            break;
        }
        log_info("pop3[%s]: disconnect from %s user=%s retrieved=%u errors=%u", s->id, s->peer,
                 s->state == STATE_TRANSACTION ? s->address : "-", s->retrieved, s->errors);
        s->conn = NULL;
        if (!s->busy)
            session_free(s);
        break;
    }
}

static void accept_one(int fd, const struct sockaddr *peer, socklen_t peerlen,
                       struct server *srv, bool implicit_tls)
{
    const struct settings *set = srv->settings;
    struct pop3_session *s = calloc(1, sizeof *s);
    if (!s) {
        log_error("pop3: out of memory accepting a connection");
        close(fd);
        return;
    }
    SSL_CTX *ctx = implicit_tls ? tls_server_ctx(srv->tls) : NULL;
    struct conn *c = conn_new(srv->loop, fd, peer, peerlen, ctx, on_conn_event, s);
    if (!c) {
        free(s);
        return;
    }
    s->srv = srv;
    s->conn = c;
    random_hex(s->id, 8);
    snprintf(s->peer, sizeof s->peer, "%s", conn_peer_addr(c));
    if (srv->stopping || !iplimit_acquire(s->peer, set->max_connections_per_ip,
                                          set->max_connections)) {
        log_info("pop3[%s]: %s: refused, too many connections", s->id, s->peer);
        s->refused = true;
        if (implicit_tls) {
            conn_abort(c);  /* nothing can be said before the handshake */
        } else {
            conn_printf(c, "-ERR [SYS/TEMP] Too many connections from %s\r\n", s->peer);
            conn_close(c);
        }
        return;
    }
    s->counted = true;
    ev_timer_init(&s->output_timer, on_output_timer, POP3_OUTPUT_POLL, POP3_OUTPUT_POLL);
    s->output_timer.data = s;
    s->next = sessions;
    if (sessions)
        sessions->prev = s;
    sessions = s;
    session_count++;
    log_info("pop3[%s]: connect from %s:%u to %s:%u%s", s->id, s->peer, conn_peer_port(c),
             conn_local_addr(c), conn_local_port(c), implicit_tls ? " (TLS)" : "");
    conn_set_timeout(c, POP3_IDLE_TIMEOUT);
    if (implicit_tls)
        s->phase = PHASE_TLS;   /* the greeting follows the handshake */
    else
        greet(s);
}

void pop3_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server)
{
    accept_one(fd, peer, peerlen, server, false);
}

void pop3s_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server)
{
    accept_one(fd, peer, peerlen, server, true);
}

void pop3_shutdown(struct server *srv)
{
    srv->stopping = true;
    for (struct pop3_session *s = sessions, *next; s; s = next) {
        next = s->next;
        if (s->busy || !s->conn || s->phase == PHASE_CLOSING)
            continue; /* answered, then closed, when its work completes */
        if (s->phase == PHASE_TLS) {
            /* Nothing can be said into a half-made handshake. */
            s->phase = PHASE_CLOSING;
            conn_abort(s->conn);
        } else {
            shut_down_if_stopping(s);
        }
    }
}

unsigned pop3_session_count(void)
{
    return session_count;
}

void pop3_abort_all(void)
{
    for (struct pop3_session *s = sessions; s; s = s->next)
        if (s->conn && s->phase != PHASE_CLOSING) {
            s->phase = PHASE_CLOSING;
            conn_abort(s->conn);
        }
}
