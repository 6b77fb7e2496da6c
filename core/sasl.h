/* sasl: what the protocols share to take a login (RFC 4422): strict base64
 * and the PLAIN mechanism (RFC 4616). Used by SMTP AUTH, POP3 AUTH and
 * IMAP AUTHENTICATE. Pure functions over untrusted input. */
#ifndef POSTHORN_SASL_H
#define POSTHORN_SASL_H

#include <stddef.h>

#define SASL_USER_MAX 320    /* a full address */
#define SASL_PASS_MAX 511    /* libcrypt's limit */

/* Strict base64 (RFC 4648, padding required, no whitespace, canonical).
 * Writes at most outlen octets. Returns the decoded length, or -1. "=" alone
 * (SASL's empty response) decodes to 0 octets. */
long sasl_base64_decode(const char *in, size_t len, unsigned char *out, size_t outlen);

/* Encodes len octets; out needs 4 * ((len + 2) / 3) + 1 bytes. Returns the
 * length written (NUL-terminated), or -1 when out is too small. */
long sasl_base64_encode(const unsigned char *in, size_t len, char *out, size_t outlen);

/* A PLAIN response, base64 as sent: authzid NUL authcid NUL passwd.
 * authcid and passwd must be non-empty; authzid empty or equal to authcid
 * (ignoring case: no proxy logins). user (userlen > SASL_USER_MAX) gets
 * authcid and pass (passlen > SASL_PASS_MAX) the password, NUL-terminated.
 * Returns 0, or -1 with a short reason. */
int sasl_plain_parse(const char *b64, size_t len, char *user, size_t userlen, char *pass,
                     size_t passlen, const char **reason);

/* A single base64 line that carries one value (AUTH LOGIN's user name or
 * password): decoded, NUL-free, at most max octets, into out (outlen > max).
 * Returns 0 or -1. */
int sasl_decode_value(const char *b64, size_t len, char *out, size_t outlen, size_t max);

#endif
