/* Unit tests of DSN generation: the output is parsed back. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsn.h"
#include "test.h"

static const char ORIG[] = "From: alice@example.org\r\nTo: bob@example.net\r\n"
                           "Subject: caf\xc3\xa9\r\n\r\nBody line \xc3\xa9t\xc3\xa9\r\nsecret body\r\n";

static const struct dsn_info INFO = {
    .hostname = "mx.example.org", .from = "MAILER-DAEMON@mx.example.org",
    .to = "alice@example.org", .envid = "QQ314159", .queue_id = "0123456789abcdef",
    .arrival = 1700000000,
};

static bool contains(const struct buf *b, const char *s)
{
    return memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* Every LF is preceded by CR and every CR followed by LF. */
static bool crlf_only(const struct buf *b)
{
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] == '\n' && (i == 0 || b->data[i - 1] != '\r'))
            return false;
        if (b->data[i] == '\r' && (i + 1 >= b->len || b->data[i + 1] != '\n'))
            return false;
    }
    return true;
}

/* Extracts the boundary parameter of the top-level Content-Type. */
static bool boundary_of(const struct buf *b, char *out, size_t outlen)
{
    const char *p = memmem(b->data, b->len, "boundary=\"", 10);
    if (!p)
        return false;
    p += 10;
    const char *q = memchr(p, '"', b->len - (size_t)(p - b->data));
    if (!q || (size_t)(q - p) >= outlen)
        return false;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = '\0';
    return true;
}

/* Splits the body into parts at "\r\n--boundary"; returns the number of
 * parts before the closing delimiter (or -1 when it is missing). Part i
 * starts at starts[i] (after the delimiter line) with length lens[i]. */
static int split_parts(const struct buf *b, const char *boundary, const char **starts,
                       size_t *lens, int max)
{
    char delim[128];
    snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    size_t dl = strlen(delim);
    const char *end = b->data + b->len;
    const char *p = memmem(b->data, b->len, delim, dl);
    int n = 0;
    while (p) {
        const char *after = p + dl;
        if (end - after >= 2 && memcmp(after, "--", 2) == 0)
            return strcmp(after, "--\r\n") == 0 || (end - after == 4) ? n : -1;
        if (end - after < 2 || memcmp(after, "\r\n", 2) != 0 || n >= max)
            return -1;
        starts[n] = after + 2;
        const char *next = memmem(starts[n], (size_t)(end - starts[n]), delim, dl);
        lens[n] = next ? (size_t)(next - starts[n]) : 0;
        n++;
        p = next;
    }
    return -1;
}

static bool part_has(const char *start, size_t len, const char *s)
{
    return memmem(start, len, s, strlen(s)) != NULL;
}

