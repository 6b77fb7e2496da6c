/* imap_bodystructure: the IMAP4rev1 (RFC 3501 7.4.2) ENVELOPE, BODY and
 * BODYSTRUCTURE texts of a parsed message (core/mime.h), as the FETCH
 * response carries them and as the mailbox index caches them.
 *
 * Strings are written as RFC 3501 quoted strings (with \\ and \" escaped),
 * or as literals {n}\r\n... when they contain CR, LF, NUL or 8-bit octets
 * or are longer than IMAP_QUOTED_MAX. Missing values are NIL.
 *
 * Media types and parameter names appear as the message gives them; the
 * defaults are written "TEXT" "PLAIN" ("CHARSET" "us-ascii") and "7BIT".
 * Every text part without a charset parameter gets ("CHARSET" "us-ascii")
 * appended, as Dovecot does. RFC 2231 parameters are reported joined, with
 * the name ending in '*' and the value as charset'language'%XX text
 * (Dovecot's form). A multipart without children (no boundary line found)
 * is written with one empty text/plain part, since the grammar requires
 * one. Parts the parser left opaque (limits), and message/rfc822 parts that
 * were not parsed (transfer-encoded), are written as application/
 * octet-stream, because clients expect an envelope after MESSAGE RFC822. */
#ifndef POSTHORN_IMAP_BODYSTRUCTURE_H
#define POSTHORN_IMAP_BODYSTRUCTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "mime.h"

#define IMAP_QUOTED_MAX 1000

/* Appends an IMAP string: NIL when s is NULL, else quoted or a literal. */
int imap_write_nstring(struct buf *out, const char *s, size_t len);

/* Appends the ENVELOPE of a message: `msg` is the root of mime_parse(), or
 * the child of a MIME_MESSAGE part. Date, Subject, In-Reply-To and
 * Message-ID are the unfolded raw values; address lists come from From,
 * Sender, Reply-To, To, Cc and Bcc, with RFC 3501 group markers; Sender and
 * Reply-To default to From. An address without a local part or domain gets
 * "MISSING_MAILBOX" / "MISSING_DOMAIN" (Dovecot's markers), so that a NIL
 * host always means a group marker. Returns 0 or -1 (out of memory). */
int imap_envelope(struct buf *out, const struct mime_part *msg);

/* Appends BODY (extended = false) or BODYSTRUCTURE (extended = true: with
 * body MD5, disposition, language and location) of the message whose root
 * is `root`. Returns 0 or -1 (out of memory). */
int imap_bodystructure(struct buf *out, const struct mime_part *root, bool extended);

#endif
