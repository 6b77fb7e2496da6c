/* Modified UTF-7 (RFC 3501 5.1.3). See imap_utf7.h. */
#include "imap_utf7.h"

#include <stdint.h>

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/* Output with a bounds check; out may be NULL to only validate. */
struct sink {
    char *out;
    size_t size, len;
    bool full;
};

static void put(struct sink *s, char c)
{
    if (s->out && s->len + 1 >= s->size) {
        s->full = true;
        return;
    }
    if (s->out)
        s->out[s->len] = c;
    s->len++;
}

static int finish(struct sink *s, size_t *outlen, const char **err)
{
    if (s->full) {
        *err = "name too long";
        return -1;
    }
    if (s->out)
        s->out[s->len] = '\0';
    if (outlen)
        *outlen = s->len;
    return 0;
}

static bool direct(unsigned char c)
{
    return c >= 0x20 && c <= 0x7e;
}

/* Reads one code point of strict UTF-8; returns its length or 0. */
static size_t utf8_next(const unsigned char *p, size_t len, uint32_t *cp)
{
    static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
    size_t n;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if ((p[0] & 0xe0) == 0xc0) {
        n = 2;
        *cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;
        *cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;
        *cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        *cp = (*cp << 6) | (p[i] & 0x3f);
    }
    if (*cp < min[n] || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
        return 0;
    return n;
}

static void put_utf8(struct sink *s, uint32_t cp)
{
    if (cp < 0x80) {
        put(s, (char)cp);
    } else if (cp < 0x800) {
        put(s, (char)(0xc0 | (cp >> 6)));
        put(s, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        put(s, (char)(0xe0 | (cp >> 12)));
        put(s, (char)(0x80 | ((cp >> 6) & 0x3f)));
        put(s, (char)(0x80 | (cp & 0x3f)));
    } else {
        put(s, (char)(0xf0 | (cp >> 18)));
        put(s, (char)(0x80 | ((cp >> 12) & 0x3f)));
        put(s, (char)(0x80 | ((cp >> 6) & 0x3f)));
        put(s, (char)(0x80 | (cp & 0x3f)));
    }
}

/* Base64 encoder state for one shift sequence. */
struct b64 {
    uint32_t bits;
    int nbits;
};

static void b64_unit(struct sink *s, struct b64 *b, uint32_t unit)
{
    b->bits = (b->bits << 16) | unit;
    b->nbits += 16;
    while (b->nbits >= 6) {
        b->nbits -= 6;
        put(s, b64chars[(b->bits >> b->nbits) & 0x3f]);
    }
}

static void b64_flush(struct sink *s, struct b64 *b)
{
    if (b->nbits > 0)
        put(s, b64chars[(b->bits << (6 - b->nbits)) & 0x3f]);
    put(s, '-');
    b->bits = 0;
    b->nbits = 0;
}

int imap_utf8_to_utf7(const char *in, size_t len, char *out, size_t outsize, size_t *outlen,
                      const char **err)
{
    const unsigned char *p = (const unsigned char *)in;
    struct sink s = { out, outsize, 0, false };
    struct b64 b = { 0, 0 };
    bool shifted = false;
    size_t i = 0;
    if (out && outsize == 0) {
        *err = "name too long";
        return -1;
    }
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_next(p + i, len - i, &cp);
        if (n == 0 || cp == 0) {
            *err = "invalid UTF-8";
            return -1;
        }
        i += n;
        if (direct((unsigned char)cp) && cp < 0x80) {
            if (shifted)
                b64_flush(&s, &b);
            shifted = false;
            put(&s, (char)cp);
            if (cp == '&')
                put(&s, '-');
            continue;
        }
        if (!shifted)
            put(&s, '&');
        shifted = true;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            b64_unit(&s, &b, 0xd800 | (cp >> 10));
            b64_unit(&s, &b, 0xdc00 | (cp & 0x3ff));
        } else {
            b64_unit(&s, &b, cp);
        }
    }
    if (shifted)
        b64_flush(&s, &b);
    return finish(&s, outlen, err);
}

static int b64_value(unsigned char c)
{
    for (int i = 0; i < 64; i++)
        if ((unsigned char)b64chars[i] == c)
            return i;
    return -1;
}

/* Decodes the shift sequence starting after '&' at *pos up to its '-'.
 * Emits the characters; *pos ends after the '-'. */
static int decode_shift(const unsigned char *p, size_t len, size_t *pos, struct sink *s,
                        const char **err)
{
    uint32_t bits = 0, high = 0;
    int nbits = 0;
    size_t i = *pos, units = 0;
    for (; i < len && p[i] != '-'; i++) {
        int v = b64_value(p[i]);
        if (v < 0) {
            *err = "invalid character in modified UTF-7 shift";
            return -1;
        }
        bits = (bits << 6) | (uint32_t)v;
        nbits += 6;
        if (nbits < 16)
            continue;
        nbits -= 16;
        uint32_t u = (bits >> nbits) & 0xffff;
        bits &= (1u << nbits) - 1;
        units++;
        if (high) {
            if (u < 0xdc00 || u > 0xdfff) {
                *err = "unpaired surrogate in modified UTF-7";
                return -1;
            }
            put_utf8(s, 0x10000 + ((high - 0xd800) << 10) + (u - 0xdc00));
            high = 0;
        } else if (u >= 0xd800 && u <= 0xdbff) {
            high = u;
        } else if (u >= 0xdc00 && u <= 0xdfff) {
            *err = "unpaired surrogate in modified UTF-7";
            return -1;
        } else if (u == 0 || (u < 0x80 && direct((unsigned char)u))) {
            *err = "directly representable character encoded in modified UTF-7";
            return -1;
        } else {
            put_utf8(s, u);
        }
    }
    if (i >= len) {
        *err = "unterminated modified UTF-7 shift";
        return -1;
    }
    if (high) {
        *err = "unpaired surrogate in modified UTF-7";
        return -1;
    }
    /* Leftover bits are padding: fewer than 6 and all zero. */
    if (nbits >= 6 || bits != 0) {
        *err = "bad padding in modified UTF-7";
        return -1;
    }
    if (units == 0) {
        *err = "empty modified UTF-7 shift";
        return -1;
    }
    *pos = i + 1;
    return 0;
}

static int decode(const char *in, size_t len, struct sink *s, const char **err)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0;
    bool after_shift = false;
    while (i < len) {
        if (!direct(p[i])) {
            *err = "non-ASCII or control octet in mailbox name";
            return -1;
        }
        if (p[i] != '&') {
            put(s, (char)p[i++]);
            after_shift = false;
            continue;
        }
        if (i + 1 < len && p[i + 1] == '-') {
            put(s, '&');
            i += 2;
            after_shift = false;
            continue;
        }
        if (after_shift) {
            *err = "adjacent modified UTF-7 shifts";
            return -1;
        }
        i++;
        if (decode_shift(p, len, &i, s, err) < 0)
            return -1;
        after_shift = true;
    }
    return 0;
}

int imap_utf7_to_utf8(const char *in, size_t len, char *out, size_t outsize, size_t *outlen,
                      const char **err)
{
    struct sink s = { out, outsize, 0, false };
    if (out && outsize == 0) {
        *err = "name too long";
        return -1;
    }
    if (decode(in, len, &s, err) < 0)
        return -1;
    return finish(&s, outlen, err);
}

bool imap_utf7_valid(const char *in, size_t len)
{
    struct sink s = { NULL, 0, 0, false };
    const char *err;
    return decode(in, len, &s, &err) == 0;
}
