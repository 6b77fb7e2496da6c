/* setup relay add-domain|add-auth|exclude-domain|list */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "setup.h"

enum relay_verb { RELAY_ADD_DOMAIN, RELAY_ADD_AUTH, RELAY_EXCLUDE };

struct relay_op {
    enum relay_verb verb;
    const char *domain;
    const char *host;       /* add-domain */
    unsigned port;
    const char *user;       /* add-auth */
    const char *password;
};

static int change_relay(const struct settings *s, void *arg)
{
    const struct relay_op *op = arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    char err[512] = "";
    enum accounts_result r;
    if (op->verb == RELAY_ADD_DOMAIN)
        r = accounts_relay_add_domain(a, op->domain, op->host, op->port, err, sizeof err);
    else if (op->verb == RELAY_ADD_AUTH)
        r = accounts_relay_add_auth(a, op->domain, op->user, op->password, err, sizeof err);
    else
        r = accounts_relay_exclude_domain(a, op->domain, err, sizeof err);
    accounts_close(a);
    return r == ACCOUNTS_OK ? SETUP_OK : setup_fail("%s", err);
}

static bool valid_domain(const char *arg, char *out, size_t outlen)
{
    bool changed = false;
    if (!accounts_normalize_domain(arg, out, outlen, &changed)) {
        setup_fail("invalid domain: %.*s", ACCOUNTS_DOMAIN_MAX, arg);
        return false;
    }
    if (changed)
        fprintf(stderr, "setup: warning: domain lowercased to %s\n", out);
    return true;
}

static bool parse_port(const char *arg, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(arg, &end, 10);
    if (arg[0] < '0' || arg[0] > '9' || *end || v == 0 || v > 65535) {
        setup_fail("invalid port: %.16s (1 to 65535)", arg);
        return false;
    }
    *out = (unsigned)v;
    return true;
}

static int add_domain(const struct settings *s, int argc, char **argv)
{
    if (argc < 2 || argc > 3)
        return setup_usage_error("usage: setup relay add-domain <domain> <host> [<port>]");
    char domain[ACCOUNTS_DOMAIN_MAX + 1];
    struct relay_op op = { .verb = RELAY_ADD_DOMAIN, .domain = domain, .host = argv[1],
                           .port = 25 };
    if (!valid_domain(argv[0], domain, sizeof domain) ||
        (argc == 3 && !parse_port(argv[2], &op.port)))
        return SETUP_FAILED;
    return setup_run_as_owner(s, s->state_dir, 0750, change_relay, &op);
}

static int add_auth(const struct settings *s, int argc, char **argv)
{
    if (argc < 2 || argc > 3)
        return setup_usage_error("usage: setup relay add-auth <domain> <user> [<password>]");
    char domain[ACCOUNTS_DOMAIN_MAX + 1];
    if (!valid_domain(argv[0], domain, sizeof domain))
        return SETUP_FAILED;
    char pw[ACCOUNTS_RELAY_SECRET_MAX + 2];
    if (argc == 3) {
        if (strlen(argv[2]) >= ACCOUNTS_RELAY_SECRET_MAX)
            return setup_fail("password longer than %d characters", ACCOUNTS_RELAY_SECRET_MAX - 1);
        snprintf(pw, sizeof pw, "%s", argv[2]);
    } else if (setup_read_password(pw, sizeof pw, true) != SETUP_OK) {
        return SETUP_FAILED;
    }
    struct relay_op op = { .verb = RELAY_ADD_AUTH, .domain = domain, .user = argv[1],
                           .password = pw };
    int rc = setup_run_as_owner(s, s->state_dir, 0750, change_relay, &op);
    memset(pw, 0, sizeof pw);
    return rc;
}

static int exclude_domain(const struct settings *s, int argc, char **argv)
{
    if (argc != 1)
        return setup_usage_error("usage: setup relay exclude-domain <domain>");
    char domain[ACCOUNTS_DOMAIN_MAX + 1];
    if (!valid_domain(argv[0], domain, sizeof domain))
        return SETUP_FAILED;
    struct relay_op op = { .verb = RELAY_EXCLUDE, .domain = domain };
    return setup_run_as_owner(s, s->state_dir, 0750, change_relay, &op);
}

static int list_relays(const struct settings *s, void *arg)
{
    (void)arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    struct accounts_list lines;
    int rc = SETUP_FAILED;
    if (accounts_relay_list(a, &lines) == ACCOUNTS_OK) {
        for (size_t i = 0; i < lines.n; i++)
            printf("* %s\n", lines.items[i]);
        accounts_list_free(&lines);
        rc = SETUP_OK;
    } else {
        setup_fail("cannot list the relays");
    }
    accounts_close(a);
    return rc;
}

int cmd_relay(const struct settings *s, int argc, char **argv)
{
    if (argc < 1)
        return setup_usage_error("usage: setup relay add-domain|add-auth|exclude-domain|list ...");
    const char *verb = argv[0];
    if (strcmp(verb, "add-domain") == 0)
        return add_domain(s, argc - 1, argv + 1);
    if (strcmp(verb, "add-auth") == 0)
        return add_auth(s, argc - 1, argv + 1);
    if (strcmp(verb, "exclude-domain") == 0)
        return exclude_domain(s, argc - 1, argv + 1);
    if (strcmp(verb, "list") == 0) {
        if (argc != 1)
            return setup_usage_error("usage: setup relay list");
        return setup_run_as_owner(s, s->state_dir, 0750, list_relays, NULL);
    }
    return setup_usage_error("unknown relay command '%s' (see setup help)", verb);
}
