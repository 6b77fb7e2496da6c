/* Unit tests for conn: a server-side conn over a socketpair or loopback TCP
 * pair, with the test playing the peer on the other socket, everything
 * driven by the test's own ev loop (the TLS client is a non-blocking
 * OpenSSL client stepped between loop iterations). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "buf.h"
#include "conn.h"
#include "test.h"

#define DEADLINE 5.0
#define MAX_EVENTS 64

/* ---- the recording handler ---- */

struct rec {
    struct conn *c;          /* NULL once CLOSED was delivered */
    int events[MAX_EVENTS];
    int nev;
    int nested;              /* handler entered while already inside it */
    int inside;
    struct buf lines;        /* each line received, '|'-terminated */
    int bare_lf_count;
    /* behaviour */
    bool consume;            /* read lines (else leave input alone) */
    bool echo;               /* reply "echo:<line>" */
    bool pause_on_read;      /* pause reading on each READ */
    bool resume_in_handler;  /* call conn_resume_read inside READ */
    size_t max_line;
    int too_long;            /* peek_line returned -1 */
    SSL_CTX *starttls_ctx;   /* on the line "STARTTLS" */
    const char *greeting;    /* written on TLS_READY */
    int starttls_rc;
};

static int count_ev(const struct rec *r, int ev)
{
    int n = 0;
    for (int i = 0; i < r->nev; i++)
        n += r->events[i] == ev;
    return n;
}

static void handle_lines(struct rec *r, struct conn *c)
{
    const char *line;
    size_t len, used;
    bool bare;
    int rc;
    while ((rc = conn_peek_line(c, r->max_line ? r->max_line : 1000, &line, &len, &used,
                                &bare)) == 1) {
        buf_append(&r->lines, line, len);
        buf_append(&r->lines, "|", 1);
        r->bare_lf_count += bare;
        bool starttls = len == 8 && memcmp(line, "STARTTLS", 8) == 0;
        if (r->echo)
            conn_printf(c, "echo:%.*s\r\n", (int)len, line);
        conn_consume(c, used);
        if (starttls && r->starttls_ctx) {
            conn_write(c, "220 ready\r\n", 11);
            r->starttls_rc = conn_starttls(c, r->starttls_ctx);
        }
    }
    if (rc < 0)
        r->too_long++;
}

static void handler(struct conn *c, enum conn_event ev, void *arg)
{
    struct rec *r = arg;
    if (r->inside)
        r->nested++;
    r->inside = 1;
    if (r->nev < MAX_EVENTS)
        r->events[r->nev++] = (int)ev;
    switch (ev) {
    case CONN_EV_READ:
        if (r->consume)
            handle_lines(r, c);
        if (r->pause_on_read)
            conn_pause_read(c);
        if (r->resume_in_handler)
            conn_resume_read(c);
        break;
    case CONN_EV_TLS_READY:
        if (r->greeting)
            conn_write(c, r->greeting, strlen(r->greeting));
        break;
    case CONN_EV_TIMEOUT:
        break;
    case CONN_EV_CLOSED:
        r->c = NULL;
        break;
    }
    r->inside = 0;
}

static const char *lines_of(struct rec *r)
{
    return buf_cstr(&r->lines);
}

/* ---- loop driving ---- */

static struct ev_loop *loop;
static ev_timer tick;   /* keeps EVRUN_ONCE from blocking for long */

static void on_tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef bool (*pred_fn)(void *arg);

/* Runs the loop until pred holds or `seconds` pass; returns pred. */
static bool run_until(pred_fn pred, void *arg, double seconds)
{
    double deadline = now() + seconds;
    while (!pred(arg)) {
        if (now() > deadline)
            return false;
        ev_run(loop, EVRUN_ONCE);
    }
    return true;
}

/* Runs the loop for a while to show that something does NOT happen. */
static void run_for(double seconds)
{
    double deadline = now() + seconds;
    while (now() < deadline)
        ev_run(loop, EVRUN_ONCE);
}

static bool is_closed(void *arg)
{
    return ((struct rec *)arg)->c == NULL;
}

struct ev_wait {
    struct rec *r;
    int ev;
    int count;
};

