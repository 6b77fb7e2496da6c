#include "imap_bodystructure.h"

#include <string.h>
#include <strings.h>

/* Every writer returns 0 or -1 (out of memory) and stops at the first
 * failure; `rc |= ...` chains keep the control flow flat. */

static int put(struct buf *out, const char *s)
{
    return buf_append(out, s, strlen(s));
}

int imap_write_nstring(struct buf *out, const char *s, size_t len)
{
    if (!s)
        return put(out, "NIL");
    bool literal = len > IMAP_QUOTED_MAX;
    for (size_t i = 0; i < len && !literal; i++) {
        unsigned char c = (unsigned char)s[i];
        literal = c == '\0' || c == '\r' || c == '\n' || c >= 0x80;
    }
    if (literal) {
        if (buf_printf(out, "{%zu}\r\n", len) < 0)
            return -1;
        return buf_append(out, s, len);
    }
    if (buf_reserve(out, len * 2 + 2) < 0)
        return -1;
    out->data[out->len++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\')
            out->data[out->len++] = '\\';
        out->data[out->len++] = s[i];
    }
    out->data[out->len++] = '"';
    return 0;
}

static int put_str(struct buf *out, const char *s)
{
    return imap_write_nstring(out, s, s ? strlen(s) : 0);
}

/* A header value, unfolded and trimmed, or NIL when the field is absent. */
static int put_field(struct buf *out, struct mime_str v)
{
    if (!v.p)
        return put(out, "NIL");
    struct buf tmp = BUF_INIT;
    int rc = mime_unfold(v.p, v.len, &tmp);
    if (rc == 0)
        rc = imap_write_nstring(out, tmp.data ? tmp.data : "", tmp.len);
    buf_free(&tmp);
    return rc;
}

/* ---- addresses (RFC 5322 3.4, leniently) ------------------------------ */

enum tok_kind { T_END, T_ATOM, T_QUOTED, T_COMMENT, T_LITERAL, T_SPECIAL };

struct tok {
    enum tok_kind kind;
    const char *p;            /* content (without quotes/parentheses) */
    size_t len;
    char c;                   /* the special character */
};

static bool addr_special(char c)
{
    return strchr("()<>@,;:\\\"[]", c) != NULL;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Reads the token at *i. Unterminated quotes, comments and literals run to
 * the end of the input. */
static struct tok next_tok(const char *s, size_t len, size_t *i)
{
    struct tok t = { T_END, NULL, 0, 0 };
    size_t k = *i;
    while (k < len && is_ws(s[k]))
        k++;
    if (k >= len) {
        *i = k;
        return t;
    }
    char c = s[k];
    if (c == '"' || c == '(' || c == '[') {
        char close = c == '"' ? '"' : c == '(' ? ')' : ']';
        int depth = 1;
        size_t start = ++k;
        while (k < len) {
            if (s[k] == '\\' && k + 1 < len) {
                k += 2;
                continue;
            }
            if (c == '(' && s[k] == '(')
                depth++;
            else if (s[k] == close && --depth == 0)
                break;
            k++;
        }
        t.kind = c == '"' ? T_QUOTED : c == '(' ? T_COMMENT : T_LITERAL;
        t.p = s + start;
        t.len = (k < len ? k : len) - start;
        *i = k < len ? k + 1 : len;
        return t;
    }
    if (addr_special(c)) {
        t.kind = T_SPECIAL;
        t.c = c;
        t.p = s + k;
        t.len = 1;
        *i = k + 1;
        return t;
    }
    size_t start = k;
    while (k < len && !is_ws(s[k]) && !addr_special(s[k]))
        k++;
    t.kind = T_ATOM;
    t.p = s + start;
    t.len = k - start;
    *i = k;
    return t;
}

/* Appends quoted-string or comment content with backslash escapes undone. */
static int append_unescaped(struct buf *b, const char *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n)
            i++;
        b->data[b->len++] = p[i];
    }
    return 0;
}

/* The end of the mailbox or group starting at i: the index of a top-level
 * ',' or ';', of ':' that opens a group, or len. *delim gets that char or 0. */
