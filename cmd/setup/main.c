/* setup: manages a posthorn installation with docker-mailserver's verbs.
 * This file parses the global options, loads the settings and dispatches
 * to the command files. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "setup.h"

#define DEFAULT_SETTINGS_FILE "/etc/posthorn/posthorn.env"

static const char usage_text[] =
    "Usage: setup [-c FILE] <command> [<arguments>]\n"
    "\n"
    "  email add <address> [<password>]     add an account (password read from\n"
    "                                       the terminal or stdin when omitted)\n"
    "  email update <address> [<password>]  change an account's password\n"
    "  email del [-y] <address> [...]       delete accounts (-y: and their mailboxes)\n"
    "  email list                           list accounts and the aliases to them\n"
    "  alias add <alias> <target>           add an alias (<alias> may be @domain)\n"
    "  alias del <alias> <target>           delete an alias\n"
    "  alias list                           list aliases\n"
    "  quota set <address> <quota>          limit a mailbox (e.g. 500M, 1G; 0 = unlimited)\n"
    "  quota del <address>                  remove it (POSTFIX_MAILBOX_SIZE_LIMIT applies)\n"
    "  relay add-domain <domain> <host> [<port>]  send mail from <domain> via <host>\n"
    "  relay add-auth <domain> <user> [<password>] credentials for mail from <domain>\n"
    "  relay exclude-domain <domain>        mail from <domain> bypasses RELAY_HOST\n"
    "  relay list                           list the relay settings\n"
    "  queue list                           list queued outbound messages\n"
    "  queue flush [<id>]                   retry queued messages now\n"
    "  queue delete <id>                    remove a queued message\n"
    "  import dms <directory>               import docker-mailserver's files\n"
    "                                       (postfix-accounts.cf, postfix-virtual.cf, ...)\n"
    "  spam learn spam|ham <path>...        train the Bayes classifier from Maildirs,\n"
    "                                       mbox files or message files\n"
    "  spam forget <path>...                unlearn messages\n"
    "  spam check <path>...                 print each message's spam probability\n"
    "  spam stats                           messages and tokens learned\n"
    "  debug health                         check that every enabled listener answers\n"
    "  debug settings                       print the effective settings (NAME=value)\n"
    "  help                                 show this text\n"
    "\n"
    "Options:\n"
    "  -c FILE   settings file (default: " DEFAULT_SETTINGS_FILE " if it exists,\n"
    "            otherwise defaults and the environment)\n";

static int vreport(int status, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "setup: %s\n", msg);
    return status;
}

int setup_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vreport(SETUP_FAILED, fmt, ap);
    va_end(ap);
    return rc;
}

int setup_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vreport(SETUP_USAGE, fmt, ap);
    va_end(ap);
    return rc;
}

bool setup_address(const char *arg, char *out, size_t outlen, bool allow_catchall)
{
    bool changed = false, ok;
    if (allow_catchall && arg[0] == '@') {
        ok = outlen > 1 && accounts_normalize_domain(arg + 1, out + 1, outlen - 1, &changed);
        if (ok)
            out[0] = '@';
    } else {
        ok = accounts_normalize_address(arg, out, outlen, &changed);
    }
    if (!ok) {
        setup_fail("invalid address: %.*s", ACCOUNTS_ADDR_MAX, arg);
        return false;
    }
    if (changed)
        fprintf(stderr, "setup: warning: address lowercased to %s\n", out);
    return true;
}

static bool is_help(const char *arg)
{
    return strcmp(arg, "help") == 0 || strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

static int load_settings(const char *path, struct settings *s)
{
    if (!path && access(DEFAULT_SETTINGS_FILE, F_OK) == 0)
        path = DEFAULT_SETTINGS_FILE;
    char err[512];
    if (settings_load(path, s, err, sizeof err) < 0)
        return setup_fail("%s", err);
    return SETUP_OK;
}

static int dispatch(const char *path, const char *cmd, int argc, char **argv)
{
    int (*fn)(const struct settings *, int, char **);
    if (strcmp(cmd, "email") == 0)
        fn = cmd_email;
    else if (strcmp(cmd, "alias") == 0)
        fn = cmd_alias;
    else if (strcmp(cmd, "relay") == 0)
        fn = cmd_relay;
    else if (strcmp(cmd, "quota") == 0)
        fn = cmd_quota;
    else if (strcmp(cmd, "queue") == 0)
        fn = cmd_queue;
    else if (strcmp(cmd, "import") == 0)
        fn = cmd_import;
    else if (strcmp(cmd, "debug") == 0)
        fn = cmd_debug;
    else if (strcmp(cmd, "spam") == 0)
        fn = cmd_spam;
    else
        return setup_usage_error("unknown command '%s' (see setup help)", cmd);
    struct settings s;
    if (load_settings(path, &s) != SETUP_OK)
        return SETUP_FAILED;
    int rc = fn(&s, argc, argv);
    settings_free(&s);
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (is_help(argv[i])) {
            fputs(usage_text, stdout);
            return SETUP_OK;
        }
        if (strcmp(argv[i], "-c") != 0)
            return setup_usage_error("unknown option '%s' (see setup help)", argv[i]);
        if (++i >= argc)
            return setup_usage_error("-c needs a file name");
        path = argv[i];
    }
    if (i >= argc)
        return setup_usage_error("missing command (see setup help)");
    if (is_help(argv[i])) {
        fputs(usage_text, stdout);
        return SETUP_OK;
    }
    /* Only warnings and errors from the libraries: output stays readable. */
    log_set_level(LOG_WARN);
    return dispatch(path, argv[i], argc - i - 1, argv + i + 1);
}
