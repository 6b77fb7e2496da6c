/* imap_server: the server side of IMAP4rev1 (RFC 3501) on 143 (STARTTLS
 * required before LOGIN/AUTHENTICATE: LOGINDISABLED until then) and 993
 * (implicit TLS), with IDLE, UIDPLUS, MOVE, SPECIAL-USE, NAMESPACE,
 * LITERAL+, ENABLE, ID, CHILDREN, UNSELECT, SASL-IR and QUOTA.
 *
 * A session is a state machine driven by conn events (NOT AUTHENTICATED,
 * AUTHENTICATED, SELECTED, LOGOUT). Everything that touches the mailbox
 * index or files runs on the worker pool; reading pauses meanwhile, so
 * pipelined commands are answered in order. The selected mailbox is the
 * session's own snapshot (UIDs, flags, keywords in sequence order); after
 * each command, and on mailnotify events while idle or in IDLE, it is
 * compared with a fresh mailindex_sync and the differences are sent as
 * untagged EXISTS, RECENT, EXPUNGE and FETCH (FLAGS) responses, EXPUNGE
 * only where RFC 3501 7.4.1 allows it (never during FETCH, STORE or
 * SEARCH).
 *
 * Folder names are Maildir++ names on the wire: '.' is the hierarchy
 * delimiter and names travel in modified UTF-7, as Dovecot's default
 * Maildir layout that docker-mailserver uses. */
#ifndef POSTHORN_IMAP_SERVER_H
#define POSTHORN_IMAP_SERVER_H

#include <sys/socket.h>

#include "server.h"

/* Seconds without input before a session is closed (RFC 3501 5.4: at
 * least 30 minutes; IDLE restarts the timer per RFC 2177). */
#define IMAP_IDLE_TIMEOUT 1800.0

/* Listener callbacks: IMAP_LISTEN (plaintext with STARTTLS) and
 * IMAPS_LISTEN (implicit TLS). `server` is the struct server. */
void imap_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server);
void imaps_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *server);

/* SIGTERM: idle sessions (and sessions in IDLE) get "* BYE" and close; a
 * session with a command in flight finishes it, answers, then closes. */
void imap_shutdown(struct server *srv);

/* Sessions still alive. */
unsigned imap_session_count(void);

/* Closes every session at once (the drain deadline passed). */
void imap_abort_all(void);

#endif
