/* setup debug settings: prints the effective settings as NAME=value lines
 * (the entrypoint writes them to /etc/posthorn/posthorn.env).
 *
 * setup debug health: the container's healthcheck. Connects to every
 * enabled listener of the settings and expects its greeting (after a TLS
 * handshake on the implicit-TLS ports). Exit 0 when all answer, otherwise
 * 1 with one line per failure. A wildcard address is checked on loopback:
 * the check runs inside the container, next to the daemon. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "setup.h"

/* Per connection, for connect, handshake and greeting each: a daemon that
 * is busy still answers well within this; a hung one fails the check
 * before Docker's own healthcheck timeout. */
#define HEALTH_TIMEOUT_MS 3000
#define HEALTH_LINE_MAX 512
#define HEALTH_ENTRY_MAX 300

struct probe {
    const char *setting;   /* for messages: the *_LISTEN name */
    const char *spec;
    bool tls;              /* implicit TLS */
    const char *greeting;  /* expected prefix of the first line */
};

struct target {
    char host[HEALTH_ENTRY_MAX];
    char port[8];
    bool wildcard_v6;      /* "[::]:port", checked on ::1 */
};

/* Splits one spec entry ("a.b.c.d:p", "[v6]:p", ":p") into a host to
 * connect to and a port; wildcards become loopback. */
static bool parse_entry(const char *entry, size_t len, struct target *t)
{
    char e[HEALTH_ENTRY_MAX];
    if (len == 0 || len >= sizeof e)
        return false;
    memcpy(e, entry, len);
    e[len] = '\0';
    char *host = e, *port;
    if (e[0] == '[') {
        char *close = strchr(e, ']');
        if (!close || close[1] != ':')
            return false;
        *close = '\0';
        host = e + 1;
        port = close + 2;
    } else {
        char *colon = strrchr(e, ':');
        if (!colon)
            return false;
        *colon = '\0';
        port = colon + 1;
    }
    size_t plen = strlen(port);
    if (plen == 0 || plen >= sizeof t->port || strspn(port, "0123456789") != plen)
        return false;
    t->wildcard_v6 = strcmp(host, "::") == 0;
    if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (t->wildcard_v6)
        host = "::1";
    snprintf(t->host, sizeof t->host, "%s", host);
    memcpy(t->port, port, plen + 1);
    return true;
}

static int wait_fd(int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    int n;
    do
        n = poll(&p, 1, HEALTH_TIMEOUT_MS);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        errno = ETIMEDOUT;
    return n > 0 ? 0 : -1;
}

/* Connects with a deadline, then leaves the socket blocking with receive
 * and send timeouts, so that OpenSSL's blocking calls are bounded too. */
