/* SEARCH evaluation. See imap_search.h. */
#include "imap_search.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ascii.h"

/* ---- case-insensitive matching ----------------------------------------- */

/* Octets that are not valid UTF-8 become values above Unicode, so they
 * compare only with the same octet. */
#define INVALID_OCTET 0x200000u

/* Decodes the code point at s[*i] and advances *i (by one octet for an
 * invalid, overlong, surrogate or truncated sequence). */
static uint32_t utf8_next(const unsigned char *s, size_t len, size_t *i)
{
    unsigned char c = s[*i];
    size_t n = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
             : c >= 0xF0 && c <= 0xF4 ? 3 : 4;
    if (n == 0) {
        (*i)++;
        return c;
    }
    uint32_t cp = n == 1 ? c & 0x1Fu : n == 2 ? c & 0x0Fu : c & 0x07u;
    if (n == 4 || len - *i <= n)
        goto invalid;
    for (size_t k = 1; k <= n; k++) {
        if ((s[*i + k] & 0xC0) != 0x80)
            goto invalid;
        cp = cp << 6 | (s[*i + k] & 0x3Fu);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        goto invalid;
    *i += n + 1;
    return cp;
invalid:
    (*i)++;
    return INVALID_OCTET | c;
}

/* Upper/lower pairs at even/odd (or odd/even) code points. */
static uint32_t pair_lower(uint32_t c, uint32_t upper_parity)
{
    return (c & 1u) == upper_parity ? c + 1 : c;
}

static uint32_t fold_latin(uint32_t c)
{
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
        return c + 0x20;
    if (c == 0xB5)
        return 0x3BC;                       /* micro sign: Greek mu */
    if (c == 0x130)
        return 'i';
    if (c == 0x178)
        return 0xFF;
    if (c == 0x17F)
        return 's';                         /* long s */
    if ((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return pair_lower(c, 0);
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return pair_lower(c, 1);
    return c;
}

static uint32_t fold_greek(uint32_t c)
{
    static const struct {
        uint16_t from, to;
    } single[] = {
        { 0x37F, 0x3F3 }, { 0x386, 0x3AC }, { 0x38C, 0x3CC }, { 0x38E, 0x3CD }, { 0x38F, 0x3CE },
        { 0x3C2, 0x3C3 }, { 0x3CF, 0x3D7 }, { 0x3D0, 0x3B2 }, { 0x3D1, 0x3B8 }, { 0x3D5, 0x3C6 },
        { 0x3D6, 0x3C0 }, { 0x3F0, 0x3BA }, { 0x3F1, 0x3C1 }, { 0x3F4, 0x3B8 }, { 0x3F5, 0x3B5 },
        { 0x3F7, 0x3F8 }, { 0x3F9, 0x3F2 }, { 0x3FA, 0x3FB }, { 0x3FD, 0x37B }, { 0x3FE, 0x37C },
        { 0x3FF, 0x37D },
    };
    if (c >= 0x388 && c <= 0x38A)
        return c + 37;
    if ((c >= 0x391 && c <= 0x3A1) || (c >= 0x3A3 && c <= 0x3AB))
        return c + 32;
    if (c >= 0x3D8 && c <= 0x3EF)
        return pair_lower(c, 0);
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++)
        if (single[i].from == c)
            return single[i].to;
    return c;
}

static uint32_t fold_cyrillic(uint32_t c)
{
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    if (c >= 0x410 && c <= 0x42F)
        return c + 32;
    if (c == 0x4C0)
        return 0x4CF;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x4D0 && c <= 0x52F))
        return pair_lower(c, 0);
    if (c >= 0x4C1 && c <= 0x4CE)
        return pair_lower(c, 1);
    return c;
}

/* Simple case folding of ASCII, Latin-1, Latin Extended-A, Greek and
 * Cyrillic; a table-free function, so no locale and no shared state. */
static uint32_t fold(uint32_t c)
{
    if (c < 0x80)
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c < 0x180)
        return fold_latin(c);
    if (c >= 0x370 && c < 0x400)
        return fold_greek(c);
    if (c >= 0x400 && c < 0x530)
        return fold_cyrillic(c);
    return c;
}

/* Needles up to this many code points use the stack; longer ones malloc. */
#define NEEDLE_STACK 256