static size_t segment_end(const char *s, size_t len, size_t i, char *delim)
{
    bool in_angle = false, seen_at = false, seen_angle = false;
    for (;;) {
        size_t at = i;
        struct tok t = next_tok(s, len, &i);
        if (t.kind == T_END) {
            *delim = 0;
            return len;
        }
        if (t.kind != T_SPECIAL)
            continue;
        if (t.c == '<') {
            in_angle = seen_angle = true;
        } else if (t.c == '>') {
            in_angle = false;
        } else if (t.c == '@' && !in_angle) {
            seen_at = true;
        } else if (!in_angle && (t.c == ',' || t.c == ';' ||
                                 (t.c == ':' && !seen_at && !seen_angle))) {
            while (s[at] != t.c)
                at++;
            *delim = t.c;
            return at;
        }
    }
}

struct address {
    struct buf name, route, spec, comment;
    bool angle, any;
};

static void address_free(struct address *a)
{
    buf_free(&a->name);
    buf_free(&a->route);
    buf_free(&a->spec);
    buf_free(&a->comment);
}

/* Phrase words are joined with single spaces. */
static int add_word(struct buf *b, const struct tok *t)
{
    if (b->len && buf_append(b, " ", 1) < 0)
        return -1;
    return append_unescaped(b, t->p, t->len);
}

/* Adds a token of an addr-spec (or route) without white space. */
static int add_spec(struct buf *b, const struct tok *t)
{
    if (t->kind == T_LITERAL) {
        int rc = buf_append(b, "[", 1);
        rc |= append_unescaped(b, t->p, t->len);
        return rc | buf_append(b, "]", 1);
    }
    return t->kind == T_SPECIAL ? buf_append(b, &t->c, 1) : append_unescaped(b, t->p, t->len);
}

static int parse_mailbox(const char *s, size_t len, struct address *a)
{
    size_t i = 0;
    int rc = 0;
    bool in_route = false;
    enum { BEFORE, INSIDE, AFTER } state = BEFORE;
    for (;;) {
        struct tok t = next_tok(s, len, &i);
        if (t.kind == T_END || rc)
            break;
        if (t.kind == T_COMMENT) {
            if (!a->comment.len)
                rc = append_unescaped(&a->comment, t.p, t.len);
            continue;
        }
        a->any = true;
        if (state == BEFORE) {
            if (t.kind == T_SPECIAL && t.c == '<') {
                state = INSIDE;
                a->angle = true;
                buf_reset(&a->spec);
                continue;
            }
            if (t.kind == T_ATOM || t.kind == T_QUOTED)
                rc = add_word(&a->name, &t);
            rc |= add_spec(&a->spec, &t);
        } else if (state == INSIDE) {
            if (t.kind == T_SPECIAL && t.c == '>') {
                state = AFTER;
            } else if (t.kind == T_SPECIAL && t.c == '@' && a->spec.len == 0 && !in_route) {
                in_route = true;
                rc = add_spec(&a->route, &t);
            } else if (in_route) {
                if (t.kind == T_SPECIAL && t.c == ':')
                    in_route = false;
                else
                    rc = add_spec(&a->route, &t);
            } else {
                rc = add_spec(&a->spec, &t);
            }
        }
    }
    return rc ? -1 : 0;
}

static int put_nbuf(struct buf *out, const struct buf *b)
{
    return b->len ? imap_write_nstring(out, b->data, b->len) : put(out, "NIL");
}

/* Writes one (name adl mailbox host). */
static int write_address(struct buf *out, struct address *a)
{
    const char *spec = a->spec.data ? a->spec.data : "";
    const char *at = NULL;
    for (size_t k = a->spec.len; k-- > 0;)
        if (spec[k] == '@') {
            at = spec + k;
            break;
        }
    size_t local_len = at ? (size_t)(at - spec) : a->spec.len;
    size_t host_len = at ? a->spec.len - local_len - 1 : 0;
    const struct buf *name = a->angle ? &a->name : &a->comment;
    int rc = put(out, "(");
    rc |= put_nbuf(out, name);
    rc |= put(out, " ");
    rc |= put_nbuf(out, &a->route);
    rc |= put(out, " ");
    rc |= local_len ? imap_write_nstring(out, spec, local_len) : put_str(out, "MISSING_MAILBOX");
    rc |= put(out, " ");
    rc |= host_len ? imap_write_nstring(out, at + 1, host_len) : put_str(out, "MISSING_DOMAIN");
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

static int write_group_start(struct buf *out, const char *s, size_t len)
{
    struct address a = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, false, false };
    int rc = parse_mailbox(s, len, &a);
    rc |= put(out, "(NIL NIL ");
    rc |= a.name.len ? imap_write_nstring(out, a.name.data, a.name.len) : put_str(out, "");
    rc |= put(out, " NIL)");
    address_free(&a);
    return rc ? -1 : 0;
}

