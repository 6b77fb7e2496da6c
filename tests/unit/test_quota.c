/* Unit tests of mailbox quotas: the size syntax of `setup quota set`, the
 * limit rules, the quotas table of accounts.db (and its migration), usage
 * computed from a temporary Maildir, and the usage cache. Everything lives
 * under one temporary directory, removed at the end. */
#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "accounts.h"
#include "mailstore.h"
#include "quota.h"
#include "test.h"

/* `openssl passwd -6 -salt abcdefgh secret`: cheap to verify. */
#define HASH "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG."
#define USER "alice@example.com"

static char top[64];        /* the temporary directory */
static char state_dir[96], mail_dir[96];
static char err[512];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p);
}

static void rm_rf(const char *p)
{
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static bool setup_dirs(void)
{
    snprintf(top, sizeof top, "/tmp/test_quota.XXXXXX");
    if (!mkdtemp(top))
        return false;
    snprintf(state_dir, sizeof state_dir, "%s/state", top);
    snprintf(mail_dir, sizeof mail_dir, "%s/mail", top);
    return mkdir(state_dir, 0700) == 0 && mkdir(mail_dir, 0700) == 0;
}

static struct accounts *open_accounts(void)
{
    struct accounts *a = accounts_open(state_dir, err, sizeof err);
    if (!a)
        fprintf(stderr, "accounts_open: %s\n", err);
    return a;
}

/* Creates every directory in path up to its last '/'. */
static void mkdir_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
}

/* Writes content to MAIL_DIR/rel, creating its directories. */
static void put_file(const char *rel, const char *content)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", mail_dir, rel);
    mkdir_parents(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_INT(write(fd, content, strlen(content)), (long long)strlen(content));
        close(fd);
    }
}

static int deliver(struct mailstore *ms, const char *addr, const char *folder, size_t size)
{
    char *body = malloc(size);
    if (!body)
        return -1;
    memset(body, 'x', size);
    struct iovec iov = { body, size };
    struct mailstore_target t = { .address = addr, .folder = folder };
    int rc = mailstore_deliver(ms, &iov, 1, &t, 1, err, sizeof err);
    free(body);
    return rc;
}

/* --- sizes ---------------------------------------------------------------- */

static uint64_t size_of(const char *s)
{
    uint64_t v = 12345;
    return quota_parse_size(s, &v) ? v : (uint64_t)-1;
}

TEST(size_units)
{
    CHECK_INT(size_of("0"), 0);
    CHECK_INT(size_of("20480"), 20480);
    CHECK_INT(size_of("1B"), 1);
    CHECK_INT(size_of("20K"), 20480);
    CHECK_INT(size_of("20k"), 20480);
    CHECK_INT(size_of("10240K"), 10485760);
    CHECK_INT(size_of("2KB"), 2048);
    CHECK_INT(size_of("500M"), 500LL << 20);
    CHECK_INT(size_of("3mb"), 3LL << 20);
    CHECK_INT(size_of("1G"), 1LL << 30);
    CHECK_INT(size_of("1gB"), 1LL << 30);
    CHECK_INT(size_of("2T"), 2LL << 40);
    CHECK_INT(size_of("0M"), 0);
    CHECK_INT(size_of("007"), 7);
}

TEST(size_junk)
{
    static const char *const bad[] = {
        "", "M", "-1", "+1", " 1", "1 ", "1 M", "1.5M", "1,5M", "1X", "1BB", "1KiB",
        "1MBB", "1Mb ", "0x10", "1e6", "12K3", "K1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 99;
        if (quota_parse_size(bad[i], &v))
            fprintf(stderr, "accepted: '%s'\n", bad[i]);
        CHECK(!quota_parse_size(bad[i], &v));
        CHECK_INT(v, 99);   /* untouched on failure */
    }
    uint64_t v;
    CHECK(!quota_parse_size(NULL, &v));
}

