/* Unit tests for core/imap_fetch.c: flag lists and STORE, INTERNALDATE,
 * and FETCH responses for every section form on inline and fixture
 * messages. */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "imap_bodystructure.h"
#include "imap_fetch.h"
#include "imap_parse.h"
#include "mime.h"
#include "test.h"

static const char multi[] =
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.org>,\r\n"
    " Carol <carol@example.org>\r\n"
    "Subject: test\r\n"
    "Date: Mon, 1 Feb 2021 23:30:00 -0800\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=XX\r\n"
    "\r\n"
    "preamble\r\n"
    "--XX\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "\r\n"
    "part one\r\n"
    "--XX\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "From: Dave <dave@example.org>\r\n"
    "Subject: inner\r\n"
    "Content-Type: multipart/alternative; boundary=YY\r\n"
    "\r\n"
    "--YY\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "inner plain\r\n"
    "--YY\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<p>inner</p>\r\n"
    "--YY--\r\n"
    "\r\n"
    "--XX--\r\n";

static const char *multi_header =
    "From: Alice <alice@example.org>\r\n"
    "To: Bob <bob@example.org>,\r\n"
    " Carol <carol@example.org>\r\n"
    "Subject: test\r\n"
    "Date: Mon, 1 Feb 2021 23:30:00 -0800\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=XX\r\n"
    "\r\n";

static const char *inner_header =
    "From: Dave <dave@example.org>\r\n"
    "Subject: inner\r\n"
    "Content-Type: multipart/alternative; boundary=YY\r\n"
    "\r\n";

static const char *inner_text =
    "--YY\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "inner plain\r\n"
    "--YY\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<p>inner</p>\r\n"
    "--YY--\r\n";

static unsigned char arena_mem[IMAP_ARENA_DEFAULT];
static char cmdbuf[4096];
static struct buf result;

/* FETCH items as a client sends them, parsed by imap_parse. */
static struct imap_fetch parse_items(const char *items)
{
    struct imap_arena arena;
    struct imap_command cmd;
    struct imap_fetch f;
    const char *err = NULL;
    memset(&f, 0, sizeof f);
    imap_arena_init(&arena, arena_mem, sizeof arena_mem);
    int n = snprintf(cmdbuf, sizeof cmdbuf, "t FETCH 1 %s", items);
    if (imap_parse_command(cmdbuf, (size_t)n, &cmd, &arena, &err) < 0 ||
        imap_parse_fetch(cmd.args->next, &f, &arena, &err) < 0)
        fprintf(stderr, "parse of %s failed: %s\n", items, err);
    return f;
}

static struct imap_fetch_msg msg_of(const char *text, size_t len)
{
    struct imap_fetch_msg m;
    memset(&m, 0, sizeof m);
    m.uid = 7;
    m.system = IMAP_FLAG_SEEN;
    m.internaldate = 1612251000;          /* 2021-02-02 07:30:00 UTC */
    m.size = len;
    m.msg = text;
    m.len = len;
    return m;
}

/* The FETCH response for items on message text (NUL-free results only). */
static const char *fetch_full(const char *text, size_t len, const char *items, bool uid,
                              bool add_flags)
{
    struct imap_fetch f = parse_items(items);
    struct imap_fetch_msg m = msg_of(text, len);
    buf_reset(&result);
    if (imap_fetch_render(&result, &f, &m, uid, add_flags) < 0)
        return "FAILED";
    return buf_cstr(&result);
}

static const char *fetch(const char *text, const char *items)
{
    return fetch_full(text, strlen(text), items, false, false);
}

/* "(NAME {n}\r\ncontent)" for one section. */
static const char *literal_of(const char *name, const char *content)
{
    static char expect[8192];
    snprintf(expect, sizeof expect, "(%s {%zu}\r\n%s)", name, strlen(content), content);
    return expect;
}

