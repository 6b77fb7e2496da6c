#include "password.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(PASSWORD_MAX < CRYPT_MAX_PASSPHRASE_SIZE, "libcrypt refuses longer passphrases");

/* Dovecot-style scheme prefixes that wrap a plain crypt(3) string, as
 * docker-mailserver writes them ("{SHA512-CRYPT}$6$..."). Only prefixes
 * naming a crypt scheme are stripped; anything else ({PLAIN}, {SSHA}) is
 * left in place and therefore unsupported. */
static const char *strip_scheme_prefix(const char *stored)
{
    if (stored[0] != '{')
        return stored;
    const char *end = strchr(stored, '}');
    if (!end || end - stored > 32)
        return stored;
    size_t namelen = (size_t)(end - stored - 1);
    const char *name = stored + 1;
    static const char suffix[] = "CRYPT";
    size_t slen = sizeof suffix - 1;
    if (namelen < slen || memcmp(name + namelen - slen, suffix, slen) != 0)
        return stored;
    if (namelen > slen && name[namelen - slen - 1] != '-')
        return stored;
    return end + 1;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool password_hash_is_supported(const char *stored)
{
    if (!stored)
        return false;
    const char *h = strip_scheme_prefix(stored);
    static const char *const ids[] = { "$y$", "$6$", "$5$", "$2b$", "$2y$" };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        /* A bare prefix is not a hash: require setting and hash bytes. */
        if (has_prefix(h, ids[i]) && strlen(h) > strlen(ids[i]) + 8 &&
            strlen(h) < CRYPT_OUTPUT_SIZE && !strpbrk(h, " \t\r\n:"))
            return true;
    }
    return false;
}

int password_hash(const char *password, char *out, size_t outlen)
{
    if (!password || !*password || strlen(password) > PASSWORD_MAX || outlen == 0)
        return -1;
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (!crypt_gensalt_rn("$y$", 0, NULL, 0, setting, (int)sizeof setting))
        return -1;
    struct crypt_data *cd = calloc(1, sizeof *cd);   /* ~32 KiB: not on the stack */
    if (!cd)
        return -1;
    int rc = -1;
    const char *h = crypt_rn(password, setting, cd, (int)sizeof *cd);
    if (h && h[0] == '$') {
        size_t len = strlen(h);
        if (len < outlen) {
            memcpy(out, h, len + 1);
            rc = 0;
        }
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

/* Compares without an early exit so the time does not reveal where the
 * first difference is. */
static bool equal_const_time(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen)
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
    return diff == 0;
}

bool password_verify(const char *stored, const char *password)
{
    if (!password || !*password || strlen(password) > PASSWORD_MAX ||
        !password_hash_is_supported(stored))
        return false;
    const char *h = strip_scheme_prefix(stored);
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return false;
    bool ok = false;
    const char *computed = crypt_rn(password, h, cd, (int)sizeof *cd);
    if (computed && computed[0] == '$')
        ok = equal_const_time(computed, strlen(computed), h, strlen(h));
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return ok;
}
