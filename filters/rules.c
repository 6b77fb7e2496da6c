/* Header and body rules of the spam score. See rules.h. */
#include "rules.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "accounts.h"
#include "ascii.h"
#include "buf.h"
#include "log.h"
#include "server.h"

#define DOMAIN_MAX 255
#define LINKS_MAX 500            /* <a> elements looked at per part */
#define LINK_TEXT_MAX 300        /* visible text of a link looked at */

enum rule_id {
    R_MISSING_FROM, R_MISSING_DATE, R_INVALID_DATE, R_MISSING_MID, R_INVALID_MSGID,
    R_MISSING_SUBJECT, R_SUBJ_ALL_CAPS, R_SUBJ_OBFUSCATED, R_HTML_ONLY, R_MISMATCHED_LINK,
    R_EMPTY_BODY, R_FROM_LOCAL_UNAUTH,
};

static const struct rule_hit table[RULES_COUNT] = {
    [R_MISSING_FROM] = { "MISSING_FROM", 1.0 },
    [R_MISSING_DATE] = { "MISSING_DATE", 1.36 },
    [R_INVALID_DATE] = { "INVALID_DATE", 1.096 },
    [R_MISSING_MID] = { "MISSING_MID", 0.497 },
    [R_INVALID_MSGID] = { "INVALID_MSGID", 0.568 },
    [R_MISSING_SUBJECT] = { "MISSING_SUBJECT", 1.799 },
    [R_SUBJ_ALL_CAPS] = { "SUBJ_ALL_CAPS", 0.5 },
    [R_SUBJ_OBFUSCATED] = { "SUBJ_OBFUSCATED", 1.0 },
    [R_HTML_ONLY] = { "HTML_ONLY", 1.105 },
    [R_MISMATCHED_LINK] = { "MISMATCHED_LINK", 1.0 },
    [R_EMPTY_BODY] = { "EMPTY_BODY", 2.32 },
    [R_FROM_LOCAL_UNAUTH] = { "FROM_LOCAL_UNAUTH", 1.5 },
};

/* --- characters ---------------------------------------------------------------- */

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

static char to_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

/* --- Date ---------------------------------------------------------------------- */

struct cur {
    const char *p, *end;
};

/* Skips white space, folding and (nested) comments; whether anything was
 * skipped. */
static bool skip_cfws(struct cur *c)
{
    const char *start = c->p;
    while (c->p < c->end) {
        if (is_space(*c->p)) {
            c->p++;
        } else if (*c->p == '(') {
            int depth = 0;
            while (c->p < c->end) {
                char ch = *c->p++;
                if (ch == '\\' && c->p < c->end)
                    c->p++;
                else if (ch == '(')
                    depth++;
                else if (ch == ')' && --depth == 0)
                    break;
            }
        } else {
            break;
        }
    }
    return c->p != start;
}

/* A number of min..max digits; -1 when there is none. */
static long read_number(struct cur *c, size_t min, size_t max)
{
    size_t n = 0;
    long v = 0;
    while (c->p < c->end && ascii_is_digit(*c->p) && n < max) {
        v = v * 10 + (*c->p - '0');
        c->p++;
        n++;
    }
    if (n < min || (c->p < c->end && ascii_is_digit(*c->p)))
        return -1;
    return v;
}

static size_t read_alpha(struct cur *c, const char **word)
{
    *word = c->p;
    while (c->p < c->end && ascii_is_alpha(*c->p))
        c->p++;
    return (size_t)(c->p - *word);
}

static bool in_list(const char *word, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(list[i]) == len && strncasecmp(word, list[i], len) == 0)
            return true;
    return false;
}

/* "+0200", "UT", "GMT", "EST"...: SpamAssassin's [A-Z]{2,3}T. */
static bool read_zone(struct cur *c)
{
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) {
        c->p++;
        return read_number(c, 4, 4) >= 0;
    }
    const char *w;
    size_t n = read_alpha(c, &w);
    if (n == 2 && memcmp(w, "UT", 2) == 0)
        return true;
    if (n < 3 || n > 4 || w[n - 1] != 'T')
        return false;
    for (size_t i = 0; i < n; i++)
        if (w[i] < 'A' || w[i] > 'Z')
            return false;
    return true;
}