TEST(flags_maildir)
{
    CHECK_INT(imap_flags_from_maildir("DFPRST"), IMAP_FLAG_DRAFT | IMAP_FLAG_FLAGGED |
              IMAP_FLAG_ANSWERED | IMAP_FLAG_SEEN | IMAP_FLAG_DELETED);
    CHECK_INT(imap_flags_from_maildir(""), 0);
    CHECK_INT(imap_flags_from_maildir(NULL), 0);
    CHECK_INT(imap_flags_from_maildir("S"), IMAP_FLAG_SEEN);
    char out[8];
    imap_flags_to_maildir(IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED, "PS", out);
    CHECK_STR(out, "FPS");
    imap_flags_to_maildir(0, "DFPRST", out);
    CHECK_STR(out, "P");
    imap_flags_to_maildir(IMAP_FLAG_DELETED | IMAP_FLAG_DRAFT | IMAP_FLAG_ANSWERED, NULL, out);
    CHECK_STR(out, "DRT");
    /* Unknown upper-case letters survive, but never crowd out IMAP's. */
    imap_flags_to_maildir(0x1F, "ABCEGHIJ", out);
    CHECK_INT(strlen(out), 7);
    CHECK(strchr(out, 'D') && strchr(out, 'F') && strchr(out, 'R') && strchr(out, 'S') &&
          strchr(out, 'T'));
}

static const char *flags_of(unsigned system, const char *kw, bool recent)
{
    buf_reset(&result);
    if (imap_write_flags(&result, system, kw, recent) < 0)
        return "FAILED";
    return buf_cstr(&result);
}

TEST(flags_write_order)
{
    CHECK_STR(flags_of(0, NULL, false), "()");
    CHECK_STR(flags_of(0, NULL, true), "(\\Recent)");
    CHECK_STR(flags_of(0x1F, "$Label1 Junk", true),
              "(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Junk \\Recent)");
    CHECK_STR(flags_of(IMAP_FLAG_SEEN | IMAP_FLAG_ANSWERED, "", false), "(\\Answered \\Seen)");
    CHECK_STR(flags_of(0, "  a   b ", false), "(a b)");
    /* A stored word that is no atom would break the response: left out. */
    CHECK_STR(flags_of(IMAP_FLAG_SEEN, "ok bad(word \\x", false), "(\\Seen ok)");
}

static int apply(enum imap_store_op op, unsigned sys_change, const char **kws, size_t n,
                 unsigned *system, const char *old, struct buf *out)
{
    struct imap_flags ch = { sys_change, kws, n };
    return imap_flags_apply(op, &ch, system, old, out);
}

TEST(flags_apply)
{
    struct buf kw = BUF_INIT;
    unsigned sys = IMAP_FLAG_SEEN;
    const char *add[] = { "$label1", "foo", "New" };
    CHECK_INT(apply(IMAP_STORE_ADD, IMAP_FLAG_FLAGGED, add, 3, &sys, "Foo $Label1 bar", &kw), 0);
    CHECK_STR(kw.data, "Foo $Label1 bar New");
    CHECK_INT(sys, IMAP_FLAG_SEEN | IMAP_FLAG_FLAGGED);

    const char *rm[] = { "FOO", "NEW", "absent" };
    CHECK_INT(apply(IMAP_STORE_REMOVE, IMAP_FLAG_SEEN, rm, 3, &sys, "Foo $Label1 bar New", &kw), 0);
    CHECK_STR(kw.data, "$Label1 bar");
    CHECK_INT(sys, IMAP_FLAG_FLAGGED);

    const char *set[] = { "x", "X", "y" };
    CHECK_INT(apply(IMAP_STORE_SET, IMAP_FLAG_DRAFT, set, 3, &sys, "$Label1 bar", &kw), 0);
    CHECK_STR(kw.data, "x y");
    CHECK_INT(sys, IMAP_FLAG_DRAFT);

    CHECK_INT(apply(IMAP_STORE_SET, 0, NULL, 0, &sys, "x y", &kw), 0);
    CHECK_STR(kw.data, "");
    CHECK_INT(sys, 0);

    /* The old list may live in the output buffer itself. */
    buf_reset(&kw);
    buf_printf(&kw, "a b");
    buf_cstr(&kw);
    const char *c[] = { "c" };
    CHECK_INT(apply(IMAP_STORE_ADD, 0, c, 1, &sys, kw.data, &kw), 0);
    CHECK_STR(kw.data, "a b c");

    /* Over IMAP_KEYWORDS_MAX: refused, nothing changed. */
    struct buf many = BUF_INIT;
    for (int i = 0; i < IMAP_KEYWORDS_MAX; i++)
        buf_printf(&many, "%sk%d", i ? " " : "", i);
    buf_cstr(&many);
    const char *extra[] = { "one-more" };
    sys = IMAP_FLAG_SEEN;
    CHECK_INT(apply(IMAP_STORE_ADD, IMAP_FLAG_DELETED, extra, 1, &sys, many.data, &kw), -1);
    CHECK_INT(sys, IMAP_FLAG_SEEN);
    CHECK_STR(kw.data, "a b c");
    const char *dup[] = { "K5" };
    CHECK_INT(apply(IMAP_STORE_ADD, 0, dup, 1, &sys, many.data, &kw), 0);
    CHECK_INT(kw.len, many.len);
    buf_free(&many);
    buf_free(&kw);
}

