#include "mta.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "conn.h"
#include "dns.h"
#include "listener.h"
#include "log.h"
#include "smtp_parse.h"

/* Timeouts, RFC 5321 4.5.3.2. The body timeout is per chunk: it is
 * renewed while output keeps draining (see on_timeout). */
#define T_CONNECT   30.0
#define T_GREETING  300.0
#define T_COMMAND   300.0    /* EHLO, STARTTLS, AUTH, MAIL, RCPT */
#define T_DATA_INIT 120.0
#define T_CHUNK     180.0
#define T_FINAL     600.0    /* after the final dot */

#define REPLY_LINE_MAX 2048        /* RFC 5321 says 512; be lenient */
#define REPLY_TOTAL_MAX (64 * 1024)
#define MAX_HOSTS 32               /* MX hosts tried per attempt */
#define MAX_ADDRS 16               /* addresses per host */

enum state {
    S_DNS, S_CONNECTING, S_TLS_IMPLICIT, S_GREETING, S_EHLO, S_HELO, S_STARTTLS, S_TLS,
    S_AUTH_PLAIN, S_AUTH_LOGIN_USER, S_AUTH_LOGIN_PASS, S_AUTH_LOGIN_DONE,
    S_MAIL, S_RCPT, S_DATA, S_BODY, S_QUIT,
};

struct host {
    char name[DNS_NAME_MAX + 1];
    uint16_t pref;
};

struct ext {
    bool pipelining, starttls, eightbit, smtputf8, dsn, auth_plain, auth_login, size_ok;
    uint64_t size;   /* 0: no limit */
};

struct reply {
    int code;
    char text[sizeof ((struct mta_rcpt_result *)0)->reply];
    size_t total;
    unsigned lines;
};

struct attempt {
    struct server *srv;
    struct mta_job job;
    struct route route;
    mta_done_fn done;
    void *arg;
    struct mta_rcpt_result *res;
    bool *final;              /* per rcpt: outcome decided in this attempt */
    bool *accepted;           /* per rcpt: RCPT got 2xx in the current session */
    size_t *order;            /* rcpts sent in this session, in order */
    size_t nsent, nreplied, naccepted;

    struct host hosts[MAX_HOSTS];
    size_t nhosts, host_i;
    struct sockaddr_storage addrs[MAX_ADDRS];
    size_t naddrs, addr_i;
    bool tried_connect;       /* some address was not our own */
    bool saw_loop;

    enum state st;
    int fd;
    ev_io cio;
    ev_timer ctimer;
    ev_timer finisher;
    struct conn *c;
    char peer[INET6_ADDRSTRLEN];
    char remote[300];         /* "host[ip]" */
    struct ext ext;
    struct reply rep;
    bool tls_up, authed, mail_sent, helo_tried, skip_starttls;
    bool body8bit, needs_utf8;
    size_t last_pending;      /* output left at the previous chunk timeout */
    bool drained;             /* the whole body is out: waiting for the final reply */

    enum mta_status last_status;   /* for recipients when no host answered */
    char last_reply[sizeof ((struct mta_rcpt_result *)0)->reply];
    char last_enhanced[16];

    size_t cur_addr;               /* index of the connected address */
    size_t plain_host, plain_addr; /* the address retried without STARTTLS */
    bool implicit_mx;              /* no MX: the domain itself is the host */
    bool aborting, finishing;
    struct attempt *live_prev, *live_next;
};

static unsigned active_attempts;
static struct attempt *live;       /* attempts in flight, for mta_abort_all */

#define ABORT_REPLY "451 4.3.2 delivery interrupted: the mail server is shutting down"

static void next_address(struct attempt *a);
static void next_host(struct attempt *a);

/* ---- client TLS contexts, built once per process ---- */

static SSL_CTX *client_ctx(bool verify)
{
    static SSL_CTX *ctx[2];
    SSL_CTX **slot = &ctx[verify ? 1 : 0];
    if (*slot)
        return *slot;
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c)
        return NULL;
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (verify) {
        if (SSL_CTX_set_default_verify_paths(c) != 1)
            log_warn("mta: cannot load the system CA store");
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    } else {
        /* Port 25 norm: encrypt when possible, accept any certificate. */
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    }
    *slot = c;
    return c;
}

/* ---- small helpers ---- */

/* Control characters and non-ASCII from the remote are replaced, so that
 * replies are safe in logs and DSNs. */
static void sanitize_append(char *dst, size_t dstlen, const char *src, size_t len)
{
    size_t have = strlen(dst);
    for (size_t i = 0; i < len && have + 1 < dstlen; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[have++] = (ch < 0x20 || ch >= 0x7f) ? '?' : (char)ch;
    }
    dst[have] = '\0';
}

/* The enhanced code at the start of text ("5.1.1 ..."), if it matches the
 * reply's class; else derived from the code ("5.0.0"). */
static void enhanced_of(int code, const char *text, char *out, size_t outlen)
{
    const char *p = text;
    if (p[0] - '0' == code / 100 && p[1] == '.') {
        size_t i = 2, dots = 1, digits = 0;
        for (; p[i] && p[i] != ' ' && i < 12; i++) {
            if (p[i] == '.' && digits > 0) {
                dots++;
                digits = 0;
            } else if (p[i] >= '0' && p[i] <= '9' && digits < 3) {
                digits++;
            } else {
                break;
            }
        }
        if (dots == 2 && digits > 0 && (p[i] == ' ' || p[i] == '\0')) {
            snprintf(out, outlen, "%.*s", (int)i, p);
            return;
        }
    }
    snprintf(out, outlen, "%d.0.0", code / 100 >= 2 && code / 100 <= 5 ? code / 100 : 4);
}