/* Knuth-Morris-Pratt over the folded code points of the haystack: one
 * pass, never backing up, so a search costs O(hay + needle). */
static bool kmp_search(const unsigned char *hay, size_t hay_len, const uint32_t *pat,
                       const size_t *fail, size_t m)
{
    size_t i = 0, q = 0;
    while (i < hay_len) {
        uint32_t c = fold(utf8_next(hay, hay_len, &i));
        while (q > 0 && pat[q] != c)
            q = fail[q - 1];
        if (pat[q] == c && ++q == m)
            return true;
    }
    return false;
}

bool imap_search_text_contains(const char *hay, size_t hay_len, const char *needle,
                               size_t needle_len)
{
    uint32_t pat_stack[NEEDLE_STACK];
    size_t fail_stack[NEEDLE_STACK];
    uint32_t *pat = pat_stack;
    size_t *fail = fail_stack, m = 0;
    if (needle_len == 0)
        return true;
    if (needle_len > NEEDLE_STACK) {
        pat = malloc(needle_len * sizeof *pat);
        fail = malloc(needle_len * sizeof *fail);
        if (!pat || !fail) {
            free(pat);
            free(fail);
            return false;
        }
    }
    for (size_t i = 0; i < needle_len;)
        pat[m++] = fold(utf8_next((const unsigned char *)needle, needle_len, &i));
    fail[0] = 0;
    for (size_t q = 1, k = 0; q < m; q++) {
        while (k > 0 && pat[k] != pat[q])
            k = fail[k - 1];
        if (pat[k] == pat[q])
            k++;
        fail[q] = k;
    }
    bool found = kmp_search((const unsigned char *)hay, hay_len, pat, fail, m);
    if (pat != pat_stack) {
        free(pat);
        free(fail);
    }
    return found;
}

/* ---- preparing --------------------------------------------------------- */

int imap_search_prepare(struct imap_search *root, const struct imap_search_ctx *ctx,
                        const char **err)
{
    for (struct imap_search *n = root; n; n = n->next) {
        if (n->op == IMAP_SEARCH_SEQSET || n->op == IMAP_SEARCH_UID) {
            uint32_t star = n->op == IMAP_SEARCH_SEQSET ? ctx->count : ctx->max_uid;
            if (imap_seqset_resolve(&n->set, star, &n->set, ctx->arena, err) < 0)
                return -1;
        }
        if (n->child && imap_search_prepare(n->child, ctx, err) < 0)
            return -1;
    }
    return 0;
}

static bool op_needs_message(enum imap_search_op op)
{
    return op == IMAP_SEARCH_HEADER || op == IMAP_SEARCH_BODY || op == IMAP_SEARCH_TEXT ||
           op == IMAP_SEARCH_SENTBEFORE || op == IMAP_SEARCH_SENTON ||
           op == IMAP_SEARCH_SENTSINCE;
}

bool imap_search_needs_message(const struct imap_search *root)
{
    for (const struct imap_search *n = root; n; n = n->next)
        if (op_needs_message(n->op) || (n->child && imap_search_needs_message(n->child)))
            return true;
    return false;
}

/* ---- dates ------------------------------------------------------------- */

/* Skips white space and (nested) comments. */
static size_t skip_cfws(const char *s, size_t len, size_t i)
{
    int depth = 0;
    for (; i < len; i++) {
        char c = s[i];
        if (depth > 0 && c == '\\')
            i++;
        else if (c == '(')
            depth++;
        else if (c == ')' && depth > 0)
            depth--;
        else if (depth == 0 && c != ' ' && c != '\t' && c != '\r' && c != '\n')
            break;
    }
    return i;
}

/* A run of digits (at most max of them) at s[*i]. */
static bool read_number(const char *s, size_t len, size_t *i, size_t max, int *out, size_t *ndigits)
{
    size_t start = *i;
    int v = 0;
    while (*i < len && ascii_is_digit(s[*i]) && *i - start < max)
        v = v * 10 + (s[(*i)++] - '0');
    *ndigits = *i - start;
    *out = v;
    return *ndigits > 0 && (*i >= len || !ascii_is_digit(s[*i]));
}

