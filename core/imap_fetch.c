/* FETCH responses and IMAP flag lists. See imap_fetch.h. */
#include "imap_fetch.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imap_bodystructure.h"

#define SYSTEM_FLAGS (IMAP_FLAG_SEEN | IMAP_FLAG_ANSWERED | IMAP_FLAG_FLAGGED | \
                      IMAP_FLAG_DELETED | IMAP_FLAG_DRAFT)

static int put(struct buf *out, const char *s)
{
    return buf_append(out, s, strlen(s));
}

/* ---- flags ---------------------------------------------------------- */

static const struct {
    char letter;
    unsigned bit;
} maildir_letters[] = {
    { 'D', IMAP_FLAG_DRAFT }, { 'F', IMAP_FLAG_FLAGGED }, { 'R', IMAP_FLAG_ANSWERED },
    { 'S', IMAP_FLAG_SEEN },  { 'T', IMAP_FLAG_DELETED },
};

/* The IMAP_FLAG_* bit of a Maildir letter, 0 for letters IMAP does not show. */
static unsigned letter_bit(char c)
{
    for (size_t i = 0; i < sizeof maildir_letters / sizeof maildir_letters[0]; i++)
        if (maildir_letters[i].letter == c)
            return maildir_letters[i].bit;
    return 0;
}

unsigned imap_flags_from_maildir(const char *letters)
{
    unsigned bits = 0;
    for (const char *p = letters; p && *p; p++)
        bits |= letter_bit(*p);
    return bits;
}

void imap_flags_to_maildir(unsigned system, const char *old, char out[8])
{
    bool set[26] = { false }, system_letter[26] = { false };
    size_t kept = 0, nsystem = 0, n = 0;
    for (size_t i = 0; i < sizeof maildir_letters / sizeof maildir_letters[0]; i++) {
        int c = maildir_letters[i].letter - 'A';
        if (system & maildir_letters[i].bit) {
            set[c] = system_letter[c] = true;
            nsystem++;
        }
    }
    for (const char *p = old; p && *p; p++)
        if (*p >= 'A' && *p <= 'Z' && !letter_bit(*p))
            set[*p - 'A'] = true;
    /* Seven letters fit; the ones IMAP shows always do. */
    for (int c = 0; c < 26 && n < 7; c++) {
        if (!set[c] || (!system_letter[c] && kept >= 7 - nsystem))
            continue;
        kept += !system_letter[c];
        out[n++] = (char)('A' + c);
    }
    out[n] = '\0';
}

/* Next space-separated word of s at *pos; false at the end. */
static bool next_word(const char *s, size_t *pos, const char **w, size_t *wlen)
{
    if (!s)
        return false;
    while (s[*pos] == ' ')
        (*pos)++;
    if (!s[*pos])
        return false;
    *w = s + *pos;
    while (s[*pos] && s[*pos] != ' ')
        (*pos)++;
    *wlen = (size_t)(s + *pos - *w);
    return true;
}

/* A keyword must be an atom to be written unquoted in a flag list. */
static bool keyword_ok(const char *w, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)w[i];
        if (c <= 0x1f || c >= 0x7f || strchr("(){ %*\"\\]", c))
            return false;
    }
    return len > 0;
}

int imap_write_flags(struct buf *out, unsigned system, const char *keywords, bool recent)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {
        { IMAP_FLAG_ANSWERED, "\\Answered" }, { IMAP_FLAG_FLAGGED, "\\Flagged" },
        { IMAP_FLAG_DELETED, "\\Deleted" },   { IMAP_FLAG_SEEN, "\\Seen" },
        { IMAP_FLAG_DRAFT, "\\Draft" },
    };
    bool first = true;
    int rc = put(out, "(");
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (system & names[i].bit) {
            rc |= put(out, first ? "" : " ") | put(out, names[i].name);
            first = false;
        }
    }
    const char *w;
    size_t wlen, pos = 0;
    while (next_word(keywords, &pos, &w, &wlen)) {
        if (!keyword_ok(w, wlen))
            continue;
        rc |= put(out, first ? "" : " ") | buf_append(out, w, wlen);
        first = false;
    }
    if (recent)
        rc |= put(out, first ? "\\Recent" : " \\Recent");
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

