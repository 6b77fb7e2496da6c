/* Unit tests for core/imap_search.c: every SEARCH key on parsed programs,
 * NOT/OR nesting, sets with "*", decoded header and body matching, dates,
 * and the case-insensitive matcher. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imap_parse.h"
#include "imap_search.h"
#include "mime.h"
#include "test.h"

static unsigned char arena_mem[IMAP_ARENA_DEFAULT];
static char cmdbuf[4096];

/* A message as the index has it; text may be NULL. */
static struct imap_search_msg msg_of(const char *text)
{
    struct imap_search_msg m;
    memset(&m, 0, sizeof m);
    m.seq = 3;
    m.uid = 15;
    m.size = 100;
    m.internaldate = 1612251000;          /* 2021-02-02 07:30:00 UTC */
    m.msg = text;
    m.len = text ? strlen(text) : 0;
    return m;
}

/* Parses and prepares keys for a mailbox of `count` messages (highest UID
 * max_uid), then matches m. -2 when parsing or preparing fails. */
static int match_in(const char *keys, const struct imap_search_msg *m, uint32_t count,
                    uint32_t max_uid)
{
    struct imap_arena arena;
    struct imap_command cmd;
    struct imap_search *root;
    enum imap_charset cs;
    const char *err = NULL;
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    int n = snprintf(cmdbuf, sizeof cmdbuf, "t SEARCH %s", keys);
    struct imap_search_ctx ctx = { count, max_uid, &arena };
    if (imap_parse_command(cmdbuf, (size_t)n, &cmd, &arena, &err) < 0 ||
        imap_parse_search(cmd.args, &cs, &root, &arena, &err) < 0 ||
        imap_search_prepare(root, &ctx, &err) < 0) {
        fprintf(stderr, "search %s: %s\n", keys, err);
        return -2;
    }
    return imap_search_match(root, m);
}

static int match(const char *keys, const struct imap_search_msg *m)
{
    return match_in(keys, m, 5, 20);
}

static bool needs(const char *keys)
{
    struct imap_arena arena;
    struct imap_command cmd;
    struct imap_search *root = NULL;
    enum imap_charset cs;
    const char *err;
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    int n = snprintf(cmdbuf, sizeof cmdbuf, "t SEARCH %s", keys);
    if (imap_parse_command(cmdbuf, (size_t)n, &cmd, &arena, &err) < 0 ||
        imap_parse_search(cmd.args, &cs, &root, &arena, &err) < 0)
        return false;
    return imap_search_needs_message(root);
}

static bool contains(const char *hay, const char *needle)
{
    return imap_search_text_contains(hay, strlen(hay), needle, strlen(needle));
}

