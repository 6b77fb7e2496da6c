/* Unit tests for filters/bayes.c and bayes_filter.c: the tokenizer, the
 * combiner against known values, learning / relearning / forgetting counts,
 * message identity, classification after training, and the filter's
 * minimum-trained rule. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "bayes.h"
#include "buf.h"
#include "server.h"
#include "settings.h"
#include "test.h"
#include "util.h"

static char tmpdir[] = "/tmp/test_bayes.XXXXXX";
static int dbno;

static struct bayes *fresh(char *path, size_t pathlen)
{
    char err[256];
    snprintf(path, pathlen, "%s/b%d.db", tmpdir, dbno++);
    struct bayes *b = bayes_open(path, err, sizeof err);
    if (!b)
        fprintf(stderr, "bayes_open: %s\n", err);
    return b;
}

/* --- the tokenizer ----------------------------------------------------------------- */

struct toks {
    struct buf all;              /* "\n"-separated */
    long n;
};

static void keep(const char *tok, size_t len, void *arg)
{
    struct toks *t = arg;
    buf_append(&t->all, tok, len);
    buf_append(&t->all, "\n", 1);
}

static long tokenize(const char *msg, struct toks *t)
{
    memset(t, 0, sizeof *t);
    t->n = bayes_tokenize(msg, strlen(msg), NULL, keep, t);
    buf_append(&t->all, "", 1);
    return t->n;
}

static bool has_tok(const struct toks *t, const char *tok)
{
    char want[128];
    snprintf(want, sizeof want, "\n%s\n", tok);
    if (strncmp(t->all.data, want + 1, strlen(want + 1)) == 0)
        return true;
    return strstr(t->all.data, want) != NULL;
}

static const char sample[] =
    "Received: from relay.example.net by mx.example.test\r\n"
    "Return-Path: <bounce@example.net>\r\n"
    "X-Spam-Status: Yes, score=99 tests=SECRETWORD\r\n"
    "From: \"Pharmacy Deals\" <Deals@Cheap-Pills.Example.COM>\r\n"
    "To: you@example.test\r\n"
    "Subject: =?UTF-8?B?Q2hlYXAgbWVkcyE=?= now\r\n"
    "Message-ID: <abc.123@mailer.cheap-pills.example.com>\r\n"
    "X-Mailer: SuperMailer 5.0 (Build 1234)\r\n"
    "List-Id: <pills.example.com>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/alternative; boundary=\"b1\"\r\n"
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Buy VIAGRA, (cheap) pills!! Go to http://user@www.Shop.Pills.example.org/buy?x=1 or\r\n"
    "write to sales@pills.example.org. Supercalifragilisticexpialidocious =\r\n"
    "offer a b\r\n"
    "--b1\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<html><style>.hidden { color: white }</style><body><!-- invisible -->"
    "<font color=red>Limited&nbsp;time</font> <a href=\"https://click.tracker.example/r\">"
    "click</a></body></html>\r\n"
    "--b1\r\n"
    "Content-Type: application/pdf; name=\"invoice.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0xLjQK\r\n"
    "--b1--\r\n";

TEST(test_tokenizer_headers)
{
    struct toks t;
    CHECK(tokenize(sample, &t) > 20);
    /* field names, except the ones a delivery adds */
    CHECK(has_tok(&t, "hdr:list-id"));
    CHECK(has_tok(&t, "hdr:x-mailer"));
    CHECK(has_tok(&t, "hdr:received"));            /* the relays count */
    CHECK(has_tok(&t, "received:from"));
    CHECK(!has_tok(&t, "hdr:return-path"));
    CHECK(!has_tok(&t, "hdr:x-spam-status"));
    CHECK(strstr(t.all.data, "secretword") == NULL);
    CHECK(strstr(t.all.data, "relay.example.net") == NULL);
    /* decoded subject words with their prefix, punctuation kept inside */
    CHECK(has_tok(&t, "subject:cheap"));
    CHECK(has_tok(&t, "subject:meds!"));
    CHECK(has_tok(&t, "subject:now"));
    /* addresses: the domain and, in headers, the whole address, lowercased */
    CHECK(has_tok(&t, "from:email:cheap-pills.example.com"));
    CHECK(has_tok(&t, "from:deals@cheap-pills.example.com"));
    CHECK(has_tok(&t, "from:pharmacy"));
    CHECK(has_tok(&t, "to:email:example.test"));
    CHECK(has_tok(&t, "xm:supermailer 5.0 (build 1234)"));
    CHECK(has_tok(&t, "mid:mailer.cheap-pills.example.com"));
    buf_free(&t.all);
}