/* Whether the space-separated list s holds w, ignoring ASCII case. */
static bool has_keyword(const char *s, size_t slen, const char *w, size_t wlen)
{
    size_t pos = 0;
    while (pos < slen) {
        size_t end = pos;
        while (end < slen && s[end] != ' ')
            end++;
        if (end - pos == wlen && strncasecmp(s + pos, w, wlen) == 0)
            return true;
        pos = end + 1;
    }
    return false;
}

/* Appends w to the list unless it is there already (first spelling wins). */
static int add_keyword(struct buf *list, size_t *count, const char *w, size_t wlen)
{
    if (wlen == 0 || has_keyword(list->data, list->len, w, wlen))
        return 0;
    if (*count >= IMAP_KEYWORDS_MAX)
        return -1;
    (*count)++;
    if (list->len && buf_append(list, " ", 1) < 0)
        return -1;
    return buf_append(list, w, wlen);
}

static bool change_has(const struct imap_flags *change, const char *w, size_t wlen)
{
    for (size_t i = 0; i < change->nkeywords; i++)
        if (strlen(change->keywords[i]) == wlen && strncasecmp(change->keywords[i], w, wlen) == 0)
            return true;
    return false;
}

int imap_flags_apply(enum imap_store_op op, const struct imap_flags *change,
                     unsigned *system, const char *keywords, struct buf *kw_out)
{
    struct buf list = BUF_INIT;
    size_t count = 0, pos = 0, wlen;
    const char *w;
    int rc = 0;
    unsigned sys = op == IMAP_STORE_SET ? change->system
                 : op == IMAP_STORE_ADD ? *system | change->system
                                        : *system & ~change->system;
    if (op != IMAP_STORE_SET)
        while (rc == 0 && next_word(keywords, &pos, &w, &wlen))
            if (op == IMAP_STORE_ADD || !change_has(change, w, wlen))
                rc = add_keyword(&list, &count, w, wlen);
    if (op != IMAP_STORE_REMOVE)
        for (size_t i = 0; rc == 0 && i < change->nkeywords; i++)
            rc = add_keyword(&list, &count, change->keywords[i], strlen(change->keywords[i]));
    /* Built apart first: keywords may point into kw_out. */
    if (rc == 0) {
        buf_reset(kw_out);
        if (buf_append(kw_out, list.data ? list.data : "", list.len) < 0 || !buf_cstr(kw_out))
            rc = -1;
    }
    if (rc == 0)
        *system = sys & SYSTEM_FLAGS;
    buf_free(&list);
    return rc;
}

