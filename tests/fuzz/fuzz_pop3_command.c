/* libFuzzer target: every POP3 parser on every line of the input. Beyond
 * not crashing: arguments stay inside the line, accepted numbers are in
 * range, accepted credentials are NUL-free and within their limits, and a
 * failure always carries a reason. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3_parse.h"

static void check_reason(const char *reason)
{
    if (!reason || !reason[0])
        abort();
}

static void one_args(const char *args, size_t len)
{
    const char *reason = NULL;
    bool given;
    uint32_t msg, lines;
    for (int optional = 0; optional < 2; optional++) {
        if (pop3_parse_msgnum(args, len, optional, &given, &msg, &reason) == 0) {
            if (given && (msg == 0 || msg > POP3_MSGNUM_MAX))
                abort();
        } else {
            check_reason(reason);
        }
    }
    if (pop3_parse_top(args, len, &msg, &lines, &reason) == 0) {
        if (msg == 0 || msg > POP3_MSGNUM_MAX)
            abort();
    } else {
        check_reason(reason);
    }
    char user[POP3_USER_MAX + 1], pass[POP3_PASS_MAX + 1];
    if (pop3_parse_user(args, len, user, sizeof user, &reason) == 0) {
        size_t n = strlen(user);
        if (n == 0 || n > POP3_USER_MAX || strchr(user, ' '))
            abort();
    } else {
        check_reason(reason);
    }
    if (pop3_parse_pass(args, len, pass, sizeof pass, &reason) == 0) {
        if (strlen(pass) != len)
            abort();
    } else {
        check_reason(reason);
    }
    const char *mech, *ir;
    size_t mech_len, ir_len;
    if (pop3_parse_auth(args, len, &mech, &mech_len, &ir, &ir_len, &reason) == 0) {
        if (mech < args || mech + mech_len > args + len || mech_len == 0)
            abort();
        if (ir && (ir < args || ir + ir_len > args + len))
            abort();
        if (ir && sasl_plain_parse(ir, ir_len, user, sizeof user, pass, sizeof pass,
                                        &reason) == 0) {
            if (!user[0] || !pass[0])
                abort();
        }
    } else {
        check_reason(reason);
    }
    if (sasl_plain_parse(args, len, user, sizeof user, pass, sizeof pass, &reason) < 0)
        check_reason(reason);
    unsigned char out[64];
    long n = sasl_base64_decode(args, len, out, sizeof out);
    if (n > (long)sizeof out)
        abort();
}

static void one_line(const char *line, size_t len)
{
    struct pop3_command cmd;
    pop3_parse_command(line, len, &cmd);
    if (cmd.args < line || cmd.args + cmd.args_len > line + len)
        abort();
    one_args(cmd.args, cmd.args_len);
    one_args(line, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Each line is copied to its own allocation so that ASan sees any
     * read past its end. */
    size_t start = 0;
    while (start <= size) {
        const uint8_t *nl = start < size ? memchr(data + start, '\n', size - start) : NULL;
        size_t end = nl ? (size_t)(nl - data) : size;
        size_t len = end - start;
        if (len > 0 && data[end - 1] == '\r')
            len--;
        char *line = malloc(len ? len : 1);
        if (!line)
            return 0;
        memcpy(line, data + start, len);
        one_line(line, len);
        free(line);
        start = end + 1;
    }
    return 0;
}