static const char *date_of(time_t t)
{
    buf_reset(&result);
    imap_write_internaldate(&result, t);
    return buf_cstr(&result);
}

TEST(internaldate_format)
{
    struct tm tm = { .tm_year = 126, .tm_mon = 1, .tm_mday = 7, .tm_hour = 8, .tm_min = 9,
                     .tm_sec = 10 };
    CHECK_STR(date_of(timegm(&tm)), "\" 7-Feb-2026 08:09:10 +0000\"");
    CHECK_STR(date_of(0), "\" 1-Jan-1970 00:00:00 +0000\"");
    tm.tm_mday = 28;
    tm.tm_mon = 11;
    tm.tm_hour = 23;
    CHECK_STR(date_of(timegm(&tm)), "\"28-Dec-2026 23:09:10 +0000\"");
}

TEST(needs_and_seen)
{
    struct imap_fetch f = parse_items("(FLAGS UID RFC822.SIZE INTERNALDATE)");
    struct imap_fetch_needs n = imap_fetch_needs(&f, false);
    CHECK(!n.message && !n.structure);
    CHECK(!imap_fetch_sets_seen(&f));
    f = parse_items("(ENVELOPE BODYSTRUCTURE)");
    n = imap_fetch_needs(&f, true);
    CHECK(!n.message && n.structure);
    n = imap_fetch_needs(&f, false);
    CHECK(n.message && n.structure);
    f = parse_items("BODY.PEEK[HEADER]");
    CHECK(imap_fetch_needs(&f, true).message);
    CHECK(!imap_fetch_sets_seen(&f));
    f = parse_items("BODY[1]");
    CHECK(imap_fetch_sets_seen(&f));
    f = parse_items("RFC822.HEADER");
    CHECK(imap_fetch_needs(&f, true).message);
    CHECK(!imap_fetch_sets_seen(&f));
    f = parse_items("RFC822.TEXT");
    CHECK(imap_fetch_sets_seen(&f));
    f = parse_items("RFC822");
    CHECK(imap_fetch_sets_seen(&f));
}

