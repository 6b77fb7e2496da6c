/* Unit tests for core/settings.c: defaults, the file format, environment
 * and NAME__FILE precedence, validation messages and the dump round trip. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings.h"
#include "test.h"

static char tmpdir[] = "/tmp/test_settings.XXXXXX";

/* Every known name, so that the caller's environment cannot leak in. */
static const char *const known[] = {
    "OVERRIDE_HOSTNAME", "POSTMASTER_ADDRESS", "LOG_LEVEL", "MAIL_DIR", "STATE_DIR",
    "CONFIG_DIR", "LOG_DIR", "SMTP_LISTEN", "SUBMISSIONS_LISTEN", "SUBMISSION_LISTEN",
    "IMAP_LISTEN", "IMAPS_LISTEN", "POP3_LISTEN", "POP3S_LISTEN", "DNS_RESOLVER",
    "CLAMAV_DB_DIR", "SSL_TYPE", "SSL_CERT_PATH", "SSL_KEY_PATH", "TLS_LEVEL",
    "POSTFIX_MESSAGE_SIZE_LIMIT", "POSTFIX_MAILBOX_SIZE_LIMIT", "ENABLE_QUOTAS",
    "ENABLE_IMAP", "ENABLE_POP3", "SPOOF_PROTECTION", "DMS_VMAIL_UID", "DMS_VMAIL_GID",
    "MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_IP", "SMTP_MAX_RECIPIENTS", "SMTP_TIMEOUT",
    "WORKER_THREADS",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "%s__FILE", known[i]);
        unsetenv(known[i]);
        unsetenv(f);
    }
}

/* Writes `text` to tmpdir/name and returns the path (static buffer per slot). */
static const char *write_file(const char *name, const char *text)
{
    static char paths[4][256];
    static int slot;
    char *p = paths[slot++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    if (!f)
        return p;
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return p;
}

/* Loads `text` as a settings file, expecting failure; returns the error. */
static const char *load_err(const char *text)
{
    static char err[512];
    struct settings s;
    const char *p = write_file("bad.env", text);
    err[0] = '\0';
    if (settings_load(p, &s, err, sizeof err) == 0) {
        settings_free(&s);
        return "(loaded)";
    }
    return err;
}

TEST(test_defaults)
{
    clear_env();
    struct settings s;
    char err[256];
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), 0);
    CHECK_STR(s.mail_dir, "/var/mail");
    CHECK_STR(s.state_dir, "/var/mail-state");
    CHECK_STR(s.config_dir, "/tmp/docker-mailserver");
    CHECK_STR(s.log_dir, "/var/log/mail");
    CHECK_STR(s.smtp_listen, "0.0.0.0:25,[::]:25");
    CHECK_STR(s.submissions_listen, ":465");
    CHECK_STR(s.submission_listen, ":587");
    CHECK_STR(s.imap_listen, ":143");
    CHECK_STR(s.imaps_listen, ":993");
    CHECK_STR(s.pop3_listen, ":110");
    CHECK_STR(s.pop3s_listen, ":995");
    CHECK_STR(s.dns_resolver, "");
    CHECK_STR(s.clamav_db_dir, "/var/lib/clamav");
    CHECK_STR(s.ssl_cert_path, "");
    CHECK_STR(s.ssl_key_path, "");
    CHECK_INT(s.log_level, LOG_INFO);
    CHECK_INT(s.ssl_type, SSL_TYPE_SELF_SIGNED);
    CHECK_INT(s.tls_level, TLS_LEVEL_MODERN);
    CHECK_INT(s.message_size_limit, 10240000);
    CHECK_INT(s.mailbox_size_limit, 0);
    CHECK(s.enable_quotas && s.enable_imap && s.enable_pop3 && !s.spoof_protection);
    CHECK_INT(s.vmail_uid, 5000);
    CHECK_INT(s.vmail_gid, 5000);
    CHECK_INT(s.max_connections, 1000);
    CHECK_INT(s.max_connections_per_ip, 50);
    CHECK_INT(s.smtp_max_recipients, 1000);
    CHECK_INT(s.smtp_timeout, 300);
    CHECK_INT(s.worker_threads, 16);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    size_t hl = strlen(host);
    if (hl && host[hl - 1] == '.')
        host[hl - 1] = '\0';
    CHECK_STR(s.hostname, host);
    CHECK(s.postmaster_address && strncmp(s.postmaster_address, "postmaster@", 11) == 0);
    settings_free(&s);
    CHECK(s.mail_dir == NULL && s.hostname == NULL);
}

