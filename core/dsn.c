#include "dsn.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "smtp_parse.h"

/* Above this the original is returned as headers only (RFC 3464 leaves the
 * choice to the MTA; a bounce should not double the traffic of a big one). */
#define DSN_FULL_MAX (1024 * 1024)
#define FIELD_MAX 1000

/* Copies s into out as one header-safe line: control characters (CR, LF
 * included: no header injection from a remote reply) become spaces, and
 * with ascii_only non-ASCII octets become '?'. */
static void clean(const char *s, char *out, size_t outlen, bool ascii_only)
{
    size_t i = 0;
    for (; s && s[i] && i + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            c = ' ';
        else if (ascii_only && c > 0x7f)
            c = '?';
        out[i] = (char)c;
    }
    out[i] = '\0';
}

static int rfc5322_date(time_t t, char *out, size_t outlen)
{
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, outlen, "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
        return -1;
    return 0;
}

static int random_hex(char *out, size_t nbytes)
{
    unsigned char r[32];
    if (nbytes > sizeof r || getrandom(r, nbytes, 0) != (ssize_t)nbytes)
        return -1;
    for (size_t i = 0; i < nbytes; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
    return 0;
}

/* A boundary that does not occur in the original. */
static int make_boundary(const char *original, size_t len, char *out, size_t outlen)
{
    char hex[33];
    for (int tries = 0; tries < 8; tries++) {
        if (random_hex(hex, 16) < 0)
            return -1;
        snprintf(out, outlen, "=_posthorn_%s", hex);
        if (!original || !memmem(original, len, out, strlen(out)))
            return 0;
    }
    return -1;
}

/* Length of the original's header section including the blank line (or
 * everything when there is no body). */
static size_t header_len(const char *msg, size_t len)
{
    if (len >= 2 && memcmp(msg, "\r\n", 2) == 0)
        return 2;
    const char *end = memmem(msg, len, "\r\n\r\n", 4);
    return end ? (size_t)(end - msg) + 4 : len;
}

static bool has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] & 0x80)
            return true;
    return false;
}

static const char *subject_for(const struct dsn_rcpt *r, size_t n)
{
    bool delayed = false;
    for (size_t i = 0; i < n; i++) {
        if (r[i].action == DSN_FAILED)
            return "Undelivered Mail Returned to Sender";
        delayed |= r[i].action == DSN_DELAYED;
    }
    return delayed ? "Delayed Mail (still being retried)" : "Successful Mail Delivery Report";
}

static const char *action_name(enum dsn_action a)
{
    switch (a) {
    case DSN_FAILED: return "failed";
    case DSN_DELAYED: return "delayed";
    default: return "relayed";
    }
}

static int top_headers(const struct dsn_info *info, const struct dsn_rcpt *r, size_t n,
                       const char *boundary, struct buf *out)
{
    char date[64], mid[40], host[256], from[FIELD_MAX], to[FIELD_MAX];
    if (rfc5322_date(time(NULL), date, sizeof date) < 0 || random_hex(mid, 12) < 0)
        return -1;
    clean(info->hostname, host, sizeof host, true);
    clean(info->from, from, sizeof from, false);
    clean(info->to, to, sizeof to, false);
    return buf_printf(out,
                      "From: Mail Delivery System <%s>\r\n"
                      "To: <%s>\r\n"
                      "Subject: %s\r\n"
                      "Date: %s\r\n"
                      "Message-ID: <%s.dsn@%s>\r\n"
                      "Auto-Submitted: auto-replied\r\n"
                      "MIME-Version: 1.0\r\n"
                      "Content-Type: multipart/report; report-type=delivery-status;\r\n"
                      "\tboundary=\"%s\"\r\n"
                      "\r\n"
                      "This is a MIME-encapsulated message.\r\n",
                      from, to, subject_for(r, n), date, mid, host, boundary);
}

static bool any_action(const struct dsn_rcpt *r, size_t n, enum dsn_action a)
{
    for (size_t i = 0; i < n; i++)
        if (r[i].action == a)
            return true;
    return false;
}

