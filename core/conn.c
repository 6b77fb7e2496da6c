#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "buf.h"
#include "log.h"

/* How long conn_close may spend flushing output before it gives up. */
#define CONN_CLOSE_DEADLINE 5.0
/* Bytes read per read(2)/SSL_read call; a stack buffer, so an idle conn
 * holds no input memory. */
#define CONN_READ_CHUNK (16 * 1024)
/* Unread input drained before close(2), so the kernel does not answer
 * our final reply with a RST that makes the peer drop it. */
#define CONN_CLOSE_DRAIN (64 * 1024)

enum tls_state {
    TLS_NONE,       /* plaintext */
    TLS_WAIT_FLUSH, /* STARTTLS accepted: flushing the reply, input discarded */
    TLS_ACCEPTING,  /* handshake in progress (server or client side) */
    TLS_UP,
};

/* Events waiting to be delivered by dispatch(). */
#define PEND_READ      0x1u
#define PEND_TLS_READY 0x2u
#define PEND_TIMEOUT   0x4u

struct conn {
    struct ev_loop *loop;
    conn_handler handler;
    void *arg;
    int fd;
    ev_io rio;
    ev_io wio;
    ev_timer timer;    /* idle timeout, or the close deadline once closing */
    ev_idle defer;     /* runs dispatch on a later loop iteration */
    double timeout;
    struct buf in;     /* unconsumed input starts at in_off */
    size_t in_off;
    struct buf out;    /* unsent output starts at out_off */
    size_t out_off;
    SSL *ssl;
    enum tls_state tls;
    unsigned pend;
    bool paused;
    bool resume_pending;   /* resumed: redeliver buffered input when deferred */
    bool closing;          /* conn_close called: flush, then close */
    bool eof;              /* no more input: peer closed, or an error */
    bool err;              /* no more output possible */
    bool finished;         /* CLOSED is being delivered */
    bool in_dispatch;
    bool hs_want_write;    /* handshake waits for writability (else readability) */
    bool rd_want_write;    /* SSL_read needs the socket writable */
    bool wr_want_read;     /* SSL_write needs the socket readable */
    bool wblocked;         /* last write hit EAGAIN */
    bool client;           /* we connected: TLS handshakes are client side */
    unsigned short peer_port;
    unsigned short local_port;
    char peer_addr[INET6_ADDRSTRLEN];
    char local_addr[INET6_ADDRSTRLEN];
    char sni[256];         /* client: the name sent and verified, "" for none */
    char error[320];       /* why the connection broke, "" if it did not */
};

static atomic_uint live_conns;

static void dispatch(struct conn *c);

/* ---- small helpers ---- */

static size_t in_len(const struct conn *c)
{
    return c->in.len - c->in_off;
}

static size_t out_len(const struct conn *c)
{
    return c->out.len - c->out_off;
}

static void in_discard(struct conn *c)
{
    buf_free(&c->in);
    c->in_off = 0;
    c->pend &= ~PEND_READ;
}

static void out_discard(struct conn *c)
{
    buf_free(&c->out);
    c->out_off = 0;
}

/* Marks the connection broken: no input follows, output is dropped. */
static void set_broken(struct conn *c)
{
    if (!c->error[0] && !c->closing)
        snprintf(c->error, sizeof c->error, "connection lost");
    c->eof = true;
    c->err = true;
    out_discard(c);
}

static bool handshaking(const struct conn *c)
{
    return c->tls == TLS_WAIT_FLUSH || c->tls == TLS_ACCEPTING;
}

static bool read_allowed(const struct conn *c)
{
    if (c->fd < 0 || c->eof || c->closing || c->finished)
        return false;
    if (c->tls == TLS_WAIT_FLUSH)
        return true;    /* read only to discard */
    if (c->tls == TLS_ACCEPTING)
        return false;   /* the handshake reads by itself */
    return !c->paused && in_len(c) < CONN_INPUT_MAX;
}

static bool input_deliverable(const struct conn *c)
{
    return !c->paused && !c->closing && !handshaking(c) && in_len(c) > 0;
}

/* Runs dispatch on a later loop iteration (never from inside a conn_*
 * call, so the handler is not re-entered). */
static void kick(struct conn *c)
{
    if (!c->finished && !ev_is_active(&c->defer))
        ev_idle_start(c->loop, &c->defer);
}

/* After an API call changed state: dispatch() re-evaluates everything when
 * the handler returns, so a kick is only needed outside of it. */
