/* setup email add|update|del|list */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mailstore.h"
#include "password.h"
#include "setup.h"

/* What a step run as the STATE_DIR (or Maildir) owner works on. */
struct email_op {
    const char *address;
    const char *hash;
    bool update;            /* add: false, update: true */
};

/* Hashes the password from argv (or read from the user) into hash. */
static int get_hash(int argc, char **argv, bool confirm, char *hash, size_t hashlen)
{
    char pw[PASSWORD_MAX + 2];
    if (argc > 1) {
        if (strlen(argv[1]) > PASSWORD_MAX)
            return setup_fail("password longer than %d characters", PASSWORD_MAX);
        snprintf(pw, sizeof pw, "%s", argv[1]);
    } else if (setup_read_password(pw, sizeof pw, confirm) != SETUP_OK) {
        return SETUP_FAILED;
    }
    int rc = SETUP_OK;
    if (pw[0] == '\0')
        rc = setup_fail("empty password");
    else if (strlen(pw) > PASSWORD_MAX)
        rc = setup_fail("password longer than %d characters", PASSWORD_MAX);
    else if (password_hash(pw, hash, hashlen) < 0)
        rc = setup_fail("cannot hash the password");
    memset(pw, 0, sizeof pw);
    return rc;
}

static int store_user(const struct settings *s, void *arg)
{
    const struct email_op *op = arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    char err[512] = "";
    enum accounts_result r = op->update
        ? accounts_user_set_hash(a, op->address, op->hash, err, sizeof err)
        : accounts_user_add(a, op->address, op->hash, err, sizeof err);
    accounts_close(a);
    return r == ACCOUNTS_OK ? SETUP_OK : setup_fail("%s", err);
}

static int email_add_or_update(const struct settings *s, int argc, char **argv, bool update)
{
    const char *verb = update ? "update" : "add";
    if (argc < 1 || argc > 2)
        return setup_usage_error("usage: setup email %s <address> [<password>]", verb);
    char addr[ACCOUNTS_ADDR_MAX + 1];
    if (!setup_address(argv[0], addr, sizeof addr, false))
        return SETUP_FAILED;
    char hash[256];
    if (get_hash(argc, argv, true, hash, sizeof hash) != SETUP_OK)
        return SETUP_FAILED;
    struct email_op op = { .address = addr, .hash = hash, .update = update };
    return setup_run_as_owner(s, s->state_dir, 0750, store_user, &op);
}

static int delete_user(const struct settings *s, void *arg)
{
    const struct email_op *op = arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    char err[512] = "";
    enum accounts_result r = accounts_user_del(a, op->address, err, sizeof err);
    accounts_close(a);
    return r == ACCOUNTS_OK ? SETUP_OK : setup_fail("%s", err);
}

static int delete_mailbox(const struct settings *s, void *arg)
{
    const struct email_op *op = arg;
    char err[512] = "";
    struct mailstore *ms = mailstore_open(s->mail_dir, s->hostname, err, sizeof err);
    if (!ms)
        return setup_fail("%s", err);
    int rc = mailstore_remove_mailbox(ms, op->address);
    int saved = errno;
    mailstore_close(ms);
    if (rc < 0)
        return setup_fail("cannot remove the mailbox of %s: %s", op->address, strerror(saved));
    return SETUP_OK;
}

/* MAIL_DIR/<domain>/<localpart>, as DESIGN.md lays it out; false when
 * the path does not fit or does not exist. */
static bool mailbox_dir(const struct settings *s, const char *addr, char *out, size_t outlen)
{
    const char *at = strrchr(addr, '@');
    if (!at)
        return false;
    int n = snprintf(out, outlen, "%s/%s/%.*s", s->mail_dir, at + 1, (int)(at - addr), addr);
    struct stat st;
    return n > 0 && (size_t)n < outlen && stat(out, &st) == 0 && S_ISDIR(st.st_mode);
}

