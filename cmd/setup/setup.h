/* setup: the management CLI's internal interface, shared by its command
 * files (cmd_email.c, cmd_alias.c) and its helpers (run_as.c, prompt.c,
 * main.c). Exit statuses follow DESIGN.md: 0 done, 1 validation or
 * runtime error (one "setup: <reason>" line on stderr), 2 usage error. */
#ifndef POSTHORN_SETUP_H
#define POSTHORN_SETUP_H

#include <stdbool.h>
#include <stddef.h>

#include "accounts.h"
#include "settings.h"

#define SETUP_OK 0
#define SETUP_FAILED 1
#define SETUP_USAGE 2

/* Prints "setup: <message>" to stderr and returns SETUP_FAILED. */
int setup_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "setup: <message>" to stderr and returns SETUP_USAGE. */
int setup_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Validates and lowercases an address argument into out (at least
 * ACCOUNTS_ADDR_MAX + 1 bytes), warning on stderr when lowercasing changed
 * it. With allow_catchall, "@domain" is accepted too. On an invalid
 * address prints the reason and returns false. */
bool setup_address(const char *arg, char *out, size_t outlen, bool allow_catchall);

/* Runs fn(arg) with the identity that owns `dir`, and returns its status.
 * Not root: creates `dir` when `create_mode` is non-zero and it is
 * missing, then runs fn directly. Root: creates `dir` when `create_mode`
 * is non-zero and it is missing, and gives it to DMS_VMAIL_UID/GID (also
 * when it exists but belongs to root, as posthornd would), then runs
 * fn in a child process that has switched to the directory owner's uid
 * and gid (setgroups, setgid, setuid), so that files it creates belong to
 * the same user as the daemon. Without create_mode, a directory owned by
 * root is used as root. */
int setup_run_as_owner(const struct settings *s, const char *dir, unsigned create_mode,
                       int (*fn)(const struct settings *s, void *arg), void *arg);

/* Opens accounts.db in STATE_DIR; on failure prints the reason and
 * returns NULL. Call inside setup_run_as_owner(s, s->state_dir, ...). */
struct accounts *setup_open_accounts(const struct settings *s);

/* Reads a password: on a terminal prompts "Enter Password: " (and
 * "Confirm Password: " when confirm) without echo; otherwise reads one
 * line from stdin. Returns SETUP_OK, or prints the reason and returns
 * SETUP_FAILED (empty, too long, mismatch, end of input). */
int setup_read_password(char *out, size_t outlen, bool confirm);

/* Asks a yes/no question on the terminal; true only for an answer
 * starting with 'y' or 'Y'. */
bool setup_ask_yes(const char *question);

int cmd_email(const struct settings *s, int argc, char **argv);
int cmd_alias(const struct settings *s, int argc, char **argv);
int cmd_relay(const struct settings *s, int argc, char **argv);
int cmd_quota(const struct settings *s, int argc, char **argv);
int cmd_queue(const struct settings *s, int argc, char **argv);
/* setup import dms <dir> (cmd_import.c) */
int cmd_import(const struct settings *s, int argc, char **argv);
/* setup debug health|settings (cmd_debug.c) */
int cmd_debug(const struct settings *s, int argc, char **argv);
/* setup spam learn|forget|check|stats (cmd_spam.c) */
int cmd_spam(const struct settings *s, int argc, char **argv);

#endif
