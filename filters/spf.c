/* spf: libspf2 evaluates; we fetch, select, check and rewrite the records,
 * answer its DNS queries, count its lookups and decide what its answers
 * mean (see spf.h for the corrections and why).
 *
 * One libspf2 server object per check: it is cheap (two small macro
 * compilations), and libspf2 says nothing about sharing one between
 * threads. Its DNS layer is a struct on the check's stack whose hook is
 * the check's context, so checks share no state at all. */
#include "spf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "ascii.h"
#include "log.h"
#include "server.h"

/* The explanation of a fail when the domain gives none (RFC 7208 6.2
 * leaves it to the receiver). */
#define DEFAULT_EXP "%{o} does not designate %{i} as permitted sender"
#define DEFAULT_EXP_MACRO "%{o}%_does%_not%_designate%_%{i}%_as%_permitted%_sender"
/* exists: names standing for the "/0" checks libspf2 cannot express. */
#define MAGIC_SUFFIX ".posthorn-cidr0.invalid"
#define PTR_NAMES_MAX 10   /* RFC 7208 4.6.4: further names are ignored */
#define MX_NAMES_MAX 10    /* RFC 7208 4.6.4: more is a permerror */

/* ---------------------------------------------------------------------- */
/* Characters                                                             */
/* ---------------------------------------------------------------------- */

