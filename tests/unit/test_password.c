#include "password.h"

#include <crypt.h>
#include <string.h>

#include "test.h"

/* `openssl passwd -6 -salt abcdefgh secret` */
#define SHA512_SECRET "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG."
/* `openssl passwd -5 -salt abcdefgh secret` */
#define SHA256_SECRET "$5$abcdefgh$gruCpC7VkOTspMQTTSAR8mtlO9Upms.fwqE5y16JVM."

TEST(hash_is_yescrypt_and_verifies)
{
    char h[256];
    CHECK_INT(password_hash("correct horse", h, sizeof h), 0);
    CHECK(strncmp(h, "$y$", 3) == 0);
    CHECK(password_hash_is_supported(h));
    CHECK(password_verify(h, "correct horse"));
    CHECK(!password_verify(h, "correct horsf"));
    CHECK(!password_verify(h, "correct hors"));
    CHECK(!password_verify(h, ""));
}

TEST(hash_salts_differ)
{
    char a[256], b[256];
    CHECK_INT(password_hash("same", a, sizeof a), 0);
    CHECK_INT(password_hash("same", b, sizeof b), 0);
    CHECK(strcmp(a, b) != 0);
}

TEST(hash_refuses_empty_long_and_small_buffer)
{
    char h[256];
    CHECK_INT(password_hash("", h, sizeof h), -1);
    CHECK_INT(password_hash(NULL, h, sizeof h), -1);
    char tiny[10];
    CHECK_INT(password_hash("pw", tiny, sizeof tiny), -1);
    static char big[PASSWORD_MAX + 2];
    memset(big, 'a', PASSWORD_MAX + 1);
    CHECK_INT(password_hash(big, h, sizeof h), -1);
    big[PASSWORD_MAX] = '\0';
    CHECK_INT(password_hash(big, h, sizeof h), 0);
}

TEST(sha512_known_vector)
{
    CHECK(password_verify(SHA512_SECRET, "secret"));
    CHECK(!password_verify(SHA512_SECRET, "Secret"));
    CHECK(password_verify("{SHA512-CRYPT}" SHA512_SECRET, "secret"));
    CHECK(!password_verify("{SHA512-CRYPT}" SHA512_SECRET, "secre"));
    CHECK(password_verify("{CRYPT}" SHA512_SECRET, "secret"));
    CHECK(password_verify(SHA256_SECRET, "secret"));
    CHECK(password_verify("{SHA256-CRYPT}" SHA256_SECRET, "secret"));
}

TEST(bcrypt_via_libcrypt)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    CHECK(crypt_gensalt_rn("$2b$", 4, NULL, 0, setting, sizeof setting) != NULL);
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    const char *h = crypt_rn("pw", setting, &cd, sizeof cd);
    CHECK(h && strncmp(h, "$2b$", 4) == 0);
    char stored[256];
    snprintf(stored, sizeof stored, "{BLF-CRYPT}%s", h ? h : "");
    CHECK(password_verify(stored, "pw"));
    CHECK(!password_verify(stored, "px"));
}

TEST(tampered_hash_fails)
{
    char h[] = SHA512_SECRET;
    h[strlen(h) - 2] ^= 1;
    CHECK(!password_verify(h, "secret"));
}

TEST(supported_formats)
{
    CHECK(password_hash_is_supported(SHA512_SECRET));
    CHECK(password_hash_is_supported("{SHA512-CRYPT}" SHA512_SECRET));
    CHECK(password_hash_is_supported(SHA256_SECRET));
    CHECK(!password_hash_is_supported("{PLAIN}secret"));
    CHECK(!password_hash_is_supported("{SSHA}" SHA512_SECRET));
    CHECK(!password_hash_is_supported("{XCRYPT}" SHA512_SECRET));
    CHECK(!password_hash_is_supported("$1$abcdefgh$xxxxxxxxxxxxxxxxxxxxxx"));
    CHECK(!password_hash_is_supported("secret"));
    CHECK(!password_hash_is_supported("$6$"));
    CHECK(!password_hash_is_supported(""));
    CHECK(!password_hash_is_supported(NULL));
    CHECK(!password_verify("{PLAIN}secret", "secret"));
    CHECK(!password_verify("secret", "secret"));
}

int main(void)
{
    RUN(hash_is_yescrypt_and_verifies);
    RUN(hash_salts_differ);
    RUN(hash_refuses_empty_long_and_small_buffer);
    RUN(sha512_known_vector);
    RUN(bcrypt_via_libcrypt);
    RUN(tampered_hash_fails);
    RUN(supported_formats);
    return test_summary();
}
