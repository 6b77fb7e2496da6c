/* Reading passwords and answers from the user. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "password.h"
#include "setup.h"

/* Reads one line into out without its line ending. Returns 1 for a line,
 * 0 at end of input, -1 when the line does not fit. */
static int read_line(char *out, size_t outlen)
{
    if (!fgets(out, (int)outlen, stdin))
        return 0;
    size_t len = strlen(out);
    if (len > 0 && out[len - 1] == '\n') {
        out[--len] = '\0';
    } else if (!feof(stdin)) {
        int c;
        while ((c = getchar()) != EOF && c != '\n')
            ;   /* discard the rest of the over-long line */
        return -1;
    }
    if (len > 0 && out[len - 1] == '\r')
        out[--len] = '\0';
    return 1;
}

/* Prompts on stderr and reads a line with terminal echo turned off. */
static int read_hidden(const char *prompt, char *out, size_t outlen)
{
    struct termios old, quiet;
    bool restore = tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ECHONL;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    fputs(prompt, stderr);
    fflush(stderr);
    int rc = read_line(out, outlen);
    if (restore)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    return rc;
}

static int check_read(int rc, const char *out)
{
    if (rc < 0)
        return setup_fail("password longer than %d characters", PASSWORD_MAX);
    if (rc == 0)
        return setup_fail("no password given");
    if (out[0] == '\0')
        return setup_fail("empty password");
    return SETUP_OK;
}

int setup_read_password(char *out, size_t outlen, bool confirm)
{
    char again[PASSWORD_MAX + 2];
    if (!isatty(STDIN_FILENO))
        return check_read(read_line(out, outlen), out);
    if (check_read(read_hidden("Enter Password: ", out, outlen), out) != SETUP_OK)
        return SETUP_FAILED;
    if (!confirm)
        return SETUP_OK;
    int rc = read_hidden("Confirm Password: ", again, sizeof again);
    bool same = rc == 1 && strcmp(out, again) == 0;
    memset(again, 0, sizeof again);
    if (!same)
        return setup_fail("passwords do not match");
    return SETUP_OK;
}

bool setup_ask_yes(const char *question)
{
    char answer[16];
    fprintf(stderr, "%s [y/N] ", question);
    fflush(stderr);
    int rc = read_line(answer, sizeof answer);
    return rc == 1 && (answer[0] == 'y' || answer[0] == 'Y');
}