TEST(section_header_fields)
{
    CHECK_STR(fetch(multi, "BODY.PEEK[HEADER.FIELDS (FROM TO)]"),
              literal_of("BODY[HEADER.FIELDS (FROM TO)]",
                         "From: Alice <alice@example.org>\r\n"
                         "To: Bob <bob@example.org>,\r\n Carol <carol@example.org>\r\n\r\n"));
    /* Names compare without case; the response keeps the spelling sent. */
    CHECK_STR(fetch(multi, "BODY[HEADER.FIELDS (subject)]"),
              literal_of("BODY[HEADER.FIELDS (subject)]", "Subject: test\r\n\r\n"));
    /* None matched: still the blank line. */
    CHECK_STR(fetch(multi, "BODY[HEADER.FIELDS (X-NONE)]"),
              "(BODY[HEADER.FIELDS (X-NONE)] {2}\r\n\r\n)");
    CHECK_STR(fetch(multi, "BODY[HEADER.FIELDS.NOT (FROM TO MIME-VERSION CONTENT-TYPE)]"),
              literal_of("BODY[HEADER.FIELDS.NOT (FROM TO MIME-VERSION CONTENT-TYPE)]",
                         "Subject: test\r\nDate: Mon, 1 Feb 2021 23:30:00 -0800\r\n\r\n"));
    /* Every occurrence, in message order. */
    const char *twice = "Received: a\r\nX: 1\r\nreceived: b\r\n\tc\r\n\r\nbody";
    CHECK_STR(fetch(twice, "BODY[HEADER.FIELDS (RECEIVED)]"),
              literal_of("BODY[HEADER.FIELDS (RECEIVED)]",
                         "Received: a\r\nreceived: b\r\n\tc\r\n\r\n"));
    /* A header with no blank line and no final line break. */
    const char *cut = "From: a@b\r\nSubject: s";
    CHECK_STR(fetch(cut, "BODY[HEADER.FIELDS (SUBJECT)]"),
              literal_of("BODY[HEADER.FIELDS (SUBJECT)]", "Subject: s\r\n\r\n"));
    CHECK_STR(fetch(cut, "BODY[TEXT]"), "(BODY[TEXT] {0}\r\n)");
    /* Of an encapsulated message. */
    CHECK_STR(fetch(multi, "BODY[2.HEADER.FIELDS (SUBJECT)]"),
              literal_of("BODY[2.HEADER.FIELDS (SUBJECT)]", "Subject: inner\r\n\r\n"));
}

TEST(section_whole_and_text)
{
    CHECK_STR(fetch(multi, "BODY[]"), literal_of("BODY[]", multi));
    CHECK_STR(fetch(multi, "BODY[HEADER]"), literal_of("BODY[HEADER]", multi_header));
    CHECK_STR(fetch(multi, "BODY[TEXT]"), literal_of("BODY[TEXT]", multi + strlen(multi_header)));
    CHECK_STR(fetch(multi, "RFC822"), literal_of("RFC822", multi));
    CHECK_STR(fetch(multi, "RFC822.HEADER"), literal_of("RFC822.HEADER", multi_header));
    CHECK_STR(fetch(multi, "RFC822.TEXT"), literal_of("RFC822.TEXT", multi + strlen(multi_header)));
}

TEST(section_parts)
{
    CHECK_STR(fetch(multi, "BODY[1]"), literal_of("BODY[1]", "part one"));
    CHECK_STR(fetch(multi, "BODY.PEEK[1.MIME]"),
              literal_of("BODY[1.MIME]", "Content-Type: text/plain; charset=us-ascii\r\n\r\n"));
    CHECK_STR(fetch(multi, "BODY[2.HEADER]"), literal_of("BODY[2.HEADER]", inner_header));
    CHECK_STR(fetch(multi, "BODY[2.TEXT]"), literal_of("BODY[2.TEXT]", inner_text));
    CHECK_STR(fetch(multi, "BODY[2.MIME]"),
              literal_of("BODY[2.MIME]", "Content-Type: message/rfc822\r\n\r\n"));
    CHECK_STR(fetch(multi, "BODY[2.1]"), literal_of("BODY[2.1]", "inner plain"));
    CHECK_STR(fetch(multi, "BODY[2.2]"), literal_of("BODY[2.2]", "<p>inner</p>"));
    CHECK_STR(fetch(multi, "BODY[2.1.MIME]"),
              literal_of("BODY[2.1.MIME]", "Content-Type: text/plain\r\n\r\n"));
    /* Nonexistent parts, and HEADER of a part that is no message. */
    CHECK_STR(fetch(multi, "BODY[3]"), "(BODY[3] {0}\r\n)");
    CHECK_STR(fetch(multi, "BODY[2.3.1]"), "(BODY[2.3.1] {0}\r\n)");
    CHECK_STR(fetch(multi, "BODY[1.HEADER]"), "(BODY[1.HEADER] {0}\r\n)");
    CHECK_STR(fetch(multi, "BODY[1.1]"), "(BODY[1.1] {0}\r\n)");

    /* A single-part message: part 1 is its body, 1.MIME its header. */
    const char *single = "Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
    CHECK_STR(fetch(single, "BODY[1]"), literal_of("BODY[1]", "hello\r\n"));
    CHECK_STR(fetch(single, "BODY[1.MIME]"),
              literal_of("BODY[1.MIME]", "Subject: x\r\nContent-Type: text/plain\r\n\r\n"));
    CHECK_STR(fetch(single, "BODY[2]"), "(BODY[2] {0}\r\n)");
}

