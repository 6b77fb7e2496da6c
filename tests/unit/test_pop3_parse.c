/* Unit tests for the POP3 command parsers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pop3_parse.h"
#include "test.h"

static enum pop3_verb verb_of(const char *line)
{
    struct pop3_command cmd;
    pop3_parse_command(line, strlen(line), &cmd);
    return cmd.verb;
}

TEST(verbs_case_insensitive)
{
    CHECK_INT(verb_of("USER a@b.c"), POP3_USER);
    CHECK_INT(verb_of("user a@b.c"), POP3_USER);
    CHECK_INT(verb_of("rEtR 1"), POP3_RETR);
    CHECK_INT(verb_of("top 1 2"), POP3_TOP);
    CHECK_INT(verb_of("CAPA"), POP3_CAPA);
    CHECK_INT(verb_of("stls"), POP3_STLS);
    CHECK_INT(verb_of("QUIT"), POP3_QUIT);
    CHECK_INT(verb_of("uidl"), POP3_UIDL);
    CHECK_INT(verb_of("APOP x y"), POP3_APOP);
    CHECK_STR(pop3_verb_name(POP3_TOP), "TOP");
    CHECK_STR(pop3_verb_name(POP3_UNKNOWN), "?");
}

TEST(unknown_and_malformed_verbs)
{
    struct pop3_command cmd;
    CHECK_INT(pop3_parse_command("RETRX 1", 7, &cmd), -1);
    CHECK_INT(cmd.verb, POP3_UNKNOWN);
    CHECK_INT(pop3_parse_command("RET 1", 5, &cmd), -1);
    CHECK_INT(pop3_parse_command("", 0, &cmd), -1);
    CHECK_INT(pop3_parse_command(" RETR 1", 7, &cmd), -1);
    CHECK_INT(pop3_parse_command("HELO x", 6, &cmd), -1);
    /* A NUL inside the keyword is not a keyword. */
    CHECK_INT(pop3_parse_command("RE\0R 1", 6, &cmd), -1);
    CHECK_INT(pop3_parse_command("RETR\t1", 6, &cmd), -1);
}

TEST(arguments_point_into_line)
{
    struct pop3_command cmd;
    const char *line = "PASS  two  spaces ";
    CHECK_INT(pop3_parse_command(line, strlen(line), &cmd), 0);
    CHECK_INT(cmd.verb, POP3_PASS);
    CHECK(cmd.args == line + 5);
    CHECK_INT(cmd.args_len, strlen(line) - 5);
    CHECK_INT(pop3_parse_command("STAT", 4, &cmd), 0);
    CHECK_INT(cmd.args_len, 0);
    /* Not NUL-terminated: only len bytes are looked at. */
    char buf[8];
    memcpy(buf, "NOOPXXXX", 8);
    CHECK_INT(pop3_parse_command(buf, 4, &cmd), 0);
    CHECK_INT(cmd.verb, POP3_NOOP);
    CHECK_INT(cmd.args_len, 0);
}

static int msgnum(const char *args, bool optional, bool *given, uint32_t *n)
{
    const char *reason = NULL;
    int rc = pop3_parse_msgnum(args, strlen(args), optional, given, n, &reason);
    if (rc < 0)
        CHECK(reason && reason[0]);
    return rc;
}

TEST(message_numbers)
{
    bool given;
    uint32_t n;
    CHECK_INT(msgnum("1", false, &given, &n), 0);
    CHECK(given);
    CHECK_INT(n, 1);
    CHECK_INT(msgnum("  42  ", false, &given, &n), 0);
    CHECK_INT(n, 42);
    CHECK_INT(msgnum("2000000000", false, &given, &n), 0);
    CHECK_INT(n, 2000000000u);
    CHECK_INT(msgnum("", true, &given, &n), 0);
    CHECK(!given);
    CHECK_INT(msgnum("   ", true, &given, &n), 0);
    CHECK(!given);
    CHECK_INT(msgnum("", false, &given, &n), -1);
    CHECK_INT(msgnum("0", false, &given, &n), -1);
    CHECK_INT(msgnum("-1", false, &given, &n), -1);
    CHECK_INT(msgnum("+1", false, &given, &n), -1);
    CHECK_INT(msgnum("1x", false, &given, &n), -1);
    CHECK_INT(msgnum("1 2", false, &given, &n), -1);
    CHECK_INT(msgnum("2000000001", false, &given, &n), -1);
    CHECK_INT(msgnum("99999999999999999999999999", false, &given, &n), -1);
    CHECK_INT(msgnum("4294967297", false, &given, &n), -1);  /* would wrap to 1 */
}

