/* setup quota set|del */
#include <stdio.h>
#include <string.h>

#include "quota.h"
#include "setup.h"

struct quota_op {
    const char *address;
    bool del;
    uint64_t bytes;         /* set */
};

static int change_quota(const struct settings *s, void *arg)
{
    const struct quota_op *op = arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    char err[512] = "";
    enum accounts_result r = op->del
        ? accounts_quota_del(a, op->address, err, sizeof err)
        : accounts_quota_set(a, op->address, op->bytes, err, sizeof err);
    accounts_close(a);
    return r == ACCOUNTS_OK ? SETUP_OK : setup_fail("%s", err);
}

static void warn_if_disabled(const struct settings *s)
{
    if (!s->enable_quotas)
        fprintf(stderr, "setup: warning: ENABLE_QUOTAS=0: quotas are not enforced\n");
}

static int quota_set(const struct settings *s, int argc, char **argv)
{
    if (argc != 2)
        return setup_usage_error("usage: setup quota set <address> <quota>");
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!setup_address(argv[0], addr, sizeof addr, false))
        return SETUP_FAILED;
    struct quota_op op = { .address = addr };
    if (!quota_parse_size(argv[1], &op.bytes))
        return setup_fail("invalid quota: %.32s (bytes, or a number with B, K, M, G or T, "
                          "e.g. 500M; 0 = unlimited)", argv[1]);
    warn_if_disabled(s);
    return setup_run_as_owner(s, s->state_dir, 0750, change_quota, &op);
}

static int quota_del(const struct settings *s, int argc, char **argv)
{
    if (argc != 1)
        return setup_usage_error("usage: setup quota del <address>");
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!setup_address(argv[0], addr, sizeof addr, false))
        return SETUP_FAILED;
    struct quota_op op = { .address = addr, .del = true };
    return setup_run_as_owner(s, s->state_dir, 0750, change_quota, &op);
}

int cmd_quota(const struct settings *s, int argc, char **argv)
{
    if (argc < 1)
        return setup_usage_error("usage: setup quota set|del ...");
    if (strcmp(argv[0], "set") == 0)
        return quota_set(s, argc - 1, argv + 1);
    if (strcmp(argv[0], "del") == 0)
        return quota_del(s, argc - 1, argv + 1);
    return setup_usage_error("unknown quota command '%s' (see setup help)", argv[0]);
}