static void touch(struct conn *c)
{
    if (!c->in_dispatch)
        kick(c);
}

static void set_io(struct conn *c, ev_io *w, bool on)
{
    if (on && !ev_is_active(w))
        ev_io_start(c->loop, w);
    else if (!on && ev_is_active(w))
        ev_io_stop(c->loop, w);
}

static void update_watchers(struct conn *c)
{
    bool want_r = false, want_w = false;
    if (c->fd >= 0 && !c->finished) {
        if (c->tls == TLS_ACCEPTING) {
            want_r = !c->hs_want_write;
            want_w = c->hs_want_write;
        } else {
            want_r = read_allowed(c) || c->wr_want_read;
            want_w = (out_len(c) > 0 && !c->wr_want_read) || c->rd_want_write;
        }
    }
    set_io(c, &c->rio, want_r);
    set_io(c, &c->wio, want_w);
}

static void tls_reason(char *dst, size_t dstlen, int ssl_err, int saved_errno)
{
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, dst, dstlen);
    else if (ssl_err == SSL_ERROR_SYSCALL && saved_errno != 0)
        snprintf(dst, dstlen, "%s", strerror(saved_errno));
    else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
        snprintf(dst, dstlen, "connection closed by peer");
    else
        snprintf(dst, dstlen, "TLS error %d", ssl_err);
}

/* ---- reading ---- */

static void reset_idle_timer(struct conn *c)
{
    if (c->timeout > 0 && !c->closing)
        ev_timer_again(c->loop, &c->timer);
}

static void take_input(struct conn *c, const char *data, size_t n)
{
    if (c->tls == TLS_WAIT_FLUSH) {
        log_info("conn: %s: discarded %zu bytes sent after STARTTLS", c->peer_addr, n);
        return;
    }
    if (c->in_off > 0) {
        buf_consume(&c->in, c->in_off);
        c->in_off = 0;
    }
    if (buf_append(&c->in, data, n) < 0) {
        log_error("conn: %s: out of memory buffering input", c->peer_addr);
        set_broken(c);
        return;
    }
    c->pend |= PEND_READ;
    reset_idle_timer(c);
}

static size_t read_room(const struct conn *c)
{
    if (c->tls == TLS_WAIT_FLUSH)
        return CONN_READ_CHUNK;
    size_t room = CONN_INPUT_MAX - in_len(c);
    return room < CONN_READ_CHUNK ? room : CONN_READ_CHUNK;
}

static void read_plain(struct conn *c)
{
    char tmp[CONN_READ_CHUNK];
    ssize_t n = recv(c->fd, tmp, read_room(c), 0);
    if (n < 0 && errno == ENOTSOCK)
        n = read(c->fd, tmp, read_room(c));
    if (n > 0) {
        take_input(c, tmp, (size_t)n);
    } else if (n == 0) {
        c->eof = true;
        if (!c->error[0])
            snprintf(c->error, sizeof c->error, "connection closed by peer");
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        log_debug("conn: %s: read error: %s", c->peer_addr, strerror(errno));
        snprintf(c->error, sizeof c->error, "read error: %s", strerror(errno));
        set_broken(c);
    }
}

/* Reads until OpenSSL has nothing buffered: a record already inside
 * OpenSSL never makes the socket readable again. */
static void read_tls(struct conn *c)
{
    char tmp[CONN_READ_CHUNK];
    c->rd_want_write = false;
    while (read_allowed(c)) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, tmp, (int)read_room(c));
        if (r > 0) {
            take_input(c, tmp, (size_t)r);
            if (!SSL_has_pending(c->ssl))
                return;
            continue;
        }
        int saved = errno;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            return;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->rd_want_write = true;
            return;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->eof = true;
            if (!c->error[0])
                snprintf(c->error, sizeof c->error, "connection closed by peer");
        } else {
            char why[256];
            tls_reason(why, sizeof why, e, saved);
            log_debug("conn: %s: TLS read failed: %s", c->peer_addr, why);
            snprintf(c->error, sizeof c->error, "TLS read failed: %s", why);
            set_broken(c);
        }
        return;
    }
}

static void do_read(struct conn *c)
{
    if (!read_allowed(c))
        return;
    if (c->tls == TLS_UP)
        read_tls(c);
    else
        read_plain(c);
}

/* ---- writing ---- */

static void out_sent(struct conn *c, size_t n)
{
    c->out_off += n;
    if (c->out_off >= c->out.len)
        out_discard(c);   /* empty: give the memory back */
}

