/* imap_session: what the IMAP server's modules share. Private to the IMAP
 * server: imap_server.c (the session: I/O, literals, dispatch, login,
 * STARTTLS, IDLE, untagged updates), imap_cmd_mailbox.c (SELECT, LIST,
 * CREATE, ... STATUS, QUOTA) and imap_cmd_message.c (FETCH, STORE, SEARCH,
 * COPY, MOVE, EXPUNGE, APPEND, CLOSE).
 *
 * Command life cycle: imap_server.c reads a whole command (literals
 * included), parses it with imap_parse_command() into s->cmd using the
 * command's arena s->arena, checks the state, and calls the handler. The
 * handler may run work on the worker pool (imap_run) and write untagged
 * output, and ends by calling imap_done() exactly once. Until then no new
 * command is read, and s->cmd, its arguments and the arena stay valid.
 *
 * Threads: every function here runs on the event loop thread. Worker
 * functions given to imap_run must not touch the session (copy what they
 * need into their job). */
#ifndef POSTHORN_IMAP_SESSION_H
#define POSTHORN_IMAP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "accounts.h"
#include "imap_parse.h"
#include "mailindex.h"
#include "server.h"

/* Pending output above which streaming commands (FETCH) wait. */
#define IMAP_OUTPUT_HIGH (1024 * 1024)

enum imap_state {
    IMAP_STATE_NOT_AUTH,
    IMAP_STATE_AUTH,
    IMAP_STATE_SELECTED,
    IMAP_STATE_LOGOUT,
};

enum imap_status { IMAP_OK, IMAP_NO, IMAP_BAD };

/* One message of the selected mailbox as this session has told the client
 * about it. */
struct imap_msg {
    uint32_t uid;
    char flags[8];            /* Maildir letters, sorted (mailindex form) */
    char *keywords;           /* malloc'd, space-separated, "" for none */
    bool recent;              /* \Recent for this session */
    bool expunged;            /* gone from the store, EXPUNGE not sent yet */
    uint64_t size;            /* RFC822.SIZE */
    time_t internaldate;
};

/* The SELECTED state's snapshot: msgs[i] is sequence number i + 1. */
struct imap_mailbox {
    char *folder;             /* store folder name; NULL for INBOX */
    char *name;               /* the name as the client gave it (mUTF-7) */
    bool readonly;            /* EXAMINE */
    uint32_t uidvalidity, uidnext;
    uint32_t first_recent;    /* this session's recent mark (see mailindex_claim_recent) */
    struct imap_msg *msgs;
    size_t n, cap;
};

struct imap_io;               /* imap_server.c's own state */

struct imap_session {
    struct server *srv;
    struct conn *conn;        /* NULL once the connection is gone: output is
                                 dropped, handlers still run to their end */
    char id[9];               /* for log lines */
    char peer[64];            /* client address, for log lines */
    enum imap_state state;
    char address[ACCOUNTS_ADDR_MAX + 1]; /* the logged-in user, from AUTH on */
    struct mailindex *ix;     /* the user's index, from AUTH on */
    struct imap_mailbox *sel; /* SELECTED: the snapshot; NULL otherwise */
    const struct imap_command *cmd; /* the command in progress */
    struct imap_arena *arena; /* its arena: handlers allocate parse results here */
    struct imap_io *io;
};

/* Ends the command in progress. When a mailbox is selected, the snapshot
 * is first brought up to date (mailindex_sync on a worker) and the untagged
 * updates allowed after this command are sent: EXISTS/RECENT for new
 * messages, FETCH (FLAGS) for flags changed by others, EXPUNGE for vanished
 * messages except after FETCH, STORE and SEARCH (their UID forms allow it).
 * Then "<tag> OK|NO|BAD <text>" goes out and the next command is read.
 * `fmt` may start with a response code, e.g. "[TRYCREATE] No such mailbox". */
