/* Unit tests for filters/pipeline.c (stages, verdicts, score thresholds,
 * headers, message edits), filters/gtube.c, and the issue-6 settings in
 * core/settings.c (decimal numbers, sizes with units, DNSBL_ZONES). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters.h"
#include "pipeline.h"
#include "server.h"
#include "settings.h"
#include "test.h"

#define GTUBE "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
#define HOST "mx.example.test"

static struct settings st;
static struct server srv;

static const char *const filter_env[] = {
    "ENABLE_POLICYD_SPF", "SPF_DNS_ERROR", "ENABLE_CLAMAV", "CLAMAV_MESSAGE_SIZE_LIMIT",
    "ENABLE_SPAMASSASSIN", "SA_TAG", "SA_TAG2", "SA_KILL", "SPAM_SUBJECT",
    "MOVE_SPAM_TO_JUNK", "MARK_SPAM_AS_READ", "ENABLE_DNSBL", "DNSBL_ZONES",
    "DNSBL_THRESHOLD", "ENABLE_POSTGREY", "POSTGREY_DELAY", "POSTGREY_MAX_AGE",
    "POSTGREY_TEXT", "POSTGREY_AUTO_WHITELIST_CLIENTS",
};

static void clear_env(void)
{
    for (size_t i = 0; i < sizeof filter_env / sizeof *filter_env; i++)
        unsetenv(filter_env[i]);
    setenv("OVERRIDE_HOSTNAME", HOST, 1);
}

/* Loads the settings from the environment into st. */
static int load(void)
{
    char err[512];
    settings_free(&st);
    int rc = settings_load(NULL, &st, err, sizeof err);
    if (rc)
        fprintf(stderr, "settings: %s\n", err);
    srv.settings = &st;
    return rc;
}

static const char *load_err(const char *name, const char *value)
{
    static char err[512];
    struct settings s;
    clear_env();
    setenv(name, value, 1);
    err[0] = '\0';
    if (settings_load(NULL, &s, err, sizeof err) == 0) {
        settings_free(&s);
        snprintf(err, sizeof err, "(loaded)");
    }
    unsetenv(name);
    return err;
}

/* --- settings ------------------------------------------------------------ */

TEST(test_settings_defaults)
{
    clear_env();
    CHECK_INT(load(), 0);
    CHECK(st.enable_policyd_spf);
    CHECK_INT(st.spf_dns_error, SPF_DNS_ERROR_TEMPFAIL);
    CHECK(!st.enable_clamav);
    CHECK_INT(st.clamav_message_size_limit, 25 << 20);
    CHECK(!st.enable_spamassassin);
    CHECK(st.sa_tag == 2.0 && st.sa_tag2 == 6.31 && st.sa_kill == 10.0);
    CHECK_STR(st.spam_subject, "");
    CHECK(st.move_spam_to_junk && !st.mark_spam_as_read);
    CHECK(!st.enable_dnsbl);
    CHECK_INT(st.dnsbl_threshold, 3);
    CHECK(!st.enable_postgrey);
    CHECK_INT(st.postgrey_delay, 300);
    CHECK_INT(st.postgrey_max_age, 35);
    CHECK_STR(st.postgrey_text, "Delayed by Postgrey");
    CHECK_INT(st.postgrey_auto_whitelist_clients, 5);
    struct dnsbl_zone z[SETTINGS_DNSBL_ZONES_MAX];
    int n = settings_dnsbl_zones(st.dnsbl_zones, z, SETTINGS_DNSBL_ZONES_MAX);
    CHECK(n >= 2);
    if (n >= 2) {
        CHECK_STR(z[0].zone, "zen.spamhaus.org");
        CHECK(z[0].weight == 3.0);
        CHECK_STR(z[n - 1].zone, "list.dnswl.org");
        CHECK(z[n - 1].weight < 0);
    }
}

