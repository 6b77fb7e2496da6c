/* The Bayesian classifier: tokenizer, chi-square combining and the SQLite
 * token store. See bayes.h. */
#include "bayes.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "buf.h"
#include "db.h"
#include "log.h"
#include "util.h"

#define WORD_MIN 3
#define WORD_MAX 12
#define HOST_MAX 64
#define ADDR_MAX 60
#define MAILER_MAX 40
#define HDR_NAME_MAX 40
#define DIGEST_BODY_MAX (1024 * 1024)   /* body octets that identify a message */

/* --- emitting tokens ---------------------------------------------------------------- */

struct tok_ctx {
    bayes_token_fn fn;
    void *arg;
    long count;
};

static bool full(const struct tok_ctx *c)
{
    return c->count >= BAYES_MAX_TOKENS;
}

static char lower(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
}

/* prefix + word (lowercased), truncated to BAYES_TOKEN_MAX. */
static void emit2(struct tok_ctx *c, const char *prefix, const char *word, size_t wlen)
{
    if (full(c))
        return;
    char tok[BAYES_TOKEN_MAX];
    size_t n = 0;
    for (; prefix[n] && n < sizeof tok; n++)
        tok[n] = prefix[n];
    for (size_t i = 0; i < wlen && n < sizeof tok; i++)
        tok[n++] = lower(word[i]);
    c->fn(tok, n, c->arg);
    c->count++;
}

static void emit3(struct tok_ctx *c, const char *p1, const char *p2, const char *word,
                  size_t wlen)
{
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s%s", p1, p2);
    emit2(c, prefix, word, wlen);
}

/* --- words ------------------------------------------------------------------------ */

static bool is_space(unsigned char ch)
{
    return ch <= ' ' || ch == 0x7f;
}

/* Punctuation trimmed from both ends of a word; '!', '?', '$' and '%'
 * stay: "free!!" and "$100" say more than "free" and "100". */
static bool trim_char(char ch)
{
    return strchr("\"'()[]<>{},.;:*`|", ch) != NULL && ch != '\0';
}

static bool has(const char *s, size_t len, const char *needle)
{
    return memmem(s, len, needle, strlen(needle)) != NULL;
}

static bool is_host_char(char ch)
{
    unsigned char u = (unsigned char)ch;
    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || u >= 0x80;
}

/* "url:<host>" and "url:<last two labels>" for the host starting at s. */
static void emit_host(struct tok_ctx *c, const char *prefix, const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && n < HOST_MAX && is_host_char(s[n]))
        n++;
    while (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0)
        return;
    emit3(c, prefix, "url:", s, n);
    size_t dots = 0, cut = 0;
    for (size_t i = n; i-- > 0;) {
        if (s[i] == '.' && ++dots == 2) {
            cut = i + 1;
            break;
        }
    }
    if (cut)
        emit3(c, prefix, "url:", s + cut, n - cut);
}

/* Every URL in s[0..len): after "://" or a "www." that starts a word. */
static void scan_urls(struct tok_ctx *c, const char *prefix, const char *s, size_t len)
{
    for (size_t i = 0; i + 3 < len && !full(c); i++) {
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            const char *h = s + i + 3;
            size_t hl = len - i - 3;
            /* user:password@host */
            for (size_t k = 0; k < hl && k < 128 && !is_space((unsigned char)h[k]) &&
                 h[k] != '/'; k++) {
                if (h[k] == '@') {
                    h += k + 1;
                    hl -= k + 1;
                    break;
                }
            }
            emit_host(c, prefix, h, hl);
            i += 2;
        } else if ((i == 0 || !is_host_char(s[i - 1]) || s[i - 1] == '.') && i + 4 < len &&
                   (s[i] == 'w' || s[i] == 'W') && strncasecmp(s + i, "www.", 4) == 0) {
            emit_host(c, prefix, s + i, len - i);
            i += 3;
        }
    }
}

/* One word (already split on white space). */
static void word(struct tok_ctx *c, const char *prefix, const char *w, size_t n)
{
    while (n > 0 && trim_char(*w)) {
        w++;
        n--;
    }
    while (n > 0 && trim_char(w[n - 1]))
        n--;
    if (n < WORD_MIN)
        return;
    if (has(w, n, "://") || (n > 4 && strncasecmp(w, "www.", 4) == 0)) {
        scan_urls(c, prefix, w, n);
        return;
    }
    const char *at = memchr(w, '@', n);
    if (at && at > w && at + 1 < w + n) {
        size_t dl = (size_t)(w + n - at - 1);
        emit3(c, prefix, "email:", at + 1, dl < HOST_MAX ? dl : HOST_MAX);
        if (*prefix && n <= ADDR_MAX)
            emit2(c, prefix, w, n);
        return;
    }
    if (n <= WORD_MAX) {
        emit2(c, prefix, w, n);
        return;
    }
    char skip[32];
    snprintf(skip, sizeof skip, "skip:%c %zu", lower(w[0]), n / 10 * 10);
    emit2(c, prefix, skip, strlen(skip));
}