static bool has_events(void *arg)
{
    struct ev_wait *w = arg;
    return count_ev(w->r, w->ev) >= w->count;
}

static bool wait_event(struct rec *r, int ev, int count)
{
    struct ev_wait w = { r, ev, count };
    return run_until(has_events, &w, DEADLINE);
}

/* ---- the plaintext peer ---- */

static int make_pair(int *peer)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return -1;
    fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
    *peer = sv[1];
    return sv[0];
}

static struct conn *new_conn(struct rec *r, int *peer, SSL_CTX *ctx)
{
    int fd = make_pair(peer);
    r->c = conn_new(loop, fd, NULL, 0, ctx, handler, r);
    return r->c;
}

static void peer_send(int fd, const char *s)
{
    size_t len = strlen(s);
    CHECK_INT(send(fd, s, len, MSG_NOSIGNAL), (long long)len);
}

struct peer_read {
    int fd;
    struct buf got;
    const char *want;   /* stop once this text was received */
    bool eof;
};

static bool peer_read_step(void *arg)
{
    struct peer_read *p = arg;
    char tmp[65536];
    for (;;) {
        ssize_t n = recv(p->fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            buf_append(&p->got, tmp, (size_t)n);
            continue;
        }
        if (n == 0)
            p->eof = true;
        break;
    }
    if (p->want)
        return p->got.len > 0 && memmem(p->got.data, p->got.len, p->want, strlen(p->want));
    return p->eof;
}

static void free_rec(struct rec *r)
{
    buf_free(&r->lines);
}

/* ---- plaintext tests ---- */

TEST(lines_in_and_out)
{
    struct rec r = { .consume = true, .echo = true };
    int peer;
    CHECK(new_conn(&r, &peer, NULL) != NULL);
    CHECK_INT(conn_count(), 1);
    peer_send(peer, "HELO a\r\nNOOP\nPART");
    struct peer_read p = { .fd = peer, .want = "echo:NOOP\r\n" };
    CHECK(run_until(peer_read_step, &p, DEADLINE));
    CHECK_STR(lines_of(&r), "HELO a|NOOP|");
    CHECK_INT(r.bare_lf_count, 1);
    /* the partial line stays buffered until its end arrives */
    size_t len;
    conn_input(r.c, &len);
    CHECK_INT(len, 4);
    peer_send(peer, "IAL\r\n");
    p.want = "echo:PARTIAL\r\n";
    CHECK(run_until(peer_read_step, &p, DEADLINE));
    CHECK(memmem(p.got.data, p.got.len, "echo:HELO a\r\necho:NOOP\r\necho:PARTIAL\r\n", 38));
    CHECK_STR(lines_of(&r), "HELO a|NOOP|PARTIAL|");
    conn_close(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_INT(count_ev(&r, CONN_EV_CLOSED), 1);
    CHECK_INT(r.nested, 0);
    CHECK_INT(conn_count(), 0);
    buf_free(&p.got);
    free_rec(&r);
    close(peer);
}

TEST(line_too_long)
{
    struct rec r = { .consume = true, .max_line = 10 };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "12345678\r\n");   /* exactly 10 bytes: fits */
    CHECK(wait_event(&r, CONN_EV_READ, 1));
    CHECK_STR(lines_of(&r), "12345678|");
    CHECK_INT(r.too_long, 0);
    peer_send(peer, "123456");         /* short, no LF yet: waits */
    CHECK(wait_event(&r, CONN_EV_READ, 2));
    CHECK_INT(r.too_long, 0);
    peer_send(peer, "7890");           /* 10 bytes, no LF: too long */
    CHECK(wait_event(&r, CONN_EV_READ, 3));
    CHECK_INT(r.too_long, 1);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    free_rec(&r);
    close(peer);
}