bool rules_date_valid(const char *v, size_t len)
{
    static const char *const days[] = { "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun" };
    static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct cur c = { v, v + len };
    const char *w;
    skip_cfws(&c);
    size_t n = read_alpha(&c, &w);
    if (n) {
        if (!in_list(w, n, days, 7))
            return false;
        skip_cfws(&c);
        if (c.p >= c.end || *c.p != ',')
            return false;
        c.p++;
        skip_cfws(&c);
    }
    long day = read_number(&c, 1, 2);
    if (day < 1 || day > 31 || !skip_cfws(&c))
        return false;
    n = read_alpha(&c, &w);
    if (!in_list(w, n, months, 12) || !skip_cfws(&c))
        return false;
    long year = read_number(&c, 4, 4);
    if (year < 1970 || year > 2999 || !skip_cfws(&c))
        return false;
    long hh = read_number(&c, 1, 2);
    if (hh < 0 || hh > 23 || c.p >= c.end || *c.p++ != ':')
        return false;
    long mm = read_number(&c, 2, 2);
    if (mm < 0 || mm > 59)
        return false;
    if (c.p < c.end && *c.p == ':') {
        c.p++;
        long ss = read_number(&c, 2, 2);
        if (ss < 0 || ss > 60)
            return false;
    }
    /* the zone is optional, as SpamAssassin has it */
    if (skip_cfws(&c) && c.p < c.end && !read_zone(&c))
        return false;
    skip_cfws(&c);
    return c.p == c.end;
}

/* --- Message-ID ----------------------------------------------------------------- */

static bool msgid_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '<' && c != '>' && c != '\\';
}

bool rules_msgid_valid(const char *v, size_t len)
{
    while (len && is_space(*v)) {
        v++;
        len--;
    }
    while (len && is_space(v[len - 1]))
        len--;
    /* SpamAssassin lets a comment excuse anything (__MSGID_COMMENT) */
    const char *open = memchr(v, '(', len);
    if (open && memchr(open, ')', len - (size_t)(open - v)))
        return true;
    if (len < 5 || v[0] != '<' || v[len - 1] != '>')
        return false;
    const char *at = NULL;
    for (size_t i = 1; i + 1 < len; i++) {
        if (!msgid_char((unsigned char)v[i]))
            return false;
        if (v[i] == '@' && i > 1 && i + 2 < len)
            at = v + i;
    }
    return at != NULL;
}

/* --- Subject -------------------------------------------------------------------- */

/* Past "Re: ", "Fwd: " and the like, repeated. */
static const char *skip_reply_prefixes(const char *s, const char *end)
{
    static const char *const prefixes[] = { "Re", "Fwd", "Fw", "Aw", "Antwort", "WG",
                                            "SV", "VB", "VS", "VL" };
    for (;;) {
        while (s < end && is_space(*s))
            s++;
        bool found = false;
        for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes && !found; i++) {
            size_t n = strlen(prefixes[i]);
            if ((size_t)(end - s) > n && strncasecmp(s, prefixes[i], n) == 0 && s[n] == ':') {
                s += n + 1;
                found = true;
            }
        }
        if (!found)
            return s;
    }
}

bool rules_subject_all_caps(const char *s, size_t len)
{
    const char *end = s + len;
    s = skip_reply_prefixes(s, end);
    while (end > s && is_space(end[-1]))
        end--;
    if (end - s < 10)
        return false;
    bool space = false, letter = false;
    for (const char *p = s; p < end; p++) {
        if ((unsigned char)*p >= 0x80 || ascii_is_lower(*p))
            return false;   /* non-ASCII: SpamAssassin punts too */
        space |= is_space(*p);
        letter |= ascii_is_alpha(*p);
    }
    return space && letter;
}

/* Digits that stand for letters: o, i/l, e, a, s, t. */
static bool leet_digit(char c)
{
    return c == '0' || c == '1' || c == '3' || c == '4' || c == '5' || c == '7';
}

