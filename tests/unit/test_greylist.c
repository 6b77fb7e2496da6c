/* Unit tests for filters/greylist.c: the triplet state machine driven by a
 * test clock, the client networks, expiry and auto-whitelisting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "greylist.h"
#include "test.h"

static char tmpdir[] = "/tmp/test_greylist.XXXXXX";
static int dbno;

static struct greylist *fresh(void)
{
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/g%d.db", tmpdir, dbno++);
    struct greylist *g = greylist_open(path, err, sizeof err);
    if (!g)
        fprintf(stderr, "greylist_open: %s\n", err);
    return g;
}

static const struct greylist_params P = { .delay = 300, .max_age_days = 35, .auto_whitelist = 3 };
#define T0 ((time_t)1700000000)

TEST(test_network)
{
    char net[64];
    CHECK_INT(greylist_network("192.0.2.77", net, sizeof net), 0);
    CHECK_STR(net, "192.0.2.0/24");
    CHECK_INT(greylist_network("2001:db8:1:2:3:4:5:6", net, sizeof net), 0);
    CHECK_STR(net, "2001:db8:1:2::/64");
    CHECK_INT(greylist_network("::ffff:198.51.100.9", net, sizeof net), 0);
    CHECK_STR(net, "198.51.100.0/24");
    CHECK_INT(greylist_network("not-an-ip", net, sizeof net), -1);
    CHECK_INT(greylist_network("", net, sizeof net), -1);
    CHECK_INT(greylist_network("192.0.2.1", net, 8), -1);   /* does not fit */
}

TEST(test_defer_then_pass)
{
    struct greylist *g = fresh();
    CHECK(g != NULL);
    if (!g)
        return;
    unsigned left = 0;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@example.org", "u@example.test", T0, &P, &left),
              GREYLIST_DEFER);
    CHECK_INT(left, 300);
    /* too early: still deferred, and the wait counts from the first sight */
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@example.org", "u@example.test", T0 + 100, &P,
                             &left), GREYLIST_DEFER);
    CHECK_INT(left, 200);
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@example.org", "u@example.test", T0 + 299, &P,
                             NULL), GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@example.org", "u@example.test", T0 + 300, &P,
                             NULL), GREYLIST_PASS);
    /* passed for good, from a neighbour in the same /24 too, any case */
    CHECK_INT(greylist_check(g, "192.0.2.200", "A@Example.ORG", "U@example.test", T0 + 301, &P,
                             NULL), GREYLIST_PASS);
    /* another recipient, sender or network is another triplet */
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@example.org", "v@example.test", T0 + 302, &P,
                             NULL), GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "192.0.2.1", "b@example.org", "u@example.test", T0 + 302, &P,
                             NULL), GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "192.0.3.1", "a@example.org", "u@example.test", T0 + 302, &P,
                             NULL), GREYLIST_DEFER);
    /* the null sender is a sender like any other */
    CHECK_INT(greylist_check(g, "192.0.2.1", "", "u@example.test", T0, &P, NULL),
              GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "192.0.2.1", "", "u@example.test", T0 + 400, &P, NULL),
              GREYLIST_PASS);
    greylist_close(g);
}

TEST(test_ipv6_network)
{
    struct greylist *g = fresh();
    if (!g)
        return;
    CHECK_INT(greylist_check(g, "2001:db8:0:1::25", "a@x.org", "u@example.test", T0, &P, NULL),
              GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "2001:db8:0:1:ffff::9", "a@x.org", "u@example.test", T0 + 300,
                             &P, NULL), GREYLIST_PASS);
    CHECK_INT(greylist_check(g, "2001:db8:0:2::25", "a@x.org", "u@example.test", T0 + 300, &P,
                             NULL), GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "garbage", "a@x.org", "u@example.test", T0, &P, NULL),
              GREYLIST_ERROR);
    greylist_close(g);
}

TEST(test_expiry)
{
    struct greylist *g = fresh();
    if (!g)
        return;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", T0, &P, NULL),
              GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", T0 + 600, &P, NULL),
              GREYLIST_PASS);
    /* seen within max age: still known, and seeing it refreshes it */
    time_t t = T0 + 600 + 34 * 86400;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", t, &P, NULL),
              GREYLIST_PASS);
    t += 34 * 86400;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", t, &P, NULL),
              GREYLIST_PASS);
    /* unseen for longer than max age: greylisted again */
    t += 35 * 86400 + 1;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", t, &P, NULL),
              GREYLIST_DEFER);
    /* a deferred triplet that never came back expires the same way */
    CHECK_INT(greylist_check(g, "192.0.2.9", "z@x.org", "u@example.test", t, &P, NULL),
              GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "192.0.2.9", "z@x.org", "u@example.test", t + 36 * 86400, &P,
                             NULL), GREYLIST_DEFER);
    greylist_close(g);
}

