/* mta: one delivery attempt against a scripted fake SMTP server (a conn
 * server in the same ev loop on 127.0.0.1), through relay routes with an
 * IP literal so that no DNS is needed; plus listener_is_local. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "buf.h"
#include "conn.h"
#include "listener.h"
#include "log.h"
#include "mta.h"
#include "test.h"

#define DEADLINE 10.0

static struct ev_loop *loop;
static SSL_CTX *sctx;

/* ---- the fake server ---- */

struct fake {
    int lfd;
    unsigned port;
    ev_io accept_io;
    struct conn *c;
    const char *ehlo;          /* full EHLO reply, CRLF lines */
    const char *ehlo_tls;      /* after STARTTLS (NULL: same as ehlo) */
    const char *final;         /* reply after the dot */
    const char *auth_expect;   /* "AUTH PLAIN <b64>" accepted */
    bool in_data, tls;
    bool break_tls;            /* answer STARTTLS with 220, then no TLS at all */
    bool hang_final;           /* never answer the final dot */
    int accepts;
    bool pipelined;            /* RCPT was already buffered when MAIL was answered */
    struct buf log;            /* commands, '|'-separated */
    struct buf body;           /* DATA lines as received, CRLF */
};

static void fake_reply(struct fake *f, const char *line, size_t len)
{
    struct conn *c = f->c;
    if (len >= 4 && strncasecmp(line, "EHLO", 4) == 0) {
        conn_printf(c, "%s", f->tls && f->ehlo_tls ? f->ehlo_tls : f->ehlo);
    } else if (len >= 4 && strncasecmp(line, "HELO", 4) == 0) {
        conn_printf(c, "250 fake\r\n");
    } else if (len == 8 && strncasecmp(line, "STARTTLS", 8) == 0 && f->break_tls) {
        conn_printf(c, "220 2.0.0 ready\r\nthis is not a TLS handshake\r\n");
        conn_close(c);
    } else if (len == 8 && strncasecmp(line, "STARTTLS", 8) == 0) {
        conn_printf(c, "220 2.0.0 ready\r\n");
        conn_starttls(c, sctx);
        f->tls = true;
    } else if (len >= 4 && strncasecmp(line, "AUTH", 4) == 0) {
        bool ok = f->auth_expect && len == strlen(f->auth_expect) &&
                  memcmp(line, f->auth_expect, len) == 0;
        conn_printf(c, ok ? "235 2.7.0 ok\r\n" : "535 5.7.8 bad credentials\r\n");
    } else if (len >= 4 && strncasecmp(line, "MAIL", 4) == 0) {
        size_t have;
        const char *in = conn_input(c, &have);
        f->pipelined |= memmem(in, have, "RCPT", 4) != NULL;
        conn_printf(c, "250 2.1.0 ok\r\n");
    } else if (len >= 4 && strncasecmp(line, "RCPT", 4) == 0) {
        if (memmem(line, len, "reject", 6))
            conn_printf(c, "550-5.1.1 <reject@x.test>: no such user\r\n550 5.1.1 really\r\n");
        else if (memmem(line, len, "temp", 4))
            conn_printf(c, "450 4.2.1 try later\r\n");
        else
            conn_printf(c, "250 2.1.5 ok\r\n");
    } else if (len == 4 && strncasecmp(line, "DATA", 4) == 0) {
        conn_printf(c, "354 go ahead\r\n");
        f->in_data = true;
    } else if (len == 4 && strncasecmp(line, "QUIT", 4) == 0) {
        conn_printf(c, "221 bye\r\n");
        conn_close(c);
    } else {
        conn_printf(c, "250 ok\r\n");
    }
}

