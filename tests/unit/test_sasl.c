/* Unit tests for sasl.c: base64 and the PLAIN mechanism. */
#include <string.h>

#include "sasl.h"
#include "test.h"

static long b64(const char *in, unsigned char *out, size_t outlen)
{
    return sasl_base64_decode(in, strlen(in), out, outlen);
}

TEST(base64)
{
    unsigned char out[16];
    CHECK_INT(b64("aGVsbG8=", out, sizeof out), 5);
    CHECK(memcmp(out, "hello", 5) == 0);
    CHECK_INT(b64("aGk=", out, sizeof out), 2);
    CHECK_INT(b64("YQ==", out, sizeof out), 1);
    CHECK_INT(out[0], 'a');
    CHECK_INT(b64("YWJj", out, sizeof out), 3);
    CHECK_INT(b64("=", out, sizeof out), 0);
    CHECK_INT(b64("", out, sizeof out), 0);
    CHECK_INT(b64("YQ=", out, sizeof out), -1);      /* length */
    CHECK_INT(b64("Y===", out, sizeof out), -1);     /* too much padding */
    CHECK_INT(b64("YQ==YWJj", out, sizeof out), -1); /* padding in the middle */
    CHECK_INT(b64("YR==", out, sizeof out), -1);     /* non-canonical bits */
    CHECK_INT(b64("YW J", out, sizeof out), -1);
    CHECK_INT(b64("YW\nJ", out, sizeof out), -1);
    CHECK_INT(b64("aGVsbG8=", out, 4), -1);          /* output too small */
}

static int plain(const char *b64text, char *user, char *pass, const char **reason)
{
    return sasl_plain_parse(b64text, strlen(b64text), user, SASL_USER_MAX + 1, pass,
                                 SASL_PASS_MAX + 1, reason);
}

TEST(sasl_plain)
{
    char user[SASL_USER_MAX + 1], pass[SASL_PASS_MAX + 1];
    const char *reason;
    /* "\0a@b.c\0pw" */
    CHECK_INT(plain("AGFAYi5jAHB3", user, pass, &reason), 0);
    CHECK_STR(user, "a@b.c");
    CHECK_STR(pass, "pw");
    /* "A@B.C\0a@b.c\0pw": authzid equal ignoring case */
    CHECK_INT(plain("QUBCLkMAYUBiLmMAcHc=", user, pass, &reason), 0);
    CHECK_STR(user, "a@b.c");
    /* "x@b.c\0a@b.c\0pw": another identity */
    CHECK_INT(plain("eEBiLmMAYUBiLmMAcHc=", user, pass, &reason), -1);
    CHECK_STR(reason, "Authorization as another user is not permitted");
    /* "a@b.c\0pw" (one NUL) */
    CHECK_INT(plain("YUBiLmMAcHc=", user, pass, &reason), -1);
    /* "\0a@b.c\0" (empty password) */
    CHECK_INT(plain("AGFAYi5jAA==", user, pass, &reason), -1);
    /* "\0\0pw" (empty user) */
    CHECK_INT(plain("AABwdw==", user, pass, &reason), -1);
    /* "\0a\0p\0w" (three NULs) */
    CHECK_INT(plain("AGEAcAB3", user, pass, &reason), -1);
    CHECK_INT(plain("=", user, pass, &reason), -1);
    CHECK_INT(plain("not base64!", user, pass, &reason), -1);
    CHECK_STR(reason, "Invalid base64 data");
}

static long enc(const char *in, char *out, size_t outlen)
{
    return sasl_base64_encode((const unsigned char *)in, strlen(in), out, outlen);
}

TEST(base64_encode_round_trip)
{
    char out[32];
    unsigned char back[32];
    CHECK_INT(enc("hello", out, sizeof out), 8);
    CHECK_STR(out, "aGVsbG8=");
    CHECK_INT(enc("hi", out, sizeof out), 4);
    CHECK_STR(out, "aGk=");
    CHECK_INT(enc("", out, sizeof out), 0);
    CHECK_INT(enc("hello", out, 8), -1);            /* no room for the NUL */
    const char *samples[] = { "a", "ab", "abc", "Username:", "\xff\x00\x80" };
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        size_t len = i == 4 ? 3 : strlen(samples[i]);
        long n = sasl_base64_encode((const unsigned char *)samples[i], len, out, sizeof out);
        CHECK(n > 0);
        CHECK_INT(sasl_base64_decode(out, (size_t)n, back, sizeof back), (long)len);
        CHECK(memcmp(back, samples[i], len) == 0);
    }
}

TEST(decode_single_value)
{
    char out[16];
    CHECK_INT(sasl_decode_value("dXNlcg==", 8, out, sizeof out, 15), 0);   /* "user" */
    CHECK_STR(out, "user");
    CHECK_INT(sasl_decode_value("dXNlcg==", 8, out, sizeof out, 3), -1);   /* over max */
    CHECK_INT(sasl_decode_value("AA==", 4, out, sizeof out, 15), -1);      /* a NUL */
    CHECK_INT(sasl_decode_value("=", 1, out, sizeof out, 15), -1);         /* empty */
    CHECK_INT(sasl_decode_value("d!==", 4, out, sizeof out, 15), -1);
}

int main(void)
{
    RUN(base64);
    RUN(sasl_plain);
    RUN(base64_encode_round_trip);
    RUN(decode_single_value);
    return test_summary();
}
