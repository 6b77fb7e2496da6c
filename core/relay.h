/* relay: where an outbound message goes, docker-mailserver's way.
 *
 * Relays are chosen by the SENDER's domain (Postfix's
 * sender_dependent_relayhost_maps, as docker-mailserver configures it):
 *   1. DEFAULT_RELAY_HOST ("[host]:port" or "host:port"): everything goes there;
 *   2. a domain added with `setup relay add-domain <domain> <host> [<port>]`:
 *      mail from that domain goes to that host (port default 25);
 *   3. RELAY_HOST (RELAY_PORT, default 25): mail from every domain not
 *      excluded with `setup relay exclude-domain <domain>`;
 *   4. otherwise direct delivery to the recipient domain's MX.
 * Credentials: `setup relay add-auth <domain> <user> [<password>]` for mail
 * from that domain, else RELAY_USER/RELAY_PASSWORD for RELAY_HOST and
 * DEFAULT_RELAY_HOST. With credentials, TLS is required: implicit on port
 * 465, STARTTLS on any other port; the relay's certificate is verified
 * against the system CA store unless RELAY_TLS_VERIFY=0. Direct deliveries
 * use opportunistic STARTTLS without verification, credentials or not.
 *
 * The tables live in accounts.db (schema v2), managed through accounts.h's
 * relay functions; this module only decides. Blocking (SQLite): workers. */
#ifndef POSTHORN_RELAY_H
#define POSTHORN_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "accounts.h"
#include "settings.h"

enum route_tls {
    ROUTE_TLS_OPPORTUNISTIC,   /* STARTTLS when offered, no verification */
    ROUTE_TLS_STARTTLS,        /* STARTTLS required */
    ROUTE_TLS_IMPLICIT,        /* TLS from the first byte (port 465) */
};

struct route {
    bool relay;                /* false: the recipient domain's MX */
    char host[256];            /* relay host (name or IP literal without brackets) */
    uint16_t port;             /* 25 for direct */
    bool host_is_mx_lookup;    /* "host:port" without brackets: resolve MX first, as Postfix does */
    enum route_tls tls;
    bool verify_cert;
    char user[256];            /* "" = no AUTH */
    char password[256];
};

/* Decides the route for a message from sender_domain ("" for <>) to
 * rcpt_domain. Returns 0, or -1 with a reason (database error). */
int relay_route(const struct settings *s, struct accounts *a, const char *sender_domain,
                const char *rcpt_domain, struct route *out, char *err, size_t errlen);

/* A key that is equal for recipients that can share one connection:
 * "mx:<rcpt_domain>" or "relay:<host>:<port>:<user>". */
void relay_route_key(const struct route *r, const char *rcpt_domain, char *out, size_t outlen);

/* Parses "[host]:port", "host:port", "host", "[host]" (DEFAULT_RELAY_HOST
 * and RELAY_HOST syntax). Returns 0 or -1. */
int relay_parse_hostport(const char *spec, uint16_t default_port, struct route *out);

#endif
