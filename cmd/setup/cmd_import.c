/* setup import dms <dir>: imports docker-mailserver's configuration files
 * (postfix-accounts.cf, postfix-virtual.cf, postfix-relaymap.cf,
 * postfix-sasl-password.cf, dovecot-quotas.cf) into accounts.db.
 *
 * A bad line is reported as "setup: import: FILE:LINE: reason" on stderr
 * and the rest is imported; entries already present are skipped quietly,
 * so running it again changes nothing. A summary goes to stdout. Exit 0
 * when every line was usable, 1 when some line was not (or on an error).
 *
 * The files are read first, as the caller (root in the container: they may
 * be readable by root only), then written as the owner of STATE_DIR. */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "password.h"
#include "setup.h"

#define IMPORT_FILE_MAX (32u << 20)   /* far above any real installation */
#define IMPORT_LINE_MAX 4096

enum import_kind { K_ACCOUNTS, K_VIRTUAL, K_RELAYMAP, K_SASL, K_QUOTAS, K_COUNT };

static const char *const file_names[K_COUNT] = {
    "postfix-accounts.cf", "postfix-virtual.cf", "postfix-relaymap.cf",
    "postfix-sasl-password.cf", "dovecot-quotas.cf",
};

struct import_job {
    const char *dir;
    struct buf content[K_COUNT];
    bool present[K_COUNT];
    unsigned added[K_COUNT];
    unsigned present_already;
    unsigned bad;
};

struct line_ctx {
    struct import_job *job;
    struct accounts *a;
    enum import_kind kind;
    unsigned lineno;
};

static void bad_line(struct line_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad_line(struct line_ctx *c, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "setup: import: %s/%s:%u: %s\n", c->job->dir, file_names[c->kind], c->lineno,
            msg);
    c->job->bad++;
}

/* Counts the outcome of one add; true when it is not a failure. */
static bool tally(struct line_ctx *c, enum accounts_result r, const char *err)
{
    if (r == ACCOUNTS_OK) {
        c->job->added[c->kind]++;
        return true;
    }
    /* "already exists" is the idempotent case; EXISTS also covers
     * conflicts (an alias named like an account), which are reported. */
    if (r == ACCOUNTS_EXISTS && strstr(err, "already exists")) {
        c->job->present_already++;
        return true;
    }
    bad_line(c, "%s", err[0] ? err : "not imported");
    return false;
}

/* Splits off the next token separated by any of `seps`; NULL at the end. */
static char *next_token(char **cursor, const char *seps)
{
    char *s = *cursor + strspn(*cursor, seps);
    if (*s == '\0')
        return NULL;
    char *end = s + strcspn(s, seps);
    if (*end)
        *end++ = '\0';
    *cursor = end;
    return s;
}

/* user@domain|{SHA512-CRYPT}$6$... (further |fields are ignored) */
static void import_account(struct line_ctx *c, char *line)
{
    char *bar = strchr(line, '|');
    if (!bar) {
        bad_line(c, "expected user@domain|{SHA512-CRYPT}hash");
        return;
    }
    *bar = '\0';
    char *hash = bar + 1;
    hash[strcspn(hash, "|")] = '\0';
    if (!password_hash_is_supported(hash)) {
        bad_line(c, "%s: unsupported password hash (SHA512-CRYPT, SHA256-CRYPT, BLF-CRYPT and "
                 "yescrypt are)", line);
        return;
    }
    char err[512] = "";
    tally(c, accounts_user_add(c->a, line, hash, err, sizeof err), err);
}

/* alias target[,target...] (targets may also be separated by spaces) */
static void import_alias(struct line_ctx *c, char *line)
{
    char *cursor = line;
    char *alias = next_token(&cursor, " \t");
    char *target = next_token(&cursor, ", \t");
    if (!alias || !target) {
        bad_line(c, "expected: alias target[,target...]");
        return;
    }
    for (; target; target = next_token(&cursor, ", \t")) {
        char err[512] = "";
        tally(c, accounts_alias_add(c->a, alias, target, err, sizeof err), err);
    }
}

/* Relay and quota setters replace what is stored; looking first keeps a
 * second import quiet ("already present") instead of counting it again. */
static bool relay_same(struct line_ctx *c, const char *domain, const char *host, unsigned port,
                       const char *user, const char *password)
{
    struct accounts_relay r;
    if (accounts_relay_lookup(c->a, domain, &r) != ACCOUNTS_OK)
        return false;
    bool same;
    if (host)
        same = strcasecmp(r.host, host) == 0 && r.port == port;
    else if (user)
        same = strcmp(r.user, user) == 0 && strcmp(r.password, password) == 0;
    else
        same = r.excluded;
    memset(&r, 0, sizeof r);
    if (same)
        c->job->present_already++;
    return same;
}