static void flush_plain(struct conn *c)
{
    while (out_len(c) > 0) {
        const char *p = c->out.data + c->out_off;
        ssize_t n = send(c->fd, p, out_len(c), MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = write(c->fd, p, out_len(c));
        if (n > 0) {
            out_sent(c, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            c->wblocked = true;
            return;
        } else {
            log_debug("conn: %s: write error: %s", c->peer_addr, strerror(errno));
            snprintf(c->error, sizeof c->error, "write error: %s", strerror(errno));
            set_broken(c);
            return;
        }
    }
}

static void flush_tls(struct conn *c)
{
    c->wr_want_read = false;
    while (out_len(c) > 0) {
        size_t len = out_len(c);
        ERR_clear_error();
        /* SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets a retry pass a moved
         * buffer; the length never shrinks because output only grows. */
        int r = SSL_write(c->ssl, c->out.data + c->out_off, len > INT_MAX ? INT_MAX : (int)len);
        if (r > 0) {
            out_sent(c, (size_t)r);
            continue;
        }
        int saved = errno;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE) {
            c->wblocked = true;
        } else if (e == SSL_ERROR_WANT_READ) {
            c->wr_want_read = true;
        } else {
            char why[256];
            tls_reason(why, sizeof why, e, saved);
            log_debug("conn: %s: TLS write failed: %s", c->peer_addr, why);
            snprintf(c->error, sizeof c->error, "TLS write failed: %s", why);
            set_broken(c);
        }
        return;
    }
}

static void flush(struct conn *c)
{
    if (c->fd < 0 || c->err || c->wblocked || out_len(c) == 0 || c->tls == TLS_ACCEPTING)
        return;
    if (c->tls == TLS_UP)
        flush_tls(c);
    else
        flush_plain(c);
}

/* ---- TLS handshake ---- */

static void handshake_failed(struct conn *c, int ssl_err, int saved_errno)
{
    char why[256];
    tls_reason(why, sizeof why, ssl_err, saved_errno);
    if (c->ssl && SSL_get_verify_result(c->ssl) != X509_V_OK)
        snprintf(why, sizeof why, "certificate verification failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
    log_info("conn: TLS handshake failed with %s: %s", c->peer_addr, why);
    snprintf(c->error, sizeof c->error, "TLS handshake failed: %s", why);
    set_broken(c);
}

static void do_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls = TLS_UP;
        c->pend |= PEND_TLS_READY;
        log_debug("conn: %s: %s %s", c->peer_addr, SSL_get_version(c->ssl),
                  SSL_get_cipher_name(c->ssl));
        do_read(c);   /* application data may follow the Finished message */
        return;
    }
    int saved = errno;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        c->hs_want_write = false;
    else if (e == SSL_ERROR_WANT_WRITE)
        c->hs_want_write = true;
    else
        handshake_failed(c, e, saved);
}

/* SNI must not carry an address (RFC 6066 3); SSL_set1_host checks one
 * against the certificate's IP SANs all the same. */
static bool is_ip_literal(const char *s)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static int ssl_attach(struct conn *c, SSL_CTX *ctx)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        log_error("conn: %s: cannot create TLS session", c->peer_addr);
        SSL_free(c->ssl);
        c->ssl = NULL;
        return -1;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
    if (!c->client) {
        SSL_set_accept_state(c->ssl);
        return 0;
    }
    SSL_set_connect_state(c->ssl);
    if (c->sni[0] && !is_ip_literal(c->sni) && SSL_set_tlsext_host_name(c->ssl, c->sni) != 1)
        goto fail;
    /* Only a verifying context checks the name; opportunistic TLS (port 25)
     * takes any certificate. */
    if ((SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) && c->sni[0] &&
        SSL_set1_host(c->ssl, c->sni) != 1)
        goto fail;
    return 0;
fail:
    log_error("conn: %s: cannot set the TLS server name %s", c->peer_addr, c->sni);
    SSL_free(c->ssl);
    c->ssl = NULL;
    return -1;
}

/* ---- closing ---- */

static void stop_watchers(struct conn *c)
{
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->timer);
    ev_idle_stop(c->loop, &c->defer);
}

static void drain_unread(struct conn *c)
{
    char tmp[CONN_READ_CHUNK];
    for (size_t total = 0; total < CONN_CLOSE_DRAIN;) {
        ssize_t n = recv(c->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n <= 0)
            return;
        total += (size_t)n;
    }
}

