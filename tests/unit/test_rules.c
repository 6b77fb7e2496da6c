/* Unit tests for filters/rules.c: each header and body rule on messages
 * that should and should not trigger it, the single checks (Date,
 * Message-ID, subjects, links, the From domain), and the rules filter run
 * through the pipeline, whose X-Spam-Status tests= list shows every hit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters.h"
#include "pipeline.h"
#include "rules.h"
#include "server.h"
#include "test.h"

#define HDRS "From: Alice <alice@example.org>\r\n" \
             "To: bob@example.test\r\n" \
             "Subject: Lunch tomorrow\r\n" \
             "Date: Wed, 31 Jul 2002 16:41:57 +0200\r\n" \
             "Message-ID: <20020731.1@example.org>\r\n"

static bool local_domain(void *arg, const char *domain)
{
    (void)arg;
    return strcmp(domain, "local.example") == 0;
}

/* The names of the rules msg hits, ","-joined, into out. */
static const char *hits_env(const char *msg, const struct rules_env *env)
{
    static char out[512];
    struct mime_part *root = mime_parse(msg, strlen(msg));
    struct rule_hit hits[RULES_COUNT];
    int n = rules_check(msg, strlen(msg), root, env, hits, RULES_COUNT);
    out[0] = '\0';
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%s", i ? "," : "", hits[i].name);
    if (n < 0)
        snprintf(out, sizeof out, "(error)");
    mime_free(root);
    return out;
}

static const char *hits(const char *msg)
{
    struct rules_env env = { .domain_is_local = local_domain };
    return hits_env(msg, &env);
}

/* --- whole messages -------------------------------------------------------------- */

TEST(test_clean_message)
{
    CHECK_STR(hits(HDRS "\r\nSee you at noon.\r\n"), "");
    CHECK_STR(hits(HDRS "Content-Type: multipart/alternative; boundary=b\r\n\r\n"
                        "--b\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
                        "--b\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>\r\n--b--\r\n"), "");
}

TEST(test_missing_headers)
{
    CHECK_STR(hits("To: bob@example.test\r\n\r\nbody\r\n"),
              "MISSING_FROM,MISSING_DATE,MISSING_MID,MISSING_SUBJECT");
    CHECK_STR(hits("From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"),
              "MISSING_DATE,MISSING_MID");
}

TEST(test_invalid_date_and_msgid)
{
    CHECK_STR(hits("From: a@example.org\r\nSubject: hello there\r\nDate: yesterday\r\n"
                   "Message-ID: 1234@example.org\r\n\r\nbody\r\n"),
              "INVALID_DATE,INVALID_MSGID");
}