/* Writes the addresses of s[0..len) into out (no parentheses around the
 * list); *count gets how many address structures were written. */
static int write_address_list(struct buf *out, const char *s, size_t len, size_t *count)
{
    bool in_group = false;
    size_t i = 0;
    int rc = 0;
    *count = 0;
    while (i < len && rc == 0) {
        char delim;
        size_t end = segment_end(s, len, i, &delim);
        if (delim == ':') {
            if (in_group) {
                rc |= put(out, "(NIL NIL NIL NIL)");
                (*count)++;
            }
            rc |= write_group_start(out, s + i, end - i);
            (*count)++;
            in_group = true;
        } else {
            struct address a = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT, false, false };
            rc |= parse_mailbox(s + i, end - i, &a);
            if (rc == 0 && a.any) {
                rc |= write_address(out, &a);
                (*count)++;
            }
            address_free(&a);
            if (delim == ';' && in_group) {
                rc |= put(out, "(NIL NIL NIL NIL)");
                (*count)++;
                in_group = false;
            }
        }
        i = end < len ? end + 1 : len;
    }
    if (in_group && rc == 0) {
        rc = put(out, "(NIL NIL NIL NIL)");
        (*count)++;
    }
    return rc ? -1 : 0;
}

static int put_addresses(struct buf *out, struct mime_str v)
{
    if (!v.p)
        return put(out, "NIL");
    struct buf val = BUF_INIT, list = BUF_INIT;
    size_t count = 0;
    int rc = mime_unfold(v.p, v.len, &val);
    if (rc == 0)
        rc = write_address_list(&list, val.data ? val.data : "", val.len, &count);
    if (rc == 0 && count == 0)
        rc = put(out, "NIL");
    else if (rc == 0) {
        rc = put(out, "(");
        rc |= buf_append(out, list.data, list.len);
        rc |= put(out, ")");
    }
    buf_free(&val);
    buf_free(&list);
    return rc ? -1 : 0;
}

static bool has_value(struct mime_str v)
{
    for (size_t i = 0; v.p && i < v.len; i++)
        if (!is_ws(v.p[i]))
            return true;
    return false;
}

int imap_envelope(struct buf *out, const struct mime_part *msg)
{
    struct mime_str from = msg->from;
    struct mime_str sender = has_value(msg->sender) ? msg->sender : from;
    struct mime_str reply_to = has_value(msg->reply_to) ? msg->reply_to : from;
    int rc = put(out, "(");
    rc |= put_field(out, msg->date);
    rc |= put(out, " ");
    rc |= put_field(out, msg->subject);
    const struct mime_str lists[] = { from, sender, reply_to, msg->to, msg->cc, msg->bcc };
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        rc |= put(out, " ");
        rc |= put_addresses(out, lists[k]);
    }
    rc |= put(out, " ");
    rc |= put_field(out, msg->in_reply_to);
    rc |= put(out, " ");
    rc |= put_field(out, msg->message_id);
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

/* ---- body structure --------------------------------------------------- */