/* [host]:port, [host], host:port or host; port 25 when omitted. */
static bool parse_relay_host(char *spec, char **host, unsigned *port)
{
    char *port_text = NULL;
    if (spec[0] == '[') {
        char *close = strchr(spec, ']');
        if (!close || close == spec + 1 || (close[1] && close[1] != ':'))
            return false;
        *close = '\0';
        *host = spec + 1;
        if (close[1] == ':')
            port_text = close + 2;
    } else {
        char *colon = strchr(spec, ':');
        if (colon) {
            *colon = '\0';
            port_text = colon + 1;
        }
        *host = spec;
    }
    *port = 25;
    if (!port_text)
        return **host != '\0';
    char *end;
    errno = 0;
    unsigned long v = strtoul(port_text, &end, 10);
    if (!isdigit((unsigned char)port_text[0]) || *end || errno || v == 0 || v > 65535)
        return false;
    *port = (unsigned)v;
    return **host != '\0';
}

/* @domain [host]:port, or @domain alone: not through RELAY_HOST (what
 * docker-mailserver's `setup relay exclude-domain` writes). */
static void import_relay(struct line_ctx *c, char *line)
{
    char *cursor = line;
    char *domain = next_token(&cursor, " \t");
    char *spec = next_token(&cursor, " \t");
    if (!domain || domain[0] != '@' || next_token(&cursor, " \t")) {
        bad_line(c, "expected: @domain [host]:port");
        return;
    }
    char err[512] = "";
    if (!spec) {
        if (relay_same(c, domain + 1, NULL, 0, NULL, NULL))
            return;
        enum accounts_result r = accounts_relay_exclude_domain(c->a, domain + 1, err, sizeof err);
        tally(c, r, err);
        return;
    }
    char *host;
    unsigned port;
    if (!parse_relay_host(spec, &host, &port)) {
        bad_line(c, "invalid relay host '%.300s' (expected [host]:port)", spec);
        return;
    }
    if (relay_same(c, domain + 1, host, port, NULL, NULL))
        return;
    tally(c, accounts_relay_add_domain(c->a, domain + 1, host, port, err, sizeof err), err);
}

/* @domain user:password (the password may contain ':') */
static void import_sasl(struct line_ctx *c, char *line)
{
    char *cursor = line;
    char *domain = next_token(&cursor, " \t");
    char *cred = next_token(&cursor, " \t");
    char *colon = cred ? strchr(cred, ':') : NULL;
    if (!domain || !colon || colon == cred || !colon[1] || next_token(&cursor, " \t")) {
        bad_line(c, "expected: @domain user:password");
        return;
    }
    if (domain[0] != '@') {
        bad_line(c, "only @domain entries are imported (credentials for RELAY_HOST go into "
                 "RELAY_USER and RELAY_PASSWORD)");
        return;
    }
    *colon = '\0';
    char err[512] = "";
    if (!relay_same(c, domain + 1, NULL, 0, cred, colon + 1))
        tally(c, accounts_relay_add_auth(c->a, domain + 1, cred, colon + 1, err, sizeof err), err);
    memset(colon + 1, 0, strlen(colon + 1));
}

#ifdef ACCOUNTS_QUOTA_MAX
/* Dovecot's sizes: a number with an optional k, M, G or T (powers of
 * 1024), optionally followed by B; 0 means no limit. */
static bool parse_quota(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (!isdigit((unsigned char)text[0]) || errno)
        return false;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end || v > (UINT64_MAX >> shift))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

/* user@domain:size */
static void import_quota(struct line_ctx *c, char *line)
{
    char *colon = strrchr(line, ':');
    uint64_t bytes;
    if (!colon || colon == line) {
        bad_line(c, "expected: user@domain:size");
        return;
    }
    *colon = '\0';
    if (!parse_quota(colon + 1, &bytes)) {
        bad_line(c, "invalid size '%.40s' (a number with k, M, G or T)", colon + 1);
        return;
    }
    uint64_t stored;
    if (accounts_quota_get(c->a, line, &stored) == ACCOUNTS_OK && stored == bytes) {
        c->job->present_already++;
        return;
    }
    char err[512] = "";
    tally(c, accounts_quota_set(c->a, line, bytes, err, sizeof err), err);
}
#endif

static void import_line(struct line_ctx *c, char *line)
{
    switch (c->kind) {
    case K_ACCOUNTS: import_account(c, line); break;
    case K_VIRTUAL: import_alias(c, line); break;
    case K_RELAYMAP: import_relay(c, line); break;
    case K_SASL: import_sasl(c, line); break;
#ifdef ACCOUNTS_QUOTA_MAX
    case K_QUOTAS: import_quota(c, line); break;
#else
    case K_QUOTAS: break;
#endif
    case K_COUNT: break;
    }
}

