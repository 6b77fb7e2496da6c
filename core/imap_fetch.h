/* imap_fetch: renders what FETCH returns for one message (RFC 3501 6.4.5
 * and 7.4.2), and IMAP's flag lists. Pure functions over data the caller
 * has loaded (index row, cached structure texts, the message itself); no
 * I/O, so the session runs them on a worker thread and tests run them on
 * plain buffers.
 *
 * Flags travel in two forms: the mail store's Maildir letters ("FRS":
 * D=\Draft, F=\Flagged, R=\Answered, S=\Seen, T=\Deleted; P is kept but not
 * shown, as Dovecot shows it only as $Forwarded when configured) plus
 * space-separated keywords, and IMAP's flag list "(\Seen \Flagged $Label1)". */
#ifndef POSTHORN_IMAP_FETCH_H
#define POSTHORN_IMAP_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "imap_parse.h"
#include "mime.h"

/* ---- flags ---- */

/* IMAP_FLAG_* bits of Maildir letters, and back (letters sorted; `keep`
 * letters not representable in IMAP, such as P, are preserved from `old`). */
unsigned imap_flags_from_maildir(const char *letters);
void imap_flags_to_maildir(unsigned system, const char *old, char out[8]);

/* Appends "(\Answered \Flagged \Deleted \Seen \Draft kw1 kw2 \Recent)" for
 * the given system flags, keywords (space-separated, may be NULL) and
 * recent. Returns 0 or -1. */
int imap_write_flags(struct buf *out, unsigned system, const char *keywords, bool recent);

/* Applies a STORE to (system, keywords): op SET/ADD/REMOVE with the given
 * flags; keywords compare case-insensitively and keep their first
 * spelling. Writes the new keyword string (space-separated) into kw_out.
 * Returns 0, or -1 when out of memory or when more than
 * IMAP_KEYWORDS_MAX keywords would result. */
int imap_flags_apply(enum imap_store_op op, const struct imap_flags *change,
                     unsigned *system, const char *keywords, struct buf *kw_out);

/* "17-Jul-1996 02:44:25 -0700" (RFC 3501 date-time, in UTC: "+0000"),
 * quoted. */
int imap_write_internaldate(struct buf *out, time_t t);

/* ---- FETCH ---- */

/* What the caller must load for a FETCH of these items. */
struct imap_fetch_needs {
    bool message;        /* the whole message text (sections, RFC822*, or
                            structures not cached) */
    bool structure;      /* ENVELOPE, BODY or BODYSTRUCTURE */
};
/* have_cache: the message's ENVELOPE/BODY/BODYSTRUCTURE texts are cached. */
struct imap_fetch_needs imap_fetch_needs(const struct imap_fetch *f, bool have_cache);

/* Whether the FETCH sets \Seen (a non-PEEK BODY[...], RFC822 or
 * RFC822.TEXT) on messages that do not have it. */
bool imap_fetch_sets_seen(const struct imap_fetch *f);

/* One message, as the worker has it. */
struct imap_fetch_msg {
    uint32_t uid;
    unsigned system;             /* IMAP_FLAG_* (after any implicit \Seen) */
    const char *keywords;        /* space-separated, may be NULL */
    bool recent;
    time_t internaldate;
    uint64_t size;               /* RFC822.SIZE */
    const char *msg;             /* CRLF message text, or NULL when not loaded */
    size_t len;
    const struct mime_part *mime;/* its parse tree, or NULL when not parsed
                                    (then parsed here when a part section
                                    or an uncached structure needs it) */
    /* cached texts, or NULL: used when present, else computed from mime */
    const char *envelope, *bodystructure, *body;
    size_t envelope_len, bodystructure_len, body_len;
};

/* Appends the parenthesized attribute list of one FETCH response, e.g.
 * `(UID 4 FLAGS (\Seen) BODY[HEADER.FIELDS (FROM)] {23}\r\n...)`, without
 * the "* n FETCH " prefix and the CRLF. UID comes first when asked for or
 * when uid_command (UID FETCH always returns it); then, as asked for,
 * FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE RFC822.HEADER
 * RFC822.TEXT RFC822 in this order (struct imap_fetch keeps no request
 * order for them), then the sections in the order requested; FLAGS comes
 * last when not asked for but add_flags (the FETCH just set \Seen). Sections:
 * BODY[] and BODY[n] with HEADER, HEADER.FIELDS(.NOT) (names compared
 * case-insensitively, fields in message order, folded lines kept, ending
 * with the blank line), MIME, TEXT; nested parts (mime_find_section;
 * HEADER/TEXT of a message/rfc822 part address the encapsulated message);
 * a part that does not exist is the empty string; <offset.length> partials
 * are answered as "BODY[spec]<offset>" with the clipped octets. The
 * response name drops ".PEEK". Contents go out as literals (quoted only
 * for NIL-free short 7-bit text is not required: always {n}). Returns 0, or
 * -1 when out of memory or when needed data (message or structure) was
 * not supplied. */
int imap_fetch_render(struct buf *out, const struct imap_fetch *f, const struct imap_fetch_msg *m,
                      bool uid_command, bool add_flags);

/* The section text alone (no name, no literal header, no partial), for
 * tests and for size estimates: points *data and *data_len into msg (or to
 * a static empty string), except HEADER.FIELDS(.NOT), which is built into
 * scratch (reset first). root may be NULL for a section without part
 * numbers (the header's end is then found by scanning). */
int imap_fetch_section_text(const char *msg, size_t len, const struct mime_part *root,
                            const struct imap_section *sec, struct buf *scratch,
                            const char **data, size_t *data_len);

#endif