/* What original_part will attach: 2 the whole message, 1 its headers, 0
 * nothing. */
static int attached(const struct dsn_info *info, size_t original_len)
{
    if (original_len == 0)
        return 0;
    return info->ret_hdrs_only || original_len > DSN_FULL_MAX ? 1 : 2;
}

static int human_part(const struct dsn_info *info, const struct dsn_rcpt *r, size_t n,
                      size_t original_len, const char *boundary, struct buf *out)
{
    char host[256];
    clean(info->hostname, host, sizeof host, true);
    int rc = buf_printf(out,
                        "\r\n--%s\r\n"
                        "Content-Description: Notification\r\n"
                        "Content-Type: text/plain; charset=us-ascii\r\n"
                        "\r\n"
                        "This is the mail system at host %s.\r\n"
                        "\r\n",
                        boundary, host);
    if (rc == 0 && any_action(r, n, DSN_FAILED))
        rc = buf_printf(out, "Your message could not be delivered to one or more recipients.\r\n");
    if (rc == 0 && any_action(r, n, DSN_DELAYED))
        rc = buf_printf(out, "Your message has not been delivered yet to one or more\r\n"
                             "recipients. Delivery will be retried; you do not need to\r\n"
                             "send it again.\r\n");
    if (rc == 0 && any_action(r, n, DSN_DELIVERED))
        rc = buf_printf(out, "Your message was relayed to the mail server of one or more\r\n"
                             "recipients that does not send delivery notifications; you\r\n"
                             "will get no further notice about them from there.\r\n");
    int att = attached(info, original_len);
    if (rc == 0 && att > 0)
        rc = buf_printf(out, "%s\r\n", att == 2 ? "The message is attached below."
                                                 : "Only its headers are attached below.");
    if (rc == 0)
        rc = buf_printf(out, "\r\n");
    for (size_t i = 0; i < n && rc == 0; i++) {
        char addr[FIELD_MAX], diag[FIELD_MAX], remote[300];
        clean(r[i].address, addr, sizeof addr, false);
        clean(r[i].diagnostic, diag, sizeof diag, true);
        clean(r[i].remote, remote, sizeof remote, true);
        if (r[i].remote && *remote)
            rc = buf_printf(out, "<%s>: host %s said:\r\n    %s\r\n\r\n", addr, remote, diag);
        else
            rc = buf_printf(out, "<%s>: %s\r\n\r\n", addr, diag);
    }
    return rc;
}

/* "rfc822;alice+2Bx@example.org" -> "rfc822;alice+x@example.org"; the
 * encoded form is kept when it does not decode to printable text. */
static void original_recipient(const char *orcpt, char *out, size_t outlen)
{
    const char *semi = strchr(orcpt, ';');
    char decoded[FIELD_MAX];
    if (semi && smtp_xtext_decode(semi + 1, strlen(semi + 1), decoded, sizeof decoded) == 0) {
        char type[64];
        clean(decoded, decoded, sizeof decoded, false);
        snprintf(type, sizeof type, "%.*s", (int)(semi - orcpt), orcpt);
        clean(type, type, sizeof type, true);
        int n = snprintf(out, outlen, "%s;%s", type, decoded);
        if (n > 0 && (size_t)n < outlen)
            return;
    }
    clean(orcpt, out, outlen, true);
}