/* Trims blanks and CR at both ends, in place. */
static char *trim(char *s, size_t len)
{
    while (len && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\r'))
        len--;
    s[len] = '\0';
    return s + strspn(s, " \t");
}

static void import_file(struct import_job *job, struct accounts *a, enum import_kind kind)
{
    struct line_ctx c = { .job = job, .a = a, .kind = kind };
    char *text = buf_cstr(&job->content[kind]);
    size_t left = job->content[kind].len;
    while (text && left) {
        char *nl = memchr(text, '\n', left);
        size_t len = nl ? (size_t)(nl - text) : left;
        c.lineno++;
        if (len > IMPORT_LINE_MAX) {
            bad_line(&c, "line longer than %u characters", IMPORT_LINE_MAX);
        } else if (memchr(text, '\0', len)) {
            bad_line(&c, "NUL character in the line");
        } else {
            char *line = trim(text, len);
            if (line[0] && line[0] != '#')
                import_line(&c, line);
        }
        left -= nl ? len + 1 : len;
        text = nl ? nl + 1 : NULL;
    }
}

static int import_all(const struct settings *s, void *arg)
{
    struct import_job *job = arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    /* Accounts first: aliases and quotas refer to them. */
    for (int k = 0; k < K_COUNT; k++)
        if (job->present[k])
            import_file(job, a, (enum import_kind)k);
    accounts_close(a);

    printf("imported from %s: %u accounts, %u aliases, %u relay domains, %u relay credentials",
           job->dir, job->added[K_ACCOUNTS], job->added[K_VIRTUAL], job->added[K_RELAYMAP],
           job->added[K_SASL]);
#ifdef ACCOUNTS_QUOTA_MAX
    printf(", %u quotas", job->added[K_QUOTAS]);
#endif
    printf("; %u already present; %u bad lines\n", job->present_already, job->bad);
#ifndef ACCOUNTS_QUOTA_MAX
    if (job->present[K_QUOTAS])
        printf("%s: not imported yet (quotas arrive with IMAP)\n", file_names[K_QUOTAS]);
#endif
    return job->bad ? SETUP_FAILED : SETUP_OK;
}

/* Reads dir/name into out; a missing file is not an error. */
static int read_file(const char *dir, const char *name, struct buf *out, bool *present)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path)
        return setup_fail("%s: path too long", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? SETUP_OK : setup_fail("cannot read %s: %s", path, strerror(errno));
    struct stat st;
    int rc = SETUP_OK;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        rc = setup_fail("cannot read %s: not a regular file", path);
    else if ((uint64_t)st.st_size > IMPORT_FILE_MAX)
        rc = setup_fail("%s: larger than %u bytes", path, IMPORT_FILE_MAX);
    char chunk[8192];
    ssize_t got;
    while (rc == SETUP_OK && (got = read(fd, chunk, sizeof chunk)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            rc = setup_fail("cannot read %s: %s", path, strerror(errno));
        else if (out->len + (size_t)got > IMPORT_FILE_MAX)
            rc = setup_fail("%s: larger than %u bytes", path, IMPORT_FILE_MAX);
        else if (buf_append(out, chunk, (size_t)got) < 0)
            rc = setup_fail("out of memory reading %s", path);
    }
    close(fd);
    *present = rc == SETUP_OK;
    return rc;
}

static int import_dms(const struct settings *s, const char *dir)
{
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return setup_fail("%s: not a directory", dir);
    struct import_job job = { .dir = dir };
    int rc = SETUP_OK;
    bool any = false;
    for (int k = 0; k < K_COUNT; k++) {
        job.content[k] = (struct buf)BUF_INIT;
        if (rc == SETUP_OK)
            rc = read_file(dir, file_names[k], &job.content[k], &job.present[k]);
        any = any || job.present[k];
    }
    if (rc == SETUP_OK && !any)
        printf("nothing to import: no docker-mailserver files in %s\n", dir);
    else if (rc == SETUP_OK)
        rc = setup_run_as_owner(s, s->state_dir, 0750, import_all, &job);
    for (int k = 0; k < K_COUNT; k++) {
        /* The sasl file holds relay passwords. */
        if (job.content[k].data)
            memset(job.content[k].data, 0, job.content[k].len);
        buf_free(&job.content[k]);
    }
    return rc;
}

int cmd_import(const struct settings *s, int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[0], "dms") != 0)
        return setup_usage_error("usage: setup import dms <directory>");
    return import_dms(s, argv[1]);
}