static bool is_hex_word(const char *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!ascii_is_digit(w[i]) && !(to_lower(w[i]) >= 'a' && to_lower(w[i]) <= 'f'))
            return false;
    return true;
}

/* "V1agra", "c1al1s": a digit between two letters, one of them lower
 * case, in a word mostly of letters. Hex strings (commit ids) and
 * upper-case codes (order numbers) are left alone. */
static bool leet_word(const char *w, size_t n)
{
    size_t letters = 0, digits = 0;
    for (size_t i = 0; i < n; i++) {
        letters += ascii_is_alpha(w[i]);
        digits += ascii_is_digit(w[i]);
    }
    if (n < 4 || letters < 3 || digits * 2 > letters || is_hex_word(w, n))
        return false;
    for (size_t i = 1; i + 1 < n; i++)
        if (leet_digit(w[i]) && ascii_is_alpha(w[i - 1]) && ascii_is_alpha(w[i + 1]) &&
            (ascii_is_lower(w[i - 1]) || ascii_is_lower(w[i + 1])))
            return true;
    return false;
}

static bool gappy_sep(char c)
{
    return c && strchr("-_. =~/:,*!@#$%^&+;\"'<>\\", c) != NULL;
}

/* SpamAssassin's GAPPY_SUBJECT: four letters in a row each followed by
 * one to three of the same separator ("V.i.a.g.r.a", "F-R-E-E"). */
static bool gappy_at(const char *s, const char *end)
{
    int count = 0;
    while (count < 4 && s + 1 < end && ascii_is_alpha(*s) && gappy_sep(s[1])) {
        char sep = s[1];
        s++;
        for (int k = 0; k < 3 && s < end && *s == sep; k++)
            s++;
        count++;
    }
    return count >= 4;
}

bool rules_subject_obfuscated(const char *s, size_t len)
{
    const char *end = s + len;
    for (const char *p = s; p < end;) {
        if (!ascii_is_alnum(*p)) {
            p++;
            continue;
        }
        if (ascii_is_alpha(*p) && (p == s || (!ascii_is_alnum(p[-1]) && p[-1] != '_')) && gappy_at(p, end))
            return true;
        const char *w = p;
        while (p < end && ascii_is_alnum(*p))
            p++;
        if (leet_word(w, (size_t)(p - w)))
            return true;
    }
    return false;
}

/* --- links ---------------------------------------------------------------------- */

/* The host of an http(s) URL, lowercased; false for other schemes. */
static bool url_host(const char *u, size_t len, char *out, size_t outlen)
{
    size_t skip;
    if (prefix_ci(u, len, "http://"))
        skip = 7;
    else if (prefix_ci(u, len, "https://"))
        skip = 8;
    else
        return false;
    u += skip;
    len -= skip;
    size_t auth = 0;
    while (auth < len && !strchr("/?#", u[auth]) && !is_space(u[auth]))
        auth++;
    /* userinfo: "http://bank.example@evil.example/" goes to evil.example */
    const char *host = u;
    for (size_t i = auth; i > 0; i--)
        if (u[i - 1] == '@') {
            host = u + i;
            break;
        }
    size_t n = 0;
    while (host + n < u + auth && host[n] != ':' && n + 1 < outlen) {
        out[n] = to_lower(host[n]);
        n++;
    }
    out[n] = '\0';
    return n > 0;
}

/* A bare domain ("www.bank.example", "bank.example/login"): labels of
 * letters, digits and '-', at least two, the last of two letters or
 * more. */
static bool text_domain(const char *t, size_t len, char *out, size_t outlen)
{
    size_t n = 0;
    while (n < len && (ascii_is_alnum(t[n]) || t[n] == '-' || t[n] == '.'))
        n++;
    if (n < len && t[n] != '/')
        return false;   /* words, addresses, anything else */
    while (n && t[n - 1] == '.')
        n--;
    const char *dot = NULL;
    for (size_t i = 0; i < n; i++)
        if (t[i] == '.')
            dot = t + i;
    if (!dot || dot == t || n >= outlen)
        return false;
    size_t tld = n - (size_t)(dot - t) - 1;
    if (tld < 2)
        return false;
    for (size_t i = (size_t)(dot - t) + 1; i < n; i++)
        if (!ascii_is_alpha(t[i]))
            return false;
    for (size_t i = 0; i < n; i++)
        out[i] = to_lower(t[i]);
    out[n] = '\0';
    return true;
}

