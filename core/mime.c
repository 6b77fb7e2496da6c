#include "mime.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

/* ---- small helpers ---------------------------------------------------- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && strncasecmp(a, b, blen) == 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- header values ---------------------------------------------------- */

int mime_unfold(const char *value, size_t len, struct buf *out)
{
    size_t a = 0, b = len;
    while (a < b && is_ws(value[a]))
        a++;
    while (b > a && is_ws(value[b - 1]))
        b--;
    if (buf_reserve(out, b - a) < 0)
        return -1;
    for (size_t i = a; i < b; i++)
        if (value[i] != '\r' && value[i] != '\n')
            out->data[out->len++] = value[i];
    return 0;
}

/* The line at `pos` ends at *eol (LF or len); returns the next line start. */
static size_t line_end(const char *s, size_t len, size_t pos, size_t *eol)
{
    const char *lf = memchr(s + pos, '\n', len - pos);
    *eol = lf ? (size_t)(lf - s) : len;
    return lf ? *eol + 1 : len;
}

/* Content end of a line: without its CR LF. */
static size_t content_end(const char *s, size_t pos, size_t eol)
{
    return (eol > pos && s[eol - 1] == '\r') ? eol - 1 : eol;
}

struct mime_str mime_header_find(const char *hdr, size_t len, const char *name)
{
    struct mime_str found = { NULL, 0 };
    bool in_match = false;
    size_t pos = 0;
    while (pos < len) {
        size_t eol, next = line_end(hdr, len, pos, &eol);
        size_t end = content_end(hdr, pos, eol);
        if (end == pos)
            break;
        if (hdr[pos] == ' ' || hdr[pos] == '\t') {
            if (in_match)
                found.len = end - (size_t)(found.p - hdr);
        } else if (in_match) {
            return found;
        } else {
            const char *colon = memchr(hdr + pos, ':', end - pos);
            if (colon) {
                size_t nlen = (size_t)(colon - (hdr + pos));
                while (nlen && (hdr[pos + nlen - 1] == ' ' || hdr[pos + nlen - 1] == '\t'))
                    nlen--;
                if (ieq(hdr + pos, nlen, name)) {
                    in_match = true;
                    found.p = colon + 1;
                    found.len = end - (size_t)(colon + 1 - hdr);
                }
            }
        }
        pos = next;
    }
    return found;
}

/* ---- charsets and RFC 2047 -------------------------------------------- */

/* Charset names go to iconv_open(): only plain names, so that no
 * "//TRANSLIT"-style suffix or path can be smuggled in. */
static bool charset_name(const char *in, size_t len, char out[64])
{
    if (len == 0 || len >= 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':' || c == '+'))
            return false;
    }
    memcpy(out, in, len);
    out[len] = '\0';
    return true;
}

static int append_replacement(struct buf *out)
{
    return buf_append(out, "\xEF\xBF\xBD", 3);
}

int mime_charset_to_utf8(const char *charset, const char *in, size_t len, struct buf *out)
{
    char name[64];
    if (!charset_name(charset, strlen(charset), name))
        return 1;
    iconv_t cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1)
        return 1;
    char *src = (char *)in;
    size_t left = len;
    int rc = 0;
    while (left > 0 && rc == 0) {
        if (buf_reserve(out, left * 4 + 16) < 0) {
            rc = -1;
            break;
        }
        char *dst = out->data + out->len;
        size_t room = out->cap - out->len;
        size_t r = iconv(cd, &src, &left, &dst, &room);
        out->len = (size_t)(dst - out->data);
        if (r != (size_t)-1)
            break;
        if (errno == E2BIG)
            continue;
        /* EILSEQ or EINVAL (truncated sequence): replace one octet. */
        if (append_replacement(out) < 0)
            rc = -1;
        src++;
        left--;
        iconv(cd, NULL, NULL, NULL, NULL);
    }
    if (rc == 0) {
        /* Flush any shift state (stateful charsets such as ISO-2022-JP). */
        if (buf_reserve(out, 16) < 0) {
            rc = -1;
        } else {
            char *dst = out->data + out->len;
            size_t room = out->cap - out->len;
            iconv(cd, NULL, NULL, &dst, &room);
            out->len = (size_t)(dst - out->data);
        }
    }
    iconv_close(cd);
    return rc;
}

