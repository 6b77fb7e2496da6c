/* Unit tests for core/smtp_parse.c */
#include <stdint.h>
#include <stdlib.h>

#include "smtp_parse.h"
#include "test.h"

/* --- MAIL / RCPT path and parameter tables ---------------------------------- */

struct path_case {
    const char *args;
    int code;              /* 0 = accepted */
    const char *enhanced;  /* expected on failure */
    const char *mailbox;   /* expected on success (NULL: don't check) */
};

static const struct path_case mail_cases[] = {
    { "FROM:<a@b.c>", 0, NULL, "a@b.c" },
    { "from:<a@b.c>", 0, NULL, "a@b.c" },
    { "From:<A.B@Example.ORG>", 0, NULL, "A.B@Example.ORG" },
    { "FROM: <a@b.c>", 0, NULL, "a@b.c" },
    { "FROM:  <a@b.c>", 501, "5.1.7", NULL },
    { "FROM:a@b.c", 501, "5.1.7", NULL },
    { "FROM:<a@b.c", 501, "5.1.7", NULL },
    { "FROM:<a@b.c>x", 501, "5.1.7", NULL },
    { "FROM <a@b.c>", 501, "5.5.4", NULL },
    { "TO:<a@b.c>", 501, "5.5.4", NULL },
    { "", 501, "5.5.4", NULL },
    { "FROM:<>", 0, NULL, "" },
    { "FROM:<> SIZE=10", 0, NULL, "" },
    { "FROM:<a>", 501, "5.1.7", NULL },
    { "FROM:<@a>", 501, "5.1.7", NULL },
    { "FROM:<a:@a>", 501, "5.1.7", NULL },
    { "FROM:<postmaster>", 501, "5.1.7", NULL },
    { "FROM:<@a,@b:u@d>", 0, NULL, "u@d" },
    { "FROM:<@a.b:u@d.e>", 0, NULL, "u@d.e" },
    { "FROM:<@a,b:u@d>", 501, "5.1.7", NULL },
    { "FROM:<@a,@b u@d>", 501, "5.1.7", NULL },
    { "FROM:<@:u@d>", 501, "5.1.7", NULL },
    { "FROM:<a@b.c.>", 501, "5.1.7", NULL },
    { "FROM:<a@.b.c>", 501, "5.1.7", NULL },
    { "FROM:<a@b..c>", 501, "5.1.7", NULL },
    { "FROM:<a@-b.c>", 501, "5.1.7", NULL },
    { "FROM:<a@b-.c>", 501, "5.1.7", NULL },
    { "FROM:<a@b-x.c>", 0, NULL, "a@b-x.c" },
    { "FROM:<a@b_x.c>", 501, "5.1.7", NULL },
    { "FROM:<a@>", 501, "5.1.7", NULL },
    { "FROM:<@b.c>", 501, "5.1.7", NULL },
    { "FROM:<a@@b.c>", 501, "5.1.7", NULL },
    { "FROM:<.a@b.c>", 501, "5.1.7", NULL },
    { "FROM:<a.@b.c>", 501, "5.1.7", NULL },
    { "FROM:<a..b@b.c>", 501, "5.1.7", NULL },
    { "FROM:<a b@b.c>", 501, "5.1.7", NULL },
    { "FROM:<a(b)@b.c>", 501, "5.1.7", NULL },
    { "FROM:<!#$%&'*+-/=?^_`{|}~@b.c>", 0, NULL, "!#$%&'*+-/=?^_`{|}~@b.c" },
    /* Quoted local parts: unquoted when a dot-string, else minimal escaping. */
    { "FROM:<\"a.b\"@c.d>", 0, NULL, "a.b@c.d" },
    { "FROM:<\"ab\"@c.d>", 0, NULL, "ab@c.d" },
    { "FROM:<\"a b\"@c.d>", 0, NULL, "\"a b\"@c.d" },
    { "FROM:<\"a\\ b\"@c.d>", 0, NULL, "\"a b\"@c.d" },
    { "FROM:<\"a\\b\"@c.d>", 0, NULL, "ab@c.d" },
    { "FROM:<\"a\\\"b\"@c.d>", 0, NULL, "\"a\\\"b\"@c.d" },
    { "FROM:<\"a\\\\b\"@c.d>", 0, NULL, "\"a\\\\b\"@c.d" },
    { "FROM:<\"a..b\"@c.d>", 0, NULL, "\"a..b\"@c.d" },
    { "FROM:<\".a\"@c.d>", 0, NULL, "\".a\"@c.d" },
    { "FROM:<\"\"@c.d>", 0, NULL, "\"\"@c.d" },
    { "FROM:<\"a>b\"@c.d>", 0, NULL, "\"a>b\"@c.d" },
    { "FROM:<\"a@b\"@c.d>", 0, NULL, "\"a@b\"@c.d" },
    { "FROM:<\"ab@c.d>", 501, "5.1.7", NULL },
    { "FROM:<\"a\"b@c.d>", 501, "5.1.7", NULL },
    { "FROM:<\"a\tb\"@c.d>", 501, "5.1.7", NULL },
    { "FROM:<\"a\\\tb\"@c.d>", 501, "5.1.7", NULL },
    /* Address literals. */
    { "FROM:<a@[192.0.2.1]>", 0, NULL, "a@[192.0.2.1]" },
    { "FROM:<a@[IPv6:2001:db8::1]>", 0, NULL, "a@[IPv6:2001:db8::1]" },
    { "FROM:<a@[ipv6:::1]>", 0, NULL, "a@[ipv6:::1]" },
    { "FROM:<a@[192.0.2.256]>", 501, "5.1.7", NULL },
    { "FROM:<a@[192.0.2]>", 501, "5.1.7", NULL },
    { "FROM:<a@[192.0.2.01]>", 501, "5.1.7", NULL },
    { "FROM:<a@[IPv6:2001:db8::g]>", 501, "5.1.7", NULL },
    { "FROM:<a@[IPv6:192.0.2.1]>", 501, "5.1.7", NULL },
    { "FROM:<a@[2001:db8::1]>", 501, "5.1.7", NULL },
    { "FROM:<a@[]>", 501, "5.1.7", NULL },
    { "FROM:<a@[192.0.2.1>", 501, "5.1.7", NULL },
    { "FROM:<a@[192.0.2.1]x>", 501, "5.1.7", NULL },
    /* General-address-literals: no tag besides IPv6 is registered. */
    { "FROM:<a@[x-tag:stuff]>", 501, "5.1.7", NULL },
    { "FROM:<a@[x-tag:]>", 501, "5.1.7", NULL },
    { "FROM:<a@[a[b:c]>", 501, "5.1.7", NULL },
    /* Parameters. */
    { "FROM:<a@b.c> SIZE=12345", 0, NULL, "a@b.c" },
    { "FROM:<a@b.c>   SIZE=1   BODY=8BITMIME  ", 0, NULL, "a@b.c" },
    { "FROM:<a@b.c>SIZE=1", 501, "5.1.7", NULL },
    { "FROM:<a@b.c> SIZE", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=x", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=-1", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=18446744073709551615", 0, NULL, NULL },
    { "FROM:<a@b.c> SIZE=18446744073709551616", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=000000000000000000001", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=1 SIZE=2", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> size=1 Size=2", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> BODY=7bit", 0, NULL, NULL },
    { "FROM:<a@b.c> BODY=BINARYMIME", 0, NULL, NULL },
    { "FROM:<a@b.c> BODY=9BIT", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SMTPUTF8", 0, NULL, NULL },
    { "FROM:<a@b.c> SMTPUTF8=yes", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SMTPUTF8 SMTPUTF8", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> RET=FULL", 0, NULL, NULL },
    { "FROM:<a@b.c> RET=hdrs", 0, NULL, NULL },
    { "FROM:<a@b.c> RET=ALL", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> ENVID=QQ314159+2B2", 0, NULL, NULL },
    { "FROM:<a@b.c> ENVID=a+2", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> ENVID=a+2b", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> ENVID=a+00", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> AUTH=<>", 0, NULL, NULL },
    { "FROM:<a@b.c> AUTH=e+3Dmc2@example.com", 0, NULL, NULL },
    { "FROM:<a@b.c> AUTH=e=mc2", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> FOO=bar", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> NOTIFY=NEVER", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> -SIZE=1", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=1\tBODY=7BIT", 555, "5.5.4", NULL },
    { "FROM:<a@b.c> SIZE=\x80", 555, "5.5.4", NULL },
    /* Non-ASCII: needs SMTPUTF8 among the parameters; must be valid UTF-8. */
    { "FROM:<j\xc3\xb6rg@b.c> SMTPUTF8", 0, NULL, "j\xc3\xb6rg@b.c" },
    { "FROM:<j\xc3\xb6rg@b.c>", 553, "5.6.7", NULL },
    { "FROM:<j\xc3\xb6rg@b.c> BODY=8BITMIME", 553, "5.6.7", NULL },
    { "FROM:<a@b\xc3\xbc.c> SMTPUTF8", 0, NULL, "a@b\xc3\xbc.c" },
    { "FROM:<a@b\xc3\xbc.c>", 553, "5.6.7", NULL },
    { "FROM:<\"\xe2\x82\xac x\"@b.c> SMTPUTF8", 0, NULL, "\"\xe2\x82\xac x\"@b.c" },
    { "FROM:<\"\xe2\x82\xac\"@b.c> SMTPUTF8", 0, NULL, "\xe2\x82\xac@b.c" },
    { "FROM:<\xf0\x9f\x98\x80@b.c> SMTPUTF8", 0, NULL, "\xf0\x9f\x98\x80@b.c" },
    { "FROM:<j\xf6rg@b.c> SMTPUTF8", 501, "5.1.7", NULL },          /* Latin-1 */
    { "FROM:<j\xf6rg@b.c>", 553, "5.6.7", NULL },
    { "FROM:<\xc0\xaf@b.c> SMTPUTF8", 501, "5.1.7", NULL },          /* overlong '/' */
    { "FROM:<\xe0\x80\xaf@b.c> SMTPUTF8", 501, "5.1.7", NULL },      /* overlong 3-byte */
    { "FROM:<\xf0\x80\x80\xaf@b.c> SMTPUTF8", 501, "5.1.7", NULL },  /* overlong 4-byte */
    { "FROM:<\xed\xa0\x80@b.c> SMTPUTF8", 501, "5.1.7", NULL },      /* surrogate */
    { "FROM:<\xf4\x90\x80\x80@b.c> SMTPUTF8", 501, "5.1.7", NULL },  /* > U+10FFFF */
    { "FROM:<\xc3@b.c> SMTPUTF8", 501, "5.1.7", NULL },              /* truncated */
    { "FROM:<\x80@b.c> SMTPUTF8", 501, "5.1.7", NULL },              /* lone continuation */
    { "FROM:<a@b.c\xc3> SMTPUTF8", 501, "5.1.7", NULL },
};

static const struct path_case rcpt_cases[] = {
    { "TO:<a@b.c>", 0, NULL, "a@b.c" },
    { "to: <a@b.c>", 0, NULL, "a@b.c" },
    { "TO:<>", 501, "5.1.3", NULL },
    { "TO:<a>", 501, "5.1.3", NULL },
    { "TO:<@a>", 501, "5.1.3", NULL },
    { "TO:<a:@a>", 501, "5.1.3", NULL },
    { "TO:<@a,@b:u@d>", 0, NULL, "u@d" },
    { "TO:a@b.c", 501, "5.1.3", NULL },
    { "FROM:<a@b.c>", 501, "5.5.4", NULL },
    { "TO:<postmaster>", 0, NULL, "" },
    { "TO:<PostMaster>", 0, NULL, "" },
    { "TO:<postmaster> NOTIFY=NEVER", 0, NULL, "" },
    { "TO:<postmaster@b.c>", 0, NULL, "postmaster@b.c" },
    { "TO:<postmasterx>", 501, "5.1.3", NULL },
    { "TO:<\"postmaster\">", 501, "5.1.3", NULL },
    { "TO:<a@b.c> NOTIFY=NEVER", 0, NULL, NULL },
    { "TO:<a@b.c> NOTIFY=SUCCESS,FAILURE,DELAY", 0, NULL, NULL },
    { "TO:<a@b.c> notify=delay", 0, NULL, NULL },
    { "TO:<a@b.c> NOTIFY=NEVER,SUCCESS", 555, "5.5.4", NULL },
    { "TO:<a@b.c> NOTIFY=SUCCESS,", 555, "5.5.4", NULL },
    { "TO:<a@b.c> NOTIFY=,SUCCESS", 555, "5.5.4", NULL },
    { "TO:<a@b.c> NOTIFY=SOMETIMES", 555, "5.5.4", NULL },
    { "TO:<a@b.c> NOTIFY", 555, "5.5.4", NULL },
    { "TO:<a@b.c> NOTIFY=NEVER NOTIFY=NEVER", 555, "5.5.4", NULL },
    { "TO:<a@b.c> ORCPT=rfc822;a+40b.c", 0, NULL, NULL },
    { "TO:<a@b.c> ORCPT=rfc822;", 555, "5.5.4", NULL },
    { "TO:<a@b.c> ORCPT=;a@b.c", 555, "5.5.4", NULL },
    { "TO:<a@b.c> ORCPT=rfc822", 555, "5.5.4", NULL },
    { "TO:<a@b.c> ORCPT=rfc822;a+4", 555, "5.5.4", NULL },
    { "TO:<a@b.c> ORCPT=rfc(822;a", 555, "5.5.4", NULL },
    { "TO:<a@b.c> SIZE=10", 555, "5.5.4", NULL },
    { "TO:<a@b.c> NOTIFY=NEVER ORCPT=rfc822;a@b.c", 0, NULL, NULL },
};

static void check_error(const char *args, int rc, const struct smtp_error *e, int code,
                        const char *enhanced)
{
    if (rc != -1 || e->code != code || strcmp(e->enhanced, enhanced) != 0) {
        fprintf(stderr, "  args \"%s\": rc %d, %d %s, expected %d %s\n", args, rc,
                rc ? e->code : 0, rc ? e->enhanced : "", code, enhanced);
        test_current_failed = 1;
    }
    CHECK(rc != -1 || (e->text && e->text[0]));
}

static void check_path_case(const struct path_case *c, int rc, const struct smtp_path *p,
                            const struct smtp_error *e)
{
    if (c->code) {
        check_error(c->args, rc, e, c->code, c->enhanced);
        return;
    }
    if (rc != 0) {
        fprintf(stderr, "  args \"%s\": refused with %d %s %s\n", c->args, e->code,
                e->enhanced, e->text);
        test_current_failed = 1;
        return;
    }
    if (c->mailbox && strcmp(p->mailbox, c->mailbox) != 0) {
        fprintf(stderr, "  args \"%s\": mailbox \"%s\", expected \"%s\"\n", c->args,
                p->mailbox, c->mailbox);
        test_current_failed = 1;
    }
    /* local_len points at the '@' of the canonical mailbox. */
    if (p->mailbox[0])
        CHECK(p->mailbox[p->local_len] == '@' && !strchr(p->mailbox + p->local_len + 1, '@'));
}

TEST(mail_table)
{
    for (size_t i = 0; i < sizeof mail_cases / sizeof mail_cases[0]; i++) {
        const struct path_case *c = &mail_cases[i];
        struct smtp_mail_args m;
        struct smtp_error e = { 0, "", "" };
        int rc = smtp_parse_mail(c->args, strlen(c->args), &m, &e);
        check_path_case(c, rc, &m.from, &e);
    }
}

TEST(rcpt_table)
{
    for (size_t i = 0; i < sizeof rcpt_cases / sizeof rcpt_cases[0]; i++) {
        const struct path_case *c = &rcpt_cases[i];
        struct smtp_rcpt_args r;
        struct smtp_error e = { 0, "", "" };
        int rc = smtp_parse_rcpt(c->args, strlen(c->args), false, &r, &e);
        check_path_case(c, rc, &r.to, &e);
    }
}

TEST(mail_fields)
{
    struct smtp_mail_args m;
    struct smtp_error e;
    const char *a = "FROM:<\"a b\"@c.d> size=4096 body=8bitmime smtputf8 ret=HDRS "
                    "envid=QQ+2B1 auth=<>";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), 0);
    CHECK(!m.from.is_null && !m.from.is_postmaster && !m.from.has_utf8);
    CHECK_STR(m.from.mailbox, "\"a b\"@c.d");
    CHECK_INT(m.from.local_len, 5);
    CHECK(m.size_given);
    CHECK_INT(m.size, 4096);
    CHECK_INT(m.body, SMTP_BODY_8BITMIME);
    CHECK(m.smtputf8);
    CHECK_INT(m.ret, SMTP_RET_HDRS);
    CHECK_STR(m.envid, "QQ+2B1");
    CHECK_STR(m.auth, "<>");

    a = "FROM:<>";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), 0);
    CHECK(m.from.is_null);
    CHECK(!m.size_given && m.body == SMTP_BODY_NONE && !m.smtputf8 && m.ret == SMTP_RET_NONE);
    CHECK_STR(m.envid, "");
    CHECK_STR(m.auth, "");

    a = "FROM:<a@b.c> SIZE=18446744073709551615";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), 0);
    CHECK(m.size == UINT64_MAX);

    a = "FROM:<\xc3\xa9@b.c> SMTPUTF8";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), 0);
    CHECK(m.from.has_utf8);
    CHECK_INT(m.from.local_len, 2);
}