TEST(size_overflow)
{
    CHECK_INT(size_of("9223372036854775807"), INT64_MAX);
    CHECK(size_of("9223372036854775808") == (uint64_t)-1);
    CHECK(size_of("18446744073709551616") == (uint64_t)-1);
    CHECK(size_of("99999999999999999999999999") == (uint64_t)-1);
    CHECK_INT(size_of("8388607T"), 8388607LL << 40);
    CHECK(size_of("8388608T") == (uint64_t)-1);   /* 2^63 */
    CHECK(size_of("9007199254740992K") == (uint64_t)-1);
}

/* --- limits ------------------------------------------------------------------ */

TEST(effective_limit_rules)
{
    CHECK_INT(quota_effective_limit(false, true, 100, 200), 0);
    CHECK_INT(quota_effective_limit(false, false, 0, 200), 0);
    CHECK_INT(quota_effective_limit(true, true, 100, 200), 100);
    CHECK_INT(quota_effective_limit(true, true, 0, 200), 0);    /* own 0 = unlimited */
    CHECK_INT(quota_effective_limit(true, false, 0, 200), 200);
    CHECK_INT(quota_effective_limit(true, false, 0, 0), 0);
}

TEST(accounts_quotas)
{
    struct accounts *a = open_accounts();
    CHECK(a != NULL);
    if (!a)
        return;
    uint64_t v = 7;
    CHECK_INT(accounts_user_add(a, USER, HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_NO_SUCH_USER);
    CHECK_INT(v, 0);
    CHECK_INT(accounts_quota_set(a, "bob@example.com", 10, err, sizeof err),
              ACCOUNTS_NO_SUCH_USER);
    CHECK(strstr(err, "bob@example.com") != NULL);
    CHECK_INT(accounts_quota_del(a, "bob@example.com", err, sizeof err), ACCOUNTS_NO_SUCH_USER);
    CHECK_INT(accounts_quota_set(a, "not an address", 10, err, sizeof err), ACCOUNTS_INVALID);
    CHECK_INT(accounts_quota_set(a, USER, ACCOUNTS_QUOTA_MAX + 1, err, sizeof err),
              ACCOUNTS_INVALID);

    CHECK_INT(accounts_quota_set(a, "Alice@Example.COM", 20480, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_OK);
    CHECK_INT(v, 20480);
    CHECK_INT(accounts_quota_set(a, USER, 0, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_OK);
    CHECK_INT(v, 0);
    CHECK_INT(accounts_quota_set(a, USER, ACCOUNTS_QUOTA_MAX, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_OK);
    CHECK(v == ACCOUNTS_QUOTA_MAX);

    CHECK_INT(accounts_quota_del(a, USER, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_NO_SUCH_USER);
    CHECK_INT(accounts_quota_del(a, USER, err, sizeof err), ACCOUNTS_OK);   /* idempotent */

    /* The quota goes with the user: a re-added user starts without one. */
    CHECK_INT(accounts_quota_set(a, USER, 5, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_user_del(a, USER, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_user_add(a, USER, HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_NO_SUCH_USER);

    /* Persisted, and seen by another handle (setup vs the daemon). */
    struct accounts *b = open_accounts();
    CHECK(b != NULL);
    CHECK_INT(accounts_quota_set(a, USER, 4096, err, sizeof err), ACCOUNTS_OK);
    if (b) {
        CHECK_INT(accounts_quota_get(b, USER, &v), ACCOUNTS_OK);
        CHECK_INT(v, 4096);
        accounts_close(b);
    }
    accounts_close(a);
}

/* A version-2 database (before quotas) gains the table when opened. */
TEST(accounts_migration_from_v2)
{
    char path[256];
    snprintf(path, sizeof path, "%s/accounts.db", state_dir);
    sqlite3 *db = NULL;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "DROP TABLE quotas; PRAGMA user_version = 2;", NULL, NULL, NULL),
              SQLITE_OK);
    sqlite3_close(db);
    struct accounts *a = open_accounts();
    CHECK(a != NULL);
    if (!a)
        return;
    uint64_t v;
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_NO_SUCH_USER);
    CHECK_INT(accounts_quota_set(a, USER, 1234, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_quota_get(a, USER, &v), ACCOUNTS_OK);
    CHECK_INT(v, 1234);
    accounts_close(a);
    db = NULL;
    int version = -1;
    sqlite3_stmt *st;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    CHECK_INT(version, 3);
}

TEST(limit_from_settings)
{
    struct accounts *a = open_accounts();
    CHECK(a != NULL);
    if (!a)
        return;
    struct settings st = { .enable_quotas = true, .mailbox_size_limit = 1000000 };
    uint64_t limit = 1;
    CHECK_INT(accounts_quota_del(a, USER, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(quota_limit(a, &st, USER, &limit), 0);
    CHECK_INT(limit, 1000000);
    CHECK_INT(quota_limit(a, &st, "nobody@example.com", &limit), 0);
    CHECK_INT(limit, 1000000);
    CHECK_INT(accounts_quota_set(a, USER, 20480, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(quota_limit(a, &st, USER, &limit), 0);
    CHECK_INT(limit, 20480);
    CHECK_INT(accounts_quota_set(a, USER, 0, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(quota_limit(a, &st, USER, &limit), 0);
    CHECK_INT(limit, 0);
    CHECK_INT(accounts_quota_set(a, USER, 20480, err, sizeof err), ACCOUNTS_OK);
    st.enable_quotas = false;
    CHECK_INT(quota_limit(a, &st, USER, &limit), 0);
    CHECK_INT(limit, 0);
    accounts_close(a);
}

/* --- usage ------------------------------------------------------------------- */

TEST(usage_from_maildir)
{
    struct mailstore *ms = mailstore_open(mail_dir, "test.host", err, sizeof err);
    CHECK(ms != NULL);
    if (!ms)
        return;
    uint64_t u = 99;
    CHECK_INT(mailstore_usage(ms, "carol@example.com", &u), 0);   /* no mailbox yet */
    CHECK_INT(u, 0);
    CHECK_INT(mailstore_usage(ms, "../etc@example.com", &u), -1);
    CHECK_INT(mailstore_usage(ms, "no-at-sign", &u), -1);

    CHECK_INT(deliver(ms, "carol@example.com", NULL, 1000), 0);
    CHECK_INT(deliver(ms, "carol@example.com", NULL, 234), 0);
    CHECK_INT(deliver(ms, "carol@example.com", "Junk", 500), 0);
    CHECK_INT(deliver(ms, "carol@example.com", "Archive.2024", 66), 0);
    CHECK_INT(mailstore_usage(ms, "carol@example.com", &u), 0);
    CHECK_INT(u, 1800);

    /* Files from other tools: S= in the name is believed (no stat), a
     * name without it is measured, tmp/ and dot files are not counted. */
    put_file("example.com/carol/cur/1.M1P1.other,S=4000,W=4100:2,S", "short");
    put_file("example.com/carol/.Sent/cur/2.M2P2.other:2,S", "twelve bytes");
    put_file("example.com/carol/new/3.M3P3.other,S=x", "seven b");
    put_file("example.com/carol/tmp/4.M4P4.other,S=100000", "in flight");
    put_file("example.com/carol/cur/.hidden", "ignored");
    CHECK_INT(mailstore_usage(ms, "carol@example.com", &u), 0);
    CHECK_INT(u, 1800 + 4000 + 12 + 7);
    mailstore_close(ms);
}

TEST(usage_cache)
{
    struct mailstore *ms = mailstore_open(mail_dir, "test.host", err, sizeof err);
    CHECK(ms != NULL);
    if (!ms)
        return;
    const char *dave = "dave@example.com";
    quota_cache_reset(60000);
    uint64_t u = 99;
    CHECK_INT(quota_usage(ms, dave, &u), 0);
    CHECK_INT(u, 0);
    CHECK_INT(deliver(ms, dave, NULL, 300), 0);
    CHECK_INT(quota_usage(ms, dave, &u), 0);
    CHECK_INT(u, 0);                  /* cached: not rescanned */
    quota_charge(dave, 300);
    CHECK_INT(quota_usage(ms, dave, &u), 0);
    CHECK_INT(u, 300);                /* the delivery path keeps it current */
    quota_charge("erin@example.com", 50);   /* not cached: nothing to raise */
    CHECK_INT(quota_usage(ms, "erin@example.com", &u), 0);
    CHECK_INT(u, 0);

    CHECK_INT(deliver(ms, dave, NULL, 20), 0);
    quota_forget(dave);
    CHECK_INT(quota_usage(ms, dave, &u), 0);
    CHECK_INT(u, 320);                /* rescanned */

    /* An expired entry is rescanned (lifetime 0: always). */
    quota_cache_reset(0);
    CHECK_INT(quota_usage(ms, dave, &u), 0);
    CHECK_INT(deliver(ms, dave, "Junk", 5), 0);
    CHECK_INT(quota_usage(ms, dave, &u), 0);
    CHECK_INT(u, 325);
    CHECK_INT(quota_usage(ms, "bad/name@example.com", &u), -1);
    quota_cache_reset(QUOTA_CACHE_TTL_MS);
    mailstore_close(ms);
}

/* Many addresses through the small direct-mapped cache: collisions evict,
 * never mix up two mailboxes. */
TEST(usage_cache_collisions)
{
    struct mailstore *ms = mailstore_open(mail_dir, "test.host", err, sizeof err);
    CHECK(ms != NULL);
    if (!ms)
        return;
    quota_cache_reset(60000);
    char addr[64];
    bool ok = true;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3 * QUOTA_CACHE_SLOTS; i++) {
            snprintf(addr, sizeof addr, "u%d@example.net", i);
            uint64_t u = 1;
            if (round == 0)
                quota_charge(addr, 5);      /* uncached: no effect */
            ok &= quota_usage(ms, addr, &u) == 0 && u == 0;
            if (round == 1 && i == 7) {
                quota_charge(addr, 11);
                ok &= quota_usage(ms, addr, &u) == 0 && u == 11;
            }
        }
    }
    CHECK(ok);
    quota_cache_reset(QUOTA_CACHE_TTL_MS);
    mailstore_close(ms);
}

/* --- the check --------------------------------------------------------------- */

TEST(fits_rule)
{
    CHECK_INT(quota_grace(20480), 2048);
    CHECK_INT(quota_grace(9), 0);
    CHECK_INT(quota_fits(1000, 0, 1000), QUOTA_OK);
    CHECK_INT(quota_fits(1000, 0, 1100), QUOTA_OK);          /* grace into an empty box */
    CHECK_INT(quota_fits(1000, 0, 1101), QUOTA_TOO_BIG);
    CHECK_INT(quota_fits(1000, 999, 101), QUOTA_OK);
    CHECK_INT(quota_fits(1000, 999, 102), QUOTA_OVER);
    CHECK_INT(quota_fits(1000, 1000, 1), QUOTA_OVER);        /* full: nothing more */
    CHECK_INT(quota_fits(1000, 1050, 1), QUOTA_OVER);
    CHECK_INT(quota_fits(1000, UINT64_MAX, 1), QUOTA_OVER);  /* no wrap-around */
    CHECK_INT(quota_fits(1000, UINT64_MAX - 5, 1000), QUOTA_OVER);
    CHECK_INT(quota_fits(ACCOUNTS_QUOTA_MAX, 0, ACCOUNTS_QUOTA_MAX), QUOTA_OK);
    CHECK_INT(quota_fits(ACCOUNTS_QUOTA_MAX, ACCOUNTS_QUOTA_MAX, 1), QUOTA_OVER);
    CHECK_INT(quota_fits(1, 0, 1), QUOTA_OK);
    CHECK_INT(quota_fits(1, 0, 2), QUOTA_TOO_BIG);
}

TEST(check_rules)
{
    struct accounts *a = open_accounts();
    struct mailstore *ms = mailstore_open(mail_dir, "test.host", err, sizeof err);
    CHECK(a != NULL && ms != NULL);
    if (!a || !ms) {
        accounts_close(a);
        mailstore_close(ms);
        return;
    }
    quota_cache_reset(60000);
    struct settings st = { .enable_quotas = true };
    struct quota_status q;
    /* alice: 20480 bytes; holds 20000 */
    CHECK_INT(accounts_quota_set(a, USER, 20480, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(deliver(ms, USER, NULL, 20000), 0);
    CHECK_INT(quota_check(a, ms, &st, USER, 480, &q), QUOTA_OK);
    CHECK_INT(q.limit, 20480);
    CHECK_INT(q.usage, 20000);
    CHECK_INT(quota_check(a, ms, &st, USER, 481, &q), QUOTA_OK);     /* grace: 2048 */
    CHECK_INT(quota_check(a, ms, &st, USER, 2528, &q), QUOTA_OK);
    CHECK_INT(quota_check(a, ms, &st, USER, 2529, &q), QUOTA_OVER);
    CHECK_INT(quota_check(a, ms, &st, USER, 0, &q), QUOTA_OK);
    CHECK_INT(quota_check(a, ms, &st, USER, 22528, &q), QUOTA_OVER);
    CHECK_INT(quota_check(a, ms, &st, USER, 22529, &q), QUOTA_TOO_BIG);
    quota_charge(USER, 480);          /* exactly full */
    CHECK_INT(quota_check(a, ms, &st, USER, 0, &q), QUOTA_OVER);
    CHECK_INT(quota_check(a, ms, &st, USER, 1, NULL), QUOTA_OVER);
    CHECK_INT(quota_check(a, ms, &st, USER, 20480, NULL), QUOTA_OVER);

    /* A raised quota applies at once (the limit is not cached). */
    CHECK_INT(accounts_quota_set(a, USER, 1 << 20, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(quota_check(a, ms, &st, USER, 1000, NULL), QUOTA_OK);
    /* Quota 0: unlimited, usage not even computed. */
    CHECK_INT(accounts_quota_set(a, USER, 0, err, sizeof err), ACCOUNTS_OK);
    st.mailbox_size_limit = 10;
    CHECK_INT(quota_check(a, ms, &st, USER, 1000, &q), QUOTA_OK);
    CHECK_INT(q.limit, 0);
    CHECK_INT(q.usage, 0);
    /* Without a quota of its own: POSTFIX_MAILBOX_SIZE_LIMIT. */
    CHECK_INT(accounts_quota_del(a, USER, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(quota_check(a, ms, &st, USER, 0, &q), QUOTA_OVER);
    CHECK_INT(q.limit, 10);
    CHECK_INT(quota_check(a, ms, &st, USER, 12, NULL), QUOTA_TOO_BIG);   /* 10 + 1 grace */
    st.mailbox_size_limit = 0;
    CHECK_INT(quota_check(a, ms, &st, USER, 1 << 30, NULL), QUOTA_OK);
    /* ENABLE_QUOTAS=0 ignores everything. */
    CHECK_INT(accounts_quota_set(a, USER, 1, err, sizeof err), ACCOUNTS_OK);
    st.enable_quotas = false;
    st.mailbox_size_limit = 1;
    CHECK_INT(quota_check(a, ms, &st, USER, 1 << 30, NULL), QUOTA_OK);
    quota_cache_reset(QUOTA_CACHE_TTL_MS);
    accounts_close(a);
    mailstore_close(ms);
}

int main(void)
{
    if (!setup_dirs()) {
        fprintf(stderr, "cannot create the temporary directories\n");
        return 1;
    }
    RUN(size_units);
    RUN(size_junk);
    RUN(size_overflow);
    RUN(effective_limit_rules);
    RUN(accounts_quotas);
    RUN(accounts_migration_from_v2);
    RUN(limit_from_settings);
    RUN(usage_from_maildir);
    RUN(usage_cache);
    RUN(usage_cache_collisions);
    RUN(fits_rule);
    RUN(check_rules);
    quota_cache_reset(QUOTA_CACHE_TTL_MS);   /* frees the cached names */
    rm_rf(top);
    return test_summary();
}