TEST(test_settings_values)
{
    clear_env();
    setenv("SA_TAG", "-5.0", 1);
    setenv("SA_TAG2", "2", 1);
    setenv("SA_KILL", "+3.25", 1);
    setenv("CLAMAV_MESSAGE_SIZE_LIMIT", "10k", 1);
    setenv("SPAM_SUBJECT", "***SPAM*** ", 1);
    setenv("SPF_DNS_ERROR", "skip", 1);
    CHECK_INT(load(), 0);
    CHECK(st.sa_tag == -5.0 && st.sa_tag2 == 2.0 && st.sa_kill == 3.25);
    CHECK_INT(st.clamav_message_size_limit, 10240);
    CHECK_STR(st.spam_subject, "***SPAM*** ");
    CHECK_INT(st.spf_dns_error, SPF_DNS_ERROR_SKIP);
    setenv("CLAMAV_MESSAGE_SIZE_LIMIT", "2GB", 1);
    CHECK_INT(load(), 0);
    CHECK_INT(st.clamav_message_size_limit, 2ULL << 30);
    setenv("CLAMAV_MESSAGE_SIZE_LIMIT", "123", 1);
    CHECK_INT(load(), 0);
    CHECK_INT(st.clamav_message_size_limit, 123);
    /* the dump reads back as the same values */
    char path[] = "/tmp/test_pipeline_dump.XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    CHECK(f != NULL);
    if (!f)
        return;
    settings_dump(&st, f);
    fclose(f);
    char line[256];
    bool seen_kill = false, seen_tag = false;
    f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        seen_kill |= strcmp(line, "SA_KILL=3.25\n") == 0;
        seen_tag |= strcmp(line, "SA_TAG=-5.0\n") == 0;
    }
    if (f)
        fclose(f);
    CHECK(seen_kill && seen_tag);
    clear_env();
    struct settings back;
    char err[256];
    CHECK_INT(settings_load(path, &back, err, sizeof err), 0);
    CHECK(back.sa_kill == 3.25 && back.sa_tag == -5.0 && back.clamav_message_size_limit == 123);
    settings_free(&back);
    unlink(path);
    clear_env();
}

TEST(test_settings_invalid)
{
    CHECK_STR(load_err("SA_KILL", "1e3"),
              "SA_KILL: invalid value '1e3'; accepted: a decimal number from -1000 to 10000, "
              "e.g. 6.31");
    CHECK(strncmp(load_err("SA_TAG", "abc"), "SA_TAG: invalid value 'abc'", 27) == 0);
    CHECK(strncmp(load_err("SA_TAG2", "."), "SA_TAG2: invalid", 16) == 0);
    CHECK(strncmp(load_err("SA_TAG2", "nan"), "SA_TAG2: invalid", 16) == 0);
    CHECK(strncmp(load_err("SA_TAG2", "99999"), "SA_TAG2: invalid", 16) == 0);
    CHECK(strncmp(load_err("CLAMAV_MESSAGE_SIZE_LIMIT", "25X"),
                  "CLAMAV_MESSAGE_SIZE_LIMIT: invalid value '25X'; accepted: a number of bytes",
                  75) == 0);
    CHECK(strncmp(load_err("CLAMAV_MESSAGE_SIZE_LIMIT", "M"), "CLAMAV_MESSAGE_SIZE_LIMIT: inv",
                  30) == 0);
    CHECK(strncmp(load_err("CLAMAV_MESSAGE_SIZE_LIMIT", "2T"), "CLAMAV_MESSAGE_SIZE_LIMIT: inv",
                  30) == 0);   /* over 2^40 */
    CHECK_STR(load_err("CLAMAV_MESSAGE_SIZE_LIMIT", "1T"), "(loaded)");
    /* other sizes keep taking bytes only */
    CHECK(strncmp(load_err("POSTFIX_MESSAGE_SIZE_LIMIT", "10M"), "POSTFIX_MESSAGE_SIZE_LIMIT: inv",
                  31) == 0);
    CHECK(strncmp(load_err("SPF_DNS_ERROR", "ignore"),
                  "SPF_DNS_ERROR: invalid value 'ignore'; accepted: tempfail, skip", 62) == 0);
    CHECK(strncmp(load_err("DNSBL_ZONES", "zen.spamhaus.org*x"), "DNSBL_ZONES: invalid", 20) == 0);
    CHECK(strncmp(load_err("DNSBL_ZONES", "bad..zone"), "DNSBL_ZONES: invalid", 20) == 0);
    CHECK(strncmp(load_err("DNSBL_ZONES", "a.org*500"), "DNSBL_ZONES: invalid", 20) == 0);
    CHECK(strncmp(load_err("DNSBL_THRESHOLD", "0"), "DNSBL_THRESHOLD: invalid", 24) == 0);
    CHECK(strncmp(load_err("POSTGREY_TEXT", "a\tb"), "POSTGREY_TEXT: invalid", 22) == 0);
    CHECK_STR(load_err("DNSBL_ZONES", "zen.spamhaus.org*3, bl.spamcop.net*2,list.dnswl.org*-5"),
              "(loaded)");
}

