#include "sasl.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static int b64_value(char c)
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

long sasl_base64_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
    if (len == 1 && in[0] == '=')
        return 0;
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            char c = in[i + (size_t)k];
            /* Padding only in the last quantum, only at its end. */
            if (c == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad || (v[k] = b64_value(c)) < 0)
                return -1;
        }
        uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        /* Non-canonical encodings (bits set in the padding) are refused. */
        if ((pad == 1 && (q & 0xff)) || (pad == 2 && (q & 0xffff)))
            return -1;
        unsigned char bytes[3] = { (unsigned char)(q >> 16), (unsigned char)(q >> 8),
                                   (unsigned char)q };
        size_t n = 3 - (size_t)pad;
        if (o + n > outlen)
            return -1;
        memcpy(out + o, bytes, n);
        o += n;
    }
    return (long)o;
}

long sasl_base64_encode(const unsigned char *in, size_t len, char *out, size_t outlen)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t need = 4 * ((len + 2) / 3) + 1;
    if (outlen < need)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t q = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            q |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            q |= in[i + 2];
        out[o++] = alphabet[q >> 18 & 63];
        out[o++] = alphabet[q >> 12 & 63];
        out[o++] = i + 1 < len ? alphabet[q >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[q & 63] : '=';
    }
    out[o] = '\0';
    return (long)o;
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
}

static bool equal_nocase(const unsigned char *a, size_t alen, const unsigned char *b,
                         size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++)
        if (upper((char)a[i]) != upper((char)b[i]))
            return false;
    return true;
}

static int split_plain(const unsigned char *raw, long n, char *user, size_t userlen,
                       char *pass, size_t passlen, const char **reason)
{
    const unsigned char *nul1 = memchr(raw, '\0', (size_t)n);
    const unsigned char *nul2 = nul1 ? memchr(nul1 + 1, '\0', (size_t)(raw + n - nul1 - 1)) : NULL;
    if (!nul2 || memchr(nul2 + 1, '\0', (size_t)(raw + n - nul2 - 1))) {
        *reason = "Malformed PLAIN response";
        return -1;
    }
    size_t zlen = (size_t)(nul1 - raw);
    size_t ulen = (size_t)(nul2 - nul1 - 1);
    size_t plen = (size_t)(raw + n - nul2 - 1);
    if (ulen == 0 || plen == 0) {
        *reason = "Malformed PLAIN response";
        return -1;
    }
    if (ulen > SASL_USER_MAX || ulen >= userlen || plen > SASL_PASS_MAX || plen >= passlen) {
        *reason = "Credentials too long";
        return -1;
    }
    if (zlen && !equal_nocase(raw, zlen, nul1 + 1, ulen)) {
        *reason = "Authorization as another user is not permitted";
        return -1;
    }
    memcpy(user, nul1 + 1, ulen);
    user[ulen] = '\0';
    memcpy(pass, nul2 + 1, plen);
    pass[plen] = '\0';
    return 0;
}

int sasl_plain_parse(const char *b64, size_t len, char *user, size_t userlen, char *pass,
                     size_t passlen, const char **reason)
{
    unsigned char raw[SASL_USER_MAX * 2 + SASL_PASS_MAX + 2];
    long n = sasl_base64_decode(b64, len, raw, sizeof raw);
    int rc = -1;
    if (n < 0)
        *reason = "Invalid base64 data";
    else
        rc = split_plain(raw, n, user, userlen, pass, passlen, reason);
    explicit_bzero(raw, sizeof raw);   /* the password must not linger on the stack */
    return rc;
}

int sasl_decode_value(const char *b64, size_t len, char *out, size_t outlen, size_t max)
{
    unsigned char raw[SASL_PASS_MAX + 1];
    long n = sasl_base64_decode(b64, len, raw, sizeof raw);
    int rc = -1;
    if (n > 0 && (size_t)n <= max && (size_t)n < outlen && !memchr(raw, '\0', (size_t)n)) {
        memcpy(out, raw, (size_t)n);
        out[n] = '\0';
        rc = 0;
    }
    explicit_bzero(raw, sizeof raw);
    return rc;
}
