/* relay: route decisions (DEFAULT_RELAY_HOST, per-domain relays,
 * RELAY_HOST with exclusions, credentials, TLS mode) and host:port parsing,
 * against a temporary accounts database. */
#include <stdlib.h>
#include <unistd.h>

#include "accounts.h"
#include "log.h"
#include "relay.h"
#include "test.h"

static char dir[] = "/tmp/test_relay_XXXXXX";
static struct accounts *acc;

static struct settings base(void)
{
    struct settings s = { 0 };
    s.default_relay_host = (char *)"";
    s.relay_host = (char *)"";
    s.relay_port = 25;
    s.relay_user = (char *)"";
    s.relay_password = (char *)"";
    s.relay_tls_verify = true;
    return s;
}

static struct route route_for(const struct settings *s, const char *sender_domain)
{
    struct route r;
    char err[256] = "";
    memset(&r, 0xAA, sizeof r);   /* every field must be set by relay_route */
    int rc = relay_route(s, acc, sender_domain, "dest.example", &r, err, sizeof err);
    CHECK_INT(rc, 0);
    return r;
}

TEST(direct_without_relays)
{
    struct settings s = base();
    struct route r = route_for(&s, "example.com");
    CHECK(!r.relay);
    CHECK_INT(r.port, 25);
    CHECK_INT(r.tls, ROUTE_TLS_OPPORTUNISTIC);
    CHECK(!r.verify_cert);
    CHECK_STR(r.user, "");
    char key[400];
    relay_route_key(&r, "dest.example", key, sizeof key);
    CHECK_STR(key, "mx:dest.example");
}

TEST(default_relay_host_overrides_all)
{
    char err[256];
    CHECK_INT(accounts_relay_add_domain(acc, "viadomain.example", "smarthost.example", 2525, err,
                                        sizeof err), ACCOUNTS_OK);
    struct settings s = base();
    s.default_relay_host = (char *)"[mail.isp.example]:587";
    s.relay_host = (char *)"other.example";
    s.relay_user = (char *)"isp-user";
    s.relay_password = (char *)"isp-pass";
    struct route r = route_for(&s, "viadomain.example");
    CHECK(r.relay);
    CHECK_STR(r.host, "mail.isp.example");
    CHECK_INT(r.port, 587);
    CHECK(!r.host_is_mx_lookup);
    CHECK_INT(r.tls, ROUTE_TLS_STARTTLS);
    CHECK(r.verify_cert);
    CHECK_STR(r.user, "isp-user");
    CHECK_STR(r.password, "isp-pass");
    r = route_for(&s, "");   /* bounces too */
    CHECK(r.relay);
    CHECK_STR(r.host, "mail.isp.example");
    char key[400];
    relay_route_key(&r, "dest.example", key, sizeof key);
    CHECK_STR(key, "relay:mail.isp.example:587:isp-user");
}

TEST(default_relay_host_without_brackets_looks_up_mx)
{
    struct settings s = base();
    s.default_relay_host = (char *)"relay.example:25";
    struct route r = route_for(&s, "x.example");
    CHECK(r.host_is_mx_lookup);
    CHECK_INT(r.tls, ROUTE_TLS_OPPORTUNISTIC);   /* no credentials, port 25 */
    CHECK(!r.verify_cert);
}

TEST(add_domain_by_sender_domain)
{
    char err[256];
    CHECK_INT(accounts_relay_add_domain(acc, "Sender.Example", "relay1.example", 465, err,
                                        sizeof err), ACCOUNTS_OK);
    CHECK_INT(accounts_relay_add_auth(acc, "sender.example", "u1", "p1", err, sizeof err),
              ACCOUNTS_OK);
    struct settings s = base();
    s.relay_user = (char *)"global";   /* does not apply to per-domain relays */
    s.relay_password = (char *)"gp";
    struct route r = route_for(&s, "sender.example");
    CHECK(r.relay);
    CHECK_STR(r.host, "relay1.example");
    CHECK_INT(r.port, 465);
    CHECK(!r.host_is_mx_lookup);
    CHECK_INT(r.tls, ROUTE_TLS_IMPLICIT);
    CHECK(r.verify_cert);
    CHECK_STR(r.user, "u1");
    CHECK_STR(r.password, "p1");
    /* Another sender domain goes direct. */
    r = route_for(&s, "unrelated.example");
    CHECK(!r.relay);
    /* add-domain replaces. */
    CHECK_INT(accounts_relay_add_domain(acc, "sender.example", "relay2.example", 25, err,
                                        sizeof err), ACCOUNTS_OK);
    r = route_for(&s, "sender.example");
    CHECK_STR(r.host, "relay2.example");
    CHECK_INT(r.port, 25);
    CHECK_INT(r.tls, ROUTE_TLS_STARTTLS);   /* credentials force TLS */
}

TEST(relay_host_with_exclude_domain)
{
    char err[256];
    CHECK_INT(accounts_relay_exclude_domain(acc, "excluded.example", err, sizeof err),
              ACCOUNTS_OK);
    CHECK_INT(accounts_relay_exclude_domain(acc, "excluded.example", err, sizeof err),
              ACCOUNTS_OK);   /* idempotent */
    struct settings s = base();
    s.relay_host = (char *)"smtp.relay.example";
    s.relay_port = 2587;
    struct route r = route_for(&s, "anyone.example");
    CHECK(r.relay);
    CHECK_STR(r.host, "smtp.relay.example");
    CHECK_INT(r.port, 2587);
    CHECK(!r.host_is_mx_lookup);
    CHECK_INT(r.tls, ROUTE_TLS_OPPORTUNISTIC);
    CHECK_STR(r.user, "");
    r = route_for(&s, "excluded.example");
    CHECK(!r.relay);
    r = route_for(&s, "");   /* the null sender is not excluded */
    CHECK(r.relay);
}