TEST(failure_report_structure)
{
    struct dsn_rcpt r[2] = {
        { .address = "bob@example.net", .orcpt = "rfc822;Bob+2Bdsn@example.net",
          .action = DSN_FAILED, .status = "5.1.1", .remote = "mx.example.net[192.0.2.7]",
          .diagnostic = "550 5.1.1 <bob@example.net>: user unknown" },
        { .address = "carol@example.com", .action = DSN_FAILED, .status = "4.4.7",
          .diagnostic = "delivery time expired\r\nInjected: yes" },
    };
    struct buf b = BUF_INIT;
    CHECK_INT(dsn_build(&INFO, r, 2, ORIG, sizeof ORIG - 1, &b), 0);
    CHECK(crlf_only(&b));
    CHECK(contains(&b, "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"));
    CHECK(contains(&b, "To: <alice@example.org>\r\n"));
    CHECK(contains(&b, "Subject: Undelivered Mail Returned to Sender\r\n"));
    CHECK(contains(&b, "Auto-Submitted: auto-replied\r\n"));
    CHECK(contains(&b, "MIME-Version: 1.0\r\n"));
    CHECK(contains(&b, "\r\nDate: "));
    CHECK(contains(&b, "\r\nMessage-ID: <"));
    CHECK(contains(&b, "Content-Type: multipart/report; report-type=delivery-status;"));
    CHECK(!contains(&b, "\r\nInjected: yes"));

    char boundary[100];
    CHECK(boundary_of(&b, boundary, sizeof boundary));
    const char *st[4];
    size_t len[4];
    int n = split_parts(&b, boundary, st, len, 4);
    CHECK_INT(n, 3);
    if (n == 3) {
        CHECK(part_has(st[0], len[0], "Content-Type: text/plain"));
        CHECK(part_has(st[0], len[0], "550 5.1.1 <bob@example.net>: user unknown"));
        CHECK(part_has(st[1], len[1], "Content-Type: message/delivery-status\r\n\r\n"));
        CHECK(part_has(st[1], len[1], "Reporting-MTA: dns; mx.example.org\r\n"));
        CHECK(part_has(st[1], len[1], "Original-Envelope-Id: QQ314159\r\n"));
        CHECK(part_has(st[1], len[1], "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        CHECK(part_has(st[1], len[1], "\r\n\r\nOriginal-Recipient: rfc822;Bob+dsn@example.net\r\n"
                                      "Final-Recipient: rfc822; bob@example.net\r\n"
                                      "Action: failed\r\nStatus: 5.1.1\r\n"
                                      "Remote-MTA: dns; mx.example.net\r\n"
                                      "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: user unknown\r\n"));
        CHECK(part_has(st[1], len[1], "\r\n\r\nFinal-Recipient: rfc822; carol@example.com\r\n"
                                      "Action: failed\r\nStatus: 4.4.7\r\n"
                                      "Diagnostic-Code: smtp; delivery time expired  Injected: yes\r\n"));
        /* The original, 8-bit bytes intact, exactly. */
        CHECK(part_has(st[2], len[2], "Content-Type: message/rfc822\r\n"));
        CHECK(part_has(st[2], len[2], "Content-Transfer-Encoding: 8bit\r\n"));
        const char *o = memmem(st[2], len[2], "\r\n\r\n", 4);
        CHECK(o != NULL);
        if (o) {
            o += 4;
            size_t olen = len[2] - (size_t)(o - st[2]);
            /* The CRLF before the delimiter belongs to the delimiter, so
             * the part's content is the original, final CRLF included. */
            CHECK_INT(olen, sizeof ORIG - 1);
            CHECK(olen == sizeof ORIG - 1 && memcmp(o, ORIG, olen) == 0);
        }
    }
    buf_free(&b);
}

TEST(headers_only_with_ret_hdrs)
{
    struct dsn_rcpt r = { .address = "bob@example.net", .action = DSN_FAILED, .status = "5.0.0",
                          .diagnostic = "550 no" };
    struct dsn_info info = INFO;
    info.ret_hdrs_only = 1;
    info.envid = NULL;
    struct buf b = BUF_INIT;
    CHECK_INT(dsn_build(&info, &r, 1, ORIG, sizeof ORIG - 1, &b), 0);
    CHECK(crlf_only(&b));
    CHECK(contains(&b, "Content-Type: text/rfc822-headers\r\n"));
    CHECK(!contains(&b, "message/rfc822"));
    CHECK(contains(&b, "Subject: caf\xc3\xa9\r\n"));
    CHECK(!contains(&b, "secret body"));
    CHECK(!contains(&b, "Original-Envelope-Id"));
    CHECK(!contains(&b, "Original-Recipient"));
    CHECK(contains(&b, "Only its headers are attached below."));
    CHECK(!contains(&b, "The message is attached below."));
    buf_free(&b);
}