static int write_params(struct buf *out, const struct mime_param *params, bool default_charset)
{
    bool charset = false;
    if (!params && !default_charset)
        return put(out, "NIL");
    int rc = put(out, "(");
    for (const struct mime_param *p = params; p; p = p->next) {
        if (p != params)
            rc |= put(out, " ");
        if (p->extended) {
            struct buf name = BUF_INIT;
            rc |= buf_printf(&name, "%s*", p->name);
            rc |= imap_write_nstring(out, name.data ? name.data : "", name.len);
            buf_free(&name);
        } else {
            rc |= put_str(out, p->name);
            charset |= strcasecmp(p->name, "charset") == 0;
        }
        rc |= put(out, " ");
        rc |= imap_write_nstring(out, p->raw, p->raw_len);
    }
    if (default_charset && !charset)
        rc |= put(out, params ? " \"CHARSET\" \"us-ascii\"" : "\"CHARSET\" \"us-ascii\"");
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

static int write_disposition(struct buf *out, const struct mime_part *part)
{
    if (!part->disposition)
        return put(out, "NIL");
    int rc = put(out, "(");
    rc |= put_str(out, part->disposition);
    rc |= put(out, " ");
    rc |= write_params(out, part->disp_params, false);
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

/* Content-Language: a list of language tags separated by commas. */
static int write_language(struct buf *out, struct mime_str v)
{
    if (!has_value(v))
        return put(out, "NIL");
    int rc = put(out, "(");
    bool first = true;
    size_t i = 0;
    while (i < v.len) {
        struct tok t = next_tok(v.p, v.len, &i);
        if (t.kind == T_END)
            break;
        if (t.kind != T_ATOM && t.kind != T_QUOTED)
            continue;
        if (!first)
            rc |= put(out, " ");
        rc |= imap_write_nstring(out, t.p, t.len);
        first = false;
    }
    if (first)
        rc |= put_str(out, "");
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

static int write_extension(struct buf *out, const struct mime_part *part, bool md5)
{
    int rc = 0;
    if (md5) {
        rc |= put(out, " ");
        rc |= put_field(out, part->content_md5);
    }
    rc |= put(out, " ");
    rc |= write_disposition(out, part);
    rc |= put(out, " ");
    rc |= write_language(out, part->content_language);
    rc |= put(out, " ");
    rc |= put_field(out, part->content_location);
    return rc ? -1 : 0;
}

static int write_part(struct buf *out, const struct mime_part *part, bool ext);

#define EMPTY_BODY "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0"

static int write_empty(struct buf *out, bool ext)
{
    return put(out, ext ? EMPTY_BODY " NIL NIL NIL NIL)" : EMPTY_BODY ")");
}

static int write_multipart(struct buf *out, const struct mime_part *part, bool ext)
{
    int rc = put(out, "(");
    if (!part->children)
        rc |= write_empty(out, ext);
    for (const struct mime_part *c = part->children; c && rc == 0; c = c->next)
        rc |= write_part(out, c, ext);
    rc |= put(out, " ");
    rc |= put_str(out, part->subtype);
    if (ext) {
        rc |= put(out, " ");
        rc |= write_params(out, part->type_params, false);
        rc |= write_extension(out, part, false);
    }
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

static int write_encoding(struct buf *out, struct mime_str v)
{
    if (!has_value(v))
        return put(out, "\"7BIT\"");
    return put_field(out, v);
}

static int write_basic(struct buf *out, const struct mime_part *part, bool ext)
{
    const char *type, *subtype;
    bool is_default;
    mime_part_type(part, &type, &subtype, &is_default);
    bool message = part->kind == MIME_MESSAGE;
    if (!message && strcasecmp(type, "message") == 0 &&
        (strcasecmp(subtype, "rfc822") == 0 || strcasecmp(subtype, "global") == 0)) {
        type = "APPLICATION";           /* not parsed: no envelope to give */
        subtype = "OCTET-STREAM";
    }
    bool text = strcasecmp(type, "text") == 0;
    const struct mime_param *params = part->opaque || part->no_boundary ? NULL : part->type_params;
    int rc = put(out, "(");
    rc |= put_str(out, type);
    rc |= put(out, " ");
    rc |= put_str(out, subtype);
    rc |= put(out, " ");
    rc |= write_params(out, params, text);
    rc |= put(out, " ");
    rc |= put_field(out, part->content_id);
    rc |= put(out, " ");
    rc |= put_field(out, part->content_description);
    rc |= put(out, " ");
    rc |= write_encoding(out, part->content_transfer_encoding);
    rc |= buf_printf(out, " %zu", part->body_size);
    if (message && part->children) {
        rc |= put(out, " ");
        rc |= imap_envelope(out, part->children);
        rc |= put(out, " ");
        rc |= write_part(out, part->children, ext);
    }
    if (text || message)
        rc |= buf_printf(out, " %zu", part->body_lines);
    if (ext)
        rc |= write_extension(out, part, true);
    rc |= put(out, ")");
    return rc ? -1 : 0;
}

static int write_part(struct buf *out, const struct mime_part *part, bool ext)
{
    if (part->kind == MIME_MULTIPART)
        return write_multipart(out, part, ext);
    return write_basic(out, part, ext);
}

int imap_bodystructure(struct buf *out, const struct mime_part *root, bool extended)
{
    return write_part(out, root, extended);
}
