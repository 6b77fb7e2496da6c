/* POP3 command parsers. See pop3_parse.h. */
#include "pop3_parse.h"

#include <string.h>

static const struct {
    const char *name;
    enum pop3_verb verb;
} verbs[] = {
    { "USER", POP3_USER }, { "PASS", POP3_PASS }, { "APOP", POP3_APOP },
    { "AUTH", POP3_AUTH }, { "STLS", POP3_STLS }, { "CAPA", POP3_CAPA },
    { "QUIT", POP3_QUIT }, { "STAT", POP3_STAT }, { "LIST", POP3_LIST },
    { "RETR", POP3_RETR }, { "DELE", POP3_DELE }, { "NOOP", POP3_NOOP },
    { "RSET", POP3_RSET }, { "TOP", POP3_TOP },   { "UIDL", POP3_UIDL },
};

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

int pop3_parse_command(const char *line, size_t len, struct pop3_command *cmd)
{
    size_t kw = 0;
    while (kw < len && line[kw] != ' ')
        kw++;
    cmd->verb = POP3_UNKNOWN;
    cmd->args = kw < len ? line + kw + 1 : line + len;
    cmd->args_len = kw < len ? len - kw - 1 : 0;
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        const char *name = verbs[i].name;
        if (strlen(name) != kw)
            continue;
        size_t j = 0;
        while (j < kw && upper(line[j]) == name[j])
            j++;
        if (j == kw) {
            cmd->verb = verbs[i].verb;
            return 0;
        }
    }
    return -1;
}

const char *pop3_verb_name(enum pop3_verb verb)
{
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (verbs[i].verb == verb)
            return verbs[i].name;
    return "?";
}

/* --- words and numbers ---------------------------------------------------- */

static size_t skip_spaces(const char *s, size_t len, size_t i)
{
    while (i < len && s[i] == ' ')
        i++;
    return i;
}

/* One decimal number at s[*pos]; advances *pos past it. Values above `max`
 * saturate to max + 1 so the caller can tell "too large" apart. */
static int parse_number(const char *s, size_t len, size_t *pos, uint64_t max, uint64_t *out)
{
    size_t i = *pos;
    uint64_t v = 0;
    if (i >= len || s[i] < '0' || s[i] > '9')
        return -1;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (v <= max)
            v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (i < len && s[i] != ' ')
        return -1;          /* "3x", "3-4" */
    *out = v > max ? max + 1 : v;
    *pos = i;
    return 0;
}

static int parse_msg(const char *s, size_t len, size_t *pos, uint32_t *msg, const char **reason)
{
    uint64_t v;
    if (parse_number(s, len, pos, POP3_MSGNUM_MAX, &v) < 0) {
        *reason = "Invalid message number";
        return -1;
    }
    if (v == 0 || v > POP3_MSGNUM_MAX) {
        *reason = "No such message";
        return -1;
    }
    *msg = (uint32_t)v;
    return 0;
}

int pop3_parse_msgnum(const char *args, size_t len, bool optional, bool *given, uint32_t *msg,
                      const char **reason)
{
    size_t i = skip_spaces(args, len, 0);
    *given = false;
    if (i == len) {
        if (optional)
            return 0;
        *reason = "Message number required";
        return -1;
    }
    if (parse_msg(args, len, &i, msg, reason) < 0)
        return -1;
    if (skip_spaces(args, len, i) != len) {
        *reason = "Too many arguments";
        return -1;
    }
    *given = true;
    return 0;
}

int pop3_parse_top(const char *args, size_t len, uint32_t *msg, uint32_t *lines,
                   const char **reason)
{
    size_t i = skip_spaces(args, len, 0);
    if (i == len) {
        *reason = "Message number and line count required";
        return -1;
    }
    if (parse_msg(args, len, &i, msg, reason) < 0)
        return -1;
    i = skip_spaces(args, len, i);
    uint64_t n;
    if (i == len) {
        *reason = "Line count required";
        return -1;
    }
    if (parse_number(args, len, &i, UINT32_MAX - 1, &n) < 0) {
        *reason = "Invalid line count";
        return -1;
    }
    if (skip_spaces(args, len, i) != len) {
        *reason = "Too many arguments";
        return -1;
    }
    *lines = (uint32_t)n;
    return 0;
}

/* --- credentials ------------------------------------------------------------ */

int pop3_parse_user(const char *args, size_t len, char *out, size_t outlen,
                    const char **reason)
{
    size_t start = skip_spaces(args, len, 0);
    size_t end = len;
    while (end > start && args[end - 1] == ' ')
        end--;
    if (end == start) {
        *reason = "User name required";
        return -1;
    }
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)args[i];
        if (c <= ' ' || c == 0x7f) {
            *reason = "Invalid user name";
            return -1;
        }
    }
    if (end - start > POP3_USER_MAX || end - start >= outlen) {
        *reason = "User name too long";
        return -1;
    }
    memcpy(out, args + start, end - start);
    out[end - start] = '\0';
    return 0;
}

int pop3_parse_pass(const char *args, size_t len, char *out, size_t outlen,
                    const char **reason)
{
    if (len == 0) {
        *reason = "Password required";
        return -1;
    }
    if (len > POP3_PASS_MAX || len >= outlen) {
        *reason = "Password too long";
        return -1;
    }
    if (memchr(args, '\0', len)) {
        *reason = "Invalid password";
        return -1;
    }
    memcpy(out, args, len);
    out[len] = '\0';
    return 0;
}

int pop3_parse_auth(const char *args, size_t len, const char **mech, size_t *mech_len,
                    const char **ir, size_t *ir_len, const char **reason)
{
    size_t i = skip_spaces(args, len, 0);
    size_t m = i;
    while (i < len && args[i] != ' ')
        i++;
    if (i == m) {
        *reason = "Mechanism required";
        return -1;
    }
    *mech = args + m;
    *mech_len = i - m;
    i = skip_spaces(args, len, i);
    size_t end = len;
    while (end > i && args[end - 1] == ' ')
        end--;
    *ir = end > i ? args + i : NULL;
    *ir_len = end - i;
    if (*ir && memchr(*ir, ' ', *ir_len)) {
        *reason = "Too many arguments";
        return -1;
    }
    return 0;
}