void imap_done(struct imap_session *s, enum imap_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Runs work(arg) on the worker pool, then done(s, arg) on the loop thread.
 * done also runs when the connection went away meanwhile (s->conn NULL);
 * it must free arg and end with imap_done (or another imap_run). */
void imap_run(struct imap_session *s, void (*work)(void *arg),
              void (*done)(struct imap_session *s, void *arg), void *arg);

/* Untagged output (whole lines with their CRLF, literals included). */
void imap_write(struct imap_session *s, const void *data, size_t len);
void imap_printf(struct imap_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Calls cont(s, arg) once pending output is below IMAP_OUTPUT_HIGH (at
 * once when it already is, or when the connection is gone). For commands
 * that stream their output in batches. */
void imap_when_writable(struct imap_session *s,
                        void (*cont)(struct imap_session *s, void *arg), void *arg);

/* Leaves the SELECTED state (frees the snapshot); state becomes AUTH. */
void imap_unselect(struct imap_session *s);

/* Snapshot helpers (imap_server.c). The update sync compares the snapshot
 * with the index: a handler that changes flags itself (STORE) updates the
 * snapshot's flags/keywords so the change is not reported again as a
 * FETCH; one that expunges either sends "* n EXPUNGE" and removes the
 * message from the snapshot, or leaves both to the sync in imap_done.
 * imap_msg_from_index fills *out (keywords strdup'd) from an index row;
 * returns 0 or -1 (out of memory). imap_mailbox_free frees a snapshot
 * (NULL is fine). */
int imap_msg_from_index(struct imap_msg *out, const struct mailindex_msg *m, bool recent);
void imap_mailbox_free(struct imap_mailbox *mb);

/* The store folder of a mailbox name as imap_arg_mailbox() returns it:
 * NULL for INBOX, otherwise the name itself ('.' is the delimiter). */
static inline const char *imap_folder(const char *name)
{
    return strcmp(name, "INBOX") == 0 ? NULL : name;
}

/* The largest APPEND literal: POSTFIX_MESSAGE_SIZE_LIMIT (0 = unlimited,
 * then 1 GiB). imap_server.c refuses bigger literals with NO [TOOBIG]. */
uint64_t imap_append_limit(const struct imap_session *s);

/* --- imap_cmd_mailbox.c ------------------------------------------------- */
void imap_cmd_select(struct imap_session *s);     /* SELECT and EXAMINE */
void imap_cmd_create(struct imap_session *s);
void imap_cmd_delete(struct imap_session *s);
void imap_cmd_rename(struct imap_session *s);
void imap_cmd_subscribe(struct imap_session *s);  /* SUBSCRIBE and UNSUBSCRIBE */
void imap_cmd_list(struct imap_session *s);       /* LIST and LSUB */
void imap_cmd_status(struct imap_session *s);
void imap_cmd_getquota(struct imap_session *s);   /* GETQUOTA and GETQUOTAROOT */
/* After login (worker-side helper run by imap_server.c): creates the
 * special-use folders Drafts, Sent, Junk, Trash, Archive when missing and
 * subscribes them. Blocking. */
void imap_special_use_prepare(struct mailindex *ix);

/* --- imap_cmd_message.c ------------------------------------------------- */
void imap_cmd_fetch(struct imap_session *s);      /* FETCH and UID FETCH */
void imap_cmd_store(struct imap_session *s);
void imap_cmd_search(struct imap_session *s);
void imap_cmd_copy(struct imap_session *s);       /* COPY and UID COPY (COPYUID) */
void imap_cmd_move(struct imap_session *s);       /* MOVE and UID MOVE (RFC 6851) */
void imap_cmd_expunge(struct imap_session *s);    /* EXPUNGE and UID EXPUNGE */
void imap_cmd_append(struct imap_session *s);     /* APPENDUID */
void imap_cmd_close(struct imap_session *s);      /* silent expunge, then unselect */

#endif
