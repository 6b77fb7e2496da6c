/* smtp_server: the server side of SMTP (RFC 5321 with PIPELINING, SIZE,
 * 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS, SMTPUTF8 and CHUNKING) for port
 * 25: mail for local users and aliases only, no AUTH, every message stored
 * durably in the recipients' mailboxes before the 250.
 *
 * A session runs on the loop thread; recipient lookups and deliveries go to
 * the worker pool, and reading pauses while one is in flight so pipelined
 * commands are answered in order. */
#ifndef POSTHORN_SMTP_SERVER_H
#define POSTHORN_SMTP_SERVER_H

#include <sys/socket.h>

#include "server.h"

/* Accepts one connection on an SMTP listener (the listener callback). */
void smtp_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server);

/* SIGTERM: idle sessions get 421 and close now; a session in the middle of
 * receiving a message finishes it, answers it, then gets 421. */
void smtp_shutdown(struct server *srv);

/* Sessions still alive. */
unsigned smtp_session_count(void);

/* Closes every session at once (the drain deadline passed). */
void smtp_abort_all(void);

#endif