static void fake_lines(struct fake *f)
{
    const char *line;
    size_t len, used;
    while (f->c && conn_peek_line(f->c, 100000, &line, &len, &used, NULL) == 1) {
        if (f->in_data) {
            if (len == 1 && line[0] == '.') {
                f->in_data = false;
                if (!f->hang_final)
                    conn_printf(f->c, "%s", f->final ? f->final : "250 2.0.0 queued\r\n");
            } else {
                buf_append(&f->body, line, len);
                buf_append(&f->body, "\r\n", 2);
            }
            conn_consume(f->c, used);
            continue;
        }
        buf_append(&f->log, line, len);
        buf_append(&f->log, "|", 1);
        char copy[1024];
        size_t n = len < sizeof copy ? len : sizeof copy - 1;
        memcpy(copy, line, n);
        conn_consume(f->c, used);
        fake_reply(f, copy, n);
    }
}

static void fake_handler(struct conn *c, enum conn_event ev, void *arg)
{
    (void)c;
    struct fake *f = arg;
    if (ev == CONN_EV_READ)
        fake_lines(f);
    else if (ev == CONN_EV_CLOSED)
        f->c = NULL;
}

static void fake_accept(struct ev_loop *l, ev_io *w, int revents)
{
    (void)revents;
    struct fake *f = w->data;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return;
    f->tls = false;
    f->accepts++;
    f->c = conn_new(l, fd, NULL, 0, NULL, fake_handler, f);
    conn_printf(f->c, "220 fake ESMTP\r\n");
}

static int bind_loopback(unsigned *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    *port = ntohs(sa.sin_port);
    return fd;
}

static void fake_start(struct fake *f, const char *ehlo)
{
    memset(f, 0, sizeof *f);
    f->ehlo = ehlo;
    f->lfd = bind_loopback(&f->port);
    CHECK(f->lfd >= 0);
    CHECK_INT(listen(f->lfd, 8), 0);
    ev_io_init(&f->accept_io, fake_accept, f->lfd, EV_READ);
    f->accept_io.data = f;
    ev_io_start(loop, &f->accept_io);
}

static void fake_stop(struct fake *f)
{
    ev_io_stop(loop, &f->accept_io);
    close(f->lfd);
    buf_free(&f->log);
    buf_free(&f->body);
}

static const char *fake_log(struct fake *f)
{
    return f->log.len ? buf_cstr(&f->log) : "";
}

/* ---- running an attempt ---- */

struct outcome {
    bool done;
    int calls;
    size_t n;
    struct mta_rcpt_result res[4];
};