static void words(struct tok_ctx *c, const char *prefix, const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && !full(c)) {
        while (i < len && is_space((unsigned char)s[i]))
            i++;
        size_t start = i;
        while (i < len && !is_space((unsigned char)s[i]))
            i++;
        if (i > start)
            word(c, prefix, s + start, i - start);
    }
}

/* --- HTML ------------------------------------------------------------------------------ */

/* Appends the text of html to out: tags become spaces (URLs in their
 * attributes are tokens; tag names are not: they made commercial HTML
 * newsletters look like spam in the benchmark), comments and the contents of
 * style and script elements go, a few entities are decoded. */
static int html_text(struct tok_ctx *c, const char *s, size_t len, struct buf *out)
{
    size_t i = 0;
    while (i < len) {
        if (s[i] == '<') {
            if (i + 4 <= len && memcmp(s + i, "<!--", 4) == 0) {
                const char *e = memmem(s + i + 4, len - i - 4, "-->", 3);
                i = e ? (size_t)(e - s) + 3 : len;
                continue;
            }
            const char *gt = memchr(s + i, '>', len - i);
            size_t end = gt ? (size_t)(gt - s) + 1 : len;
            size_t k = i + 1;
            if (k < end && s[k] == '/')
                k++;
            size_t name = k;
            while (k < end && ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z') ||
                               (s[k] >= '0' && s[k] <= '9')))
                k++;
            scan_urls(c, "", s + k, end - k);
            bool closing = s[i + 1] == '/';
            i = end;
            if (!closing && ((k - name == 5 && strncasecmp(s + name, "style", 5) == 0) ||
                             (k - name == 6 && strncasecmp(s + name, "script", 6) == 0))) {
                const char *e = memmem(s + i, len - i, "</", 2);
                while (e && strncasecmp(e + 2, s + name, k - name) != 0)
                    e = memmem(e + 2, len - (size_t)(e + 2 - s), "</", 2);
                i = e ? (size_t)(e - s) : len;
            }
            if (buf_append(out, " ", 1) < 0)
                return -1;
            continue;
        }
        if (s[i] == '&') {
            static const struct { const char *ent; const char *text; } ents[] = {
                { "&nbsp;", " " }, { "&amp;", "&" }, { "&lt;", "<" }, { "&gt;", ">" },
                { "&quot;", "\"" },
            };
            size_t e = 0;
            for (; e < sizeof ents / sizeof *ents; e++) {
                size_t el = strlen(ents[e].ent);
                if (len - i >= el && strncasecmp(s + i, ents[e].ent, el) == 0) {
                    if (buf_append(out, ents[e].text, strlen(ents[e].text)) < 0)
                        return -1;
                    i += el;
                    break;
                }
            }
            if (e < sizeof ents / sizeof *ents)
                continue;
        }
        size_t run = i + 1;
        while (run < len && s[run] != '<' && s[run] != '&')
            run++;
        if (buf_append(out, s + i, run - i) < 0)
            return -1;
        i = run;
    }
    return 0;
}

/* --- headers ------------------------------------------------------------------------ */

