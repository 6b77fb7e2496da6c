/* imap_parse: pure parsers for what an IMAP4rev1 client sends (RFC 3501
 * section 9 grammar, with LITERAL+ (RFC 7888), SASL-IR, IDLE, MOVE, UIDPLUS,
 * SPECIAL-USE, QUOTA, ENABLE and ID all expressible in it). No I/O.
 *
 * Reading a command (the session's job):
 *   1. Read a line. While imap_literal_suffix() says it ends with {n} or
 *      {n+}, keep the line with its CRLF, answer "+ Ready" for a
 *      synchronizing literal (after checking n against the limit), append
 *      exactly n octets, then read the next line and repeat.
 *   2. The whole command, without the CRLF that ends its last line, goes
 *      to imap_parse_command(), which builds an argument tree in an arena.
 *   3. The command's handler applies the typed parsers below to the args.
 *
 * Memory: every parser allocates only from a caller-supplied arena (a fixed
 * block), so a command's memory is bounded by the arena's size and nothing
 * needs freeing, on success or on error. A full arena is a parse error
 * ("command too complex"). Strings from atoms and quoted strings are copied
 * NUL-terminated into the arena; literal contents point into the command
 * buffer, which must outlive the parse results.
 *
 * Every failure returns -1 (or the negative code documented) and sets *err
 * to a short static text for the "tag BAD <text>" reply. */
#ifndef POSTHORN_IMAP_PARSE_H
#define POSTHORN_IMAP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define IMAP_TAG_MAX        64    /* octets of a tag */
#define IMAP_NAME_MAX       32    /* octets of a command name */
#define IMAP_NEST_MAX       32    /* parenthesized list depth; also SEARCH NOT/OR depth */
#define IMAP_PART_DEPTH_MAX 32    /* numbers in a FETCH section part "1.2.3" */
#define IMAP_KEYWORDS_MAX   128   /* keywords in one flag list */
#define IMAP_PATTERN_MAX    1024  /* octets of a LIST pattern or name the matcher takes */
#define IMAP_ARENA_DEFAULT  (256 * 1024) /* enough for any command up to 64 KB of line */

/* ---- arena ---- */

struct imap_arena {
    unsigned char *mem;
    size_t size, used;
};

/* Uses mem (size octets, any alignment) for allocations; nothing is freed
 * individually. imap_arena_reset() makes the whole block available again. */
void imap_arena_init(struct imap_arena *a, void *mem, size_t size);
void imap_arena_reset(struct imap_arena *a);
/* Suitably aligned for any type; NULL when the arena is full. */
void *imap_arena_alloc(struct imap_arena *a, size_t size);

/* ---- literals ---- */

/* Whether a line (with or without its CRLF) ends with a literal marker
 * "{n}" (synchronizing) or "{n+}" (LITERAL+). Returns 1 with *n and
 * *non_sync set, 0 when there is no marker, or -1 when the line ends with
 * something that looks like a marker but is not valid ("{}", "{12a}",
 * a number above UINT32_MAX): the session should treat the command as
 * complete and let imap_parse_command() reject it. Purely a suffix check:
 * a marker inside an unterminated quoted string is still reported. */
int imap_literal_suffix(const char *line, size_t len, uint64_t *n, bool *non_sync);

/* ---- command tokenizer ---- */

enum imap_arg_type {
    IMAP_ARG_ATOM,      /* also flags ("\Seen"), sequence sets ("1:*"), LIST
                           wildcards and FETCH sections ("BODY[1.MIME]<0.10>") */
    IMAP_ARG_NUMBER,    /* an atom of digits that fits in 32 bits; str holds the digits */
    IMAP_ARG_NIL,       /* the atom NIL, any case; str holds it as sent */
    IMAP_ARG_QUOTED,    /* str is the unescaped content */
    IMAP_ARG_LITERAL,   /* str points into the command; may contain any octets */
    IMAP_ARG_LIST,      /* parenthesized: children in list, count in len */
};