static enum mta_status status_of(int code)
{
    if (code >= 200 && code < 300)
        return MTA_DELIVERED;
    return code >= 500 && code < 600 ? MTA_PERMFAIL : MTA_TEMPFAIL;
}

static const char *status_word(enum mta_status s)
{
    return s == MTA_DELIVERED ? "sent" : s == MTA_PERMFAIL ? "bounced" : "deferred";
}

static void set_result(struct attempt *a, size_t i, enum mta_status st, const char *reply,
                       const char *enhanced)
{
    struct mta_rcpt_result *r = &a->res[i];
    r->status = st;
    snprintf(r->reply, sizeof r->reply, "%s", reply);
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced);
    snprintf(r->remote, sizeof r->remote, "%s", a->remote);
    r->remote_dsn = st == MTA_DELIVERED && a->ext.dsn;
    a->final[i] = true;
    log_info("mta[%s]: %s: %s:%u <%s> %s %s", a->job.log_id ? a->job.log_id : "-",
             a->job.rcpt_domain, a->remote[0] ? a->remote : "-", (unsigned)a->route.port,
             a->job.rcpts[i], status_word(st), reply);
}

/* The current reply as a result for recipient i. */
static void set_from_reply(struct attempt *a, size_t i)
{
    char enh[16];
    enhanced_of(a->rep.code, a->rep.text + (strlen(a->rep.text) > 4 ? 4 : 0), enh, sizeof enh);
    enum mta_status st = status_of(a->rep.code);
    set_result(a, i, st, a->rep.text, enh);
}

/* Every recipient not decided yet gets this outcome. */
static void set_all_open(struct attempt *a, enum mta_status st, const char *reply,
                         const char *enhanced)
{
    for (size_t i = 0; i < a->job.nrcpts; i++)
        if (!a->final[i])
            set_result(a, i, st, reply, enhanced);
}

static bool all_final(const struct attempt *a)
{
    for (size_t i = 0; i < a->job.nrcpts; i++)
        if (!a->final[i])
            return false;
    return true;
}

/* A failure of a host or connection before any transaction: remembered
 * for the recipients in case no other host does better. */
static void note_failure(struct attempt *a, enum mta_status st, const char *enhanced,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void note_failure(struct attempt *a, enum mta_status st, const char *enhanced,
                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->last_reply, sizeof a->last_reply, fmt, ap);
    va_end(ap);
    a->last_status = st;
    snprintf(a->last_enhanced, sizeof a->last_enhanced, "%s", enhanced);
    log_info("mta[%s]: %s: %s:%u %s %s", a->job.log_id ? a->job.log_id : "-",
             a->job.rcpt_domain, a->remote[0] ? a->remote : "-",
             (unsigned)a->route.port, status_word(st), a->last_reply);
}

/* ---- finishing ---- */

static void free_attempt(struct attempt *a)
{
    free(a->res);
    free(a->final);
    free(a->accepted);
    free(a->order);
    free(a);
}

static void live_add(struct attempt *a)
{
    a->live_next = live;
    if (live)
        live->live_prev = a;
    live = a;
}

static void live_remove(struct attempt *a)
{
    if (a->live_prev)
        a->live_prev->live_next = a->live_next;
    else
        live = a->live_next;
    if (a->live_next)
        a->live_next->live_prev = a->live_prev;
}

static void on_finish(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct attempt *a = w->data;
    active_attempts--;
    live_remove(a);
    a->done(a->arg, a->res, a->job.nrcpts);
    free_attempt(a);
}

/* Ends the attempt: undecided recipients get the last failure. done runs
 * from the loop, never from inside mta_deliver or a DNS call. */
static void finish(struct attempt *a)
{
    a->finishing = true;
    a->remote[0] = '\0';
    if (!a->last_reply[0]) {
        snprintf(a->last_reply, sizeof a->last_reply, "451 4.4.0 no host could be reached");
        snprintf(a->last_enhanced, sizeof a->last_enhanced, "4.4.0");
    }
    set_all_open(a, a->last_status, a->last_reply, a->last_enhanced);
    ev_timer_init(&a->finisher, on_finish, 0., 0.);
    a->finisher.data = a;
    ev_timer_start(a->srv->loop, &a->finisher);
}

/* Ends an aborted attempt that has no connection open. */
static void finish_aborted(struct attempt *a)
{
    a->last_status = MTA_TEMPFAIL;
    snprintf(a->last_reply, sizeof a->last_reply, "%s", ABORT_REPLY);
    snprintf(a->last_enhanced, sizeof a->last_enhanced, "4.3.2");
    finish(a);
}

/* ---- the SMTP dialogue ---- */