static bool name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* Fields a delivery adds or a mail program rewrites: not tokens. */
static bool skipped_field(const char *name, size_t n)
{
    static const char *const names[] = {
        "return-path", "delivered-to", "x-original-to",
        "authentication-results", "received-spf", "status", "x-status", "x-keywords",
        "x-uid", "content-length", "lines",
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (name_is(name, n, names[i]))
            return true;
    return (n >= 7 && strncasecmp(name, "x-spam-", 7) == 0) ||
           (n >= 8 && strncasecmp(name, "x-virus-", 8) == 0);
}

/* Tokens of one header field's value. */
static int field(struct tok_ctx *c, const char *name, size_t nlen, const char *v, size_t vlen)
{
    static const char *const addr_fields[] = {
        "subject", "from", "to", "cc", "reply-to", "sender",
    };
    for (size_t i = 0; i < sizeof addr_fields / sizeof *addr_fields; i++) {
        if (!name_is(name, nlen, addr_fields[i]))
            continue;
        struct buf d = BUF_INIT;
        if (mime_decode_header(v, vlen, &d) < 0) {
            buf_free(&d);
            return -1;
        }
        char prefix[16];
        snprintf(prefix, sizeof prefix, "%s:", addr_fields[i]);
        words(c, prefix, d.data ? d.data : "", d.len);
        buf_free(&d);
        return 0;
    }
    if (name_is(name, nlen, "x-mailer") || name_is(name, nlen, "user-agent")) {
        struct buf d = BUF_INIT;
        if (mime_unfold(v, vlen, &d) < 0) {
            buf_free(&d);
            return -1;
        }
        emit2(c, "xm:", d.data ? d.data : "", d.len < MAILER_MAX ? d.len : MAILER_MAX);
        buf_free(&d);
    } else if (name_is(name, nlen, "received")) {
        /* The relays' names and addresses: "received:[192.0.2.1]". */
        words(c, "received:", v, vlen);
    } else if (name_is(name, nlen, "message-id")) {
        const char *at = memchr(v, '@', vlen);
        if (at) {
            size_t n = 0;
            while (at + 1 + n < v + vlen && n < HOST_MAX && is_host_char(at[1 + n]))
                n++;
            emit2(c, "mid:", at + 1, n);
        } else {
            emit2(c, "mid:", "none", 4);
        }
    }
    return 0;
}

/* Every field of a header section: its name and, for some, its value. */
static int header_tokens(struct tok_ctx *c, const char *h, size_t len)
{
    size_t i = 0;
    while (i < len && !full(c)) {
        size_t start = i;
        /* The field runs to the next line that does not start with white space. */
        for (;;) {
            const char *lf = memchr(h + i, '\n', len - i);
            i = lf ? (size_t)(lf - h) + 1 : len;
            if (i >= len || (h[i] != ' ' && h[i] != '\t'))
                break;
        }
        const char *colon = memchr(h + start, ':', i - start);
        if (!colon)
            continue;
        size_t nlen = (size_t)(colon - h) - start;
        const char *name = h + start;
        while (nlen > 0 && (name[nlen - 1] == ' ' || name[nlen - 1] == '\t'))
            nlen--;
        if (nlen == 0 || nlen > HDR_NAME_MAX || memchr(name, ' ', nlen) ||
            skipped_field(name, nlen))
            continue;
        emit2(c, "hdr:", name, nlen);
        const char *v = colon + 1;
        if (field(c, name, nlen, v, (size_t)(h + i - v)) < 0)
            return -1;
    }
    return 0;
}

/* --- parts -------------------------------------------------------------------------------- */

static void part_type_tokens(struct tok_ctx *c, const struct mime_part *p)
{
    const char *type, *subtype;
    bool dflt;
    mime_part_type(p, &type, &subtype, &dflt);
    char ct[64];
    int n = snprintf(ct, sizeof ct, "%s/%s", type, subtype);
    if (n > 0 && (size_t)n < sizeof ct)
        emit2(c, "ct:", ct, (size_t)n);
    const struct mime_param *cs = mime_param_find(p->type_params, "charset");
    if (cs && cs->value_len > 0 && cs->value_len < 32)
        emit2(c, "charset:", cs->value, cs->value_len);
    if (p->content_transfer_encoding.p) {
        struct buf d = BUF_INIT;
        if (mime_unfold(p->content_transfer_encoding.p, p->content_transfer_encoding.len,
                        &d) == 0 && d.len > 0 && d.len < 32)
            emit2(c, "cte:", d.data, d.len);
        buf_free(&d);
    }
    const struct mime_param *fn = mime_param_find(p->disp_params, "filename");
    if (!fn)
        fn = mime_param_find(p->type_params, "name");
    if (fn && fn->value_len > 0) {
        const char *dot = NULL;
        for (size_t i = 0; i < fn->value_len; i++)
            if (fn->value[i] == '.')
                dot = fn->value + i;
        if (dot && (size_t)(fn->value + fn->value_len - dot) <= 10)
            emit2(c, "fname:", dot + 1, (size_t)(fn->value + fn->value_len - dot - 1));
    }
}

/* The decoded UTF-8 text of a text leaf, at most BAYES_TEXT_MAX octets of
 * its encoded body. */
static int part_text(const char *msg, const struct mime_part *p, struct buf *out)
{
    struct mime_part cut = *p;
    if (cut.body_size > BAYES_TEXT_MAX)
        cut.body_size = BAYES_TEXT_MAX;
    struct buf raw = BUF_INIT;
    if (mime_decode_body(msg, &cut, &raw) < 0) {
        buf_free(&raw);
        return -1;
    }
    const struct mime_param *cs = mime_param_find(p->type_params, "charset");
    int rc = 1;
    if (cs && cs->value && strcasecmp(cs->value, "us-ascii") != 0 &&
        strcasecmp(cs->value, "utf-8") != 0)
        rc = mime_charset_to_utf8(cs->value, raw.data ? raw.data : "", raw.len, out);
    if (rc == 1)
        rc = buf_append(out, raw.data ? raw.data : "", raw.len);
    buf_free(&raw);
    return rc < 0 ? -1 : 0;
}

static int part_tokens(struct tok_ctx *c, const char *msg, const struct mime_part *p)
{
    if (full(c))
        return 0;
    if (p->depth > 0 || p->kind != MIME_LEAF)
        part_type_tokens(c, p);
    if (p->kind == MIME_MESSAGE && p->children &&
        header_tokens(c, msg + p->children->hdr_off, p->children->hdr_size) < 0)
        return -1;
    if (p->kind != MIME_LEAF) {
        for (const struct mime_part *ch = p->children; ch; ch = ch->next)
            if (part_tokens(c, msg, ch) < 0)
                return -1;
        return 0;
    }
    if (p->depth == 0)
        part_type_tokens(c, p);
    bool html = mime_part_is(p, "text", "html");
    if (!html && !mime_part_is(p, "text", "plain"))
        return 0;
    const struct mime_param *fn = mime_param_find(p->disp_params, "filename");
    if (fn && p->disposition && strcasecmp(p->disposition, "attachment") == 0)
        return 0;
    struct buf text = BUF_INIT, stripped = BUF_INIT;
    int rc = part_text(msg, p, &text);
    if (rc == 0 && html) {
        rc = html_text(c, text.data ? text.data : "", text.len, &stripped);
        if (rc == 0)
            words(c, "", stripped.data ? stripped.data : "", stripped.len);
    } else if (rc == 0) {
        words(c, "", text.data ? text.data : "", text.len);
    }
    buf_free(&text);
    buf_free(&stripped);
    return rc;
}

long bayes_tokenize(const char *msg, size_t len, const struct mime_part *mime,
                    bayes_token_fn fn, void *arg)
{
    struct mime_part *own = NULL;
    if (!mime) {
        own = mime_parse(msg, len);
        if (!own)
            return -1;
        mime = own;
    }
    struct tok_ctx c = { .fn = fn, .arg = arg };
    int rc = header_tokens(&c, msg + mime->hdr_off, mime->hdr_size);
    if (rc == 0)
        rc = part_tokens(&c, msg, mime);
    mime_free(own);
    return rc < 0 ? -1 : c.count;
}

uint64_t bayes_hash(const char *tok, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)tok[i];
        h *= 1099511628211ULL;
    }
    return h;
}

