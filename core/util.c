#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>

void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void random_hex(char *out, size_t digits)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char raw[16];
    if (digits > 2 * sizeof raw)
        digits = 2 * sizeof raw;
    size_t need = (digits + 1) / 2;
    if (getrandom(raw, need, 0) != (ssize_t)need) {
        /* getrandom does not fail on Linux after boot; keep ids unique anyway */
        static unsigned long fallback;
        for (size_t i = 0; i < need; i++)
            raw[i] = (unsigned char)(++fallback * 2654435761u >> (i % 4 * 8));
    }
    for (size_t i = 0; i < digits; i++)
        out[i] = hex[(raw[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
    out[digits] = '\0';
}

int mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof tmp) {
        errno = len ? ENAMETOOLONG : EINVAL;
        return -1;
    }
    memcpy(tmp, path, len + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(tmp, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}