static bool word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static void say(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *why, size_t whylen, const char *fmt, ...)
{
    if (!why || whylen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* Copies printable ASCII (anything else becomes '?'), truncating. */
static void copy_printable(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (; in && *in && o + 1 < outlen; in++)
        out[o++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
    out[o] = '\0';
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
                say(why, whylen, "bad macro in \"%.*s\"", (int)n, s);
                return -1;
            }
            i += m;
            *tail = i;
        } else if ((c > 0x20 && c < 0x7f) || (spaces && c == ' ')) {
            i++;
        } else {
            say(why, whylen, "bad character in \"%.*s\"", (int)n, s);
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
        say(why, whylen, "empty domain");
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
        say(why, whylen, "\"%.*s\" does not end with a valid top-level label", (int)n, s);
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
        say(why, whylen, "bad modifier name \"%.*s\"", (int)nlen, name);
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
            say(why, whylen, "bad prefix length in \"%.*s\"", (int)t->len, t->text);
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
                say(why, whylen, "bad prefix length in \"%.*s\"", (int)t->len, t->text);
                return -1;
            }
            n = slash - 1;
        }
    }
    if (n == 0) {
        if (need) {
            say(why, whylen, "\"%.*s\" needs a value", (int)t->len, t->text);
            return -1;
        }
        return 0;
    }
    if (rest[0] != ':' || t->kind == TK_ALL) {
        say(why, whylen, "unexpected \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    t->spec = rest + 1;
    t->speclen = n - 1;
    t->has_spec = true;
    if (t->kind == TK_IP4 && !ip4_network_ok(t->spec, t->speclen)) {
        say(why, whylen, "bad IPv4 network in \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    if (t->kind == TK_IP6 && !ip6_network_ok(t->spec, t->speclen)) {
        say(why, whylen, "bad IPv6 network in \"%.*s\"", (int)t->len, t->text);
        return -1;
    }
    if (t->kind == TK_IP4 || t->kind == TK_IP6)
        return 0;
    if (t->speclen == 0) {
        say(why, whylen, "empty domain in \"%.*s\"", (int)t->len, t->text);
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
    say(why, whylen, "unknown term \"%.*s\"", (int)n, p);
    return -1;
}

/* "v=spf1" followed by a space or the end (RFC 7208 4.5). */
static bool is_spf1(const char *s, size_t n)
{
    return n >= 6 && strncasecmp(s, "v=spf1", 6) == 0 && (n == 6 || s[6] == ' ');
}

typedef int (*term_fn)(void *arg, const struct term *t);

/* Parses the record, calling fn for each term in order. */
static int walk_terms(const char *rec, size_t len, term_fn fn, void *arg, char *why,
                      size_t whylen)
{
    if (len > SPF_RECORD_MAX) {
        say(why, whylen, "record longer than %d bytes", SPF_RECORD_MAX);
        return -1;
    }
    if (!is_spf1(rec, len)) {
        say(why, whylen, "not an SPF record");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (rec[i] < 0x20 || rec[i] >= 0x7f) {
            say(why, whylen, "control or non-ASCII character in the record");
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
            say(why, whylen, "more than one %s= modifier", t.kind == TK_EXP ? "exp" : "redirect");
            return -1;
        }
        if (fn && fn(arg, &t) < 0) {
            say(why, whylen, "record too long to rewrite");
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
        /* "exists:<domain>.<tag>" + MAGIC_SUFFIX, answered by layer_lookup. */
        size_t n = t->speclen;
        if (n > 0 && t->spec[n - 1] == '.')
            n--;
        rc |= emits(rw, "exists:");
        rc |= t->has_spec ? emit(rw, t->spec, n) : emits(rw, "%{d}");
        rc |= emits(rw, mx ? (v4 ? ".mx4" : ".mx6") : (v4 ? ".a4" : ".a6"));
        return rc | emits(rw, MAGIC_SUFFIX);
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

/* ---------------------------------------------------------------------- */
/* Results                                                                */
/* ---------------------------------------------------------------------- */

const char *spf_result_name(enum spf_result r)
{
    switch (r) {
    case SPF_R_NONE: return "none";
    case SPF_R_NEUTRAL: return "neutral";
    case SPF_R_PASS: return "pass";
    case SPF_R_FAIL: return "fail";
    case SPF_R_SOFTFAIL: return "softfail";
    case SPF_R_TEMPERROR: return "temperror";
    case SPF_R_PERMERROR: return "permerror";
    }
    return "permerror";
}

enum spf_result spf_map_libspf2(int result, int errcode)
{
    switch ((SPF_result_t)result) {
    case SPF_RESULT_PASS: return SPF_R_PASS;
    case SPF_RESULT_FAIL: return SPF_R_FAIL;
    case SPF_RESULT_SOFTFAIL: return SPF_R_SOFTFAIL;
    case SPF_RESULT_NEUTRAL: return SPF_R_NEUTRAL;
    case SPF_RESULT_NONE: return SPF_R_NONE;
    case SPF_RESULT_TEMPERROR: return SPF_R_TEMPERROR;
    case SPF_RESULT_PERMERROR: return SPF_R_PERMERROR;
    case SPF_RESULT_INVALID:
    default:
        /* libspf2's "invalid": a DNS failure is transient, anything else
         * (syntax, limits, internal) is not. */
        if (errcode == SPF_E_DNS_ERROR)
            return SPF_R_TEMPERROR;
        if (errcode == SPF_E_NO_MEMORY)
            return SPF_R_TEMPERROR;
        return SPF_R_PERMERROR;
    }
}

/* ---------------------------------------------------------------------- */
/* The check's context and libspf2's DNS layer                            */
/* ---------------------------------------------------------------------- */

struct spf_ctx {
    SPF_dns_server_t layer;          /* hook points back here */
    const struct spf_resolver *dns;
    SPF_server_t *server;
    SPF_request_t *req;
    int family;
    struct in_addr v4;
    struct in6_addr v6;
    double started;
    int terms, voids;
    bool in_exp;                     /* explanation lookups: not counted */
    bool aborted;                    /* our own verdict overrides libspf2's */
    enum spf_result forced;
    char problem[160];
    /* Names the current mx / ptr term looks up next: those address queries
     * are part of that term, not terms of their own. */
    char *follow[MX_NAMES_MAX + 1];
    size_t nfollow, next_follow;
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void ctx_abort(struct spf_ctx *c, enum spf_result r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Ends the evaluation with r: from here every lookup fails, libspf2 unwinds
 * with an error, and spf_check reports r instead. The first reason wins. */
static void ctx_abort(struct spf_ctx *c, enum spf_result r, const char *fmt, ...)
{
    if (c->aborted)
        return;
    c->aborted = true;
    c->forced = r;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->problem, sizeof c->problem, fmt, ap);
    va_end(ap);
}

static void follow_clear(struct spf_ctx *c)
{
    for (size_t i = 0; i < c->nfollow; i++)
        free(c->follow[i]);
    c->nfollow = c->next_follow = 0;
}

static void follow_set(struct spf_ctx *c, const struct dns_answer *a, size_t max)
{
    follow_clear(c);
    for (size_t i = 0; i < a->n && i < max && c->nfollow < MX_NAMES_MAX; i++) {
        c->follow[c->nfollow] = strdup(a->rec[i].text ? a->rec[i].text : "");
        if (!c->follow[c->nfollow])
            break;
        c->nfollow++;
    }
}

/* Whether an address lookup of name belongs to the current mx / ptr term. */
static bool follow_take(struct spf_ctx *c, const char *name)
{
    if (c->next_follow < c->nfollow && strcasecmp(c->follow[c->next_follow], name) == 0) {
        c->next_follow++;
        return true;
    }
    follow_clear(c);
    return false;
}

/* A name we may ask for (RFC 7208 4.3: anything else does not exist). */
static bool name_ok(const char *name)
{
    size_t len = strlen(name), label = 0;
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ++label > 63) {
            return false;
        }
    }
    return label > 0;
}

static enum dns_status ctx_query(struct spf_ctx *c, const char *name, int type,
                                 struct dns_answer *a)
{
    memset(a, 0, sizeof *a);
    if (!name_ok(name)) {
        a->status = DNS_NXDOMAIN;
        return a->status;
    }
    if (!c->in_exp && now_mono() - c->started > SPF_TIME_LIMIT) {
        ctx_abort(c, SPF_R_TEMPERROR, "no result within %.0f seconds", SPF_TIME_LIMIT);
        a->status = DNS_TEMPFAIL;
        return a->status;
    }
    return c->dns->query(c->dns->arg, name, type, a);
}

static bool count_term(struct spf_ctx *c)
{
    if (++c->terms > SPF_TERM_LIMIT) {
        ctx_abort(c, SPF_R_PERMERROR, "more than %d DNS-querying terms (RFC 7208 4.6.4)",
                  SPF_TERM_LIMIT);
        return false;
    }
    return true;
}

static bool count_void(struct spf_ctx *c, enum dns_status st)
{
    if ((st == DNS_NXDOMAIN || st == DNS_NODATA) && ++c->voids > SPF_VOID_LIMIT) {
        ctx_abort(c, SPF_R_PERMERROR, "more than %d void lookups (RFC 7208 4.6.4)",
                  SPF_VOID_LIMIT);
        return false;
    }
    return true;
}

static SPF_dns_stat_t herrno_of(enum dns_status st)
{
    switch (st) {
    case DNS_OK: return NETDB_SUCCESS;
    case DNS_NXDOMAIN: return HOST_NOT_FOUND;
    case DNS_NODATA: return NO_DATA;
    case DNS_TEMPFAIL:
    case DNS_PERMFAIL:   /* a malformed answer: a DNS error, not a verdict */
    default: return TRY_AGAIN;
    }
}

static SPF_dns_rr_t *rr_status(SPF_dns_server_t *layer, const char *domain, ns_type type,
                               SPF_dns_stat_t herrno)
{
    SPF_dns_rr_t *rr = SPF_dns_rr_new_init(layer, domain, type, 0, herrno);
    if (!rr)   /* libspf2 cannot take NULL from a layer: it would abort anyway */
        log_error("spf: out of memory in the DNS layer");
    return rr;
}

/* libspf2's form of an answer (at most max records). */
static SPF_dns_rr_t *rr_from(SPF_dns_server_t *layer, const char *domain, ns_type type,
                             const struct dns_answer *a, size_t max)
{
    SPF_dns_rr_t *rr = rr_status(layer, domain, type, herrno_of(a->status));
    if (!rr || a->status != DNS_OK)
        return rr;
    uint32_t ttl = UINT32_MAX;
    for (size_t i = 0; i < a->n && i < max; i++) {
        const struct dns_record *r = &a->rec[i];
        size_t need = r->text ? strlen(r->text) + 1 : sizeof(SPF_dns_rr_data_t);
        if (SPF_dns_rr_buf_realloc(rr, (int)i, need) != SPF_E_SUCCESS) {
            rr->herrno = TRY_AGAIN;
            rr->num_rr = 0;
            return rr;
        }
        if (type == ns_t_a)
            rr->rr[i]->a = ((const struct sockaddr_in *)&r->addr)->sin_addr;
        else if (type == ns_t_aaaa)
            rr->rr[i]->aaaa = ((const struct sockaddr_in6 *)&r->addr)->sin6_addr;
        else
            memcpy(rr->rr[i]->txt, r->text ? r->text : "", need);
        rr->num_rr = (int)i + 1;
        if (r->ttl < ttl)
            ttl = r->ttl;
    }
    rr->ttl = ttl == UINT32_MAX ? 0 : ttl;
    return rr;
}

/* A name made by emit_a_mx: "<domain>.<tag>" MAGIC_SUFFIX. */
static bool magic_parse(const char *name, char *domain, size_t dlen, char *tag, size_t tlen)
{
    size_t n = strlen(name), sl = strlen(MAGIC_SUFFIX);
    if (n <= sl || strcasecmp(name + n - sl, MAGIC_SUFFIX) != 0)
        return false;
    n -= sl;
    size_t dot = n;
    while (dot > 0 && name[dot - 1] != '.')
        dot--;
    if (dot < 2 || n - dot >= tlen || dot - 1 >= dlen)
        return false;
    for (size_t i = dot; i < n; i++)
        tag[i - dot] = ascii_lower(name[i]);
    tag[n - dot] = '\0';
    if (strcmp(tag, "a4") && strcmp(tag, "a6") && strcmp(tag, "mx4") && strcmp(tag, "mx6"))
        return false;
    memcpy(domain, name, dot - 1);
    domain[dot - 1] = '\0';
    return true;
}

/* Whether `domain` (or, for mx, any of its MX hosts) has an address of
 * the family: the meaning of a "/0" a or mx term. Returns 1, 0, or -1
 * after a DNS error or a limit (the context says which). */
static int magic_match(struct spf_ctx *c, const char *domain, const char *tag)
{
    int atype = strchr(tag, '6') ? DNS_TYPE_AAAA : DNS_TYPE_A;
    bool mx = tag[0] == 'm';
    struct dns_answer a;
    enum dns_status st = ctx_query(c, domain, mx ? DNS_TYPE_MX : atype, &a);
    int match = 0;
    if (!count_void(c, st)) {
        match = -1;
    } else if (st == DNS_TEMPFAIL || st == DNS_PERMFAIL) {
        match = -1;
        ctx_abort(c, SPF_R_TEMPERROR, "DNS error looking up %s", domain);
    } else if (st == DNS_OK && !mx) {
        match = 1;
    } else if (st == DNS_OK && a.n > MX_NAMES_MAX) {
        match = -1;
        ctx_abort(c, SPF_R_PERMERROR, "more than %d MX records for %s (RFC 7208 4.6.4)",
                  MX_NAMES_MAX, domain);
    } else if (st == DNS_OK) {
        for (size_t i = 0; i < a.n && match == 0; i++) {
            struct dns_answer h;
            enum dns_status hs = ctx_query(c, a.rec[i].text, atype, &h);
            if (hs == DNS_OK)
                match = 1;
            else if (hs == DNS_TEMPFAIL || hs == DNS_PERMFAIL) {
                match = -1;
                ctx_abort(c, SPF_R_TEMPERROR, "DNS error looking up %s", a.rec[i].text);
            }
            dns_answer_free(&h);
        }
    }
    dns_answer_free(&a);
    return match;
}

static SPF_dns_rr_t *magic_lookup(struct spf_ctx *c, SPF_dns_server_t *layer,
                                  const char *domain, ns_type type, const char *real,
                                  const char *tag)
{
    int m = magic_match(c, real, tag);
    if (m < 0)
        return rr_status(layer, domain, type, TRY_AGAIN);
    if (m == 0)
        return rr_status(layer, domain, type, NO_DATA);
    /* One record: libspf2's exists only asks whether there is any. */
    struct dns_answer one = { .status = DNS_OK, .n = 1 };
    struct dns_record rec;
    memset(&rec, 0, sizeof rec);
    rec.addr.ss_family = AF_INET;
    one.rec = &rec;
    return rr_from(layer, domain, type, &one, 1);
}

static int dns_type_of(ns_type type)
{
    switch (type) {
    case ns_t_a: return DNS_TYPE_A;
    case ns_t_aaaa: return DNS_TYPE_AAAA;
    case ns_t_mx: return DNS_TYPE_MX;
    case ns_t_txt: return DNS_TYPE_TXT;
    case ns_t_ptr: return DNS_TYPE_PTR;
    default: return -1;   /* type 99 (SPF): never asked (RFC 7208 3.1) */
    }
}

static SPF_dns_rr_t *layer_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
                                  int should_cache)
{
    (void)should_cache;   /* libunbound caches by TTL */
    struct spf_ctx *c = layer->hook;
    int dtype = dns_type_of(type);
    if (!domain)
        domain = "";
    if (c->aborted)
        return rr_status(layer, domain, type, TRY_AGAIN);
    if (dtype < 0)
        return rr_status(layer, domain, type, NO_DATA);

    struct dns_answer a;
    if (c->in_exp || dtype == DNS_TYPE_TXT) {
        ctx_query(c, domain, dtype, &a);
        SPF_dns_rr_t *rr = rr_from(layer, domain, type, &a, (size_t)-1);
        dns_answer_free(&a);
        return rr;
    }
    bool addr = dtype == DNS_TYPE_A || dtype == DNS_TYPE_AAAA;
    bool term = !(addr && follow_take(c, domain));
    if (term && !count_term(c))
        return rr_status(layer, domain, type, TRY_AGAIN);

    char real[DNS_NAME_MAX + 1], tag[8];
    if (addr && magic_parse(domain, real, sizeof real, tag, sizeof tag))
        return magic_lookup(c, layer, domain, type, real, tag);

    enum dns_status st = ctx_query(c, domain, dtype, &a);
    if (term && !count_void(c, st)) {
        dns_answer_free(&a);
        return rr_status(layer, domain, type, TRY_AGAIN);
    }
    size_t max = (size_t)-1;
    if (dtype == DNS_TYPE_PTR)
        max = PTR_NAMES_MAX;   /* the excess is ignored, not a permerror */
    if (st == DNS_OK && (dtype == DNS_TYPE_MX || dtype == DNS_TYPE_PTR))
        follow_set(c, &a, max);
    SPF_dns_rr_t *rr = rr_from(layer, domain, type, &a, max);
    dns_answer_free(&a);
    return rr;
}

/* ---------------------------------------------------------------------- */
/* Records                                                                */
/* ---------------------------------------------------------------------- */

enum fetch { FETCH_OK, FETCH_NONE, FETCH_TEMP, FETCH_PERM };

/* Fetches, selects, checks, rewrites and compiles domain's record. */
static enum fetch fetch_record(struct spf_ctx *c, const char *domain, SPF_record_t **recp,
                               char *why, size_t whylen)
{
    *recp = NULL;
    struct dns_answer a;
    enum dns_status st = ctx_query(c, domain, DNS_TYPE_TXT, &a);
    if (st == DNS_TEMPFAIL || st == DNS_PERMFAIL) {
        say(why, whylen, "DNS error looking up TXT %s", domain);
        return FETCH_TEMP;
    }
    const char *rec = NULL;
    size_t found = 0;
    for (size_t i = 0; st == DNS_OK && i < a.n; i++) {
        if (a.rec[i].text && is_spf1(a.rec[i].text, strlen(a.rec[i].text))) {
            rec = a.rec[i].text;
            found++;
        }
    }
    enum fetch f = FETCH_OK;
    char *text = NULL;
    size_t cap = 0;
    if (found == 0) {
        say(why, whylen, "no SPF record at %s", domain);
        f = FETCH_NONE;
    } else if (found > 1) {
        say(why, whylen, "more than one SPF record at %s (RFC 7208 4.5)", domain);
        f = FETCH_PERM;
    } else if (spf_record_check(rec, strlen(rec), why, whylen) < 0) {
        f = FETCH_PERM;
    } else if (!(text = malloc(cap = SPF_REWRITE_MAX(strlen(rec))))) {
        say(why, whylen, "out of memory");
        f = FETCH_TEMP;
    } else if (spf_record_rewrite(rec, strlen(rec), c->family, text, cap) < 0) {
        say(why, whylen, "record too long");
        f = FETCH_PERM;
    } else {
        SPF_response_t *scratch = SPF_response_new(NULL);
        SPF_errcode_t err = scratch ? SPF_record_compile(c->server, scratch, recp, text)
                                    : SPF_E_NO_MEMORY;
        if (err != SPF_E_SUCCESS) {
            say(why, whylen, "record of %s not understood: %s", domain, SPF_strerror(err));
            f = err == SPF_E_NO_MEMORY ? FETCH_TEMP : FETCH_PERM;
            if (*recp)
                SPF_record_free(*recp);
            *recp = NULL;
        }
        if (scratch)
            SPF_response_free(scratch);
    }
    if (f == FETCH_PERM)
        log_debug("spf: %s: %s", domain, why);
    free(text);
    dns_answer_free(&a);
    return f;
}

/* include: and redirect= targets. */
static SPF_errcode_t layer_get_spf(SPF_server_t *server, SPF_request_t *req,
                                   SPF_response_t *resp, SPF_record_t **recp)
{
    (void)resp;
    struct spf_ctx *c = server->resolver->hook;
    char why[160];
    *recp = NULL;
    if (c->aborted || !count_term(c))
        return SPF_E_DNS_ERROR;
    const char *domain = req->cur_dom ? req->cur_dom : "";
    switch (fetch_record(c, domain, recp, why, sizeof why)) {
    case FETCH_OK:
        return SPF_E_SUCCESS;
    case FETCH_NONE:
        /* RFC 7208 5.2 and 6.1: a target without a record is an error of
         * the record that names it. */
        ctx_abort(c, SPF_R_PERMERROR, "%s (include or redirect target)", why);
        break;
    case FETCH_TEMP:
        ctx_abort(c, SPF_R_TEMPERROR, "%s", why);
        break;
    case FETCH_PERM:
        ctx_abort(c, SPF_R_PERMERROR, "%s", why);
        break;
    }
    return SPF_E_DNS_ERROR;
}

/* An explain-string expanded. libspf2's macro compiler stops at a space,
 * so spaces go in as "%_" (which expands to one). */
static SPF_errcode_t expand_macro(struct spf_ctx *c, const char *text, char **bufp,
                                  size_t *buflenp)
{
    SPF_macro_t *m = NULL;
    size_t n = strlen(text);
    char *spaced = malloc(2 * n + 1);
    SPF_response_t *scratch = spaced ? SPF_response_new(c->req) : NULL;
    if (!scratch) {
        free(spaced);
        return SPF_E_NO_MEMORY;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ')
            spaced[o++] = '%';
        spaced[o++] = text[i] == ' ' ? '_' : text[i];
    }
    spaced[o] = '\0';
    SPF_errcode_t err = SPF_record_compile_macro(c->server, scratch, &m, spaced);
    free(spaced);
    if (err == SPF_E_SUCCESS && m)
        err = SPF_record_expand_data(c->server, c->req, scratch,
                                     (SPF_data_t *)((char *)m + sizeof *m), m->macro_len,
                                     bufp, buflenp);
    if (m)
        SPF_macro_free(m);
    SPF_response_free(scratch);
    return err;
}

/* exp=: used only when the name has exactly one TXT record and it is a
 * valid explain-string (RFC 7208 6.2); otherwise our default. */
static SPF_errcode_t layer_get_exp(SPF_server_t *server, const char *domain, char **bufp,
                                   size_t *buflenp)
{
    struct spf_ctx *c = server->resolver->hook;
    struct dns_answer a;
    size_t tail;
    c->in_exp = true;
    SPF_errcode_t err = SPF_E_NOT_SPF;
    if (!c->aborted && now_mono() - c->started <= SPF_TIME_LIMIT
        && ctx_query(c, domain ? domain : "", DNS_TYPE_TXT, &a) == DNS_OK) {
        if (a.n == 1 && a.rec[0].text
            && macro_string_check(a.rec[0].text, strlen(a.rec[0].text), true, true, &tail,
                                  NULL, 0) == 0)
            err = expand_macro(c, a.rec[0].text, bufp, buflenp);
        dns_answer_free(&a);
    }
    if (err != SPF_E_SUCCESS)
        err = expand_macro(c, DEFAULT_EXP, bufp, buflenp);
    c->in_exp = false;
    return err;
}

/* ---------------------------------------------------------------------- */
/* check_host                                                             */
/* ---------------------------------------------------------------------- */

/* RFC 7208 4.3: a domain to check has at least two labels. */
static bool identity_domain_ok(const char *d)
{
    return name_ok(d) && strchr(d, '.') && strchr(d, '.')[1] != '\0' && d[0] != '[';
}

static int client_family(const struct sockaddr *sa, struct in_addr *v4, struct in6_addr *v6)
{
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        *v4 = ((const struct sockaddr_in *)sa)->sin_addr;
        return AF_INET;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
        memcpy(&v4->s_addr, a->s6_addr + 12, 4);
        return AF_INET;
    }
    *v6 = *a;
    return AF_INET6;
}

static void set_comment(struct spf_outcome *out, const char *ip)
{
    const char *d = out->domain[0] ? out->domain : "the sender";
    char *c = out->comment;
    size_t n = sizeof out->comment;
    switch (out->result) {
    case SPF_R_PASS:
        snprintf(c, n, "domain of %s designates %s as permitted sender", d, ip);
        break;
    case SPF_R_FAIL:
        snprintf(c, n, "domain of %s does not designate %s as permitted sender", d, ip);
        break;
    case SPF_R_SOFTFAIL:
        snprintf(c, n, "domain of transitioning %s does not designate %s as permitted sender",
                 d, ip);
        break;
    case SPF_R_NEUTRAL:
        snprintf(c, n, "%s is neither permitted nor denied by domain of %s", ip, d);
        break;
    case SPF_R_NONE:
        if (out->domain[0])
            snprintf(c, n, "domain of %s does not provide an SPF record", d);
        else
            snprintf(c, n, "no domain to check");
        break;
    case SPF_R_TEMPERROR:
    case SPF_R_PERMERROR:
        snprintf(c, n, "error in processing during lookup of %s: %s", d, out->problem);
        break;
    }
}

/* Evaluates rec (compiled) with libspf2 and reads its answer. */
static void evaluate(struct spf_ctx *c, SPF_record_t *rec, struct spf_outcome *out)
{
    SPF_response_t *resp = SPF_response_new(c->req);
    if (!resp) {
        SPF_record_free(rec);
        out->result = SPF_R_TEMPERROR;
        snprintf(out->problem, sizeof out->problem, "out of memory");
        return;
    }
    c->req->cur_dom = c->req->env_from_dp;
    resp->spf_record_exp = rec;
    SPF_record_interpret(rec, c->req, resp, 0);
    SPF_record_free(rec);
    if (c->aborted) {
        out->result = c->forced;
        copy_printable(out->problem, sizeof out->problem, c->problem);
    } else {
        out->result = spf_map_libspf2(resp->result, resp->err);
        if (out->result == SPF_R_TEMPERROR || out->result == SPF_R_PERMERROR)
            copy_printable(out->problem, sizeof out->problem, SPF_strerror(resp->err));
        if (out->result == SPF_R_FAIL)
            copy_printable(out->explanation, sizeof out->explanation,
                           SPF_response_get_explanation(resp));
    }
    SPF_response_free(resp);
}

static void check_with_libspf2(struct spf_ctx *c, const char *sender, const char *helo,
                               const char *receiver, struct spf_outcome *out)
{
    SPF_record_t *rec = NULL;
    SPF_response_t *tmp = NULL;
    char why[160] = "";
    c->server = SPF_server_new_dns(&c->layer, 0);
    if (!c->server || (receiver && receiver[0]
                       && SPF_server_set_rec_dom(c->server, receiver) != SPF_E_SUCCESS)
        || SPF_server_set_explanation(c->server, DEFAULT_EXP_MACRO, &tmp) != SPF_E_SUCCESS
        || !(c->req = SPF_request_new(c->server))
        || SPF_request_set_env_from(c->req, sender) != 0
        || (helo[0] && SPF_request_set_helo_dom(c->req, helo) != SPF_E_SUCCESS)) {
        out->result = SPF_R_TEMPERROR;
        snprintf(out->problem, sizeof out->problem, "out of memory");
        goto done;
    }
    if (c->family == AF_INET)
        SPF_request_set_ipv4(c->req, c->v4);
    else
        SPF_request_set_ipv6(c->req, c->v6);
    switch (fetch_record(c, out->domain, &rec, why, sizeof why)) {
    case FETCH_OK:
        evaluate(c, rec, out);
        break;
    case FETCH_NONE:
        out->result = SPF_R_NONE;
        break;
    case FETCH_TEMP:
        out->result = c->aborted ? c->forced : SPF_R_TEMPERROR;
        copy_printable(out->problem, sizeof out->problem, c->aborted ? c->problem : why);
        break;
    case FETCH_PERM:
        out->result = SPF_R_PERMERROR;
        copy_printable(out->problem, sizeof out->problem, why);
        break;
    }
done:
    if (tmp)
        SPF_response_free(tmp);
    if (c->req)
        SPF_request_free(c->req);
    if (c->server)
        SPF_server_free(c->server);
}

void spf_check(const struct spf_resolver *dns, const struct spf_request *rq,
               struct spf_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->result = SPF_R_NONE;
    const char *helo = rq->helo ? rq->helo : "";
    const char *from = rq->mail_from ? rq->mail_from : "";
    char sender[600];
    const char *domain;
    if (from[0] == '\0') {
        /* RFC 7208 2.4: the null reverse-path is postmaster@<HELO>. */
        out->helo_identity = true;
        domain = helo;
        snprintf(sender, sizeof sender, "postmaster@%s", helo);
    } else {
        const char *at = strrchr(from, '@');
        domain = at ? at + 1 : from;
        snprintf(sender, sizeof sender, "%s%s", at ? "" : "postmaster@", from);
    }
    copy_printable(out->domain, sizeof out->domain, domain);

    struct spf_ctx c;
    memset(&c, 0, sizeof c);
    c.family = client_family(rq->client, &c.v4, &c.v6);
    char ip[INET6_ADDRSTRLEN] = "unknown";
    if (c.family == AF_INET)
        inet_ntop(AF_INET, &c.v4, ip, sizeof ip);
    else if (c.family == AF_INET6)
        inet_ntop(AF_INET6, &c.v6, ip, sizeof ip);

    if (c.family < 0 || !dns || !dns->query) {
        out->result = SPF_R_TEMPERROR;
        snprintf(out->problem, sizeof out->problem, "no client address or resolver");
    } else if (strlen(domain) >= sizeof out->domain || strlen(sender) >= sizeof sender - 1
               || !identity_domain_ok(domain)) {
        out->result = SPF_R_NONE;   /* RFC 7208 4.3 */
        out->domain[0] = '\0';
    } else {
        c.dns = dns;
        c.started = now_mono();
        c.layer.lookup = layer_lookup;
        c.layer.get_spf = layer_get_spf;
        c.layer.get_exp = layer_get_exp;
        c.layer.name = "posthorn";
        c.layer.hook = &c;
        check_with_libspf2(&c, sender, helo, rq->receiver, out);
        follow_clear(&c);
    }
    set_comment(out, ip);
    log_debug("spf: %s from %s: %s%s%s", out->domain[0] ? out->domain : "-", ip,
              spf_result_name(out->result), out->problem[0] ? ": " : "", out->problem);
}

/* ---------------------------------------------------------------------- */
/* The filter                                                             */
/* ---------------------------------------------------------------------- */

/* A string literal, its length taken by the compiler. */
#define buf_lit(b, s) buf_append((b), (s), sizeof(s) - 1)

static enum dns_status server_query(void *arg, const char *name, int type,
                                    struct dns_answer *out)
{
    return dns_sync_query(arg, name, type, out);
}

/* RFC 5322 dot-atom text, which a header value may carry unquoted. */
static bool dot_atom(const char *s)
{
    static const char special[] = "!#$%&'*+-/=?^_`{|}~";
    bool prev_dot = true;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s == '.') {
            if (prev_dot)
                return false;
            prev_dot = true;
        } else if (ascii_is_alnum(*s) || strchr(special, *s)) {
            prev_dot = false;
        } else {
            return false;
        }
    }
    return !prev_dot;
}

/* value, or "value" with quoted-pairs, printable ASCII only. */
static int append_value(struct buf *b, const char *v)
{
    if (dot_atom(v))
        return buf_append(b, v, strlen(v));
    int rc = buf_lit(b, "\"");
    for (size_t i = 0; v[i] && i < 512; i++) {
        char ch = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
        if (ch == '"' || ch == '\\')
            rc |= buf_lit(b, "\\");
        rc |= buf_append(b, &ch, 1);
    }
    return rc | buf_lit(b, "\"");
}

/* Comment text: parentheses and backslashes quoted. */
static int append_comment(struct buf *b, const char *s)
{
    int rc = 0;
    for (; *s; s++) {
        if (*s == '(' || *s == ')' || *s == '\\')
            rc |= buf_lit(b, "\\");
        rc |= buf_append(b, s, 1);
    }
    return rc;
}

/* RFC 7208 9.1. */
static void add_received_spf(const struct filter_txn *t, const struct spf_outcome *o,
                             const char *receiver, const char *sender)
{
    struct buf *b = t->add_headers;
    if (!b)
        return;
    int rc = buf_printf(b, "Received-SPF: %s (", spf_result_name(o->result));
    rc |= append_comment(b, receiver);
    rc |= buf_lit(b, ": ");
    rc |= append_comment(b, o->comment);
    rc |= buf_lit(b, ")\r\n\tclient-ip=");
    rc |= append_value(b, t->client_ip ? t->client_ip : "unknown");
    rc |= buf_lit(b, "; envelope-from=");
    rc |= append_value(b, sender);
    rc |= buf_lit(b, "; helo=");
    rc |= append_value(b, t->helo && t->helo[0] ? t->helo : "unknown");
    rc |= buf_lit(b, ";\r\n\treceiver=");
    rc |= append_value(b, receiver);
    rc |= buf_printf(b, "; identity=mailfrom;");
    if (o->problem[0] && (o->result == SPF_R_PERMERROR || o->result == SPF_R_TEMPERROR)) {
        rc |= buf_lit(b, " problem=");
        rc |= append_value(b, o->problem);
        rc |= buf_lit(b, ";");
    }
    rc |= buf_lit(b, "\r\n");
    if (rc)
        log_warn("spf: out of memory building Received-SPF");
}

static void add_auth_result(const struct filter_txn *t, const struct spf_outcome *o)
{
    struct buf *b = t->auth_results;
    if (!b)
        return;
    int rc = buf_printf(b, "spf=%s ", spf_result_name(o->result));
    if (o->helo_identity) {
        rc |= buf_lit(b, "smtp.helo=");
        rc |= append_value(b, t->helo && t->helo[0] ? t->helo : "unknown");
    } else {
        rc |= buf_lit(b, "smtp.mailfrom=");
        rc |= append_value(b, o->domain[0] ? o->domain : "unknown");
    }
    if (rc)
        log_warn("spf: out of memory building Authentication-Results");
}

static void set_reply(struct filter_result *r, enum filter_verdict v, int code,
                      const char *enhanced, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void set_reply(struct filter_result *r, enum filter_verdict v, int code,
                      const char *enhanced, const char *fmt, ...)
{
    r->verdict = v;
    r->code = code;
    snprintf(r->enhanced, sizeof r->enhanced, "%s", enhanced);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof r->text, fmt, ap);
    va_end(ap);
}

static void set_score(struct filter_result *r, const char *reason, double score)
{
    r->verdict = FILTER_SCORE;
    r->score = score;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
}

void spf_policy(const struct spf_outcome *o, bool skip_dns_errors, struct filter_result *r)
{
    r->verdict = FILTER_ACCEPT;
    switch (o->result) {
    case SPF_R_FAIL:
        snprintf(r->reason, sizeof r->reason, "SPF_FAIL");
        set_reply(r, FILTER_REJECT, 550, "5.7.23", "SPF check failed: %.200s",
                  o->explanation[0] ? o->explanation : o->comment);
        break;
    case SPF_R_TEMPERROR:
        if (skip_dns_errors) {
            snprintf(r->reason, sizeof r->reason, "SPF_SKIPPED");
            break;
        }
        snprintf(r->reason, sizeof r->reason, "SPF_TEMPERROR");
        set_reply(r, FILTER_TEMPFAIL, 451, "4.7.24", "SPF temporary error: %.200s",
                  o->problem[0] ? o->problem : "DNS failure");
        break;
    case SPF_R_PERMERROR:
        set_score(r, "SPF_PERMERROR", 1.0);
        break;
    case SPF_R_SOFTFAIL:
        set_score(r, "SPF_SOFTFAIL", 1.0);
        break;
    case SPF_R_NONE:
    case SPF_R_NEUTRAL:
    case SPF_R_PASS:
        break;
    }
}

static void spf_mail_hook(const struct filter_txn *t, struct filter_result *r)
{
    const struct settings *st = t->srv->settings;
    const char *receiver = st && st->hostname && st->hostname[0] ? st->hostname : "localhost";
    struct spf_resolver res = { .query = server_query, .arg = t->srv->dns };
    struct spf_request rq = {
        .client = (const struct sockaddr *)t->client,
        .helo = t->helo,
        .mail_from = t->mail_from ? t->mail_from : "",
        .receiver = receiver,
    };
    struct spf_outcome o;
    spf_check(&res, &rq, &o);
    char sender[600];
    if (rq.mail_from[0])
        snprintf(sender, sizeof sender, "%s", rq.mail_from);
    else
        snprintf(sender, sizeof sender, "postmaster@%s", t->helo ? t->helo : "");
    add_received_spf(t, &o, receiver, sender);
    add_auth_result(t, &o);
    bool skip = st && st->spf_dns_error == SPF_DNS_ERROR_SKIP;
    spf_policy(&o, skip, r);
    if (o.result == SPF_R_TEMPERROR && skip)
        log_info("spf: %s from %s: temperror (%s), skipped (SPF_DNS_ERROR=skip)",
                 o.domain, t->client_ip ? t->client_ip : "?", o.problem);
}

static bool spf_enabled(const struct settings *st)
{
    return st->enable_policyd_spf;
}

/* libspf2 writes its messages to stdout and stderr; ours go to the log. */
static void spf_log_warning(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    log_debug("spf: libspf2: %s", msg);
}

static void spf_log_debug(const char *file, int line, const char *msg)
{
    (void)file;
    (void)line;
    log_trace("spf: libspf2: %s", msg);
}

void spf_init(void)
{
    SPF_warning_handler = spf_log_warning;
    SPF_info_handler = spf_log_debug;
    SPF_debug_handler = spf_log_debug;
}

static int spf_start(struct server *srv)
{
    (void)srv;
    spf_init();
    return 0;
}

const struct filter_ops spf_filter = {
    .name = "spf",
    .enabled = spf_enabled,
    .start = spf_start,
    .stop = NULL,
    .hook = { [FILTER_MAIL] = spf_mail_hook },
    .for_submission = false,
};
