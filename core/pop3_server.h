/* pop3_server: the server side of POP3 (RFC 1939 with RFC 2449 CAPA,
 * RESP-CODES, AUTH-RESP-CODE and PIPELINING, RFC 2595 STLS and RFC 5034
 * AUTH PLAIN) on 110 (STLS required before USER/PASS/AUTH) and 995
 * (implicit TLS). APOP is not offered.
 *
 * The maildrop is the INBOX as one mailindex_sync saw it at login: messages
 * numbered 1..n in UID order, unchanged for the whole session (mail that
 * arrives meanwhile shows up in the next one). UIDL is "%08X%08X" of UID and
 * UIDVALIDITY (Dovecot's default pop3_uidl_format), so it is stable across
 * sessions and restarts and consistent with IMAP. DELE only marks; the
 * marked messages are expunged through the index when QUIT enters the
 * UPDATE state, and a session that ends any other way deletes nothing.
 *
 * Only one POP3 session per mailbox at a time (RFC 2449 [IN-USE]); IMAP
 * sessions are not affected. Passwords are checked by auth.h (delays and
 * throttling for failures). Index work runs on the worker pool; reading
 * pauses meanwhile, so pipelined commands are answered in order. */
#ifndef POSTHORN_POP3_SERVER_H
#define POSTHORN_POP3_SERVER_H

#include <sys/socket.h>

#include "server.h"

/* Seconds without input before a session is closed (RFC 1939 3: at least
 * 10 minutes). */
#define POP3_IDLE_TIMEOUT 600.0

/* Listener callbacks: POP3_LISTEN (plaintext with STLS) and POP3S_LISTEN
 * (implicit TLS). `server` is the struct server. */
void pop3_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server);
void pop3s_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server);

/* SIGTERM: idle sessions get "-ERR [SYS/TEMP] ..." and close now without
 * UPDATE (nothing deleted); a session with work in flight (a login, a
 * RETR, a QUIT's expunge) finishes it, answers, then closes. */
void pop3_shutdown(struct server *srv);

/* Sessions still alive. */
unsigned pop3_session_count(void);

/* Closes every session at once (the drain deadline passed). */
void pop3_abort_all(void);

#endif