static void send_cmd(struct attempt *a, enum state st, double timeout, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_cmd(struct attempt *a, enum state st, double timeout, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vprintf(a->c, fmt, ap);
    va_end(ap);
    a->st = st;
    conn_set_timeout(a->c, timeout);
}

/* Politely ends the session; CONN_EV_CLOSED continues the attempt. */
static void quit(struct attempt *a)
{
    conn_write(a->c, "QUIT\r\n", 6);
    a->st = S_QUIT;
    conn_close(a->c);
}

/* A session-level failure. Before MAIL the next address or host may do
 * better; after it, the open recipients are decided (temporary or
 * permanent) and no other host is tried in this attempt. */
static void session_fail(struct attempt *a, enum mta_status st, const char *enhanced,
                         const char *reply, bool polite)
{
    if (a->mail_sent)
        set_all_open(a, st, reply, enhanced);
    else
        note_failure(a, st, enhanced, "%s", reply);
    if (polite) {
        quit(a);
    } else {
        a->st = S_QUIT;   /* the reason is recorded; the close adds nothing */
        conn_abort(a->c);
    }
}

static void fail_reply(struct attempt *a, const char *what)
{
    char msg[sizeof a->last_reply];
    snprintf(msg, sizeof msg, "%.440s (%.60s)", a->rep.text, what);
    char enh[16];
    enhanced_of(a->rep.code, a->rep.text + 4, enh, sizeof enh);
    enum mta_status st = a->rep.code >= 500 && a->rep.code < 600 ? MTA_PERMFAIL : MTA_TEMPFAIL;
    /* Before a transaction a refusal says nothing about the recipients:
     * another host or a later attempt may do better. */
    if (!a->mail_sent)
        st = MTA_TEMPFAIL;
    session_fail(a, st, enh, msg, true);
}

static void send_ehlo(struct attempt *a)
{
    a->ext = (struct ext){ 0 };
    send_cmd(a, S_EHLO, T_COMMAND, "EHLO %s\r\n", a->srv->settings->hostname);
}

static bool has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* ENVID and ORCPT are passed on as received (xtext); anything that is not
 * plain printable ASCII without spaces is dropped rather than sent. */
static bool xtext_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 500)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f || *s == '=')
            return false;
    return true;
}

static void send_mail(struct attempt *a)
{
    const struct mta_job *j = &a->job;
    conn_printf(a->c, "MAIL FROM:<%s>", j->sender);
    if (a->ext.size_ok)
        conn_printf(a->c, " SIZE=%zu", j->body->len);
    if (a->body8bit)
        conn_printf(a->c, " BODY=8BITMIME");
    if (a->needs_utf8)
        conn_printf(a->c, " SMTPUTF8");
    if (a->ext.dsn && j->ret == SMTP_RET_FULL)
        conn_printf(a->c, " RET=FULL");
    else if (a->ext.dsn && j->ret == SMTP_RET_HDRS)
        conn_printf(a->c, " RET=HDRS");
    if (a->ext.dsn && xtext_ok(j->envid))
        conn_printf(a->c, " ENVID=%s", j->envid);
    conn_write(a->c, "\r\n", 2);
}

static void send_rcpt(struct attempt *a, size_t i)
{
    const struct mta_job *j = &a->job;
    conn_printf(a->c, "RCPT TO:<%s>", j->rcpts[i]);
    unsigned n = j->notify ? j->notify[i] : 0;
    if (a->ext.dsn && (n & SMTP_NOTIFY_NEVER)) {
        conn_printf(a->c, " NOTIFY=NEVER");
    } else if (a->ext.dsn && n) {
        const char *sep = " NOTIFY=";
        if (n & SMTP_NOTIFY_SUCCESS) {
            conn_printf(a->c, "%sSUCCESS", sep);
            sep = ",";
        }
        if (n & SMTP_NOTIFY_FAILURE) {
            conn_printf(a->c, "%sFAILURE", sep);
            sep = ",";
        }
        if (n & SMTP_NOTIFY_DELAY)
            conn_printf(a->c, "%sDELAY", sep);
    }
    if (a->ext.dsn && j->orcpt && xtext_ok(j->orcpt[i]))
        conn_printf(a->c, " ORCPT=%s", j->orcpt[i]);
    conn_write(a->c, "\r\n", 2);
}

/* Refuses what the server cannot take (RFC 1870, RFC 6152 3, RFC 6531)
 * before sending anything: permanent for every recipient. */
static bool transaction_possible(struct attempt *a)
{
    const char *why = NULL, *enh = NULL;
    if (a->ext.size > 0 && a->job.body->len > a->ext.size) {
        why = "552 5.3.4 message size exceeds the fixed limit of the receiving server";
        enh = "5.3.4";
    } else if (a->body8bit && !a->ext.eightbit) {
        why = "554 5.6.3 8-bit message and the receiving server does not support 8BITMIME";
        enh = "5.6.3";
    } else if (a->needs_utf8 && !a->ext.smtputf8) {
        why = "553 5.6.7 internationalized address and the receiving server does not"
              " support SMTPUTF8";
        enh = "5.6.7";
    }
    if (!why)
        return true;
    a->mail_sent = true;   /* the verdict is final for this message */
    session_fail(a, MTA_PERMFAIL, enh, why, true);
    return false;
}

static void start_transaction(struct attempt *a)
{
    if (!transaction_possible(a))
        return;
    a->nsent = a->nreplied = a->naccepted = 0;
    for (size_t i = 0; i < a->job.nrcpts; i++) {
        a->accepted[i] = false;
        if (!a->final[i])
            a->order[a->nsent++] = i;
    }
    a->mail_sent = true;
    send_mail(a);
    if (a->ext.pipelining) {
        for (size_t k = 0; k < a->nsent; k++)
            send_rcpt(a, a->order[k]);
        conn_write(a->c, "DATA\r\n", 6);
    }
    a->st = S_MAIL;
    conn_set_timeout(a->c, T_COMMAND);
}

static void b64(const char *in, size_t len, char *out, size_t outlen)
{
    if (outlen < 4 * ((len + 2) / 3) + 1) {
        out[0] = '\0';
        return;
    }
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in, (int)len);
}