TEST(peek_line_reports_bare_lf_and_crlf)
{
    struct rec r = { 0 };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "A\r\nB\n\n");
    CHECK(wait_event(&r, CONN_EV_READ, 1));
    const char *line;
    size_t len, used;
    bool bare = true;
    CHECK_INT(conn_peek_line(r.c, 100, &line, &len, &used, &bare), 1);
    CHECK_INT(len, 1);
    CHECK_INT(used, 3);
    CHECK(!bare);
    CHECK(line[0] == 'A');
    conn_consume(r.c, used);
    CHECK_INT(conn_peek_line(r.c, 100, &line, &len, &used, &bare), 1);
    CHECK_INT(len, 1);
    CHECK_INT(used, 2);
    CHECK(bare);
    conn_consume(r.c, used);
    CHECK_INT(conn_peek_line(r.c, 100, &line, &len, &used, NULL), 1);
    CHECK_INT(len, 0);
    conn_consume(r.c, used);
    CHECK_INT(conn_peek_line(r.c, 100, &line, &len, &used, &bare), 0);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    free_rec(&r);
    close(peer);
}

TEST(pause_and_resume_redeliver_buffered_input)
{
    struct rec r = { .pause_on_read = true };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "ONE\r\n");
    CHECK(wait_event(&r, CONN_EV_READ, 1));
    peer_send(peer, "TWO\r\n");
    run_for(0.1);
    CHECK_INT(count_ev(&r, CONN_EV_READ), 1);   /* paused: nothing delivered or read */
    size_t len;
    conn_input(r.c, &len);
    CHECK_INT(len, 5);
    r.pause_on_read = false;
    r.consume = true;
    conn_resume_read(r.c);
    CHECK_INT(count_ev(&r, CONN_EV_READ), 1);   /* not from inside the call */
    /* the buffered line comes first; TWO follows once reading restarts */
    for (double end = now() + DEADLINE; now() < end && strcmp(lines_of(&r), "ONE|TWO|");)
        ev_run(loop, EVRUN_ONCE);
    CHECK_STR(lines_of(&r), "ONE|TWO|");
    CHECK_INT(r.nested, 0);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    free_rec(&r);
    close(peer);
}

/* Resuming from inside the handler does not re-enter it: the READ for the
 * input left behind arrives on a later loop iteration. */
TEST(resume_inside_handler_is_deferred)
{
    struct rec r = { .pause_on_read = true, .resume_in_handler = true };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "X");
    CHECK(wait_event(&r, CONN_EV_READ, 3));
    CHECK_INT(r.nested, 0);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    free_rec(&r);
    close(peer);
}

struct flood {
    int fd;
    size_t sent;
    size_t total;
};

static void flood_step(struct flood *f)
{
    static char chunk[8192];
    memset(chunk, 'x', sizeof chunk);
    while (f->sent < f->total) {
        size_t n = f->total - f->sent < sizeof chunk ? f->total - f->sent : sizeof chunk;
        ssize_t w = send(f->fd, chunk, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        f->sent += (size_t)w;
    }
}

struct bp {
    struct rec *r;
    struct flood *f;
};

static bool input_full(void *arg)
{
    struct bp *b = arg;
    flood_step(b->f);
    size_t len;
    conn_input(b->r->c, &len);
    return len >= CONN_INPUT_MAX;
}

static size_t consumed_total;

static bool drained(void *arg)
{
    struct bp *b = arg;
    flood_step(b->f);
    size_t len;
    conn_input(b->r->c, &len);
    conn_consume(b->r->c, len);
    consumed_total += len;
    return consumed_total == b->f->total;
}

TEST(backpressure_at_input_max)
{
    struct rec r = { 0 };
    int peer;
    new_conn(&r, &peer, NULL);
    struct flood f = { .fd = peer, .total = 32 * CONN_INPUT_MAX };
    struct bp b = { &r, &f };
    CHECK(run_until(input_full, &b, DEADLINE));
    run_for(0.1);
    flood_step(&f);
    size_t len;
    conn_input(r.c, &len);
    CHECK_INT(len, CONN_INPUT_MAX);   /* never more than the limit */
    CHECK(f.sent < f.total);          /* the peer is blocked by flow control */
    consumed_total = 0;
    CHECK(run_until(drained, &b, DEADLINE));
    CHECK_INT(consumed_total, f.total);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    free_rec(&r);
    close(peer);
}

TEST(peer_eof_delivers_read_then_closed)
{
    struct rec r = { .consume = true };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "QUIT\r\n");
    close(peer);
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_STR(lines_of(&r), "QUIT|");
    CHECK_INT(r.nev, 2);
    CHECK_INT(r.events[0], CONN_EV_READ);
    CHECK_INT(r.events[1], CONN_EV_CLOSED);
    CHECK_INT(conn_count(), 0);
    free_rec(&r);
}

