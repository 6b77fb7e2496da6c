/* Unit tests for password logins: a real accounts database in a temp dir,
 * the worker pool and a private loop. Checks the result and canonical
 * address, that failures are delayed and counted per client address, the
 * doubling delay, and throttling after AUTH_MAX_FAILURES. The delay unit is
 * shrunk so the whole file runs in well under a second of delays. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "accounts.h"
#include "auth.h"
#include "password.h"
#include "server.h"
#include "test.h"

#define UNIT 0.02   /* seconds per delay step in these tests */

struct outcome {
    bool done;
    enum auth_result result;
    char address[ACCOUNTS_ADDR_MAX + 1];
};

static struct server srv;
static char tmpdir[] = "/tmp/test_auth.XXXXXX";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_done(void *arg, enum auth_result result, const char *address)
{
    struct outcome *o = arg;
    o->done = true;
    o->result = result;
    snprintf(o->address, sizeof o->address, "%s", address ? address : "");
}

/* Runs one login to completion; returns the seconds it took (-1: timeout). */
static double login(const char *client, const char *user, const char *pass, struct outcome *o)
{
    memset(o, 0, sizeof *o);
    double start = now();
    if (auth_login(&srv, client, user, pass, on_done, o) < 0)
        return -1;
    double deadline = start + 10;
    while (!o->done && now() < deadline)
        ev_run(srv.loop, EVRUN_ONCE);
    return o->done ? now() - start : -1;
}

TEST(login_ok_is_canonical_and_not_delayed)
{
    struct outcome o;
    double t = login("192.0.2.1", "Alice@Example.TEST", "right password", &o);
    CHECK(t >= 0);
    CHECK_INT(o.result, AUTH_OK);
    CHECK_STR(o.address, "alice@example.test");
    CHECK_INT(auth_failures("192.0.2.1"), 0);
}

TEST(failures_are_delayed_doubling_and_counted)
{
    struct outcome o;
    double t1 = login("192.0.2.2", "alice@example.test", "wrong", &o);
    CHECK_INT(o.result, AUTH_FAILED);
    CHECK(o.address[0] == '\0');
    CHECK(t1 >= 1 * UNIT);
    CHECK_INT(auth_failures("192.0.2.2"), 1);
    double t2 = login("192.0.2.2", "nobody@example.test", "x", &o);
    CHECK_INT(o.result, AUTH_FAILED);
    CHECK(t2 >= 2 * UNIT);
    CHECK_INT(auth_failures("192.0.2.2"), 2);
    /* Another address is not affected, and a success is still fine. */
    CHECK_INT(auth_failures("192.0.2.3"), 0);
    login("192.0.2.2", "alice@example.test", "right password", &o);
    CHECK_INT(o.result, AUTH_OK);
}

TEST(invalid_input_fails_without_crashing)
{
    struct outcome o;
    char longuser[2000];
    memset(longuser, 'a', sizeof longuser - 1);
    longuser[sizeof longuser - 1] = '\0';
    CHECK(login("192.0.2.4", longuser, "x", &o) >= 0);
    CHECK_INT(o.result, AUTH_FAILED);
    CHECK(login("192.0.2.4", "not an address", "x", &o) >= 0);
    CHECK_INT(o.result, AUTH_FAILED);
    CHECK_INT(auth_failures("192.0.2.4"), 2);
}

TEST(throttled_after_ten_failures)
{
    struct outcome o;
    for (int i = 0; i < 10; i++) {
        login("192.0.2.5", "alice@example.test", "wrong", &o);
        CHECK_INT(o.result, AUTH_FAILED);
    }
    CHECK_INT(auth_failures("192.0.2.5"), 10);
    /* Now even the right password is not checked, and the refusal waits
     * the longest delay. */
    double t = login("192.0.2.5", "alice@example.test", "right password", &o);
    CHECK_INT(o.result, AUTH_THROTTLED);
    CHECK(t >= 8 * UNIT);
    CHECK_INT(auth_failures("192.0.2.5"), 11);
    login("192.0.2.6", "alice@example.test", "right password", &o);
    CHECK_INT(o.result, AUTH_OK);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    char err[256], hash[256];
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    srv.loop = ev_loop_new(EVFLAG_AUTO);
    srv.workers = workers_create(srv.loop, 2);
    srv.accounts = accounts_open(tmpdir, err, sizeof err);
    if (!srv.workers || !srv.accounts || password_hash("right password", hash, sizeof hash) < 0 ||
        accounts_user_add(srv.accounts, "alice@example.test", hash, err, sizeof err) !=
            ACCOUNTS_OK) {
        fprintf(stderr, "test_auth: setup failed: %s\n", err);
        return 1;
    }
    auth_set_delay_unit(UNIT);

    RUN(login_ok_is_canonical_and_not_delayed);
    RUN(failures_are_delayed_doubling_and_counted);
    RUN(invalid_input_fails_without_crashing);
    RUN(throttled_after_ten_failures);

    workers_destroy(srv.workers);
    accounts_close(srv.accounts);
    ev_loop_destroy(srv.loop);
    nftw(tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return test_summary();
}