struct hash_list {
    uint64_t h[BAYES_MAX_TOKENS];
    size_t n;
};

static void collect(const char *tok, size_t len, void *arg)
{
    struct hash_list *l = arg;
    if (l->n < BAYES_MAX_TOKENS)
        l->h[l->n++] = bayes_hash(tok, len);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int bayes_tokens_get(const char *msg, size_t len, const struct mime_part *mime,
                     struct bayes_tokens *out)
{
    out->h = NULL;
    out->n = 0;
    struct hash_list *l = malloc(sizeof *l);
    if (!l)
        return -1;
    l->n = 0;
    if (bayes_tokenize(msg, len, mime, collect, l) < 0) {
        free(l);
        return -1;
    }
    qsort(l->h, l->n, sizeof *l->h, cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++)
        if (k == 0 || l->h[i] != l->h[k - 1])
            l->h[k++] = l->h[i];
    out->h = malloc((k ? k : 1) * sizeof *out->h);
    if (!out->h) {
        free(l);
        return -1;
    }
    memcpy(out->h, l->h, k * sizeof *out->h);
    out->n = k;
    free(l);
    return 0;
}

void bayes_tokens_free(struct bayes_tokens *t)
{
    free(t->h);
    t->h = NULL;
    t->n = 0;
}

void bayes_digest(const char *msg, size_t len, const struct mime_part *mime,
                  unsigned char out[BAYES_DIGEST_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    memset(out, 0, BAYES_DIGEST_LEN);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return;
    }
    size_t hdr_len = mime ? mime->hdr_size : len;
    struct mime_str id = mime_header_find(msg, hdr_len, "Message-ID");
    if (id.p) {
        /* The value without folding or surrounding white space. */
        size_t a = 0, b = id.len;
        while (a < b && is_space((unsigned char)id.p[a]))
            a++;
        while (b > a && is_space((unsigned char)id.p[b - 1]))
            b--;
        EVP_DigestUpdate(ctx, id.p + a, b - a);
    }
    EVP_DigestUpdate(ctx, "", 1);
    size_t off = mime ? mime->body_off : len;
    size_t end = len - off > DIGEST_BODY_MAX ? off + DIGEST_BODY_MAX : len;
    /* CR-free runs: LF and CRLF copies digest alike. */
    size_t i = off;
    while (i < end) {
        const char *cr = memchr(msg + i, '\r', end - i);
        size_t stop = cr ? (size_t)(cr - msg) : end;
        EVP_DigestUpdate(ctx, msg + i, stop - i);
        i = stop + 1;
    }
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= BAYES_DIGEST_LEN)
        memcpy(out, md, BAYES_DIGEST_LEN);
    EVP_MD_CTX_free(ctx);
}