static void start_auth(struct attempt *a)
{
    char b[1024];
    if (a->ext.auth_plain) {
        char plain[2 * sizeof a->route.user + 2];
        size_t ul = strlen(a->route.user), pl = strlen(a->route.password);
        plain[0] = '\0';
        memcpy(plain + 1, a->route.user, ul);
        plain[1 + ul] = '\0';
        memcpy(plain + 2 + ul, a->route.password, pl);
        b64(plain, 2 + ul + pl, b, sizeof b);
        memset(plain, 0, sizeof plain);
        send_cmd(a, S_AUTH_PLAIN, T_COMMAND, "AUTH PLAIN %s\r\n", b);
        memset(b, 0, sizeof b);
    } else if (a->ext.auth_login) {
        send_cmd(a, S_AUTH_LOGIN_USER, T_COMMAND, "AUTH LOGIN\r\n");
    } else {
        session_fail(a, MTA_TEMPFAIL, "4.7.0",
                     "451 4.7.0 relay does not offer AUTH PLAIN or LOGIN", true);
    }
}

/* EHLO (or HELO) done: STARTTLS, AUTH, then the transaction. */
static bool plain_retry(const struct attempt *a)
{
    return a->plain_host == a->host_i && a->plain_addr == a->cur_addr;
}

static void after_ehlo(struct attempt *a)
{
    bool want_tls = a->route.tls == ROUTE_TLS_STARTTLS ||
                    (a->route.tls == ROUTE_TLS_OPPORTUNISTIC && !a->skip_starttls &&
                     !plain_retry(a));
    if (!a->tls_up && want_tls && a->ext.starttls) {
        send_cmd(a, S_STARTTLS, T_COMMAND, "STARTTLS\r\n");
        return;
    }
    if (!a->tls_up && a->route.tls == ROUTE_TLS_STARTTLS) {
        session_fail(a, MTA_TEMPFAIL, "4.7.4",
                     "451 4.7.4 TLS is required but the server does not offer STARTTLS", true);
        return;
    }
    if (a->route.user[0] && !a->authed) {
        if (!a->tls_up)   /* credentials never cross a plaintext connection */
            session_fail(a, MTA_TEMPFAIL, "4.7.4",
                         "451 4.7.4 authentication requires TLS, not available", true);
        else
            start_auth(a);
        return;
    }
    start_transaction(a);
}

static void parse_ext_line(struct ext *e, const char *kw)
{
    if (strcasecmp(kw, "PIPELINING") == 0)
        e->pipelining = true;
    else if (strcasecmp(kw, "STARTTLS") == 0)
        e->starttls = true;
    else if (strcasecmp(kw, "8BITMIME") == 0)
        e->eightbit = true;
    else if (strcasecmp(kw, "SMTPUTF8") == 0)
        e->smtputf8 = true;
    else if (strcasecmp(kw, "DSN") == 0)
        e->dsn = true;
    else if (strncasecmp(kw, "SIZE", 4) == 0 && (kw[4] == ' ' || kw[4] == '\0')) {
        e->size_ok = true;
        e->size = kw[4] ? strtoull(kw + 5, NULL, 10) : 0;
    }
    else if (strncasecmp(kw, "AUTH", 4) == 0 && (kw[4] == ' ' || kw[4] == '=')) {
        for (const char *p = kw + 5; *p;) {
            size_t n = strcspn(p, " ");
            if (n == 5 && strncasecmp(p, "PLAIN", 5) == 0)
                e->auth_plain = true;
            if (n == 5 && strncasecmp(p, "LOGIN", 5) == 0)
                e->auth_login = true;
            p += n;
            p += strspn(p, " ");
        }
    }
}

static void on_reply_rcpt(struct attempt *a)
{
    size_t i = a->order[a->nreplied++];
    if (a->rep.code >= 200 && a->rep.code < 300) {
        a->accepted[i] = true;
        a->naccepted++;
    } else {
        set_from_reply(a, i);
    }
    if (a->nreplied < a->nsent) {
        if (!a->ext.pipelining)
            send_rcpt(a, a->order[a->nreplied]);
        conn_set_timeout(a->c, T_COMMAND);
        return;
    }
    if (a->ext.pipelining) {
        a->st = S_DATA;   /* DATA went with the RCPTs */
        conn_set_timeout(a->c, T_DATA_INIT);
    } else if (a->naccepted > 0) {
        send_cmd(a, S_DATA, T_DATA_INIT, "DATA\r\n");
    } else {
        quit(a);
    }
}

/* Writes the body dot-stuffed, then the final dot. */
static void send_body(struct attempt *a)
{
    const char *p = a->job.body->data ? a->job.body->data : "";
    size_t len = a->job.body->len, start = 0;
    for (size_t i = 0; i < len; i++) {
        bool line_start = i == 0 || p[i - 1] == '\n';
        if (line_start && p[i] == '.') {
            conn_write(a->c, p + start, i - start);
            conn_write(a->c, ".", 1);
            start = i;
        }
    }
    conn_write(a->c, p + start, len - start);
    if (len > 0 && !(len >= 2 && p[len - 2] == '\r' && p[len - 1] == '\n'))
        conn_write(a->c, "\r\n", 2);
    conn_write(a->c, ".\r\n", 3);
    a->st = S_BODY;
    a->drained = false;
    a->last_pending = conn_output_pending(a->c);
    conn_set_timeout(a->c, T_CHUNK);
}

/* The reply to the final dot (or to DATA when it failed) decides every
 * accepted recipient. */
static void decide_accepted(struct attempt *a)
{
    for (size_t i = 0; i < a->job.nrcpts; i++)
        if (a->accepted[i] && !a->final[i])
            set_from_reply(a, i);
}

static void on_reply_data(struct attempt *a)
{
    if (a->rep.code == 354 && a->naccepted > 0) {
        send_body(a);
        return;
    }
    if (a->rep.code == 354) {
        /* Pipelined DATA accepted with no recipient: end it empty. */
        conn_write(a->c, ".\r\n", 3);
    } else if (a->rep.code / 100 == 2 || a->rep.code / 100 == 3) {
        snprintf(a->rep.text, sizeof a->rep.text, "451 4.5.0 unexpected reply to DATA: %d",
                 a->rep.code);
        a->rep.code = 451;
    }
    decide_accepted(a);
    quit(a);
}