TEST(partials)
{
    CHECK_STR(fetch(multi, "BODY[]<0.10>"), literal_of("BODY[]<0>", "From: Alic"));
    CHECK_STR(fetch(multi, "BODY.PEEK[TEXT]<3.5>"), literal_of("BODY[TEXT]<3>", "amble"));
    CHECK_STR(fetch(multi, "BODY[1]<5.1000>"), literal_of("BODY[1]<5>", "one"));
    CHECK_STR(fetch(multi, "BODY[]<100000.10>"), "(BODY[]<100000> {0}\r\n)");
    /* Offset exactly at the end. */
    CHECK_STR(fetch(multi, "BODY[1]<8.2>"), "(BODY[1]<8> {0}\r\n)");
    CHECK_STR(fetch(multi, "BODY[HEADER.FIELDS (SUBJECT)]<9.100>"),
              literal_of("BODY[HEADER.FIELDS (SUBJECT)]<9>", "test\r\n\r\n"));
}

TEST(attributes_and_order)
{
    size_t len = strlen(multi);
    char expect[256];
    snprintf(expect, sizeof expect,
             "(UID 7 FLAGS (\\Seen) INTERNALDATE \" 2-Feb-2021 07:30:00 +0000\" RFC822.SIZE %zu)",
             len);
    CHECK_STR(fetch_full(multi, len, "FAST", true, false), expect);
    snprintf(expect, sizeof expect, "(UID 7 RFC822.SIZE %zu)", len);
    CHECK_STR(fetch_full(multi, len, "(RFC822.SIZE UID)", false, false), expect);
    CHECK_STR(fetch_full(multi, len, "UID", true, false), "(UID 7)");
    /* \Seen just set: FLAGS at the end, once. */
    CHECK_STR(fetch_full(multi, len, "BODY[1]", true, true),
              "(UID 7 BODY[1] {8}\r\npart one FLAGS (\\Seen))");
    CHECK_STR(fetch_full(multi, len, "(FLAGS BODY[1])", false, true),
              "(FLAGS (\\Seen) BODY[1] {8}\r\npart one)");
    /* Sections keep the order requested. */
    CHECK_STR(fetch(multi, "(BODY[2.1] BODY[1])"),
              "(BODY[2.1] {11}\r\ninner plain BODY[1] {8}\r\npart one)");
}