/* --- combining ------------------------------------------------------------------------ */

double bayes_token_prob(uint64_t spam, uint64_t ham, uint64_t nspam, uint64_t nham)
{
    const double s = 1.0, x = 0.5;
    double sr = nspam ? (double)spam / (double)nspam : 0.0;
    double hr = nham ? (double)ham / (double)nham : 0.0;
    if (sr + hr <= 0.0)
        return x;
    double p = sr / (sr + hr);
    double n = (double)(spam + ham);
    return (s * x + n * p) / (s + n);
}

double bayes_chi2q(double x2, unsigned v)
{
    double m = x2 / 2.0;
    double term = exp(-m), sum = term;
    for (unsigned i = 1; i < v / 2; i++) {
        term *= m / i;
        sum += term;
    }
    return sum < 1.0 ? sum : 1.0;
}

static int by_strength(const void *a, const void *b)
{
    double x = fabs(*(const double *)a - 0.5), y = fabs(*(const double *)b - 0.5);
    return x > y ? -1 : x < y;
}

size_t bayes_select(double *f, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(f[i] - 0.5) > BAYES_MIN_STRENGTH)
            f[k++] = f[i];
    qsort(f, k, sizeof *f, by_strength);
    return k < BAYES_MAX_CLUES ? k : BAYES_MAX_CLUES;
}

double bayes_combine(const double *f, size_t n)
{
    if (n == 0)
        return 0.5;
    double lnh = 0.0, lns = 0.0;
    for (size_t i = 0; i < n; i++) {
        /* f is never 0 or 1 with s > 0; the clamp guards log() anyway. */
        double p = f[i] < 1e-12 ? 1e-12 : f[i] > 1.0 - 1e-12 ? 1.0 - 1e-12 : f[i];
        lnh += log(p);
        lns += log(1.0 - p);
    }
    double h = 1.0 - bayes_chi2q(-2.0 * lnh, 2 * (unsigned)n);
    double s = 1.0 - bayes_chi2q(-2.0 * lns, 2 * (unsigned)n);
    return (s - h + 1.0) / 2.0;
}

static const struct bayes_band bands[] = {
    { "BAYES_999", 0.999, 6.5 },
    { "BAYES_99",  0.99,  5.0 },
    { "BAYES_95",  0.95,  3.0 },
    { "BAYES_80",  0.80,  2.0 },
    { "BAYES_60",  0.60,  1.5 },
    { "BAYES_50",  0.40,  0.8 },
    { "BAYES_40",  0.20, -0.001 },
    { "BAYES_20",  0.05, -0.001 },
    { "BAYES_05",  0.01, -0.5 },
    { "BAYES_00",  0.0,  -1.9 },
};

const struct bayes_band *bayes_band_of(double prob)
{
    size_t n = sizeof bands / sizeof *bands;
    for (size_t i = 0; i < n - 1; i++)
        if (prob >= bands[i].min)
            return &bands[i];
    return &bands[n - 1];
}

/* --- the store ------------------------------------------------------------------------- */