struct imap_arg {
    enum imap_arg_type type;
    const char *str;            /* NUL-terminated except for IMAP_ARG_LITERAL */
    size_t len;                 /* octets of str, or number of children of a list */
    uint32_t num;               /* value of an IMAP_ARG_NUMBER */
    bool non_sync;              /* a literal sent as {n+} */
    struct imap_arg *list;      /* first child of an IMAP_ARG_LIST */
    struct imap_arg *next;      /* next sibling */
};

struct imap_command {
    const char *tag;            /* NUL-terminated; NULL when there is no valid
                                   tag (answer "* BAD") */
    size_t tag_len;
    char name[IMAP_NAME_MAX + 1]; /* upper-case; "" when missing */
    bool uid;                   /* "UID FETCH ...": uid is true, name is "FETCH" */
    struct imap_arg *args;      /* first argument after the name, or NULL */
    size_t nargs;               /* top-level arguments */
};

/* Tokenizes a whole command (see the top of this file): tag, SP, command
 * name (letters, case-insensitive; after "UID" the next name), then
 * arguments separated by spaces: atoms, numbers, NIL, quoted strings ("\\"
 * and "\"" are the only escapes; CR, LF and NUL are refused), literals
 * "{n}" / "{n+}" followed by CRLF (or a bare LF) and n octets, and lists
 * nested at most IMAP_NEST_MAX deep. An atom containing "[" keeps
 * everything up to the matching "]" (spaces and parentheses included) so a
 * FETCH section is one token. On failure out->tag (and out->name when it was
 * read) are still set so the reply can carry them. Returns 0 or -1. */
int imap_parse_command(const char *cmd, size_t len, struct imap_command *out,
                       struct imap_arena *arena, const char **err);

/* Number of arguments in a chain starting at arg. */
size_t imap_arg_count(const struct imap_arg *arg);

/* astring (atom, number, quoted or literal; NIL counts as the atom "NIL"):
 * sets *s and *len. Returns 0, or -1 for a list. */
int imap_arg_astring(const struct imap_arg *arg, const char **s, size_t *len, const char **err);
/* string (quoted or literal only). */
int imap_arg_string(const struct imap_arg *arg, const char **s, size_t *len, const char **err);
/* Whether an atom (or NIL/number) equals word, ignoring ASCII case. */
bool imap_arg_is_atom(const struct imap_arg *arg, const char *word);

/* ---- sequence sets ---- */

/* One range lo..hi. In a parsed (unresolved) set 0 stands for "*". */
struct imap_range {
    uint32_t lo, hi;
};

struct imap_seqset {
    struct imap_range *ranges;
    size_t count;
    bool has_star;
};

/* "1:5,7,9:*" (RFC 3501 sequence-set): numbers 1..4294967295 and "*",
 * a:b in either order. The ranges are kept as given; resolve before use. */
int imap_parse_seqset(const char *s, size_t len, struct imap_seqset *out,
                      struct imap_arena *arena, const char **err);
int imap_arg_seqset(const struct imap_arg *arg, struct imap_seqset *out,
                    struct imap_arena *arena, const char **err);

/* Replaces "*" with star (the number of messages, or the highest UID; 0
 * when the mailbox is empty, which makes a range made only of "*" empty),
 * orders each range, then sorts and merges the ranges into out. */
int imap_seqset_resolve(const struct imap_seqset *in, uint32_t star, struct imap_seqset *out,
                        struct imap_arena *arena, const char **err);

/* Whether n is in a resolved set (binary search). */
bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n);

/* ---- flags (STORE, APPEND) ---- */

#define IMAP_FLAG_SEEN     0x01u
#define IMAP_FLAG_ANSWERED 0x02u
#define IMAP_FLAG_FLAGGED  0x04u
#define IMAP_FLAG_DELETED  0x08u
#define IMAP_FLAG_DRAFT    0x10u

struct imap_flags {
    unsigned system;            /* IMAP_FLAG_* */
    const char **keywords;      /* atoms, NUL-terminated, duplicates removed
                                   (ignoring case) */
    size_t nkeywords;
};

/* A flag list "(\Seen $Forwarded)" (may be empty). \Recent and unknown
 * "\" flags are refused; keywords are atoms. */