static int connect_to(const struct target *t, char *why, size_t whylen)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *ai;
    int rc = getaddrinfo(t->host, t->port, &hints, &ai);
    if (rc != 0) {
        snprintf(why, whylen, "bad address: %s", gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(why, whylen, "socket: %s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int err = 0;
    socklen_t elen = sizeof err;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 &&
        (errno != EINPROGRESS || wait_fd(fd, POLLOUT) < 0 ||
         getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || (errno = err) != 0)) {
        int saved = errno;
        snprintf(why, whylen, "connect: %s", strerror(saved));
        close(fd);
        freeaddrinfo(ai);
        errno = saved;   /* the caller tells a missing ::1 from a failure */
        return -1;
    }
    freeaddrinfo(ai);
    struct timeval tv = { .tv_sec = HEALTH_TIMEOUT_MS / 1000,
                          .tv_usec = (HEALTH_TIMEOUT_MS % 1000) * 1000 };
    if (fcntl(fd, F_SETFL, 0) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
        snprintf(why, whylen, "socket options: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads up to the first LF (or the buffer's end), from TLS when ssl. */
static int read_line(int fd, SSL *ssl, char *line, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        int r = ssl ? SSL_read(ssl, line + n, 1) : (int)read(fd, line + n, 1);
        if (r <= 0)
            return -1;
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    return 0;
}

static void chomp(char *s)
{
    s[strcspn(s, "\r\n")] = '\0';
}

/* Why a read or handshake ended: the socket timeouts show as EAGAIN. */
static const char *io_error(void)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return "no answer within the timeout";
    return errno ? strerror(errno) : "connection closed";
}

static bool greeted(const struct probe *p, int fd, SSL *ssl, char *why, size_t whylen)
{
    char line[HEALTH_LINE_MAX];
    if (read_line(fd, ssl, line, sizeof line) < 0) {
        snprintf(why, whylen, "no greeting: %s", io_error());
        return false;
    }
    if (strncmp(line, p->greeting, strlen(p->greeting)) != 0) {
        chomp(line);
        snprintf(why, whylen, "unexpected greeting: %.100s", line);
        return false;
    }
    return true;
}

static bool check_tls(SSL_CTX *ctx, const struct probe *p, int fd, char *why, size_t whylen)
{
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (!ssl || !SSL_set_fd(ssl, fd)) {
        snprintf(why, whylen, "cannot set up TLS");
        SSL_free(ssl);
        return false;
    }
    bool ok = false;
    errno = 0;
    if (SSL_connect(ssl) != 1) {
        unsigned long e = ERR_get_error();
        const char *reason = e ? ERR_reason_error_string(e) : NULL;
        snprintf(why, whylen, "TLS handshake failed: %s", reason ? reason : io_error());
    } else {
        ok = greeted(p, fd, ssl, why, whylen);
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    ERR_clear_error();
    return ok;
}

/* One listener address; prints a line and returns false on failure. */
static bool check_target(SSL_CTX *ctx, const struct probe *p, const struct target *t)
{
    char why[256] = "";
    errno = 0;
    int fd = connect_to(t, why, sizeof why);
    bool ok = false;
    /* A container without IPv6 still binds [::] but has no ::1: nothing
     * can reach that socket then, so there is nothing to check. */
    if (fd < 0 && t->wildcard_v6 &&
        (errno == EADDRNOTAVAIL || errno == ENETUNREACH || errno == EAFNOSUPPORT))
        return true;
    if (fd >= 0) {
        errno = 0;
        ok = p->tls ? check_tls(ctx, p, fd, why, sizeof why) : greeted(p, fd, NULL, why, sizeof why);
        close(fd);
    }
    if (!ok) {
        bool v6 = strchr(t->host, ':') != NULL;
        printf("%s: %s%s%s:%s: %s\n", p->setting, v6 ? "[" : "", t->host, v6 ? "]" : "",
               t->port, why);
    }
    return ok;
}

/* Every address of one setting; returns the number of failures. */
static unsigned check_probe(SSL_CTX *ctx, const struct probe *p)
{
    unsigned failures = 0;
    const char *s = p->spec ? p->spec : "";
    while (*s) {
        size_t len = strcspn(s, ",");
        size_t lead = strspn(s, " \t");
        size_t entry_len = len > lead ? len - lead : 0;
        while (entry_len > 0 && (s[lead + entry_len - 1] == ' ' || s[lead + entry_len - 1] == '\t'))
            entry_len--;
        struct target t;
        if (entry_len > 0) {
            if (!parse_entry(s + lead, entry_len, &t)) {
                printf("%s: cannot parse '%.*s'\n", p->setting, (int)(entry_len > 100 ? 100 : entry_len),
                       s + lead);
                failures++;
            } else if (!check_target(ctx, p, &t)) {
                failures++;
            }
        }
        s += len;
        if (*s == ',')
            s++;
    }
    return failures;
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    /* The point is whether the daemon answers, not who it is: the
     * certificate is often self-signed and named for the public host. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    return ctx;
}

static int health(const struct settings *s)
{
    const struct probe probes[] = {
        { "SMTP_LISTEN", s->smtp_listen, false, "220" },
        { "SUBMISSIONS_LISTEN", s->submissions_listen, true, "220" },
        { "SUBMISSION_LISTEN", s->submission_listen, false, "220" },
        { "POP3_LISTEN", s->enable_pop3 ? s->pop3_listen : NULL, false, "+OK" },
        { "POP3S_LISTEN", s->enable_pop3 ? s->pop3s_listen : NULL, true, "+OK" },
#if __has_include("imap_server.h")
        /* The IMAP listeners are checked once the daemon serves IMAP. */
        { "IMAP_LISTEN", s->enable_imap ? s->imap_listen : NULL, false, "* OK" },
        { "IMAPS_LISTEN", s->enable_imap ? s->imaps_listen : NULL, true, "* OK" },
#endif
    };
    /* A listener that closes during the handshake must fail the check,
     * not kill it. */
    signal(SIGPIPE, SIG_IGN);
    SSL_CTX *ctx = client_ctx();
    unsigned failures = 0;
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++)
        failures += check_probe(ctx, &probes[i]);
    SSL_CTX_free(ctx);
    fflush(stdout);
    return failures ? SETUP_FAILED : SETUP_OK;
}

int cmd_debug(const struct settings *s, int argc, char **argv)
{
    if (argc == 1 && strcmp(argv[0], "health") == 0)
        return health(s);
    if (argc == 1 && strcmp(argv[0], "settings") == 0) {
        settings_dump(s, stdout);
        return fflush(stdout) == 0 && !ferror(stdout) ? SETUP_OK
                                                      : setup_fail("cannot write the settings");
    }
    return setup_usage_error("usage: setup debug health|settings");
}
