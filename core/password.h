/* password: crypt(3) password hashes. New hashes are yescrypt ($y$);
 * verification accepts any scheme libcrypt knows, notably SHA512-CRYPT ($6$)
 * with or without docker-mailserver's "{SHA512-CRYPT}" prefix. Both calls
 * are slow on purpose: never call them on an event-loop thread. */
#ifndef POSTHORN_PASSWORD_H
#define POSTHORN_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

/* Writes a new yescrypt hash of `password` into out. Returns 0 or -1. */
int password_hash(const char *password, char *out, size_t outlen);

/* True when `password` matches `stored` (constant-time comparison). */
bool password_verify(const char *stored, const char *password);

/* True when `stored` is a hash format that password_verify understands
 * (used when importing accounts). */
bool password_hash_is_supported(const char *stored);

#endif