/* A protocol that paused (waiting for a worker) still gets the input that
 * was pipelined before the peer closed, once it resumes. */
TEST(peer_eof_waits_for_paused_input)
{
    struct rec r = { .pause_on_read = true };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "MAIL\r\nQUIT\r\n");
    CHECK(wait_event(&r, CONN_EV_READ, 1));
    close(peer);
    run_for(0.1);
    CHECK(r.c != NULL);
    r.pause_on_read = false;
    r.consume = true;
    conn_resume_read(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_STR(lines_of(&r), "MAIL|QUIT|");
    CHECK_INT(r.events[r.nev - 1], CONN_EV_CLOSED);
    CHECK_INT(count_ev(&r, CONN_EV_CLOSED), 1);
    free_rec(&r);
}

TEST(idle_timeout_fires_and_conn_stays_open)
{
    struct rec r = { .consume = true };
    int peer;
    new_conn(&r, &peer, NULL);
    conn_set_timeout(r.c, 0.05);
    CHECK(wait_event(&r, CONN_EV_TIMEOUT, 1));
    CHECK(r.c != NULL);
    CHECK_INT(conn_count(), 1);
    /* still usable after the timeout */
    peer_send(peer, "STILL\r\n");
    CHECK(wait_event(&r, CONN_EV_READ, 1));
    CHECK_STR(lines_of(&r), "STILL|");
    conn_set_timeout(r.c, 0);
    int timeouts = count_ev(&r, CONN_EV_TIMEOUT);
    run_for(0.15);
    CHECK_INT(count_ev(&r, CONN_EV_TIMEOUT), timeouts);   /* disabled */
    conn_close(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    free_rec(&r);
    close(peer);
}

TEST(close_flushes_output_first)
{
    struct rec r = { 0 };
    int peer;
    new_conn(&r, &peer, NULL);
    size_t total = 1024 * 1024 + 17;
    char *big = malloc(total);
    for (size_t i = 0; i < total; i++)
        big[i] = (char)('a' + i % 26);
    conn_write(r.c, big, total);
    conn_printf(r.c, "%s\r\n", "221 bye");
    CHECK(conn_output_pending(r.c) > 0);
    conn_close(r.c);
    conn_close(r.c);   /* idempotent */
    CHECK_INT(count_ev(&r, CONN_EV_CLOSED), 0);   /* never from inside the call */
    struct peer_read p = { .fd = peer };
    CHECK(run_until(peer_read_step, &p, DEADLINE));
    CHECK(p.eof);
    CHECK_INT(p.got.len, total + 9);
    CHECK(p.got.len == total + 9 && memcmp(p.got.data, big, total) == 0 &&
          memcmp(p.got.data + total, "221 bye\r\n", 9) == 0);
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_INT(count_ev(&r, CONN_EV_CLOSED), 1);
    free(big);
    buf_free(&p.got);
    free_rec(&r);
    close(peer);
}

TEST(abort_closes_on_next_iteration)
{
    struct rec r = { 0 };
    int peer;
    new_conn(&r, &peer, NULL);
    conn_write(r.c, "lost\r\n", 6);
    conn_abort(r.c);
    CHECK_INT(r.nev, 0);
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_INT(r.nev, 1);
    CHECK_INT(conn_count(), 0);
    struct peer_read p = { .fd = peer };
    CHECK(run_until(peer_read_step, &p, DEADLINE));
    CHECK_INT(p.got.len, 0);
    free_rec(&r);
    close(peer);
}

TEST(peer_addresses)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t slen = sizeof sa;
    CHECK_INT(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    listen(lfd, 1);
    getsockname(lfd, (struct sockaddr *)&sa, &slen);
    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_INT(connect(cfd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct sockaddr_in csa;
    socklen_t clen = sizeof csa;
    getsockname(cfd, (struct sockaddr *)&csa, &clen);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    int sfd = accept(lfd, (struct sockaddr *)&peer, &plen);
    struct rec r = { 0 };
    r.c = conn_new(loop, sfd, (struct sockaddr *)&peer, plen, NULL, handler, &r);
    CHECK_STR(conn_peer_addr(r.c), "127.0.0.1");
    CHECK_INT(conn_peer_port(r.c), ntohs(csa.sin_port));
    CHECK_STR(conn_local_addr(r.c), "127.0.0.1");
    CHECK_INT(conn_local_port(r.c), ntohs(sa.sin_port));
    CHECK(!conn_is_tls(r.c));
    CHECK(conn_tls_version(r.c) == NULL);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    close(cfd);
    close(lfd);

    /* an IPv4-mapped IPv6 peer is shown as plain IPv4 */
    struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(2525) };
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &s6.sin6_addr);
    int p2;
    struct rec r2 = { 0 };
    r2.c = conn_new(loop, make_pair(&p2), (struct sockaddr *)&s6, sizeof s6, NULL, handler, &r2);
    CHECK_STR(conn_peer_addr(r2.c), "192.0.2.7");
    CHECK_INT(conn_peer_port(r2.c), 2525);
    conn_abort(r2.c);
    inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
    int p3;
    struct rec r3 = { 0 };
    r3.c = conn_new(loop, make_pair(&p3), (struct sockaddr *)&s6, sizeof s6, NULL, handler, &r3);
    CHECK_STR(conn_peer_addr(r3.c), "2001:db8::1");
    conn_abort(r3.c);
    CHECK(run_until(is_closed, &r2, DEADLINE));
    CHECK(run_until(is_closed, &r3, DEADLINE));
    close(p2);
    close(p3);
}

/* ---- TLS ---- */

static X509 *server_cert;   /* trusted by the verifying client context */

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
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509_sign(x, key, EVP_sha256());
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    CHECK_INT(SSL_CTX_use_certificate(ctx, x), 1);
    CHECK_INT(SSL_CTX_use_PrivateKey(ctx, key), 1);
    server_cert = x;
    EVP_PKEY_free(key);
    return ctx;
}