TEST(mail_error_texts)
{
    struct smtp_mail_args m;
    struct smtp_error e;
    const char *a = "FROM:<a@b.c> X=1";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), -1);
    CHECK_STR(e.text, "Unsupported parameter");
    a = "FROM:<\xc3\xa9@b.c>";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), -1);
    CHECK_STR(e.text, "Non-ASCII address requires SMTPUTF8");
    a = "FROM:<a@b.c> SIZE=1 SIZE=1";
    CHECK_INT(smtp_parse_mail(a, strlen(a), &m, &e), -1);
    CHECK_INT(e.code, 555);
    CHECK_STR(e.enhanced, "5.5.4");
}

TEST(rcpt_fields)
{
    struct smtp_rcpt_args r;
    struct smtp_error e;
    const char *a = "TO:<a@b.c> NOTIFY=success,delay ORCPT=rfc822;a+40b.c";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), false, &r, &e), 0);
    CHECK_INT(r.notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY);
    CHECK_STR(r.orcpt, "rfc822;a+40b.c");
    a = "TO:<a@b.c> NOTIFY=NEVER";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), false, &r, &e), 0);
    CHECK_INT(r.notify, SMTP_NOTIFY_NEVER);
    a = "TO:<a@b.c>";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), false, &r, &e), 0);
    CHECK_INT(r.notify, 0);
    CHECK_STR(r.orcpt, "");
    a = "TO:<postmaster>";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), false, &r, &e), 0);
    CHECK(r.to.is_postmaster);
    CHECK_STR(r.to.mailbox, "");
    a = "TO:<Postmaster@b.c>";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), false, &r, &e), 0);
    CHECK(!r.to.is_postmaster);
}

