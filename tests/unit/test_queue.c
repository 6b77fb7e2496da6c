/* Unit tests of the outbound queue's storage against a temporary STATE_DIR
 * under /tmp, removed at the end. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "queue.h"
#include "test.h"

static char root[64];

static const char BODY[] = "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n";

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(p);
}

static void rm_rf(const char *p)
{
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct queue *open_q(void)
{
    char err[256] = "";
    struct queue *q = queue_open(root, err, sizeof err);
    if (!q)
        fprintf(stderr, "queue_open: %s\n", err);
    return q;
}

static bool body_exists(const char *id)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof p, "%s/queue/%s", root, id);
    return stat(p, &st) == 0;
}

static int add(struct queue *q, const char *sender, const char *r1, const char *r2, char *id)
{
    const char *rcpts[] = { r1, r2 };
    unsigned notify[] = { 4u, 0u };
    const char *orcpt[] = { "rfc822;Bob+2B@example.net", NULL };
    struct queue_new m = {
        .sender = sender, .rcpts = rcpts, .notify = notify, .orcpt = orcpt,
        .nrcpts = r2 ? 2 : 1, .ret = 2, .envid = "ENV1",
    };
    struct iovec iov[2] = { { (void *)BODY, 20 }, { (void *)(BODY + 20), sizeof BODY - 21 } };
    char err[256] = "";
    int rc = queue_add(q, &m, iov, 2, id, err, sizeof err);
    if (rc < 0)
        fprintf(stderr, "queue_add: %s\n", err);
    return rc;
}

TEST(add_stores_body_and_record)
{
    struct queue *q = open_q();
    char id[QUEUE_ID_LEN + 1];
    CHECK_INT(add(q, "alice@example.org", "bob@Example.NET", "carol@example.com", id), 0);
    CHECK_INT(strlen(id), QUEUE_ID_LEN);
    CHECK(body_exists(id));
    struct buf b = BUF_INIT;
    char err[256];
    CHECK_INT(queue_read_body(q, id, &b, err, sizeof err), 0);
    CHECK_INT(b.len, sizeof BODY - 1);
    CHECK(b.len == sizeof BODY - 1 && memcmp(b.data, BODY, b.len) == 0);
    buf_free(&b);
    queue_close(q);

    /* A reopened queue sees the message with everything stored. */
    q = open_q();
    struct queue_msg m;
    CHECK_INT(queue_get(q, id, &m), 0);
    CHECK_STR(m.sender, "alice@example.org");
    CHECK_INT(m.size, sizeof BODY - 1);
    CHECK_INT(m.ret, 2);
    CHECK_STR(m.envid, "ENV1");
    CHECK(!m.is_bounce && !m.delay_notified);
    CHECK_INT(m.nrcpts, 2);
    if (m.nrcpts == 2) {
        CHECK_STR(m.rcpts[0].address, "bob@Example.NET");
        CHECK_STR(m.rcpts[0].domain, "example.net");
        CHECK_INT(m.rcpts[0].notify, 4);
        CHECK_STR(m.rcpts[0].orcpt, "rfc822;Bob+2B@example.net");
        CHECK_STR(m.rcpts[1].orcpt, "");
        CHECK_INT(m.rcpts[1].state, QUEUE_RCPT_PENDING);
        CHECK_INT(m.rcpts[1].attempts, 0);
    }
    queue_msg_free(&m);
    CHECK_INT(queue_remove(q, id), 0);
    CHECK(!body_exists(id));
    CHECK_INT(queue_remove(q, id), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(queue_get(q, id, &m), -1);
    CHECK_INT(errno, ENOENT);
    queue_close(q);
}