TEST(test_tokenizer_body)
{
    struct toks t;
    tokenize(sample, &t);
    /* plain text: lowercased, outer punctuation trimmed, '!' kept */
    CHECK(has_tok(&t, "buy"));
    CHECK(has_tok(&t, "viagra"));
    CHECK(has_tok(&t, "cheap"));
    CHECK(has_tok(&t, "pills!!"));
    CHECK(has_tok(&t, "offer"));
    CHECK(!has_tok(&t, "a"));                       /* too short */
    /* soft line break joined the long word: one skip token */
    CHECK(has_tok(&t, "skip:s 30"));
    /* URLs: host without user info, and its last two labels */
    CHECK(has_tok(&t, "url:www.shop.pills.example.org"));
    CHECK(has_tok(&t, "url:example.org"));
    CHECK(has_tok(&t, "email:pills.example.org"));
    /* HTML: the URLs of tags are tokens, not the tags; style and comments go */
    CHECK(!has_tok(&t, "tag:font"));
    CHECK(!has_tok(&t, "font"));
    CHECK(has_tok(&t, "url:click.tracker.example"));
    CHECK(has_tok(&t, "limited"));
    CHECK(has_tok(&t, "time"));
    CHECK(!has_tok(&t, "hidden"));
    CHECK(!has_tok(&t, "invisible"));
    /* parts */
    CHECK(has_tok(&t, "ct:text/html"));
    CHECK(has_tok(&t, "ct:application/pdf"));
    CHECK(has_tok(&t, "charset:utf-8"));
    CHECK(has_tok(&t, "cte:quoted-printable"));
    CHECK(has_tok(&t, "fname:pdf"));
    CHECK(!has_tok(&t, "jvberi0xljqk"));            /* the attachment is not text */
    buf_free(&t.all);
}

TEST(test_tokenizer_limit)
{
    struct buf m = BUF_INIT;
    buf_printf(&m, "Subject: many\r\n\r\n");
    for (int i = 0; i < 8000; i++)
        buf_printf(&m, "word%d ", i);
    buf_cstr(&m);
    struct toks t;
    CHECK_INT(tokenize(m.data, &t), BAYES_MAX_TOKENS);
    CHECK(has_tok(&t, "word0"));
    CHECK(!has_tok(&t, "word7000"));
    buf_free(&t.all);
    struct bayes_tokens set;
    CHECK_INT(bayes_tokens_get(m.data, m.len, NULL, &set), 0);
    CHECK(set.n <= BAYES_MAX_TOKENS && set.n > 4000);
    for (size_t i = 1; i < set.n; i++)
        CHECK(set.h[i - 1] < set.h[i]);
    bayes_tokens_free(&set);
    buf_free(&m);
}

TEST(test_tokens_distinct)
{
    const char *msg = "Subject: x\r\n\r\nhello hello hello world world\r\n";
    struct bayes_tokens set;
    CHECK_INT(bayes_tokens_get(msg, strlen(msg), NULL, &set), 0);
    /* hdr:subject, ct:text/plain, hello, world */
    CHECK_INT(set.n, 4);
    bayes_tokens_free(&set);
    CHECK(bayes_hash("hello", 5) != bayes_hash("hellO", 5));
    CHECK(bayes_hash("", 0) == 14695981039346656037ULL);
}

/* --- combining ----------------------------------------------------------------------- */

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

TEST(test_token_prob)
{
    CHECK(near(bayes_token_prob(0, 0, 10, 10), 0.5));
    /* in every spam, no ham: (0.5 + 10 * 1) / 11 */
    CHECK(near(bayes_token_prob(10, 0, 10, 10), 10.5 / 11));
    CHECK(near(bayes_token_prob(0, 10, 10, 10), 0.5 / 11));
    /* 3 of 10 spam, 1 of 10 ham: p = 0.75, n = 4 -> (0.5 + 3) / 5 */
    CHECK(near(bayes_token_prob(3, 1, 10, 10), 0.7));
    /* ratios, not counts: 1 of 100 spam against 1 of 10 ham */
    CHECK(near(bayes_token_prob(1, 1, 100, 10), (0.5 + 2 * (0.01 / 0.11)) / 3));
    CHECK(near(bayes_token_prob(5, 0, 0, 0), 0.5));
}