int imap_parse_flag_list(const struct imap_arg *arg, struct imap_flags *out,
                         struct imap_arena *arena, const char **err);

enum imap_store_op { IMAP_STORE_SET, IMAP_STORE_ADD, IMAP_STORE_REMOVE };

struct imap_store {
    enum imap_store_op op;
    bool silent;
    struct imap_flags flags;
};

/* STORE's arguments after the sequence set: item ("FLAGS", "+FLAGS",
 * "-FLAGS", each optionally ".SILENT") followed by a flag list or by one or
 * more flags (the rest of the chain). */
int imap_parse_store(const struct imap_arg *item, struct imap_store *out,
                     struct imap_arena *arena, const char **err);

/* ---- dates ---- */

struct imap_date {
    int year, month, day;       /* month 1..12 */
};

/* "1-Feb-1994" or "01-Feb-1994" (atom or quoted): date in RFC 3501. */
int imap_parse_date(const char *s, size_t len, struct imap_date *out, const char **err);
int imap_arg_date(const struct imap_arg *arg, struct imap_date *out, const char **err);

/* " 1-Feb-1994 21:52:25 -0800" (APPEND's date-time; "1-Feb..." without the
 * leading space is also accepted). *t is the instant (UTC), *tz_minutes
 * the zone offset as sent. */
int imap_parse_datetime(const char *s, size_t len, time_t *t, int *tz_minutes,
                        const char **err);

/* Days since 1970-01-01 of a valid date (negative before it). */
int64_t imap_date_days(const struct imap_date *d);

/* ---- FETCH ---- */

#define IMAP_FETCH_FLAGS          0x001u
#define IMAP_FETCH_INTERNALDATE   0x002u
#define IMAP_FETCH_RFC822         0x004u
#define IMAP_FETCH_RFC822_HEADER  0x008u
#define IMAP_FETCH_RFC822_SIZE    0x010u
#define IMAP_FETCH_RFC822_TEXT    0x020u
#define IMAP_FETCH_ENVELOPE       0x040u
#define IMAP_FETCH_BODY           0x080u   /* BODY without a section: non-extensible BODYSTRUCTURE */
#define IMAP_FETCH_BODYSTRUCTURE  0x100u
#define IMAP_FETCH_UID            0x200u

enum imap_section_text {
    IMAP_SECTION_ALL,             /* BODY[] or BODY[1.2] */
    IMAP_SECTION_HEADER,
    IMAP_SECTION_HEADER_FIELDS,
    IMAP_SECTION_HEADER_FIELDS_NOT,
    IMAP_SECTION_MIME,
    IMAP_SECTION_TEXT,
};

struct imap_section {
    bool peek;                    /* BODY.PEEK: does not set \Seen */
    uint32_t part[IMAP_PART_DEPTH_MAX];
    size_t nparts;                /* 0: the whole message */
    enum imap_section_text text;
    const char **fields;          /* HEADER.FIELDS(.NOT): names as sent */
    size_t nfields;
    const char *spec;             /* the text between the brackets as sent,
                                     for the response ("HEADER.FIELDS (A B)") */
    size_t spec_len;
    bool partial;                 /* <offset.length> given */
    uint32_t offset, length;      /* length >= 1 */
};

struct imap_fetch {
    unsigned items;               /* IMAP_FETCH_* */
    struct imap_section *sections;
    size_t nsections;
};

/* FETCH's last argument: the macros ALL, FAST, FULL, one fetch attribute,
 * or a parenthesized list of attributes (macros not allowed inside). */
int imap_parse_fetch(const struct imap_arg *arg, struct imap_fetch *out,
                     struct imap_arena *arena, const char **err);

/* ---- SEARCH ---- */