TEST(test_free_zeroed)
{
    struct settings s;
    memset(&s, 0, sizeof s);
    settings_free(&s);
    settings_free(&s);
    CHECK(s.mail_dir == NULL);
}

TEST(test_file_format)
{
    clear_env();
    const char *p = write_file("a.env",
        "# a comment line\r\n"
        "\r\n"
        "   \t\n"
        "export MAIL_DIR=/srv/mail\r\n"
        "  STATE_DIR  =  /srv/state  \n"
        "CONFIG_DIR=\"/srv/with space # not a comment\"\n"
        "LOG_DIR='/srv/log'\n"
        "CLAMAV_DB_DIR=/srv/clam # trailing comment\n"
        "SSL_CERT_PATH=/srv/a#b\n"
        "SSL_KEY_PATH=#literal\n"
        "OVERRIDE_HOSTNAME=mail.example.com\r\n"
        "SMTP_LISTEN=127.0.0.1:2525\t# tab comment\n"
        "IMAP_LISTEN=\n"
        "TLS_LEVEL=\n"
        "ENABLE_POP3=0\n"
        "SMTP_TIMEOUT=60\n"
        "SMTP_TIMEOUT=61\n"
        "ONE_DIR=/ignored\n"
        "SOME_UNKNOWN_DMS_SETTING=whatever\n"
        "export MAX_CONNECTIONS=7\n");
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(p, &s, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_STR(s.mail_dir, "/srv/mail");
    CHECK_STR(s.state_dir, "/srv/state");
    CHECK_STR(s.config_dir, "/srv/with space # not a comment");
    CHECK_STR(s.log_dir, "/srv/log");
    CHECK_STR(s.clamav_db_dir, "/srv/clam");
    CHECK_STR(s.ssl_cert_path, "/srv/a#b");
    CHECK_STR(s.ssl_key_path, "#literal");
    CHECK_STR(s.hostname, "mail.example.com");
    CHECK_STR(s.smtp_listen, "127.0.0.1:2525");
    CHECK_STR(s.imap_listen, "");            /* empty listener disables */
    CHECK_INT(s.tls_level, TLS_LEVEL_MODERN); /* empty = default */
    CHECK(!s.enable_pop3);
    CHECK_INT(s.smtp_timeout, 61);            /* last one wins */
    CHECK_INT(s.max_connections, 7);
    settings_free(&s);
}

TEST(test_missing_file)
{
    clear_env();
    struct settings s;
    char err[256] = "";
    char path[300];
    snprintf(path, sizeof path, "%s/does-not-exist.env", tmpdir);
    CHECK_INT(settings_load(path, &s, err, sizeof err), -1);
    char want[400];
    snprintf(want, sizeof want, "%s: cannot read: No such file or directory", path);
    CHECK_STR(err, want);
    CHECK(s.mail_dir == NULL);
}

TEST(test_malformed_lines)
{
    clear_env();
    char want[400];
    snprintf(want, sizeof want, "%s/bad.env:3: expected NAME=value", tmpdir);
    CHECK_STR(load_err("# ok\nMAIL_DIR=/x\njust some words\n"), want);
    snprintf(want, sizeof want, "%s/bad.env:2: invalid setting name", tmpdir);
    CHECK_STR(load_err("\n9LIVES=1\n"), want);
    CHECK_STR(load_err("\nBAD-NAME=1\n"), want);
    CHECK_STR(load_err("\n=1\n"), want);
    snprintf(want, sizeof want, "%s/bad.env:1: unterminated quote, or text after the closing quote",
             tmpdir);
    CHECK_STR(load_err("MAIL_DIR=\"/x\n"), want);
    CHECK_STR(load_err("MAIL_DIR=\"/x\" # comment\n"), want);
    CHECK_STR(load_err("MAIL_DIR='/x\"\n"), want);

    char *big = malloc(9000);
    if (!big)
        return;
    memcpy(big, "A=\nMAIL_DIR=", 12);
    memset(big + 12, 'x', 8500);
    memcpy(big + 8512, "\n", 2);
    snprintf(want, sizeof want, "%s/bad.env:2: line longer than 8192 bytes", tmpdir);
    CHECK_STR(load_err(big), want);
    free(big);
}

TEST(test_env_overrides_file)
{
    clear_env();
    const char *p = write_file("b.env", "MAIL_DIR=/from/file\nSTATE_DIR=/file/state\n"
                                         "SMTP_LISTEN=127.0.0.1:25\n");
    setenv("MAIL_DIR", "/from/env", 1);
    setenv("SMTP_LISTEN", "", 1);
    setenv("WORKER_THREADS", "4", 1);
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(p, &s, err, sizeof err), 0);
    CHECK_STR(s.mail_dir, "/from/env");
    CHECK_STR(s.state_dir, "/file/state");
    CHECK_STR(s.smtp_listen, "");
    CHECK_INT(s.worker_threads, 4);
    settings_free(&s);
    clear_env();
}