TEST(due_update_and_next_due)
{
    struct queue *q = open_q();
    char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1];
    CHECK_INT(add(q, "", "x@example.net", "y@example.net", a), 0);
    CHECK_INT(add(q, "s@example.org", "z@example.com", NULL, b), 0);
    time_t now = time(NULL);
    struct queue_msg *v;
    long n = queue_due(q, now, 10, &v);
    CHECK_INT(n, 2);
    queue_msgs_free(v, n > 0 ? (size_t)n : 0);
    CHECK_INT(queue_due(q, now, 1, &v), 1);
    queue_msgs_free(v, 1);

    /* Message a: x delivered, y deferred; b: failed. */
    CHECK_INT(queue_update_rcpt(q, a, "x@example.net", QUEUE_RCPT_DELIVERED, 0, "250 ok"), 0);
    CHECK_INT(queue_update_rcpt(q, a, "y@example.net", QUEUE_RCPT_PENDING, now + 600, "451 later"), 0);
    CHECK_INT(queue_update_rcpt(q, b, "z@example.com", QUEUE_RCPT_FAILED, 0, "550 no"), 0);
    CHECK_INT(queue_update_rcpt(q, b, "nobody@example.com", QUEUE_RCPT_FAILED, 0, ""), -1);
    CHECK_INT(queue_due(q, now, 10, &v), 0);
    queue_msgs_free(v, 0);
    CHECK_INT(queue_next_due(q), now + 600);
    n = queue_due(q, now + 600, 10, &v);
    CHECK_INT(n, 1);
    if (n == 1) {
        CHECK_STR(v[0].id, a);
        CHECK_STR(v[0].sender, "");
        CHECK_INT(v[0].rcpts[1].attempts, 1);
        CHECK_STR(v[0].rcpts[1].last_error, "451 later");
        CHECK_INT(v[0].rcpts[0].state, QUEUE_RCPT_DELIVERED);
    }
    queue_msgs_free(v, n > 0 ? (size_t)n : 0);

    CHECK_INT(queue_set_delay_notified(q, a), 0);
    struct queue_msg m;
    CHECK_INT(queue_get(q, a, &m), 0);
    CHECK(m.delay_notified);
    queue_msg_free(&m);

    /* Flush: only pending recipients, all or one message. */
    CHECK_INT(queue_flush(q, NULL), 1);
    CHECK_INT(queue_flush(q, b), 0);
    CHECK_INT(queue_flush(q, "0123456789abcdef"), 0);
    n = queue_due(q, time(NULL), 10, &v);
    CHECK_INT(n, 1);
    queue_msgs_free(v, n > 0 ? (size_t)n : 0);

    n = queue_list(q, &v);
    CHECK_INT(n, 2);
    if (n == 2)
        CHECK_STR(v[0].id, a);   /* oldest first */
    queue_msgs_free(v, n > 0 ? (size_t)n : 0);
    CHECK_INT(queue_remove(q, a), 0);
    CHECK_INT(queue_remove(q, b), 0);
    CHECK_INT(queue_next_due(q), 0);
    n = queue_list(q, &v);
    CHECK_INT(n, 0);
    queue_msgs_free(v, 0);
    queue_close(q);
}

TEST(open_removes_orphans)
{
    struct queue *q = open_q();
    char keep[QUEUE_ID_LEN + 1], lost[QUEUE_ID_LEN + 1];
    CHECK_INT(add(q, "a@example.org", "b@example.net", NULL, keep), 0);
    CHECK_INT(add(q, "a@example.org", "c@example.net", NULL, lost), 0);
    queue_close(q);

    /* A body without record (crash before the commit), a temp file, and a
     * record whose body is gone. */
    char p[256];
    const char *orphans[] = { "00112233445566ff", "0011223344556677.tmp" };
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/queue/%s", root, orphans[i]);
        int fd = open(p, O_WRONLY | O_CREAT, 0600);
        CHECK(fd >= 0);
        if (fd >= 0)
            close(fd);
    }
    snprintf(p, sizeof p, "%s/queue/%s", root, lost);
    CHECK_INT(unlink(p), 0);

    /* The setup CLI's handle never cleans, even when it is alone. */
    q = open_q();
    CHECK(body_exists(orphans[0]));
    queue_close(q);

    char err[256] = "";
    q = queue_open_daemon(root, err, sizeof err);
    CHECK(q != NULL);
    if (!q)
        return;
    CHECK(!body_exists(orphans[0]));
    CHECK(!body_exists(orphans[1]));
    CHECK(body_exists(keep));
    struct queue_msg m;
    CHECK_INT(queue_get(q, lost, &m), -1);
    CHECK_INT(queue_get(q, keep, &m), 0);
    queue_msg_free(&m);

    /* A second handle (setup while the daemon runs) must not clean up. */
    snprintf(p, sizeof p, "%s/queue/%s", root, orphans[0]);
    int fd = open(p, O_WRONLY | O_CREAT, 0600);
    if (fd >= 0)
        close(fd);
    struct queue *q2 = open_q();
    CHECK(q2 != NULL);
    CHECK(body_exists(orphans[0]));
    queue_close(q2);
    unlink(p);
    CHECK_INT(queue_remove(q, keep), 0);
    queue_close(q);
}

static long count_due(struct queue *q, time_t now)
{
    struct queue_msg *v = NULL;
    long n = queue_due(q, now, 10, &v);
    queue_msgs_free(v, n > 0 ? (size_t)n : 0);
    return n;
}

