#include "accounts.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "password.h"
#include "test.h"

/* `openssl passwd -6 -salt abcdefgh secret`: cheap to verify, unlike yescrypt. */
#define HASH "{SHA512-CRYPT}$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG."

static char state_dir[256];
static char err[256];

static struct accounts *open_fresh(void)
{
    snprintf(state_dir, sizeof state_dir, "/tmp/test_accounts.XXXXXX");
    if (!mkdtemp(state_dir))
        return NULL;
    struct accounts *a = accounts_open(state_dir, err, sizeof err);
    if (!a)
        fprintf(stderr, "accounts_open: %s\n", err);
    return a;
}

static void remove_state(void)
{
    static const char *const files[] = { "accounts.db", "accounts.db-wal", "accounts.db-shm" };
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", state_dir, files[i]);
        unlink(path);
    }
    rmdir(state_dir);
}

static void close_fresh(struct accounts *a)
{
    accounts_close(a);
    remove_state();
}

/* Joins a list into "a,b,c" for compact comparisons. */
static const char *join(const struct accounts_list *l)
{
    static char out[2048];
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < l->n; i++)
        off += (size_t)snprintf(out + off, sizeof out - off, "%s%s", i ? "," : "", l->items[i]);
    return out;
}

/* Resolves and returns "<result>|local|remote". */
static const char *resolve(struct accounts *a, const char *addr)
{
    static char out[4096];
    struct accounts_list local, remote;
    enum accounts_result r = accounts_resolve(a, addr, &local, &remote);
    char l[2048];
    snprintf(l, sizeof l, "%s", join(&local));
    snprintf(out, sizeof out, "%d|%s|%s", (int)r, l, join(&remote));
    accounts_list_free(&local);
    accounts_list_free(&remote);
    return out;
}

TEST(normalize_good)
{
    char out[ACCOUNTS_ADDR_MAX + 1];
    bool changed = true;
    CHECK(accounts_normalize_address("alice@example.com", out, sizeof out, &changed));
    CHECK_STR(out, "alice@example.com");
    CHECK(!changed);
    CHECK(accounts_normalize_address("Alice.B@Mail.Example.COM", out, sizeof out, &changed));
    CHECK_STR(out, "alice.b@mail.example.com");
    CHECK(changed);
    CHECK(accounts_normalize_address("a+tag!#$%&'*=?^_`{|}~-@x-y.example", out, sizeof out, NULL));
    CHECK(accounts_normalize_address("1@2.3", out, sizeof out, NULL));
    char local64[128];
    memset(local64, 'a', 64);
    snprintf(local64 + 64, sizeof local64 - 64, "@example.com");
    CHECK(accounts_normalize_address(local64, out, sizeof out, NULL));
}

TEST(normalize_bad)
{
    char out[ACCOUNTS_ADDR_MAX + 1];
    static const char *const bad[] = {
        "", "alice", "@example.com", "alice@", "alice@example", "alice@localhost",
        "a/b@example.com", "../x@example.com", "..@example.com", ".a@example.com",
        "a.@example.com", "a..b@example.com", "\"a b\"@example.com", "\"a\"@example.com",
        "a b@example.com", "a@b@example.com", "a@exa_mple.com", "a@-example.com",
        "a@example-.com", "a@example..com", "a@.example.com", "a@example.com.",
        "a@exam/ple.com", "a@../example.com", "caf\xc3\xa9@example.com", "a\n@example.com",
        "a@example.com\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (accounts_normalize_address(bad[i], out, sizeof out, NULL)) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(0);
        }
    }
    char local65[128];
    memset(local65, 'a', 65);
    snprintf(local65 + 65, sizeof local65 - 65, "@example.com");
    CHECK(!accounts_normalize_address(local65, out, sizeof out, NULL));
    char label64[128];
    memset(label64, 'b', 64);
    snprintf(label64 + 64, sizeof label64 - 64, ".com");
    CHECK(!accounts_normalize_domain(label64, out, sizeof out, NULL));
    label64[1] = '.';
    CHECK(accounts_normalize_domain(label64, out, sizeof out, NULL));
    char longdom[300];
    memset(longdom, 'c', sizeof longdom);
    for (size_t i = 50; i < 290; i += 51)
        longdom[i] = '.';
    longdom[254] = '\0';    /* 254 octets: one too many */
    CHECK(!accounts_normalize_domain(longdom, out, sizeof out, NULL));
    longdom[253] = '\0';
    CHECK(accounts_normalize_domain(longdom, out, sizeof out, NULL));
    CHECK(!accounts_normalize_address("alice@example.com", out, 10, NULL));
    CHECK(!accounts_normalize_address(NULL, out, sizeof out, NULL));
}