struct tls_client {
    SSL *ssl;
    bool connected;
    bool failed;
    struct buf got;
    const char *want;
};

static bool client_connect_step(void *arg)
{
    struct tls_client *t = arg;
    int rc = SSL_connect(t->ssl);
    if (rc == 1) {
        t->connected = true;
        return true;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        t->failed = true;
    return t->failed;
}

static bool client_read_step(void *arg)
{
    struct tls_client *t = arg;
    char tmp[4096];
    int n;
    while ((n = SSL_read(t->ssl, tmp, sizeof tmp)) > 0)
        buf_append(&t->got, tmp, (size_t)n);
    return t->got.len > 0 && memmem(t->got.data, t->got.len, t->want, strlen(t->want));
}

static void client_write(struct tls_client *t, const char *s)
{
    CHECK_INT(SSL_write(t->ssl, s, (int)strlen(s)), (long long)strlen(s));
}

static struct tls_client *client_new(SSL_CTX *cctx, int fd)
{
    struct tls_client *t = calloc(1, sizeof *t);
    t->ssl = SSL_new(cctx);
    SSL_set_fd(t->ssl, fd);
    return t;
}

static void client_free(struct tls_client *t)
{
    SSL_free(t->ssl);
    buf_free(&t->got);
    free(t);
}

static SSL_CTX *sctx, *cctx;

TEST(implicit_tls)
{
    struct rec r = { .consume = true, .echo = true, .greeting = "220 hello\r\n",
                      .max_line = 50000 };
    int peer;
    CHECK(new_conn(&r, &peer, sctx) != NULL);
    CHECK(conn_is_tls(r.c));
    struct tls_client *t = client_new(cctx, peer);
    CHECK(run_until(client_connect_step, t, DEADLINE));
    CHECK(t->connected);
    t->want = "220 hello\r\n";
    CHECK(run_until(client_read_step, t, DEADLINE));
    CHECK_INT(count_ev(&r, CONN_EV_TLS_READY), 1);
    CHECK(conn_tls_version(r.c) != NULL);
    CHECK(conn_tls_cipher(r.c) != NULL);
    CHECK_INT(conn_starttls(r.c, sctx), -1);
    /* more than one TLS record each way */
    char big[40000];
    memset(big, 'z', sizeof big - 3);
    memcpy(big + sizeof big - 3, "\r\n", 3);
    client_write(t, "PING\r\n");
    client_write(t, big);
    t->want = "zzz\r\n";
    CHECK(run_until(client_read_step, t, DEADLINE));
    CHECK(memmem(t->got.data, t->got.len, "echo:PING\r\n", 11) != NULL);
    CHECK(t->got.len == 11 + 11 + 5 + sizeof big - 1);
    CHECK(strncmp(lines_of(&r), "PING|zzzz", 9) == 0);
    /* orderly close: the client sees close_notify and EOF */
    conn_close(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    char tmp[16];
    int n = SSL_read(t->ssl, tmp, sizeof tmp);
    CHECK(n <= 0);
    CHECK_INT(SSL_get_error(t->ssl, n), SSL_ERROR_ZERO_RETURN);
    CHECK_INT(r.nested, 0);
    client_free(t);
    free_rec(&r);
    close(peer);
}

struct tls_flood {
    struct rec *r;
    struct tls_client *t;
    size_t sent, total, consumed;
    bool consume;
};

static bool tls_flood_step(void *arg)
{
    struct tls_flood *f = arg;
    static char chunk[5000];   /* not a multiple of the record size */
    memset(chunk, 'y', sizeof chunk);
    while (f->sent < f->total) {
        size_t n = f->total - f->sent < sizeof chunk ? f->total - f->sent : sizeof chunk;
        int w = SSL_write(f->t->ssl, chunk, (int)n);
        if (w <= 0)
            break;
        f->sent += (size_t)w;
    }
    size_t len;
    conn_input(f->r->c, &len);
    if (!f->consume)
        return len >= CONN_INPUT_MAX;
    conn_consume(f->r->c, len);
    f->consumed += len;
    return f->consumed == f->total;
}

/* Records left inside OpenSSL while the input buffer was full must still
 * be delivered once it is consumed (the socket never signals them). */
static void tls_backpressure_case(size_t total)
{
    struct rec r = { 0 };
    int peer;
    new_conn(&r, &peer, sctx);
    struct tls_client *t = client_new(cctx, peer);
    SSL_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE);
    CHECK(run_until(client_connect_step, t, DEADLINE));
    struct tls_flood f = { .r = &r, .t = t, .total = total };
    CHECK(run_until(tls_flood_step, &f, DEADLINE));
    run_for(0.05);
    size_t len;
    conn_input(r.c, &len);
    CHECK_INT(len, CONN_INPUT_MAX);
    f.consume = true;
    CHECK(run_until(tls_flood_step, &f, DEADLINE));
    CHECK_INT(f.consumed, f.total);
    conn_abort(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    client_free(t);
    free_rec(&r);
    close(peer);
}

TEST(tls_backpressure)
{
    /* 5000-byte records: the tail of the last one is left inside OpenSSL
     * with nothing more on the socket */
    tls_backpressure_case(CONN_INPUT_MAX + 100);
    tls_backpressure_case(16 * CONN_INPUT_MAX + 123);
}

TEST(implicit_tls_handshake_failure_closes)
{
    struct rec r = { 0 };
    int peer;
    new_conn(&r, &peer, sctx);
    peer_send(peer, "EHLO plaintext\r\n");
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_INT(r.nev, 1);
    CHECK_INT(r.events[0], CONN_EV_CLOSED);
    free_rec(&r);
    close(peer);
}

struct plain_line {
    int fd;
    char got[64];
    size_t len;
};

/* Reads byte by byte so nothing after the 220 line is taken from the
 * socket: the TLS handshake must see it. */
/* ---- client side ---- */

static SSL_CTX *make_verifying_client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), server_cert);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