static bool charset_known(const char *name)
{
    iconv_t cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1)
        return false;
    iconv_close(cd);
    return true;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int mime_decode_base64(const char *in, size_t len, struct buf *out)
{
    if (buf_reserve(out, len / 4 * 3 + 3) < 0)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == '=')
            break;
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (char)((acc >> bits) & 0xff);
        }
    }
    return 0;
}

/* Decodes one line of quoted-printable (without its line break). */
static void qp_line(const char *s, size_t n, bool *soft, struct buf *out)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *soft = n > 0 && s[n - 1] == '=';
    if (*soft)
        n--;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 2 < n) {
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h >= 0 && l >= 0) {
                out->data[out->len++] = (char)(h * 16 + l);
                i += 2;
                continue;
            }
        }
        out->data[out->len++] = s[i];
    }
}

int mime_decode_qp(const char *in, size_t len, struct buf *out)
{
    if (buf_reserve(out, len) < 0)
        return -1;
    size_t pos = 0;
    while (pos < len) {
        size_t eol, next = line_end(in, len, pos, &eol);
        size_t end = content_end(in, pos, eol);
        bool soft;
        qp_line(in + pos, end - pos, &soft, out);
        if (!soft && eol < len) {
            memcpy(out->data + out->len, in + end, eol + 1 - end);
            out->len += eol + 1 - end;
        }
        pos = next;
    }
    return 0;
}

