/* util: the few small helpers every module needs, written once. */
#ifndef POSTHORN_UTIL_H
#define POSTHORN_UTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Formats a one-line reason into err (nothing when err is NULL or errlen 0). */
void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* `digits` random upper-case hex digits and a NUL into out (digits + 1
 * bytes); at most 32 digits. For session and queue ids, not for secrets. */
void random_hex(char *out, size_t digits);

/* mkdir -p: creates path and its missing parents with `mode`. Existing
 * directories are fine; a non-directory in the way is ENOTDIR. Returns 0,
 * or -1 with errno set. */
int mkdir_p(const char *path, mode_t mode);

#endif