static void on_done(void *arg, const struct mta_rcpt_result *results, size_t n)
{
    struct outcome *o = arg;
    o->done = true;
    o->calls++;
    o->n = n;
    for (size_t i = 0; i < n && i < 4; i++)
        o->res[i] = results[i];
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool run_until_done(struct outcome *o)
{
    double end = now() + DEADLINE;
    while (!o->done && now() < end)
        ev_run(loop, EVRUN_ONCE);
    /* let the connections wind down */
    double settle = now() + 2.0;
    while (conn_count() > 0 && now() < settle)
        ev_run(loop, EVRUN_NOWAIT);
    return o->done;
}

static struct settings cfg;
static struct server srv;

static struct route relay_route_to(unsigned port, enum route_tls tls)
{
    struct route r = { .relay = true, .port = (uint16_t)port, .tls = tls };
    snprintf(r.host, sizeof r.host, "127.0.0.1");
    return r;
}

static struct outcome deliver(const struct route *r, const char *const *rcpts, size_t n,
                              const char *body_text)
{
    struct buf body = BUF_INIT;
    buf_append(&body, body_text, strlen(body_text));
    struct mta_job job = {
        .route = r, .rcpt_domain = "x.test", .sender = "alice@sender.test", .rcpts = rcpts,
        .nrcpts = n, .body = &body, .log_id = "test",
    };
    struct outcome o = { 0 };
    CHECK_INT(mta_deliver(&srv, &job, on_done, &o), 0);
    CHECK(run_until_done(&o));
    CHECK_INT(o.calls, 1);
    CHECK_INT(mta_active(), 0);
    buf_free(&body);
    return o;
}

static const char EHLO_BASIC[] = "250-fake\r\n250-8BITMIME\r\n250 SIZE 100000\r\n";

TEST(plain_delivery_with_dot_stuffing)
{
    struct fake f;
    fake_start(&f, EHLO_BASIC);
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "bob@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "Subject: t\r\n\r\n.leading dot\r\nlast line");
    CHECK_INT(o.res[0].status, MTA_DELIVERED);
    CHECK_STR(o.res[0].reply, "250 2.0.0 queued");
    CHECK_STR(o.res[0].enhanced, "2.0.0");
    CHECK_STR(o.res[0].remote, "127.0.0.1[127.0.0.1]");
    CHECK(strstr(fake_log(&f), "EHLO client.test|") != NULL);
    CHECK(strstr(fake_log(&f), "MAIL FROM:<alice@sender.test> SIZE=") != NULL);
    CHECK(strstr(fake_log(&f), "RCPT TO:<bob@x.test>|DATA|") != NULL);
    CHECK(strstr(fake_log(&f), "QUIT|") != NULL);
    CHECK(!f.pipelined);
    buf_cstr(&f.body);
    CHECK_STR(f.body.data, "Subject: t\r\n\r\n..leading dot\r\nlast line\r\n");
    fake_stop(&f);
}

TEST(pipelining_with_mixed_recipient_replies)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "ok@x.test", "reject@x.test", "temp@x.test" };
    struct outcome o = deliver(&r, rcpts, 3, "Subject: t\r\n\r\nhi\r\n");
    CHECK_INT(o.n, 3);
    CHECK_INT(o.res[0].status, MTA_DELIVERED);
    CHECK_INT(o.res[1].status, MTA_PERMFAIL);
    CHECK_STR(o.res[1].enhanced, "5.1.1");
    CHECK_STR(o.res[1].reply, "550 5.1.1 <reject@x.test>: no such user 5.1.1 really");
    CHECK_INT(o.res[2].status, MTA_TEMPFAIL);
    CHECK_STR(o.res[2].enhanced, "4.2.1");
    CHECK(f.pipelined);
    CHECK(strstr(fake_log(&f), "SIZE=") == NULL);   /* SIZE not offered */
    fake_stop(&f);
}

TEST(temporary_failure_after_data)
{
    struct fake f;
    fake_start(&f, EHLO_BASIC);
    f.final = "451 4.3.0 try again later\r\n";
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test", "reject@x.test" };
    struct outcome o = deliver(&r, rcpts, 2, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_TEMPFAIL);
    CHECK_STR(o.res[0].reply, "451 4.3.0 try again later");
    CHECK_INT(o.res[1].status, MTA_PERMFAIL);
    fake_stop(&f);
}

TEST(eight_bit_to_server_without_8bitmime_is_refused)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250 PIPELINING\r\n");
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test", "b@x.test" };
    struct outcome o = deliver(&r, rcpts, 2, "Subject: caf\xc3\xa9\r\n\r\nx\r\n");
    CHECK_INT(o.res[0].status, MTA_PERMFAIL);
    CHECK_INT(o.res[1].status, MTA_PERMFAIL);
    CHECK_STR(o.res[0].enhanced, "5.6.3");
    CHECK(strstr(fake_log(&f), "MAIL") == NULL);
    fake_stop(&f);
}

TEST(eight_bit_uses_body_8bitmime_when_offered)
{
    struct fake f;
    fake_start(&f, EHLO_BASIC);
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "Subject: caf\xc3\xa9\r\n\r\nx\r\n");
    CHECK_INT(o.res[0].status, MTA_DELIVERED);
    CHECK(strstr(fake_log(&f), " BODY=8BITMIME") != NULL);
    fake_stop(&f);
}

TEST(size_above_the_server_limit_is_refused)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250 SIZE 10\r\n");
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "Subject: too big for ten\r\n\r\nx\r\n");
    CHECK_INT(o.res[0].status, MTA_PERMFAIL);
    CHECK_STR(o.res[0].enhanced, "5.3.4");
    fake_stop(&f);
}