static void close_fd(struct conn *c)
{
    if (c->fd < 0)
        return;
    if (c->ssl) {
        if (c->tls == TLS_UP && !c->err) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);   /* best effort: send close_notify */
        }
        ERR_clear_error();
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    /* Unread input makes close() send a reset, which can destroy replies
     * the client has not read yet (a last error, "* BYE"); TLS records
     * are just as unread, so drain them too. */
    if (!c->eof)
        drain_unread(c);
    close(c->fd);
    c->fd = -1;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->timer);
    in_discard(c);
    out_discard(c);
}

static void conn_free(struct conn *c)
{
    stop_watchers(c);
    close_fd(c);
    free(c);
    atomic_fetch_sub(&live_conns, 1);
}

/* ---- dispatch: the only place the handler is called ---- */

/* Work that needs no handler: flushing, finishing a close, starting a
 * handshake once the STARTTLS reply is out. */
static void progress(struct conn *c)
{
    if (c->fd < 0)
        return;
    flush(c);
    if (c->closing) {
        if (out_len(c) == 0 || c->err || c->tls == TLS_ACCEPTING)
            close_fd(c);
        return;
    }
    if (c->tls == TLS_WAIT_FLUSH && out_len(c) == 0 && !c->err) {
        c->tls = TLS_ACCEPTING;
        do_handshake(c);
    }
}

/* The next event to deliver, or -1. CLOSED waits while the protocol holds
 * paused input, so a client that pipelines and closes is still served. */
static int next_event(struct conn *c)
{
    if (c->fd < 0)
        return CONN_EV_CLOSED;
    if (c->pend & PEND_TLS_READY) {
        c->pend &= ~PEND_TLS_READY;
        return CONN_EV_TLS_READY;
    }
    if (c->pend & PEND_TIMEOUT) {
        c->pend &= ~PEND_TIMEOUT;
        if (!c->closing)
            return CONN_EV_TIMEOUT;
    }
    if ((c->pend & PEND_READ) && input_deliverable(c)) {
        c->pend &= ~PEND_READ;
        return CONN_EV_READ;
    }
    if (c->eof && !c->closing && !(c->paused && in_len(c) > 0)) {
        flush(c);   /* best effort: the peer may have only half-closed */
        close_fd(c);
        return CONN_EV_CLOSED;
    }
    return -1;
}

static void dispatch(struct conn *c)
{
    c->in_dispatch = true;
    for (;;) {
        progress(c);
        int ev = next_event(c);
        if (ev < 0)
            break;
        if (ev == CONN_EV_CLOSED) {
            c->finished = true;
            stop_watchers(c);
            c->handler(c, CONN_EV_CLOSED, c->arg);
            conn_free(c);
            return;
        }
        c->handler(c, (enum conn_event)ev, c->arg);
    }
    c->in_dispatch = false;
    update_watchers(c);
    if (c->tls == TLS_UP && read_allowed(c) && SSL_has_pending(c->ssl))
        kick(c);
}

/* ---- libev callbacks ---- */

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (c->tls == TLS_ACCEPTING) {
        do_handshake(c);
    } else {
        if (c->wr_want_read) {
            c->wr_want_read = false;
            flush(c);
        }
        do_read(c);
    }
    dispatch(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    c->wblocked = false;
    if (c->tls == TLS_ACCEPTING) {
        do_handshake(c);
    } else if (c->rd_want_write) {
        c->rd_want_write = false;
        do_read(c);
    }
    dispatch(c);
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    if (c->closing) {
        log_info("conn: %s: output not flushed within %.0f s, closing", c->peer_addr,
                 CONN_CLOSE_DEADLINE);
        set_broken(c);
    } else if (handshaking(c)) {
        log_info("conn: TLS handshake failed with %s: timed out", c->peer_addr);
        snprintf(c->error, sizeof c->error, "TLS handshake failed: timed out");
        set_broken(c);
    } else {
        c->pend |= PEND_TIMEOUT;
    }
    dispatch(c);
}

static void on_defer(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    struct conn *c = w->data;
    ev_idle_stop(loop, w);
    if (c->resume_pending) {
        c->resume_pending = false;
        if (in_len(c) > 0)
            c->pend |= PEND_READ;
    }
    if (c->tls == TLS_UP && c->ssl && SSL_has_pending(c->ssl))
        do_read(c);   /* records OpenSSL buffered while input was full */
    dispatch(c);
}