static const char *const migrations[] = {
    /* 1: token counts, totals, learned messages. */
    "CREATE TABLE tokens(h INTEGER PRIMARY KEY, spam INTEGER NOT NULL,"
    " ham INTEGER NOT NULL, seen INTEGER NOT NULL);"
    "CREATE TABLE totals(id INTEGER PRIMARY KEY CHECK(id = 1), spam INTEGER NOT NULL,"
    " ham INTEGER NOT NULL);"
    "INSERT INTO totals VALUES(1, 0, 0);"
    "CREATE TABLE learned(digest BLOB PRIMARY KEY, class INTEGER NOT NULL,"
    " at INTEGER NOT NULL) WITHOUT ROWID;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof *migrations))

/* A reader connection with its prepared lookups. */
struct reader {
    struct reader *next;
    sqlite3 *db;
    sqlite3_stmt *token, *totals;
};

struct bayes {
    char *path;
    sqlite3 *w;                  /* the writer */
    pthread_mutex_t wlock;
    pthread_mutex_t plock;       /* the free readers */
    struct reader *free_readers;
};

static int open_conn(const char *path, sqlite3 **db, char *err, size_t errlen)
{
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        set_err(err, errlen, "cannot open %s: %s", path, *db ? sqlite3_errmsg(*db) : "out of memory");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, 10000);
    return 0;
}

struct bayes *bayes_open(const char *path, char *err, size_t errlen)
{
    struct bayes *b = calloc(1, sizeof *b);
    if (!b || !(b->path = strdup(path))) {
        free(b);
        set_err(err, errlen, "bayes.db: out of memory");
        return NULL;
    }
    pthread_mutex_init(&b->wlock, NULL);
    pthread_mutex_init(&b->plock, NULL);
    /* Losing the last few learned messages in a power cut costs little:
     * NORMAL is enough in WAL mode. */
    if (open_conn(path, &b->w, err, errlen) < 0 ||
        db_set_wal(b->w, "bayes.db", err, errlen) < 0 ||
        db_exec(b->w, "bayes.db", "PRAGMA synchronous = NORMAL;", err, errlen) < 0 ||
        db_migrate(b->w, "bayes.db", migrations, SCHEMA_VERSION, err, errlen) < 0) {
        bayes_close(b);
        return NULL;
    }
    return b;
}

static void reader_free(struct reader *r)
{
    sqlite3_finalize(r->token);
    sqlite3_finalize(r->totals);
    sqlite3_close(r->db);
    free(r);
}

void bayes_close(struct bayes *b)
{
    if (!b)
        return;
    while (b->free_readers) {
        struct reader *r = b->free_readers;
        b->free_readers = r->next;
        reader_free(r);
    }
    sqlite3_close(b->w);
    pthread_mutex_destroy(&b->wlock);
    pthread_mutex_destroy(&b->plock);
    free(b->path);
    free(b);
}

static struct reader *reader_get(struct bayes *b)
{
    pthread_mutex_lock(&b->plock);
    struct reader *r = b->free_readers;
    if (r)
        b->free_readers = r->next;
    pthread_mutex_unlock(&b->plock);
    if (r)
        return r;
    char err[256];
    r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (open_conn(b->path, &r->db, err, sizeof err) < 0 ||
        sqlite3_prepare_v2(r->db, "SELECT spam, ham FROM tokens WHERE h = ?", -1, &r->token,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(r->db, "SELECT spam, ham FROM totals WHERE id = 1", -1, &r->totals,
                           NULL) != SQLITE_OK) {
        log_error("bayes: %s", r->db ? sqlite3_errmsg(r->db) : err);
        reader_free(r);
        return NULL;
    }
    return r;
}

static void reader_put(struct bayes *b, struct reader *r)
{
    pthread_mutex_lock(&b->plock);
    r->next = b->free_readers;
    b->free_readers = r;
    pthread_mutex_unlock(&b->plock);
}

static int read_totals(struct reader *r, struct bayes_totals *out)
{
    int rc = sqlite3_step(r->totals);
    if (rc == SQLITE_ROW) {
        out->spam = (uint64_t)sqlite3_column_int64(r->totals, 0);
        out->ham = (uint64_t)sqlite3_column_int64(r->totals, 1);
    }
    sqlite3_reset(r->totals);
    return rc == SQLITE_ROW ? 0 : -1;
}

int bayes_totals(struct bayes *b, struct bayes_totals *out)
{
    memset(out, 0, sizeof *out);
    struct reader *r = reader_get(b);
    if (!r)
        return -1;
    int rc = read_totals(r, out);
    if (rc < 0)
        log_error("bayes: %s", sqlite3_errmsg(r->db));
    reader_put(b, r);
    return rc;
}

int bayes_totals_full(struct bayes *b, struct bayes_totals *out)
{
    if (bayes_totals(b, out) < 0)
        return -1;
    int n = 0;
    pthread_mutex_lock(&b->wlock);
    int rc = db_query_int(b->w, "SELECT count(*) FROM tokens", &n);
    pthread_mutex_unlock(&b->wlock);
    out->tokens = (uint64_t)n;
    return rc;
}

int bayes_classify(struct bayes *b, const char *msg, size_t len, const struct mime_part *mime,
                   struct bayes_score *out)
{
    memset(out, 0, sizeof *out);
    out->prob = 0.5;
    struct bayes_tokens t;
    if (bayes_tokens_get(msg, len, mime, &t) < 0)
        return -1;
    double *f = malloc((t.n ? t.n : 1) * sizeof *f);
    struct reader *r = f ? reader_get(b) : NULL;
    if (!r) {
        free(f);
        bayes_tokens_free(&t);
        return -1;
    }
    /* One read transaction: the counts and totals of one snapshot. */
    struct bayes_totals tot;
    int rc = sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rc == 0)
        rc = read_totals(r, &tot);
    for (size_t i = 0; rc == 0 && i < t.n; i++) {
        sqlite3_bind_int64(r->token, 1, (sqlite3_int64)t.h[i]);
        int s = sqlite3_step(r->token);
        if (s == SQLITE_ROW)
            f[i] = bayes_token_prob((uint64_t)sqlite3_column_int64(r->token, 0),
                                    (uint64_t)sqlite3_column_int64(r->token, 1),
                                    tot.spam, tot.ham);
        else if (s == SQLITE_DONE)
            f[i] = 0.5;
        else
            rc = -1;
        sqlite3_reset(r->token);
    }
    if (rc < 0)
        log_error("bayes: %s", sqlite3_errmsg(r->db));
    sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
    reader_put(b, r);
    if (rc == 0) {
        out->ntokens = t.n;
        out->nclues = bayes_select(f, t.n);
        out->prob = bayes_combine(f, out->nclues);
    }
    free(f);
    bayes_tokens_free(&t);
    return rc;
}