TEST(starttls_required_but_not_offered_is_temporary)
{
    struct fake f;
    fake_start(&f, EHLO_BASIC);
    struct route r = relay_route_to(f.port, ROUTE_TLS_STARTTLS);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_TEMPFAIL);
    CHECK(strstr(o.res[0].reply, "STARTTLS") != NULL);
    CHECK(strstr(fake_log(&f), "MAIL") == NULL);
    fake_stop(&f);
}

TEST(remote_dsn_is_reported_for_deliveries)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250-DSN\r\n250 8BITMIME\r\n");
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test", "reject@x.test" };
    struct outcome o = deliver(&r, rcpts, 2, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_DELIVERED);
    CHECK(o.res[0].remote_dsn);
    CHECK(!o.res[1].remote_dsn);   /* refused: nobody took it over */
    fake_stop(&f);

    fake_start(&f, EHLO_BASIC);
    r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    o = deliver(&r, rcpts, 1, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_DELIVERED);
    CHECK(!o.res[0].remote_dsn);
    fake_stop(&f);
}

TEST(opportunistic_tls_failure_retries_in_plaintext)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    f.break_tls = true;
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "Subject: t\r\n\r\nplain\r\n");
    CHECK_INT(o.res[0].status, MTA_DELIVERED);
    CHECK_INT(f.accepts, 2);
    /* The second session did not try STARTTLS again. */
    CHECK(strstr(fake_log(&f), "STARTTLS|EHLO client.test|MAIL FROM:") != NULL);
    fake_stop(&f);
}

TEST(required_tls_failure_never_falls_back)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    f.break_tls = true;
    struct route r = relay_route_to(f.port, ROUTE_TLS_STARTTLS);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_TEMPFAIL);
    CHECK_INT(f.accepts, 1);
    CHECK(strstr(fake_log(&f), "MAIL") == NULL);
    fake_stop(&f);
}

TEST(abort_all_ends_attempts_with_a_temporary_failure)
{
    mta_abort_all();   /* nothing in flight: nothing happens */
    struct fake f;
    fake_start(&f, EHLO_BASIC);
    f.hang_final = true;
    struct route r = relay_route_to(f.port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test", "reject@x.test" };
    struct buf body = BUF_INIT;
    buf_append(&body, "x\r\n", 3);
    struct mta_job job = {
        .route = &r, .rcpt_domain = "x.test", .sender = "s@sender.test", .rcpts = rcpts,
        .nrcpts = 2, .body = &body, .log_id = "abort",
    };
    struct outcome o = { 0 };
    CHECK_INT(mta_deliver(&srv, &job, on_done, &o), 0);
    /* Wait until the message is out and the client waits for the reply. */
    double end = now() + DEADLINE;
    while (f.body.len == 0 && now() < end)
        ev_run(loop, EVRUN_ONCE);
    CHECK(f.body.len > 0);
    CHECK(!o.done);
    mta_abort_all();
    mta_abort_all();   /* twice: still one outcome */
    CHECK(run_until_done(&o));
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.res[0].status, MTA_TEMPFAIL);
    CHECK_STR(o.res[0].enhanced, "4.3.2");
    CHECK(strstr(o.res[0].reply, "shutting down") != NULL);
    CHECK_INT(o.res[1].status, MTA_PERMFAIL);   /* decided before: kept */
    CHECK_INT(mta_active(), 0);
    buf_free(&body);
    fake_stop(&f);
}

static void auth_case(const char *password, enum mta_status want)
{
    struct fake f;
    fake_start(&f, "250-fake\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
    f.ehlo_tls = "250-fake\r\n250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n";
    /* base64("\0user\0secret") */
    f.auth_expect = "AUTH PLAIN AHVzZXIAc2VjcmV0";
    struct route r = relay_route_to(f.port, ROUTE_TLS_STARTTLS);
    snprintf(r.user, sizeof r.user, "user");
    snprintf(r.password, sizeof r.password, "%s", password);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "x\r\n");
    CHECK_INT(o.res[0].status, want);
    CHECK(strstr(fake_log(&f), "STARTTLS|EHLO client.test|AUTH PLAIN") != NULL);
    if (want == MTA_TEMPFAIL)
        CHECK(strstr(o.res[0].reply, "535 5.7.8") != NULL);
    fake_stop(&f);
}