/* ---- construction ---- */

static unsigned short addr_text(const struct sockaddr *sa, socklen_t len, char *dst, size_t dstlen)
{
    snprintf(dst, dstlen, "unknown");
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, dst, (socklen_t)dstlen);
        return ntohs(in->sin_port);
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], dst, (socklen_t)dstlen);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, dst, (socklen_t)dstlen);
        return ntohs(in6->sin6_port);
    }
    if (sa->sa_family == AF_UNIX)
        snprintf(dst, dstlen, "unix");
    return 0;
}

static void init_addresses(struct conn *c, const struct sockaddr *peer, socklen_t peerlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    if (!peer && getpeername(c->fd, (struct sockaddr *)&ss, &sslen) == 0) {
        peer = (const struct sockaddr *)&ss;
        peerlen = sslen;
    }
    c->peer_port = addr_text(peer, peerlen, c->peer_addr, sizeof c->peer_addr);
    sslen = sizeof ss;
    if (getsockname(c->fd, (struct sockaddr *)&ss, &sslen) == 0)
        c->local_port = addr_text((struct sockaddr *)&ss, sslen, c->local_addr,
                                  sizeof c->local_addr);
    else
        snprintf(c->local_addr, sizeof c->local_addr, "unknown");
}

static void init_watchers(struct conn *c)
{
    ev_io_init(&c->rio, on_readable, c->fd, EV_READ);
    ev_io_init(&c->wio, on_writable, c->fd, EV_WRITE);
    ev_init(&c->timer, on_timer);
    ev_idle_init(&c->defer, on_defer);
    /* Highest priority: an idle watcher only runs when nothing of its
     * priority or higher is pending, and deferred events must not starve. */
    ev_set_priority(&c->defer, EV_MAXPRI);
    c->rio.data = c->wio.data = c->timer.data = c->defer.data = c;
}

static struct conn *conn_create(struct ev_loop *loop, int fd, const struct sockaddr *peer,
                                socklen_t peerlen, SSL_CTX *tls_ctx, const char *sni,
                                conn_handler handler, void *arg)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        log_error("conn: cannot make socket non-blocking: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("conn: out of memory");
        close(fd);
        return NULL;
    }
    c->loop = loop;
    c->fd = fd;
    c->handler = handler;
    c->arg = arg;
    c->client = sni != NULL;
    if (sni)
        snprintf(c->sni, sizeof c->sni, "%s", sni);
    init_addresses(c, peer, peerlen);
    init_watchers(c);
    if (tls_ctx) {
        if (ssl_attach(c, tls_ctx) < 0) {
            close(fd);
            free(c);
            return NULL;
        }
        c->tls = TLS_ACCEPTING;
        c->hs_want_write = c->client;   /* a client speaks first: ClientHello */
    }
    atomic_fetch_add(&live_conns, 1);
    update_watchers(c);
    return c;
}

struct conn *conn_new(struct ev_loop *loop, int fd, const struct sockaddr *peer,
                      socklen_t peerlen, SSL_CTX *tls_ctx, conn_handler handler, void *arg)
{
    return conn_create(loop, fd, peer, peerlen, tls_ctx, NULL, handler, arg);
}

struct conn *conn_new_client(struct ev_loop *loop, int fd, const struct sockaddr *peer,
                             socklen_t peerlen, SSL_CTX *tls_ctx, const char *sni,
                             conn_handler handler, void *arg)
{
    return conn_create(loop, fd, peer, peerlen, tls_ctx, sni ? sni : "", handler, arg);
}

/* ---- public accessors ---- */

const char *conn_peer_addr(const struct conn *c)
{
    return c->peer_addr;
}

unsigned conn_peer_port(const struct conn *c)
{
    return c->peer_port;
}

const char *conn_local_addr(const struct conn *c)
{
    return c->local_addr;
}

unsigned conn_local_port(const struct conn *c)
{
    return c->local_port;
}

const char *conn_input(const struct conn *c, size_t *len)
{
    *len = in_len(c);
    return c->in.data ? c->in.data + c->in_off : "";
}

void conn_consume(struct conn *c, size_t n)
{
    size_t have = in_len(c);
    bool was_full = have >= CONN_INPUT_MAX;
    c->in_off += n < have ? n : have;
    if (c->in_off >= c->in.len)
        in_discard(c);   /* empty: give the memory back */
    if (was_full && !c->in_dispatch)
        kick(c);         /* reading stopped at the limit: restart it */
}

