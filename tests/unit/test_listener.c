/* Unit tests for listener: spec syntax (good and bad, errors naming the
 * setting), binding IPv4, IPv6 and dual-stack sockets and accepting real
 * connections on an ev loop, port-in-use errors, stop, the pause on EMFILE,
 * and the per-address connection counts. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>

#include "listener.h"
#include "log.h"
#include "test.h"

static bool ipv6_ok;

struct accepted {
    int count;
    int want;
    int families[8];
    bool nonblock;
    bool cloexec;
};

static void on_accept(int fd, const struct sockaddr *peer, socklen_t peerlen, void *arg)
{
    struct accepted *a = arg;
    (void)peerlen;
    if (a->count < 8)
        a->families[a->count] = peer->sa_family;
    a->nonblock = (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0;
    a->cloexec = (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0;
    a->count++;
    close(fd);
    if (a->count >= a->want)
        ev_break(EV_DEFAULT, EVBREAK_ALL);
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until `want` accepts happened or `seconds` passed. */
static void run_until(struct accepted *a, int want, double seconds)
{
    ev_timer deadline;
    a->want = want;
    if (a->count >= want)
        return;
    ev_timer_init(&deadline, on_deadline, seconds, 0.);
    ev_timer_start(EV_DEFAULT, &deadline);
    ev_run(EV_DEFAULT, 0);
    ev_timer_stop(EV_DEFAULT, &deadline);
}

/* A port nothing listens on right now (on both loopbacks). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        perror("free_port");
        exit(1);
    }
    close(fd);
    return ntohs(sin.sin_port);
}

/* Starts a non-blocking connect; returns the fd (the caller closes it). */
static int connect_to(int family, const char *ip, int port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ip, &sin->sin_addr);
        len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, ip, &sin6->sin6_addr);
        len = sizeof *sin6;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
    close(fd);
    return ok;
}

TEST(spec_good)
{
    static const char *const good[] = {
        "0.0.0.0:25,[::]:25", ":465", "127.0.0.1:2525", "[::1]:2525", "localhost:2525",
        " 127.0.0.1:1 , [::1]:65535 ", "[fe80::1]:25", "", "   ",
    };
    char err[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        err[0] = '\0';
        int rc = listener_spec_check("SMTP_LISTEN", good[i], err, sizeof err);
        if (rc != 0)
            fprintf(stderr, "  '%s': %s\n", good[i], err);
        CHECK_INT(rc, 0);
    }
    CHECK_INT(listener_spec_check("SMTP_LISTEN", NULL, err, sizeof err), 0);
}

TEST(spec_bad)
{
    static const char *const bad[] = {
        "mail.example.com:25", "127.0.0.1:0", ":65536", ":99999999999", ":", "127.0.0.1",
        "::1:25", "[::1]25", "[::1", "[::1]:", "1.2.3.4:25,", ",", ",:25", "1.2.3.4:2x",
        "[127.0.0.1]:25", "localhost6:25", "1.2.3.4.5:25", ":-1", ":+25", "[]:25",
        "[::1]:25x", "1.2.3.4 :25", "127.0.0.1:25\n",
    };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = listener_spec_check("IMAP_LISTEN", bad[i], err, sizeof err);
        if (rc != -1)
            fprintf(stderr, "  accepted bad spec '%s'\n", bad[i]);
        CHECK_INT(rc, -1);
        CHECK(strncmp(err, "IMAP_LISTEN: ", 13) == 0);
    }
    listener_spec_check("SMTP_LISTEN", "0.0.0.0:25,mail.example.com:25", err, sizeof err);
    CHECK_STR(err, "SMTP_LISTEN: 'mail.example.com:25': the address must be numeric (IPv4, "
                   "[IPv6], localhost or empty for all addresses)");
    listener_spec_check("SMTP_LISTEN", ":0", err, sizeof err);
    CHECK_STR(err, "SMTP_LISTEN: ':0': the port must be a number from 1 to 65535");

    /* Too many entries and overlong entries are refused, not overflowed. */
    char many[2048] = "";
    size_t off = 0;
    for (int i = 0; i < 40; i++)
        off += (size_t)snprintf(many + off, sizeof many - off, "%s127.0.0.1:%d", i ? "," : "",
                                1000 + i);
    CHECK_INT(listener_spec_check("SMTP_LISTEN", many, err, sizeof err), -1);
    char longitem[300];
    memset(longitem, '1', sizeof longitem - 1);
    longitem[sizeof longitem - 1] = '\0';
    CHECK_INT(listener_spec_check("SMTP_LISTEN", longitem, err, sizeof err), -1);
}