static int decode_q_word(const char *s, size_t n, struct buf *out)
{
    if (buf_reserve(out, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '_') {
            out->data[out->len++] = ' ';
        } else if (s[i] == '=' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
            out->data[out->len++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out->data[out->len++] = s[i];
        }
    }
    return 0;
}

struct encoded_word {
    char charset[64];
    char enc;                 /* 'B' or 'Q' */
    const char *text;
    size_t text_len;
    size_t total;             /* length of the whole =?...?= */
};

/* Recognises an encoded word at s (RFC 2047 section 2, leniently: no
 * length limit, but no white space inside). */
static bool parse_encoded_word(const char *s, size_t len, struct encoded_word *ew)
{
    if (len < 8 || s[0] != '=' || s[1] != '?')
        return false;
    size_t i = 2, cs = i;
    while (i < len && s[i] != '?' && !is_ws(s[i]) && i - cs < 80)
        i++;
    if (i >= len || s[i] != '?')
        return false;
    size_t cs_len = i - cs;
    const char *star = memchr(s + cs, '*', cs_len);   /* RFC 2231 language */
    if (star)
        cs_len = (size_t)(star - (s + cs));
    if (!charset_name(s + cs, cs_len, ew->charset))
        return false;
    if (i + 3 >= len || s[i + 2] != '?')
        return false;
    char e = s[i + 1];
    if (e == 'b' || e == 'B')
        ew->enc = 'B';
    else if (e == 'q' || e == 'Q')
        ew->enc = 'Q';
    else
        return false;
    size_t t = i + 3, j = t;
    while (j < len && s[j] != '?' && !is_ws(s[j]))
        j++;
    if (j + 1 >= len || s[j] != '?' || s[j + 1] != '=')
        return false;
    ew->text = s + t;
    ew->text_len = j - t;
    ew->total = j + 2;
    return charset_known(ew->charset);
}

struct ew_state {
    struct buf pending;       /* decoded octets of adjacent words */
    char charset[64];
};

static int ew_flush(struct ew_state *st, struct buf *out)
{
    if (st->pending.len == 0)
        return 0;
    int rc = mime_charset_to_utf8(st->charset, st->pending.data, st->pending.len, out);
    if (rc == 1)
        rc = buf_append(out, st->pending.data, st->pending.len);
    buf_reset(&st->pending);
    return rc < 0 ? -1 : 0;
}

static int ew_add(struct ew_state *st, const struct encoded_word *ew, struct buf *out)
{
    if (st->pending.len && strcasecmp(st->charset, ew->charset) != 0 && ew_flush(st, out) < 0)
        return -1;
    memcpy(st->charset, ew->charset, sizeof st->charset);
    if (ew->enc == 'B')
        return mime_decode_base64(ew->text, ew->text_len, &st->pending);
    return decode_q_word(ew->text, ew->text_len, &st->pending);
}

/* Copies plain text, dropping CR and LF (unfolding). */
static int append_unfolded(struct buf *out, const char *s, size_t n)
{
    if (buf_reserve(out, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i] != '\r' && s[i] != '\n')
            out->data[out->len++] = s[i];
    return 0;
}

int mime_decode_header(const char *in, size_t len, struct buf *out_utf8)
{
    struct ew_state st = { BUF_INIT, "" };
    bool after_word = false;
    size_t i = 0;
    int rc = 0;
    while (i < len && rc == 0) {
        struct encoded_word ew;
        if (in[i] == '=' && parse_encoded_word(in + i, len - i, &ew)) {
            rc = ew_add(&st, &ew, out_utf8);
            i += ew.total;
            after_word = true;
            continue;
        }
        size_t j = i;
        if (is_ws(in[i])) {
            while (j < len && is_ws(in[j]))
                j++;
            if (after_word && j < len && in[j] == '=' && parse_encoded_word(in + j, len - j, &ew)) {
                i = j;            /* white space between encoded words is dropped */
                continue;
            }
        } else {
            /* A run of text up to the next white space or possible word. */
            j++;
            while (j < len && !is_ws(in[j]) && in[j] != '=')
                j++;
        }
        rc = ew_flush(&st, out_utf8);
        if (rc == 0)
            rc = append_unfolded(out_utf8, in + i, j - i);
        after_word = false;
        i = j;
    }
    if (rc == 0)
        rc = ew_flush(&st, out_utf8);
    buf_free(&st.pending);
    return rc;
}

/* ---- Content-Type / Content-Disposition ------------------------------- */

/* Skips white space and (nested) comments. */
static size_t skip_cfws(const char *s, size_t len, size_t i)
{
    for (;;) {
        while (i < len && is_ws(s[i]))
            i++;
        if (i >= len || s[i] != '(')
            return i;
        int depth = 0;
        while (i < len) {
            if (s[i] == '\\' && i + 1 < len) {
                i += 2;
                continue;
            }
            if (s[i] == '(')
                depth++;
            else if (s[i] == ')' && --depth == 0) {
                i++;
                break;
            }
            i++;
        }
    }
}

static bool is_tspecial(char c)
{
    return strchr("()<>@,;:\\\"/[]?=", c) != NULL;
}

static size_t token_end(const char *s, size_t len, size_t i)
{
    while (i < len && (unsigned char)s[i] > ' ' && s[i] != 0x7f && !is_tspecial(s[i]))
        i++;
    return i;
}

struct raw_param {
    const char *name;
    size_t name_len;
    struct buf value;
    int section;              /* -1: none */
    bool star;                /* value is extended (charset'lang'pct) */
};

struct raw_params {
    struct raw_param p[MIME_MAX_PARAMS];
    size_t n;
};

/* Reads a parameter value (quoted-string or token, leniently anything up to
 * ';' or white space) into out; returns the index after it. */
static size_t param_value(const char *s, size_t len, size_t i, struct buf *out, int *rc)
{
    if (i < len && s[i] == '"') {
        for (i++; i < len && s[i] != '"'; i++) {
            if (s[i] == '\\' && i + 1 < len)
                i++;
            if (buf_append(out, s + i, 1) < 0)
                *rc = -1;
        }
        return i < len ? i + 1 : i;
    }
    size_t j = i;
    while (j < len && s[j] != ';' && !is_ws(s[j]))
        j++;
    if (buf_append(out, s + i, j - i) < 0)
        *rc = -1;
    return j;
}

/* Splits an RFC 2231 name "base*N*" into its parts. */
static void split_2231(struct raw_param *rp)
{
    rp->section = -1;
    rp->star = false;
    size_t n = rp->name_len;
    if (n > 1 && rp->name[n - 1] == '*') {
        rp->star = true;
        n--;
    }
    const char *st = memchr(rp->name, '*', n);
    if (st) {
        size_t k = (size_t)(st - rp->name) + 1;
        int sec = 0;
        bool ok = k < n && n - k <= 3;
        for (size_t m = k; ok && m < n; m++) {
            if (rp->name[m] < '0' || rp->name[m] > '9')
                ok = false;
            else
                sec = sec * 10 + (rp->name[m] - '0');
        }
        if (ok && sec < MIME_MAX_SECTIONS) {
            rp->section = sec;
            n = (size_t)(st - rp->name);
        }
    }
    rp->name_len = n;
}

static int parse_params(const char *s, size_t len, size_t i, struct raw_params *rps)
{
    int rc = 0;
    while (i < len && rc == 0) {
        i = skip_cfws(s, len, i);
        if (i < len && s[i] != ';') {
            /* Junk: skip to the next parameter. */
            while (i < len && s[i] != ';')
                i++;
        }
        if (i >= len)
            break;
        i = skip_cfws(s, len, i + 1);
        size_t ne = token_end(s, len, i);
        size_t after = skip_cfws(s, len, ne);
        if (ne == i || after >= len || s[after] != '=')
            continue;
        size_t vs = skip_cfws(s, len, after + 1);
        if (rps->n >= MIME_MAX_PARAMS) {
            struct buf junk = BUF_INIT;
            i = param_value(s, len, vs, &junk, &rc);
            buf_free(&junk);
            continue;
        }
        struct raw_param *rp = &rps->p[rps->n++];
        memset(rp, 0, sizeof *rp);
        rp->name = s + i;
        rp->name_len = ne - i;
        i = param_value(s, len, vs, &rp->value, &rc);
        split_2231(rp);
    }
    return rc;
}

static bool attr_char(unsigned char c)
{
    return c > ' ' && c < 0x7f && !strchr("*'%()<>@,;:\\\"/[]?=", c);
}

/* Percent-decodes an RFC 2231 value. */
static int pct_decode(const char *s, size_t n, struct buf *out)
{
    if (buf_reserve(out, n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < n && (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
            out->data[out->len++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out->data[out->len++] = s[i];
        }
    }
    return 0;
}

static int pct_encode(const char *s, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int rc = attr_char(c) ? buf_append(out, s + i, 1) : buf_printf(out, "%%%02X", c);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Decodes an extended value "charset'lang'text" into UTF-8. */
static int decode_extended(const char *raw, size_t len, struct buf *out)
{
    const char *q1 = memchr(raw, '\'', len);
    const char *q2 = q1 ? memchr(q1 + 1, '\'', len - (size_t)(q1 + 1 - raw)) : NULL;
    if (!q2)
        return pct_decode(raw, len, out);
    struct buf octets = BUF_INIT;
    size_t off = (size_t)(q2 + 1 - raw);
    int rc = pct_decode(raw + off, len - off, &octets);
    char cs[64];
    if (rc == 0) {
        int c = 1;
        if (charset_name(raw, (size_t)(q1 - raw), cs))
            c = mime_charset_to_utf8(cs, octets.data ? octets.data : "", octets.len, out);
        if (c == 1)
            c = buf_append(out, octets.data, octets.len);
        rc = c < 0 ? -1 : 0;
    }
    buf_free(&octets);
    return rc;
}

static bool names_eq(const struct raw_param *a, const struct raw_param *b)
{
    return a->name_len == b->name_len && strncasecmp(a->name, b->name, a->name_len) == 0;
}

/* Joins the sections of parameter `first` (index into rps) into raw. */
static int join_sections(struct raw_params *rps, size_t first, struct buf *raw, bool *extended)
{
    const struct raw_param *sec[MIME_MAX_SECTIONS] = { 0 };
    *extended = false;
    for (size_t k = first; k < rps->n; k++) {
        const struct raw_param *rp = &rps->p[k];
        if (rp->section >= 0 && names_eq(rp, &rps->p[first]) && !sec[rp->section]) {
            sec[rp->section] = rp;
            *extended |= rp->star;
        }
    }
    for (int k = 0; k < MIME_MAX_SECTIONS && sec[k]; k++) {
        const struct raw_param *rp = sec[k];
        int rc = 0;
        if (*extended && !rp->star) {
            /* A literal section inside an extended value: encode it so the
             * joined value stays charset'language'%XX text. */
            if (k == 0)
                rc = buf_append(raw, "''", 2);
            if (rc == 0)
                rc = pct_encode(rp->value.data, rp->value.len, raw);
        } else {
            rc = buf_append(raw, rp->value.data, rp->value.len);
        }
        if (rc < 0)
            return -1;
    }
    return 0;
}

static struct mime_param *make_param(const struct raw_param *rp, struct buf *raw, bool extended)
{
    struct mime_param *mp = calloc(1, sizeof *mp);
    if (!mp)
        return NULL;
    struct buf val = BUF_INIT;
    int rc = extended ? decode_extended(raw->data ? raw->data : "", raw->len, &val)
                      : mime_decode_header(raw->data ? raw->data : "", raw->len, &val);
    mp->name = dup_n(rp->name, rp->name_len);
    mp->raw = dup_n(raw->data ? raw->data : "", raw->len);
    mp->raw_len = raw->len;
    mp->extended = extended;
    mp->value = dup_n(val.data ? val.data : "", val.len);
    mp->value_len = val.len;
    buf_free(&val);
    if (rc < 0 || !mp->name || !mp->raw || !mp->value) {
        free(mp->name);
        free(mp->raw);
        free(mp->value);
        free(mp);
        return NULL;
    }
    return mp;
}

static void free_params(struct mime_param *p)
{
    while (p) {
        struct mime_param *next = p->next;
        free(p->name);
        free(p->raw);
        free(p->value);
        free(p);
        p = next;
    }
}

/* Turns raw parameters into the joined, decoded list (first wins). */
static int build_params(struct raw_params *rps, struct mime_param **out)
{
    struct mime_param **tail = out;
    for (size_t k = 0; k < rps->n; k++) {
        bool seen = false;
        for (size_t m = 0; m < k && !seen; m++)
            seen = names_eq(&rps->p[m], &rps->p[k]);
        if (seen)
            continue;
        const struct raw_param *rp = &rps->p[k];
        struct buf raw = BUF_INIT;
        bool extended = rp->star;
        int rc = 0;
        if (rp->section >= 0)
            rc = join_sections(rps, k, &raw, &extended);
        else
            rc = buf_append(&raw, rp->value.data, rp->value.len);
        struct mime_param *mp = rc == 0 ? make_param(rp, &raw, extended) : NULL;
        buf_free(&raw);
        if (!mp)
            return -1;
        *tail = mp;
        tail = &mp->next;
    }
    return 0;
}

static void free_raw_params(struct raw_params *rps)
{
    for (size_t k = 0; k < rps->n; k++)
        buf_free(&rps->p[k].value);
}

/* Parses "type/subtype; params" (or "disposition; params" when subtype is
 * NULL). Leaves *type NULL when the value is not valid. */
static int parse_mime_field(struct mime_str raw, char **type, char **subtype,
                            struct mime_param **params)
{
    if (!raw.p)
        return 0;
    struct buf v = BUF_INIT;
    if (mime_unfold(raw.p, raw.len, &v) < 0)
        return -1;
    const char *s = v.data ? v.data : "";
    size_t len = v.len, i = skip_cfws(s, len, 0);
    size_t te = token_end(s, len, i);
    int rc = 0;
    if (te > i) {
        size_t j = skip_cfws(s, len, te);
        if (subtype) {
            size_t ss = j < len && s[j] == '/' ? skip_cfws(s, len, j + 1) : len;
            size_t se = token_end(s, len, ss);
            if (se > ss) {
                *type = dup_n(s + i, te - i);
                *subtype = dup_n(s + ss, se - ss);
                j = se;
            }
        } else {
            *type = dup_n(s + i, te - i);
            if (!*type)
                rc = -1;
        }
        if (*type) {
            struct raw_params *rps = calloc(1, sizeof *rps);
            rc = rps ? parse_params(s, len, j, rps) : -1;
            if (rc == 0)
                rc = build_params(rps, params);
            if (rps)
                free_raw_params(rps);
            free(rps);
        }
        if ((subtype && ((*type == NULL) != (*subtype == NULL))))
            rc = -1;
    }
    buf_free(&v);
    return rc;
}

/* ---- the part tree ---------------------------------------------------- */

struct boundary {
    const char *s;
    size_t len;
};

struct parser {
    const char *msg;
    size_t len;
    size_t pos;               /* always at a line start */
    size_t line;              /* LFs before pos */
    size_t nparts;
    struct boundary stack[MIME_MAX_DEPTH + 1];
    size_t nb;
    int hit;                  /* boundary that stopped the scan; -1: end of input */
    bool hit_close;
    struct mime_part *all, *all_tail;
    bool oom;
};

static void skip_line(struct parser *p)
{
    size_t eol;
    size_t next = line_end(p->msg, p->len, p->pos, &eol);
    if (eol < p->len)
        p->line++;
    p->pos = next;
}

/* Is the line at p->pos a boundary of an enclosing multipart? The longest
 * matching boundary wins; among equal ones the innermost. */
static bool at_boundary(struct parser *p)
{
    size_t avail = p->len - p->pos;
    const char *s = p->msg + p->pos;
    if (p->nb == 0 || avail < 3 || s[0] != '-' || s[1] != '-')
        return false;
    int best = -1;
    for (size_t k = p->nb; k-- > 0;) {
        const struct boundary *b = &p->stack[k];
        if (b->len <= avail - 2 && memcmp(s + 2, b->s, b->len) == 0 &&
            (best < 0 || b->len > p->stack[best].len))
            best = (int)k;
    }
    if (best < 0)
        return false;
    size_t after = 2 + p->stack[best].len;
    p->hit = best;
    p->hit_close = avail - after >= 2 && s[after] == '-' && s[after + 1] == '-';
    return true;
}

static void scan_body(struct parser *p)
{
    p->hit = -1;
    while (p->pos < p->len && !at_boundary(p))
        skip_line(p);
}

static struct mime_part *new_part(struct parser *p, struct mime_part *parent)
{
    struct mime_part *part = calloc(1, sizeof *part);
    if (!part) {
        p->oom = true;
        return NULL;
    }
    /* Appended, so that the root heads the list mime_free() walks. */
    if (p->all_tail)
        p->all_tail->alloc_next = part;
    else
        p->all = part;
    p->all_tail = part;
    p->nparts++;
    part->parent = parent;
    if (parent) {
        part->depth = parent->depth + 1;
        if (parent->last_child)
            parent->last_child->next = part;
        else
            parent->children = part;
        parent->last_child = part;
        parent->nchildren++;
    }
    return part;
}

struct field_slot {
    const char *name;
    size_t offset;
};

#define SLOT(n, f) { n, offsetof(struct mime_part, f) }
static const struct field_slot slots[] = {
    SLOT("content-type", content_type),
    SLOT("content-disposition", content_disposition),
    SLOT("content-id", content_id),
    SLOT("content-description", content_description),
    SLOT("content-transfer-encoding", content_transfer_encoding),
    SLOT("content-md5", content_md5),
    SLOT("content-language", content_language),
    SLOT("content-location", content_location),
    SLOT("date", date),
    SLOT("subject", subject),
    SLOT("from", from),
    SLOT("sender", sender),
    SLOT("reply-to", reply_to),
    SLOT("to", to),
    SLOT("cc", cc),
    SLOT("bcc", bcc),
    SLOT("in-reply-to", in_reply_to),
    SLOT("message-id", message_id),
};

/* The span a field is recorded in, or NULL (uninteresting or repeated). */
static struct mime_str *field_slot(struct mime_part *part, const char *name, size_t len)
{
    for (size_t k = 0; k < sizeof slots / sizeof slots[0]; k++) {
        if (ieq(name, len, slots[k].name)) {
            struct mime_str *s = (struct mime_str *)((char *)part + slots[k].offset);
            return s->p ? NULL : s;
        }
    }
    return NULL;
}

static void parse_header(struct parser *p, struct mime_part *part)
{
    size_t first_line = p->line;
    struct mime_str *cur = NULL;
    part->hdr_off = p->pos;
    p->hit = -1;
    while (p->pos < p->len && !at_boundary(p)) {
        size_t eol;
        line_end(p->msg, p->len, p->pos, &eol);
        size_t end = content_end(p->msg, p->pos, eol);
        const char *s = p->msg + p->pos;
        if (end == p->pos) {
            skip_line(p);
            break;
        }
        if (s[0] == ' ' || s[0] == '\t') {
            if (cur)
                cur->len = (size_t)(p->msg + end - cur->p);
        } else {
            const char *colon = memchr(s, ':', end - p->pos);
            cur = NULL;
            if (colon) {
                size_t nlen = (size_t)(colon - s);
                while (nlen && (s[nlen - 1] == ' ' || s[nlen - 1] == '\t'))
                    nlen--;
                cur = field_slot(part, s, nlen);
                if (cur) {
                    cur->p = colon + 1;
                    cur->len = (size_t)(p->msg + end - (colon + 1));
                }
            }
        }
        skip_line(p);
    }
    part->hdr_size = p->pos - part->hdr_off;
    part->hdr_lines = p->line - first_line;
    part->body_off = p->pos;
}

/* Sets the body size and lines of a part whose body starts at body_off
 * (line number body_line) and ends where the scan stopped. The line break
 * before a boundary belongs to the boundary: when the part's header ran up
 * to the boundary, the header gives that line break back. */
static void finish_body(struct parser *p, struct mime_part *part, size_t body_line)
{
    if (p->hit >= 0 && p->pos == part->hdr_off && part->hdr_off > 0 &&
        p->msg[part->hdr_off - 1] == '\n') {
        /* "--a" CRLF "--b": an empty part, and the CRLF is the delimiter
         * of "--b", so the part sits before it. */
        size_t back = part->hdr_off > 1 && p->msg[part->hdr_off - 2] == '\r' ? 2 : 1;
        part->hdr_off -= back;
        part->body_off = part->hdr_off;
        part->hdr_size = part->hdr_lines = part->body_size = part->body_lines = 0;
        return;
    }
    size_t end = p->pos, lfs = p->line - body_line;
    bool stripped = false;
    if (p->hit >= 0 && end > part->hdr_off && p->msg[end - 1] == '\n') {
        end--;
        stripped = true;
        if (end > part->hdr_off && p->msg[end - 1] == '\r')
            end--;
    }
    if (end < part->body_off) {
        part->hdr_size = end - part->hdr_off;
        part->body_off = end;
        if (stripped && part->hdr_lines)
            part->hdr_lines--;
        lfs = 0;
    } else if (stripped) {
        lfs--;
    }
    part->body_size = end - part->body_off;
    part->body_lines = lfs + (end > part->body_off && p->msg[end - 1] != '\n');
}

static bool identity_encoding(const struct mime_part *part)
{
    if (!part->content_transfer_encoding.p)
        return true;
    struct buf v = BUF_INIT;
    bool ok = false;
    if (mime_unfold(part->content_transfer_encoding.p, part->content_transfer_encoding.len, &v) == 0)
        ok = v.len == 0 || ieq(v.data, v.len, "7bit") || ieq(v.data, v.len, "8bit") ||
             ieq(v.data, v.len, "binary");
    buf_free(&v);
    return ok;
}

/* A usable boundary parameter, or NULL. */
static const struct mime_param *usable_boundary(const struct mime_part *part)
{
    const struct mime_param *b = mime_param_find(part->type_params, "boundary");
    if (!b || b->extended || b->raw_len == 0 || b->raw_len > MIME_MAX_BOUNDARY ||
        memchr(b->raw, '\n', b->raw_len) || memchr(b->raw, '\r', b->raw_len))
        return NULL;
    return b;
}

static bool limits_reached(const struct parser *p, const struct mime_part *part)
{
    return part->depth >= MIME_MAX_DEPTH || p->nparts >= MIME_MAX_PARTS;
}

static void parse_entity(struct parser *p, struct mime_part *part, bool in_digest);

static void parse_multipart(struct parser *p, struct mime_part *part, const struct mime_param *b)
{
    bool digest = strcasecmp(part->subtype, "digest") == 0;
    size_t own = p->nb++;
    p->stack[own].s = b->raw;
    p->stack[own].len = b->raw_len;
    part->kind = MIME_MULTIPART;
    scan_body(p);                                   /* preamble */
    bool closed = false;
    while (!p->oom && p->hit == (int)own) {
        if (p->hit_close) {
            skip_line(p);
            p->nb--;
            scan_body(p);                           /* epilogue */
            closed = true;
            break;
        }
        skip_line(p);
        if (p->nparts >= MIME_MAX_PARTS) {
            scan_body(p);                           /* parts beyond the limit are skipped */
            continue;
        }
        struct mime_part *child = new_part(p, part);
        if (!child)
            return;
        parse_entity(p, child, digest);
    }
    if (!closed) {
        p->nb = own;
        part->missing_end_boundary = true;
    }
}

static void parse_entity(struct parser *p, struct mime_part *part, bool in_digest)
{
    parse_header(p, part);
    size_t body_line = p->line;
    if (parse_mime_field(part->content_type, &part->type, &part->subtype, &part->type_params) < 0 ||
        parse_mime_field(part->content_disposition, &part->disposition, NULL, &part->disp_params) < 0) {
        p->oom = true;
        return;
    }
    if (!part->type && in_digest) {
        /* RFC 2046 5.1.5: the default inside a digest is message/rfc822. */
        part->type = dup_n("message", 7);
        part->subtype = dup_n("rfc822", 6);
        if (!part->type || !part->subtype) {
            p->oom = true;
            return;
        }
    }
    bool multipart = part->type && strcasecmp(part->type, "multipart") == 0;
    bool message = part->type && strcasecmp(part->type, "message") == 0 &&
                   (strcasecmp(part->subtype, "rfc822") == 0 ||
                    strcasecmp(part->subtype, "global") == 0) && identity_encoding(part);
    const struct mime_param *b = multipart ? usable_boundary(part) : NULL;
    if (multipart && !b)
        part->no_boundary = true;
    if ((b || message) && limits_reached(p, part)) {
        part->opaque = true;
        b = NULL;
        message = false;
    }
    if (b) {
        parse_multipart(p, part, b);
    } else if (message) {
        part->kind = MIME_MESSAGE;
        struct mime_part *child = new_part(p, part);
        if (!child)
            return;
        parse_entity(p, child, false);
    } else {
        scan_body(p);
    }
    finish_body(p, part, body_line);
}

struct mime_part *mime_parse(const char *msg, size_t len)
{
    struct parser *p = calloc(1, sizeof *p);
    if (!p) {
        log_error("mime: out of memory");
        return NULL;
    }
    p->msg = msg ? msg : "";
    p->len = msg ? len : 0;
    struct mime_part *root = new_part(p, NULL);
    if (root)
        parse_entity(p, root, false);
    if (p->oom) {
        mime_free(p->all);
        root = NULL;
    }
    if (!root)
        log_error("mime: out of memory parsing a message of %zu octets", len);
    free(p);
    return root;
}

void mime_free(struct mime_part *root)
{
    struct mime_part *part = root;
    while (part) {
        struct mime_part *next = part->alloc_next;
        free(part->type);
        free(part->subtype);
        free(part->disposition);
        free_params(part->type_params);
        free_params(part->disp_params);
        free(part);
        part = next;
    }
}

void mime_part_type(const struct mime_part *part, const char **type,
                    const char **subtype, bool *is_default)
{
    *is_default = false;
    if (part->opaque) {
        *type = "APPLICATION";
        *subtype = "OCTET-STREAM";
        *is_default = true;
    } else if (!part->type || part->no_boundary) {
        *type = "TEXT";
        *subtype = "PLAIN";
        *is_default = true;
    } else {
        *type = part->type;
        *subtype = part->subtype;
    }
}

bool mime_part_is(const struct mime_part *part, const char *type, const char *subtype)
{
    const char *t, *s;
    bool def;
    mime_part_type(part, &t, &s, &def);
    return strcasecmp(t, type) == 0 && (!subtype || strcasecmp(s, subtype) == 0);
}

const struct mime_param *mime_param_find(const struct mime_param *list, const char *name)
{
    for (; list; list = list->next)
        if (strcasecmp(list->name, name) == 0)
            return list;
    return NULL;
}

const struct mime_part *mime_find_section(const struct mime_part *root,
                                          const unsigned *path, size_t depth)
{
    const struct mime_part *cur = root;
    bool in_message = true;          /* cur is a message (root or encapsulated) */
    for (size_t i = 0; i < depth && cur; i++) {
        unsigned n = path[i];
        if (n == 0)
            return NULL;
        if (!in_message && cur->kind == MIME_MESSAGE) {
            cur = cur->children;
            in_message = true;
        }
        if (cur->kind == MIME_MULTIPART) {
            const struct mime_part *c = cur->children;
            for (unsigned k = 1; c && k < n; k++)
                c = c->next;
            cur = c;
            in_message = false;
        } else if (in_message && n == 1) {
            in_message = false;       /* part 1 of a non-multipart message: its body */
        } else {
            return NULL;
        }
    }
    return cur;
}

int mime_decode_body(const char *msg, const struct mime_part *part, struct buf *out)
{
    const char *body = msg + part->body_off;
    struct buf enc = BUF_INIT;
    const struct mime_str *cte = &part->content_transfer_encoding;
    if (cte->p && mime_unfold(cte->p, cte->len, &enc) < 0)
        return -1;
    int rc;
    if (enc.len && ieq(enc.data, enc.len, "base64"))
        rc = mime_decode_base64(body, part->body_size, out);
    else if (enc.len && ieq(enc.data, enc.len, "quoted-printable"))
        rc = mime_decode_qp(body, part->body_size, out);
    else
        rc = buf_append(out, body, part->body_size);
    buf_free(&enc);
    return rc;
}