TEST(rcpt_utf8)
{
    struct smtp_rcpt_args r;
    struct smtp_error e;
    const char *a = "TO:<\xc3\xa9t\xc3\xa9@b.c>";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), true, &r, &e), 0);
    CHECK(r.to.has_utf8);
    CHECK_STR(r.to.mailbox, "\xc3\xa9t\xc3\xa9@b.c");
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), false, &r, &e), -1);
    CHECK_INT(e.code, 553);
    CHECK_STR(e.enhanced, "5.6.7");
    a = "TO:<\xc0\x80@b.c>";
    CHECK_INT(smtp_parse_rcpt(a, strlen(a), true, &r, &e), -1);
    CHECK_INT(e.code, 501);
    CHECK_STR(e.enhanced, "5.1.3");
}

TEST(nul_inside)
{
    struct smtp_mail_args m;
    struct smtp_rcpt_args r;
    struct smtp_error e;
    static const char a[] = "FROM:<a\0b@c.d>";
    CHECK_INT(smtp_parse_mail(a, sizeof a - 1, &m, &e), -1);
    CHECK_INT(e.code, 501);
    static const char b[] = "TO:<\"a\0b\"@c.d>";
    CHECK_INT(smtp_parse_rcpt(b, sizeof b - 1, true, &r, &e), -1);
    static const char c[] = "TO:<ab@c.d> NOTIFY=NEVER\0";
    CHECK_INT(smtp_parse_rcpt(c, sizeof c - 1, true, &r, &e), -1);
    CHECK_INT(e.code, 555);
    /* The length bounds the input: what follows is never read. */
    CHECK_INT(smtp_parse_rcpt("TO:<a@b.c>xyz", 10, false, &r, &e), 0);
    CHECK_STR(r.to.mailbox, "a@b.c");
}