/* --- learning ------------------------------------------------------------------------------ */

/* Adds ds and dh (each -1, 0 or 1) to every token's counts, at time now;
 * rows that reach 0 and 0 are removed. */
static int apply_tokens(sqlite3 *db, const struct bayes_tokens *t, int ds, int dh, time_t now)
{
    sqlite3_stmt *up = NULL, *del = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "INSERT INTO tokens(h, spam, ham, seen)"
                           " VALUES(?1, max(?2, 0), max(?3, 0), ?4) ON CONFLICT(h) DO UPDATE"
                           " SET spam = max(spam + ?2, 0), ham = max(ham + ?3, 0), seen = ?4",
                           -1, &up, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "DELETE FROM tokens WHERE h = ? AND spam = 0 AND ham = 0", -1,
                           &del, NULL) != SQLITE_OK)
        goto out;
    for (size_t i = 0; i < t->n; i++) {
        sqlite3_bind_int64(up, 1, (sqlite3_int64)t->h[i]);
        sqlite3_bind_int(up, 2, ds);
        sqlite3_bind_int(up, 3, dh);
        sqlite3_bind_int64(up, 4, (sqlite3_int64)now);
        int s = sqlite3_step(up);
        sqlite3_reset(up);
        if (s != SQLITE_DONE)
            goto out;
        if (ds < 0 || dh < 0) {
            sqlite3_bind_int64(del, 1, (sqlite3_int64)t->h[i]);
            s = sqlite3_step(del);
            sqlite3_reset(del);
            if (s != SQLITE_DONE)
                goto out;
        }
    }
    rc = 0;
out:
    sqlite3_finalize(up);
    sqlite3_finalize(del);
    return rc;
}

/* Runs one statement binding the digest (?1) and ints ?2, ?3. Returns the
 * first column of a row, -1 when no row, -2 on error. */
static long long stmt_digest(sqlite3 *db, const char *sql, const unsigned char *digest,
                             long long a, long long b)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -2;
    sqlite3_bind_blob(st, 1, digest, BAYES_DIGEST_LEN, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, a);
    if (sqlite3_bind_parameter_count(st) >= 3)
        sqlite3_bind_int64(st, 3, b);
    int rc = sqlite3_step(st);
    long long out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : rc == SQLITE_DONE ? -1 : -2;
    sqlite3_finalize(st);
    return out;
}

static int totals_add(sqlite3 *db, int ds, int dh)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "UPDATE totals SET spam = max(spam + ?, 0),"
                           " ham = max(ham + ?, 0) WHERE id = 1", -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int(st, 1, ds);
    sqlite3_bind_int(st, 2, dh);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

