/* mta: the SMTP client that delivers one message to one destination (an
 * MX'd domain, or a relay host) for a group of recipients. One call is one
 * attempt: look up the MX (or the relay), try the hosts in preference order
 * (random among equals, several addresses per host in turn, fallback to
 * A/AAAA when there is no MX), speak ESMTP with opportunistic or required
 * STARTTLS, AUTH PLAIN/LOGIN for relays, PIPELINING, SIZE, 8BITMIME,
 * SMTPUTF8 and DSN when offered, and report per recipient.
 *
 * Rules: a null MX (RFC 7505) is a permanent failure (5.1.10); an MX
 * address that is one of our own SMTP listening addresses is a mail loop
 * (permanent, 5.4.6) — other addresses, loopback ones included, are
 * delivered to normally; an 8-bit message to a server without 8BITMIME is
 * refused permanently (5.6.3, RFC 6152 3) rather than sent broken; a
 * message needing SMTPUTF8 to a server without it likewise (5.6.7).
 * A domain with neither MX nor address records is a permanent failure
 * (5.4.4, RFC 5321 5.1). Connection, TLS and timeout problems are temporary
 * for every recipient not yet answered; but when the STARTTLS handshake
 * fails on an opportunistic route, the same address is tried once more
 * without STARTTLS (Postfix's "may" level; never where TLS is required).
 * Runs on the loop; DNS via dns.h; I/O via conn.h. */
#ifndef POSTHORN_MTA_H
#define POSTHORN_MTA_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "relay.h"
#include "server.h"

enum mta_status { MTA_DELIVERED, MTA_TEMPFAIL, MTA_PERMFAIL };

struct mta_rcpt_result {
    enum mta_status status;
    char reply[512];         /* "550 5.1.1 <x@y>: user unknown" or a local reason */
    char enhanced[16];       /* "5.1.1", from the reply or chosen locally */
    char remote[300];        /* "mx.example.org[192.0.2.1]" that answered, "" if none */
    bool remote_dsn;         /* MTA_DELIVERED to a server that offered DSN: it takes
                                over NOTIFY (RFC 3461 4.1), so no "relayed" DSN is due */
};

struct mta_job {
    const struct route *route;
    const char *rcpt_domain;            /* for the MX lookup and logging */
    const char *sender;                 /* "" for <> */
    const char *const *rcpts;
    const unsigned *notify;             /* DSN NOTIFY per rcpt or NULL */
    const char *const *orcpt;           /* DSN ORCPT per rcpt or NULL */
    size_t nrcpts;
    int ret;                            /* DSN RET or 0 */
    const char *envid;                  /* or NULL */
    const struct buf *body;             /* the message, CRLF, not dot-stuffed */
    const char *log_id;                 /* queue id for log lines */
};

/* results[i] belongs to job->rcpts[i]; valid only during the call. */
typedef void (*mta_done_fn)(void *arg, const struct mta_rcpt_result *results, size_t n);

/* Starts an attempt. The job's strings and body must stay valid until done
 * runs (on the loop thread, exactly once). Returns 0 or -1 (out of memory). */
int mta_deliver(struct server *srv, const struct mta_job *job, mta_done_fn done, void *arg);

/* Attempts in flight. */
unsigned mta_active(void);

/* Shutdown: ends every attempt in flight soon. Connections are closed at
 * once; recipients not decided yet get a temporary failure ("451 4.3.2")
 * and are retried after the restart (one whose message was already sent
 * may be delivered twice: the remote may have accepted it). An attempt
 * waiting for DNS ends when the answer (or the DNS timeout) comes. Every
 * done callback still runs exactly once, on the loop. */
void mta_abort_all(void);

#endif