static void on_reply_auth(struct attempt *a)
{
    char b[1024];
    if (a->st == S_AUTH_LOGIN_USER || a->st == S_AUTH_LOGIN_PASS) {
        if (a->rep.code != 334) {
            fail_reply(a, "authentication failed");
            return;
        }
        bool user = a->st == S_AUTH_LOGIN_USER;
        const char *s = user ? a->route.user : a->route.password;
        b64(s, strlen(s), b, sizeof b);
        send_cmd(a, user ? S_AUTH_LOGIN_PASS : S_AUTH_LOGIN_DONE, T_COMMAND, "%s\r\n", b);
        memset(b, 0, sizeof b);
        return;
    }
    if (a->rep.code / 100 != 2) {
        /* A refused login is a configuration problem: retry, as Postfix's
         * smtp_sasl_auth_soft_bounce does, with the relay's words. */
        char msg[sizeof a->last_reply];
        snprintf(msg, sizeof msg, "%.440s (authentication failed)", a->rep.text);
        session_fail(a, MTA_TEMPFAIL, "4.7.8", msg, true);
        return;
    }
    a->authed = true;
    start_transaction(a);
}

static void on_reply(struct attempt *a)
{
    int cls = a->rep.code / 100;
    switch (a->st) {
    case S_GREETING:
        if (cls != 2)
            fail_reply(a, "greeting");
        else
            send_ehlo(a);
        break;
    case S_EHLO:
        if (cls == 2)
            after_ehlo(a);
        else if (cls == 5 && !a->helo_tried) {
            a->helo_tried = true;
            send_cmd(a, S_HELO, T_COMMAND, "HELO %s\r\n", a->srv->settings->hostname);
        } else
            fail_reply(a, "EHLO");
        break;
    case S_HELO:
        if (cls == 2) {
            a->ext = (struct ext){ 0 };
            after_ehlo(a);
        } else {
            fail_reply(a, "HELO");
        }
        break;
    case S_STARTTLS:
        if (a->rep.code == 220) {
            a->st = S_TLS;
            conn_starttls_client(a->c, client_ctx(a->route.verify_cert), a->hosts[a->host_i].name);
        } else if (a->route.tls == ROUTE_TLS_STARTTLS) {
            fail_reply(a, "STARTTLS");
        } else {
            a->skip_starttls = true;
            after_ehlo(a);
        }
        break;
    case S_AUTH_PLAIN:
    case S_AUTH_LOGIN_USER:
    case S_AUTH_LOGIN_PASS:
    case S_AUTH_LOGIN_DONE:
        on_reply_auth(a);
        break;
    case S_MAIL:
        if (cls != 2) {
            for (size_t k = 0; k < a->nsent; k++)
                set_from_reply(a, a->order[k]);
            quit(a);
        } else if (a->ext.pipelining) {
            a->st = S_RCPT;
        } else {
            a->st = S_RCPT;
            send_rcpt(a, a->order[0]);
        }
        break;
    case S_RCPT:
        on_reply_rcpt(a);
        break;
    case S_DATA:
        on_reply_data(a);
        break;
    case S_BODY:
        decide_accepted(a);
        quit(a);
        break;
    default:
        break;   /* S_QUIT, S_TLS: nothing expected */
    }
}

/* One reply line. Returns 1 when the reply is complete, 0 when more lines
 * follow, -1 on a malformed line. */
static int reply_line(struct attempt *a, const char *line, size_t len)
{
    struct reply *r = &a->rep;
    if (len < 3 || line[0] < '1' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
        line[2] < '0' || line[2] > '9' || (len > 3 && line[3] != ' ' && line[3] != '-'))
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (r->lines == 0) {
        r->code = code;
        r->text[0] = '\0';
        sanitize_append(r->text, sizeof r->text, line, 3);
        sanitize_append(r->text, sizeof r->text, " ", 1);
        if (len > 4)
            sanitize_append(r->text, sizeof r->text, line + 4, len - 4);
    } else if (len > 4) {
        sanitize_append(r->text, sizeof r->text, " ", 1);
        sanitize_append(r->text, sizeof r->text, line + 4, len - 4);
    }
    if (a->st == S_EHLO && r->lines > 0 && len > 4) {
        char kw[256] = "";
        sanitize_append(kw, sizeof kw, line + 4, len - 4);
        parse_ext_line(&a->ext, kw);
    }
    r->lines++;
    return len > 3 && line[3] == '-' ? 0 : 1;
}

static void read_replies(struct attempt *a)
{
    const char *line;
    size_t len, used;
    while (a->c && a->st != S_QUIT && a->st != S_TLS) {
        int rc = conn_peek_line(a->c, REPLY_LINE_MAX, &line, &len, &used, NULL);
        if (rc == 0)
            return;
        int done = rc < 0 ? -1 : reply_line(a, line, len);
        a->rep.total += used;
        if (rc > 0)
            conn_consume(a->c, used);
        if (done < 0 || a->rep.total > REPLY_TOTAL_MAX) {
            session_fail(a, MTA_TEMPFAIL, "4.5.0", "451 4.5.0 malformed reply from the server",
                         false);
            return;
        }
        if (done == 1) {
            on_reply(a);
            a->rep.lines = 0;
            a->rep.total = 0;
        }
    }
}

static const char *waiting_for(enum state st)
{
    switch (st) {
    case S_GREETING: return "the greeting";
    case S_DATA: return "the reply to DATA";
    case S_BODY: return "the reply to the message";
    case S_RCPT: return "the reply to RCPT";
    case S_MAIL: return "the reply to MAIL";
    default: return "a reply";
    }
}