static int month_number(const char *s, size_t len, size_t *i)
{
    static const char names[12][4] = {
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    };
    size_t start = *i;
    while (*i < len && ascii_is_alpha(s[*i]))
        (*i)++;
    if (*i - start < 3)
        return 0;
    for (int m = 0; m < 12; m++)
        if (strncasecmp(s + start, names[m], 3) == 0)
            return m + 1;
    return 0;
}

static int days_in_month(int year, int month)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* The calendar day an RFC 5322 date-time names, as written: "[Mon,] 1 Feb
 * 2021 ..." with 2-, 3- or 4-digit years (RFC 5322 4.3); the time and the
 * zone (numeric or obsolete) do not change the day, so they are not read. */
static bool parse_sent_date(const char *s, size_t len, struct imap_date *d)
{
    size_t i = skip_cfws(s, len, 0), digits;
    if (i < len && ascii_is_alpha(s[i])) {        /* day-of-week */
        while (i < len && ascii_is_alpha(s[i]))
            i++;
        i = skip_cfws(s, len, i);
        if (i < len && s[i] == ',')
            i = skip_cfws(s, len, i + 1);
    }
    int day, year;
    if (!read_number(s, len, &i, 2, &day, &digits))
        return false;
    i = skip_cfws(s, len, i);
    if (i < len && s[i] == '-')             /* "1-Feb-2021", seen in the wild */
        i++;
    int month = month_number(s, len, &i);
    i = skip_cfws(s, len, i);
    if (i < len && s[i] == '-')
        i++;
    if (month == 0 || !read_number(s, len, &i, 4, &year, &digits) || digits < 2)
        return false;
    if (digits == 2)
        year += year < 50 ? 2000 : 1900;
    else if (digits == 3)
        year += 1900;
    if (day < 1 || day > days_in_month(year, month))
        return false;
    d->year = year;
    d->month = month;
    d->day = day;
    return true;
}

static int64_t day_of(time_t t)
{
    int64_t s = (int64_t)t;
    return s >= 0 ? s / 86400 : -((-s + 86399) / 86400);
}

static bool date_matches(enum imap_search_op op, int64_t day, const struct imap_date *key)
{
    int64_t k = imap_date_days(key);
    if (op == IMAP_SEARCH_BEFORE || op == IMAP_SEARCH_SENTBEFORE)
        return day < k;
    if (op == IMAP_SEARCH_ON || op == IMAP_SEARCH_SENTON)
        return day == k;
    return day >= k;
}

/* ---- one message ------------------------------------------------------- */

struct span {
    size_t off, len;
};

/* What a message's string keys need, computed when first asked for. */
struct eval {
    const struct imap_search_msg *m;
    const struct mime_part *root;
    struct mime_part *own;      /* parsed here: the caller passed no tree */
    struct buf value;           /* one decoded header value */
    bool texts_done;
    struct buf texts;           /* decoded header block, then bodies */
    struct span *spans;         /* spans[0]: the header; then one per body */
    size_t nspans, cap;
};

static const struct mime_part *root_of(struct eval *e)
{
    if (!e->root && e->m->msg)
        e->root = e->own = mime_parse(e->m->msg, e->m->len);
    return e->root;
}

/* The next header field of hdr at *pos: name and raw value (continuation
 * lines included). Lines before the first field, or without a colon, are
 * skipped. False at the blank line or the end. */
static bool next_field(const char *hdr, size_t len, size_t *pos, const char **name,
                       size_t *nlen, const char **val, size_t *vlen)
{
    while (*pos < len) {
        const char *line = hdr + *pos;
        const char *lf = memchr(line, '\n', len - *pos);
        size_t end = lf ? (size_t)(lf - hdr) : len;
        if (end == *pos || (end == *pos + 1 && hdr[*pos] == '\r'))
            return false;
        size_t next = lf ? end + 1 : len;
        while (next < len && (hdr[next] == ' ' || hdr[next] == '\t')) {
            lf = memchr(hdr + next, '\n', len - next);
            end = lf ? (size_t)(lf - hdr) : len;
            next = lf ? end + 1 : len;
        }
        const char *colon = line[0] == ' ' || line[0] == '\t' ? NULL
                          : memchr(line, ':', (size_t)(hdr + end - line));
        *pos = next;
        if (!colon)
            continue;
        *name = line;
        *nlen = (size_t)(colon - line);
        while (*nlen && (line[*nlen - 1] == ' ' || line[*nlen - 1] == '\t'))
            (*nlen)--;
        *val = colon + 1;
        *vlen = (size_t)(hdr + end - *val);
        return true;
    }
    return false;
}

