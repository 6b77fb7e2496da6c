/* filter: the inbound filter pipeline (port 25, and the virus scan on
 * submission). Each filter is one file in filters/ with a `struct
 * filter_ops`; the pipeline (filters/pipeline.c) runs the enabled ones at
 * each stage of an SMTP transaction and combines their results.
 *
 * Every hook runs on a worker thread and may block (DNS lookups through
 * dns_sync.h, SPF, a ClamAV scan, SQLite). The SMTP session submits one
 * job per stage that has any enabled hook, and pauses meanwhile.
 *
 * A hook returns one result: accept (nothing to say), add-score (a named
 * reason with a weight: positive is spammy, negative is good), tempfail or
 * reject (with an SMTP reply). The pipeline stops at the first tempfail or
 * reject; otherwise scores add up. A filter that fails internally (DNS
 * timeout, engine error) returns what its setting says: a tempfail, or an
 * accept with a logged "skipped" reason — never a crash, and never an
 * accept of a message it was meant to block (a virus scanner that cannot
 * scan tempfails). */
#ifndef POSTHORN_FILTER_H
#define POSTHORN_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "buf.h"
#include "mime.h"
#include "settings.h"

struct server;

enum filter_stage {
    FILTER_CONNECT,      /* client address known (DNSBL) */
    FILTER_HELO,
    FILTER_MAIL,         /* MAIL FROM (SPF) */
    FILTER_RCPT,         /* each RCPT (greylisting: the triplet) */
    FILTER_DATA,         /* end of data: the whole message (virus, spam) */
    FILTER_NSTAGES
};

enum filter_verdict {
    FILTER_ACCEPT,
    FILTER_SCORE,
    FILTER_TEMPFAIL,
    FILTER_REJECT,
};

#define FILTER_REASON_MAX 64
#define FILTER_TEXT_MAX   256

struct filter_result {
    enum filter_verdict verdict;
    double score;                          /* FILTER_SCORE */
    char reason[FILTER_REASON_MAX];        /* "SPF_SOFTFAIL", "DNSBL_ZEN_SPAMHAUS_ORG", "GTUBE" */
    /* FILTER_TEMPFAIL / FILTER_REJECT: the SMTP reply, e.g. 550 "5.7.23"
     * "SPF check failed for example.org" */
    int code;
    char enhanced[16];
    char text[FILTER_TEXT_MAX];
};

/* What the filters see of a transaction (read-only for them). Fields are
 * filled as the stages advance. */
struct filter_txn {
    const struct server *srv;
    const char *id;                          /* the SMTP session's id, for log lines */
    const struct sockaddr_storage *client;   /* the peer */
    const char *client_ip;                   /* text form */
    const char *helo;                        /* from FILTER_HELO on */
    const char *mail_from;                   /* from FILTER_MAIL on; "" for <> */
    const char *rcpt;                        /* FILTER_RCPT: the recipient being checked */
    const char *const *rcpts;                /* FILTER_DATA: every accepted recipient */
    size_t nrcpts;
    bool authenticated;                      /* submission: only the virus scan runs */
    const char *msg;                         /* FILTER_DATA: the message as received */
    size_t len;
    const struct mime_part *mime;            /* FILTER_DATA: its parse */

    /* Headers a filter wants added (each a whole field with CRLF, e.g.
     * Received-SPF). Filters append; the pipeline prepends them. */
    struct buf *add_headers;
    /* Authentication-Results method results ("spf=pass smtp.mailfrom=..."),
     * "; "-joined by the pipeline into one RFC 8601 header. */
    struct buf *auth_results;
    void *scores;                            /* the pipeline's: see filter_add_score */
};

/* Adds one named score from inside a hook, for a filter with several
 * findings (each listing DNSBL zone, each rule that hits); the same as
 * returning FILTER_SCORE with that reason, which covers the common case of
 * one. Dropped with the stage's other results if a later filter refuses. */
void filter_add_score(const struct filter_txn *t, const char *reason, double score);

struct filter_ops {
    const char *name;                          /* "spf", "clamav", ... for logs */
    /* Whether the filter is on (its setting). */
    bool (*enabled)(const struct settings *st);
    /* Runs once at start, on the loop thread before serving (may start
     * background work, e.g. loading a database on a worker). 0 or -1. */
    int (*start)(struct server *srv);
    void (*stop)(void);
    /* One hook per stage, NULL when the filter does not act there. */
    void (*hook[FILTER_NSTAGES])(const struct filter_txn *t, struct filter_result *r);
    /* Runs for authenticated submission too (the virus scan). */
    bool for_submission;
};

#endif