static int rcpt_fields(const struct dsn_rcpt *r, struct buf *out)
{
    char addr[FIELD_MAX], status[32], field[FIELD_MAX];
    clean(r->address, addr, sizeof addr, false);
    clean(r->status && *r->status ? r->status : (r->action == DSN_FAILED ? "5.0.0" : "4.0.0"),
          status, sizeof status, true);
    int rc = buf_printf(out, "\r\n");
    if (rc == 0 && r->orcpt && *r->orcpt) {
        original_recipient(r->orcpt, field, sizeof field);
        rc = buf_printf(out, "Original-Recipient: %s\r\n", field);
    }
    if (rc == 0)
        rc = buf_printf(out, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", addr,
                        action_name(r->action), status);
    if (rc == 0 && r->remote && *r->remote) {
        clean(r->remote, field, sizeof field, true);
        /* "mx.example.org[192.0.2.1]": the name is the dns-type value. */
        char *bracket = strchr(field, '[');
        if (bracket && bracket != field)
            *bracket = '\0';
        rc = buf_printf(out, "Remote-MTA: dns; %s\r\n", field);
    }
    if (rc == 0 && r->diagnostic && *r->diagnostic) {
        clean(r->diagnostic, field, sizeof field, true);
        rc = buf_printf(out, "Diagnostic-Code: smtp; %s\r\n", field);
    }
    return rc;
}

static int status_part(const struct dsn_info *info, const struct dsn_rcpt *r, size_t n,
                       const char *boundary, struct buf *out)
{
    char host[256], date[64], envid[FIELD_MAX], qid[64];
    clean(info->hostname, host, sizeof host, true);
    clean(info->queue_id ? info->queue_id : "", qid, sizeof qid, true);
    if (rfc5322_date(info->arrival, date, sizeof date) < 0)
        return -1;
    int rc = buf_printf(out,
                        "\r\n--%s\r\n"
                        "Content-Description: Delivery report\r\n"
                        "Content-Type: message/delivery-status\r\n"
                        "\r\n"
                        "Reporting-MTA: dns; %s\r\n",
                        boundary, host);
    if (rc == 0 && *qid)
        rc = buf_printf(out, "X-Posthorn-Queue-ID: %s\r\n", qid);
    if (rc == 0 && info->envid && *info->envid) {
        clean(info->envid, envid, sizeof envid, true);
        rc = buf_printf(out, "Original-Envelope-Id: %s\r\n", envid);
    }
    if (rc == 0)
        rc = buf_printf(out, "Arrival-Date: %s\r\n", date);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = rcpt_fields(&r[i], out);
    return rc;
}

static int original_part(const struct dsn_info *info, const char *original, size_t len,
                         const char *boundary, struct buf *out)
{
    bool hdrs = attached(info, len) == 1;
    size_t n = hdrs ? header_len(original, len) : len;
    int rc = buf_printf(out,
                        "\r\n--%s\r\n"
                        "Content-Description: %s\r\n"
                        "Content-Type: %s\r\n"
                        "%s"
                        "\r\n",
                        boundary, hdrs ? "Undelivered Message Headers" : "Undelivered Message",
                        hdrs ? "text/rfc822-headers" : "message/rfc822",
                        has_8bit(original, n) ? "Content-Transfer-Encoding: 8bit\r\n" : "");
    if (rc == 0)
        rc = buf_append(out, original, n);
    /* The closing delimiter needs a CRLF before it that is not part of the
     * original; an original without a final CRLF gets one. */
    if (rc == 0 && (n < 2 || memcmp(original + n - 2, "\r\n", 2) != 0))
        rc = buf_append(out, "\r\n", 2);
    return rc;
}

int dsn_build(const struct dsn_info *info, const struct dsn_rcpt *rcpts, size_t n,
              const char *original, size_t original_len, struct buf *out)
{
    char boundary[64];
    if (!info || !rcpts || n == 0 || !out)
        return -1;
    if (!original)
        original_len = 0;
    if (make_boundary(original, original_len, boundary, sizeof boundary) < 0)
        return -1;
    size_t start = out->len;
    int rc = top_headers(info, rcpts, n, boundary, out);
    if (rc == 0)
        rc = human_part(info, rcpts, n, original_len, boundary, out);
    if (rc == 0)
        rc = status_part(info, rcpts, n, boundary, out);
    if (rc == 0 && original_len > 0)
        rc = original_part(info, original, original_len, boundary, out);
    if (rc == 0)
        rc = buf_printf(out, "\r\n--%s--\r\n", boundary);
    if (rc < 0)
        out->len = start;
    return rc;
}