TEST(test_dnsbl_zones)
{
    struct dnsbl_zone z[4];
    CHECK_INT(settings_dnsbl_zones("a.example*2.5,b.example , c.example*-5", z, 4), 3);
    CHECK_STR(z[0].zone, "a.example");
    CHECK(z[0].weight == 2.5);
    CHECK_STR(z[1].zone, "b.example");
    CHECK(z[1].weight == 1.0);
    CHECK(z[2].weight == -5.0);
    CHECK_INT(settings_dnsbl_zones("a.example,b.example", z, 1), -1);
    CHECK_INT(settings_dnsbl_zones("a.example*", z, 4), -1);
    CHECK_INT(settings_dnsbl_zones("*3", z, 4), -1);
    CHECK_INT(settings_dnsbl_zones("", z, 4), 0);
}

/* --- the score thresholds (a pure function) ------------------------------ */

TEST(test_spam_action)
{
    clear_env();
    CHECK_INT(load(), 0);
    /* scoring off: scores are only logged */
    CHECK_INT(pipeline_spam_action(5000.0, &st), PIPELINE_ACCEPT);
    st.enable_spamassassin = true;
    CHECK_INT(pipeline_spam_action(-3.0, &st), PIPELINE_ACCEPT);
    CHECK_INT(pipeline_spam_action(1.99, &st), PIPELINE_ACCEPT);
    CHECK_INT(pipeline_spam_action(2.0, &st), PIPELINE_TAG);
    CHECK_INT(pipeline_spam_action(6.3, &st), PIPELINE_TAG);
    CHECK_INT(pipeline_spam_action(6.31, &st), PIPELINE_SPAM);
    CHECK_INT(pipeline_spam_action(9.99, &st), PIPELINE_SPAM);
    CHECK_INT(pipeline_spam_action(10.0, &st), PIPELINE_REJECT);
    CHECK_INT(pipeline_spam_action(1000.0, &st), PIPELINE_REJECT);
    /* docker-mailserver's test values: everything tagged */
    st.sa_tag = -5.0;
    st.sa_tag2 = 2.0;
    st.sa_kill = 3.0;
    CHECK_INT(pipeline_spam_action(0.0, &st), PIPELINE_TAG);
    CHECK_INT(pipeline_spam_action(2.5, &st), PIPELINE_SPAM);
    CHECK_INT(pipeline_spam_action(3.0, &st), PIPELINE_REJECT);
}

/* --- fake filters ------------------------------------------------------------ */

static bool on(const struct settings *s)
{
    (void)s;
    return true;
}

static bool off(const struct settings *s)
{
    (void)s;
    return false;
}

static int calls_score, calls_after;

static void hook_score(const struct filter_txn *t, struct filter_result *r)
{
    calls_score++;
    r->verdict = FILTER_SCORE;
    r->score = 1.5;
    snprintf(r->reason, sizeof r->reason, "SPF_SOFT\r\nFAIL");   /* junk is dropped */
    buf_printf(t->add_headers, "Received-SPF: softfail");     /* CRLF added */
    buf_printf(t->auth_results, "spf=softfail smtp.mailfrom=%s", t->mail_from);
}

static void hook_tempfail(const struct filter_txn *t, struct filter_result *r)
{
    (void)t;
    r->verdict = FILTER_TEMPFAIL;
    r->code = 550;                 /* wrong class: becomes 451 4.7.1 */
    snprintf(r->text, sizeof r->text, "try\r\nlater");
    snprintf(r->reason, sizeof r->reason, "GREYLIST");
}

