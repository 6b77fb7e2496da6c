/* accounts: domains, users, aliases, quotas and relays in
 * STATE_DIR/accounts.db (SQLite, WAL mode). The schema carries a version
 * (PRAGMA user_version) and is migrated in place when opened.
 *
 * Every query reads the database afresh, so a change committed by `setup`
 * applies to the daemon's next lookup with no reload. All functions block
 * (SQLite); in the daemon they run on worker threads. One handle may be
 * used from several threads: calls on it are serialized internally.
 *
 * Addresses are stored lowercased, as "localpart@domain". A domain is local
 * when a user or an alias source exists in it (the domains table is kept in
 * step by the add and delete functions).
 *
 * Recipient resolution (accounts_resolve), for a lowercased address:
 *   1. an alias whose source is the address → its targets, each resolved
 *      again (aliases of aliases, up to 10 levels, duplicates removed);
 *   2. a user with that address → the user;
 *   3. plus-addressing: "local+tag@domain" retried as "local@domain" (1, 2);
 *   4. a catch-all alias "@domain" → its targets;
 *   5. otherwise: ACCOUNTS_NO_SUCH_USER when the domain is local,
 *      ACCOUNTS_NOT_LOCAL when it is not.
 * Targets that are not local users (forwarding to other domains) are
 * returned in `remote`. */
#ifndef POSTHORN_ACCOUNTS_H
#define POSTHORN_ACCOUNTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ACCOUNTS_ADDR_MAX 320   /* 64 local + @ + 255 domain */

struct accounts;

enum accounts_result {
    ACCOUNTS_OK = 0,
    ACCOUNTS_NO_SUCH_USER,
    ACCOUNTS_NOT_LOCAL,
    ACCOUNTS_EXISTS,       /* add: already there (or the other kind exists) */
    ACCOUNTS_INVALID,      /* an argument is not a valid address */
    ACCOUNTS_ERROR,        /* database error; reason logged / in err */
};

/* Dynamic list of addresses; free with accounts_list_free. */
struct accounts_list {
    char **items;
    size_t n;
};
void accounts_list_free(struct accounts_list *l);

/* Opens (creating the file and schema when missing) STATE_DIR/accounts.db.
 * Returns NULL with a reason in err. */
struct accounts *accounts_open(const char *state_dir, char *err, size_t errlen);
void accounts_close(struct accounts *a);

/* Recipient resolution as described above. On ACCOUNTS_OK, `local` holds
 * the user addresses to deliver to and `remote` the forwarding targets;
 * both are initialised by the call and must be freed by the caller (they
 * are empty on any other result). The input is normalised first
 * (ACCOUNTS_INVALID when it is not a valid address). Alias targets that
 * are missing users of a local domain, or deeper than 10 levels, are
 * skipped with a warning in the log; when nothing at all is left (e.g. an
 * alias loop with no user in it) the result is ACCOUNTS_NO_SUCH_USER.
 * At most 1000 addresses are expanded per call (ACCOUNTS_ERROR beyond). */
enum accounts_result accounts_resolve(struct accounts *a, const char *address,
                                      struct accounts_list *local,
                                      struct accounts_list *remote);

bool accounts_domain_is_local(struct accounts *a, const char *domain);

/* True when address is a user and password matches its hash. The
 * database lock is not held while hashing; an unknown user costs the same
 * hashing time as a known one. */
bool accounts_check_password(struct accounts *a, const char *address, const char *password);

/* Management (the setup CLI and the entrypoint's importer). `hash` is a
 * crypt(3) string (see password.h). err gets a one-line reason on failure,
 * such as "alice@example.com is an alias" or "already exists". */
enum accounts_result accounts_user_add(struct accounts *a, const char *address, const char *hash,
                                       char *err, size_t errlen);
enum accounts_result accounts_user_set_hash(struct accounts *a, const char *address,
                                            const char *hash, char *err, size_t errlen);
enum accounts_result accounts_user_del(struct accounts *a, const char *address,
                                       char *err, size_t errlen);
/* Users, sorted. */
enum accounts_result accounts_user_list(struct accounts *a, struct accounts_list *out);

/* alias may be "@domain" (catch-all). target is a full address.
 * alias_add refuses an alias whose source is a user (ACCOUNTS_EXISTS), a
 * duplicate pair (ACCOUNTS_EXISTS) and an alias to itself
 * (ACCOUNTS_INVALID). Deleting a missing user or alias pair gives
 * ACCOUNTS_NO_SUCH_USER. user_del keeps aliases that point to the user
 * (as docker-mailserver does). */
enum accounts_result accounts_alias_add(struct accounts *a, const char *alias, const char *target,
                                        char *err, size_t errlen);