/* The top-level header is read in place (next_field stops at its blank
 * line): header keys need no parse. */
static bool header_key(struct eval *e, const struct imap_search *k, int *rc)
{
    const char *name, *val;
    size_t pos = 0, nlen, vlen;
    if (!e->m->msg) {
        *rc = -1;
        return false;
    }
    while (next_field(e->m->msg, e->m->len, &pos, &name, &nlen, &val, &vlen)) {
        if (nlen != k->field_len || strncasecmp(name, k->field, nlen) != 0)
            continue;
        if (k->len == 0)
            return true;
        buf_reset(&e->value);
        if (mime_decode_header(val, vlen, &e->value) < 0) {
            *rc = -1;
            return false;
        }
        if (imap_search_text_contains(e->value.data, e->value.len, k->str, k->len))
            return true;
    }
    return false;
}

static int add_span(struct eval *e, size_t off)
{
    if (e->nspans == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        struct span *s = realloc(e->spans, cap * sizeof *s);
        if (!s)
            return -1;
        e->spans = s;
        e->cap = cap;
    }
    e->spans[e->nspans].off = off;
    e->spans[e->nspans++].len = e->texts.len - off;
    return 0;
}

/* "Name: decoded value" lines of a header block. */
static int decode_header_block(const char *hdr, size_t len, struct buf *out)
{
    const char *name, *val;
    size_t pos = 0, nlen, vlen;
    int rc = 0;
    while (rc == 0 && next_field(hdr, len, &pos, &name, &nlen, &val, &vlen))
        rc = buf_append(out, name, nlen) | buf_append(out, ": ", 2) |
             mime_decode_header(val, vlen, out) | buf_append(out, "\n", 1);
    return rc ? -1 : 0;
}

static bool is_utf8_name(const char *cs)
{
    return strcasecmp(cs, "utf-8") == 0 || strcasecmp(cs, "utf8") == 0 ||
           strcasecmp(cs, "us-ascii") == 0;
}

/* A leaf's body: transfer encoding undone; text in UTF-8 when its charset
 * is known (else its octets as they are). */
static int decode_leaf(const char *msg, const struct mime_part *p, struct buf *out)
{
    size_t start = out->len;
    if (mime_decode_body(msg, p, out) < 0)
        return -1;
    if (out->len == start)
        return 0;
    const struct mime_param *cs = mime_part_is(p, "text", NULL)
                                      ? mime_param_find(p->type_params, "charset") : NULL;
    if (!cs || is_utf8_name(cs->value))
        return 0;
    struct buf conv = BUF_INIT;
    int rc = mime_charset_to_utf8(cs->value, out->data + start, out->len - start, &conv);
    if (rc == 0) {
        out->len = start;
        rc = buf_append(out, conv.data, conv.len);
    }
    buf_free(&conv);
    return rc < 0 ? -1 : 0;
}

static const struct mime_part *next_part(const struct mime_part *p, const struct mime_part *root)
{
    if (p->children)
        return p->children;
    for (; p != root; p = p->parent)
        if (p->next)
            return p->next;
    return NULL;
}

/* Decodes the header and every body once per message: spans[0] is the
 * header block, then each leaf body and the header of each encapsulated
 * message (it is text of the enclosing body). */
static int collect_texts(struct eval *e)
{
    const struct mime_part *root = root_of(e);
    if (!root)
        return -1;
    const char *msg = e->m->msg;
    e->texts_done = true;
    if (decode_header_block(msg + root->hdr_off, root->hdr_size, &e->texts) < 0 ||
        add_span(e, 0) < 0)
        return -1;
    for (const struct mime_part *p = root; p; p = next_part(p, root)) {
        size_t off = e->texts.len;
        int rc = 0;
        if (p->kind == MIME_LEAF)
            rc = decode_leaf(msg, p, &e->texts);
        else if (p->kind == MIME_MESSAGE && p->children)
            rc = decode_header_block(msg + p->children->hdr_off, p->children->hdr_size, &e->texts);
        else
            continue;
        if (rc < 0 || add_span(e, off) < 0)
            return -1;
    }
    return 0;
}

