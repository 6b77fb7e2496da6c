/* mime: an RFC 5322 / MIME (RFC 2045-2047, 2231) parser for whole messages
 * held in memory, plus the decoders SEARCH and the filters need.
 *
 * mime_parse() builds a part tree with the exact octet offsets, sizes and
 * line counts of each part's header and body, as BODYSTRUCTURE and
 * FETCH BODY[section] need them. The tree points into the message: the
 * message buffer must outlive the tree and must not change.
 *
 * Shape of the tree:
 *   - the root is the message itself: its header is the message header;
 *   - a multipart's children are its body parts, in order;
 *   - a message/rfc822 part has exactly one child, the encapsulated message,
 *     whose header/body spans lie inside the part's body (child->hdr_off ==
 *     part->body_off);
 *   - every other part is a leaf.
 *
 * Parsing never fails on bad input; it only fails when out of memory. It is
 * linear in the message size: each line is looked at once, and compared
 * against at most MIME_MAX_DEPTH boundaries.
 *
 * Boundaries: a line that starts with "--" followed by the boundary of any
 * enclosing multipart ends the current part (the longest matching boundary
 * wins, as in Dovecot); the line break before it belongs to the boundary.
 * An outer boundary ends every inner part. A part header that runs into a
 * boundary line without an empty line gives that line break back (its
 * hdr_size then excludes it), and a part that is empty because one
 * boundary line follows another sits just before the second one's line
 * break, so every child lies inside its parent's body. A multipart whose final boundary
 * is missing ends where its parent ends. A multipart with no usable
 * boundary parameter is one leaf part, reported as text/plain (Dovecot
 * does the same). Parts below MIME_MAX_DEPTH, or beyond MIME_MAX_PARTS in
 * one message, are not parsed further: they become leaves with `opaque`
 * set, and BODYSTRUCTURE reports them as application/octet-stream.
 *
 * Line counts (body_lines): the number of lines of the body as stored —
 * its LF characters, plus one when the body is non-empty and does not end
 * with LF (the line break before a boundary is not part of the body).
 * "hello" CRLF "--b" gives body_size 5, body_lines 1. */
#ifndef POSTHORN_MIME_H
#define POSTHORN_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

#define MIME_MAX_DEPTH 100
#define MIME_MAX_PARTS 10000
/* Parameters kept per Content-Type/-Disposition field; more are ignored. */
#define MIME_MAX_PARAMS 64
/* RFC 2231 continuation sections kept per parameter (name*0 .. name*N). */
#define MIME_MAX_SECTIONS 64
/* Longer boundary parameters are treated as missing (RFC 2046: 70). */
#define MIME_MAX_BOUNDARY 200

/* A span of the message buffer; p == NULL when absent. */
struct mime_str {
    const char *p;
    size_t len;
};

/* A Content-Type or Content-Disposition parameter. RFC 2231 sections are
 * joined. */
struct mime_param {
    struct mime_param *next;
    char *name;           /* as given, without "*N" / "*" suffixes; NUL-terminated */
    /* What IMAP reports: the joined value as sent. For an extended (RFC 2231
     * "name*") parameter this is charset'language'percent-encoded text, and
     * BODYSTRUCTURE reports the name with a trailing '*', as Dovecot does. */
    char *raw;
    size_t raw_len;
    bool extended;
    /* The value decoded to UTF-8 where the charset is known (RFC 2231
     * charset, or RFC 2047 encoded words in a plain value); otherwise the
     * octets as sent. NUL-terminated, but may contain NULs. */
    char *value;
    size_t value_len;
};

enum mime_kind {
    MIME_LEAF = 0,
    MIME_MULTIPART,
    MIME_MESSAGE,       /* message/rfc822 (or message/global) with one child */
};

struct mime_part {
    struct mime_part *parent;
    struct mime_part *children;   /* first child */
    struct mime_part *next;       /* next sibling */
    size_t nchildren;
    enum mime_kind kind;
    unsigned depth;               /* root = 0 */
    /* Set when the part would have been a multipart or an encapsulated
     * message but a limit (depth, part count) stopped the parse. */
    bool opaque;
    /* multipart: the final boundary line was missing. */
    bool missing_end_boundary;
    /* multipart/xxx without a usable boundary: parsed as one text/plain leaf. */
    bool no_boundary;

