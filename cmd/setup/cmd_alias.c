/* setup alias add|del|list */
#include <stdio.h>
#include <string.h>

#include "setup.h"

struct alias_op {
    const char *alias;
    const char *target;
    bool del;
};

static int change_alias(const struct settings *s, void *arg)
{
    const struct alias_op *op = arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    char err[512] = "";
    enum accounts_result r = op->del
        ? accounts_alias_del(a, op->alias, op->target, err, sizeof err)
        : accounts_alias_add(a, op->alias, op->target, err, sizeof err);
    accounts_close(a);
    return r == ACCOUNTS_OK ? SETUP_OK : setup_fail("%s", err);
}

static int alias_add_or_del(const struct settings *s, int argc, char **argv, bool del)
{
    if (argc != 2)
        return setup_usage_error("usage: setup alias %s <alias> <target>", del ? "del" : "add");
    char alias[ACCOUNTS_ADDR_MAX + 1], target[ACCOUNTS_ADDR_MAX + 1];
    if (!setup_address(argv[0], alias, sizeof alias, true) ||
        !setup_address(argv[1], target, sizeof target, false))
        return SETUP_FAILED;
    struct alias_op op = { .alias = alias, .target = target, .del = del };
    return setup_run_as_owner(s, s->state_dir, 0750, change_alias, &op);
}

static int list_aliases(const struct settings *s, void *arg)
{
    (void)arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    struct accounts_list pairs;
    int rc = SETUP_FAILED;
    if (accounts_alias_list(a, &pairs) == ACCOUNTS_OK) {
        for (size_t i = 0; i < pairs.n; i++)
            printf("* %s\n", pairs.items[i]);
        accounts_list_free(&pairs);
        rc = SETUP_OK;
    } else {
        setup_fail("cannot list the aliases");
    }
    accounts_close(a);
    return rc;
}

int cmd_alias(const struct settings *s, int argc, char **argv)
{
    if (argc < 1)
        return setup_usage_error("usage: setup alias add|del|list ...");
    const char *verb = argv[0];
    if (strcmp(verb, "add") == 0)
        return alias_add_or_del(s, argc - 1, argv + 1, false);
    if (strcmp(verb, "del") == 0)
        return alias_add_or_del(s, argc - 1, argv + 1, true);
    if (strcmp(verb, "list") == 0) {
        if (argc != 1)
            return setup_usage_error("usage: setup alias list");
        return setup_run_as_owner(s, s->state_dir, 0750, list_aliases, NULL);
    }
    return setup_usage_error("unknown alias command '%s' (see setup help)", verb);
}
