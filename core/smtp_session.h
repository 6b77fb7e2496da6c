/* smtp_session: the SMTP server session's state and the helpers that its
 * parts share. Internal to smtp_server.c (connection, commands, input),
 * smtp_auth.c (AUTH) and smtp_deliver.c (storing and queueing a message). */
#ifndef POSTHORN_SMTP_SESSION_H
#define POSTHORN_SMTP_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accounts.h"
#include "buf.h"
#include "conn.h"
#include "pipeline.h"
#include "sasl.h"
#include "server.h"
#include "smtp_parse.h"
#include "smtp_server.h"

enum smtp_auth_step {
    SMTP_AUTH_NONE,
    SMTP_AUTH_PLAIN,        /* waiting for the PLAIN response */
    SMTP_AUTH_LOGIN_USER,   /* waiting for the LOGIN user name */
    SMTP_AUTH_LOGIN_PASS,   /* waiting for the LOGIN password */
};

#define SMTP_LINE_MAX     2048   /* command line, without CRLF (Postfix's line_length_limit) */
#define SMTP_ERROR_LIMIT  10     /* error replies before the session is dropped */
#define SMTP_JUNK_LIMIT   100    /* commands and refused recipients without a message */
/* Messages are held in memory until they are stored; all sessions together
 * may hold this much. A message that would go over it is refused with 452
 * (the sender retries later) instead of letting many large concurrent
 * messages exhaust the machine. */
#define SMTP_MEMORY_BUDGET ((size_t)256 << 20)

enum phase {
    PHASE_COMMAND,       /* reading command lines */
    PHASE_DATA,          /* reading DATA until CRLF.CRLF */
    PHASE_BDAT,          /* reading a BDAT chunk */
    PHASE_TLS,           /* STARTTLS / implicit TLS handshake in progress */
    PHASE_AUTH,          /* reading SASL responses to AUTH */
    PHASE_CLOSING,       /* conn_close called; nothing more is read */
};

/* Strings owned by the session, for recipients and their mailboxes. */
struct strvec {
    char **v;
    size_t n, cap;
};

struct smtp_session {
    struct server *srv;
    struct conn *conn;                /* NULL once CONN_EV_CLOSED arrived */
    struct smtp_session *prev, *next; /* all sessions, for SIGTERM */
    char id[9];
    char peer[64];
    struct sockaddr_storage peer_sa;  /* the client's address, for the filters */
    bool counted;                     /* holds an iplimit slot */
    bool refused;                     /* over the connection limits: 421 and gone */
    enum smtp_service svc;
    bool banner_sent;
    enum phase phase;
    bool busy;                        /* a worker job is in flight */

    bool greeted;                     /* HELO or EHLO given */
    bool esmtp;
    char helo[SMTP_DOMAIN_MAX + 1];

    /* Submission: the logged-in user (smtp_auth.c). */
    bool authed;
    /* Port 25 client in PERMIT_NETWORKS: may relay without AUTH (and is
     * otherwise treated as unauthenticated: no DSN, no SPOOF checks). */
    bool permitted;
    char user[ACCOUNTS_ADDR_MAX + 1];

    /* Inbound filters (filters/pipeline.h): NULL when none applies to this
     * session, so that a server with every filter off does no filter work. */
    struct pipeline_session *filters;
    bool filter_trusted;              /* submission or PERMIT_NETWORKS: virus scan only */
    bool filter_refused;              /* refused at connect: 554 to all but QUIT */
    char filter_text[FILTER_TEXT_MAX];  /* that refusal's text */
    enum smtp_auth_step auth_step;
    char auth_name[SASL_USER_MAX + 1];  /* AUTH LOGIN: the user name, until the password */

    /* The mail transaction. */
    bool in_mail;
    struct smtp_mail_args mail;
    struct strvec rcpts;              /* accepted forward-paths, as given */
    struct strvec mailboxes;          /* distinct local users to deliver to */
    struct strvec remote;             /* recipients elsewhere, for the outbound queue */
    struct strvec remote_orcpt;       /* their DSN ORCPT ("" if none) */
    unsigned *remote_notify;          /* their DSN NOTIFY, remote.cap entries */
    bool rcpt_tried;                  /* a RCPT was attempted (for 554 vs 503) */
    struct buf msg;                   /* the message, CRLF, unstuffed */
    struct smtp_data_decoder dec;
    bool too_big;
    bool over_budget;                 /* refused: SMTP_MEMORY_BUDGET was reached */
    size_t budgeted;                  /* octets of msg counted in buffered_total */
    uint64_t bdat_left;               /* octets of the current chunk still to read */
    bool bdat_last;
    bool bdat_discard;                /* chunk read only to be thrown away */
    int bdat_refusal;                 /* reply code for a discarded chunk: 503, 554 */
    uint64_t bdat_chunk;              /* size of the current chunk */
    bool bdat_used;                   /* this transaction uses BDAT (no DATA then) */

    unsigned errors, junk, messages;
    char line[SMTP_LINE_MAX + 1];
};

/* Strings owned by a session. */
int smtp_strvec_add(struct strvec *sv, const char *str);
bool smtp_strvec_has(const struct strvec *sv, const char *str);
void smtp_strvec_clear(struct strvec *sv);

const char *smtp_hostname(const struct smtp_session *s);
bool smtp_is_submission(const struct smtp_session *s);

/* Replies. Error replies count towards SMTP_ERROR_LIMIT (smtp_reply) or
 * not (smtp_reply_nocount); a 421 closes the session. */
void smtp_reply(struct smtp_session *s, int code, const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void smtp_reply_nocount(struct smtp_session *s, int code, const char *enhanced,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

void smtp_transaction_reset(struct smtp_session *s);
void smtp_session_close(struct smtp_session *s);
/* Work went to the pool: stop reading until it is answered. */
void smtp_session_suspend(struct smtp_session *s);
/* Back from the pool. Returns false when the session is gone (freed). */
bool smtp_session_resume(struct smtp_session *s);
void smtp_session_process(struct smtp_session *s);
/* After SIGTERM: 421 and true when the session should end now. */
bool smtp_stop_if_shutting_down(struct smtp_session *s);

/* smtp_auth.c */
void smtp_cmd_auth(struct smtp_session *s, const struct smtp_command *cmd);
void smtp_auth_response(struct smtp_session *s, const char *line, size_t len);

/* Whether `address` belongs to `user`: their own, or one that resolves to
 * them (alias, catch-all, plus-addressing). Blocking: workers only. */
bool smtp_address_owned(struct accounts *acc, const char *address, const char *user);

/* The filters' view of the session (filter.h), without the stage-specific
 * fields (rcpt, rcpts, msg). */
void smtp_filter_txn(const struct smtp_session *s, struct filter_txn *t);

/* smtp_deliver.c: the message in s->msg is complete: run the end-of-data
 * filters, store it for the local mailboxes and queue it for the remote
 * recipients, then answer. */
void smtp_message_complete(struct smtp_session *s);
const char *smtp_protocol_name(const struct smtp_session *s);

#endif
