/* imap_search: evaluates a parsed SEARCH program (imap_parse.h) against
 * one message at a time (RFC 3501 6.4.4). Pure: the caller supplies the
 * message's index data and, only when a key needs it, the message text,
 * so a search over flags, sizes, dates and sets never opens a file.
 *
 * String keys (HEADER, FROM/TO/CC/BCC/SUBJECT, BODY, TEXT) match
 * case-insensitively (ASCII and the Unicode simple case folding of Latin,
 * Greek and Cyrillic letters) as substrings of decoded text: header values
 * unfolded with RFC 2047 words decoded to UTF-8; bodies of text parts with
 * their transfer encoding undone and their charset converted to UTF-8
 * (other parts searched as raw octets). TEXT matches the header block or
 * any body. Address fields are matched on their decoded full text, so
 * FROM "Jöns" and FROM "example.org" both work. The search string is UTF-8
 * (CHARSET UTF-8 and US-ASCII are the same here).
 *
 * Dates: BEFORE/ON/SINCE compare the internal date's day in UTC;
 * SENTBEFORE/ON/SINCE the Date: header's own calendar day (its time zone
 * disregarded, as RFC 3501 says); a message without a parsable Date: falls
 * back to its internal date. */
#ifndef POSTHORN_IMAP_SEARCH_H
#define POSTHORN_IMAP_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "imap_parse.h"
#include "mime.h"

/* The mailbox a search runs over: used to resolve "*" in sets. */
struct imap_search_ctx {
    uint32_t count;          /* messages (highest sequence number) */
    uint32_t max_uid;        /* highest UID, 0 when empty */
    struct imap_arena *arena;/* for resolving sets (once per search) */
};

struct imap_search_msg {
    uint32_t seq, uid;
    unsigned system;         /* IMAP_FLAG_* */
    bool recent;
    const char *keywords;    /* space-separated, may be NULL */
    uint64_t size;           /* RFC822.SIZE */
    time_t internaldate;
    const char *msg;         /* CRLF text, or NULL when not loaded */
    size_t len;
    const struct mime_part *mime; /* parse of msg, or NULL: then msg is
                                     parsed here when a key needs it (pass
                                     the tree when matching several
                                     programs against one message) */
};

/* Resolves every set in the program in place (call once per search, after
 * the mailbox is known). Returns 0, or -1 with *err set. */
int imap_search_prepare(struct imap_search *root, const struct imap_search_ctx *ctx,
                        const char **err);

/* Whether evaluating the program may need the message text (a header,
 * body, text or sent-date key anywhere in it). */
bool imap_search_needs_message(const struct imap_search *root);

/* Evaluates the prepared program for one message. Keys are evaluated
 * left to right with short-circuit, and decoded text is built once per
 * call, only when a string key is reached. Returns 1 (match), 0 (no match)
 * or -1 (out of memory, or the text was needed but m->msg is NULL). */
int imap_search_match(const struct imap_search *root, const struct imap_search_msg *m);

/* Case-insensitive substring test used by the string keys (exposed for
 * tests): needle and haystack are UTF-8; octets that are not valid UTF-8
 * match only themselves. Linear time (KMP over folded code points); false
 * when a needle over 256 octets cannot get memory for its tables. */
bool imap_search_text_contains(const char *hay, size_t hay_len, const char *needle,
                               size_t needle_len);

#endif