TEST(text_contains_folding)
{
    CHECK(contains("Hello World", "WORLD"));
    CHECK(contains("Hello World", ""));
    CHECK(!contains("Hello", "hello!"));
    CHECK(!contains("", "a"));
    /* Latin-1 and Latin Extended-A. */
    CHECK(contains("J\xC3\xB6ns", "J\xC3\x96NS"));               /* jöns / JÖNS */
    CHECK(contains("\xC5\x81\xC3\x93" "D\xC5\xB9", "\xC5\x82\xC3\xB3" "d\xC5\xBA")); /* ŁÓDŹ */
    CHECK(contains("\xC5\xB8", "\xC3\xBF"));                      /* Ÿ / ÿ */
    CHECK(!contains("\xC3\x97", "\xC3\xB7"));                     /* × is not ÷ */
    CHECK(contains("\xC4\xB0stanbul", "ISTANBUL"));                /* İ folds to i */
    /* Greek, final sigma included. */
    /* ΣΊΣΥΦΟΣ / σίσυφος */
    CHECK(contains("\xCE\xA3\xCE\x8A\xCE\xA3\xCE\xA5\xCE\xA6\xCE\x9F\xCE\xA3",
                   "\xCF\x83\xCE\xAF\xCF\x83\xCF\x85\xCF\x86\xCE\xBF\xCF\x82"));
    /* Cyrillic, including Ё. */
    /* ПРИВЕТ / привет */
    CHECK(contains("\xD0\x9F\xD0\xA0\xD0\x98\xD0\x92\xD0\x95\xD0\xA2",
                   "\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82"));
    CHECK(contains("\xD0\x81\xD0\xBB\xD0\xBA\xD0\xB0", "\xD1\x91\xD0\xbb\xD0\xBA\xD0\xB0"));
    CHECK(!contains("\xD0\x9F", "\xD0\xBE"));
    /* Invalid octets compare as themselves, never with a character. */
    CHECK(contains("a\xFF" "b", "\xFF" "B"));
    CHECK(!contains("a\xFF" "b", "\xFE"));
    CHECK(!contains("\xC3\xA9", "\xA9"));
    CHECK(contains("x\xC3", "\xC3"));
    /* KMP restarts. */
    CHECK(contains("aaab", "AAB"));
    CHECK(contains("abababc", "ababc"));
    CHECK(!contains("abababd", "ababc"));
    /* A needle longer than the stack tables. */
    char hay[1200], needle[400];
    memset(hay, 'a', sizeof hay);
    memcpy(hay + 900, "Z", 1);
    hay[sizeof hay - 1] = '\0';
    memset(needle, 'A', sizeof needle);
    needle[sizeof needle - 2] = 'z';
    needle[sizeof needle - 1] = '\0';
    CHECK(contains(hay, needle));
    needle[sizeof needle - 2] = 'y';
    CHECK(!contains(hay, needle));
}

static const char *latin_from =
    "From: =?ISO-8859-1?Q?J=F6ns?= <jons@example.org>\r\n"
    "To: a@example.org\r\n"
    "To: second@example.net\r\n"
    "Subject: =?UTF-8?B?R3LDvMOfZQ==?= hello\r\n"
    "X-Tag: one\r\n"
    "X-Tag: two,\r\n"
    " folded\r\n"
    "X-Empty:\r\n"
    "Date: Mon, 1 Feb 2021 23:30:00 -0800\r\n"
    "\r\n"
    "plain body text\r\n";

TEST(header_keys)
{
    struct imap_search_msg m = msg_of(latin_from);
    CHECK_INT(match("FROM \"j\xC3\xB6ns\"", &m), 1);
    CHECK_INT(match("FROM \"J\xC3\x96NS\"", &m), 1);
    CHECK_INT(match("FROM example.ORG", &m), 1);
    CHECK_INT(match("FROM jane", &m), 0);
    CHECK_INT(match("SUBJECT \"GR\xC3\x9C\xC3\x9F" "E HELLO\"", &m), 1);
    /* Every occurrence of a field is looked at. */
    CHECK_INT(match("TO second", &m), 1);
    CHECK_INT(match("HEADER X-Tag two", &m), 1);
    CHECK_INT(match("HEADER x-tag \"two, folded\"", &m), 1);
    CHECK_INT(match("HEADER X-Tag three", &m), 0);
    /* An empty string matches every message that has the field. */
    CHECK_INT(match("HEADER X-Empty \"\"", &m), 1);
    CHECK_INT(match("HEADER X-None \"\"", &m), 0);
    CHECK_INT(match("CC \"\"", &m), 0);
    CHECK_INT(match("BCC x", &m), 0);
    /* The body is not a header. */
    CHECK_INT(match("HEADER Subject body", &m), 0);
}