TEST(test_date_valid)
{
    static const char *const good[] = {
        "Wed, 31 Jul 2002 16:41:57 +0200",
        " Sat, 31 Dec 2005 23:59:60 -0500",
        "Sat, 31 Dec 2005 23:00:00 ",
        "31 Jul 2002 16:41 GMT",
        "Thu, 1 Jan 2015 00:00:00 +0000 (UTC)",
        "Wed,\r\n 31 Jul 2002 16:41:57\r\n +0200",
        "wed, 31 jul 2002 16:41:57 EST",
        "Mon,1 Jan 2024 08:00:00 -0800",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (!rules_date_valid(good[i], strlen(good[i]))) {
            fprintf(stderr, "rejected: %s\n", good[i]);
            CHECK(false);
        }
    static const char *const bad[] = {
        "Thurs, 31 Jul 2002 16:41:57 +0200",
        "Sat, 31 Dec 2005 24:00:00 -0500",
        "31 Jul 02 16:41:57 +0200",
        "yesterday",
        "",
        "Wed 31 Jul 2002 16:41:57 +0200",
        "Wed, 32 Jul 2002 16:41:57 +0200",
        "Wed, 31 July 2002 16:41:57 +0200",
        "Wed, 31 Jul 2002 16:41:57 +02",
        "Wed, 31 Jul 2002 16:41:57 +0200 extra",
        "2002-07-31T16:41:57Z",
        "Wed, 31 Jul 2002 16:4 +0200",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (rules_date_valid(bad[i], strlen(bad[i]))) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(false);
        }
}

TEST(test_msgid_valid)
{
    static const char *const good[] = {
        "<abc@example.com>", " <a.b$c=d@host.example>\r\n", "<a@b@c>",
        "<x@[192.0.2.1]>", "junk (a comment)",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        CHECK(rules_msgid_valid(good[i], strlen(good[i])));
    static const char *const bad[] = {
        "abc@example.com", "<abc>", "<a b@c>", "<@c>", "<a@>", "<>", "", "<a@b> <c@d>",
        "<a\\b@c>", "<a@b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (rules_msgid_valid(bad[i], strlen(bad[i]))) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            CHECK(false);
        }
}

/* --- subjects ------------------------------------------------------------------------ */

static bool caps(const char *s)
{
    return rules_subject_all_caps(s, strlen(s));
}

static bool obfu(const char *s)
{
    return rules_subject_obfuscated(s, strlen(s));
}

TEST(test_subject_all_caps)
{
    CHECK(caps("FREE MONEY NOW"));
    CHECK(caps("Re: Fwd: FREE MONEY NOW!!!"));
    CHECK(caps("BUY 2 GET 1 FREE"));
    CHECK(!caps("FREEMONEYNOW!"));           /* one word */
    CHECK(!caps("HI THERE"));                /* short */
    CHECK(!caps("Re: HI THERE"));            /* short once the prefix is gone */
    CHECK(!caps("Free money now"));
    CHECK(!caps("\xc3\x89T\xc3\x89 GRATUIT POUR TOUS"));   /* non-ASCII: not judged */
    CHECK(!caps("1234 5678 90"));            /* no letters */
    CHECK_STR(hits("From: a@example.org\r\nDate: Wed, 31 Jul 2002 16:41:57 +0200\r\n"
                   "Message-ID: <1@example.org>\r\nSubject: =?utf-8?q?WIN_A_FREE_CAR?=\r\n"
                   "\r\nbody\r\n"), "SUBJ_ALL_CAPS");
}

TEST(test_subject_obfuscated)
{
    CHECK(obfu("Buy V1agra now"));
    CHECK(obfu("cheap c1al1s"));
    CHECK(obfu("V.i.a.g.r.a for you"));
    CHECK(obfu("F-R-E-E money"));
    CHECK(obfu("h0tties near you"));
    CHECK(!obfu("h0t"));                         /* too short to tell */
    CHECK(!obfu("Build a3f5e1c failed"));        /* a commit id */
    CHECK(!obfu("Order AB12CD34 shipped"));      /* an order number */
    CHECK(!obfu("Windows 10 update"));
    CHECK(!obfu("utf8mb4 migration"));
    CHECK(!obfu("IPv6 rollout"));
    CHECK(!obfu("U.S.A. trip"));
    CHECK(!obfu("Meeting at 10:30"));
    CHECK(!obfu("H2O levels"));
    CHECK(!obfu("e.g. this one"));
    CHECK(!obfu("www.example.com newsletter"));
    CHECK(!obfu("Re: [list] patch 3/7"));
    CHECK_STR(hits("From: a@example.org\r\nDate: Wed, 31 Jul 2002 16:41:57 +0200\r\n"
                   "Message-ID: <1@example.org>\r\nSubject: Get V1agra cheap\r\n"
                   "\r\nbody\r\n"), "SUBJ_OBFUSCATED");
}

/* --- body ----------------------------------------------------------------------------- */

TEST(test_html_only)
{
    CHECK_STR(hits(HDRS "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n"),
              "HTML_ONLY");
    /* html and a pdf: still no text/plain alternative */
    CHECK_STR(hits(HDRS "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                        "--b\r\nContent-Type: text/html\r\n\r\n<p>See attached</p>\r\n"
                        "--b\r\nContent-Type: application/pdf\r\n"
                        "Content-Disposition: attachment; filename=a.pdf\r\n\r\nJVBERi0x\r\n"
                        "--b--\r\n"), "HTML_ONLY");
    /* an html attachment next to a text body is not html-only */
    CHECK_STR(hits(HDRS "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                        "--b\r\nContent-Type: text/plain\r\n\r\nSee attached\r\n"
                        "--b\r\nContent-Type: text/html\r\n"
                        "Content-Disposition: attachment; filename=a.html\r\n\r\n<p>x</p>\r\n"
                        "--b--\r\n"), "");
}

static bool mismatch(const char *html)
{
    return rules_mismatched_link(html, strlen(html));
}

TEST(test_mismatched_link)
{
    CHECK(mismatch("<p><a href=\"http://evil.example/login\">www.paypal.com</a></p>"));
    CHECK(mismatch("<a class=x href='http://paypal.com@evil.example/'>http://paypal.com</a>"));
    CHECK(mismatch("<A HREF=http://evil.example><span>https://bank.example/login</span></A>"));
    CHECK(mismatch("<a href=\"https://a.example\">ok.a.example</a> "
                   "<a\r\n href=\"https://203.0.113.9/\">bank.example</a>"));
    CHECK(!mismatch("<a href=\"https://www.paypal.com/x\">https://paypal.com/</a>"));
    CHECK(!mismatch("<a href=\"https://click.news.example.com/t?u=1\">example.com</a>"));
    CHECK(!mismatch("<a href='http://x.example'>Click <b>here</b></a>"));
    CHECK(!mismatch("<a href=\"mailto:john@example.com\">john@other.example</a>"));
    CHECK(!mismatch("<a href=\"/relative\">www.example.com</a>"));
    CHECK(!mismatch("<abbr title=\"x\">www.example.com</abbr>"));
    CHECK(!mismatch("<a href=\"http://example.com\">version 1.2</a>"));
    CHECK(!mismatch("<a href=\"http://unclosed.example"));
    CHECK_STR(hits(HDRS "Content-Type: multipart/alternative; boundary=b\r\n\r\n"
                        "--b\r\nContent-Type: text/plain\r\n\r\nLog in at www.bank.example\r\n"
                        "--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: "
                        "quoted-printable\r\n\r\n<a href=3D\"http://evil.example/\">www.bank.=\r\n"
                        "example</a>\r\n--b--\r\n"), "MISMATCHED_LINK");
}

TEST(test_empty_body)
{
    CHECK_STR(hits(HDRS "\r\n"), "EMPTY_BODY");
    CHECK_STR(hits(HDRS "\r\n \r\n\t\r\n"), "EMPTY_BODY");
    CHECK_STR(hits(HDRS "Content-Type: multipart/alternative; boundary=b\r\n\r\n"
                        "--b\r\nContent-Type: text/plain\r\n\r\n\r\n"
                        "--b\r\nContent-Type: text/html\r\n\r\n<html><body>&nbsp;<br></body>"
                        "</html>\r\n--b--\r\n"), "EMPTY_BODY");
    /* an attachment is content */
    CHECK_STR(hits(HDRS "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                        "--b\r\nContent-Type: text/plain\r\n\r\n\r\n"
                        "--b\r\nContent-Type: image/png\r\n\r\niVBORw0KGgo=\r\n--b--\r\n"), "");
    CHECK_STR(hits(HDRS "\r\nhi\r\n"), "");
    /* base64 text is decoded before it is judged */
    CHECK_STR(hits(HDRS "Content-Transfer-Encoding: base64\r\n\r\nICAgCg==\r\n"), "EMPTY_BODY");
    CHECK_STR(hits(HDRS "Content-Transfer-Encoding: base64\r\n\r\naGk=\r\n"), "");
}

/* --- From ------------------------------------------------------------------------------ */

static const char *from_domain(const char *v)
{
    static char out[256];
    if (!rules_from_domain(v, strlen(v), out, sizeof out))
        return "(none)";
    return out;
}

TEST(test_from_domain)
{
    CHECK_STR(from_domain(" Alice <alice@Local.Example>"), "local.example");
    CHECK_STR(from_domain(" alice@local.example (Alice)"), "local.example");
    CHECK_STR(from_domain(" \"bob@local.example\" <bob@other.example>"), "other.example");
    CHECK_STR(from_domain(" (x <y@z.example>) bob@other.example"), "other.example");
    CHECK_STR(from_domain(" a@one.example, b@two.example"), "one.example");
    CHECK_STR(from_domain(" undisclosed"), "(none)");
    CHECK_STR(from_domain(" <a@bad_domain!>"), "(none)");
}

TEST(test_from_local_unauth)
{
    const char *msg = "From: Alice <alice@local.example>\r\nSubject: hello there\r\n"
                      "Date: Wed, 31 Jul 2002 16:41:57 +0200\r\n"
                      "Message-ID: <1@example.org>\r\n\r\nbody\r\n";
    CHECK_STR(hits(msg), "FROM_LOCAL_UNAUTH");
    struct rules_env authed = { .authenticated = true, .domain_is_local = local_domain };
    CHECK_STR(hits_env(msg, &authed), "");
    struct rules_env no_accounts = { 0 };
    CHECK_STR(hits_env(msg, &no_accounts), "");
    CHECK_STR(hits(HDRS "\r\nbody\r\n"), "");
}

/* --- through the pipeline -------------------------------------------------------------- */

TEST(test_pipeline_names_every_hit)
{
    struct settings st;
    memset(&st, 0, sizeof st);
    st.enable_spamassassin = true;
    st.sa_tag = 2.0;
    st.sa_tag2 = 6.31;
    st.sa_kill = 10.0;
    struct server srv;
    memset(&srv, 0, sizeof srv);
    srv.settings = &st;
    const struct filter_ops *ops[] = { &rules_filter };
    const char *msg = "From: a@example.org\r\nSubject: hello there\r\n"
                      "Content-Type: text/html\r\n\r\n<p>Hi</p>\r\n";
    struct filter_txn t;
    memset(&t, 0, sizeof t);
    t.srv = &srv;
    t.id = "test";
    t.msg = msg;
    t.len = strlen(msg);
    struct pipeline_session *ps = pipeline_session_new();
    struct pipeline_verdict v;
    pipeline_run_ops(ops, 1, ps, FILTER_DATA, &t, false, &v);
    CHECK_INT(v.verdict, FILTER_ACCEPT);
    struct buf reasons = BUF_INIT;
    pipeline_format_reasons(ps, &reasons);
    CHECK_STR(buf_cstr(&reasons), "MISSING_DATE(1.36),MISSING_MID(0.5),HTML_ONLY(1.1)");
    double score = pipeline_score(ps);
    CHECK(score > 2.96 && score < 2.97);
    struct buf hdr = BUF_INIT;
    CHECK_INT(pipeline_spam_headers(ps, &st, score, pipeline_spam_action(score, &st), &hdr), 0);
    /* the list is folded; every name is there */
    const char *h = buf_cstr(&hdr);
    CHECK(strstr(h, "tests=MISSING_DATE,MISSING_MID,") != NULL);
    CHECK(strstr(h, "HTML_ONLY\r\n") != NULL);
    buf_free(&hdr);
    buf_free(&reasons);

    /* a second message on the same thread: only its own hits */
    pipeline_session_clear(ps, FILTER_MAIL);
    const char *clean = HDRS "\r\nSee you.\r\n";
    t.msg = clean;
    t.len = strlen(clean);
    pipeline_run_ops(ops, 1, ps, FILTER_DATA, &t, false, &v);
    CHECK_INT(ps->layer[FILTER_DATA].nreasons, 0);

    /* trusted clients (submission) are not scored */
    t.msg = msg;
    t.len = strlen(msg);
    pipeline_run_ops(ops, 1, ps, FILTER_DATA, &t, true, &v);
    CHECK_INT(ps->layer[FILTER_DATA].nreasons, 0);
    /* nor anyone with spam scoring off */
    st.enable_spamassassin = false;
    pipeline_run_ops(ops, 1, ps, FILTER_DATA, &t, false, &v);
    CHECK_INT(ps->layer[FILTER_DATA].nreasons, 0);
    pipeline_session_free(ps);
}

int main(void)
{
    RUN(test_clean_message);
    RUN(test_missing_headers);
    RUN(test_invalid_date_and_msgid);
    RUN(test_date_valid);
    RUN(test_msgid_valid);
    RUN(test_subject_all_caps);
    RUN(test_subject_obfuscated);
    RUN(test_html_only);
    RUN(test_mismatched_link);
    RUN(test_empty_body);
    RUN(test_from_domain);
    RUN(test_from_local_unauth);
    RUN(test_pipeline_names_every_hit);
    return test_summary();
}