    /* Offsets into the message. The header includes the empty line that
     * ends it (when present); body_off == hdr_off + hdr_size. */
    size_t hdr_off, hdr_size, hdr_lines;
    size_t body_off, body_size, body_lines;

    /* Content-Type as given (NULL when missing or invalid: see the
     * mime_part_type() defaults). NUL-terminated copies. */
    char *type, *subtype;
    struct mime_param *type_params;
    char *disposition;            /* NULL when missing */
    struct mime_param *disp_params;

    /* First occurrence of each field, raw (folded, as in the message,
     * without the name and colon). */
    struct mime_str content_type, content_disposition,
                    content_id, content_description, content_transfer_encoding,
                    content_md5, content_language, content_location;
    /* Message header fields (meaningful for the root and for children of
     * MIME_MESSAGE parts): what ENVELOPE needs. */
    struct mime_str date, subject, from, sender, reply_to, to, cc, bcc,
                    in_reply_to, message_id;

    struct mime_part *alloc_next; /* internal: every part of a tree, for freeing */
    struct mime_part *last_child; /* internal: appending stays O(1) */
};

/* Parses msg[0..len). Returns the root, or NULL when out of memory. */
struct mime_part *mime_parse(const char *msg, size_t len);
void mime_free(struct mime_part *root);

/* The media type with RFC 2045 defaults applied: text/plain, or
 * message/rfc822 inside multipart/digest; text/plain for a multipart
 * without a boundary; application/octet-stream for an opaque part.
 * *is_default is set when the strings are defaults (not from the message). */
void mime_part_type(const struct mime_part *part, const char **type,
                    const char **subtype, bool *is_default);
/* Case-insensitive test of the effective type; subtype NULL matches any. */
bool mime_part_is(const struct mime_part *part, const char *type, const char *subtype);
/* The first parameter called `name` (case-insensitive), or NULL. */
const struct mime_param *mime_param_find(const struct mime_param *list, const char *name);

/* RFC 3501 section numbers: path[0..depth) such as {1, 2} for "1.2".
 * depth 0 returns root. Part N of a multipart is its Nth child; part 1 of a
 * non-multipart is the part itself; for a message/rfc822 part, numbers
 * address the encapsulated message's parts. Returns NULL when there is no
 * such part. For HEADER/TEXT of a message/rfc822 part, use its child. */
const struct mime_part *mime_find_section(const struct mime_part *root,
                                          const unsigned *path, size_t depth);

/* Header helpers. mime_header_find() returns the raw value of the first
 * field called `name` (case-insensitive) in hdr[0..len), or a NULL span. */
struct mime_str mime_header_find(const char *hdr, size_t len, const char *name);
/* Appends value with folding removed (CR and LF dropped) and leading and
 * trailing white space trimmed. Returns 0 or -1 (out of memory). */
int mime_unfold(const char *value, size_t len, struct buf *out);

/* RFC 2047: appends the unfolded header value with encoded words decoded to
 * UTF-8 (B and Q; white space between adjacent encoded words dropped;
 * words of one charset joined before conversion, so split multibyte
 * characters survive). Encoded words in an unknown charset, or malformed
 * ones, are copied as they are; octets invalid in their charset become
 * U+FFFD. Returns 0 or -1 (out of memory). */
int mime_decode_header(const char *in, size_t len, struct buf *out_utf8);

/* Appends `len` octets of `charset` converted to UTF-8 (invalid sequences
 * become U+FFFD). Returns 0, 1 when the charset is unknown (nothing
 * appended), or -1 (out of memory). */
int mime_charset_to_utf8(const char *charset, const char *in, size_t len, struct buf *out);

/* Body decoders for SEARCH. Lenient: base64 skips characters outside the
 * alphabet and stops at padding; quoted-printable keeps malformed "="
 * sequences as they are and drops trailing white space before line ends.
 * Return 0 or -1 (out of memory). */
int mime_decode_base64(const char *in, size_t len, struct buf *out);
int mime_decode_qp(const char *in, size_t len, struct buf *out);
/* Appends a leaf's body with its Content-Transfer-Encoding undone (7bit,
 * 8bit, binary and unknown encodings are copied). msg is the buffer the
 * tree was parsed from. Returns 0 or -1. */
int mime_decode_body(const char *msg, const struct mime_part *part, struct buf *out);

#endif