TEST(body_and_text)
{
    struct imap_search_msg m = msg_of(latin_from);
    CHECK_INT(match("BODY \"BODY TEXT\"", &m), 1);
    CHECK_INT(match("BODY hello", &m), 0);
    CHECK_INT(match("TEXT hello", &m), 1);
    CHECK_INT(match("TEXT \"j\xC3\xB6ns\"", &m), 1);        /* decoded header */
    CHECK_INT(match("TEXT \"PLAIN BODY\"", &m), 1);
    CHECK_INT(match("TEXT nowhere", &m), 0);
    CHECK_INT(match("BODY \"\"", &m), 1);

    const char *mixed =
        "Subject: parts\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n"
        "\r\n"
        "preamble is not searched\r\n"
        "--b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "R3LDvMOfZSBhdXMgS8O2bG4=\r\n"                        /* Grüße aus Köln */
        "--b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n"
        "\r\n"
        "caf=C3=A9 au lait=\r\n"
        " continued\r\n"
        "--b\r\n"
        "Content-Type: text/plain; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "M\xFCnchen\r\n"
        "--b\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        "Subject: =?ISO-8859-1?Q?inner_J=F6ns?=\r\n"
        "\r\n"
        "inner body\r\n"
        "--b--\r\n";
    m = msg_of(mixed);
    CHECK_INT(match("BODY \"K\xC3\x96LN\"", &m), 1);                    /* base64 */
    CHECK_INT(match("BODY \"gr\xC3\xBC\xC3\x9F" "e\"", &m), 1);
    CHECK_INT(match("BODY R3LDvMOf", &m), 0);                           /* not the raw text */
    CHECK_INT(match("BODY \"CAF\xC3\x89 AU LAIT CONTINUED\"", &m), 1);  /* quoted-printable */
    CHECK_INT(match("BODY \"m\xC3\xBCnchen\"", &m), 1);                 /* latin1 converted */
    CHECK_INT(match("BODY \"M\xC3\x9CNCHEN\"", &m), 1);
    CHECK_INT(match("BODY \"inner body\"", &m), 1);
    CHECK_INT(match("BODY \"inner j\xC3\xB6ns\"", &m), 1);              /* nested header */
    CHECK_INT(match("BODY preamble", &m), 0);
    CHECK_INT(match("BODY \"lait continued m\"", &m), 0);               /* not across parts */
    CHECK_INT(match("SUBJECT inner", &m), 0);                           /* top header only */

    /* With the tree supplied by the caller. */
    struct mime_part *root = mime_parse(mixed, strlen(mixed));
    m.mime = root;
    CHECK_INT(match("BODY \"K\xC3\x96LN\"", &m), 1);
    CHECK_INT(match("SUBJECT parts", &m), 1);
    mime_free(root);

    /* Text keys without the text: an error, flags alone are fine. */
    m = msg_of(NULL);
    CHECK_INT(match("BODY x", &m), -1);
    CHECK_INT(match("SUBJECT x", &m), -1);
    CHECK_INT(match("NOT TEXT x", &m), -1);
    CHECK_INT(match("OR BODY x SEEN", &m), -1);
    CHECK_INT(match("SENTON 1-Feb-2021", &m), -1);
    CHECK_INT(match("UNSEEN LARGER 10", &m), 1);
    /* Short-circuit: a failing key after a miss is never reached. */
    CHECK_INT(match("SEEN BODY x", &m), 0);
}

TEST(flags_and_keywords)
{
    struct imap_search_msg m = msg_of(NULL);
    m.system = IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED;
    m.keywords = "$Label1 Junk";
    CHECK_INT(match("SEEN", &m), 1);
    CHECK_INT(match("UNSEEN", &m), 0);
    CHECK_INT(match("FLAGGED", &m), 1);
    CHECK_INT(match("ANSWERED", &m), 0);
    CHECK_INT(match("UNANSWERED", &m), 1);
    CHECK_INT(match("DELETED", &m), 0);
    CHECK_INT(match("UNDELETED", &m), 1);
    CHECK_INT(match("DRAFT", &m), 0);
    CHECK_INT(match("UNDRAFT", &m), 1);
    CHECK_INT(match("KEYWORD $label1", &m), 1);
    CHECK_INT(match("KEYWORD junk", &m), 1);
    CHECK_INT(match("KEYWORD Jun", &m), 0);
    CHECK_INT(match("UNKEYWORD $Label1", &m), 0);
    CHECK_INT(match("UNKEYWORD Other", &m), 1);
    CHECK_INT(match("RECENT", &m), 0);
    CHECK_INT(match("OLD", &m), 1);
    CHECK_INT(match("NEW", &m), 0);
    m.recent = true;
    CHECK_INT(match("RECENT", &m), 1);
    CHECK_INT(match("OLD", &m), 0);
    CHECK_INT(match("NEW", &m), 0);                /* recent but seen */
    m.system = 0;
    CHECK_INT(match("NEW", &m), 1);
    m.keywords = NULL;
    CHECK_INT(match("KEYWORD $Label1", &m), 0);
    CHECK_INT(match("UNKEYWORD $Label1", &m), 1);
    CHECK_INT(match("ALL", &m), 1);
}

