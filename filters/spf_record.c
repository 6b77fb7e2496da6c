/* spf_record: the strict SPF record parser (RFC 7208 4.6.1 ABNF with 5,
 * 6 and 7.1) and the rewriting of valid records into terms libspf2
 * accepts (see spf_record.h). Pure functions on strings: no DNS, no
 * libspf2, no state. */
#include "spf_record.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "ascii.h"
#include "util.h"

/* ---------------------------------------------------------------------- */
/* Characters                                                             */
/* ---------------------------------------------------------------------- */

static bool word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* Decimal digits s[0..n) without a leading zero (except "0"), at most max. */
static int parse_small(const char *s, size_t n, int max)
{
    if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ascii_is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= max ? v : -1;
}

/* ---------------------------------------------------------------------- */
/* Record grammar (RFC 7208 4.6.1, 7.1)                                   */
/* ---------------------------------------------------------------------- */

enum term_kind {
    TK_ALL, TK_INCLUDE, TK_A, TK_MX, TK_PTR, TK_IP4, TK_IP6, TK_EXISTS,
    TK_REDIRECT, TK_EXP, TK_UNKNOWN_MOD,
};

struct term {
    enum term_kind kind;
    char qualifier;              /* '+' when absent */
    const char *text;            /* the whole term */
    size_t len;
    const char *spec;            /* domain-spec, network or modifier value */
    size_t speclen;
    bool has_spec;
    int cidr4, cidr6;            /* -1 when absent */
};

static const struct {
    const char *name;
    enum term_kind kind;
} mechanisms[] = {
    { "all", TK_ALL }, { "include", TK_INCLUDE }, { "a", TK_A }, { "mx", TK_MX },
    { "ptr", TK_PTR }, { "ip4", TK_IP4 }, { "ip6", TK_IP6 }, { "exists", TK_EXISTS },
};

/* A toplabel: alphanumerics with at least one letter, or alphanumerics and
 * hyphens that start and end with an alphanumeric. */
static bool toplabel_ok(const char *s, size_t n)
{
    bool alpha = false, hyphen = false;
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '-')
            hyphen = true;
        else if (ascii_is_alpha(s[i]))
            alpha = true;
        else if (!ascii_is_digit(s[i]))
            return false;
    }
    return hyphen ? ascii_is_alnum(s[0]) && ascii_is_alnum(s[n - 1]) : alpha;
}

/* The "%{...}" at s (s[0] '%', s[1] '{'): its length, or 0 when malformed.
 * c, r and t are for explanations only (RFC 7208 7.2). */
static size_t brace_macro_len(const char *s, size_t n, bool exp_letters)
{
    size_t i = 2;
    if (i >= n)
        return 0;
    char l = ascii_lower(s[i++]);
    if (!strchr("slodiphv", l) && !(exp_letters && strchr("crt", l)))
        return 0;
    size_t d0 = i;
    while (i < n && ascii_is_digit(s[i]))
        i++;
    /* RFC 7208 7.3: a DIGIT transformer is non-zero. */
    if (i > d0 && parse_small(s + d0, i - d0, 128) <= 0)
        return 0;
    if (i < n && ascii_lower(s[i]) == 'r')
        i++;
    while (i < n && s[i] && strchr(".-+,/_=", s[i]))
        i++;
    return i < n && s[i] == '}' ? i + 1 : 0;
}

/* macro-string (or explain-string when spaces are allowed). *tail is set to
 * where the text after the last macro-expand starts (n when the string
 * ends with one). */
static int macro_string_check(const char *s, size_t n, bool exp_letters, bool spaces,
                              size_t *tail, char *why, size_t whylen)
{
    size_t i = 0;
    *tail = 0;
    while (i < n) {
        char c = s[i];
        if (c == '%') {
            size_t m = 0;
            if (i + 1 < n && (s[i + 1] == '%' || s[i + 1] == '_' || s[i + 1] == '-'))
                m = 2;
            else if (i + 1 < n && s[i + 1] == '{')
                m = brace_macro_len(s + i, n - i, exp_letters);
            if (m == 0) {
                set_err(why, whylen, "bad macro in \"%.*s\"", (int)n, s);
                return -1;
            }
            i += m;
            *tail = i;
        } else if ((c > 0x20 && c < 0x7f) || (spaces && c == ' ')) {
            i++;
        } else {
            set_err(why, whylen, "bad character in \"%.*s\"", (int)n, s);
            return -1;
        }
    }
    return 0;
}