TEST(test_name_file)
{
    clear_env();
    const char *secret = write_file("secret", "/secret/dir\r\nsecond line\n");
    char envfile[512];
    snprintf(envfile, sizeof envfile, "MAIL_DIR=/plain\nSTATE_DIR__FILE=%s\n", secret);
    const char *p = write_file("c.env", envfile);
    setenv("MAIL_DIR__FILE", secret, 1); /* wins over MAIL_DIR from the file */
    setenv("STATE_DIR", "/env/state", 1); /* loses to STATE_DIR__FILE from the file */
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(p, &s, err, sizeof err), 0);
    CHECK_STR(s.mail_dir, "/secret/dir");
    CHECK_STR(s.state_dir, "/secret/dir");
    settings_free(&s);

    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope", tmpdir);
    setenv("LOG_DIR__FILE", missing, 1);
    CHECK_INT(settings_load(p, &s, err, sizeof err), -1);
    char want[512];
    snprintf(want, sizeof want, "LOG_DIR__FILE: cannot read '%s': No such file or directory",
             missing);
    CHECK_STR(err, want);
    clear_env();
}

/* Sets NAME=value in the environment and returns the load error. */
static const char *env_err(const char *name, const char *value)
{
    static char err[512];
    struct settings s;
    clear_env();
    setenv(name, value, 1);
    err[0] = '\0';
    if (settings_load(NULL, &s, err, sizeof err) == 0) {
        settings_free(&s);
        snprintf(err, sizeof err, "(loaded)");
    }
    clear_env();
    return err;
}

TEST(test_invalid_values)
{
    CHECK_STR(env_err("TLS_LEVEL", "old"),
              "TLS_LEVEL: invalid value 'old'; accepted: modern, intermediate");
    CHECK_STR(env_err("SSL_TYPE", "custom"),
              "SSL_TYPE: invalid value 'custom'; accepted: self-signed, manual, letsencrypt");
    CHECK_STR(env_err("SSL_TYPE", "snakeoil"),
              "SSL_TYPE: invalid value 'snakeoil'; accepted: self-signed, manual, letsencrypt");
    CHECK_STR(env_err("LOG_LEVEL", "loud"),
              "LOG_LEVEL: invalid value 'loud'; accepted: error, warn, info, debug, trace");
    CHECK_STR(env_err("ENABLE_IMAP", "yes"), "ENABLE_IMAP: invalid value 'yes'; accepted: 0, 1");
    CHECK_STR(env_err("ENABLE_IMAP", "2"), "ENABLE_IMAP: invalid value '2'; accepted: 0, 1");
    CHECK_STR(env_err("ENABLE_IMAP", "01"), "ENABLE_IMAP: invalid value '01'; accepted: 0, 1");
    CHECK_STR(env_err("MAX_CONNECTIONS", "0"),
              "MAX_CONNECTIONS: invalid value '0'; accepted: an integer from 1 to 1000000");
    CHECK_STR(env_err("WORKER_THREADS", "257"),
              "WORKER_THREADS: invalid value '257'; accepted: an integer from 1 to 256");
    CHECK_STR(env_err("SMTP_TIMEOUT", "-5"),
              "SMTP_TIMEOUT: invalid value '-5'; accepted: an integer from 1 to 86400");
    CHECK_STR(env_err("SMTP_TIMEOUT", " 5"),
              "SMTP_TIMEOUT: invalid value ' 5'; accepted: an integer from 1 to 86400");
    CHECK_STR(env_err("DMS_VMAIL_UID", "4294967295"),
              "DMS_VMAIL_UID: invalid value '4294967295'; accepted: an integer from 0 to "
              "4294967294");
    CHECK_STR(env_err("DMS_VMAIL_GID", "99999999999999999999999"),
              "DMS_VMAIL_GID: invalid value '99999999999999999999999'; accepted: an integer "
              "from 0 to 4294967294");
    CHECK_STR(env_err("POSTFIX_MESSAGE_SIZE_LIMIT", "1099511627777"),
              "POSTFIX_MESSAGE_SIZE_LIMIT: invalid value '1099511627777'; accepted: a number "
              "of bytes from 0 to 1099511627776 (0 = no limit)");
    CHECK_STR(env_err("POSTFIX_MAILBOX_SIZE_LIMIT", "10M"),
              "POSTFIX_MAILBOX_SIZE_LIMIT: invalid value '10M'; accepted: a number of bytes "
              "from 0 to 1099511627776 (0 = no limit)");
    CHECK_STR(env_err("SMTP_LISTEN", "nonsense"),
              "SMTP_LISTEN: invalid value 'nonsense'; accepted: a comma-separated list of "
              "IPv4:PORT, [IPv6]:PORT or :PORT; empty disables");
    const char *resolver_acc = "; accepted: empty, IPv4:PORT or [IPv6]:PORT";
    char want[256];
    const char *bad_resolvers[] = { "1.2.3.4", "1.2.3.4:0", "1.2.3.4:65536", "dns.local:53",
                                    "::1:53", "[::1]53", "[1.2.3.4]:53", "1.2.3:53" };
    for (size_t i = 0; i < sizeof bad_resolvers / sizeof bad_resolvers[0]; i++) {
        snprintf(want, sizeof want, "DNS_RESOLVER: invalid value '%s'%s", bad_resolvers[i],
                 resolver_acc);
        CHECK_STR(env_err("DNS_RESOLVER", bad_resolvers[i]), want);
    }
    CHECK_STR(env_err("POSTMASTER_ADDRESS", "a@b@c"),
              "POSTMASTER_ADDRESS: invalid value 'a@b@c'; accepted: an address local@domain");
    CHECK_STR(env_err("POSTMASTER_ADDRESS", "@b"),
              "POSTMASTER_ADDRESS: invalid value '@b'; accepted: an address local@domain");
    CHECK_STR(env_err("POSTMASTER_ADDRESS", "a@"),
              "POSTMASTER_ADDRESS: invalid value 'a@'; accepted: an address local@domain");
    CHECK_STR(env_err("POSTMASTER_ADDRESS", "nobody"),
              "POSTMASTER_ADDRESS: invalid value 'nobody'; accepted: an address local@domain");
    /* a newline in an environment value must not split the error line */
    CHECK_STR(env_err("MAIL_DIR", "/a\nb"),
              "MAIL_DIR: invalid value '/a?b'; accepted: a file system path");
    CHECK_STR(env_err("OVERRIDE_HOSTNAME", "bad host"),
              "OVERRIDE_HOSTNAME: invalid value 'bad host'; accepted: a host name of letters, "
              "digits, '-', '_' and '.'");
}

