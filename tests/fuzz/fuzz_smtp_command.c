/* libFuzzer target: every SMTP command-line parser on every line of the
 * input. Beyond not crashing, an accepted path must be canonical: parsing
 * its mailbox again gives the same mailbox. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

static void check_path(const struct smtp_path *p)
{
    size_t n = strnlen(p->mailbox, sizeof p->mailbox);
    if (n > SMTP_PATH_MAX || p->local_len > n)
        abort();
    if (p->is_null || p->is_postmaster) {
        if (n != 0)
            abort();
        return;
    }
    if (p->mailbox[p->local_len] != '@' || p->local_len > SMTP_LOCAL_MAX)
        abort();
    char line[SMTP_PATH_MAX + 8];
    int len = snprintf(line, sizeof line, "TO:<%s>", p->mailbox);
    struct smtp_rcpt_args again;
    struct smtp_error err;
    if (len < 0 || (size_t)len >= sizeof line ||
        smtp_parse_rcpt(line, (size_t)len, true, &again, &err) < 0 ||
        strcmp(again.to.mailbox, p->mailbox) != 0 || again.to.local_len != p->local_len)
        abort();
}

static void check_error(const struct smtp_error *e)
{
    if (e->code < 400 || e->code > 599 || !e->enhanced || !e->text || !e->text[0])
        abort();
}

static void one_line(const char *line, size_t len)
{
    struct smtp_command cmd;
    struct smtp_error err;
    if (smtp_parse_command(line, len, &cmd) == 0 &&
        (cmd.args < line || cmd.args + cmd.args_len > line + len))
        abort();

    struct smtp_mail_args mail;
    if (smtp_parse_mail(line, len, &mail, &err) == 0) {
        check_path(&mail.from);
        if (mail.from.has_utf8 && !mail.smtputf8)
            abort();
    } else {
        check_error(&err);
    }
    for (int utf8 = 0; utf8 < 2; utf8++) {
        struct smtp_rcpt_args rcpt;
        if (smtp_parse_rcpt(line, len, utf8, &rcpt, &err) == 0) {
            check_path(&rcpt.to);
            if (rcpt.to.is_null || (rcpt.to.has_utf8 && !utf8))
                abort();
        } else {
            check_error(&err);
        }
    }
    uint64_t size;
    bool last;
    if (smtp_parse_bdat(line, len, &size, &last, &err) < 0)
        check_error(&err);
    if (smtp_parse_helo(line, len, &err) < 0)
        check_error(&err);
    char out[64];
    (void)smtp_xtext_decode(line, len, out, sizeof out);
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
        /* Also through the command splitter, as the server does. */
        struct smtp_command cmd;
        if (smtp_parse_command(line, len, &cmd) == 0)
            one_line(cmd.args, cmd.args_len);
        free(line);
        start = end + 1;
    }
    return 0;
}