/* domain-spec = macro-string domain-end; domain-end = "." toplabel ["."]
 * / macro-expand. */
static int domain_spec_check(const char *s, size_t n, char *why, size_t whylen)
{
    size_t tail;
    if (n == 0) {
        set_err(why, whylen, "empty domain");
        return -1;
    }
    if (macro_string_check(s, n, false, false, &tail, why, whylen) < 0)
        return -1;
    if (tail == n)
        return 0;   /* ends with a macro-expand */
    size_t end = n;
    if (s[end - 1] == '.')
        end--;
    size_t dot = end;
    while (dot > tail && s[dot - 1] != '.')
        dot--;
    if (dot == tail || !toplabel_ok(s + dot, end - dot)) {
        set_err(why, whylen, "\"%.*s\" does not end with a valid top-level label", (int)n, s);
        return -1;
    }
    return 0;
}

/* qnum "." qnum "." qnum "." qnum, no leading zeros. */
static bool ip4_network_ok(const char *s, size_t n)
{
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t start = i;
        while (i < n && ascii_is_digit(s[i]))
            i++;
        if (parse_small(s + start, i - start, 255) < 0)
            return false;
        if (part < 3) {
            if (i >= n || s[i] != '.')
                return false;
            i++;
        }
    }
    return i == n;
}