static const char *strip_www(const char *h)
{
    return strncmp(h, "www.", 4) == 0 ? h + 4 : h;
}

/* Whether a is b or a subdomain of b. */
static bool within(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la < lb || strcmp(a + la - lb, b) != 0)
        return false;
    return la == lb || a[la - lb - 1] == '.';
}

static bool hosts_differ(const char *text_host, const char *href_host)
{
    const char *t = strip_www(text_host), *h = strip_www(href_host);
    return !within(t, h) && !within(h, t);
}

/* Finds `needle` (lower case) case-insensitively in s[0..len). */
static const char *find_ci(const char *s, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(s + i, needle, n) == 0)
            return s + i;
    return NULL;
}

/* The end of a tag starting at s ('<'), quotes respected; NULL when it
 * does not end. */
static const char *tag_end(const char *s, const char *end)
{
    char quote = 0;
    for (const char *p = s + 1; p < end; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '"' || *p == '\'') {
            quote = *p;
        } else if (*p == '>') {
            return p;
        }
    }
    return NULL;
}

/* The href value of an <a ...> tag s[0..len). */
static bool tag_href(const char *s, size_t len, const char **val, size_t *vlen)
{
    const char *end = s + len;
    for (const char *p = s; p + 4 <= end; p++) {
        if (strncasecmp(p, "href", 4) != 0 || (p > s && !is_space(p[-1])))
            continue;
        const char *q = p + 4;
        while (q < end && is_space(*q))
            q++;
        if (q >= end || *q != '=')
            continue;
        q++;
        while (q < end && is_space(*q))
            q++;
        if (q < end && (*q == '"' || *q == '\'')) {
            const char *close = memchr(q + 1, *q, (size_t)(end - q - 1));
            if (!close)
                return false;
            *val = q + 1;
            *vlen = (size_t)(close - q - 1);
        } else {
            const char *v = q;
            while (q < end && !is_space(*q) && *q != '>')
                q++;
            *val = v;
            *vlen = (size_t)(q - v);
        }
        while (*vlen && is_space(**val)) {
            (*val)++;
            (*vlen)--;
        }
        return true;
    }
    return false;
}

/* The visible text of a link, tags dropped and white space trimmed. */
static size_t link_text(const char *s, const char *end, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = s; p < end && n + 1 < outlen; p++) {
        if (*p == '<') {
            const char *e = tag_end(p, end);
            if (!e)
                break;
            p = e;
            continue;
        }
        if (is_space(*p) && (n == 0 || out[n - 1] == ' '))
            continue;
        out[n++] = is_space(*p) ? ' ' : *p;
    }
    while (n && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
    return n;
}

/* Whether one link <a tag...>text</a> names two domains. */
static bool link_mismatch(const char *tag, size_t taglen, const char *text, const char *tend)
{
    const char *href;
    size_t hlen;
    char hhost[DOMAIN_MAX + 1], thost[DOMAIN_MAX + 1], vis[LINK_TEXT_MAX];
    if (!tag_href(tag, taglen, &href, &hlen) || !url_host(href, hlen, hhost, sizeof hhost))
        return false;
    size_t vlen = link_text(text, tend, vis, sizeof vis);
    if (!url_host(vis, vlen, thost, sizeof thost) && !text_domain(vis, vlen, thost, sizeof thost))
        return false;
    return hosts_differ(thost, hhost);
}