TEST(test_valid_edge_values)
{
    clear_env();
    setenv("DNS_RESOLVER", "[::1]:5353", 1);
    setenv("DMS_VMAIL_UID", "4294967294", 1);
    setenv("DMS_VMAIL_GID", "0", 1);
    setenv("POSTFIX_MESSAGE_SIZE_LIMIT", "1099511627776", 1);
    setenv("LOG_LEVEL", "trace", 1);
    setenv("SSL_TYPE", "letsencrypt", 1);
    setenv("TLS_LEVEL", "intermediate", 1);
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_STR(s.dns_resolver, "[::1]:5353");
    CHECK_INT(s.vmail_uid, 4294967294u);
    CHECK_INT(s.vmail_gid, 0);
    CHECK(s.message_size_limit == (UINT64_C(1) << 40));
    CHECK_INT(s.log_level, LOG_TRACE);
    CHECK_INT(s.ssl_type, SSL_TYPE_LETSENCRYPT);
    CHECK_INT(s.tls_level, TLS_LEVEL_INTERMEDIATE);
    settings_free(&s);
    setenv("DNS_RESOLVER", "127.0.0.1:53", 1);
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), 0);
    CHECK_STR(s.dns_resolver, "127.0.0.1:53");
    settings_free(&s);
    clear_env();
}

TEST(test_manual_ssl)
{
    CHECK_STR(env_err("SSL_TYPE", "manual"), "SSL_CERT_PATH: required when SSL_TYPE=manual");
    clear_env();
    setenv("SSL_TYPE", "manual", 1);
    setenv("SSL_CERT_PATH", "/c.pem", 1);
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), -1);
    CHECK_STR(err, "SSL_KEY_PATH: required when SSL_TYPE=manual");
    setenv("SSL_KEY_PATH", "/k.pem", 1);
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), 0);
    CHECK_INT(s.ssl_type, SSL_TYPE_MANUAL);
    CHECK_STR(s.ssl_cert_path, "/c.pem");
    CHECK_STR(s.ssl_key_path, "/k.pem");
    settings_free(&s);
    clear_env();
}