TEST(large_original_returns_headers)
{
    size_t big = 1024 * 1024 + 100;
    char *m = malloc(big);
    CHECK(m != NULL);
    if (!m)
        return;
    const char hdr[] = "Subject: big\r\n\r\n";
    memcpy(m, hdr, sizeof hdr - 1);
    for (size_t i = sizeof hdr - 1; i < big; i++)
        m[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : 'x';
    struct dsn_rcpt r = { .address = "bob@example.net", .action = DSN_FAILED, .status = "5.3.4",
                          .diagnostic = "552 too big" };
    struct buf b = BUF_INIT;
    CHECK_INT(dsn_build(&INFO, &r, 1, m, big, &b), 0);
    CHECK(contains(&b, "text/rfc822-headers"));
    CHECK(contains(&b, "Subject: big\r\n"));
    CHECK(b.len < 10000);
    CHECK(contains(&b, "Only its headers are attached below."));
    CHECK(!contains(&b, "The message is attached below."));
    buf_free(&b);
    free(m);
}

TEST(delay_report)
{
    struct dsn_rcpt r = { .address = "bob@example.net", .action = DSN_DELAYED, .status = "4.4.1",
                          .remote = "mx.example.net", .diagnostic = "421 try later" };
    struct buf b = BUF_INIT;
    CHECK_INT(dsn_build(&INFO, &r, 1, ORIG, sizeof ORIG - 1, &b), 0);
    CHECK(contains(&b, "Subject: Delayed Mail (still being retried)\r\n"));
    CHECK(contains(&b, "Action: delayed\r\nStatus: 4.4.1\r\n"));
    CHECK(contains(&b, "Remote-MTA: dns; mx.example.net\r\n"));
    buf_free(&b);
}

TEST(full_return_says_attached)
{
    struct dsn_rcpt r = { .address = "bob@example.net", .action = DSN_FAILED, .status = "5.0.0",
                          .diagnostic = "550 no" };
    struct buf b = BUF_INIT;
    CHECK_INT(dsn_build(&INFO, &r, 1, ORIG, sizeof ORIG - 1, &b), 0);
    CHECK(contains(&b, "The message is attached below."));
    CHECK(!contains(&b, "Only its headers"));
    buf_reset(&b);
    /* Nothing to return: no claim of an attachment. */
    CHECK_INT(dsn_build(&INFO, &r, 1, NULL, 0, &b), 0);
    CHECK(!contains(&b, "attached below"));
    buf_free(&b);
}

TEST(relayed_report)
{
    struct dsn_rcpt r = { .address = "bob@example.net", .action = DSN_DELIVERED,
                          .status = "2.0.0", .remote = "mx.example.net[192.0.2.1]",
                          .diagnostic = "250 2.0.0 queued" };
    struct dsn_info info = INFO;
    info.ret_hdrs_only = 1;
    struct buf b = BUF_INIT;
    CHECK_INT(dsn_build(&info, &r, 1, ORIG, sizeof ORIG - 1, &b), 0);
    CHECK(contains(&b, "Subject: Successful Mail Delivery Report\r\n"));
    CHECK(contains(&b, "Action: relayed\r\nStatus: 2.0.0\r\n"));
    CHECK(contains(&b, "was relayed"));
    CHECK(!contains(&b, "could not be delivered"));
    CHECK(!contains(&b, "not been delivered yet"));
    CHECK(!contains(&b, "secret body"));
    buf_free(&b);
}

TEST(boundaries_differ)
{
    struct dsn_rcpt r = { .address = "b@example.net", .action = DSN_FAILED, .status = "5.0.0",
                          .diagnostic = "550 x" };
    struct buf a = BUF_INIT, b = BUF_INIT;
    char ba[100] = "", bb[100] = "";
    CHECK_INT(dsn_build(&INFO, &r, 1, ORIG, sizeof ORIG - 1, &a), 0);
    CHECK_INT(dsn_build(&INFO, &r, 1, ORIG, sizeof ORIG - 1, &b), 0);
    CHECK(boundary_of(&a, ba, sizeof ba) && boundary_of(&b, bb, sizeof bb));
    CHECK(strcmp(ba, bb) != 0);
    CHECK(!memmem(ORIG, sizeof ORIG - 1, ba, strlen(ba)));
    CHECK_INT(dsn_build(&INFO, &r, 0, ORIG, sizeof ORIG - 1, &a), -1);
    buf_free(&a);
    buf_free(&b);
}

int main(void)
{
    RUN(failure_report_structure);
    RUN(headers_only_with_ret_hdrs);
    RUN(large_original_returns_headers);
    RUN(delay_report);
    RUN(full_return_says_attached);
    RUN(relayed_report);
    RUN(boundaries_differ);
    return test_summary();
}