static void hook_reject(const struct filter_txn *t, struct filter_result *r)
{
    (void)t;
    r->verdict = FILTER_REJECT;
    r->code = 554;
    snprintf(r->enhanced, sizeof r->enhanced, "5.7.1");
    snprintf(r->text, sizeof r->text, "Virus found: Eicar-Signature");
}

static void hook_after(const struct filter_txn *t, struct filter_result *r)
{
    (void)t;
    calls_after++;
    r->verdict = FILTER_SCORE;
    r->score = 2.0;
    snprintf(r->reason, sizeof r->reason, "DNSBL_X");
}

static void hook_skip(const struct filter_txn *t, struct filter_result *r)
{
    (void)t;
    r->verdict = FILTER_ACCEPT;
    snprintf(r->reason, sizeof r->reason, "SPF_SKIPPED");
}

static const struct filter_ops f_score = { .name = "score", .enabled = on,
                                           .hook = { [FILTER_MAIL] = hook_score } };
static const struct filter_ops f_temp = { .name = "temp", .enabled = on,
                                          .hook = { [FILTER_RCPT] = hook_tempfail } };
static const struct filter_ops f_virus = { .name = "virus", .enabled = on, .for_submission = true,
                                           .hook = { [FILTER_DATA] = hook_reject } };
static const struct filter_ops f_after = { .name = "after", .enabled = on,
                                           .hook = { [FILTER_CONNECT] = hook_after,
                                                     [FILTER_RCPT] = hook_after,
                                                     [FILTER_DATA] = hook_after } };
static const struct filter_ops f_off = { .name = "off", .enabled = off,
                                         .hook = { [FILTER_HELO] = hook_reject } };
static const struct filter_ops f_skip = { .name = "skip", .enabled = on,
                                          .hook = { [FILTER_MAIL] = hook_skip } };

static void txn(struct filter_txn *t)
{
    memset(t, 0, sizeof *t);
    t->srv = &srv;
    t->id = "TESTID01";
    t->client_ip = "192.0.2.1";
    t->helo = "client.example.org";
    t->mail_from = "a@example.org";
}

TEST(test_wants)
{
    clear_env();
    CHECK_INT(load(), 0);
    const struct filter_ops *ops[] = { &f_score, &f_temp, &f_off };
    CHECK(pipeline_active_ops(ops, 3, &st, false));
    CHECK(!pipeline_active_ops(ops, 3, &st, true));   /* none is for submission */
    CHECK(pipeline_wants_ops(ops, 3, &st, FILTER_MAIL, false));
    CHECK(pipeline_wants_ops(ops, 3, &st, FILTER_RCPT, false));
    CHECK(!pipeline_wants_ops(ops, 3, &st, FILTER_HELO, false));  /* f_off */
    CHECK(!pipeline_wants_ops(ops, 3, &st, FILTER_DATA, false));
    const struct filter_ops *sub[] = { &f_virus, &f_after };
    CHECK(pipeline_active_ops(sub, 2, &st, true));
    CHECK(pipeline_wants_ops(sub, 2, &st, FILTER_DATA, true));
    CHECK(!pipeline_wants_ops(sub, 2, &st, FILTER_CONNECT, true));   /* f_after: port 25 only */
    CHECK(pipeline_wants_ops(sub, 2, &st, FILTER_CONNECT, false));
    /* the real registry with every filter off: nothing at all */
    st.enable_policyd_spf = false;
    st.enable_postgrey = false;
    st.enable_spamassassin = false;
    CHECK(!pipeline_active(&st, false));
    st.enable_spamassassin = true;
    CHECK(pipeline_active(&st, false));
    CHECK(pipeline_wants(&st, FILTER_DATA, false));
    CHECK(!pipeline_wants(&st, FILTER_RCPT, false));
    CHECK(!pipeline_active(&st, true));   /* GTUBE is not for submission */
    st.enable_postgrey = true;
    CHECK(pipeline_wants(&st, FILTER_RCPT, false));
}