enum imap_search_op {
    IMAP_SEARCH_AND,              /* children: all must match (a group or the top) */
    IMAP_SEARCH_OR,               /* two children */
    IMAP_SEARCH_NOT,              /* one child */
    IMAP_SEARCH_ALL,
    IMAP_SEARCH_SEQSET,           /* set */
    IMAP_SEARCH_UID,              /* set */
    IMAP_SEARCH_FLAG,             /* flag (IMAP_FLAG_* or IMAP_SEARCH_RECENT_FLAG), set or not */
    IMAP_SEARCH_KEYWORD,          /* str; negated for UNKEYWORD */
    IMAP_SEARCH_NEW,              /* \Recent and not \Seen */
    IMAP_SEARCH_OLD,              /* not \Recent */
    IMAP_SEARCH_HEADER,           /* header field contains str ("" matches any
                                     message that has the field) */
    IMAP_SEARCH_BODY,             /* str */
    IMAP_SEARCH_TEXT,             /* str */
    IMAP_SEARCH_BEFORE, IMAP_SEARCH_ON, IMAP_SEARCH_SINCE,              /* internal date */
    IMAP_SEARCH_SENTBEFORE, IMAP_SEARCH_SENTON, IMAP_SEARCH_SENTSINCE,  /* Date: header */
    IMAP_SEARCH_LARGER, IMAP_SEARCH_SMALLER,                            /* number */
};

#define IMAP_SEARCH_RECENT_FLAG 0x20u

struct imap_search {
    enum imap_search_op op;
    bool negate;                  /* FLAG and KEYWORD: UN... forms */
    unsigned flag;
    const char *field;            /* HEADER: header name (BCC, CC, FROM,
                                     SUBJECT, TO map to HEADER with it) */
    size_t field_len;
    const char *str;              /* search string; may contain NUL when it
                                     came in a literal */
    size_t len;
    uint32_t number;
    struct imap_date date;
    struct imap_seqset set;       /* unresolved */
    struct imap_search *child;    /* AND, OR, NOT */
    struct imap_search *next;
};

enum imap_charset { IMAP_CHARSET_DEFAULT, IMAP_CHARSET_UTF8, IMAP_CHARSET_ASCII };

/* The value imap_parse_search() returns for an unknown CHARSET: answer
 * "NO [BADCHARSET (UTF-8 US-ASCII)]" rather than BAD. */
#define IMAP_ERR_BADCHARSET (-2)

/* SEARCH's arguments: [CHARSET name] then one or more keys (every key of
 * RFC 3501 6.4.4, sequence sets, parenthesized groups). *root is an AND
 * node over the keys. Returns 0, -1, or IMAP_ERR_BADCHARSET. */
int imap_parse_search(const struct imap_arg *first, enum imap_charset *charset,
                      struct imap_search **root, struct imap_arena *arena, const char **err);

/* ---- mailboxes and LIST ---- */

/* Whether a name is INBOX in any case. */
bool imap_mailbox_is_inbox(const char *name, size_t len);

/* A mailbox argument (astring): checked to be non-empty, NUL-free and
 * valid modified UTF-7; the whole name INBOX in any case is returned as
 * "INBOX" (RFC 3501 5.1). *name is NUL-terminated. */
int imap_arg_mailbox(const struct imap_arg *arg, const char **name, size_t *len,
                     struct imap_arena *arena, const char **err);

/* LIST/LSUB arguments: reference name and mailbox pattern (list-mailbox:
 * an atom with % and * or a string; may be empty). Both NUL-free and NUL-
 * terminated. */
int imap_parse_list(const struct imap_arg *first, const char **ref, size_t *ref_len,
                    const char **pattern, size_t *pattern_len, const char **err);

/* The pattern to match names against: the pattern alone when the reference
 * is empty or the pattern starts with the delimiter, else reference followed
 * by pattern. Written NUL-terminated into the arena. */
int imap_list_combine(const char *ref, size_t ref_len, const char *pattern, size_t pattern_len,
                      char delim, const char **out, size_t *out_len, struct imap_arena *arena,
                      const char **err);

/* Whether name matches a LIST pattern: "*" matches anything, "%" anything
 * but the hierarchy delimiter. The leading "INBOX" of a pattern matches
 * "INBOX" in any case. Time is O(pattern x name), never exponential;
 * patterns or names longer than IMAP_PATTERN_MAX do not match. */
bool imap_pattern_match(const char *pattern, size_t plen, const char *name, size_t nlen,
                        char delim);

#endif