static bool text_key(struct eval *e, const struct imap_search *k, int *rc)
{
    if (k->len == 0)
        return e->m->msg ? true : (*rc = -1, false);
    if (!e->texts_done && collect_texts(e) < 0) {
        *rc = -1;
        return false;
    }
    for (size_t i = k->op == IMAP_SEARCH_BODY ? 1 : 0; i < e->nspans; i++) {
        const struct span *s = &e->spans[i];
        if (s->len && imap_search_text_contains(e->texts.data + s->off, s->len, k->str, k->len))
            return true;
    }
    return false;
}

static bool sent_date_key(struct eval *e, const struct imap_search *k, int *rc)
{
    struct imap_date d;
    if (!e->m->msg) {
        *rc = -1;
        return false;
    }
    struct mime_str date = e->root ? e->root->date : mime_header_find(e->m->msg, e->m->len, "date");
    int64_t day = date.p && parse_sent_date(date.p, date.len, &d)
                      ? imap_date_days(&d) : day_of(e->m->internaldate);
    return date_matches(k->op, day, &k->date);
}

static bool keyword_set(const char *keywords, const char *kw, size_t kwlen)
{
    for (const char *p = keywords; p && *p;) {
        while (*p == ' ')
            p++;
        const char *end = p;
        while (*end && *end != ' ')
            end++;
        if ((size_t)(end - p) == kwlen && kwlen && strncasecmp(p, kw, kwlen) == 0)
            return true;
        p = end;
    }
    return false;
}

static bool eval_all(struct eval *e, const struct imap_search *first, int *rc);

/* One key; *rc becomes -1 on failure (the result is then meaningless). */
static bool eval_key(struct eval *e, const struct imap_search *k, int *rc)
{
    const struct imap_search_msg *m = e->m;
    switch (k->op) {
    case IMAP_SEARCH_AND:
        return eval_all(e, k->child, rc);
    case IMAP_SEARCH_OR:
        return eval_key(e, k->child, rc) || (*rc == 0 && eval_key(e, k->child->next, rc));
    case IMAP_SEARCH_NOT:
        return !eval_key(e, k->child, rc);
    case IMAP_SEARCH_ALL:
        return true;
    case IMAP_SEARCH_SEQSET:
        return imap_seqset_contains(&k->set, m->seq);
    case IMAP_SEARCH_UID:
        return imap_seqset_contains(&k->set, m->uid);
    case IMAP_SEARCH_FLAG:
        return (k->flag == IMAP_SEARCH_RECENT_FLAG ? m->recent : (m->system & k->flag) != 0) !=
               k->negate;
    case IMAP_SEARCH_KEYWORD:
        return keyword_set(m->keywords, k->str, k->len) != k->negate;
    case IMAP_SEARCH_NEW:
        return m->recent && !(m->system & IMAP_FLAG_SEEN);
    case IMAP_SEARCH_OLD:
        return !m->recent;
    case IMAP_SEARCH_HEADER:
        return header_key(e, k, rc);
    case IMAP_SEARCH_BODY:
    case IMAP_SEARCH_TEXT:
        return text_key(e, k, rc);
    case IMAP_SEARCH_BEFORE:
    case IMAP_SEARCH_ON:
    case IMAP_SEARCH_SINCE:
        return date_matches(k->op, day_of(m->internaldate), &k->date);
    case IMAP_SEARCH_SENTBEFORE:
    case IMAP_SEARCH_SENTON:
    case IMAP_SEARCH_SENTSINCE:
        return sent_date_key(e, k, rc);
    case IMAP_SEARCH_LARGER:
        return m->size > k->number;
    case IMAP_SEARCH_SMALLER:
        return m->size < k->number;
    }
    return false;
}

static bool eval_all(struct eval *e, const struct imap_search *first, int *rc)
{
    for (const struct imap_search *k = first; k; k = k->next)
        if (!eval_key(e, k, rc) || *rc < 0)
            return false;
    return true;
}

int imap_search_match(const struct imap_search *root, const struct imap_search_msg *m)
{
    struct eval e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.root = m->msg ? m->mime : NULL;
    int rc = 0;
    bool match = eval_all(&e, root, &rc);
    mime_free(e.own);
    buf_free(&e.value);
    buf_free(&e.texts);
    free(e.spans);
    return rc < 0 ? -1 : match;
}