static void check_postmaster(const char *host, const char *want)
{
    struct settings s;
    char err[256] = "";
    clear_env();
    setenv("OVERRIDE_HOSTNAME", host, 1);
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), 0);
    CHECK_STR(s.hostname, host);
    CHECK_STR(s.postmaster_address, want);
    settings_free(&s);
    clear_env();
}

TEST(test_postmaster_default)
{
    check_postmaster("mail.example.com", "postmaster@example.com");
    check_postmaster("a.b.example.org", "postmaster@b.example.org");
    check_postmaster("example.com", "postmaster@example.com");
    check_postmaster("host", "postmaster@host");

    clear_env();
    setenv("OVERRIDE_HOSTNAME", "mail.example.com", 1);
    setenv("POSTMASTER_ADDRESS", "admin@example.net", 1);
    struct settings s;
    char err[256] = "";
    CHECK_INT(settings_load(NULL, &s, err, sizeof err), 0);
    CHECK_STR(s.postmaster_address, "admin@example.net");
    settings_free(&s);
    clear_env();
}

TEST(test_dump_round_trip)
{
    clear_env();
    setenv("OVERRIDE_HOSTNAME", "mx.example.com", 1);
    setenv("MAIL_DIR", "/odd # dir ", 1);
    setenv("STATE_DIR", "\"quoted\"", 1);
    setenv("SMTP_LISTEN", "", 1);
    setenv("LOG_LEVEL", "debug", 1);
    setenv("SSL_TYPE", "manual", 1);
    setenv("SSL_CERT_PATH", "/c.pem", 1);
    setenv("SSL_KEY_PATH", "/k.pem", 1);
    setenv("ENABLE_IMAP", "0", 1);
    setenv("SPOOF_PROTECTION", "1", 1);
    setenv("POSTFIX_MAILBOX_SIZE_LIMIT", "123456789012", 1);
    setenv("DMS_VMAIL_UID", "1234", 1);
    setenv("WORKER_THREADS", "3", 1);
    struct settings a, b;
    char err[256] = "";
    CHECK_INT(settings_load(NULL, &a, err, sizeof err), 0);
    clear_env();

    char path[300];
    snprintf(path, sizeof path, "%s/dump.env", tmpdir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    settings_dump(&a, f);
    fclose(f);

    CHECK_INT(settings_load(path, &b, err, sizeof err), 0);
    CHECK_STR(err, "");
    CHECK_STR(b.mail_dir, "/odd # dir ");
    CHECK_STR(b.state_dir, "\"quoted\"");
    CHECK_STR(b.smtp_listen, "");
    CHECK_STR(b.hostname, "mx.example.com");
    CHECK_STR(b.postmaster_address, "postmaster@example.com");
    CHECK_INT(b.log_level, LOG_DEBUG);
    CHECK_INT(b.ssl_type, SSL_TYPE_MANUAL);
    CHECK(!b.enable_imap && b.spoof_protection);
    CHECK(b.mailbox_size_limit == UINT64_C(123456789012));
    CHECK_INT(b.vmail_uid, 1234);
    CHECK_INT(b.worker_threads, 3);

    /* The second dump must be identical to the first. */
    char *d1 = NULL, *d2 = NULL;
    size_t l1 = 0, l2 = 0;
    FILE *m1 = open_memstream(&d1, &l1), *m2 = open_memstream(&d2, &l2);
    settings_dump(&a, m1);
    settings_dump(&b, m2);
    fclose(m1);
    fclose(m2);
    CHECK_STR(d2, d1);
    CHECK(strstr(d1, "LOG_LEVEL=debug\n") != NULL);
    CHECK(strstr(d1, "SSL_TYPE=manual\n") != NULL);
    CHECK(strstr(d1, "ENABLE_IMAP=0\n") != NULL);
    CHECK(strstr(d1, "SMTP_LISTEN=\n") != NULL);
    CHECK(strncmp(d1, "OVERRIDE_HOSTNAME=mx.example.com\n", 33) == 0);
    free(d1);
    free(d2);
    settings_free(&a);
    settings_free(&b);
    unlink(path);
}

static void remove_tmpdir(void)
{
    static const char *const files[] = { "a.env", "b.env", "c.env", "bad.env", "secret",
                                         "dump.env" };
    char p[300];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_defaults);
    RUN(test_free_zeroed);
    RUN(test_file_format);
    RUN(test_missing_file);
    RUN(test_malformed_lines);
    RUN(test_env_overrides_file);
    RUN(test_name_file);
    RUN(test_invalid_values);
    RUN(test_valid_edge_values);
    RUN(test_manual_ssl);
    RUN(test_postmaster_default);
    RUN(test_dump_round_trip);
    remove_tmpdir();
    return test_summary();
}