TEST(test_run_scores_and_refusals)
{
    clear_env();
    CHECK_INT(load(), 0);
    struct pipeline_session *ps = pipeline_session_new();
    CHECK(ps != NULL);
    if (!ps)
        return;
    const struct filter_ops *ops[] = { &f_after, &f_score, &f_skip, &f_temp, &f_virus };
    struct filter_txn t;
    struct pipeline_verdict v;
    txn(&t);
    pipeline_run_ops(ops, 5, ps, FILTER_CONNECT, &t, false, &v);
    CHECK_INT(v.verdict, FILTER_ACCEPT);
    pipeline_run_ops(ops, 5, ps, FILTER_MAIL, &t, false, &v);
    CHECK_INT(v.verdict, FILTER_ACCEPT);
    CHECK(t.add_headers == NULL && t.auth_results == NULL);
    struct buf r = BUF_INIT;
    pipeline_format_reasons(ps, &r);
    CHECK_STR(buf_cstr(&r), "DNSBL_X(2.0),SPF_SOFTFAIL(1.5),SPF_SKIPPED(0.0)");
    CHECK(pipeline_score(ps) == 3.5);
    /* RCPT: f_after scores, then f_temp refuses: the stage keeps nothing */
    calls_after = 0;
    t.rcpt = "u@example.test";
    pipeline_run_ops(ops, 5, ps, FILTER_RCPT, &t, false, &v);
    CHECK_INT(calls_after, 1);
    CHECK_INT(v.verdict, FILTER_TEMPFAIL);
    CHECK_INT(v.code, 451);
    CHECK_STR(v.enhanced, "4.7.1");
    CHECK_STR(v.text, "try  later");
    CHECK_STR(v.filter, "temp");
    CHECK(pipeline_score(ps) == 3.5);
    /* DATA: the virus filter refuses first; f_after never runs after it */
    calls_after = 0;
    const struct filter_ops *data_ops[] = { &f_virus, &f_after };
    t.msg = "Subject: x\r\n\r\nbody\r\n";
    t.len = strlen(t.msg);
    pipeline_run_ops(data_ops, 2, ps, FILTER_DATA, &t, false, &v);
    CHECK_INT(v.verdict, FILTER_REJECT);
    CHECK_INT(v.code, 554);
    CHECK_STR(v.text, "Virus found: Eicar-Signature");
    CHECK_INT(calls_after, 0);
    CHECK(t.mime == NULL);
    /* trusted (submission): only the for_submission filter */
    calls_score = 0;
    pipeline_run_ops(ops, 5, ps, FILTER_MAIL, &t, true, &v);
    CHECK_INT(calls_score, 0);
    /* a new transaction forgets MAIL and later; the connect layer stays */
    pipeline_session_clear(ps, FILTER_MAIL);
    CHECK(pipeline_score(ps) == 2.0);
    pipeline_session_clear(ps, FILTER_CONNECT);
    CHECK(pipeline_score(ps) == 0.0);
    buf_free(&r);
    pipeline_session_free(ps);
}

/* --- formatting --------------------------------------------------------------- */

TEST(test_format_score)
{
    char b[32];
    pipeline_format_score(6.31, b, sizeof b);
    CHECK_STR(b, "6.31");
    pipeline_format_score(2.0, b, sizeof b);
    CHECK_STR(b, "2.0");
    pipeline_format_score(12.3, b, sizeof b);
    CHECK_STR(b, "12.3");
    pipeline_format_score(1000.0, b, sizeof b);
    CHECK_STR(b, "1000.0");
    pipeline_format_score(-0.5, b, sizeof b);
    CHECK_STR(b, "-0.5");
    pipeline_format_score(-0.001, b, sizeof b);
    CHECK_STR(b, "0.0");
}

static struct pipeline_session *session_with(const char *const *names, const double *scores,
                                             size_t n, const char *auth)
{
    struct pipeline_session *ps = pipeline_session_new();
    if (!ps)
        return NULL;
    struct pipeline_layer *l = &ps->layer[FILTER_DATA];
    l->reasons = calloc(n ? n : 1, sizeof *l->reasons);
    l->cap = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(l->reasons[i].name, sizeof l->reasons[i].name, "%s", names[i]);
        l->reasons[i].score = scores[i];
    }
    l->nreasons = n;
    if (auth)
        buf_printf(&ps->layer[FILTER_MAIL].auth_results, "%s", auth);
    return ps;
}