TEST(credentials_per_domain_win_over_relay_user)
{
    char err[256];
    CHECK_INT(accounts_relay_add_auth(acc, "authdom.example", "dom-user", "dom-pass", err,
                                      sizeof err), ACCOUNTS_OK);
    struct settings s = base();
    s.relay_host = (char *)"smtp.relay.example";
    s.relay_user = (char *)"global";
    s.relay_password = (char *)"gpass";
    s.relay_tls_verify = false;
    struct route r = route_for(&s, "authdom.example");
    CHECK_STR(r.user, "dom-user");
    CHECK_STR(r.password, "dom-pass");
    CHECK_INT(r.tls, ROUTE_TLS_STARTTLS);
    CHECK(!r.verify_cert);   /* RELAY_TLS_VERIFY=0 */
    r = route_for(&s, "other.example");
    CHECK_STR(r.user, "global");
    CHECK_STR(r.password, "gpass");
}

TEST(invalid_relay_arguments)
{
    char err[256];
    CHECK_INT(accounts_relay_add_domain(acc, "bad domain", "h.example", 25, err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_relay_add_domain(acc, "ok.example", "bad host", 25, err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_relay_add_domain(acc, "ok.example", "h.example", 0, err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_relay_add_domain(acc, "ok.example", "h.example", 70000, err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_relay_add_auth(acc, "ok.example", "", "p", err, sizeof err),
              ACCOUNTS_INVALID);
    CHECK_INT(accounts_relay_add_auth(acc, "ok.example", "u", "", err, sizeof err),
              ACCOUNTS_INVALID);
    struct accounts_relay rel;
    CHECK_INT(accounts_relay_lookup(acc, "ok.example", &rel), ACCOUNTS_OK);
    CHECK_STR(rel.host, "");
    CHECK(!rel.excluded);
    /* An IP literal and a single-label host are fine. */
    CHECK_INT(accounts_relay_add_domain(acc, "ip.example", "192.0.2.7", 25, err, sizeof err),
              ACCOUNTS_OK);
    CHECK_INT(accounts_relay_add_domain(acc, "lbl.example", "relay", 25, err, sizeof err),
              ACCOUNTS_OK);
    struct accounts_list l;
    CHECK_INT(accounts_relay_list(acc, &l), ACCOUNTS_OK);
    bool found = false;
    for (size_t i = 0; i < l.n; i++)
        found |= strcmp(l.items[i], "ip.example relay 192.0.2.7:25") == 0;
    CHECK(found);
    accounts_list_free(&l);
}

TEST(bad_relay_setting_is_an_error)
{
    struct settings s = base();
    s.default_relay_host = (char *)"[unclosed:25";
    struct route r;
    char err[256] = "";
    CHECK_INT(relay_route(&s, acc, "x.example", "d.example", &r, err, sizeof err), -1);
    CHECK(strstr(err, "DEFAULT_RELAY_HOST") != NULL);
}

TEST(parse_hostport_forms)
{
    struct route r;
    CHECK_INT(relay_parse_hostport("[mail.example]:587", 25, &r), 0);
    CHECK_STR(r.host, "mail.example");
    CHECK_INT(r.port, 587);
    CHECK(!r.host_is_mx_lookup);
    CHECK(r.relay);
    CHECK_INT(relay_parse_hostport("mail.example:2525", 25, &r), 0);
    CHECK_STR(r.host, "mail.example");
    CHECK_INT(r.port, 2525);
    CHECK(r.host_is_mx_lookup);
    CHECK_INT(relay_parse_hostport("mail.example", 26, &r), 0);
    CHECK_INT(r.port, 26);
    CHECK(r.host_is_mx_lookup);
    CHECK_INT(relay_parse_hostport("[mail.example]", 25, &r), 0);
    CHECK_INT(r.port, 25);
    CHECK(!r.host_is_mx_lookup);
    CHECK_INT(relay_parse_hostport("[2001:db8::1]:465", 25, &r), 0);
    CHECK_STR(r.host, "2001:db8::1");
    CHECK_INT(r.port, 465);
    CHECK_INT(relay_parse_hostport("192.0.2.1:25", 25, &r), 0);
    CHECK(!r.host_is_mx_lookup);   /* an address has no MX */
    CHECK_INT(relay_parse_hostport("", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("[]:25", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("[h.example", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("[h.example]x", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("h.example:", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("h.example:0", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("h.example:65536", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("h.example:25x", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("h example:25", 25, &r), -1);
    CHECK_INT(relay_parse_hostport("[h:x]:25", 25, &r), -1);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char err[512];
    acc = accounts_open(dir, err, sizeof err);
    if (!acc) {
        fprintf(stderr, "accounts_open: %s\n", err);
        return 1;
    }
    RUN(direct_without_relays);
    RUN(default_relay_host_overrides_all);
    RUN(default_relay_host_without_brackets_looks_up_mx);
    RUN(add_domain_by_sender_domain);
    RUN(relay_host_with_exclude_domain);
    RUN(credentials_per_domain_win_over_relay_user);
    RUN(invalid_relay_arguments);
    RUN(bad_relay_setting_is_an_error);
    RUN(parse_hostport_forms);
    accounts_close(acc);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    return test_summary();
}