TEST(sizes)
{
    struct imap_search_msg m = msg_of(NULL);
    CHECK_INT(match("LARGER 99", &m), 1);
    CHECK_INT(match("LARGER 100", &m), 0);
    CHECK_INT(match("SMALLER 101", &m), 1);
    CHECK_INT(match("SMALLER 100", &m), 0);
    CHECK_INT(match("LARGER 50 SMALLER 150", &m), 1);
}

TEST(sets)
{
    struct imap_search_msg m = msg_of(NULL);          /* seq 3, uid 15 */
    CHECK_INT(match("1:*", &m), 1);
    CHECK_INT(match("*", &m), 0);
    CHECK_INT(match_in("*", &m, 3, 20), 1);
    CHECK_INT(match("2,4", &m), 0);
    CHECK_INT(match("2,3", &m), 1);
    CHECK_INT(match("5:2", &m), 1);
    CHECK_INT(match("UID 10:*", &m), 1);
    CHECK_INT(match("UID 16:*", &m), 0);
    CHECK_INT(match("UID *", &m), 0);
    CHECK_INT(match_in("UID *", &m, 5, 15), 1);
    /* n:* with n above the highest UID still means the highest. */
    CHECK_INT(match_in("UID 30:*", &m, 5, 15), 1);
    CHECK_INT(match("UID 1:14,16:100", &m), 0);
    /* "*" alone in an empty mailbox matches nothing. */
    CHECK_INT(match_in("*", &m, 0, 0), 0);
    CHECK_INT(match_in("UID *", &m, 0, 0), 0);
    CHECK_INT(match_in("NOT *", &m, 0, 0), 1);
}

TEST(not_or_nesting)
{
    struct imap_search_msg m = msg_of(NULL);
    m.system = IMAP_FLAG_SEEN;
    CHECK_INT(match("NOT SEEN", &m), 0);
    CHECK_INT(match("NOT NOT SEEN", &m), 1);
    CHECK_INT(match("OR FLAGGED SEEN", &m), 1);
    CHECK_INT(match("OR FLAGGED DELETED", &m), 0);
    CHECK_INT(match("NOT OR FLAGGED DELETED", &m), 1);
    CHECK_INT(match("OR FLAGGED (SEEN LARGER 200)", &m), 0);
    CHECK_INT(match("OR FLAGGED (SEEN LARGER 50)", &m), 1);
    CHECK_INT(match("OR (FLAGGED) OR DELETED (NOT LARGER 200 UID 15)", &m), 1);
    CHECK_INT(match("SEEN (OR 1 2) (NOT 4)", &m), 0);
    CHECK_INT(match("SEEN (OR 1 3) (NOT 4)", &m), 1);
    CHECK_INT(match("NOT (SEEN UNFLAGGED)", &m), 0);
}