TEST(test_spam_headers)
{
    clear_env();
    CHECK_INT(load(), 0);
    static const char *const names[] = { "GTUBE", "SPF_SOFTFAIL" };
    static const double scores[] = { 10.0, 2.3 };
    struct pipeline_session *ps = session_with(names, scores, 2, NULL);
    if (!ps)
        return;
    struct buf out = BUF_INIT;
    CHECK_INT(pipeline_spam_headers(ps, &st, 12.3, PIPELINE_SPAM, &out), 0);
    CHECK_STR(buf_cstr(&out), "X-Spam-Flag: YES\r\nX-Spam-Score: 12.3\r\n"
                              "X-Spam-Level: ************\r\n"
                              "X-Spam-Status: Yes, score=12.3 required=6.31 "
                              "tests=GTUBE,SPF_SOFTFAIL\r\n");
    buf_reset(&out);
    CHECK_INT(pipeline_spam_headers(ps, &st, 0.5, PIPELINE_TAG, &out), 0);
    CHECK_STR(buf_cstr(&out), "X-Spam-Flag: NO\r\nX-Spam-Score: 0.5\r\n"
                              "X-Spam-Status: No, score=0.5 required=6.31 "
                              "tests=GTUBE,SPF_SOFTFAIL\r\n");
    pipeline_session_free(ps);
    /* many reasons: folded, no line over 78 + the longest name */
    static const char *const many[] = {
        "RULE_NUMBER_ONE_IS_LONG", "RULE_NUMBER_TWO_IS_LONG", "RULE_NUMBER_THREE_IS_LONG",
        "RULE_NUMBER_FOUR_IS_LONG", "RULE_NUMBER_FIVE_IS_LONG", "RULE_NUMBER_SIX_IS_LONG",
    };
    static const double zero[6] = { 0 };
    ps = session_with(many, zero, 6, NULL);
    buf_reset(&out);
    CHECK_INT(pipeline_spam_headers(ps, &st, 100.0, PIPELINE_REJECT, &out), 0);
    const char *h = buf_cstr(&out);
    CHECK(strstr(h, "X-Spam-Level: **************************************************\r\n"));
    size_t longest = 0, cur = 0;
    for (const char *p = h; *p; p++) {
        cur = *p == '\n' ? 0 : cur + 1;
        longest = cur > longest ? cur : longest;
    }
    CHECK(longest <= 78);
    CHECK(strstr(h, "RULE_NUMBER_SIX_IS_LONG\r\n") != NULL);
    CHECK(strstr(h, ",\r\n\tRULE_NUMBER_") != NULL);
    buf_free(&out);
    pipeline_session_free(ps);
}

TEST(test_auth_results)
{
    struct buf out = BUF_INIT;
    pipeline_auth_results_header(HOST, "", 0, &out);
    CHECK_STR(buf_cstr(&out), "Authentication-Results: " HOST "; none\r\n");
    buf_reset(&out);
    const char *m = "spf=pass smtp.mailfrom=example.org";
    pipeline_auth_results_header(HOST, m, strlen(m), &out);
    CHECK_STR(buf_cstr(&out), "Authentication-Results: " HOST ";\r\n\tspf=pass "
                              "smtp.mailfrom=example.org\r\n");
    buf_free(&out);

    static const char *const ours[] = {
        "Authentication-Results: mx.example.test; spf=pass\r\n",
        "authentication-results:MX.Example.TEST;spf=pass\r\n",
        "Authentication-Results: (comment) mx.example.test 1; none\r\n",
        "Authentication-Results:\r\n\tmx.example.test;\r\n\tspf=fail\r\n",
    };
    static const char *const theirs[] = {
        "Authentication-Results: mx.example.test.evil; spf=pass\r\n",
        "Authentication-Results: other.example; spf=pass\r\n",
        "Authentication-Results-Extra: mx.example.test; spf=pass\r\n",
        "X-Authentication-Results: mx.example.test; spf=pass\r\n",
    };
    for (size_t i = 0; i < 4; i++) {
        CHECK(pipeline_is_our_auth_results(ours[i], strlen(ours[i]), HOST));
        CHECK(!pipeline_is_our_auth_results(theirs[i], strlen(theirs[i]), HOST));
    }
}