int imap_write_internaldate(struct buf *out, time_t t)
{
    static const char months[12][4] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    };
    struct tm tm;
    /* date-year is four digits: anything the grammar cannot carry is the epoch. */
    if (!gmtime_r(&t, &tm) || tm.tm_year < 1 - 1900 || tm.tm_year > 9999 - 1900) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    return buf_printf(out, "\"%2d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
                      months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- FETCH: what is needed ------------------------------------------ */

#define STRUCTURE_ITEMS (IMAP_FETCH_ENVELOPE | IMAP_FETCH_BODY | IMAP_FETCH_BODYSTRUCTURE)
#define TEXT_ITEMS      (IMAP_FETCH_RFC822 | IMAP_FETCH_RFC822_HEADER | IMAP_FETCH_RFC822_TEXT)

struct imap_fetch_needs imap_fetch_needs(const struct imap_fetch *f, bool have_cache)
{
    struct imap_fetch_needs n;
    n.structure = (f->items & STRUCTURE_ITEMS) != 0;
    n.message = f->nsections > 0 || (f->items & TEXT_ITEMS) || (n.structure && !have_cache);
    return n;
}

bool imap_fetch_sets_seen(const struct imap_fetch *f)
{
    if (f->items & (IMAP_FETCH_RFC822 | IMAP_FETCH_RFC822_TEXT))
        return true;
    for (size_t i = 0; i < f->nsections; i++)
        if (!f->sections[i].peek)
            return true;
    return false;
}

/* ---- sections -------------------------------------------------------- */

/* The line at pos: *next is the start of the following line, the return
 * value the end of its content (before CR LF). */
static size_t line_at(const char *s, size_t len, size_t pos, size_t *next)
{
    const char *lf = memchr(s + pos, '\n', len - pos);
    size_t eol = lf ? (size_t)(lf - s) : len;
    *next = lf ? eol + 1 : len;
    return eol > pos && s[eol - 1] == '\r' ? eol - 1 : eol;
}

/* Octets of the header block at the start of msg, with its blank line:
 * the span mime_parse() gives the root, found without parsing the rest. */
static size_t header_size(const char *msg, size_t len)
{
    size_t pos = 0, next;
    while (pos < len) {
        bool blank = line_at(msg, len, pos, &next) == pos;
        pos = next;
        if (blank)
            break;
    }
    return pos;
}

/* 1 when the field line s[0..n) is named in the section's list, 0 when
 * not, -1 when it is no field at all (no colon). */
static int field_listed(const char *s, size_t n, const struct imap_section *sec)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return -1;
    size_t nlen = (size_t)(colon - s);
    while (nlen && (s[nlen - 1] == ' ' || s[nlen - 1] == '\t'))
        nlen--;
    for (size_t i = 0; i < sec->nfields; i++)
        if (strlen(sec->fields[i]) == nlen && strncasecmp(sec->fields[i], s, nlen) == 0)
            return 1;
    return 0;
}

/* HEADER.FIELDS(.NOT): the chosen fields of hdr, in message order with
 * their continuation lines, then the blank line (always, RFC 3501). */
static int filter_fields(const char *hdr, size_t len, const struct imap_section *sec,
                         struct buf *out)
{
    bool not = sec->text == IMAP_SECTION_HEADER_FIELDS_NOT, keep = false;
    size_t pos = 0, next;
    int rc = 0;
    while (pos < len && rc == 0) {
        size_t end = line_at(hdr, len, pos, &next);
        if (end == pos)
            break;
        if (hdr[pos] != ' ' && hdr[pos] != '\t') {
            int listed = field_listed(hdr + pos, end - pos, sec);
            keep = listed >= 0 && (listed == 1) != not;
        }
        if (keep && hdr[next - 1] == '\n')
            rc = buf_append(out, hdr + pos, next - pos);
        else if (keep)          /* the last line of a message without a line break */
            rc = buf_append(out, hdr + pos, end - pos) | put(out, "\r\n");
        pos = next;
    }
    return rc ? -1 : put(out, "\r\n");
}

/* Where the section lies in msg ([*off, *off + *n)); *n = 0 for a part
 * that does not exist. */