TEST(test_chi2_combine)
{
    CHECK(near(bayes_chi2q(2.0, 2), 0.36787944117144233));
    CHECK(near(bayes_chi2q(10.0, 6), 0.12465201948308113));
    CHECK(near(bayes_chi2q(0.0, 4), 1.0));
    CHECK(near(bayes_combine(NULL, 0), 0.5));
    double f1[] = { 0.99, 0.99 };
    CHECK(near(bayes_combine(f1, 2), 0.999389817151418));
    double f2[] = { 0.01, 0.01 };
    CHECK(near(bayes_combine(f2, 2), 0.0006101828485820526));
    double f3[] = { 0.99, 0.01 };
    CHECK(near(bayes_combine(f3, 2), 0.5));
    double f4[] = { 0.8, 0.9, 0.95, 0.3 };
    CHECK(near(bayes_combine(f4, 4), 0.9272135595358839));
    /* many strong clues do not underflow */
    double f5[150];
    for (int i = 0; i < 150; i++)
        f5[i] = 0.999;
    CHECK(bayes_combine(f5, 150) > 0.999999);
}

TEST(test_select)
{
    double f[] = { 0.5, 0.55, 0.61, 0.2, 0.99, 0.4, 0.01, 0.599 };
    size_t k = bayes_select(f, sizeof f / sizeof *f);
    CHECK_INT(k, 4);             /* 0.61, 0.2, 0.99, 0.01 */
    CHECK(near(fabs(f[0] - 0.5), 0.49));
    CHECK(near(fabs(f[1] - 0.5), 0.49));
    CHECK(near(f[2], 0.2));
    CHECK(near(f[3], 0.61));
    double many[400];
    for (int i = 0; i < 400; i++)
        many[i] = i % 2 ? 0.9 : 0.05;
    CHECK_INT(bayes_select(many, 400), BAYES_MAX_CLUES);
    for (int i = 0; i < BAYES_MAX_CLUES; i++)
        CHECK(near(many[i], 0.05));      /* the strongest first */
}

TEST(test_bands)
{
    CHECK_STR(bayes_band_of(0.0)->name, "BAYES_00");
    CHECK_STR(bayes_band_of(0.0099)->name, "BAYES_00");
    CHECK_STR(bayes_band_of(0.01)->name, "BAYES_05");
    CHECK_STR(bayes_band_of(0.5)->name, "BAYES_50");
    CHECK_STR(bayes_band_of(0.96)->name, "BAYES_95");
    CHECK_STR(bayes_band_of(0.995)->name, "BAYES_99");
    CHECK_STR(bayes_band_of(0.9995)->name, "BAYES_999");
    CHECK_STR(bayes_band_of(1.0)->name, "BAYES_999");
    CHECK(bayes_band_of(0.0)->score < 0);
    CHECK(bayes_band_of(1.0)->score >= 6.31);    /* spam at the default SA_TAG2 */
    CHECK(bayes_band_of(0.995)->score < 6.31);
}

/* --- the store ------------------------------------------------------------------------ */

static long long count(const char *path, const char *sql)
{
    sqlite3 *db;
    long long n = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

static const char msg_a[] =
    "Message-ID: <a1@example.org>\r\nSubject: win money\r\n\r\nwin lots of money today\r\n";

TEST(test_learn_relearn_forget)
{
    char path[256];
    struct bayes *b = fresh(path, sizeof path);
    CHECK(b != NULL);
    if (!b)
        return;
    size_t len = strlen(msg_a);
    struct bayes_totals tot;
    CHECK_INT(bayes_learned_class(b, msg_a, len), -1);
    CHECK_INT(bayes_learn(b, msg_a, len, NULL, BAYES_SPAM, 1000), BAYES_LEARNED);
    CHECK_INT(bayes_learned_class(b, msg_a, len), BAYES_SPAM);
    /* the same message again: not counted twice */
    CHECK_INT(bayes_learn(b, msg_a, len, NULL, BAYES_SPAM, 1001), BAYES_ALREADY);
    CHECK_INT(bayes_totals_full(b, &tot), 0);
    CHECK_INT(tot.spam, 1);
    CHECK_INT(tot.ham, 0);
    struct bayes_tokens set;
    CHECK_INT(bayes_tokens_get(msg_a, len, NULL, &set), 0);
    CHECK_INT(tot.tokens, set.n);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT spam * 10 + ham FROM tokens WHERE h = %lld",
             (long long)bayes_hash("money", 5));
    CHECK_INT(count(path, sql), 10);
    CHECK_INT(count(path, "SELECT sum(spam) FROM tokens"), (long long)set.n);
    CHECK_INT(count(path, "SELECT max(seen) FROM tokens"), 1000);
    /* relearned as ham: the counts move */
    CHECK_INT(bayes_learn(b, msg_a, len, NULL, BAYES_HAM, 2000), BAYES_RELEARNED);
    CHECK_INT(bayes_totals(b, &tot), 0);
    CHECK_INT(tot.spam, 0);
    CHECK_INT(tot.ham, 1);
    CHECK_INT(count(path, sql), 1);
    CHECK_INT(count(path, "SELECT sum(spam) FROM tokens"), 0);
    CHECK_INT(count(path, "SELECT sum(ham) FROM tokens"), (long long)set.n);
    CHECK_INT(bayes_learned_class(b, msg_a, len), BAYES_HAM);
    /* a second message shares tokens */
    const char *msg_b = "Message-ID: <b2@example.org>\r\n\r\nmoney for nothing\r\n";
    CHECK_INT(bayes_learn(b, msg_b, strlen(msg_b), NULL, BAYES_SPAM, 3000), BAYES_LEARNED);
    CHECK_INT(count(path, sql), 11);
    /* forgetting removes its counts, and rows that drop to zero */
    CHECK_INT(bayes_forget(b, msg_a, len), 1);
    CHECK_INT(bayes_forget(b, msg_a, len), 0);
    CHECK_INT(count(path, sql), 10);
    CHECK_INT(count(path, "SELECT count(*) FROM tokens WHERE spam = 0 AND ham = 0"), 0);
    CHECK_INT(count(path, "SELECT sum(ham) FROM tokens"), 0);
    CHECK_INT(bayes_totals(b, &tot), 0);
    CHECK_INT(tot.spam, 1);
    CHECK_INT(tot.ham, 0);
    bayes_tokens_free(&set);
    bayes_close(b);
}