TEST(empty_spec_no_sockets)
{
    char err[256] = "";
    struct listener *l = listener_open("POP3_LISTEN", "", err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    CHECK_INT(listener_socket_count(l), 0);
    listener_start(l, EV_DEFAULT, on_accept, NULL);
    listener_free(l);
}

TEST(bind_and_accept_v4_v6)
{
    int port = free_port();
    char spec[64], err[256] = "";
    if (ipv6_ok)
        snprintf(spec, sizeof spec, "127.0.0.1:%d,[::1]:%d", port, port);
    else
        snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_INT(listener_socket_count(l), ipv6_ok ? 2 : 1);
    struct accepted a = { 0 };
    listener_start(l, EV_DEFAULT, on_accept, &a);
    int c1 = connect_to(AF_INET, "127.0.0.1", port);
    CHECK(c1 >= 0);
    run_until(&a, 1, 5.0);
    CHECK_INT(a.count, 1);
    CHECK_INT(a.families[0], AF_INET);
    CHECK(a.nonblock);
    CHECK(a.cloexec);
    if (ipv6_ok) {
        int c2 = connect_to(AF_INET6, "::1", port);
        CHECK(c2 >= 0);
        run_until(&a, 2, 5.0);
        CHECK_INT(a.count, 2);
        CHECK_INT(a.families[1], AF_INET6);
        close(c2);
    }
    close(c1);
    listener_free(l);
}

TEST(burst_of_connections)
{
    int port = free_port();
    char spec[64], err[256] = "";
    snprintf(spec, sizeof spec, "localhost:%d", port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    struct accepted a = { 0 };
    listener_start(l, EV_DEFAULT, on_accept, &a);
    int fds[100];
    for (int i = 0; i < 100; i++)
        fds[i] = connect_to(AF_INET, "127.0.0.1", port);
    run_until(&a, 100, 5.0);
    CHECK_INT(a.count, 100);
    for (int i = 0; i < 100; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    listener_free(l);
}

TEST(dual_stack_any)
{
    int port = free_port();
    char spec[32], err[256] = "";
    snprintf(spec, sizeof spec, ":%d", port);
    struct listener *l = listener_open("IMAP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    CHECK_INT(listener_socket_count(l), 1);
    struct accepted a = { 0 };
    listener_start(l, EV_DEFAULT, on_accept, &a);
    int c1 = connect_to(AF_INET, "127.0.0.1", port);
    run_until(&a, 1, 5.0);
    CHECK_INT(a.count, 1);
    int c2 = -1;
    if (ipv6_ok) {
        c2 = connect_to(AF_INET6, "::1", port);
        run_until(&a, 2, 5.0);
        CHECK_INT(a.count, 2);
    }
    close(c1);
    if (c2 >= 0)
        close(c2);
    listener_free(l);
}

TEST(explicit_v4_and_v6_any_together)
{
    if (!ipv6_ok)
        return;
    int port = free_port();
    char spec[64], err[256] = "";
    snprintf(spec, sizeof spec, "0.0.0.0:%d,[::]:%d", port, port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_INT(listener_socket_count(l), 2);
    listener_free(l);
}

TEST(port_in_use)
{
    int port = free_port();
    char spec[64], err[256] = "", want[256];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    struct listener *l1 = listener_open("SUBMISSION_LISTEN", spec, err, sizeof err);
    CHECK(l1 != NULL);
    struct listener *l2 = listener_open("SUBMISSION_LISTEN", spec, err, sizeof err);
    CHECK(l2 == NULL);
    snprintf(want, sizeof want, "SUBMISSION_LISTEN: cannot bind 127.0.0.1:%d: "
             "Address already in use", port);
    CHECK_STR(err, want);
    listener_free(l2);
    listener_free(l1);
}

TEST(stop_closes)
{
    int port = free_port();
    char spec[64], err[256] = "";
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    struct accepted a = { 0 };
    listener_start(l, EV_DEFAULT, on_accept, &a);
    listener_stop(l);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT(connect(fd, (struct sockaddr *)&sin, sizeof sin), -1);
    CHECK_INT(errno, ECONNREFUSED);
    close(fd);
    listener_free(l);
}

static size_t count_in_file(const char *path, const char *needle)
{
    char buf[8192];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    size_t count = 0;
    for (const char *p = buf; (p = strstr(p, needle)); p++)
        count++;
    return count;
}

/* When accept fails with EMFILE the listener must back off (one warning,
 * no busy loop) and resume once descriptors are available again. */
TEST(emfile_pauses_then_resumes)
{
    char dir[] = "/tmp/test_listener.XXXXXX", path[64], err[256] = "";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/mail.log", dir);
    CHECK_INT(log_init(LOG_INFO, dir, err, sizeof err), 0);

    int port = free_port();
    char spec[64];
    snprintf(spec, sizeof spec, "127.0.0.1:%d", port);
    struct listener *l = listener_open("SMTP_LISTEN", spec, err, sizeof err);
    CHECK(l != NULL);
    if (!l)
        return;
    struct accepted a = { 0 };
    listener_start(l, EV_DEFAULT, on_accept, &a);
    int c = connect_to(AF_INET, "127.0.0.1", port);
    CHECK(c >= 0);

    struct rlimit saved, tight;
    getrlimit(RLIMIT_NOFILE, &saved);
    tight = saved;
    tight.rlim_cur = (rlim_t)c + 1; /* no room for the accepted fd */
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &tight), 0);
    run_until(&a, 1, 0.2);
    CHECK_INT(a.count, 0);
    CHECK_INT(setrlimit(RLIMIT_NOFILE, &saved), 0);
    CHECK_INT(count_in_file(path, "pausing accepts"), 1);
    run_until(&a, 1, 5.0);
    CHECK_INT(a.count, 1);

    close(c);
    listener_free(l);
    log_close();
    unlink(path);
    rmdir(dir);
}

TEST(iplimit_counts)
{
    CHECK(iplimit_acquire("192.0.2.1", 2, 3));
    CHECK(iplimit_acquire("192.0.2.1", 2, 3));
    CHECK(!iplimit_acquire("192.0.2.1", 2, 3));   /* per-IP limit */
    CHECK(iplimit_acquire("2001:db8::1", 2, 3));
    CHECK(!iplimit_acquire("192.0.2.2", 2, 3));   /* total limit */
    iplimit_release("192.0.2.1");
    CHECK(iplimit_acquire("192.0.2.2", 2, 3));    /* total freed */
    CHECK(!iplimit_acquire("192.0.2.1", 1, 10));  /* still holds one */
    iplimit_release("192.0.2.1");
    CHECK(iplimit_acquire("192.0.2.1", 1, 10));   /* entry gone at zero, fresh */
    iplimit_release("192.0.2.1");
    iplimit_release("192.0.2.2");
    iplimit_release("2001:db8::1");
    /* Everything released: the full total is available again. */
    for (int i = 0; i < 5; i++)
        CHECK(iplimit_acquire("198.51.100.7", 5, 5));
    CHECK(!iplimit_acquire("198.51.100.8", 5, 5));
    for (int i = 0; i < 5; i++)
        iplimit_release("198.51.100.7");

    /* Many distinct addresses (collisions in the table). */
    char addr[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(addr, sizeof addr, "10.%d.%d.1", i / 256, i % 256);
        CHECK(iplimit_acquire(addr, 1, 3000));
    }
    CHECK(!iplimit_acquire("10.0.0.1", 1, 5000));
    CHECK(!iplimit_acquire("10.99.0.1", 5, 3000));
    for (int i = 0; i < 3000; i++) {
        snprintf(addr, sizeof addr, "10.%d.%d.1", i / 256, i % 256);
        iplimit_release(addr);
    }
    CHECK(iplimit_acquire("10.0.0.1", 1, 1));
    iplimit_release("10.0.0.1");
}

int main(void)
{
    ipv6_ok = have_ipv6();
    if (!ipv6_ok)
        fprintf(stderr, "note: no IPv6 loopback; IPv6 cases skipped\n");
    RUN(spec_good);
    RUN(spec_bad);
    RUN(empty_spec_no_sockets);
    RUN(bind_and_accept_v4_v6);
    RUN(burst_of_connections);
    RUN(dual_stack_any);
    RUN(explicit_v4_and_v6_any_together);
    RUN(port_in_use);
    RUN(stop_closes);
    RUN(emfile_pauses_then_resumes);
    RUN(iplimit_counts);
    return test_summary();
}
