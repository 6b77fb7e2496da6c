/* pipeline: runs the enabled filters (filters.h) at each stage of an SMTP
 * transaction and turns what they say into replies, headers and where the
 * message goes. The SMTP session (core/smtp_server.c, smtp_deliver.c) is
 * its one caller.
 *
 * Who is filtered: port 25 clients get every enabled filter. Authenticated
 * submission and PERMIT_NETWORKS clients (trusted relays of the local
 * network) get only the `for_submission` filters (the virus scan), and only
 * at end of data. A session for which no filter applies gets no pipeline
 * session at all (pipeline_active() false): no job, no header, no cost.
 *
 * Results are kept per stage in a pipeline_session ("layers"): what the
 * connect and HELO stages said lasts for the session, what MAIL, RCPT and
 * DATA said for the transaction. At end of data the scores of every layer
 * add up:
 *   ENABLE_SPAMASSASSIN=1 and score >= SA_KILL: refused, 554 5.7.1;
 *   >= SA_TAG2: spam: X-Spam-Flag: YES, the Subject prefixed with
 *     SPAM_SUBJECT, delivered to Junk (MOVE_SPAM_TO_JUNK) and \Seen
 *     (MARK_SPAM_AS_READ);
 *   >= SA_TAG: X-Spam-Flag: NO, X-Spam-Score, X-Spam-Level, X-Spam-Status.
 * Spam headers come only with ENABLE_SPAMASSASSIN=1; scores are logged
 * either way. Every port-25 message of a filtered session gets one
 * Authentication-Results header (RFC 8601) joining the filters' method
 * results ("none" when there are none); Authentication-Results fields that
 * claim our host name as authserv-id are removed from the message first
 * (RFC 8601 section 5), as are X-Spam-Flag/-Score/-Level/-Status fields
 * when spam headers are added, so a sender cannot pre-label its own mail.
 * The headers go in front of the message, above the session's Received.
 *
 * One log line per message:
 *   filter: <queue id> from=<a@b> score=3.5 reasons=SPF_SOFTFAIL(1.0),... action=accept
 * with action accept | tag | spam (flagged, kept in INBOX) | junk | reject |
 * tempfail; a refusal at an earlier stage logs one line naming the stage
 * and the filter. */
#ifndef POSTHORN_PIPELINE_H
#define POSTHORN_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "filter.h"
#include "settings.h"

struct server;

/* One named score. */
struct filter_reason {
    char name[FILTER_REASON_MAX];
    double score;
};

/* What one stage's filters said. */
struct pipeline_layer {
    struct buf headers;          /* whole fields, CRLF-terminated */
    struct buf auth_results;     /* method results, "; "-joined */
    struct filter_reason *reasons;
    size_t nreasons, cap;
};

struct pipeline_session {
    struct pipeline_layer layer[FILTER_NSTAGES];
};

/* The answer of one stage: FILTER_ACCEPT, or FILTER_TEMPFAIL / FILTER_REJECT
 * with the reply (4xx / 5xx, never anything else). */
struct pipeline_verdict {
    enum filter_verdict verdict;
    int code;
    char enhanced[16];
    char text[FILTER_TEXT_MAX];
    const char *filter;          /* the filter that refused */
};

enum pipeline_action {
    PIPELINE_ACCEPT,
    PIPELINE_TAG,                /* >= SA_TAG: spam headers */
    PIPELINE_SPAM,               /* >= SA_TAG2 */
    PIPELINE_REJECT,             /* >= SA_KILL */
};

/* End of data, after pipeline_finish. */
struct pipeline_outcome {
    enum pipeline_action action;
    double score;
    struct buf headers;          /* to put in front of the message */
    const char *folder;          /* local copies: NULL (INBOX) or "Junk" */
    const char *flags;           /* local copies: NULL or "S" */
};

/* --- start and stop ---------------------------------------------------------- */

/* Runs every enabled filter's start (e.g. loading a database on a worker).
 * Call once on the loop thread before serving; the SMTP server also calls
 * it lazily from its first session when the daemon has not, so that it
 * always runs before the first filter hook. Returns 0, or -1 when a filter
 * cannot start (logged). */
int filters_start(struct server *srv);
void filters_stop(void);

/* --- which stages run ----------------------------------------------------- */

/* `trusted`: authenticated submission or a PERMIT_NETWORKS client. */
bool pipeline_active(const struct settings *st, bool trusted);
/* Whether some enabled filter has a hook at `stage` for this client: the
 * session submits a job only then. */
bool pipeline_wants(const struct settings *st, enum filter_stage stage, bool trusted);

/* The same over an explicit list of filters (for tests). */
bool pipeline_active_ops(const struct filter_ops *const *ops, size_t n,
                         const struct settings *st, bool trusted);