/* Passes `n` distinct triplets of the network through greylisting. */
static void pass_triplets(struct greylist *g, const char *ip, int n, time_t t,
                          const struct greylist_params *p)
{
    for (int i = 0; i < n; i++) {
        char rcpt[64];
        snprintf(rcpt, sizeof rcpt, "r%d@example.test", i);
        CHECK_INT(greylist_check(g, ip, "s@x.org", rcpt, t, p, NULL), GREYLIST_DEFER);
        CHECK_INT(greylist_check(g, ip, "s@x.org", rcpt, t + p->delay, p, NULL), GREYLIST_PASS);
        /* passing the same triplet again does not count twice */
        CHECK_INT(greylist_check(g, ip, "s@x.org", rcpt, t + p->delay + 1, p, NULL),
                  GREYLIST_PASS);
    }
}

TEST(test_auto_whitelist)
{
    struct greylist *g = fresh();
    if (!g)
        return;
    pass_triplets(g, "203.0.113.5", 2, T0, &P);
    /* two passes of three: a new triplet still waits */
    CHECK_INT(greylist_check(g, "203.0.113.5", "new@x.org", "u@example.test", T0 + 400, &P,
                             NULL), GREYLIST_DEFER);
    CHECK_INT(greylist_check(g, "203.0.113.5", "new@x.org", "u@example.test", T0 + 700, &P,
                             NULL), GREYLIST_PASS);
    /* that was the third: whitelisted, any triplet from the /24 passes */
    CHECK_INT(greylist_check(g, "203.0.113.77", "other@y.org", "w@example.test", T0 + 701, &P,
                             NULL), GREYLIST_PASS);
    /* but not another network */
    CHECK_INT(greylist_check(g, "203.0.114.5", "other@y.org", "w@example.test", T0 + 701, &P,
                             NULL), GREYLIST_DEFER);
    /* the whitelist entry expires when the client is not seen for max age */
    time_t later = T0 + 701 + 36 * 86400;
    CHECK_INT(greylist_check(g, "203.0.113.5", "third@z.org", "u@example.test", later, &P,
                             NULL), GREYLIST_DEFER);
    greylist_close(g);
}

TEST(test_auto_whitelist_off_and_zero_delay)
{
    struct greylist *g = fresh();
    if (!g)
        return;
    struct greylist_params off = P;
    off.auto_whitelist = 0;
    pass_triplets(g, "198.51.100.1", 5, T0, &off);
    CHECK_INT(greylist_check(g, "198.51.100.1", "new@x.org", "u@example.test", T0 + 900, &off,
                             NULL), GREYLIST_DEFER);
    struct greylist_params none = P;
    none.delay = 0;
    CHECK_INT(greylist_check(g, "198.51.100.1", "n2@x.org", "u@example.test", T0, &none, NULL),
              GREYLIST_PASS);
    greylist_close(g);
}

TEST(test_persistent)
{
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/persist.db", tmpdir);
    struct greylist *g = greylist_open(path, err, sizeof err);
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", T0, &P, NULL),
              GREYLIST_DEFER);
    greylist_close(g);
    g = greylist_open(path, err, sizeof err);
    CHECK(g != NULL);
    if (!g)
        return;
    CHECK_INT(greylist_check(g, "192.0.2.1", "a@x.org", "u@example.test", T0 + 300, &P, NULL),
              GREYLIST_PASS);
    greylist_close(g);
    /* not a database: a clear error */
    snprintf(path, sizeof path, "%s/junk.db", tmpdir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("this is not an SQLite database, not at all, no header here......", f);
        fclose(f);
    }
    CHECK(greylist_open(path, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_network);
    RUN(test_defer_then_pass);
    RUN(test_ipv6_network);
    RUN(test_expiry);
    RUN(test_auto_whitelist);
    RUN(test_auto_whitelist_off_and_zero_delay);
    RUN(test_persistent);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