static void section_span(size_t len, const struct mime_part *root, const struct imap_section *sec,
                         const char *msg, size_t *off, size_t *n)
{
    *off = *n = 0;
    if (sec->nparts == 0) {
        size_t hs = root ? root->hdr_size : header_size(msg, len);
        if (sec->text == IMAP_SECTION_ALL)
            *n = len;
        else if (sec->text == IMAP_SECTION_TEXT)
            *off = hs, *n = len - hs;
        else if (sec->text != IMAP_SECTION_MIME)
            *n = hs;
        return;
    }
    unsigned path[IMAP_PART_DEPTH_MAX];
    size_t depth = sec->nparts < IMAP_PART_DEPTH_MAX ? sec->nparts : IMAP_PART_DEPTH_MAX;
    for (size_t i = 0; i < depth; i++)
        path[i] = sec->part[i];
    const struct mime_part *p = mime_find_section(root, path, depth);
    if (p && (sec->text == IMAP_SECTION_HEADER || sec->text == IMAP_SECTION_TEXT ||
              sec->text == IMAP_SECTION_HEADER_FIELDS ||
              sec->text == IMAP_SECTION_HEADER_FIELDS_NOT)) {
        /* Only a message/rfc822 part has a header and text of its own. */
        p = p->kind == MIME_MESSAGE ? p->children : NULL;
        if (p && sec->text == IMAP_SECTION_TEXT)
            *off = p->body_off, *n = p->body_size;
        else if (p)
            *off = p->hdr_off, *n = p->hdr_size;
    } else if (p && sec->text == IMAP_SECTION_MIME) {
        *off = p->hdr_off, *n = p->hdr_size;
    } else if (p) {
        *off = p->body_off, *n = p->body_size;
    }
}

int imap_fetch_section_text(const char *msg, size_t len, const struct mime_part *root,
                            const struct imap_section *sec, struct buf *scratch,
                            const char **data, size_t *data_len)
{
    size_t off, n;
    *data = "";
    *data_len = 0;
    if (!msg || (sec->nparts > 0 && !root))
        return -1;
    section_span(len, root, sec, msg, &off, &n);
    if (off > len)
        off = len;
    if (n > len - off)
        n = len - off;
    if (sec->text == IMAP_SECTION_HEADER_FIELDS || sec->text == IMAP_SECTION_HEADER_FIELDS_NOT) {
        buf_reset(scratch);
        if (filter_fields(msg + off, n, sec, scratch) < 0)
            return -1;
        *data = scratch->data;
        *data_len = scratch->len;
        return 0;
    }
    if (n > 0) {
        *data = msg + off;
        *data_len = n;
    }
    return 0;
}

/* ---- FETCH: the response --------------------------------------------- */

struct render {
    struct buf *out;
    const struct imap_fetch_msg *m;
    const struct mime_part *tree;
    struct mime_part *own;      /* parsed here because the caller had no tree */
    struct buf scratch;
    bool first;
};

/* Starts an attribute: the separator, then its name. */
static int att(struct render *r, const char *name)
{
    int rc = put(r->out, r->first ? "" : " ") | put(r->out, name);
    r->first = false;
    return rc;
}

static const struct mime_part *tree_of(struct render *r)
{
    if (!r->tree && r->m->msg)
        r->tree = r->own = mime_parse(r->m->msg, r->m->len);
    return r->tree;
}

static int structure(struct render *r, unsigned item)
{
    const struct imap_fetch_msg *m = r->m;
    const char *cached = item == IMAP_FETCH_ENVELOPE ? m->envelope
                       : item == IMAP_FETCH_BODY ? m->body : m->bodystructure;
    size_t clen = item == IMAP_FETCH_ENVELOPE ? m->envelope_len
                : item == IMAP_FETCH_BODY ? m->body_len : m->bodystructure_len;
    const char *name = item == IMAP_FETCH_ENVELOPE ? "ENVELOPE "
                     : item == IMAP_FETCH_BODY ? "BODY " : "BODYSTRUCTURE ";
    if (cached)
        return att(r, name) | buf_append(r->out, cached, clen);
    const struct mime_part *tree = tree_of(r);
    if (!tree || att(r, name) < 0)
        return -1;
    if (item == IMAP_FETCH_ENVELOPE)
        return imap_envelope(r->out, tree);
    return imap_bodystructure(r->out, tree, item == IMAP_FETCH_BODYSTRUCTURE);
}