static void on_timeout(struct attempt *a)
{
    if (a->st == S_BODY) {
        size_t pending = conn_output_pending(a->c);
        if (pending > 0 && pending < a->last_pending) {
            a->last_pending = pending;   /* a chunk went out: another period */
            return;
        }
        if (pending == 0 && !a->drained) {
            a->drained = true;
            conn_set_timeout(a->c, T_FINAL);
            return;
        }
    }
    char msg[200];
    snprintf(msg, sizeof msg, "451 4.4.2 timeout waiting for %s", waiting_for(a->st));
    session_fail(a, MTA_TEMPFAIL, "4.4.2", msg, false);
}

/* The connection ended: decide what is left, then the next address. */
static void on_closed(struct attempt *a)
{
    const char *why = conn_error(a->c);
    a->c = NULL;
    if (a->st != S_QUIT) {
        char msg[400];
        snprintf(msg, sizeof msg, "451 4.4.2 %s", why && *why ? why : "connection lost");
        if (a->mail_sent)
            set_all_open(a, MTA_TEMPFAIL, msg, "4.4.2");
        else
            note_failure(a, MTA_TEMPFAIL, "4.4.2", "%s", msg);
    }
    if (a->st == S_TLS && a->route.tls == ROUTE_TLS_OPPORTUNISTIC && !plain_retry(a) &&
        !a->aborting) {
        /* Opportunistic TLS that fails is no reason never to deliver:
         * the same address once more, in plaintext. */
        log_info("mta[%s]: %s: %s: STARTTLS failed, retrying without TLS",
                 a->job.log_id ? a->job.log_id : "-", a->job.rcpt_domain, a->remote);
        a->plain_host = a->host_i;
        a->plain_addr = a->cur_addr;
        a->addr_i = a->cur_addr;
        next_address(a);
        return;
    }
    if (all_final(a) || a->mail_sent)
        finish(a);
    else
        next_address(a);
}

static void on_conn(struct conn *c, enum conn_event ev, void *arg)
{
    (void)c;
    struct attempt *a = arg;
    switch (ev) {
    case CONN_EV_READ:
        read_replies(a);
        break;
    case CONN_EV_TLS_READY:
        a->tls_up = true;
        log_debug("mta[%s]: %s: %s with %s", a->job.log_id ? a->job.log_id : "-", a->remote,
                  conn_tls_version(a->c), conn_tls_cipher(a->c));
        if (a->st == S_TLS_IMPLICIT) {
            a->st = S_GREETING;
            conn_set_timeout(a->c, T_GREETING);
        } else {
            send_ehlo(a);
        }
        break;
    case CONN_EV_TIMEOUT:
        on_timeout(a);
        break;
    case CONN_EV_CLOSED:
        on_closed(a);
        break;
    }
}

/* ---- connecting ---- */

static void reset_session(struct attempt *a)
{
    a->ext = (struct ext){ 0 };
    a->rep = (struct reply){ 0 };
    a->tls_up = a->authed = a->mail_sent = a->helo_tried = a->skip_starttls = false;
}

static void connected(struct attempt *a)
{
    bool implicit = a->route.tls == ROUTE_TLS_IMPLICIT;
    SSL_CTX *ctx = implicit ? client_ctx(a->route.verify_cert) : NULL;
    socklen_t len = a->addrs[a->addr_i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                               : sizeof(struct sockaddr_in);
    int fd = a->fd;
    a->fd = -1;
    reset_session(a);
    if (implicit && !ctx) {
        close(fd);
        note_failure(a, MTA_TEMPFAIL, "4.7.0", "451 4.7.0 cannot create a TLS context");
        a->addr_i++;
        next_address(a);
        return;
    }
    a->c = conn_new_client(a->srv->loop, fd, (struct sockaddr *)&a->addrs[a->addr_i], len, ctx,
                           a->hosts[a->host_i].name, on_conn, a);
    a->cur_addr = a->addr_i++;
    if (!a->c) {
        note_failure(a, MTA_TEMPFAIL, "4.3.0", "451 4.3.0 out of memory");
        next_address(a);
        return;
    }
    a->st = implicit ? S_TLS_IMPLICIT : S_GREETING;
    conn_set_timeout(a->c, implicit ? T_COMMAND : T_GREETING);
}

static void connect_failed(struct attempt *a, const char *why)
{
    ev_io_stop(a->srv->loop, &a->cio);
    ev_timer_stop(a->srv->loop, &a->ctimer);
    close(a->fd);
    a->fd = -1;
    note_failure(a, MTA_TEMPFAIL, "4.4.1", "451 4.4.1 connect to %s failed: %s", a->remote, why);
    a->addr_i++;
    next_address(a);
}

static void on_connect_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct attempt *a = w->data;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        connect_failed(a, strerror(err));
        return;
    }
    ev_io_stop(loop, &a->cio);
    ev_timer_stop(loop, &a->ctimer);
    connected(a);
}

static void on_connect_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    connect_failed(w->data, "timed out");
}

static void describe_peer(struct attempt *a, const struct sockaddr_storage *ss)
{
    const void *ip = ss->ss_family == AF_INET6
                         ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                         : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    inet_ntop(ss->ss_family, ip, a->peer, sizeof a->peer);
    snprintf(a->remote, sizeof a->remote, "%s[%s]", a->hosts[a->host_i].name, a->peer);
}

/* Starts a non-blocking connect to the current address. Returns 0 when it
 * is in progress (the watchers continue), -1 when it failed at once. */
