/* imap_utf7: modified UTF-7 mailbox names (RFC 3501 5.1.3), converted to
 * and from UTF-8. Pure functions, no allocation. Decoding is strict: only
 * the canonical encoding of a name is accepted, so that every mailbox has
 * exactly one wire form (imap_utf7_to_utf8 followed by imap_utf8_to_utf7
 * gives back the input octet for octet). */
#ifndef POSTHORN_IMAP_UTF7_H
#define POSTHORN_IMAP_UTF7_H

#include <stdbool.h>
#include <stddef.h>

/* UTF-8 to modified UTF-7. The input must be valid UTF-8 (no overlong
 * forms, no surrogates, nothing above U+10FFFF) without NUL. Printable
 * US-ASCII stays as it is ("&" becomes "&-"); every other run of
 * characters becomes one "&...-" shift sequence. The result is written
 * NUL-terminated to out (*outlen octets without the NUL). Returns 0, or -1
 * with *err set ("invalid UTF-8", "name too long") when the input is bad or
 * out (outsize octets) is too small. */
int imap_utf8_to_utf7(const char *in, size_t len, char *out, size_t outsize, size_t *outlen,
                      const char **err);

/* Modified UTF-7 to UTF-8, NUL-terminated into out. Rejected: octets
 * outside printable US-ASCII, an unterminated shift, characters outside the
 * modified base64 alphabet, non-zero or excess padding bits, an empty shift
 * other than "&-", printable US-ASCII or NUL inside a shift, unpaired
 * surrogates, and two adjacent shifts (the canonical form merges them).
 * Returns 0, or -1 with *err set. */
int imap_utf7_to_utf8(const char *in, size_t len, char *out, size_t outsize, size_t *outlen,
                      const char **err);

/* Whether a name is canonical modified UTF-7 (imap_utf7_to_utf8 accepts it). */
bool imap_utf7_valid(const char *in, size_t len);

#endif