/* Builds "FROM:<" local "@" domain ">" with the given part lengths. */
static int mail_with(size_t local, size_t domain_labels, size_t last_label,
                     struct smtp_mail_args *m, struct smtp_error *e, size_t *pathlen)
{
    char a[1024];
    size_t n = 0;
    n += (size_t)snprintf(a, sizeof a, "FROM:<");
    memset(a + n, 'l', local);
    n += local;
    a[n++] = '@';
    for (size_t i = 0; i < domain_labels; i++) {
        memset(a + n, 'd', 63);
        n += 63;
        a[n++] = '.';
    }
    memset(a + n, 'e', last_label);
    n += last_label;
    *pathlen = n - 6;
    a[n++] = '>';
    return smtp_parse_mail(a, n, m, e);
}

TEST(lengths)
{
    struct smtp_mail_args m;
    struct smtp_error e;
    size_t pl;
    CHECK_INT(mail_with(64, 0, 3, &m, &e, &pl), 0);
    CHECK_INT(m.from.local_len, 64);
    CHECK_INT(mail_with(65, 0, 3, &m, &e, &pl), -1);
    CHECK_INT(e.code, 501);
    CHECK_STR(e.enhanced, "5.1.7");
    /* 64 + 1 + 2*64 + 63 = 256 fits; 63 + 1 + 3*64 + 1 = 257 does not. */
    CHECK_INT(mail_with(64, 2, 63, &m, &e, &pl), 0);
    CHECK_INT(pl, 256);
    CHECK_INT(strlen(m.from.mailbox), 256);
    CHECK_INT(mail_with(62, 3, 1, &m, &e, &pl), 0);
    CHECK_INT(pl, 256);
    CHECK_INT(mail_with(63, 3, 1, &m, &e, &pl), -1);
    CHECK_INT(pl, 257);
    CHECK_INT(e.code, 501);
    /* A label over 63 octets is not a DNS label. */
    CHECK_INT(mail_with(1, 0, 64, &m, &e, &pl), -1);
    CHECK_INT(mail_with(1, 0, 63, &m, &e, &pl), 0);

    /* A source route counts toward the path length but is dropped. */
    char a[400];
    int n = snprintf(a, sizeof a, "FROM:<@%0*d:%0*d@b.c>", 63, 0, 64, 0);
    CHECK_INT(smtp_parse_mail(a, (size_t)n, &m, &e), 0);
    char big[400];
    n = snprintf(big, sizeof big, "FROM:<@%0*d.%0*d.%0*d:%0*d@b.c>", 63, 0, 63, 0, 63, 0,
                 60, 0);
    CHECK_INT(smtp_parse_mail(big, (size_t)n, &m, &e), -1);

    /* Quoted: the raw local part counts (quotes included). */
    n = snprintf(a, sizeof a, "FROM:<\"%0*d\"@b.c>", 62, 0);
    CHECK_INT(smtp_parse_mail(a, (size_t)n, &m, &e), 0);
    CHECK_INT(m.from.local_len, 62);
    n = snprintf(a, sizeof a, "FROM:<\"%0*d\"@b.c>", 63, 0);
    CHECK_INT(smtp_parse_mail(a, (size_t)n, &m, &e), -1);
}

