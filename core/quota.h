/* quota: mailbox quotas, with docker-mailserver's meaning.
 *
 * The limit of a mailbox (quota_limit):
 *   ENABLE_QUOTAS=0                    → no limit;
 *   a quota set with `setup quota set` → that quota (0 = unlimited);
 *   otherwise POSTFIX_MAILBOX_SIZE_LIMIT (0 = unlimited).
 * The limit is read from accounts.db on every check, so `setup quota`
 * applies to the running daemon at once.
 *
 * The usage of a mailbox is the sum of its message sizes in every folder
 * (mailstore_usage). Scanning a big Maildir on every delivery would be
 * slow, so usage is cached per address for QUOTA_CACHE_TTL_MS and raised by
 * quota_charge after each delivery; changes made by other means (IMAP
 * expunge, files placed by other tools) show within that lifetime, or at
 * once after quota_forget. The cache is process-wide (one mail store per
 * process), bounded (QUOTA_CACHE_SLOTS entries, direct-mapped by address
 * hash: a collision only costs a rescan) and thread-safe.
 *
 * A message fits when usage + size stays within the limit, or, as with
 * Dovecot's default quota_grace of 10 % that docker-mailserver relies on,
 * when the mailbox is below its limit and usage + size stays within the
 * limit plus a tenth (the last message may take it a little over). A
 * mailbox at or over its limit takes nothing more; a message larger than
 * the limit plus the grace never fits.
 *
 * The check is soft in one more way, as Dovecot's: concurrent deliveries to one
 * mailbox are each checked against the usage before the others, so a
 * mailbox may end up over its limit by the messages in flight at once.
 *
 * quota_limit, quota_usage and quota_check block (SQLite, directory scans):
 * run them on worker threads. */
#ifndef POSTHORN_QUOTA_H
#define POSTHORN_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "accounts.h"
#include "mailstore.h"
#include "settings.h"

#define QUOTA_CACHE_TTL_MS 5000
#define QUOTA_CACHE_SLOTS 1024

enum quota_result {
    QUOTA_OK,        /* fits, or no limit */
    QUOTA_OVER,      /* does not fit now; may after the user deletes mail: 452 4.2.2 */
    QUOTA_TOO_BIG,   /* larger than limit + grace, can never fit: 552 5.2.2 */
};

struct quota_status {
    uint64_t limit;  /* 0 = unlimited (then usage is not computed and is 0) */
    uint64_t usage;
};

/* Parses a quota as `setup quota set` takes it: decimal digits with an
 * optional unit B, K/KB, M/MB, G/GB, T/TB (case-insensitive, 1024-based as
 * in docker-mailserver's dovecot-quotas.cf), e.g. 0, 500M, 1G, 10240K,
 * 20480. Returns false for anything else (empty, signs, spaces, fractions,
 * unknown units, more than ACCOUNTS_QUOTA_MAX bytes). */
bool quota_parse_size(const char *s, uint64_t *bytes);

/* The limit rule above as a pure function: user_quota is used when
 * has_user_quota. */
uint64_t quota_effective_limit(bool enable_quotas, bool has_user_quota, uint64_t user_quota,
                               uint64_t mailbox_size_limit);

/* The limit of address's mailbox (0 = unlimited). Returns 0, or -1 when the
 * quota cannot be read (logged). */
int quota_limit(struct accounts *a, const struct settings *st, const char *address,
                uint64_t *limit);

/* Octets in address's mailbox, from the cache when it is fresh. Returns 0,
 * or -1 when the mailbox cannot be read (logged). */
int quota_usage(struct mailstore *ms, const char *address, uint64_t *bytes);

/* The grace of a limit: what the last message may add beyond it. */
uint64_t quota_grace(uint64_t limit);

/* The fitting rule above for given numbers (limit not 0). */
enum quota_result quota_fits(uint64_t limit, uint64_t usage, uint64_t incoming);

/* Whether a message of `incoming` octets fits into address's mailbox.
 * incoming 0 asks whether any message still fits (usage below the limit):
 * the RCPT check, before the size is known. When the limit or the usage
 * cannot be read the answer is QUOTA_OK (logged): a broken quota lookup
 * must not refuse mail. out (may be NULL) gets the limit and usage. */
enum quota_result quota_check(struct accounts *a, struct mailstore *ms,
                              const struct settings *st, const char *address,
                              uint64_t incoming, struct quota_status *out);

/* After a delivery of `bytes` octets to address: raises the cached usage
 * (nothing when the address is not cached). */
void quota_charge(const char *address, uint64_t bytes);

/* Drops address's cached usage (after an expunge, for example). */
void quota_forget(const char *address);

/* Empties the cache and sets its lifetime in milliseconds (tests; the
 * daemon keeps QUOTA_CACHE_TTL_MS). */
void quota_cache_reset(unsigned ttl_ms);

#endif