TEST(dates)
{
    /* Sent 1 Feb 2021 23:30 at -0800 (2 Feb in UTC); internal date 2 Feb. */
    struct imap_search_msg m = msg_of(latin_from);
    CHECK_INT(match("SENTON 1-Feb-2021", &m), 1);
    CHECK_INT(match("SENTON 2-Feb-2021", &m), 0);
    CHECK_INT(match("SENTBEFORE 2-Feb-2021", &m), 1);
    CHECK_INT(match("SENTBEFORE 1-Feb-2021", &m), 0);
    CHECK_INT(match("SENTSINCE 1-Feb-2021", &m), 1);
    CHECK_INT(match("SENTSINCE 2-Feb-2021", &m), 0);
    CHECK_INT(match("ON 2-Feb-2021", &m), 1);
    CHECK_INT(match("ON 1-Feb-2021", &m), 0);
    CHECK_INT(match("BEFORE 2-Feb-2021", &m), 0);
    CHECK_INT(match("BEFORE 3-Feb-2021", &m), 1);
    CHECK_INT(match("SINCE 2-Feb-2021", &m), 1);
    CHECK_INT(match("SINCE 3-Feb-2021", &m), 0);

    static const struct {
        const char *date;
        const char *on;
    } forms[] = {
        { "1 Feb 21 10:00 EST", "1-Feb-2021" },                 /* 2-digit year, old zone */
        { "Tue, 02 Feb 99 10:00:00 GMT", "2-Feb-1999" },
        { "Wed, 3 Mar 105 10:00 +0000", "3-Mar-2005" },          /* 3-digit year */
        { "(comment) Thu , 4 apr 2024 00:00 Z", "4-Apr-2024" },
        { "5 September 2023 12:00 +0200", "5-Sep-2023" },
        { "29 Feb 2024 12:00", "29-Feb-2024" },
        { "30 Feb 2024 12:00", "2-Feb-2021" },                   /* invalid: internal date */
        { "yesterday", "2-Feb-2021" },
        { "", "2-Feb-2021" },
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char text[256], keys[64];
        snprintf(text, sizeof text, "Date: %s\r\nSubject: x\r\n\r\nbody\r\n", forms[i].date);
        snprintf(keys, sizeof keys, "SENTON %s", forms[i].on);
        m = msg_of(text);
        if (match(keys, &m) != 1)
            fprintf(stderr, "date \"%s\" is not on %s\n", forms[i].date, forms[i].on);
        CHECK_INT(match(keys, &m), 1);
    }
    /* No Date: at all falls back to the internal date too. */
    m = msg_of("Subject: x\r\n\r\nbody\r\n");
    CHECK_INT(match("SENTON 2-Feb-2021", &m), 1);
    /* Internal dates before 1970 round down to their day. */
    m = msg_of(NULL);
    m.internaldate = -1;
    CHECK_INT(match("ON 31-Dec-1969", &m), 1);
}

TEST(needs_message)
{
    CHECK(!needs("SEEN LARGER 5 UID 1:* 1:3 BEFORE 1-Jan-2020 KEYWORD x"));
    CHECK(needs("OR SEEN BODY x"));
    CHECK(needs("NOT (SEEN (SENTON 1-Feb-2021))"));
    CHECK(needs("FROM x"));
    CHECK(needs("TEXT x"));
    CHECK(needs("HEADER A b"));
}

TEST(fixture_messages)
{
    /* rfc/003.eml: a multipart/alternative message. */
    FILE *f = fopen("tests/fixtures/mime/rfc/003.eml", "rb");
    static char text[8192];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    CHECK(n > 0);
    struct imap_search_msg m = msg_of(text);
    CHECK_INT(match("FROM borenstein SUBJECT \"formatted TEXT\"", &m), 1);
    CHECK_INT(match("BODY \"RFC 1896 TEXT/ENRICHED\"", &m), 1);
    CHECK_INT(match("BODY \"fanciest version\"", &m), 1);
    CHECK_INT(match("SENTON 22-Mar-1993", &m), 1);
    CHECK_INT(match("SENTBEFORE 22-Mar-1993", &m), 0);
}

int main(void)
{
    RUN(text_contains_folding);
    RUN(header_keys);
    RUN(body_and_text);
    RUN(flags_and_keywords);
    RUN(sizes);
    RUN(sets);
    RUN(not_or_nesting);
    RUN(dates);
    RUN(needs_message);
    RUN(fixture_messages);
    return test_summary();
}