bool rules_mismatched_link(const char *html, size_t len)
{
    const char *end = html + len;
    const char *p = html;
    for (int links = 0; links < LINKS_MAX; links++) {
        const char *a = NULL;
        while ((a = find_ci(p, (size_t)(end - p), "<a")) && a + 2 < end && !is_space(a[2]))
            p = a + 2;
        if (!a || a + 2 >= end)
            return false;
        const char *te = tag_end(a, end);
        if (!te)
            return false;
        const char *close = find_ci(te + 1, (size_t)(end - te - 1), "</a");
        const char *text_end = close ? close : end;
        if (link_mismatch(a, (size_t)(te - a), te + 1, text_end))
            return true;
        p = close ? close + 3 : end;
    }
    return false;
}

/* --- From ---------------------------------------------------------------------- */

bool rules_from_domain(const char *v, size_t len, char *out, size_t outlen)
{
    const char *end = v + len, *addr = NULL, *aend = NULL;
    /* "<...>" outside quoted strings and comments, else the first
     * address of a bare list */
    for (const char *p = v; p < end && !addr; p++) {
        if (*p == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\' && p + 1 < end)
                    p++;
        } else if (*p == '(') {
            struct cur c = { p, end };
            skip_cfws(&c);
            p = c.p - 1;
        } else if (*p == '<') {
            addr = p + 1;
            aend = memchr(addr, '>', (size_t)(end - addr));
            if (!aend)
                aend = end;
        }
    }
    if (!addr) {
        addr = v;
        aend = memchr(v, ',', len);
        if (!aend)
            aend = end;
    }
    const char *at = NULL;
    for (const char *p = addr; p < aend; p++)
        if (*p == '@')
            at = p;
    if (!at)
        return false;
    size_t n = 0;
    for (const char *p = at + 1; p < aend; p++) {
        if (is_space(*p) || *p == '(')
            break;
        if (!ascii_is_alnum(*p) && *p != '-' && *p != '.')
            return false;
        if (n + 1 >= outlen)
            return false;
        out[n++] = to_lower(*p);
    }
    while (n && out[n - 1] == '.')
        n--;
    out[n] = '\0';
    return n > 0;
}

/* --- the body ------------------------------------------------------------------ */

struct body_facts {
    size_t html, plain;      /* text parts that are not attachments */
    bool attachment;         /* a part that is not text, or is an attachment */
    bool text;               /* some non-white-space text */
    bool mismatched_link;
};

static bool is_attachment(const struct mime_part *p)
{
    return p->disposition && strcasecmp(p->disposition, "attachment") == 0;
}

/* Whether decoded text (HTML when html) has anything but white space. */
static bool has_text(const char *s, size_t len, bool html)
{
    const char *end = s + len;
    for (const char *p = s; p < end; p++) {
        if (html && *p == '<') {
            const char *e = tag_end(p, end);
            if (!e)
                return false;
            p = e;
        } else if (html && *p == '&' && end - p >= 6 && strncasecmp(p, "&nbsp;", 6) == 0) {
            p += 5;
        } else if (!is_space(*p)) {
            return true;
        }
    }
    return false;
}

static int look_at_leaf(const char *msg, const struct mime_part *p, struct body_facts *f)
{
    bool html = mime_part_is(p, "text", "html"), plain = mime_part_is(p, "text", "plain");
    if (is_attachment(p) || (!html && !plain) || p->opaque) {
        f->attachment = true;
        return 0;
    }
    if (html)
        f->html++;
    else
        f->plain++;
    if (f->text && (!html || f->mismatched_link))
        return 0;
    struct buf body = BUF_INIT;
    if (mime_decode_body(msg, p, &body) < 0) {
        buf_free(&body);
        return -1;
    }
    size_t len = body.len < RULES_HTML_MAX ? body.len : RULES_HTML_MAX;
    if (!f->text)
        f->text = has_text(body.data, len, html);
    if (html && !f->mismatched_link)
        f->mismatched_link = rules_mismatched_link(body.data, len);
    buf_free(&body);
    return 0;
}

/* Walks the parts; an attached message counts as an attachment and its
 * own parts are not looked at. */