static int start_connect(struct attempt *a, struct sockaddr_storage *ss)
{
    socklen_t len;
    if (ss->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(a->route.port);
        len = sizeof(struct sockaddr_in6);
    } else {
        ((struct sockaddr_in *)ss)->sin_port = htons(a->route.port);
        len = sizeof(struct sockaddr_in);
    }
    a->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0)
        return -1;
    if (connect(a->fd, (struct sockaddr *)ss, len) < 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(a->fd);
        a->fd = -1;
        errno = saved;
        return -1;
    }
    ev_io_init(&a->cio, on_connect_io, a->fd, EV_WRITE);
    ev_timer_init(&a->ctimer, on_connect_timeout, T_CONNECT, 0.);
    a->cio.data = a->ctimer.data = a;
    ev_io_start(a->srv->loop, &a->cio);
    ev_timer_start(a->srv->loop, &a->ctimer);
    a->st = S_CONNECTING;
    return 0;
}

/* Tries the current host's addresses in turn, then the next host. */
static void next_address(struct attempt *a)
{
    if (a->aborting) {
        finish_aborted(a);
        return;
    }
    while (a->addr_i < a->naddrs) {
        struct sockaddr_storage *ss = &a->addrs[a->addr_i];
        describe_peer(a, ss);
        if (listener_is_local(a->srv->smtp_listener, (struct sockaddr *)ss, a->route.port)) {
            log_info("mta[%s]: %s: %s:%u is one of our own addresses, skipped",
                     a->job.log_id ? a->job.log_id : "-", a->job.rcpt_domain, a->remote,
                     (unsigned)a->route.port);
            a->saw_loop = true;
            a->addr_i++;
            continue;
        }
        a->tried_connect = true;
        if (start_connect(a, ss) == 0)
            return;
        note_failure(a, MTA_TEMPFAIL, "4.4.1", "451 4.4.1 connect to %s failed: %s", a->remote,
                     strerror(errno));
        a->addr_i++;
    }
    a->remote[0] = '\0';
    a->host_i++;
    next_host(a);
}

static void on_addr(void *arg, enum dns_status status, const struct sockaddr_storage *addrs,
                    size_t n)
{
    struct attempt *a = arg;
    a->naddrs = a->addr_i = 0;
    if (a->aborting) {
        finish_aborted(a);
        return;
    }
    if (a->implicit_mx && (status == DNS_NXDOMAIN || status == DNS_NODATA)) {
        /* Neither MX nor address: nowhere to deliver (RFC 5321 5.1). */
        a->last_status = MTA_PERMFAIL;
        snprintf(a->last_reply, sizeof a->last_reply,
                 "550 5.4.4 domain %s has no MX and no address record", a->job.rcpt_domain);
        snprintf(a->last_enhanced, sizeof a->last_enhanced, "5.4.4");
        finish(a);
        return;
    }
    if (status == DNS_OK) {
        for (size_t i = 0; i < n && a->naddrs < MAX_ADDRS; i++)
            if (addrs[i].ss_family == AF_INET || addrs[i].ss_family == AF_INET6)
                a->addrs[a->naddrs++] = addrs[i];
    } else if (status == DNS_TEMPFAIL) {
        note_failure(a, MTA_TEMPFAIL, "4.4.3", "451 4.4.3 address lookup of %s failed",
                     a->hosts[a->host_i].name);
    } else {
        note_failure(a, MTA_TEMPFAIL, "4.4.4", "451 4.4.4 host %s has no address",
                     a->hosts[a->host_i].name);
    }
    next_address(a);
}

/* Parses an IP literal host into the address list; false for a name. */
static bool literal_address(struct attempt *a, const char *host)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return false;
    a->addrs[0] = ss;
    a->naddrs = 1;
    a->addr_i = 0;
    return true;
}

/* Resolves the current host, or ends the attempt when none is left. */
static void next_host(struct attempt *a)
{
    if (a->host_i >= a->nhosts) {
        if (!a->tried_connect && a->saw_loop) {
            char msg[400];
            snprintf(msg, sizeof msg, "554 5.4.6 mail for %s loops back to myself",
                     a->job.rcpt_domain);
            a->last_status = MTA_PERMFAIL;
            snprintf(a->last_reply, sizeof a->last_reply, "%s", msg);
            snprintf(a->last_enhanced, sizeof a->last_enhanced, "5.4.6");
        }
        finish(a);
        return;
    }
    const char *name = a->hosts[a->host_i].name;
    if (literal_address(a, name)) {
        next_address(a);
        return;
    }
    a->st = S_DNS;
    if (!a->srv->dns || dns_lookup_addr(a->srv->dns, name, AF_UNSPEC, on_addr, a) < 0) {
        note_failure(a, MTA_TEMPFAIL, "4.4.3", "451 4.4.3 cannot look up %s", name);
        a->host_i++;
        next_host(a);
    }
}

/* Equal preferences in random order (RFC 5321 5.1). */
static void shuffle_equal(struct host *h, size_t n)
{
    for (size_t start = 0; start < n;) {
        size_t end = start + 1;
        while (end < n && h[end].pref == h[start].pref)
            end++;
        for (size_t i = end - 1; i > start; i--) {
            unsigned r = 0;
            if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
                r = (unsigned)rand();
            size_t j = start + r % (i - start + 1);
            struct host t = h[i];
            h[i] = h[j];
            h[j] = t;
        }
        start = end;
    }
}

static void single_host(struct attempt *a, const char *name)
{
    snprintf(a->hosts[0].name, sizeof a->hosts[0].name, "%s", name);
    a->hosts[0].pref = 0;
    a->nhosts = 1;
    a->host_i = 0;
}