bool pipeline_wants_ops(const struct filter_ops *const *ops, size_t n,
                        const struct settings *st, enum filter_stage stage, bool trusted);

/* --- per-session state (loop thread; a job uses it while the session waits) */

struct pipeline_session *pipeline_session_new(void);
void pipeline_session_free(struct pipeline_session *ps);
/* Forgets what the stages from `from` to FILTER_DATA said (a new HELO:
 * FILTER_HELO; a new transaction: FILTER_MAIL). */
void pipeline_session_clear(struct pipeline_session *ps, enum filter_stage from);

/* --- running a stage --------------------------------------------------------- */

/* Runs the hooks of `stage` in registry order, stopping at the first
 * tempfail or reject, and records scores, headers and method results in
 * the stage's layer (nothing of a refused stage is kept). Sets
 * t->add_headers and t->auth_results; at FILTER_DATA parses t->msg into
 * t->mime when the caller has not. Blocking: worker threads only. */
void pipeline_run(struct pipeline_session *ps, enum filter_stage stage, struct filter_txn *t,
                  bool trusted, struct pipeline_verdict *v);
void pipeline_run_ops(const struct filter_ops *const *ops, size_t n,
                      struct pipeline_session *ps, enum filter_stage stage,
                      struct filter_txn *t, bool trusted, struct pipeline_verdict *v);

typedef void (*pipeline_done_fn)(void *arg, const struct pipeline_verdict *v);

/* Runs pipeline_run for `stage` on the worker pool; `done` then runs on the
 * loop thread. The strings *t points to, and ps, must stay unchanged until
 * then (the session pauses). Returns 0, or -1 when out of memory (nothing
 * submitted). */
int pipeline_submit(struct server *srv, struct pipeline_session *ps, enum filter_stage stage,
                    const struct filter_txn *t, bool trusted, pipeline_done_fn done, void *arg);

/* --- end of data ------------------------------------------------------------- */

/* The total of every layer's scores. */
double pipeline_score(const struct pipeline_session *ps);

/* What a total score means under the settings (a pure function). Always
 * PIPELINE_ACCEPT when ENABLE_SPAMASSASSIN=0. */
enum pipeline_action pipeline_spam_action(double score, const struct settings *st);

/* Decides the message's fate from everything the stages said, edits the
 * message (removes forged Authentication-Results and X-Spam-* fields,
 * prefixes the Subject) and builds the headers to put in front of it.
 * `hostname` is the authserv-id. out->headers must be BUF_INIT or reset;
 * the caller frees it. Returns 0, or -1 when out of memory. */
int pipeline_finish(const struct pipeline_session *ps, const struct settings *st,
                    const char *hostname, bool trusted, struct buf *msg,
                    struct pipeline_outcome *out);

/* "accept", "tag", "spam", "junk", "reject" for an outcome. */
const char *pipeline_action_name(const struct pipeline_outcome *o);

/* The one log line per message (see above). */
void pipeline_log(const struct pipeline_session *ps, const char *qid, const char *from,
                  double score, const char *action);

/* --- formatting (exposed for the unit tests) --------------------------------- */

/* "SPF_SOFTFAIL(1.0),DNSBL_X(2.5)"; "" when there are none. */
int pipeline_format_reasons(const struct pipeline_session *ps, struct buf *out);
/* A score as the headers show it: two decimals at most, one at least:
 * 6.31, 2.0, 1000.0, -0.5. */
void pipeline_format_score(double score, char *out, size_t outlen);
/* The X-Spam-* fields for a score at or above SA_TAG. */
int pipeline_spam_headers(const struct pipeline_session *ps, const struct settings *st,
                          double score, enum pipeline_action action, struct buf *out);
/* "Authentication-Results: <authserv-id>;\r\n\t<methods>\r\n", "none" when
 * methods is empty. */
int pipeline_auth_results_header(const char *authserv_id, const char *methods, size_t len,
                                 struct buf *out);
/* Removes the header-section fields for which match(name, namelen) is
 * true, in place; returns the message's new length. */
size_t pipeline_strip_fields(char *msg, size_t len,
                             bool (*match)(const char *field, size_t flen, const void *arg),
                             const void *arg);
/* Whether an Authentication-Results field (the whole field, name
 * included) names authserv_id, case-insensitively. */
bool pipeline_is_our_auth_results(const char *field, size_t flen, const void *authserv_id);
/* Prefixes the first Subject field's value with prefix; a message without
 * one gets "Subject: <prefix>" in `headers`. Returns 0, or -1 (memory). */
int pipeline_prefix_subject(struct buf *msg, const char *prefix, struct buf *headers);

#endif