TEST(auth_plain_over_starttls)
{
    auth_case("secret", MTA_DELIVERED);
    auth_case("wrong", MTA_TEMPFAIL);
}

TEST(connection_refused_is_temporary)
{
    unsigned port;
    int fd = bind_loopback(&port);   /* bound, not listening: refused */
    CHECK(fd >= 0);
    struct route r = relay_route_to(port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_TEMPFAIL);
    CHECK(strstr(o.res[0].reply, "connect") != NULL);
    close(fd);
}

TEST(own_listening_address_is_a_mail_loop)
{
    unsigned port;
    int fd = bind_loopback(&port);
    close(fd);
    char spec[64], err[256];
    snprintf(spec, sizeof spec, "127.0.0.1:%u", port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(listener_is_local(l, (struct sockaddr *)&sa, port));
    CHECK(!listener_is_local(l, (struct sockaddr *)&sa, port + 1));
    CHECK(!listener_is_local(NULL, (struct sockaddr *)&sa, port));
    srv.smtp_listener = l;
    struct route r = relay_route_to(port, ROUTE_TLS_OPPORTUNISTIC);
    const char *rcpts[] = { "a@x.test" };
    struct outcome o = deliver(&r, rcpts, 1, "x\r\n");
    CHECK_INT(o.res[0].status, MTA_PERMFAIL);
    CHECK_STR(o.res[0].enhanced, "5.4.6");
    CHECK(strstr(o.res[0].reply, "loops back to myself") != NULL);
    srv.smtp_listener = NULL;
    listener_free(l);
}

TEST(wildcard_listener_matches_interface_addresses)
{
    unsigned port;
    int fd = bind_loopback(&port);
    close(fd);
    char spec[64], err[256];
    snprintf(spec, sizeof spec, "0.0.0.0:%u", port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);   /* lo's address */
    CHECK(listener_is_local(l, (struct sockaddr *)&sa, port));
    inet_pton(AF_INET, "192.0.2.99", &sa.sin_addr);   /* TEST-NET: not ours */
    CHECK(!listener_is_local(l, (struct sockaddr *)&sa, port));
    listener_free(l);
}

/* ---- a self-signed certificate for the fake server ---- */

static SSL_CTX *make_server_ctx(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fake", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509_sign(x, key, EVP_sha256());
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx, x);
    SSL_CTX_use_PrivateKey(ctx, key);
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    log_set_level(LOG_ERROR);
    loop = ev_loop_new(EVFLAG_AUTO);
    sctx = make_server_ctx();
    cfg.hostname = (char *)"client.test";
    srv.loop = loop;
    srv.settings = &cfg;

    RUN(plain_delivery_with_dot_stuffing);
    RUN(pipelining_with_mixed_recipient_replies);
    RUN(temporary_failure_after_data);
    RUN(eight_bit_to_server_without_8bitmime_is_refused);
    RUN(eight_bit_uses_body_8bitmime_when_offered);
    RUN(size_above_the_server_limit_is_refused);
    RUN(starttls_required_but_not_offered_is_temporary);
    RUN(auth_plain_over_starttls);
    RUN(remote_dsn_is_reported_for_deliveries);
    RUN(opportunistic_tls_failure_retries_in_plaintext);
    RUN(required_tls_failure_never_falls_back);
    RUN(abort_all_ends_attempts_with_a_temporary_failure);
    RUN(connection_refused_is_temporary);
    RUN(own_listening_address_is_a_mail_loop);
    RUN(wildcard_listener_matches_interface_addresses);
    CHECK_INT(conn_count(), 0);

    SSL_CTX_free(sctx);
    ev_loop_destroy(loop);
    return test_summary();
}