/* --- commands --------------------------------------------------------------- */

TEST(command_split)
{
    struct smtp_command c;
    CHECK_INT(smtp_parse_command("MAIL FROM:<a@b.c> SIZE=1", 24, &c), 0);
    CHECK_INT(c.verb, SMTP_MAIL);
    CHECK_INT(c.args_len, 19);
    CHECK(memcmp(c.args, "FROM:<a@b.c> SIZE=1", 19) == 0);

    CHECK_INT(smtp_parse_command("rcpt TO:<x@y>   ", 16, &c), 0);
    CHECK_INT(c.verb, SMTP_RCPT);
    CHECK_INT(c.args_len, 8);

    CHECK_INT(smtp_parse_command("DATA", 4, &c), 0);
    CHECK_INT(c.verb, SMTP_DATA);
    CHECK_INT(c.args_len, 0);
    CHECK(c.args != NULL);

    CHECK_INT(smtp_parse_command("data ", 5, &c), 0);
    CHECK_INT(c.verb, SMTP_DATA);
    CHECK_INT(c.args_len, 0);

    CHECK_INT(smtp_parse_command("EHLO  x", 7, &c), 0);
    CHECK_INT(c.args_len, 2);
    CHECK(c.args[0] == ' ');

    static const struct { const char *line; enum smtp_verb verb; } verbs[] = {
        { "HELO x", SMTP_HELO }, { "ehlo x", SMTP_EHLO }, { "Mail x", SMTP_MAIL },
        { "RCPT", SMTP_RCPT }, { "DATA", SMTP_DATA }, { "BDAT 1", SMTP_BDAT },
        { "RSET", SMTP_RSET }, { "NOOP", SMTP_NOOP }, { "QUIT", SMTP_QUIT },
        { "VRFY a", SMTP_VRFY }, { "EXPN a", SMTP_EXPN }, { "HELP", SMTP_HELP },
        { "STARTTLS", SMTP_STARTTLS }, { "starttls", SMTP_STARTTLS },
        { "AUTH PLAIN", SMTP_AUTH },
    };
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
        CHECK_INT(smtp_parse_command(verbs[i].line, strlen(verbs[i].line), &c), 0);
        CHECK_INT(c.verb, verbs[i].verb);
    }

    static const char *const unknown[] = {
        "", " DATA", "DATAX", "MAILFROM:<a@b>", "QUITTER", "STARTTL", "HEL", "\tQUIT",
        "QUIT\t", "DAT\xc3\x81", "XYZZY",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        c.verb = SMTP_QUIT;
        CHECK_INT(smtp_parse_command(unknown[i], strlen(unknown[i]), &c), -1);
        CHECK_INT(c.verb, SMTP_UNKNOWN);
    }
    static const char nul[] = "QUIT\0";
    CHECK_INT(smtp_parse_command(nul, sizeof nul - 1, &c), -1);
    CHECK_INT(smtp_parse_command("QUITX", 4, &c), 0);
    CHECK_INT(c.verb, SMTP_QUIT);
}