/* The learning step inside the transaction. */
static enum bayes_learn_result learn_locked(sqlite3 *db, const unsigned char *digest,
                                            const struct bayes_tokens *t, int cls, time_t now)
{
    long long was = stmt_digest(db, "SELECT class FROM learned WHERE digest = ?1", digest, 0, 0);
    if (was == -2)
        return BAYES_LEARN_ERROR;
    if (was == cls)
        return BAYES_ALREADY;
    int ds = cls == BAYES_SPAM ? 1 : 0, dh = cls == BAYES_HAM ? 1 : 0;
    if (was >= 0) {
        /* Learned the other way: its counts move. */
        ds = cls == BAYES_SPAM ? 1 : -1;
        dh = -ds;
    }
    if (apply_tokens(db, t, ds, dh, now) < 0 || totals_add(db, ds, dh) < 0 ||
        stmt_digest(db, "INSERT INTO learned(digest, class, at) VALUES(?1, ?2, ?3)"
                    " ON CONFLICT(digest) DO UPDATE SET class = ?2, at = ?3",
                    digest, cls, (long long)now) == -2)
        return BAYES_LEARN_ERROR;
    return was >= 0 ? BAYES_RELEARNED : BAYES_LEARNED;
}

static int begin(sqlite3 *db)
{
    return sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static int finish(sqlite3 *db, bool ok)
{
    if (sqlite3_exec(db, ok ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK)
        return ok ? 0 : -1;
    if (ok)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Tokens and digest of a message (parsing it once when mime is NULL). */
static int message_keys(const char *msg, size_t len, const struct mime_part *mime,
                        struct bayes_tokens *t, unsigned char *digest)
{
    struct mime_part *own = NULL;
    if (!mime && !(mime = own = mime_parse(msg, len)))
        return -1;
    bayes_digest(msg, len, mime, digest);
    int rc = t ? bayes_tokens_get(msg, len, mime, t) : 0;
    mime_free(own);
    return rc;
}

enum bayes_learn_result bayes_learn(struct bayes *b, const char *msg, size_t len,
                                    const struct mime_part *mime, enum bayes_class cls,
                                    time_t now)
{
    struct bayes_tokens t;
    unsigned char digest[BAYES_DIGEST_LEN];
    if (message_keys(msg, len, mime, &t, digest) < 0) {
        log_error("bayes: out of memory");
        return BAYES_LEARN_ERROR;
    }
    pthread_mutex_lock(&b->wlock);
    enum bayes_learn_result r = BAYES_LEARN_ERROR;
    if (begin(b->w) == 0) {
        r = learn_locked(b->w, digest, &t, (int)cls, now);
        if (finish(b->w, r != BAYES_LEARN_ERROR) < 0)
            r = BAYES_LEARN_ERROR;
    }
    if (r == BAYES_LEARN_ERROR)
        log_error("bayes: cannot learn a message: %s", sqlite3_errmsg(b->w));
    pthread_mutex_unlock(&b->wlock);
    bayes_tokens_free(&t);
    return r;
}

int bayes_forget(struct bayes *b, const char *msg, size_t len)
{
    struct bayes_tokens t;
    unsigned char digest[BAYES_DIGEST_LEN];
    if (message_keys(msg, len, NULL, &t, digest) < 0)
        return -1;
    pthread_mutex_lock(&b->wlock);
    int rc = -1;
    if (begin(b->w) == 0) {
        long long was = stmt_digest(b->w, "SELECT class FROM learned WHERE digest = ?1",
                                    digest, 0, 0);
        bool ok = was != -2;
        if (was >= 0) {
            int ds = was == BAYES_SPAM ? -1 : 0, dh = was == BAYES_HAM ? -1 : 0;
            ok = apply_tokens(b->w, &t, ds, dh, time(NULL)) == 0 &&
                 totals_add(b->w, ds, dh) == 0 &&
                 stmt_digest(b->w, "DELETE FROM learned WHERE digest = ?1", digest, 0, 0) != -2;
        }
        if (finish(b->w, ok) == 0)
            rc = was >= 0 ? 1 : 0;
    }
    if (rc < 0)
        log_error("bayes: cannot forget a message: %s", sqlite3_errmsg(b->w));
    pthread_mutex_unlock(&b->wlock);
    bayes_tokens_free(&t);
    return rc;
}

int bayes_learned_class(struct bayes *b, const char *msg, size_t len)
{
    unsigned char digest[BAYES_DIGEST_LEN];
    if (message_keys(msg, len, NULL, NULL, digest) < 0)
        return -2;
    pthread_mutex_lock(&b->wlock);
    long long was = stmt_digest(b->w, "SELECT class FROM learned WHERE digest = ?1", digest,
                                0, 0);
    pthread_mutex_unlock(&b->wlock);
    return was == -2 ? -2 : (int)was;
}