TEST(test_strip_and_subject)
{
    const char *in = "Authentication-Results: mx.example.test;\r\n\tspf=pass\r\n"
                     "From: <a@example.org>\r\n"
                     "Authentication-Results: other.example; dkim=pass\r\n"
                     "Subject: hello\r\n\tworld\r\n"
                     "\r\n"
                     "Authentication-Results: mx.example.test; in the body stays\r\n";
    struct buf msg = BUF_INIT;
    buf_append(&msg, in, strlen(in));
    msg.len = pipeline_strip_fields(msg.data, msg.len, pipeline_is_our_auth_results, HOST);
    struct buf hdr = BUF_INIT;
    CHECK_INT(pipeline_prefix_subject(&msg, "[SPAM] ", &hdr), 0);
    CHECK_INT(hdr.len, 0);
    CHECK_STR(buf_cstr(&msg), "From: <a@example.org>\r\n"
                              "Authentication-Results: other.example; dkim=pass\r\n"
                              "Subject: [SPAM] hello\r\n\tworld\r\n"
                              "\r\n"
                              "Authentication-Results: mx.example.test; in the body stays\r\n");
    /* no Subject: one is added, without the trailing space */
    buf_reset(&msg);
    buf_printf(&msg, "From: <a@example.org>\r\n\r\nSubject: not a header\r\n");
    CHECK_INT(pipeline_prefix_subject(&msg, "***SPAM*** ", &hdr), 0);
    CHECK_STR(buf_cstr(&hdr), "Subject: ***SPAM***\r\n");
    CHECK_STR(buf_cstr(&msg), "From: <a@example.org>\r\n\r\nSubject: not a header\r\n");
    /* no prefix: nothing */
    buf_reset(&hdr);
    CHECK_INT(pipeline_prefix_subject(&msg, "", &hdr), 0);
    CHECK_INT(hdr.len, 0);
    /* an empty message and one without a body */
    CHECK_INT(pipeline_strip_fields(NULL, 0, pipeline_is_our_auth_results, HOST), 0);
    char nobody[] = "Authentication-Results: mx.example.test; none";
    CHECK_INT(pipeline_strip_fields(nobody, strlen(nobody), pipeline_is_our_auth_results, HOST),
              0);
    buf_free(&msg);
    buf_free(&hdr);
}

/* --- end of data: the whole decision ------------------------------------------- */

static const char *finish(struct pipeline_session *ps, bool trusted, struct buf *msg,
                          struct pipeline_outcome *o)
{
    static struct buf hdr = BUF_INIT;
    memset(o, 0, sizeof *o);
    if (pipeline_finish(ps, &st, HOST, trusted, msg, o) < 0)
        return "(error)";
    buf_free(&hdr);
    hdr = o->headers;
    memset(&o->headers, 0, sizeof o->headers);
    const char *h = buf_cstr(&hdr);
    return h ? h : "";
}

