/* Unit tests for modified UTF-7 mailbox names. */
#include <string.h>

#include "imap_utf7.h"
#include "test.h"

static const char *enc(const char *utf8)
{
    static char out[256];
    const char *err = NULL;
    size_t n;
    if (imap_utf8_to_utf7(utf8, strlen(utf8), out, sizeof out, &n, &err) < 0)
        return err ? "ERR" : "ERR-without-reason";
    return strlen(out) == n ? out : "BADLEN";
}

static const char *dec(const char *utf7)
{
    static char out[256];
    const char *err = NULL;
    size_t n;
    if (imap_utf7_to_utf8(utf7, strlen(utf7), out, sizeof out, &n, &err) < 0)
        return err ? "ERR" : "ERR-without-reason";
    return strlen(out) == n ? out : "BADLEN";
}

static const struct {
    const char *utf8, *utf7;
} pairs[] = {
    { "INBOX", "INBOX" },
    { "", "" },
    { "&", "&-" },
    { "a&b", "a&-b" },
    { "&&", "&-&-" },
    { "\xc3\xa1", "&AOE-" },                                     /* á */
    { "Entw\xc3\xbcrfe", "Entw&APw-rfe" },                          /* Entwürfe */
    { "\xe5\x8f\xb0\xe5\x8c\x97", "&U,BTFw-" },                     /* 台北 (RFC 3501) */
    { "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
      "~peter/mail/&U,BTFw-/&ZeVnLIqe-" },                          /* RFC 3501 example */
    { "\xf0\x9f\x98\x80", "&2D3eAA-" },                             /* U+1F600 surrogate pair */
    { "a\xc3\xa1\xc3\xa9z", "a&AOEA6Q-z" },
    { "\x01", "&AAE-" },                                            /* controls are encoded */
    { "\x7f", "&AH8-" },
    { "x\xc3\xa1&", "x&AOE-&-" },
    { "Gel\xc3\xb6scht", "Gel&APY-scht" },
};

TEST(round_trips)
{
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        CHECK_STR(enc(pairs[i].utf8), pairs[i].utf7);
        CHECK_STR(dec(pairs[i].utf7), pairs[i].utf8);
        CHECK(imap_utf7_valid(pairs[i].utf7, strlen(pairs[i].utf7)));
    }
}

TEST(invalid_encodings)
{
    static const char *const bad[] = {
        "&",            /* unterminated */
        "&AOE",         /* unterminated */
        "a&AOE-&",      /* unterminated after a shift */
        "&AGE-",        /* 'a' encoded: directly representable */
        "&ACY-",        /* '&' encoded instead of "&-" */
        "&AOF-",        /* non-zero padding bits */
        "&AOEA-",       /* six excess bits: padding too long */
        "&A-",          /* fewer than 16 bits */
        "&AOE=-",       /* '=' is not in the alphabet */
        "&AO/-",        /* '/' replaced by ',' in modified base64 */
        "&2D0-",        /* lone high surrogate */
        "&3gA-",        /* lone low surrogate */
        "&2D3YPQ-",     /* high surrogate followed by another high */
        "&AOE-&AOE-",   /* adjacent shifts must be merged */
        "&AAA-",        /* NUL */
        "caf\xc3\xa9",  /* raw 8-bit */
        "a\tb",         /* raw control */
        "a\x7f",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (strcmp(dec(bad[i]), "ERR") != 0)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_STR(dec(bad[i]), "ERR");
        CHECK(!imap_utf7_valid(bad[i], strlen(bad[i])));
    }
    /* Adjacent shifts separated by a direct character are fine. */
    CHECK_STR(dec("&AOE-x&AOE-"), "\xc3\xa1x\xc3\xa1");
}

TEST(invalid_utf8)
{
    static const char *const bad[] = {
        "\xc3",             /* truncated */
        "\xc0\xaf",         /* overlong */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xff",
        "a\x80",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_STR(enc(bad[i]), "ERR");
    char out[8];
    const char *err;
    size_t n;
    CHECK_INT(imap_utf8_to_utf7("a\0b", 3, out, sizeof out, &n, &err), -1);
}

TEST(output_bounds)
{
    char out[6];
    const char *err = NULL;
    size_t n = 99;
    /* "&AOE-" needs 5 octets plus the NUL: fits exactly. */
    CHECK_INT(imap_utf8_to_utf7("\xc3\xa1", 2, out, sizeof out, &n, &err), 0);
    CHECK_INT(n, 5);
    CHECK_INT(imap_utf8_to_utf7("\xc3\xa1x", 3, out, sizeof out, &n, &err), -1);
    CHECK_STR(err, "name too long");
    CHECK_INT(imap_utf7_to_utf8("abcdef", 6, out, sizeof out, &n, &err), -1);
    CHECK_INT(imap_utf7_to_utf8("abcde", 5, out, sizeof out, &n, &err), 0);
    CHECK_STR(out, "abcde");
    CHECK_INT(imap_utf7_to_utf8("a", 1, out, 0, &n, &err), -1);
}

TEST(every_bmp_char_round_trips)
{
    /* Every non-surrogate BMP code point and a few astral ones, each alone
     * and between ASCII letters. */
    for (unsigned cp = 1; cp < 0x10000; cp += (cp < 0x800 ? 1 : 7)) {
        if (cp >= 0xd800 && cp <= 0xdfff)
            continue;
        char u8[8], u7[32], back[16];
        size_t n = 0, m, k;
        const char *err;
        u8[n++] = 'x';
        if (cp < 0x80) {
            u8[n++] = (char)cp;
        } else if (cp < 0x800) {
            u8[n++] = (char)(0xc0 | (cp >> 6));
            u8[n++] = (char)(0x80 | (cp & 0x3f));
        } else {
            u8[n++] = (char)(0xe0 | (cp >> 12));
            u8[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            u8[n++] = (char)(0x80 | (cp & 0x3f));
        }
        u8[n++] = 'y';
        if (imap_utf8_to_utf7(u8, n, u7, sizeof u7, &m, &err) < 0 ||
            imap_utf7_to_utf8(u7, m, back, sizeof back, &k, &err) < 0 || k != n ||
            memcmp(back, u8, n) != 0) {
            fprintf(stderr, "round trip failed for U+%04X\n", cp);
            CHECK(0);
            return;
        }
    }
}

int main(void)
{
    RUN(round_trips);
    RUN(invalid_encodings);
    RUN(invalid_utf8);
    RUN(output_bounds);
    RUN(every_bmp_char_round_trips);
    return test_summary();
}
