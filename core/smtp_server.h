/* smtp_server: the server side of SMTP (RFC 5321 with PIPELINING, SIZE,
 * 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS, SMTPUTF8 and CHUNKING).
 *
 * Port 25 (MX): mail for local users and aliases only, no AUTH; aliases
 * that forward elsewhere go to the outbound queue.
 * 587 (submission): STARTTLS before anything but EHLO/HELO/STARTTLS/NOOP/
 * RSET/QUIT (530 5.7.0), then AUTH PLAIN/LOGIN (RFC 4954) before MAIL;
 * 465 (submissions): the same over implicit TLS. After AUTH any recipient
 * is accepted: local ones are stored, others queued; DSN parameters
 * (RFC 3461) are taken; SPOOF_PROTECTION limits senders to the user's own
 * addresses; Message-ID and Date are added when missing, and the Received
 * header does not carry the client's address.
 *
 * A 250 after DATA/BDAT LAST means every local copy and the queue entry are
 * durable.
 *
 * A session runs on the loop thread; recipient lookups and deliveries go to
 * the worker pool, and reading pauses while one is in flight so pipelined
 * commands are answered in order. */
#ifndef POSTHORN_SMTP_SERVER_H
#define POSTHORN_SMTP_SERVER_H

#include <sys/socket.h>

#include "server.h"

enum smtp_service {
    SMTP_SERVICE_MX,            /* port 25 */
    SMTP_SERVICE_SUBMISSION,    /* port 587: STARTTLS required */
    SMTP_SERVICE_SUBMISSIONS,   /* port 465: implicit TLS */
};

/* Listener callbacks: one connection on port 25, 587 or 465. */
void smtp_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server);
void smtp_accept_submission(int fd, const struct sockaddr *peer, socklen_t peerlen,
                            void *server);
void smtp_accept_submissions(int fd, const struct sockaddr *peer, socklen_t peerlen,
                             void *server);

/* SIGTERM: idle sessions get 421 and close now; a session in the middle of
 * receiving a message finishes it, answers it, then gets 421. */
void smtp_shutdown(struct server *srv);

/* Sessions still alive. */
unsigned smtp_session_count(void);

/* Closes every session at once (the drain deadline passed). */
void smtp_abort_all(void);

#endif