/* One section (label NULL) or one of RFC822, RFC822.HEADER, RFC822.TEXT. */
static int section(struct render *r, const struct imap_section *sec, const char *label)
{
    const char *data;
    size_t dlen;
    if (!r->m->msg || (sec->nparts > 0 && !tree_of(r)))
        return -1;
    if (imap_fetch_section_text(r->m->msg, r->m->len, r->tree, sec, &r->scratch, &data, &dlen) < 0)
        return -1;
    int rc;
    if (label) {
        rc = att(r, label);
    } else {
        rc = att(r, "BODY[") | buf_append(r->out, sec->spec, sec->spec_len) | put(r->out, "]");
        if (sec->partial)
            rc |= buf_printf(r->out, "<%u>", (unsigned)sec->offset);
    }
    if (sec->partial) {
        size_t skip = sec->offset < dlen ? sec->offset : dlen;
        data += skip;
        dlen -= skip;
        if (dlen > sec->length)
            dlen = sec->length;
    }
    rc |= buf_printf(r->out, " {%zu}\r\n", dlen);
    return rc ? -1 : buf_append(r->out, data, dlen);
}

static int whole(struct render *r, enum imap_section_text text, const char *label)
{
    struct imap_section sec;
    memset(&sec, 0, sizeof sec);
    sec.text = text;
    return section(r, &sec, label);
}

static int flags(struct render *r)
{
    return att(r, "FLAGS ") | imap_write_flags(r->out, r->m->system, r->m->keywords, r->m->recent);
}

/* Items in a fixed order (the parsed request keeps no order for them; RFC
 * 3501 lets the server choose), sections in the order requested. */
static int render_items(struct render *r, const struct imap_fetch *f, bool uid_command,
                        bool add_flags)
{
    unsigned it = f->items;
    int rc = 0;
    if (uid_command || (it & IMAP_FETCH_UID))
        rc |= att(r, "UID ") | buf_printf(r->out, "%u", (unsigned)r->m->uid);
    if (it & IMAP_FETCH_FLAGS)
        rc |= flags(r);
    if (it & IMAP_FETCH_INTERNALDATE)
        rc |= att(r, "INTERNALDATE ") | imap_write_internaldate(r->out, r->m->internaldate);
    if (it & IMAP_FETCH_RFC822_SIZE)
        rc |= att(r, "RFC822.SIZE ") |
              buf_printf(r->out, "%llu", (unsigned long long)r->m->size);
    static const unsigned structures[] = {
        IMAP_FETCH_ENVELOPE, IMAP_FETCH_BODY, IMAP_FETCH_BODYSTRUCTURE,
    };
    for (size_t i = 0; i < 3 && rc == 0; i++)
        if (it & structures[i])
            rc = structure(r, structures[i]);
    if (rc == 0 && (it & IMAP_FETCH_RFC822_HEADER))
        rc = whole(r, IMAP_SECTION_HEADER, "RFC822.HEADER");
    if (rc == 0 && (it & IMAP_FETCH_RFC822_TEXT))
        rc = whole(r, IMAP_SECTION_TEXT, "RFC822.TEXT");
    if (rc == 0 && (it & IMAP_FETCH_RFC822))
        rc = whole(r, IMAP_SECTION_ALL, "RFC822");
    for (size_t i = 0; i < f->nsections && rc == 0; i++)
        rc = section(r, &f->sections[i], NULL);
    if (rc == 0 && add_flags && !(it & IMAP_FETCH_FLAGS))
        rc = flags(r);
    return rc ? -1 : 0;
}

int imap_fetch_render(struct buf *out, const struct imap_fetch *f, const struct imap_fetch_msg *m,
                      bool uid_command, bool add_flags)
{
    struct render r = { out, m, m->mime, NULL, BUF_INIT, true };
    size_t start = out->len;
    int rc = put(out, "(");
    if (rc == 0)
        rc = render_items(&r, f, uid_command, add_flags);
    if (rc == 0)
        rc = put(out, ")");
    if (rc < 0)
        out->len = start;       /* nothing half-written */
    mime_free(r.own);
    buf_free(&r.scratch);
    return rc;
}