static bool ip6_network_ok(const char *s, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr a;
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

/* Takes a trailing dual-cidr-length off s[0..*n). -1 for a bad length. */
static int strip_cidr(const char *s, size_t *n, int *c4, int *c6, bool v4, bool v6)
{
    *c4 = *c6 = -1;
    for (int round = 0; round < 2; round++) {
        size_t k = *n;
        while (k > 0 && ascii_is_digit(s[k - 1]))
            k--;
        if (k == *n || k == 0 || s[k - 1] != '/')
            return 0;
        bool double_slash = k >= 2 && s[k - 2] == '/';
        if (double_slash && round == 0 && v6) {
            if ((*c6 = parse_small(s + k, *n - k, 128)) < 0)
                return -1;
            *n = k - 2;
            continue;
        }
        if (double_slash || !v4)
            return -1;
        if ((*c4 = parse_small(s + k, *n - k, 32)) < 0)
            return -1;
        *n = k - 1;
        return 0;
    }
    return 0;
}

static int parse_modifier(const char *name, size_t nlen, const char *val, size_t vlen,
                          struct term *t, char *why, size_t whylen)
{
    t->spec = val;
    t->speclen = vlen;
    t->has_spec = true;
    if (!ascii_is_alpha(name[0])) {
        set_err(why, whylen, "bad modifier name \"%.*s\"", (int)nlen, name);
        return -1;
    }
    if (word_is(name, nlen, "redirect") || word_is(name, nlen, "exp")) {
        t->kind = word_is(name, nlen, "exp") ? TK_EXP : TK_REDIRECT;
        return domain_spec_check(val, vlen, why, whylen);
    }
    t->kind = TK_UNKNOWN_MOD;
    size_t tail;
    return macro_string_check(val, vlen, true, false, &tail, why, whylen);
}

/* What follows a mechanism's name. */
static int parse_mechanism_args(struct term *t, const char *rest, size_t n, char *why,
                                size_t whylen)
{
    bool need = t->kind == TK_INCLUDE || t->kind == TK_EXISTS || t->kind == TK_IP4
        || t->kind == TK_IP6;
    if (t->kind == TK_A || t->kind == TK_MX) {
        if (strip_cidr(rest, &n, &t->cidr4, &t->cidr6, true, true) < 0) {
            set_err(why, whylen, "bad prefix length in \"%.*s\"", (int)t->len, t->text);
            return -1;
        }
    } else if (t->kind == TK_IP4 || t->kind == TK_IP6) {
        bool v4 = t->kind == TK_IP4;
        int *c = v4 ? &t->cidr4 : &t->cidr6;
        size_t slash = n;
        while (slash > 0 && rest[slash - 1] != '/' && rest[slash - 1] != ':')
            slash--;
        *c = -1;
        if (slash > 0 && rest[slash - 1] == '/') {
            if ((*c = parse_small(rest + slash, n - slash, v4 ? 32 : 128)) < 0) {
                set_err(why, whylen, "bad prefix length in \"%.*s\"", (int)t->len, t->text);
                return -1;
            }
            n = slash - 1;
        }
    }
    if (n == 0) {
        if (need) {
            set_err(why, whylen, "\"%.*s\" needs a value", (int)t->len, t->text);
            return -1;
        }
        return 0;
    }
    if (rest[0] != ':' || t->kind == TK_ALL) {
        set_err(why, whylen, "unexpected \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    t->spec = rest + 1;
    t->speclen = n - 1;
    t->has_spec = true;
    if (t->kind == TK_IP4 && !ip4_network_ok(t->spec, t->speclen)) {
        set_err(why, whylen, "bad IPv4 network in \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    if (t->kind == TK_IP6 && !ip6_network_ok(t->spec, t->speclen)) {
        set_err(why, whylen, "bad IPv6 network in \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    if (t->kind == TK_IP4 || t->kind == TK_IP6)
        return 0;
    if (t->speclen == 0) {
        set_err(why, whylen, "empty domain in \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    return domain_spec_check(t->spec, t->speclen, why, whylen);
}

static int parse_term(const char *p, size_t n, struct term *t, char *why, size_t whylen)
{
    memset(t, 0, sizeof *t);
    t->text = p;
    t->len = n;
    t->cidr4 = t->cidr6 = -1;
    t->qualifier = '+';
    size_t i = 0;
    bool qualified = false;
    if (strchr("+-~?", p[0])) {
        t->qualifier = p[0];
        qualified = true;
        i = 1;
    }
    size_t j = i;
    while (j < n && (ascii_is_alnum(p[j]) || p[j] == '-' || p[j] == '_' || p[j] == '.'))
        j++;
    if (j < n && p[j] == '=' && j > i && !qualified)
        return parse_modifier(p + i, j - i, p + j + 1, n - j - 1, t, why, whylen);
    for (size_t k = 0; k < sizeof mechanisms / sizeof mechanisms[0]; k++) {
        if (word_is(p + i, j - i, mechanisms[k].name)) {
            t->kind = mechanisms[k].kind;
            return parse_mechanism_args(t, p + j, n - j, why, whylen);
        }
    }
    set_err(why, whylen, "unknown term \"%.*s\"", (int)n, p);
    return -1;
}

bool spf_record_is_spf1(const char *s, size_t n)
{
    return n >= 6 && strncasecmp(s, "v=spf1", 6) == 0 && (n == 6 || s[6] == ' ');
}

typedef int (*term_fn)(void *arg, const struct term *t);

/* Parses the record, calling fn for each term in order. */
static int walk_terms(const char *rec, size_t len, term_fn fn, void *arg, char *why,
                      size_t whylen)
{
    if (len > SPF_RECORD_MAX) {
        set_err(why, whylen, "record longer than %d bytes", SPF_RECORD_MAX);
        return -1;
    }
    if (!spf_record_is_spf1(rec, len)) {
        set_err(why, whylen, "not an SPF record");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (rec[i] < 0x20 || rec[i] >= 0x7f) {
            set_err(why, whylen, "control or non-ASCII character in the record");
            return -1;
        }
    }
    size_t pos = 6;
    int redirects = 0, exps = 0;
    while (pos < len) {
        while (pos < len && rec[pos] == ' ')
            pos++;
        if (pos == len)
            break;
        size_t end = pos;
        while (end < len && rec[end] != ' ')
            end++;
        struct term t;
        if (parse_term(rec + pos, end - pos, &t, why, whylen) < 0)
            return -1;
        /* RFC 7208 6: each at most once. */
        if ((t.kind == TK_REDIRECT && ++redirects > 1) || (t.kind == TK_EXP && ++exps > 1)) {
            set_err(why, whylen, "more than one %s= modifier", t.kind == TK_EXP ? "exp" : "redirect");
            return -1;
        }
        if (fn && fn(arg, &t) < 0) {
            set_err(why, whylen, "record too long to rewrite");
            return -1;
        }
        pos = end;
    }
    return 0;
}

int spf_record_check(const char *record, size_t len, char *why, size_t whylen)
{
    if (!record)
        return -1;
    return walk_terms(record, len, NULL, NULL, why, whylen);
}

bool spf_explain_string_ok(const char *s, size_t n)
{
    size_t tail;
    return macro_string_check(s, n, true, true, &tail, NULL, 0) == 0;
}

/* ---------------------------------------------------------------------- */
/* Rewriting for libspf2                                                  */
/* ---------------------------------------------------------------------- */

struct rewrite {
    char *out;
    size_t cap, len;
    int family;
    bool has_all;
    const struct term *redirect;   /* emitted last */
    struct term redirect_copy;
};

static int emit(struct rewrite *rw, const char *s, size_t n)
{
    if (rw->len + n + 1 > rw->cap)
        return -1;
    memcpy(rw->out + rw->len, s, n);
    rw->len += n;
    rw->out[rw->len] = '\0';
    return 0;
}

static int emits(struct rewrite *rw, const char *s)
{
    return emit(rw, s, strlen(s));
}

/* Pairs of /1 networks covering every address of one family. */
static int emit_whole_family(struct rewrite *rw, const struct term *t)
{
    char q[2] = { t->qualifier, '\0' };
    if (t->kind == TK_IP4)
        return emits(rw, " ") | emits(rw, q) | emits(rw, "ip4:0.0.0.0/1 ") | emits(rw, q)
            | emits(rw, "ip4:128.0.0.0/1");
    return emits(rw, " ") | emits(rw, q) | emits(rw, "ip6:::/1 ") | emits(rw, q)
        | emits(rw, "ip6:8000::/1");
}

static int emit_a_mx(struct rewrite *rw, const struct term *t)
{
    bool v4 = rw->family == AF_INET, mx = t->kind == TK_MX;
    int mine = v4 ? t->cidr4 : t->cidr6;
    char q[2] = { t->qualifier, '\0' };
    int rc = emits(rw, " ") | emits(rw, q);
    if (mine == 0) {
        /* "exists:<domain>.<tag>" + SPF_CIDR0_SUFFIX, answered by layer_lookup. */
        size_t n = t->speclen;
        if (n > 0 && t->spec[n - 1] == '.')
            n--;
        rc |= emits(rw, "exists:");
        rc |= t->has_spec ? emit(rw, t->spec, n) : emits(rw, "%{d}");
        rc |= emits(rw, mx ? (v4 ? ".mx4" : ".mx6") : (v4 ? ".a4" : ".a6"));
        return rc | emits(rw, SPF_CIDR0_SUFFIX);
    }
    /* Only the other family's "/0", which libspf2 refuses: drop it. */
    rc |= emits(rw, mx ? "mx" : "a");
    if (t->has_spec)
        rc |= emits(rw, ":") | emit(rw, t->spec, t->speclen);
    if (mine > 0) {
        char c[16];
        snprintf(c, sizeof c, "%s%d", v4 ? "/" : "//", mine);
        rc |= emits(rw, c);
    }
    return rc;
}

static int rewrite_term(void *arg, const struct term *t)
{
    struct rewrite *rw = arg;
    switch (t->kind) {
    case TK_ALL:
        rw->has_all = true;
        break;
    case TK_REDIRECT:
        /* RFC 7208 6.1: applies after every mechanism failed to match,
         * wherever it is written; libspf2 would run it in place. */
        rw->redirect_copy = *t;
        rw->redirect = &rw->redirect_copy;
        return 0;
    case TK_UNKNOWN_MOD:
        /* RFC 7208 6: ignored. libspf2 refuses some valid names ("a.b="). */
        return 0;
    case TK_IP4:
        if (t->cidr4 == 0)
            return emit_whole_family(rw, t);
        break;
    case TK_IP6:
        if (t->cidr6 == 0)
            return emit_whole_family(rw, t);
        break;
    case TK_A:
    case TK_MX:
        if (t->cidr4 == 0 || t->cidr6 == 0)
            return emit_a_mx(rw, t);
        break;
    default:
        break;
    }
    return emits(rw, " ") | emit(rw, t->text, t->len);
}

long spf_record_rewrite(const char *record, size_t len, int family, char *out, size_t outlen)
{
    struct rewrite rw = { .out = out, .cap = outlen, .family = family };
    if (!record || !out || outlen == 0 || emits(&rw, "v=spf1") < 0)
        return -1;
    if (walk_terms(record, len, rewrite_term, &rw, NULL, 0) < 0)
        return -1;
    /* RFC 7208 6.1: redirect is ignored when there is an "all". */
    if (rw.redirect && !rw.has_all
        && (emits(&rw, " ") | emit(&rw, rw.redirect->text, rw.redirect->len)) < 0)
        return -1;
    return (long)rw.len;
}