/* The name whose MX is asked: the recipient's domain, or a relay host
 * given without brackets. */
static const char *mx_name(const struct attempt *a)
{
    return a->route.relay ? a->route.host : a->job.rcpt_domain;
}

static void on_mx(void *arg, enum dns_status status, const struct dns_mx *mx, size_t n)
{
    struct attempt *a = arg;
    const char *name = mx_name(a);
    bool relay = a->route.relay;
    if (a->aborting) {
        finish_aborted(a);
        return;
    }
    if (status == DNS_OK && n == 1 && mx[0].host[0] == '\0') {
        snprintf(a->last_reply, sizeof a->last_reply,
                 "556 5.1.10 domain %s does not accept mail (null MX)", name);
        snprintf(a->last_enhanced, sizeof a->last_enhanced, "5.1.10");
        a->last_status = relay ? MTA_TEMPFAIL : MTA_PERMFAIL;
        finish(a);
        return;
    }
    if (status == DNS_OK) {
        a->nhosts = 0;
        for (size_t i = 0; i < n && a->nhosts < MAX_HOSTS; i++) {
            if (!mx[i].host[0])
                continue;
            a->hosts[a->nhosts] = (struct host){ .pref = mx[i].preference };
            snprintf(a->hosts[a->nhosts].name, sizeof a->hosts[0].name, "%s", mx[i].host);
            a->nhosts++;
        }
        shuffle_equal(a->hosts, a->nhosts);
        a->host_i = 0;
    } else if (status == DNS_NODATA || (relay && status == DNS_NXDOMAIN)) {
        single_host(a, name);   /* no MX: the name's own A/AAAA (RFC 5321 5.1) */
        a->implicit_mx = !relay;
    } else if (status == DNS_NXDOMAIN) {
        snprintf(a->last_reply, sizeof a->last_reply, "550 5.1.2 domain %s not found", name);
        snprintf(a->last_enhanced, sizeof a->last_enhanced, "5.1.2");
        a->last_status = MTA_PERMFAIL;
        finish(a);
        return;
    } else {
        note_failure(a, MTA_TEMPFAIL, "4.4.3", "451 4.4.3 MX lookup of %s failed", name);
        finish(a);
        return;
    }
    next_host(a);
}

static void start(struct attempt *a)
{
    if (a->route.relay && !a->route.host_is_mx_lookup) {
        single_host(a, a->route.host);
        next_host(a);
        return;
    }
    const char *name = mx_name(a);
    a->st = S_DNS;
    if (!a->srv->dns || dns_lookup_mx(a->srv->dns, name, on_mx, a) < 0) {
        snprintf(a->last_reply, sizeof a->last_reply, "550 5.1.2 invalid domain %s", name);
        snprintf(a->last_enhanced, sizeof a->last_enhanced, "5.1.2");
        a->last_status = a->srv->dns && !a->route.relay ? MTA_PERMFAIL : MTA_TEMPFAIL;
        finish(a);
    }
}

/* ---- public ---- */

static bool needs_smtputf8(const struct mta_job *j)
{
    if (has_8bit(j->sender, strlen(j->sender)))
        return true;
    for (size_t i = 0; i < j->nrcpts; i++)
        if (has_8bit(j->rcpts[i], strlen(j->rcpts[i])))
            return true;
    return false;
}

int mta_deliver(struct server *srv, const struct mta_job *job, mta_done_fn done, void *arg)
{
    struct attempt *a = calloc(1, sizeof *a);
    size_t n = job->nrcpts ? job->nrcpts : 1;
    if (!a || !(a->res = calloc(n, sizeof *a->res)) || !(a->final = calloc(n, sizeof(bool))) ||
        !(a->accepted = calloc(n, sizeof(bool))) || !(a->order = calloc(n, sizeof(size_t)))) {
        if (a)
            free_attempt(a);
        log_error("mta: out of memory");
        return -1;
    }
    a->srv = srv;
    a->job = *job;
    if (!a->job.sender)
        a->job.sender = "";
    a->route = *job->route;
    a->job.route = &a->route;
    a->done = done;
    a->arg = arg;
    a->fd = -1;
    a->last_status = MTA_TEMPFAIL;
    a->plain_host = a->plain_addr = SIZE_MAX;
    a->body8bit = has_8bit(job->body->data ? job->body->data : "", job->body->len);
    a->needs_utf8 = needs_smtputf8(job);
    active_attempts++;
    live_add(a);
    if (job->nrcpts == 0) {
        finish(a);
        return 0;
    }
    start(a);
    return 0;
}

unsigned mta_active(void)
{
    return active_attempts;
}

static void abort_one(struct attempt *a)
{
    if (a->finishing || a->aborting)
        return;
    a->aborting = true;
    log_info("mta[%s]: %s: attempt aborted for shutdown", a->job.log_id ? a->job.log_id : "-",
             a->job.rcpt_domain);
    if (a->st == S_CONNECTING && a->fd >= 0) {
        ev_io_stop(a->srv->loop, &a->cio);
        ev_timer_stop(a->srv->loop, &a->ctimer);
        close(a->fd);
        a->fd = -1;
        finish_aborted(a);
    } else if (a->c) {
        set_all_open(a, MTA_TEMPFAIL, ABORT_REPLY, "4.3.2");
        a->st = S_QUIT;           /* on_closed then finishes */
        conn_abort(a->c);
    }
    /* else waiting for DNS: on_mx / on_addr finish it. */
}

void mta_abort_all(void)
{
    /* Nothing here frees an attempt (finish and conn_abort complete on a
     * later loop iteration), so the list stays valid while walked. */
    for (struct attempt *a = live; a; a = a->live_next)
        abort_one(a);
}