TEST(structures)
{
    struct mime_part *root = mime_parse(multi, strlen(multi));
    struct buf env = BUF_INIT, body = BUF_INIT, bs = BUF_INIT, expect = BUF_INIT;
    CHECK(root != NULL);
    imap_envelope(&env, root);
    imap_bodystructure(&body, root, false);
    imap_bodystructure(&bs, root, true);
    buf_printf(&expect, "(ENVELOPE %.*s BODY %.*s BODYSTRUCTURE %.*s)", (int)env.len, env.data,
               (int)body.len, body.data, (int)bs.len, bs.data);
    CHECK_STR(fetch(multi, "(BODYSTRUCTURE ENVELOPE BODY)"), buf_cstr(&expect));
    CHECK(strcmp(body.data, bs.data) != 0);

    /* With the tree given, and with cached texts (which win). */
    struct imap_fetch f = parse_items("(ENVELOPE BODY BODYSTRUCTURE)");
    struct imap_fetch_msg m = msg_of(multi, strlen(multi));
    m.mime = root;
    buf_reset(&result);
    CHECK_INT(imap_fetch_render(&result, &f, &m, false, false), 0);
    CHECK_STR(buf_cstr(&result), expect.data);
    m.msg = NULL;
    m.mime = NULL;
    m.envelope = "(E)";
    m.envelope_len = 3;
    m.body = "(B)";
    m.body_len = 3;
    m.bodystructure = "(S)";
    m.bodystructure_len = 3;
    buf_reset(&result);
    CHECK_INT(imap_fetch_render(&result, &f, &m, false, false), 0);
    CHECK_STR(buf_cstr(&result), "(ENVELOPE (E) BODY (B) BODYSTRUCTURE (S))");

    /* Missing data: -1, and nothing is left in the output. */
    m.envelope = NULL;
    buf_reset(&result);
    buf_printf(&result, "keep");
    CHECK_INT(imap_fetch_render(&result, &f, &m, false, false), -1);
    CHECK_INT(result.len, 4);
    f = parse_items("BODY[]");
    CHECK_INT(imap_fetch_render(&result, &f, &m, false, false), -1);
    CHECK_INT(result.len, 4);
    mime_free(root);
    buf_free(&env);
    buf_free(&body);
    buf_free(&bs);
    buf_free(&expect);
}

TEST(section_text_direct)
{
    struct imap_fetch f = parse_items("(BODY[TEXT] BODY[HEADER.FIELDS (TO)] BODY[2.1])");
    struct buf scratch = BUF_INIT;
    const char *data;
    size_t len;
    struct mime_part *root = mime_parse(multi, strlen(multi));
    CHECK_INT(imap_fetch_section_text(multi, strlen(multi), NULL, &f.sections[0], &scratch,
                                      &data, &len), 0);
    CHECK(data == multi + strlen(multi_header));
    CHECK_INT(imap_fetch_section_text(multi, strlen(multi), root, &f.sections[1], &scratch,
                                      &data, &len), 0);
    CHECK(data == scratch.data && len == strlen("To: Bob <bob@example.org>,\r\n"
                                                " Carol <carol@example.org>\r\n\r\n"));
    /* A part section needs the tree. */
    CHECK_INT(imap_fetch_section_text(multi, strlen(multi), NULL, &f.sections[2], &scratch,
                                      &data, &len), -1);
    CHECK_INT(imap_fetch_section_text(multi, strlen(multi), root, &f.sections[2], &scratch,
                                      &data, &len), 0);
    CHECK(len == 11 && memcmp(data, "inner plain", 11) == 0);
    mime_free(root);
    buf_free(&scratch);
}

static int load(const char *path, struct buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char chunk[4096];
    size_t n;
    buf_reset(out);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
    return buf_cstr(out) ? 0 : -1;
}

TEST(fixture_nested)
{
    struct buf m = BUF_INIT;
    CHECK_INT(load("tests/fixtures/mime/rfc/009.eml", &m), 0);
    const char *hdr = "From: Someone Else\n"
                      "Subject: Hello, this is an elaborate request for you to finally say hello\n"
                      " already!\n\n";
    CHECK_STR(fetch_full(m.data, m.len, "BODY[2.HEADER]", false, false),
              literal_of("BODY[2.HEADER]", hdr));
    CHECK_STR(fetch_full(m.data, m.len, "BODY[2.TEXT]", false, false),
              literal_of("BODY[2.TEXT]", "Please say Hello\n"));
    CHECK_STR(fetch_full(m.data, m.len, "BODY[1.1]", false, false),
              literal_of("BODY[1.1]", "Hello\n"));
    CHECK_STR(fetch_full(m.data, m.len, "BODY[1.2.MIME]", false, false),
              literal_of("BODY[1.2.MIME]", "Content-Type: text/html; charset=\"us-ascii\"\n\n"));
    CHECK_STR(fetch_full(m.data, m.len, "BODY[HEADER.FIELDS (SUBJECT)]", false, false),
              literal_of("BODY[HEADER.FIELDS (SUBJECT)]", "Subject: whatever\n\r\n"));

    /* A message/rfc822 part in base64 is not parsed: it has no HEADER. */
    CHECK_INT(load("tests/fixtures/mime/rfc/008.eml", &m), 0);
    CHECK_STR(fetch_full(m.data, m.len, "BODY[2.HEADER]", false, false),
              "(BODY[2.HEADER] {0}\r\n)");
    const char *b2 = fetch_full(m.data, m.len, "BODY[2]", false, false);
    CHECK(strncmp(b2, "(BODY[2] {", 10) == 0 && strstr(b2, "VG86ICJlbWFp"));
    buf_free(&m);
}