int conn_peek_line(const struct conn *c, size_t max, const char **line, size_t *len,
                   size_t *used, bool *bare_lf)
{
    size_t have;
    const char *p = conn_input(c, &have);
    size_t scan = have < max ? have : max;
    const char *lf = scan ? memchr(p, '\n', scan) : NULL;
    if (!lf)
        return have >= max || have >= CONN_INPUT_MAX ? -1 : 0;
    size_t n = (size_t)(lf - p);
    bool bare = !(n > 0 && p[n - 1] == '\r');
    *line = p;
    *len = bare ? n : n - 1;
    *used = n + 1;
    if (bare_lf)
        *bare_lf = bare;
    return 1;
}

/* ---- output ---- */

static bool output_open(const struct conn *c)
{
    return c->fd >= 0 && !c->err && !c->closing && !c->finished;
}

/* Reclaims the sent prefix before appending so the buffer does not grow
 * with data already written. */
static void out_compact(struct conn *c)
{
    if (c->out_off > 0 && c->out_off >= out_len(c)) {
        buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
}

static void output_added(struct conn *c, int rc)
{
    if (rc < 0) {
        log_error("conn: %s: out of memory buffering output", c->peer_addr);
        set_broken(c);
    }
    touch(c);
}

void conn_write(struct conn *c, const void *data, size_t len)
{
    if (!output_open(c) || len == 0)
        return;
    out_compact(c);
    output_added(c, buf_append(&c->out, data, len));
}

void conn_vprintf(struct conn *c, const char *fmt, va_list ap)
{
    if (!output_open(c))
        return;
    out_compact(c);
    output_added(c, buf_vprintf(&c->out, fmt, ap));
}

void conn_printf(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vprintf(c, fmt, ap);
    va_end(ap);
}

size_t conn_output_pending(const struct conn *c)
{
    return out_len(c);
}

/* ---- flow control ---- */

void conn_pause_read(struct conn *c)
{
    c->paused = true;
    if (!c->in_dispatch)
        update_watchers(c);
}

void conn_resume_read(struct conn *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    c->resume_pending = true;
    kick(c);   /* even inside dispatch: the READ belongs to a later iteration */
}

void conn_set_timeout(struct conn *c, double seconds)
{
    c->timeout = seconds > 0 ? seconds : 0;
    if (c->closing || c->finished || c->fd < 0)
        return;   /* the timer is the close deadline now */
    if (c->timeout > 0) {
        c->timer.repeat = c->timeout;
        ev_timer_again(c->loop, &c->timer);
    } else {
        ev_timer_stop(c->loop, &c->timer);
    }
}

/* ---- TLS ---- */

int conn_starttls(struct conn *c, SSL_CTX *ctx)
{
    if (c->tls != TLS_NONE)
        return -1;
    in_discard(c);
    if (!output_open(c))
        return 0;   /* CLOSED is on its way anyway */
    if (ssl_attach(c, ctx) < 0)
        set_broken(c);
    else
        c->tls = TLS_WAIT_FLUSH;
    touch(c);
    return 0;
}

int conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni)
{
    if (!c->client)
        return -1;
    if (sni)
        snprintf(c->sni, sizeof c->sni, "%s", sni);
    return conn_starttls(c, ctx);
}

const char *conn_error(const struct conn *c)
{
    return c->error;
}

bool conn_is_tls(const struct conn *c)
{
    return c->tls != TLS_NONE;
}

const char *conn_tls_version(const struct conn *c)
{
    return c->tls == TLS_UP && c->ssl ? SSL_get_version(c->ssl) : NULL;
}

const char *conn_tls_cipher(const struct conn *c)
{
    return c->tls == TLS_UP && c->ssl ? SSL_get_cipher_name(c->ssl) : NULL;
}

/* ---- closing ---- */

void conn_close(struct conn *c)
{
    if (c->closing || c->finished || c->fd < 0)
        return;
    c->closing = true;
    in_discard(c);
    ev_timer_stop(c->loop, &c->timer);
    ev_timer_set(&c->timer, CONN_CLOSE_DEADLINE, 0.);
    ev_timer_start(c->loop, &c->timer);
    touch(c);
}

void conn_abort(struct conn *c)
{
    if (c->finished || c->fd < 0)
        return;
    set_broken(c);
    close_fd(c);
    touch(c);
}

unsigned conn_count(void)
{
    return atomic_load(&live_conns);
}