TEST(test_message_identity)
{
    /* The same message stored later: LF line ends, delivery headers on
     * top. Same digest, same tokens. */
    const char *orig = "Message-ID: <id@example.org>\r\nSubject: hello there\r\n\r\n"
                       "line one\r\nline two\r\n";
    const char *stored = "Return-Path: <x@example.org>\r\n"
                         "X-Spam-Flag: YES\r\nMessage-ID:  <id@example.org>\n"
                         "Subject: hello there\n\nline one\nline two\n";
    const char *other = "Message-ID: <id@example.org>\r\nSubject: hello there\r\n\r\n"
                        "line one\r\nline three\r\n";
    const char *noid = "Subject: hello there\r\n\r\nline one\r\nline two\r\n";
    unsigned char d1[BAYES_DIGEST_LEN], d2[BAYES_DIGEST_LEN], d3[BAYES_DIGEST_LEN],
                  d4[BAYES_DIGEST_LEN];
    struct mime_part *m1 = mime_parse(orig, strlen(orig)), *m2 = mime_parse(stored, strlen(stored)),
                     *m3 = mime_parse(other, strlen(other)), *m4 = mime_parse(noid, strlen(noid));
    bayes_digest(orig, strlen(orig), m1, d1);
    bayes_digest(stored, strlen(stored), m2, d2);
    bayes_digest(other, strlen(other), m3, d3);
    bayes_digest(noid, strlen(noid), m4, d4);
    CHECK(memcmp(d1, d2, sizeof d1) == 0);
    CHECK(memcmp(d1, d3, sizeof d1) != 0);
    CHECK(memcmp(d1, d4, sizeof d1) != 0);
    struct bayes_tokens t1, t2;
    CHECK_INT(bayes_tokens_get(orig, strlen(orig), m1, &t1), 0);
    CHECK_INT(bayes_tokens_get(stored, strlen(stored), m2, &t2), 0);
    CHECK_INT(t1.n, t2.n);
    CHECK(t1.n == t2.n && memcmp(t1.h, t2.h, t1.n * sizeof *t1.h) == 0);
    bayes_tokens_free(&t1);
    bayes_tokens_free(&t2);
    mime_free(m1);
    mime_free(m2);
    mime_free(m3);
    mime_free(m4);
}

static const char *spam_words[] = { "viagra", "winner", "casino", "lottery", "unsubscribe",
                                    "cheap", "offer", "click" };
static const char *ham_words[] = { "meeting", "agenda", "patch", "review", "thanks",
                                   "lunch", "minutes", "branch" };

static void make_msg(struct buf *m, int i, bool spam)
{
    const char **w = spam ? spam_words : ham_words;
    buf_reset(m);
    buf_printf(m, "Message-ID: <%s%d@example.org>\r\nSubject: %s %s\r\n\r\n", spam ? "s" : "h",
               i, w[i % 8], w[(i + 3) % 8]);
    for (int k = 0; k < 6; k++)
        buf_printf(m, "%s ", w[(i + k) % 8]);
    buf_printf(m, "common words here number%d\r\n", i);
}