static const char *want_lines;   /* what lines_contain waits for */

static bool lines_contain(void *arg)
{
    struct rec *r = arg;
    return r->lines.len > 0 && strstr(lines_of(r), want_lines) != NULL;
}

/* A client conn with implicit TLS against a server conn in the same loop;
 * the verifying context accepts the certificate for its name. */
TEST(client_implicit_tls_handshake)
{
    SSL_CTX *vctx = make_verifying_client_ctx();
    struct rec srv = { .consume = true, .echo = true, .greeting = "220 hello\r\n" };
    int peer;
    CHECK(new_conn(&srv, &peer, sctx) != NULL);
    struct rec cli = { .consume = true };
    want_lines = "220 hello|";
    cli.c = conn_new_client(loop, peer, NULL, 0, vctx, "localhost", handler, &cli);
    CHECK(cli.c != NULL);
    CHECK(run_until(lines_contain, &cli, DEADLINE));
    CHECK_INT(count_ev(&cli, CONN_EV_TLS_READY), 1);
    CHECK(conn_tls_version(cli.c) != NULL);
    CHECK_STR(conn_error(cli.c), "");
    conn_printf(cli.c, "PING\r\n");
    want_lines = "|echo:PING|";
    CHECK(run_until(lines_contain, &cli, DEADLINE));
    conn_close(cli.c);
    CHECK(run_until(is_closed, &cli, DEADLINE));
    CHECK(run_until(is_closed, &srv, DEADLINE));
    free_rec(&cli);
    free_rec(&srv);
    SSL_CTX_free(vctx);
}