TEST(open_sets_schema_mode_and_wal)
{
    struct accounts *a = open_fresh();
    CHECK(a != NULL);
    if (!a)
        return;
    char path[512];
    snprintf(path, sizeof path, "%s/accounts.db", state_dir);
    struct stat st;
    CHECK_INT(stat(path, &st), 0);
    CHECK_INT(st.st_mode & 0777, 0600);
    accounts_close(a);
    sqlite3 *db;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_step(s), SQLITE_ROW);
    CHECK_INT(sqlite3_column_int(s, 0), 3);   /* v3: quotas */
    sqlite3_finalize(s);
    CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    CHECK_INT(sqlite3_step(s), SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    /* A database from a newer program is refused, not downgraded. */
    CHECK_INT(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    err[0] = '\0';
    a = accounts_open(state_dir, err, sizeof err);
    CHECK(a == NULL);
    CHECK(strstr(err, "newer") != NULL);
    accounts_close(a);
    remove_state();
}

TEST(open_missing_dir_fails)
{
    err[0] = '\0';
    CHECK(accounts_open("/nonexistent/posthorn-test", err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

TEST(users_add_list_del)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    CHECK_INT(accounts_user_add(a, "bob@example.com", HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_user_add(a, "Alice@Example.com", HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_user_add(a, "alice@example.com", HASH, err, sizeof err), ACCOUNTS_EXISTS);
    CHECK(strstr(err, "already exists") != NULL);
    CHECK_INT(accounts_user_add(a, "bad", HASH, err, sizeof err), ACCOUNTS_INVALID);
    CHECK_INT(accounts_user_add(a, "c@example.com", "{PLAIN}x", err, sizeof err), ACCOUNTS_INVALID);
    CHECK_INT(accounts_user_add(a, "c@example.com", NULL, err, sizeof err), ACCOUNTS_INVALID);
    struct accounts_list l;
    CHECK_INT(accounts_user_list(a, &l), ACCOUNTS_OK);
    CHECK_STR(join(&l), "alice@example.com,bob@example.com");
    accounts_list_free(&l);
    CHECK(accounts_domain_is_local(a, "example.com"));
    CHECK(accounts_domain_is_local(a, "EXAMPLE.com"));
    CHECK(!accounts_domain_is_local(a, "example.org"));
    CHECK_INT(accounts_user_del(a, "bob@example.com", err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_user_del(a, "bob@example.com", err, sizeof err), ACCOUNTS_NO_SUCH_USER);
    CHECK(accounts_domain_is_local(a, "example.com"));
    CHECK_INT(accounts_user_del(a, "ALICE@example.com", err, sizeof err), ACCOUNTS_OK);
    CHECK(!accounts_domain_is_local(a, "example.com"));
    CHECK_INT(accounts_user_list(a, &l), ACCOUNTS_OK);
    CHECK_INT(l.n, 0);
    accounts_list_free(&l);
    close_fresh(a);
}

TEST(passwords)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    CHECK_INT(accounts_user_add(a, "alice@example.com", HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK(accounts_check_password(a, "alice@example.com", "secret"));
    CHECK(accounts_check_password(a, "ALICE@example.com", "secret"));
    CHECK(!accounts_check_password(a, "alice@example.com", "Secret"));
    CHECK(!accounts_check_password(a, "nobody@example.com", "secret"));
    CHECK(!accounts_check_password(a, "alice@example.com", ""));
    char h[256];
    CHECK_INT(password_hash("n3w", h, sizeof h), 0);
    CHECK_INT(accounts_user_set_hash(a, "alice@example.com", h, err, sizeof err), ACCOUNTS_OK);
    CHECK(accounts_check_password(a, "alice@example.com", "n3w"));
    CHECK(!accounts_check_password(a, "alice@example.com", "secret"));
    CHECK_INT(accounts_user_set_hash(a, "nobody@example.com", h, err, sizeof err),
              ACCOUNTS_NO_SUCH_USER);
    CHECK_INT(accounts_user_set_hash(a, "alice@example.com", "plain", err, sizeof err),
              ACCOUNTS_INVALID);
    close_fresh(a);
}

TEST(aliases_add_del_list_conflicts)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    CHECK_INT(accounts_user_add(a, "alice@example.com", HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_alias_add(a, "info@example.com", "alice@example.com", err, sizeof err),
              ACCOUNTS_OK);
    CHECK_INT(accounts_alias_add(a, "Info@example.com", "alice@example.com", err, sizeof err),
              ACCOUNTS_EXISTS);
    CHECK(strstr(err, "already exists") != NULL);
    /* alias source that is a user, user that is an alias source */
    CHECK_INT(accounts_alias_add(a, "alice@example.com", "x@example.org", err, sizeof err),
              ACCOUNTS_EXISTS);
    CHECK(strstr(err, "alice@example.com") != NULL);
    CHECK_INT(accounts_user_add(a, "info@example.com", HASH, err, sizeof err), ACCOUNTS_EXISTS);
    CHECK(strstr(err, "is an alias") != NULL);
    CHECK_INT(accounts_alias_add(a, "self@example.com", "self@example.com", err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_alias_add(a, "a/b@example.com", "alice@example.com", err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_alias_add(a, "@example.net", "alice@example.com", err, sizeof err),
              ACCOUNTS_OK);
    CHECK_INT(accounts_alias_add(a, "@bad", "alice@example.com", err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK(accounts_domain_is_local(a, "example.net"));
    struct accounts_list l;
    CHECK_INT(accounts_alias_list(a, &l), ACCOUNTS_OK);
    CHECK_STR(join(&l), "@example.net alice@example.com,info@example.com alice@example.com");
    accounts_list_free(&l);
    CHECK_INT(accounts_alias_del(a, "@example.net", "alice@example.com", err, sizeof err),
              ACCOUNTS_OK);
    CHECK(!accounts_domain_is_local(a, "example.net"));
    CHECK_INT(accounts_alias_del(a, "@example.net", "alice@example.com", err, sizeof err),
              ACCOUNTS_NO_SUCH_USER);
    /* Deleting the user keeps the alias, and the alias keeps the domain local. */
    CHECK_INT(accounts_user_del(a, "alice@example.com", err, sizeof err), ACCOUNTS_OK);
    CHECK(accounts_domain_is_local(a, "example.com"));
    CHECK_INT(accounts_alias_list(a, &l), ACCOUNTS_OK);
    CHECK_INT(l.n, 1);
    accounts_list_free(&l);
    CHECK_INT(accounts_alias_del(a, "info@example.com", "alice@example.com", err, sizeof err),
              ACCOUNTS_OK);
    CHECK(!accounts_domain_is_local(a, "example.com"));
    close_fresh(a);
}

TEST(reopen_keeps_data)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    CHECK_INT(accounts_user_add(a, "alice@example.com", HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_alias_add(a, "info@example.com", "alice@example.com", err, sizeof err),
              ACCOUNTS_OK);
    accounts_close(a);
    a = accounts_open(state_dir, err, sizeof err);
    CHECK(a != NULL);
    if (!a) { remove_state(); return; }
    CHECK_STR(resolve(a, "info@example.com"), "0|alice@example.com|");
    CHECK(accounts_check_password(a, "alice@example.com", "secret"));
    close_fresh(a);
}

/* A second handle sees changes made through the first at once. */
TEST(second_handle_sees_changes)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    struct accounts *b = accounts_open(state_dir, err, sizeof err);
    CHECK(b != NULL);
    if (!b) { close_fresh(a); return; }
    CHECK_STR(resolve(b, "alice@example.com"), "2||");
    CHECK_INT(accounts_user_add(a, "alice@example.com", HASH, err, sizeof err), ACCOUNTS_OK);
    CHECK_STR(resolve(b, "alice@example.com"), "0|alice@example.com|");
    accounts_close(b);
    close_fresh(a);
}

static void add_user(struct accounts *a, const char *addr)
{
    CHECK_INT(accounts_user_add(a, addr, HASH, err, sizeof err), ACCOUNTS_OK);
}

static void add_alias(struct accounts *a, const char *src, const char *dst)
{
    CHECK_INT(accounts_alias_add(a, src, dst, err, sizeof err), ACCOUNTS_OK);
}

TEST(resolve_cases)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    add_user(a, "alice@example.com");
    add_user(a, "bob@example.com");
    add_user(a, "carol@example.org");
    add_alias(a, "info@example.com", "alice@example.com");
    add_alias(a, "team@example.com", "alice@example.com");
    add_alias(a, "team@example.com", "bob@example.com");
    add_alias(a, "team@example.com", "info@example.com");      /* duplicate via chain */
    add_alias(a, "team@example.com", "friend@gmail.test");
    add_alias(a, "chain@example.com", "team@example.com");
    add_alias(a, "loop1@example.com", "loop2@example.com");
    add_alias(a, "loop2@example.com", "loop1@example.com");
    add_alias(a, "loopy@example.com", "loopy2@example.com");
    add_alias(a, "loopy2@example.com", "loopy@example.com");
    add_alias(a, "loopy2@example.com", "bob@example.com");
    add_alias(a, "dangling@example.com", "ghost@example.com");
    add_alias(a, "@example.org", "carol@example.org");
    add_alias(a, "fwd@example.com", "a@remote.test");
    add_alias(a, "fwd@example.com", "b@remote.test");

    CHECK_STR(resolve(a, "alice@example.com"), "0|alice@example.com|");
    CHECK_STR(resolve(a, "ALICE@Example.COM"), "0|alice@example.com|");
    CHECK_STR(resolve(a, "info@example.com"), "0|alice@example.com|");
    CHECK_STR(resolve(a, "team@example.com"), "0|alice@example.com,bob@example.com|friend@gmail.test");
    CHECK_STR(resolve(a, "chain@example.com"), "0|alice@example.com,bob@example.com|friend@gmail.test");
    CHECK_STR(resolve(a, "fwd@example.com"), "0||a@remote.test,b@remote.test");
    /* loops terminate; with no user in them nothing is deliverable */
    CHECK_STR(resolve(a, "loop1@example.com"), "1||");
    CHECK_STR(resolve(a, "loopy@example.com"), "0|bob@example.com|");
    CHECK_STR(resolve(a, "dangling@example.com"), "1||");
    /* plus-addressing, also for aliases */
    CHECK_STR(resolve(a, "alice+news@example.com"), "0|alice@example.com|");
    CHECK_STR(resolve(a, "info+x+y@example.com"), "0|alice@example.com|");
    CHECK_STR(resolve(a, "+tag@example.com"), "1||");
    CHECK_STR(resolve(a, "nobody+tag@example.com"), "1||");
    /* catch-all: users still win */
    CHECK_STR(resolve(a, "carol@example.org"), "0|carol@example.org|");
    CHECK_STR(resolve(a, "anything@example.org"), "0|carol@example.org|");
    CHECK_STR(resolve(a, "x+y@example.org"), "0|carol@example.org|");
    /* unknown in a local domain vs a foreign domain */
    CHECK_STR(resolve(a, "nobody@example.com"), "1||");
    CHECK_STR(resolve(a, "someone@elsewhere.test"), "2||");
    CHECK_STR(resolve(a, "not an address"), "4||");
    close_fresh(a);
}

TEST(resolve_depth_limit)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    add_user(a, "end@example.com");
    /* a0 -> a1 -> ... -> a9 -> end: ten aliases deep, resolves */
    char src[64], dst[64];
    for (int i = 0; i < 10; i++) {
        snprintf(src, sizeof src, "a%d@example.com", i);
        if (i == 9)
            snprintf(dst, sizeof dst, "end@example.com");
        else
            snprintf(dst, sizeof dst, "a%d@example.com", i + 1);
        add_alias(a, src, dst);
    }
    CHECK_STR(resolve(a, "a0@example.com"), "0|end@example.com|");
    /* one more level is not followed */
    add_alias(a, "b@example.com", "a0@example.com");
    CHECK_STR(resolve(a, "b@example.com"), "1||");
    close_fresh(a);
}

struct reader {
    struct accounts *a;
    int failures;
};

static void *resolve_loop(void *arg)
{
    struct reader *r = arg;
    for (int i = 0; i < 200; i++) {
        struct accounts_list local, remote;
        enum accounts_result res = accounts_resolve(r->a, "info@example.com", &local, &remote);
        if (res != ACCOUNTS_OK || local.n != 1 || strcmp(local.items[0], "alice@example.com") != 0)
            r->failures++;
        accounts_list_free(&local);
        accounts_list_free(&remote);
    }
    return NULL;
}

/* One handle shared by threads while another thread writes through it. */
TEST(threads_share_a_handle)
{
    struct accounts *a = open_fresh();
    if (!a) { CHECK(0); return; }
    add_user(a, "alice@example.com");
    add_alias(a, "info@example.com", "alice@example.com");
    struct reader readers[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        readers[i] = (struct reader){ .a = a };
        CHECK_INT(pthread_create(&t[i], NULL, resolve_loop, &readers[i]), 0);
    }
    char addr[64], e[256];
    int added = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(addr, sizeof addr, "u%d@example.org", i);
        added += accounts_user_add(a, addr, HASH, e, sizeof e) == ACCOUNTS_OK;
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(readers[i].failures, 0);
    }
    CHECK_INT(added, 100);
    struct accounts_list l;
    CHECK_INT(accounts_user_list(a, &l), ACCOUNTS_OK);
    CHECK_INT(l.n, 101);
    accounts_list_free(&l);
    close_fresh(a);
}

int main(void)
{
    RUN(normalize_good);
    RUN(normalize_bad);
    RUN(open_sets_schema_mode_and_wal);
    RUN(open_missing_dir_fails);
    RUN(users_add_list_del);
    RUN(passwords);
    RUN(aliases_add_del_list_conflicts);
    RUN(reopen_keeps_data);
    RUN(second_handle_sees_changes);
    RUN(resolve_cases);
    RUN(resolve_depth_limit);
    RUN(threads_share_a_handle);
    return test_summary();
}
