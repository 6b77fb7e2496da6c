/* spf_record: the strict SPF record parser and the rewriter that turns a
 * valid record into one libspf2 accepts (spf.c fetches records, checks
 * them here, and hands libspf2 the rewrite; the tests and the fuzz target
 * use both directly). Pure functions on strings: no DNS, no libspf2, no
 * state, so any thread may call them. */
#ifndef POSTHORN_SPF_RECORD_H
#define POSTHORN_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>

#define SPF_RECORD_MAX 4096       /* longer records are a permerror */

/* The suffix of the exists: names spf_record_rewrite makes for the "/0"
 * a and mx checks libspf2 cannot express:
 * "<domain>.<a4|a6|mx4|mx6>" SPF_CIDR0_SUFFIX. spf.c's DNS layer answers
 * them by doing the check; the .invalid TLD (RFC 6761) never resolves. */
#define SPF_CIDR0_SUFFIX ".posthorn-cidr0.invalid"

/* "v=spf1" followed by a space or the end (RFC 7208 4.5): the test that
 * selects a domain's SPF record among its TXT records. */
bool spf_record_is_spf1(const char *s, size_t n);

/* The strict record parser (RFC 7208 4.6.1 ABNF with 5, 6 and 7.1):
 * returns 0 when `record` (len bytes, starting with "v=spf1") is valid, or
 * -1 with a short reason in why (nothing when why is NULL or whylen 0). */
int spf_record_check(const char *record, size_t len, char *why, size_t whylen);

/* Whether s[0..n) is a valid explain-string (RFC 7208 6.2, 7.1: macros
 * with the c, r and t letters, spaces allowed): the test an exp= TXT
 * record must pass to be used. */
bool spf_explain_string_ok(const char *s, size_t n);

/* The same record rewritten for libspf2 and a client of `family`
 * (AF_INET / AF_INET6), valid records only. "/0" terms, which libspf2
 * refuses, become equivalents:
 *   ip4:x/0  → ip4:0.0.0.0/1 ip4:128.0.0.0/1    (same qualifier)
 *   ip6:x/0  → ip6:::/1 ip6:8000::/1
 *   a/mx whose prefix for the client's family is 0 (they match when the
 *   name has any address of that family, or any MX host has) →
 *   exists:<domain>.<a4|a6|mx4|mx6>.posthorn-cidr0.invalid, which our DNS
 *   layer answers by doing that check;
 *   a/mx with "/0" for the other family only → that part dropped.
 * A redirect= goes last and is dropped when there is an "all" (RFC 7208
 * 6.1); unknown modifiers are dropped (6).
 * Returns the length written to out (NUL-terminated), or -1 when it does
 * not fit; SPF_REWRITE_MAX(len) bytes always suffice. */
#define SPF_REWRITE_MAX(len) ((len) * 25 + 512)
long spf_record_rewrite(const char *record, size_t len, int family, char *out, size_t outlen);

#endif