static const char *const all_items =
    "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE RFC822.HEADER "
    "RFC822.TEXT BODY[] BODY[HEADER] BODY[TEXT] BODY[1] BODY[1.MIME] BODY[2.HEADER] "
    "BODY[2.TEXT] BODY[1.2.MIME] BODY[3.1.1] BODY[HEADER.FIELDS (FROM SUBJECT)] "
    "BODY[HEADER.FIELDS.NOT (FROM)] BODY[2.HEADER.FIELDS (TO)] BODY[TEXT]<3.50> "
    "BODY[1]<1.1>)";

/* Every literal "{n}" CRLF lies inside the response, which ends with ")". */
static bool literals_ok(const struct buf *out)
{
    size_t i = 0;
    while (i < out->len) {
        size_t j = i + 1, n = 0;
        if (out->data[i] != '{') {
            i++;
            continue;
        }
        while (j < out->len && out->data[j] >= '0' && out->data[j] <= '9')
            n = n * 10 + (size_t)(out->data[j++] - '0');
        if (j + 3 <= out->len && memcmp(out->data + j, "}\r\n", 3) == 0) {
            if (n > out->len - j - 3)
                return false;
            i = j + 3 + n;
        } else {
            i++;
        }
    }
    return out->len > 0 && out->data[out->len - 1] == ')';
}

/* Every item on every fixture, real and malformed: renders, and every
 * literal's length fits what follows it. */
static int render_dir(const char *dir, int *files)
{
    DIR *d = opendir(dir);
    struct imap_fetch f = parse_items(all_items);
    struct buf m = BUF_INIT, out = BUF_INIT;
    int bad = 0;
    struct dirent *e;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char path[512];
        if (!strstr(e->d_name, ".eml"))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct imap_fetch_msg fm;
        if (load(path, &m) < 0)
            bad++;
        fm = msg_of(m.data, m.len);
        buf_reset(&out);
        if (imap_fetch_render(&out, &f, &fm, true, true) < 0 || out.len < m.len ||
            !literals_ok(&out)) {
            fprintf(stderr, "render failed: %s\n", path);
            bad++;
        }
        (*files)++;
    }
    closedir(d);
    buf_free(&m);
    buf_free(&out);
    return bad;
}

TEST(fixture_corpus)
{
    int files = 0;
    CHECK_INT(render_dir("tests/fixtures/mime/rfc", &files), 0);
    CHECK_INT(render_dir("tests/fixtures/mime/thirdparty", &files), 0);
    CHECK_INT(render_dir("tests/fixtures/mime/malformed", &files), 0);
    CHECK(files >= 50);
}

int main(void)
{
    RUN(flags_maildir);
    RUN(flags_write_order);
    RUN(flags_apply);
    RUN(internaldate_format);
    RUN(needs_and_seen);
    RUN(section_header_fields);
    RUN(section_whole_and_text);
    RUN(section_parts);
    RUN(partials);
    RUN(attributes_and_order);
    RUN(structures);
    RUN(section_text_direct);
    RUN(fixture_nested);
    RUN(fixture_corpus);
    buf_free(&result);
    return test_summary();
}