/* Verification against a name the certificate does not carry fails the
 * handshake: CLOSED, with the reason. */
TEST(client_tls_wrong_name_fails)
{
    SSL_CTX *vctx = make_verifying_client_ctx();
    struct rec srv = { .consume = true, .greeting = "220 hello\r\n" };
    int peer;
    CHECK(new_conn(&srv, &peer, sctx) != NULL);
    struct rec cli = { .consume = true };
    cli.c = conn_new_client(loop, peer, NULL, 0, vctx, "wrong.example", handler, &cli);
    CHECK(cli.c != NULL);
    CHECK(run_until(is_closed, &cli, DEADLINE));
    CHECK_INT(count_ev(&cli, CONN_EV_TLS_READY), 0);
    CHECK_INT(count_ev(&cli, CONN_EV_CLOSED), 1);
    CHECK(run_until(is_closed, &srv, DEADLINE));
    CHECK_INT(count_ev(&srv, CONN_EV_TLS_READY), 0);
    free_rec(&cli);
    free_rec(&srv);
    SSL_CTX_free(vctx);
}

struct err_probe {
    struct rec r;
    char error[400];
};

static void probe_handler(struct conn *c, enum conn_event ev, void *arg)
{
    struct err_probe *p = arg;
    if (ev == CONN_EV_CLOSED)
        snprintf(p->error, sizeof p->error, "%s", conn_error(c));
    handler(c, ev, &p->r);
}

TEST(client_tls_wrong_name_reports_reason)
{
    SSL_CTX *vctx = make_verifying_client_ctx();
    struct rec srv = { .consume = true };
    int peer;
    CHECK(new_conn(&srv, &peer, sctx) != NULL);
    struct err_probe p = { .r = { .consume = true } };
    p.r.c = conn_new_client(loop, peer, NULL, 0, vctx, "wrong.example", probe_handler, &p);
    CHECK(run_until(is_closed, &p.r, DEADLINE));
    CHECK(strstr(p.error, "certificate verification failed") != NULL);
    CHECK(run_until(is_closed, &srv, DEADLINE));
    free_rec(&p.r);
    free_rec(&srv);
    SSL_CTX_free(vctx);
}