/* After the account is gone: removes, or keeps and says so, its Maildir. */
static int handle_mailbox(const struct settings *s, const char *addr, bool yes)
{
    char dir[4096];
    if (!mailbox_dir(s, addr, dir, sizeof dir))
        return SETUP_OK;
    if (!yes && isatty(STDIN_FILENO)) {
        char q[ACCOUNTS_ADDR_MAX + 64];
        snprintf(q, sizeof q, "Delete the mailbox of %s as well?", addr);
        yes = setup_ask_yes(q);
    }
    if (!yes) {
        printf("Kept the mailbox of %s in %s\n", addr, dir);
        return SETUP_OK;
    }
    struct email_op op = { .address = addr };
    return setup_run_as_owner(s, dir, 0, delete_mailbox, &op);
}

static int email_del(const struct settings *s, int argc, char **argv)
{
    bool yes = false;
    int i = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-y") != 0)
            return setup_usage_error("unknown option '%s' for email del", argv[i]);
        yes = true;
    }
    if (i >= argc)
        return setup_usage_error("usage: setup email del [-y] <address> [<address>...]");
    int status = SETUP_OK;
    for (; i < argc; i++) {
        char addr[ACCOUNTS_ADDR_MAX + 1];
        struct email_op op = { .address = addr };
        if (!setup_address(argv[i], addr, sizeof addr, false) ||
            setup_run_as_owner(s, s->state_dir, 0750, delete_user, &op) != SETUP_OK ||
            handle_mailbox(s, addr, yes) != SETUP_OK)
            status = SETUP_FAILED;
    }
    return status;
}

/* Prints "    [ aliases -> a, b ]" for the aliases whose target is user.
 * `pairs` are "source target" strings. */
static void print_aliases_of(const char *user, const struct accounts_list *pairs)
{
    bool first = true;
    size_t ulen = strlen(user);
    for (size_t i = 0; i < pairs->n; i++) {
        const char *sp = strchr(pairs->items[i], ' ');
        if (!sp || strlen(sp + 1) != ulen || memcmp(sp + 1, user, ulen) != 0)
            continue;
        printf("%s%.*s", first ? "    [ aliases -> " : ", ", (int)(sp - pairs->items[i]),
               pairs->items[i]);
        first = false;
    }
    if (!first)
        printf(" ]\n");
}

static int list_users(const struct settings *s, void *arg)
{
    (void)arg;
    struct accounts *a = setup_open_accounts(s);
    if (!a)
        return SETUP_FAILED;
    struct accounts_list users, aliases;
    int rc = SETUP_FAILED;
    if (accounts_user_list(a, &users) != ACCOUNTS_OK) {
        setup_fail("cannot list the accounts");
    } else if (accounts_alias_list(a, &aliases) != ACCOUNTS_OK) {
        setup_fail("cannot list the aliases");
        accounts_list_free(&users);
    } else {
        for (size_t i = 0; i < users.n; i++) {
            printf("* %s\n", users.items[i]);
            print_aliases_of(users.items[i], &aliases);
        }
        accounts_list_free(&users);
        accounts_list_free(&aliases);
        rc = SETUP_OK;
    }
    accounts_close(a);
    return rc;
}

int cmd_email(const struct settings *s, int argc, char **argv)
{
    if (argc < 1)
        return setup_usage_error("usage: setup email add|update|del|list ...");
    const char *verb = argv[0];
    argc--;
    argv++;
    if (strcmp(verb, "add") == 0)
        return email_add_or_update(s, argc, argv, false);
    if (strcmp(verb, "update") == 0)
        return email_add_or_update(s, argc, argv, true);
    if (strcmp(verb, "del") == 0)
        return email_del(s, argc, argv);
    if (strcmp(verb, "list") == 0) {
        if (argc != 0)
            return setup_usage_error("usage: setup email list");
        return setup_run_as_owner(s, s->state_dir, 0750, list_users, NULL);
    }
    return setup_usage_error("unknown email command '%s' (see setup help)", verb);
}
