/* conn: one buffered connection, plaintext or TLS, with an in-place STARTTLS
 * upgrade (after OpenSMTPD's ioev). The protocol above sees only decrypted
 * bytes in an input buffer, and writes into an output buffer that is
 * flushed when the socket is writable.
 *
 * Events are delivered to one handler on the loop thread:
 *   CONN_EV_READ        new input is buffered (or input stayed buffered
 *                       when reading was resumed). The handler consumes what
 *                       it can; what it leaves stays for the next event.
 *   CONN_EV_TLS_READY   the STARTTLS / implicit-TLS handshake completed.
 *   CONN_EV_TIMEOUT     no input for the idle timeout. The conn stays open;
 *                       the protocol usually replies and calls conn_close.
 *                       It repeats every period until input arrives. While
 *                       a TLS handshake is in progress the timeout fails the
 *                       handshake instead (CONN_EV_CLOSED).
 *   CONN_EV_CLOSED      the connection is finished: peer closed, I/O or TLS
 *                       error, or conn_close() completed. Delivered exactly
 *                       once; the conn is freed when the handler returns, so
 *                       the protocol must drop its pointer then.
 *                       After peer EOF, input buffered before it is still
 *                       delivered as CONN_EV_READ first; CLOSED waits while
 *                       reading is paused with input buffered, so a paused
 *                       protocol gets to process pipelined commands.
 *
 * Output written inside the handler is flushed (one write) when the handler
 * returns; output written elsewhere (e.g. a worker's done function) on the
 * next loop iteration. Writes after conn_close or on a broken connection
 * are dropped. Buffers are allocated lazily and freed when empty.
 *
 * Input is read only while reading is not paused and the input buffer holds
 * less than CONN_INPUT_MAX bytes (backpressure). The conn never calls the
 * handler re-entrantly from inside a conn_* call made by that handler. */
#ifndef POSTHORN_CONN_H
#define POSTHORN_CONN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <ev.h>
#include <openssl/ssl.h>

#define CONN_INPUT_MAX (64 * 1024)

struct conn;

enum conn_event {
    CONN_EV_READ,
    CONN_EV_TLS_READY,
    CONN_EV_TIMEOUT,
    CONN_EV_CLOSED,
};

typedef void (*conn_handler)(struct conn *c, enum conn_event ev, void *arg);

/* Takes ownership of the connected socket fd (made non-blocking here).
 * With tls_ctx non-NULL the connection starts with a server-side TLS
 * handshake (implicit TLS) and CONN_EV_TLS_READY follows it; the protocol
 * sends its greeting then. Returns NULL on failure (fd closed). */
struct conn *conn_new(struct ev_loop *loop, int fd, const struct sockaddr *peer,
                      socklen_t peerlen, SSL_CTX *tls_ctx, conn_handler handler, void *arg);

/* Client side: takes ownership of an already CONNECTED socket fd (the
 * caller did the non-blocking connect). With tls_ctx non-NULL the
 * connection starts with a client-side TLS handshake (implicit TLS, e.g.
 * port 465) and CONN_EV_TLS_READY follows it. sni (may be NULL or "") is
 * the server's name: sent as SNI unless it is an IP literal, and, when
 * tls_ctx has SSL_VERIFY_PEER, checked against the certificate
 * (SSL_set1_host), so a wrong name fails the handshake (CONN_EV_CLOSED).
 * Returns NULL on failure (fd closed). */
struct conn *conn_new_client(struct ev_loop *loop, int fd, const struct sockaddr *peer,
                             socklen_t peerlen, SSL_CTX *tls_ctx, const char *sni,
                             conn_handler handler, void *arg);

/* Client-side STARTTLS, after the server's 220: flushes pending output,
 * discards buffered input, then runs SSL_connect with sni handled as in
 * conn_new_client (NULL keeps the name given there). CONN_EV_TLS_READY or
 * CONN_EV_CLOSED follows. Returns -1 when already TLS or not a client
 * conn. */
int conn_starttls_client(struct conn *c, SSL_CTX *ctx, const char *sni);

/* Why the connection broke ("TLS handshake failed: certificate
 * verification failed: ...", "connection closed by peer", "read error:
 * ..."), or "" when it did not. Valid until the conn is freed (still
 * readable inside the CONN_EV_CLOSED handler). */
const char *conn_error(const struct conn *c);

/* The peer's address as text ("192.0.2.1", "2001:db8::1"; IPv4-mapped IPv6
 * shown as IPv4) and port. */
const char *conn_peer_addr(const struct conn *c);
unsigned conn_peer_port(const struct conn *c);
/* The local address and port the connection arrived on. */
const char *conn_local_addr(const struct conn *c);
unsigned conn_local_port(const struct conn *c);

/* Input. conn_input returns the buffered bytes (not NUL-terminated). */
const char *conn_input(const struct conn *c, size_t *len);
void conn_consume(struct conn *c, size_t n);

/* Finds one line ending in LF in the input. Returns:
 *   1  a line: *line and *len exclude the line ending (CRLF or bare LF;
 *      *bare_lf tells which, may be NULL); consume it with conn_consume(c, *used)
 *   0  no complete line yet
 *  -1  no LF within `max` bytes, or none in a full (CONN_INPUT_MAX)
 *      input buffer: the line is too long */
int conn_peek_line(const struct conn *c, size_t max, const char **line, size_t *len,
                   size_t *used, bool *bare_lf);

/* Output. Appends to the output buffer and arranges a flush. */
void conn_write(struct conn *c, const void *data, size_t len);
void conn_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_vprintf(struct conn *c, const char *fmt, va_list ap);
size_t conn_output_pending(const struct conn *c);

void conn_pause_read(struct conn *c);
/* Resumes reading; when input is already buffered a CONN_EV_READ follows on
 * the next loop iteration. */
void conn_resume_read(struct conn *c);

/* Idle timeout in seconds (reset by every read); 0 disables. */
void conn_set_timeout(struct conn *c, double seconds);

/* Starts a server-side TLS handshake once the pending output (the "220
 * Ready to start TLS" reply) has been flushed. Buffered input that arrived
 * before the handshake is discarded: a client must not pipeline past
 * STARTTLS, and anything it did is an injection attempt. Returns 0, or -1
 * when already TLS. CONN_EV_TLS_READY or CONN_EV_CLOSED follows. */
int conn_starttls(struct conn *c, SSL_CTX *ctx);

/* True from conn_starttls() (or conn_new with a context) on; no input is
 * delivered before the handshake completes. */
bool conn_is_tls(const struct conn *c);
const char *conn_tls_version(const struct conn *c);  /* "TLSv1.3" or NULL */
const char *conn_tls_cipher(const struct conn *c);   /* "TLS_AES_256_GCM_SHA384" or NULL */

/* Flushes pending output (bounded: at most a few seconds), then closes;
 * CONN_EV_CLOSED follows. Input is no longer delivered. Idempotent. */
void conn_close(struct conn *c);

/* Closes at once without flushing; CONN_EV_CLOSED follows on the next loop
 * iteration. */
void conn_abort(struct conn *c);

/* Number of live conn objects (for SIGTERM draining and tests). */
unsigned conn_count(void);

#endif