TEST(held_entries_are_never_due_until_released)
{
    struct queue *q = open_q();
    const char *rcpts[] = { "b@example.net", "c@example.net" };
    struct queue_new m = { .sender = "a@example.org", .rcpts = rcpts, .nrcpts = 2, .held = true };
    struct iovec iov = { (void *)BODY, sizeof BODY - 1 };
    char id[QUEUE_ID_LEN + 1], err[256] = "";
    CHECK_INT(queue_add(q, &m, &iov, 1, id, err, sizeof err), 0);
    time_t now = time(NULL);
    CHECK_INT(count_due(q, now + 10 * 365 * 86400L), 0);
    CHECK_INT(queue_next_due(q), 0);
    CHECK_INT(queue_flush(q, NULL), 0);      /* a flush does not release it */
    CHECK_INT(queue_flush(q, id), 0);
    CHECK_INT(count_due(q, now + 10), 0);

    struct queue_msg g;
    CHECK_INT(queue_get(q, id, &g), 0);
    CHECK(g.held);
    CHECK(g.rcpts[0].next_attempt > now + 1000L * 365 * 86400);
    CHECK(strstr(g.rcpts[0].last_error, "held") != NULL);   /* what setup queue list shows */
    queue_msg_free(&g);

    /* One recipient final before the release: it stays final. */
    CHECK_INT(queue_update_rcpt(q, id, "c@example.net", QUEUE_RCPT_DELIVERED, now, "250 ok"), 0);
    CHECK_INT(queue_release(q, id), 0);
    CHECK_INT(count_due(q, time(NULL)), 1);
    CHECK(queue_next_due(q) > 0 && queue_next_due(q) <= time(NULL));
    CHECK_INT(queue_get(q, id, &g), 0);
    CHECK(!g.held);
    CHECK_INT(g.rcpts[0].state, QUEUE_RCPT_PENDING);
    CHECK_STR(g.rcpts[0].last_error, "");
    CHECK(g.rcpts[0].next_attempt <= time(NULL));
    CHECK_INT(g.rcpts[1].state, QUEUE_RCPT_DELIVERED);
    CHECK(g.rcpts[1].next_attempt <= time(NULL));
    queue_msg_free(&g);
    CHECK_INT(queue_release(q, id), 0);      /* again: harmless */
    errno = 0;
    CHECK_INT(queue_release(q, "0123456789abcdef"), -1);
    CHECK_INT(errno, ENOENT);
    CHECK_INT(queue_release(q, "../x"), -1);
    CHECK_INT(queue_remove(q, id), 0);
    queue_close(q);
}

TEST(daemon_removes_stale_held_entries)
{
    struct queue *q = open_q();
    const char *rcpts[] = { "b@example.net" };
    struct queue_new m = { .sender = "a@example.org", .rcpts = rcpts, .nrcpts = 1, .held = true };
    struct iovec iov = { (void *)BODY, sizeof BODY - 1 };
    char held[QUEUE_ID_LEN + 1], kept[QUEUE_ID_LEN + 1], err[256] = "";
    CHECK_INT(queue_add(q, &m, &iov, 1, held, err, sizeof err), 0);
    m.held = false;
    CHECK_INT(queue_add(q, &m, &iov, 1, kept, err, sizeof err), 0);
    queue_close(q);

    q = queue_open_daemon(root, err, sizeof err);
    CHECK(q != NULL);
    if (!q)
        return;
    struct queue_msg g;
    CHECK_INT(queue_get(q, held, &g), -1);
    CHECK(!body_exists(held));
    CHECK_INT(queue_get(q, kept, &g), 0);
    queue_msg_free(&g);
    CHECK(body_exists(kept));
    CHECK_INT(queue_remove(q, kept), 0);
    queue_close(q);
}

static void *unlock_later(void *arg)
{
    int fd = *(int *)arg;
    usleep(300 * 1000);
    flock(fd, LOCK_UN);
    return NULL;
}

TEST(daemon_waits_for_the_lock)
{
    char p[256], err[256] = "";
    snprintf(p, sizeof p, "%s/queue/.lock", root);
    int fd = open(p, O_RDWR | O_CREAT, 0600);
    CHECK(fd >= 0);
    CHECK_INT(flock(fd, LOCK_EX | LOCK_NB), 0);
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, unlock_later, &fd), 0);
    struct queue *q = queue_open_daemon(root, err, sizeof err);
    CHECK(q != NULL);
    pthread_join(t, NULL);
    /* And it keeps the lock: another process cannot take it now. */
    CHECK_INT(flock(fd, LOCK_EX | LOCK_NB), -1);
    queue_close(q);
    CHECK_INT(flock(fd, LOCK_EX | LOCK_NB), 0);
    close(fd);
}

TEST(retry_schedule)
{
    CHECK_INT(queue_retry_delay(1), 60);
    CHECK_INT(queue_retry_delay(2), 300);
    CHECK_INT(queue_retry_delay(3), 900);
    CHECK_INT(queue_retry_delay(4), 1800);
    CHECK_INT(queue_retry_delay(5), 3600);
    CHECK_INT(queue_retry_delay(50), 3600);
}

TEST(add_refuses_no_recipients)
{
    struct queue *q = open_q();
    struct queue_new m = { .sender = "a@example.org", .nrcpts = 0 };
    struct iovec iov = { (void *)BODY, sizeof BODY - 1 };
    char id[QUEUE_ID_LEN + 1], err[128] = "";
    CHECK_INT(queue_add(q, &m, &iov, 1, id, err, sizeof err), -1);
    CHECK(err[0] != '\0');
    struct buf b = BUF_INIT;
    CHECK_INT(queue_read_body(q, "../queue.db", &b, err, sizeof err), -1);
    buf_free(&b);
    queue_close(q);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    snprintf(root, sizeof root, "/tmp/test_queue.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(add_stores_body_and_record);
    RUN(due_update_and_next_due);
    RUN(open_removes_orphans);
    RUN(held_entries_are_never_due_until_released);
    RUN(daemon_removes_stale_held_entries);
    RUN(daemon_waits_for_the_lock);
    RUN(retry_schedule);
    RUN(add_refuses_no_recipients);
    rm_rf(root);
    return test_summary();
}