TEST(bdat_args)
{
    static const struct { const char *a; int rc; uint64_t size; bool last; } cases[] = {
        { "0", 0, 0, false },
        { "100", 0, 100, false },
        { "100 LAST", 0, 100, true },
        { "100 last", 0, 100, true },
        { "100   Last  ", 0, 100, true },
        { "100 ", 0, 100, false },
        { "18446744073709551615 LAST", 0, UINT64_MAX, true },
        { "18446744073709551616", -1, 0, false },
        { "99999999999999999999", -1, 0, false },
        { "000000000000000000001", -1, 0, false },
        { "", -1, 0, false },
        { " 100", -1, 0, false },
        { "LAST", -1, 0, false },
        { "100LAST", -1, 0, false },
        { "100 LASTX", -1, 0, false },
        { "100 LAST X", -1, 0, false },
        { "100 FIRST", -1, 0, false },
        { "-1", -1, 0, false },
        { "+1", -1, 0, false },
        { "1x", -1, 0, false },
        { "1\t LAST", -1, 0, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t size = 12345;
        bool last = true;
        struct smtp_error e = { 0, "", "" };
        int rc = smtp_parse_bdat(cases[i].a, strlen(cases[i].a), &size, &last, &e);
        if (rc != cases[i].rc) {
            fprintf(stderr, "  BDAT \"%s\": rc %d\n", cases[i].a, rc);
            test_current_failed = 1;
        } else if (rc == 0) {
            CHECK(size == cases[i].size);
            CHECK(last == cases[i].last);
        } else {
            CHECK_INT(e.code, 501);
            CHECK_STR(e.enhanced, "5.5.4");
        }
    }
}

TEST(helo_args)
{
    static const char *const good[] = {
        "mail.example.com", "localhost", "a", "host_name.example", "mx1.example.com.",
        "[192.0.2.1]", "[IPv6:2001:db8::1]", "1.2.3.4", "xn--bcher-kva.example",
        "a-b.c",
    };
    static const char *const bad[] = {
        "", " ", "a b", "a..b", ".a", "a..", "[192.0.2.1", "[300.0.0.1]", "[IPv6:zz]",
        "[]", "a@b", "h\xc3\xa9.example", "host\tname", "exa,mple",
    };
    struct smtp_error e;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (smtp_parse_helo(good[i], strlen(good[i]), &e) != 0) {
            fprintf(stderr, "  HELO \"%s\" refused\n", good[i]);
            test_current_failed = 1;
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e.code = 0;
        if (smtp_parse_helo(bad[i], strlen(bad[i]), &e) != -1 || e.code != 501 ||
            strcmp(e.enhanced, "5.5.4") != 0) {
            fprintf(stderr, "  HELO \"%s\" accepted\n", bad[i]);
            test_current_failed = 1;
        }
    }
    CHECK_STR(e.text, "Syntax: EHLO hostname");
    char long_name[300];
    memset(long_name, 'a', sizeof long_name);
    for (size_t i = 50; i < sizeof long_name; i += 51)
        long_name[i] = '.';
    CHECK_INT(smtp_parse_helo(long_name, 255, &e), 0);
    CHECK_INT(smtp_parse_helo(long_name, 256, &e), -1);
    memset(long_name, 'a', 64);
    CHECK_INT(smtp_parse_helo(long_name, 63, &e), 0);
    CHECK_INT(smtp_parse_helo(long_name, 64, &e), -1);
    static const char nul[] = "host\0name";
    CHECK_INT(smtp_parse_helo(nul, sizeof nul - 1, &e), -1);
}

TEST(xtext)
{
    char out[16];
    CHECK_INT(smtp_xtext_decode("a+40b.c", 7, out, sizeof out), 0);
    CHECK_STR(out, "a@b.c");
    CHECK_INT(smtp_xtext_decode("+2B+3D", 6, out, sizeof out), 0);
    CHECK_STR(out, "+=");
    CHECK_INT(smtp_xtext_decode("", 0, out, sizeof out), 0);
    CHECK_STR(out, "");
    CHECK_INT(smtp_xtext_decode("+2b", 3, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("+2", 2, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("+", 1, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("a=b", 3, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("a b", 3, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("+00", 3, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("a\x7f", 2, out, sizeof out), -1);
    CHECK_INT(smtp_xtext_decode("abcd", 4, out, 5), 0);
    CHECK_INT(smtp_xtext_decode("abcde", 5, out, 5), -1);
    CHECK_INT(smtp_xtext_decode("a", 1, out, 0), -1);
    CHECK_INT(smtp_xtext_decode("+C3+A9", 6, out, sizeof out), 0);
    CHECK_STR(out, "\xc3\xa9");
}

/* --- DATA decoder ------------------------------------------------------------- */

struct decoded {
    struct buf out;
    struct smtp_data_decoder d;
    size_t consumed;
};

static void decode_chunks(const char *in, size_t len, const size_t *sizes, size_t nsizes,
                          struct decoded *r)
{
    struct buf b = BUF_INIT;
    r->out = b;
    r->consumed = 0;
    smtp_data_init(&r->d);
    size_t k = 0;
    while (r->consumed < len && !r->d.done) {
        size_t n = nsizes ? sizes[k++ % nsizes] : len;
        if (n > len - r->consumed)
            n = len - r->consumed;
        size_t used = smtp_data_feed(&r->d, in + r->consumed, n, &r->out);
        if (used > n || (used < n && !r->d.done)) {
            test_current_failed = 1;
            fprintf(stderr, "  feed consumed %zu of %zu\n", used, n);
            break;
        }
        r->consumed += used;
    }
}

static void decode(const char *in, size_t len, struct decoded *r)
{
    decode_chunks(in, len, NULL, 0, r);
}

static bool same(const struct decoded *a, const struct decoded *b)
{
    return a->out.len == b->out.len && (a->out.len == 0 || memcmp(a->out.data, b->out.data,
                                                                  a->out.len) == 0) &&
           a->consumed == b->consumed && a->d.done == b->d.done &&
           a->d.bad_line_ending == b->d.bad_line_ending && a->d.octets == b->d.octets &&
           a->d.has_8bit == b->d.has_8bit;
}

static void check_decode(const char *in, size_t len, const char *want, size_t want_len,
                         bool done, size_t consumed, bool bad)
{
    struct decoded r;
    decode(in, len, &r);
    CHECK(r.d.done == done);
    CHECK_INT(r.consumed, consumed);
    CHECK(r.d.bad_line_ending == bad);
    CHECK_INT(r.out.len, want_len);
    CHECK_INT(r.d.octets, want_len);
    CHECK(r.out.len == want_len && (want_len == 0 || memcmp(r.out.data, want, want_len) == 0));
    CHECK(!r.d.out_failed);
    /* The same result however the input is split. */
    for (size_t step = 1; step <= 4; step++) {
        struct decoded s;
        decode_chunks(in, len, &step, 1, &s);
        CHECK(same(&r, &s));
        buf_free(&s.out);
    }
    for (size_t cut = 0; cut <= len; cut++) {
        size_t sizes[2] = { cut, len };
        struct decoded s;
        if (cut == 0)
            continue;
        decode_chunks(in, len, sizes, 2, &s);
        CHECK(same(&r, &s));
        buf_free(&s.out);
    }
    buf_free(&r.out);
}

#define S(lit) lit, sizeof lit - 1

TEST(data_basic)
{
    check_decode(S("Subject: x\r\n\r\nhello\r\n.\r\n"), S("Subject: x\r\n\r\nhello\r\n"),
                 true, 24, false);
    /* The CRLF that ended DATA counts: an empty message. */
    check_decode(S(".\r\n"), S(""), true, 3, false);
    /* Bytes after the end belong to the next command. */
    check_decode(S("a\r\n.\r\nQUIT\r\n"), S("a\r\n"), true, 6, false);
    check_decode(S(".\r\nQUIT\r\n"), S(""), true, 3, false);
    /* Not yet ended. */
    check_decode(S("a\r\n.\r"), S("a\r\n"), false, 5, false);
    check_decode(S("a\r\n."), S("a\r\n"), false, 4, false);
    check_decode(S("a\r"), S("a"), false, 2, false);
    check_decode(S(""), S(""), false, 0, false);
    check_decode(S("a\r\nb"), S("a\r\nb"), false, 4, false);
}

TEST(data_dots)
{
    check_decode(S("..\r\n.\r\n"), S(".\r\n"), true, 7, false);
    check_decode(S("..x\r\n.\r\n"), S(".x\r\n"), true, 8, false);
    check_decode(S(".x\r\n.\r\n"), S("x\r\n"), true, 7, false);
    check_decode(S("a\r\n...\r\n.\r\n"), S("a\r\n..\r\n"), true, 11, false);
    check_decode(S("a.b\r\n.a\r\n.\r\n"), S("a.b\r\na\r\n"), true, 12, false);
    check_decode(S("a\r\n. \r\n.\r\n"), S("a\r\n \r\n"), true, 10, false);
    /* Dot only at line start is special. */
    check_decode(S("x.\r\n.\r\n"), S("x.\r\n"), true, 7, false);
}

TEST(data_smuggling)
{
    /* None of these may end the data, and all are marked. */
    static const char *const variants[] = {
        "a\n.\nb\r\n", "a\r.\rb\r\n", "a\n.\r\nb\r\n", "a\r\n.\nb\r\n", "a\r.\r\nb\r\n",
        "a\r\n.\rb\r\n", "a\n.\rb\r\n", "a\r\n.\r\rb\r\n",
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        struct decoded r;
        size_t len = strlen(variants[i]);
        decode(variants[i], len, &r);
        if (r.d.done || !r.d.bad_line_ending || r.consumed != len) {
            fprintf(stderr, "  variant %zu: done %d bad %d\n", i, r.d.done,
                    r.d.bad_line_ending);
            test_current_failed = 1;
        }
        for (size_t step = 1; step <= 3; step++) {
            struct decoded s;
            decode_chunks(variants[i], len, &step, 1, &s);
            CHECK(same(&r, &s));
            buf_free(&s.out);
        }
        buf_free(&r.out);
    }
    /* Bare endings pass through unchanged; dot-stuffing still applies after CRLF. */
    check_decode(S("a\nb\r\n.\r\n"), S("a\nb\r\n"), true, 8, true);
    check_decode(S("a\rb\r\n.\r\n"), S("a\rb\r\n"), true, 8, true);
    check_decode(S("a\n.\nb\r\n.\r\n"), S("a\n.\nb\r\n"), true, 10, true);
    check_decode(S("a\r\n.\nb\r\n.\r\n"), S("a\r\n\nb\r\n"), true, 11, true);
    check_decode(S("a\r\n.\rb\r\n.\r\n"), S("a\r\n\rb\r\n"), true, 11, true);
    check_decode(S("\n.\r\n.\r\n"), S("\n.\r\n"), true, 7, true);
    check_decode(S("\r\r\n.\r\n"), S("\r\r\n"), true, 6, true);
    check_decode(S("a\r\r\n.\r\n"), S("a\r\r\n"), true, 7, true);
    check_decode(S(".\n"), S("\n"), false, 2, true);
    check_decode(S(".\r.\r\n"), S("\r.\r\n"), false, 5, true);
}

TEST(data_8bit_and_discard)
{
    struct smtp_data_decoder d;
    smtp_data_init(&d);
    const char *m = "caf\xc3\xa9\r\n.\r\n";
    CHECK_INT(smtp_data_feed(&d, m, strlen(m), NULL), strlen(m));
    CHECK(d.done && d.has_8bit);
    CHECK_INT(d.octets, 7);
    smtp_data_init(&d);
    m = "cafe\r\n.\r\n";
    CHECK_INT(smtp_data_feed(&d, m, strlen(m), NULL), strlen(m));
    CHECK(d.done && !d.has_8bit);
    /* Once done, nothing more is consumed. */
    CHECK_INT(smtp_data_feed(&d, "abc", 3, NULL), 0);
    CHECK_INT(d.octets, 6);
    /* NULs are data. */
    struct buf b = BUF_INIT;
    smtp_data_init(&d);
    static const char z[] = "a\0b\r\n.\r\n";
    CHECK_INT(smtp_data_feed(&d, z, sizeof z - 1, &b), sizeof z - 1);
    CHECK_INT(b.len, 5);
    CHECK(memcmp(b.data, "a\0b\r\n", 5) == 0);
    buf_free(&b);
}

/* A random message full of special bytes, fed in random chunks, must give
 * the one-shot result. */
TEST(data_random_chunks)
{
    static const char alphabet[] = "\r\n.\r\n.a\x80";
    char msg[600];
    srand(42);
    for (int round = 0; round < 300; round++) {
        size_t len = (size_t)(rand() % (int)sizeof msg);
        for (size_t i = 0; i < len; i++)
            msg[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        struct decoded r;
        decode(msg, len, &r);
        size_t sizes[7];
        for (int k = 0; k < 7; k++)
            sizes[k] = (size_t)(1 + rand() % 9);
        struct decoded s;
        decode_chunks(msg, len, sizes, 7, &s);
        CHECK(same(&r, &s));
        CHECK(r.d.octets == r.out.len);
        buf_free(&r.out);
        buf_free(&s.out);
    }
}

/* Every split point of a realistic message, byte by byte and in two parts. */
TEST(data_every_split)
{
    const char *m = "From: a@b.c\r\nSubject: t\r\n\r\n..dotted\r\n"
                    "line\r\n.x\r\n\r\n.\r\nNEXT";
    check_decode(m, strlen(m),
                 S("From: a@b.c\r\nSubject: t\r\n\r\n.dotted\r\nline\r\nx\r\n\r\n"),
                 true, strlen(m) - 4, false);
}

int main(void)
{
    RUN(mail_table);
    RUN(rcpt_table);
    RUN(mail_fields);
    RUN(mail_error_texts);
    RUN(rcpt_fields);
    RUN(rcpt_utf8);
    RUN(nul_inside);
    RUN(lengths);
    RUN(command_split);
    RUN(bdat_args);
    RUN(helo_args);
    RUN(xtext);
    RUN(data_basic);
    RUN(data_dots);
    RUN(data_smuggling);
    RUN(data_8bit_and_discard);
    RUN(data_random_chunks);
    RUN(data_every_split);
    return test_summary();
}
