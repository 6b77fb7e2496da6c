#include "relay.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define SUBMISSIONS_PORT 465
#define SUBMISSION_PORT 587

static bool is_ip_literal(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* Host names and IP literals: letters, digits, '-', '.', and ':' for IPv6.
 * Anything else (spaces, '@', control characters) is a typo or an attack
 * on the log. */
static bool host_chars_ok(const char *h, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = h[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == ':';
        if (!ok)
            return false;
    }
    return true;
}

static int parse_port(const char *s, uint16_t *out)
{
    if (*s == '\0' || strlen(s) > 5)
        return -1;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static int set_host(struct route *out, const char *h, size_t len)
{
    if (!host_chars_ok(h, len) || len >= sizeof out->host)
        return -1;
    memcpy(out->host, h, len);
    out->host[len] = '\0';
    /* ':' outside brackets would be a port; only an IPv6 literal has it. */
    if (memchr(h, ':', len) && !is_ip_literal(out->host))
        return -1;
    return 0;
}

/* Fills a fresh route: relay, the host, the port, and whether the host is
 * looked up as an MX first (no brackets and not an address). */
int relay_parse_hostport(const char *spec, uint16_t default_port, struct route *out)
{
    memset(out, 0, sizeof *out);
    out->relay = true;
    out->port = default_port;
    if (!spec || !*spec || default_port == 0)
        return -1;
    const char *port = NULL;
    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || set_host(out, spec + 1, (size_t)(close - spec - 1)) < 0)
            return -1;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -1;
    } else {
        const char *colon = strchr(spec, ':');
        bool v6 = colon && strchr(colon + 1, ':');   /* a bare IPv6 address */
        size_t len = colon && !v6 ? (size_t)(colon - spec) : strlen(spec);
        if (set_host(out, spec, len) < 0)
            return -1;
        if (colon && !v6)
            port = colon + 1;
        out->host_is_mx_lookup = !is_ip_literal(out->host);
    }
    if (port && parse_port(port, &out->port) < 0)
        return -1;
    return 0;
}

static void set_credentials(struct route *r, const char *user, const char *password)
{
    snprintf(r->user, sizeof r->user, "%s", user ? user : "");
    snprintf(r->password, sizeof r->password, "%s", password ? password : "");
}

/* TLS by port and credentials: implicit on 465; required on 587 and
 * whenever we authenticate; otherwise opportunistic like port 25. The
 * certificate is checked only when TLS is required: an opportunistic
 * session that would fail verification falls back to nothing better. */
static void set_tls(struct route *r, const struct settings *s)
{
    if (r->port == SUBMISSIONS_PORT)
        r->tls = ROUTE_TLS_IMPLICIT;
    else if (r->user[0] || r->port == SUBMISSION_PORT)
        r->tls = ROUTE_TLS_STARTTLS;
    else
        r->tls = ROUTE_TLS_OPPORTUNISTIC;
    r->verify_cert = r->tls != ROUTE_TLS_OPPORTUNISTIC && s->relay_tls_verify;
}

/* Per-domain credentials win; RELAY_USER applies to the global relays. */
static void global_credentials(struct route *r, const struct settings *s,
                               const struct accounts_relay *dom)
{
    if (dom->user[0])
        set_credentials(r, dom->user, dom->password);
    else if (s->relay_user && s->relay_user[0])
        set_credentials(r, s->relay_user, s->relay_password);
}

static int setting_route(const char *name, const char *spec, uint16_t port, struct route *out,
                         char *err, size_t errlen)
{
    if (relay_parse_hostport(spec, port, out) == 0)
        return 0;
    snprintf(err, errlen, "%s: invalid relay host '%.200s'", name, spec);
    return -1;
}

static void direct_route(struct route *out)
{
    memset(out, 0, sizeof *out);
    out->port = 25;
    out->tls = ROUTE_TLS_OPPORTUNISTIC;
}

int relay_route(const struct settings *s, struct accounts *a, const char *sender_domain,
                const char *rcpt_domain, struct route *out, char *err, size_t errlen)
{
    (void)rcpt_domain;   /* relays are chosen by the sender, as Postfix does here */
    struct accounts_relay dom = { 0 };
    enum accounts_result r = a ? accounts_relay_lookup(a, sender_domain, &dom) : ACCOUNTS_OK;
    if (r == ACCOUNTS_ERROR) {
        snprintf(err, errlen, "relay lookup for %.255s failed (database error)", sender_domain);
        return -1;
    }
    if (r == ACCOUNTS_INVALID)
        memset(&dom, 0, sizeof dom);   /* a sender domain we cannot store: nothing for it */
    if (s->default_relay_host && s->default_relay_host[0]) {
        if (setting_route("DEFAULT_RELAY_HOST", s->default_relay_host, 25, out, err, errlen) < 0)
            return -1;
        global_credentials(out, s, &dom);
    } else if (dom.host[0]) {
        memset(out, 0, sizeof *out);
        out->relay = true;
        snprintf(out->host, sizeof out->host, "%s", dom.host);
        out->port = (uint16_t)dom.port;
        set_credentials(out, dom.user, dom.password);
    } else if (s->relay_host && s->relay_host[0] && !dom.excluded) {
        uint16_t port = s->relay_port > 0 && s->relay_port <= 65535 ? (uint16_t)s->relay_port : 25;
        if (setting_route("RELAY_HOST", s->relay_host, port, out, err, errlen) < 0)
            return -1;
        /* docker-mailserver writes RELAY_HOST as "[host]:port": no MX. */
        out->host_is_mx_lookup = false;
        global_credentials(out, s, &dom);
    } else {
        direct_route(out);
        return 0;
    }
    set_tls(out, s);
    return 0;
}

void relay_route_key(const struct route *r, const char *rcpt_domain, char *out, size_t outlen)
{
    if (r->relay)
        snprintf(out, outlen, "relay:%s:%u:%s", r->host, (unsigned)r->port, r->user);
    else
        snprintf(out, outlen, "mx:%s", rcpt_domain ? rcpt_domain : "");
}