TEST(top_arguments)
{
    uint32_t msg, lines;
    const char *reason;
    CHECK_INT(pop3_parse_top("3 10", 4, &msg, &lines, &reason), 0);
    CHECK_INT(msg, 3);
    CHECK_INT(lines, 10);
    CHECK_INT(pop3_parse_top("1 0", 3, &msg, &lines, &reason), 0);
    CHECK_INT(lines, 0);
    const char *huge = "1 123456789012345678901234567890";
    CHECK_INT(pop3_parse_top(huge, strlen(huge), &msg, &lines, &reason), 0);
    CHECK_INT(lines, UINT32_MAX);
    CHECK_INT(pop3_parse_top("1", 1, &msg, &lines, &reason), -1);
    CHECK_STR(reason, "Line count required");
    CHECK_INT(pop3_parse_top("", 0, &msg, &lines, &reason), -1);
    CHECK_INT(pop3_parse_top("0 1", 3, &msg, &lines, &reason), -1);
    CHECK_INT(pop3_parse_top("1 -1", 4, &msg, &lines, &reason), -1);
    CHECK_INT(pop3_parse_top("1 2 3", 5, &msg, &lines, &reason), -1);
    CHECK_STR(reason, "Too many arguments");
}

TEST(user_argument)
{
    char out[POP3_USER_MAX + 1];
    const char *reason;
    CHECK_INT(pop3_parse_user("Alice@Example.Test", 18, out, sizeof out, &reason), 0);
    CHECK_STR(out, "Alice@Example.Test");
    CHECK_INT(pop3_parse_user(" a@b.c ", 7, out, sizeof out, &reason), 0);
    CHECK_STR(out, "a@b.c");
    CHECK_INT(pop3_parse_user("", 0, out, sizeof out, &reason), -1);
    CHECK_INT(pop3_parse_user("a b", 3, out, sizeof out, &reason), -1);
    CHECK_INT(pop3_parse_user("a\0b", 3, out, sizeof out, &reason), -1);
    CHECK_INT(pop3_parse_user("a\x01", 2, out, sizeof out, &reason), -1);
    char longname[POP3_USER_MAX + 2];
    memset(longname, 'a', sizeof longname);
    CHECK_INT(pop3_parse_user(longname, POP3_USER_MAX, out, sizeof out, &reason), 0);
    CHECK_INT(strlen(out), POP3_USER_MAX);
    CHECK_INT(pop3_parse_user(longname, POP3_USER_MAX + 1, out, sizeof out, &reason), -1);
    CHECK_STR(reason, "User name too long");
    /* A small output buffer is respected too. */
    char small[4];
    CHECK_INT(pop3_parse_user("abcd", 4, small, sizeof small, &reason), -1);
}

TEST(pass_argument)
{
    char out[POP3_PASS_MAX + 1];
    const char *reason;
    CHECK_INT(pop3_parse_pass(" pass with spaces ", 18, out, sizeof out, &reason), 0);
    CHECK_STR(out, " pass with spaces ");
    CHECK_INT(pop3_parse_pass("", 0, out, sizeof out, &reason), -1);
    CHECK_INT(pop3_parse_pass("a\0b", 3, out, sizeof out, &reason), -1);
    char *big = malloc(POP3_PASS_MAX + 1);
    memset(big, 'p', POP3_PASS_MAX + 1);
    CHECK_INT(pop3_parse_pass(big, POP3_PASS_MAX, out, sizeof out, &reason), 0);
    CHECK_INT(pop3_parse_pass(big, POP3_PASS_MAX + 1, out, sizeof out, &reason), -1);
    free(big);
}

TEST(auth_arguments)
{
    const char *mech, *ir, *reason;
    size_t mlen, irlen;
    CHECK_INT(pop3_parse_auth("PLAIN", 5, &mech, &mlen, &ir, &irlen, &reason), 0);
    CHECK_INT(mlen, 5);
    CHECK(ir == NULL);
    const char *a = "plain AGFAYi5jAHB3";
    CHECK_INT(pop3_parse_auth(a, strlen(a), &mech, &mlen, &ir, &irlen, &reason), 0);
    CHECK(mech == a);
    CHECK_INT(mlen, 5);
    CHECK(ir == a + 6);
    CHECK_INT(irlen, 12);
    CHECK_INT(pop3_parse_auth("PLAIN =", 7, &mech, &mlen, &ir, &irlen, &reason), 0);
    CHECK_INT(irlen, 1);
    CHECK_INT(pop3_parse_auth("", 0, &mech, &mlen, &ir, &irlen, &reason), -1);
    CHECK_INT(pop3_parse_auth("PLAIN a b", 9, &mech, &mlen, &ir, &irlen, &reason), -1);
}

int main(void)
{
    RUN(verbs_case_insensitive);
    RUN(unknown_and_malformed_verbs);
    RUN(arguments_point_into_line);
    RUN(message_numbers);
    RUN(top_arguments);
    RUN(user_argument);
    RUN(pass_argument);
    RUN(auth_arguments);
    return test_summary();
}