static int look_at_body(const char *msg, const struct mime_part *p, struct body_facts *f,
                        size_t *budget)
{
    if (*budget == 0)
        return 0;
    (*budget)--;
    if (p->kind == MIME_MESSAGE) {
        f->attachment = true;
        return 0;
    }
    if (p->kind == MIME_LEAF)
        return look_at_leaf(msg, p, f);
    for (const struct mime_part *c = p->children; c; c = c->next)
        if (look_at_body(msg, c, f, budget) < 0)
            return -1;
    return 0;
}

/* --- all rules --------------------------------------------------------------------- */

/* The subject rules, on the decoded subject. */
static int subject_rules(const struct mime_str *subj, bool *hit)
{
    struct buf dec = BUF_INIT;
    if (mime_decode_header(subj->p, subj->len, &dec) < 0) {
        buf_free(&dec);
        return -1;
    }
    const char *s = dec.data ? dec.data : "";
    hit[R_SUBJ_ALL_CAPS] = rules_subject_all_caps(s, dec.len);
    hit[R_SUBJ_OBFUSCATED] = rules_subject_obfuscated(s, dec.len);
    buf_free(&dec);
    return 0;
}

static bool from_local(const struct mime_part *root, const struct rules_env *env)
{
    char domain[DOMAIN_MAX + 1];
    if (env->authenticated || !env->domain_is_local || !root->from.p)
        return false;
    if (!rules_from_domain(root->from.p, root->from.len, domain, sizeof domain))
        return false;
    return env->domain_is_local(env->arg, domain);
}

int rules_check(const char *msg, size_t len, const struct mime_part *root,
                const struct rules_env *env, struct rule_hit *hits, size_t max)
{
    (void)len;
    bool hit[RULES_COUNT] = { false };
    int err = 0;
    hit[R_MISSING_FROM] = !root->from.p;
    hit[R_MISSING_DATE] = !root->date.p;
    hit[R_INVALID_DATE] = root->date.p && !rules_date_valid(root->date.p, root->date.len);
    hit[R_MISSING_MID] = !root->message_id.p;
    hit[R_INVALID_MSGID] = root->message_id.p &&
                           !rules_msgid_valid(root->message_id.p, root->message_id.len);
    hit[R_MISSING_SUBJECT] = !root->subject.p;
    if (root->subject.p && subject_rules(&root->subject, hit) < 0)
        err = -1;
    struct body_facts f = { 0 };
    size_t budget = RULES_PARTS_MAX;
    if (look_at_body(msg, root, &f, &budget) < 0)
        err = -1;
    hit[R_HTML_ONLY] = f.html > 0 && f.plain == 0;
    hit[R_MISMATCHED_LINK] = f.mismatched_link;
    hit[R_EMPTY_BODY] = !f.attachment && !f.text;
    hit[R_FROM_LOCAL_UNAUTH] = from_local(root, env);
    if (err)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < RULES_COUNT && n < max; i++)
        if (hit[i])
            hits[n++] = table[i];
    return (int)n;
}

/* --- the filter --------------------------------------------------------------------- */

static bool enabled(const struct settings *st)
{
    return st->enable_spamassassin;
}

static bool accounts_local(void *arg, const char *domain)
{
    return accounts_domain_is_local(arg, domain);
}

static void check(const struct filter_txn *t, struct filter_result *r)
{
    r->verdict = FILTER_ACCEPT;
    if (!t->mime || !t->msg)
        return;
    struct rules_env env = {
        .authenticated = t->authenticated,
        .domain_is_local = t->srv->accounts ? accounts_local : NULL,
        .arg = t->srv->accounts,
    };
    struct rule_hit hits[RULES_COUNT];
    int n = rules_check(t->msg, t->len, t->mime, &env, hits, RULES_COUNT);
    if (n < 0) {
        log_warn("rules: %s: out of memory, rules skipped", t->id ? t->id : "-");
        return;
    }
    for (int i = 0; i < n; i++)
        filter_add_score(t, hits[i].name, hits[i].score);
}

const struct filter_ops rules_filter = {
    .name = "rules",
    .enabled = enabled,
    .hook = { [FILTER_DATA] = check },
};