static void train(struct bayes *b, int n)
{
    struct buf m = BUF_INIT;
    for (int i = 0; i < n; i++) {
        make_msg(&m, i, true);
        bayes_learn(b, m.data, m.len, NULL, BAYES_SPAM, 1);
        make_msg(&m, i, false);
        bayes_learn(b, m.data, m.len, NULL, BAYES_HAM, 1);
    }
    buf_free(&m);
}

TEST(test_classify)
{
    char path[256];
    struct bayes *b = fresh(path, sizeof path);
    if (!b)
        return;
    struct bayes_score sc;
    const char *spam = "Subject: cheap casino offer\r\n\r\nwinner lottery click viagra now\r\n";
    const char *ham = "Subject: meeting agenda\r\n\r\nthanks for the review of the patch\r\n";
    /* untrained: unsure */
    CHECK_INT(bayes_classify(b, spam, strlen(spam), NULL, &sc), 0);
    CHECK(near(sc.prob, 0.5));
    CHECK_INT(sc.nclues, 0);
    train(b, 20);
    CHECK_INT(bayes_classify(b, spam, strlen(spam), NULL, &sc), 0);
    CHECK(sc.prob > 0.99);
    CHECK(sc.nclues >= 5);
    CHECK_INT(bayes_classify(b, ham, strlen(ham), NULL, &sc), 0);
    CHECK(sc.prob < 0.01);
    bayes_close(b);
}

/* --- the filter's minimum ----------------------------------------------------------------- */

TEST(test_filter_min_learned)
{
    char state[256];
    snprintf(state, sizeof state, "%s/state", tmpdir);
    CHECK_INT(mkdir_p(state, 0700), 0);
    struct settings st;
    char err[256];
    if (settings_load(NULL, &st, err, sizeof err) < 0) {
        CHECK(!"settings_load");
        return;
    }
    free(st.state_dir);
    st.state_dir = strdup(state);
    st.enable_spamassassin = true;
    struct server srv = { .settings = &st };
    CHECK(bayes_filter.enabled(&st));
    CHECK(bayes_filter.hook[FILTER_DATA] != NULL);

    const char *spam = "Subject: cheap casino offer\r\n\r\nwinner lottery click viagra now\r\n";
    struct filter_txn t = { .srv = &srv, .id = "T1", .msg = spam, .len = strlen(spam) };
    struct filter_result r;

    st.bayes_min_learned = 0;          /* a zeroed struct: the default */
    CHECK_INT(bayes_min_learned(&st), BAYES_MIN_LEARNED_DEFAULT);
    st.bayes_min_learned = 10;
    CHECK_INT(bayes_min_learned(&st), 10);

    struct bayes *b = bayes_shared(&st);
    CHECK(b != NULL);
    if (!b)
        goto out;
    train(b, 9);                 /* 9 of each: one short */
    memset(&r, 0, sizeof r);
    t.mime = mime_parse(spam, strlen(spam));
    bayes_filter.hook[FILTER_DATA](&t, &r);
    CHECK_INT(r.verdict, FILTER_ACCEPT);

    struct buf m = BUF_INIT;
    make_msg(&m, 100, true);
    bayes_learn(b, m.data, m.len, NULL, BAYES_SPAM, 1);
    bayes_filter.hook[FILTER_DATA](&t, &r);
    CHECK_INT(r.verdict, FILTER_ACCEPT);    /* 10 spam, still 9 ham */
    make_msg(&m, 100, false);
    bayes_learn(b, m.data, m.len, NULL, BAYES_HAM, 1);
    bayes_filter.hook[FILTER_DATA](&t, &r);
    CHECK_INT(r.verdict, FILTER_SCORE);
    CHECK(strncmp(r.reason, "BAYES_99", 8) == 0);     /* BAYES_99 or BAYES_999 */
    CHECK(r.score >= 5.0);
    buf_free(&m);
    mime_free((struct mime_part *)t.mime);
out:
    bayes_filter.stop();
    settings_free(&st);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_tokenizer_headers);
    RUN(test_tokenizer_body);
    RUN(test_tokenizer_limit);
    RUN(test_tokens_distinct);
    RUN(test_token_prob);
    RUN(test_chi2_combine);
    RUN(test_select);
    RUN(test_bands);
    RUN(test_learn_relearn_forget);
    RUN(test_message_identity);
    RUN(test_classify);
    RUN(test_filter_min_learned);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    return test_summary();
}
