/* password: crypt(3) password hashes. New hashes are yescrypt ($y$);
 * verification accepts any scheme libcrypt knows, notably SHA512-CRYPT ($6$)
 * with or without docker-mailserver's "{SHA512-CRYPT}" prefix. Both calls
 * are slow on purpose: never call them on an event-loop thread. */
#ifndef POSTHORN_PASSWORD_H
#define POSTHORN_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

/* Longest password accepted (octets), so that hashing work stays bounded
 * for input that comes from the network. Longer ones never verify. */
#define PASSWORD_MAX 511   /* libcrypt: CRYPT_MAX_PASSPHRASE_SIZE - 1 */

/* Writes a new yescrypt hash of `password` into out. Returns 0 or -1
 * (also for an empty password or one longer than PASSWORD_MAX). */
int password_hash(const char *password, char *out, size_t outlen);

/* True when `password` matches `stored` (constant-time comparison).
 * A leading "{...CRYPT}" scheme prefix ({SHA512-CRYPT}, {BLF-CRYPT}, ...)
 * is ignored. An empty password never matches. */
bool password_verify(const char *stored, const char *password);

/* True when `stored` is a hash format that password_verify understands
 * (used when importing accounts): $y$, $6$, $5$, $2b$, $2y$, optionally
 * behind a "{...CRYPT}" prefix. */
bool password_hash_is_supported(const char *stored);

#endif
