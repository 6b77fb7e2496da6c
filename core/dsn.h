/* dsn: RFC 3464 delivery status notifications (bounces and delay
 * warnings), as multipart/report messages ready to store or queue. Pure:
 * no I/O. */
#ifndef POSTHORN_DSN_H
#define POSTHORN_DSN_H

#include <stddef.h>
#include <time.h>

#include "buf.h"

enum dsn_action { DSN_FAILED, DSN_DELAYED, DSN_DELIVERED };

struct dsn_rcpt {
    const char *address;         /* final recipient */
    const char *orcpt;           /* original recipient (xtext) or NULL */
    enum dsn_action action;
    const char *status;          /* "5.1.1" */
    const char *remote;          /* remote MTA "mx.example.org" or NULL */
    const char *diagnostic;      /* the remote reply "550 5.1.1 ..." or a local reason */
};

struct dsn_info {
    const char *hostname;        /* reporting MTA */
    const char *from;            /* "MAILER-DAEMON@<hostname>" */
    const char *to;              /* the original envelope sender */
    const char *envid;           /* or NULL */
    const char *queue_id;
    time_t arrival;
    int ret_hdrs_only;           /* RET=HDRS: return only the headers */
};

/* Builds the whole message (headers with Date, Message-ID, Auto-Submitted:
 * auto-replied; a human-readable part that quotes the remote reply; the
 * message/delivery-status part; the original message or its headers as
 * message/rfc822 or text/rfc822-headers) into out. Returns 0 or -1. */
int dsn_build(const struct dsn_info *info, const struct dsn_rcpt *rcpts, size_t n,
              const char *original, size_t original_len, struct buf *out);

#endif