/* Plaintext first, then STARTTLS from the client side. */
TEST(client_starttls)
{
    SSL_CTX *vctx = make_verifying_client_ctx();
    struct rec srv = { .consume = true, .starttls_ctx = sctx, .greeting = "220 secured\r\n" };
    int peer;
    CHECK(new_conn(&srv, &peer, NULL) != NULL);
    struct rec cli = { .consume = true };
    want_lines = "220 ready|";
    cli.c = conn_new_client(loop, peer, NULL, 0, NULL, "localhost", handler, &cli);
    CHECK(cli.c != NULL);
    CHECK(!conn_is_tls(cli.c));
    conn_printf(cli.c, "STARTTLS\r\n");
    CHECK(run_until(lines_contain, &cli, DEADLINE));
    CHECK_INT(conn_starttls_client(cli.c, vctx, NULL), 0);
    CHECK_INT(conn_starttls_client(cli.c, vctx, NULL), -1);   /* already TLS */
    want_lines = "220 secured|";
    CHECK(run_until(lines_contain, &cli, DEADLINE));
    CHECK_INT(count_ev(&cli, CONN_EV_TLS_READY), 1);
    CHECK(conn_tls_version(cli.c) != NULL);
    CHECK_INT(srv.starttls_rc, 0);
    CHECK_INT(conn_starttls_client(srv.c, vctx, NULL), -1);   /* not a client conn */
    conn_close(cli.c);
    CHECK(run_until(is_closed, &cli, DEADLINE));
    CHECK(run_until(is_closed, &srv, DEADLINE));
    free_rec(&cli);
    free_rec(&srv);
    SSL_CTX_free(vctx);
}

static bool plain_line_step(void *arg)
{
    struct plain_line *p = arg;
    while (p->len < sizeof p->got - 1) {
        if (recv(p->fd, p->got + p->len, 1, 0) != 1)
            return false;
        if (p->got[p->len++] == '\n') {
            p->got[p->len] = '\0';
            return true;
        }
    }
    return true;
}

TEST(starttls_discards_injected_plaintext)
{
    struct rec r = { .consume = true, .starttls_ctx = sctx };
    int peer;
    new_conn(&r, &peer, NULL);
    peer_send(peer, "STARTTLS\r\nINJECTED\r\n");
    struct plain_line pl = { .fd = peer };
    CHECK(run_until(plain_line_step, &pl, DEADLINE));
    CHECK_STR(pl.got, "220 ready\r\n");
    CHECK_INT(r.starttls_rc, 0);
    CHECK(conn_is_tls(r.c));
    struct tls_client *t = client_new(cctx, peer);
    CHECK(run_until(client_connect_step, t, DEADLINE));
    CHECK(t->connected);
    client_write(t, "AFTER\r\n");
    struct ev_wait w = { &r, CONN_EV_READ, 2 };
    CHECK(run_until(has_events, &w, DEADLINE));
    CHECK_STR(lines_of(&r), "STARTTLS|AFTER|");
    CHECK_INT(count_ev(&r, CONN_EV_TLS_READY), 1);
    CHECK(conn_tls_version(r.c) != NULL);
    CHECK(conn_tls_cipher(r.c) != NULL);
    CHECK_INT(conn_starttls(r.c, sctx), -1);
    conn_close(r.c);
    CHECK(run_until(is_closed, &r, DEADLINE));
    CHECK_INT(r.nested, 0);
    client_free(t);
    free_rec(&r);
    close(peer);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer_init(&tick, on_tick, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    sctx = make_server_ctx();
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);

    RUN(lines_in_and_out);
    RUN(line_too_long);
    RUN(peek_line_reports_bare_lf_and_crlf);
    RUN(pause_and_resume_redeliver_buffered_input);
    RUN(resume_inside_handler_is_deferred);
    RUN(backpressure_at_input_max);
    RUN(peer_eof_delivers_read_then_closed);
    RUN(peer_eof_waits_for_paused_input);
    RUN(idle_timeout_fires_and_conn_stays_open);
    RUN(close_flushes_output_first);
    RUN(abort_closes_on_next_iteration);
    RUN(peer_addresses);
    RUN(implicit_tls);
    RUN(tls_backpressure);
    RUN(implicit_tls_handshake_failure_closes);
    RUN(starttls_discards_injected_plaintext);
    RUN(client_implicit_tls_handshake);
    RUN(client_tls_wrong_name_fails);
    RUN(client_tls_wrong_name_reports_reason);
    RUN(client_starttls);
    CHECK_INT(conn_count(), 0);

    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    X509_free(server_cert);
    ev_timer_stop(loop, &tick);
    ev_loop_destroy(loop);
    return test_summary();
}