enum accounts_result accounts_alias_del(struct accounts *a, const char *alias, const char *target,
                                        char *err, size_t errlen);
/* "alias target" pairs, sorted, one string each. */
enum accounts_result accounts_alias_list(struct accounts *a, struct accounts_list *out);

/* Address validation and normalisation shared by setup and the daemon:
 * lowercases into out and checks "local@domain" with a dot-atom local part
 * (letters, digits, !#$%&'*+-=?^_`{|}~ and dots; no '/'; no leading, trailing or
 * double dot, at most 64 octets) and a domain of LDH labels. Returns true
 * when valid; *changed says whether lowercasing changed it (setup warns).
 * Quoted local parts and non-ASCII are refused. The domain rules are those
 * of accounts_normalize_domain. out may be the same buffer as in. */
bool accounts_normalize_address(const char *in, char *out, size_t outlen, bool *changed);

/* Relays by sender domain (schema v2; relay.h decides with them).
 * Passwords for relays are stored retrievable (plaintext in the 0600
 * database), since they must be presented to the relay, as
 * docker-mailserver's postfix-sasl-password.cf does. */
#define ACCOUNTS_RELAY_SECRET_MAX 256

struct accounts_relay {
    char host[256];        /* "" = no relay added for the domain */
    unsigned port;         /* with host */
    char user[ACCOUNTS_RELAY_SECRET_MAX];      /* "" = no credentials for the domain */
    char password[ACCOUNTS_RELAY_SECRET_MAX];
    bool excluded;         /* setup relay exclude-domain: not through RELAY_HOST */
};

/* Sets (replacing) the relay for mail from domain: host is a host name or
 * an IP literal (used as given, no MX lookup, like Postfix's "[host]"),
 * port 1..65535. ACCOUNTS_INVALID with a reason for a bad argument. */
enum accounts_result accounts_relay_add_domain(struct accounts *a, const char *domain,
                                               const char *host, unsigned port, char *err,
                                               size_t errlen);
/* Sets (replacing) the credentials used for mail from domain. */
enum accounts_result accounts_relay_add_auth(struct accounts *a, const char *domain,
                                             const char *user, const char *password, char *err,
                                             size_t errlen);
/* Mail from domain does not go through RELAY_HOST. Idempotent. */
enum accounts_result accounts_relay_exclude_domain(struct accounts *a, const char *domain,
                                                   char *err, size_t errlen);
/* Everything stored for domain (lowercased first); an empty result when
 * nothing is. "" (the null sender) gives an empty result. ACCOUNTS_INVALID
 * for a malformed domain, ACCOUNTS_ERROR on a database error (logged). */
enum accounts_result accounts_relay_lookup(struct accounts *a, const char *domain,
                                           struct accounts_relay *out);
/* "domain relay host:port", "domain auth user", "domain excluded" lines,
 * sorted by domain (no passwords). */
enum accounts_result accounts_relay_list(struct accounts *a, struct accounts_list *out);

#define ACCOUNTS_LOCAL_MAX 64
#define ACCOUNTS_DOMAIN_MAX 253

/* Domain validation and normalisation (lowercased into out): labels of
 * letters, digits and '-' (not first or last), 1..63 octets each, at most
 * 253 octets in all, and at least one dot (a bare "localhost" is refused);
 * no trailing dot. Returns true when valid. */
bool accounts_normalize_domain(const char *in, char *out, size_t outlen, bool *changed);

/* Per-user mailbox quotas in bytes (schema v3; `setup quota`). 0 means
 * unlimited, even when POSTFIX_MAILBOX_SIZE_LIMIT is set (quota.h applies
 * the rules). A quota belongs to a user: set and del give
 * ACCOUNTS_NO_SUCH_USER (with a reason in err) for an address that is not
 * a user, and deleting the user deletes the quota. del of a user without a
 * quota succeeds. set gives ACCOUNTS_INVALID above ACCOUNTS_QUOTA_MAX. */
#define ACCOUNTS_QUOTA_MAX ((uint64_t)INT64_MAX)

enum accounts_result accounts_quota_set(struct accounts *a, const char *address, uint64_t bytes,
                                        char *err, size_t errlen);
enum accounts_result accounts_quota_del(struct accounts *a, const char *address, char *err,
                                        size_t errlen);
/* The user's own quota: ACCOUNTS_OK with *bytes, ACCOUNTS_NO_SUCH_USER when
 * none is set (whether or not the user exists), ACCOUNTS_INVALID for a
 * malformed address, ACCOUNTS_ERROR on a database error (logged). */
enum accounts_result accounts_quota_get(struct accounts *a, const char *address, uint64_t *bytes);

#endif