TEST(test_finish)
{
    clear_env();
    setenv("ENABLE_SPAMASSASSIN", "1", 1);
    CHECK_INT(load(), 0);
    static const char *const gtube[] = { "GTUBE" };
    static const double g1000[] = { 1000.0 };
    struct pipeline_session *ps = session_with(gtube, g1000, 1, "spf=pass smtp.mailfrom=a.org");
    if (!ps)
        return;
    const char *orig = "X-Spam-Flag: NO\r\nSubject: buy\r\nX-Spam-Status: No\r\n\r\nbody\r\n";
    struct buf msg = BUF_INIT;
    buf_append(&msg, orig, strlen(orig));
    struct pipeline_outcome o;
    finish(ps, false, &msg, &o);
    CHECK_INT(o.action, PIPELINE_REJECT);
    CHECK_STR(pipeline_action_name(&o), "reject");
    /* SA_KILL above GTUBE: spam, to Junk, \Seen, subject prefixed */
    st.sa_kill = 2000.0;
    st.mark_spam_as_read = true;
    free(st.spam_subject);
    st.spam_subject = strdup("***SPAM*** ");
    const char *h = finish(ps, false, &msg, &o);
    CHECK_INT(o.action, PIPELINE_SPAM);
    CHECK_STR(pipeline_action_name(&o), "junk");
    CHECK_STR(o.folder, "Junk");
    CHECK_STR(o.flags, "S");
    CHECK(o.score == 1000.0);
    CHECK_STR(h, "Authentication-Results: " HOST ";\r\n\tspf=pass smtp.mailfrom=a.org\r\n"
                 "X-Spam-Flag: YES\r\nX-Spam-Score: 1000.0\r\n"
                 "X-Spam-Level: **************************************************\r\n"
                 "X-Spam-Status: Yes, score=1000.0 required=6.31 tests=GTUBE\r\n");
    CHECK_STR(buf_cstr(&msg), "Subject: ***SPAM*** buy\r\n\r\nbody\r\n");
    /* spam kept in INBOX when MOVE_SPAM_TO_JUNK=0 */
    st.move_spam_to_junk = false;
    st.mark_spam_as_read = false;
    finish(ps, false, &msg, &o);
    CHECK(o.folder == NULL && o.flags == NULL);
    CHECK_STR(pipeline_action_name(&o), "spam");
    pipeline_session_free(ps);

    /* a clean message: Authentication-Results "none", no spam headers */
    ps = pipeline_session_new();
    buf_reset(&msg);
    buf_printf(&msg, "Subject: hi\r\n\r\nclean\r\n");
    h = finish(ps, false, &msg, &o);
    CHECK_INT(o.action, PIPELINE_ACCEPT);
    CHECK_STR(h, "Authentication-Results: " HOST "; none\r\n");
    CHECK_STR(buf_cstr(&msg), "Subject: hi\r\n\r\nclean\r\n");
    /* trusted: no Authentication-Results, no spam verdict */
    pipeline_session_free(ps);
    ps = session_with(gtube, g1000, 1, NULL);
    buf_printf(&ps->layer[FILTER_DATA].headers, "X-Virus-Scanned: posthorn\r\n");
    h = finish(ps, true, &msg, &o);
    CHECK_INT(o.action, PIPELINE_ACCEPT);
    CHECK_STR(h, "X-Virus-Scanned: posthorn\r\n");
    /* scoring off: headers of the filters only, X-Spam-* fields untouched */
    st.enable_spamassassin = false;
    buf_reset(&msg);
    buf_printf(&msg, "X-Spam-Flag: NO\r\n\r\n");
    h = finish(ps, false, &msg, &o);
    CHECK_INT(o.action, PIPELINE_ACCEPT);
    CHECK_STR(h, "Authentication-Results: " HOST "; none\r\nX-Virus-Scanned: posthorn\r\n");
    CHECK_STR(buf_cstr(&msg), "X-Spam-Flag: NO\r\n\r\n");
    pipeline_session_free(ps);
    buf_free(&msg);
}

/* --- GTUBE ------------------------------------------------------------------------ */

TEST(test_gtube)
{
    clear_env();
    setenv("ENABLE_SPAMASSASSIN", "1", 1);
    CHECK_INT(load(), 0);
    CHECK(gtube_filter.enabled(&st));
    st.enable_spamassassin = false;
    CHECK(!gtube_filter.enabled(&st));
    CHECK(!gtube_filter.for_submission);
    struct filter_txn t;
    txn(&t);
    struct filter_result r;
    memset(&r, 0, sizeof r);
    const char *spam = "Subject: test\r\n\r\n" GTUBE "\r\n";
    t.msg = spam;
    t.len = strlen(spam);
    gtube_filter.hook[FILTER_DATA](&t, &r);
    CHECK_INT(r.verdict, FILTER_SCORE);
    CHECK(r.score == 1000.0);
    CHECK_STR(r.reason, "GTUBE");
    memset(&r, 0, sizeof r);
    t.len = strlen(spam) - 3;   /* the string cut short */
    gtube_filter.hook[FILTER_DATA](&t, &r);
    CHECK_INT(r.verdict, FILTER_ACCEPT);
}

int main(void)
{
    RUN(test_settings_defaults);
    RUN(test_settings_values);
    RUN(test_settings_invalid);
    RUN(test_dnsbl_zones);
    RUN(test_spam_action);
    RUN(test_wants);
    RUN(test_run_scores_and_refusals);
    RUN(test_format_score);
    RUN(test_spam_headers);
    RUN(test_auth_results);
    RUN(test_strip_and_subject);
    RUN(test_finish);
    RUN(test_gtube);
    settings_free(&st);
    return test_summary();
}
