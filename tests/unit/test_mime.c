/* Unit tests for core/mime.c: part offsets, sizes and line counts, limits,
 * RFC 2047 / 2231 decoding, body decoders, and the fixture corpus. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "imap_bodystructure.h"
#include "mime.h"
#include "test.h"

#define S(lit) lit, sizeof(lit) - 1

/* Offset of the first occurrence of `needle` in msg (it must be there). */
static size_t off(const char *msg, const char *needle)
{
    const char *p = strstr(msg, needle);
    if (!p) {
        fprintf(stderr, "marker not found: %s\n", needle);
        abort();
    }
    return (size_t)(p - msg);
}

static const struct mime_part *child(const struct mime_part *p, unsigned n)
{
    const struct mime_part *c = p ? p->children : NULL;
    while (c && n-- > 1)
        c = c->next;
    return c;
}

/* Structural invariants every tree must satisfy, whatever the input. */
static int check_tree(const struct mime_part *p, size_t lo, size_t hi, unsigned depth, size_t *count)
{
    if (!p || p->depth != depth || p->hdr_off < lo || p->body_off != p->hdr_off + p->hdr_size ||
        p->body_off + p->body_size > hi || depth > MIME_MAX_DEPTH)
        return -1;
    (*count)++;
    if (p->kind == MIME_LEAF && p->children)
        return -1;
    if (p->kind == MIME_MESSAGE && p->nchildren != 1)
        return -1;
    size_t n = 0, prev_end = p->body_off;
    for (const struct mime_part *c = p->children; c; c = c->next, n++) {
        if (c->parent != p || c->hdr_off < prev_end ||
            check_tree(c, p->body_off, p->body_off + p->body_size, depth + 1, count) < 0)
            return -1;
        prev_end = c->body_off + c->body_size;
    }
    return n == p->nchildren ? 0 : -1;
}

static int check_msg(const char *msg, size_t len)
{
    size_t count = 0;
    struct mime_part *root = mime_parse(msg, len);
    int rc = root && check_tree(root, 0, len, 0, &count) == 0 && count <= MIME_MAX_PARTS ? 0 : -1;
    mime_free(root);
    return rc;
}

TEST(simple_message)
{
    const char *m = "From: a@b\r\nSubject: hi\r\n there\r\n\r\nhello\r\nworld\r\n";
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK(r != NULL);
    CHECK_INT(r->kind, MIME_LEAF);
    CHECK_INT(r->hdr_off, 0);
    CHECK_INT(r->hdr_size, off(m, "hello"));
    CHECK_INT(r->hdr_lines, 4);
    CHECK_INT(r->body_off, off(m, "hello"));
    CHECK_INT(r->body_size, 14);
    CHECK_INT(r->body_lines, 2);
    CHECK(r->subject.p == m + off(m, " hi"));
    CHECK_INT(r->subject.len, strlen(" hi\r\n there"));
    CHECK(mime_part_is(r, "text", "plain"));
    CHECK(r->type == NULL);
    CHECK(mime_find_section(r, NULL, 0) == r);
    unsigned one = 1, two = 2;
    CHECK(mime_find_section(r, &one, 1) == r);
    CHECK(mime_find_section(r, &two, 1) == NULL);
    unsigned oneone[] = { 1, 1 };
    CHECK(mime_find_section(r, oneone, 2) == NULL);
    mime_free(r);
}

TEST(no_trailing_newline_and_no_body)
{
    const char *m = "Subject: x\r\n\r\nabc";
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK_INT(r->body_size, 3);
    CHECK_INT(r->body_lines, 1);
    mime_free(r);
    m = "Subject: x\r\nFrom: y";       /* header only, no empty line */
    r = mime_parse(m, strlen(m));
    CHECK_INT(r->hdr_size, strlen(m));
    CHECK_INT(r->body_size, 0);
    CHECK_INT(r->body_lines, 0);
    CHECK_INT(r->from.len, 2);
    mime_free(r);
    r = mime_parse("", 0);
    CHECK(r != NULL);
    CHECK_INT(r->hdr_size + r->body_size, 0);
    mime_free(r);
}

static const char alt_crlf[] =
    "Content-Type: multipart/alternative; boundary=\"XX\"\r\n"
    "\r\n"
    "preamble\r\n"
    "--XX\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "hello\r\n"
    "--XX\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<p>hi</p>\r\n"
    "\r\n"
    "--XX--\r\n"
    "epilogue\r\n";

TEST(multipart_alternative)
{
    const char *m = alt_crlf;
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK_INT(r->kind, MIME_MULTIPART);
    CHECK_INT(r->nchildren, 2);
    CHECK(!r->missing_end_boundary);
    CHECK_INT(r->body_off, off(m, "preamble"));
    CHECK_INT(r->body_size, strlen(m) - off(m, "preamble"));
    const struct mime_part *a = child(r, 1), *b = child(r, 2);
    CHECK_INT(a->hdr_off, off(m, "Content-Type: text/plain"));
    CHECK_INT(a->hdr_size, strlen("Content-Type: text/plain\r\n\r\n"));
    CHECK_INT(a->hdr_lines, 2);
    CHECK_INT(a->body_off, off(m, "hello"));
    CHECK_INT(a->body_size, 5);
    CHECK_INT(a->body_lines, 1);
    CHECK_INT(b->body_off, off(m, "<p>"));
    CHECK_INT(b->body_size, strlen("<p>hi</p>\r\n"));
    CHECK_INT(b->body_lines, 1);
    CHECK_STR(b->subtype, "html");
    unsigned two = 2;
    CHECK(mime_find_section(r, &two, 1) == b);
    struct buf out = BUF_INIT;
    CHECK_INT(imap_bodystructure(&out, r, true), 0);
    CHECK_STR(buf_cstr(&out),
              "((\"text\" \"plain\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 5 1 NIL NIL NIL NIL)"
              "(\"text\" \"html\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 11 1 NIL NIL NIL NIL)"
              " \"alternative\" (\"boundary\" \"XX\") NIL NIL NIL)");
    buf_reset(&out);
    CHECK_INT(imap_bodystructure(&out, r, false), 0);
    CHECK_STR(buf_cstr(&out),
              "((\"text\" \"plain\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 5 1)"
              "(\"text\" \"html\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 11 1) \"alternative\")");
    buf_free(&out);
    mime_free(r);
}

TEST(lf_only_message)
{
    /* The same message with bare LF line endings. */
    struct buf lf = BUF_INIT;
    for (const char *p = alt_crlf; *p; p++)
        if (*p != '\r')
            buf_append(&lf, p, 1);
    const char *m = buf_cstr(&lf);
    struct mime_part *r = mime_parse(m, lf.len);
    CHECK_INT(r->nchildren, 2);
    const struct mime_part *a = child(r, 1), *b = child(r, 2);
    CHECK_INT(a->hdr_size, strlen("Content-Type: text/plain\n\n"));
    CHECK_INT(a->body_off, off(m, "hello"));
    CHECK_INT(a->body_size, 5);
    CHECK_INT(a->body_lines, 1);
    CHECK_INT(b->body_size, strlen("<p>hi</p>\n"));
    CHECK_INT(b->body_lines, 1);
    CHECK_INT(r->hdr_size, off(m, "preamble"));
    mime_free(r);
    buf_free(&lf);
}

static const char nested[] =
    "From: \"Doe, John\" <john@example.com>\r\n"
    "To: a@b.c, Group: x@y.z, \"Q\" <q@r.s>;\r\n"
    "Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    "Message-ID: <1@x>\r\n"
    "Content-Type: multipart/mixed; boundary=outer\r\n"
    "\r\n"
    "--outer\r\n"
    "Content-Type: multipart/alternative; boundary=inner\r\n"
    "\r\n"
    "--inner\r\n"
    "\r\n"
    "plain\r\n"
    "--inner\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "\r\n"
    "<b>x</b>\r\n"
    "--outer\r\n"
    "Content-Type: application/pdf; name*0*=utf-8''r%C3%A9; name*1=sum.pdf\r\n"
    "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum.pdf\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Language: en, de\r\n"
    "\r\n"
    "aGVsbG8=\r\n"
    "--outer--\r\n";

TEST(nested_multipart_with_attachment)
{
    const char *m = nested;
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK_INT(r->nchildren, 2);
    const struct mime_part *alt = child(r, 1), *pdf = child(r, 2);
    CHECK_INT(alt->kind, MIME_MULTIPART);
    CHECK(alt->missing_end_boundary);       /* ended by the outer boundary */
    CHECK_INT(alt->nchildren, 2);
    CHECK_INT(child(alt, 1)->body_size, 5);
    CHECK_INT(child(alt, 2)->body_off, off(m, "<b>"));
    CHECK_INT(child(alt, 2)->body_size, 8);
    CHECK_INT(alt->body_off + alt->body_size, off(m, "<b>x</b>") + 8);
    CHECK_INT(pdf->body_off, off(m, "aGVs"));
    CHECK_INT(pdf->body_size, 8);
    const struct mime_param *name = mime_param_find(pdf->type_params, "NAME");
    CHECK(name && name->extended);
    CHECK_STR(name ? name->raw : NULL, "utf-8''r%C3%A9sum.pdf");
    CHECK_STR(name ? name->value : NULL, "r\xC3\xA9sum.pdf");
    CHECK_STR(pdf->disposition, "attachment");
    struct buf d = BUF_INIT;
    CHECK_INT(mime_decode_body(m, pdf, &d), 0);
    CHECK_STR(buf_cstr(&d), "hello");
    buf_free(&d);

    unsigned p12[] = { 1, 2 }, p2[] = { 2 }, p13[] = { 1, 3 }, p0[] = { 0 };
    CHECK(mime_find_section(r, p12, 2) == child(alt, 2));
    CHECK(mime_find_section(r, p2, 1) == pdf);
    CHECK(mime_find_section(r, p13, 2) == NULL);
    CHECK(mime_find_section(r, p0, 1) == NULL);

    struct buf out = BUF_INIT;
    CHECK_INT(imap_bodystructure(&out, r, true), 0);
    CHECK_STR(buf_cstr(&out),
              "(((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 5 1 NIL NIL NIL NIL)"
              "(\"text\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7BIT\" 8 1 NIL NIL NIL NIL)"
              " \"alternative\" (\"boundary\" \"inner\") NIL NIL NIL)"
              "(\"application\" \"pdf\" (\"name*\" \"utf-8''r%C3%A9sum.pdf\") NIL NIL \"base64\" 8"
              " NIL (\"attachment\" (\"filename*\" \"utf-8''r%C3%A9sum.pdf\")) (\"en\" \"de\") NIL)"
              " \"mixed\" (\"boundary\" \"outer\") NIL NIL NIL)");
    buf_reset(&out);
    CHECK_INT(imap_envelope(&out, r), 0);
    CHECK_STR(buf_cstr(&out),
              "(NIL \"=?utf-8?q?caf=C3=A9?=\""
              " ((\"Doe, John\" NIL \"john\" \"example.com\"))"
              " ((\"Doe, John\" NIL \"john\" \"example.com\"))"
              " ((\"Doe, John\" NIL \"john\" \"example.com\"))"
              " ((NIL NIL \"a\" \"b.c\")(NIL NIL \"Group\" NIL)(NIL NIL \"x\" \"y.z\")"
              "(\"Q\" NIL \"q\" \"r.s\")(NIL NIL NIL NIL))"
              " NIL NIL NIL \"<1@x>\")");
    buf_free(&out);
    mime_free(r);
}

TEST(message_rfc822_with_multipart)
{
    const char *m =
        "Content-Type: multipart/mixed; boundary=b1\r\n"
        "\r\n"
        "--b1\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        "Subject: inner\r\n"
        "From: x@y\r\n"
        "Content-Type: multipart/alternative; boundary=b2\r\n"
        "\r\n"
        "--b2\r\n"
        "\r\n"
        "one\r\n"
        "--b2\r\n"
        "\r\n"
        "two\r\n"
        "--b2--\r\n"
        "--b1--\r\n";
    struct mime_part *r = mime_parse(m, strlen(m));
    const struct mime_part *msg = child(r, 1);
    CHECK_INT(msg->kind, MIME_MESSAGE);
    size_t start = off(m, "Subject: inner"), end = off(m, "--b2--") + 6;
    CHECK_INT(msg->body_off, start);
    CHECK_INT(msg->body_size, end - start);
    CHECK_INT(msg->body_lines, 11);
    const struct mime_part *inner = msg->children;
    CHECK_INT(inner->hdr_off, start);
    CHECK_INT(inner->kind, MIME_MULTIPART);
    CHECK_INT(inner->nchildren, 2);
    CHECK_INT(inner->body_off + inner->body_size, end);
    CHECK_INT(child(inner, 2)->body_off, off(m, "two"));
    CHECK_INT(child(inner, 2)->body_size, 3);

    unsigned p1[] = { 1 }, p11[] = { 1, 1 }, p12[] = { 1, 2 }, p13[] = { 1, 3 }, p111[] = { 1, 1, 1 };
    CHECK(mime_find_section(r, p1, 1) == msg);
    CHECK(mime_find_section(r, p11, 2) == child(inner, 1));
    CHECK(mime_find_section(r, p12, 2) == child(inner, 2));
    CHECK(mime_find_section(r, p13, 2) == NULL);
    CHECK(mime_find_section(r, p111, 3) == NULL);

    struct buf out = BUF_INIT, want = BUF_INIT;
    CHECK_INT(imap_bodystructure(&out, r, true), 0);
    buf_printf(&want,
               "((\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" %zu"
               " (NIL \"inner\" ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\"))"
               " NIL NIL NIL NIL NIL)"
               " ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 3 1 NIL NIL NIL NIL)"
               "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 3 1 NIL NIL NIL NIL)"
               " \"alternative\" (\"boundary\" \"b2\") NIL NIL NIL) 11 NIL NIL NIL NIL)"
               " \"mixed\" (\"boundary\" \"b1\") NIL NIL NIL)", end - start);
    CHECK_STR(buf_cstr(&out), buf_cstr(&want));
    buf_free(&out);
    buf_free(&want);
    mime_free(r);
}

TEST(message_rfc822_single_part_section)
{
    const char *m = "Content-Type: message/rfc822\r\n\r\nSubject: s\r\n\r\nbody\r\n";
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK_INT(r->kind, MIME_MESSAGE);
    unsigned p1[] = { 1 }, p11[] = { 1, 1 }, p12[] = { 1, 2 };
    CHECK(mime_find_section(r, p1, 1) == r);
    CHECK(mime_find_section(r, p11, 2) == r->children);
    CHECK(mime_find_section(r, p12, 2) == NULL);
    CHECK_INT(r->children->body_size, 6);
    mime_free(r);
}

TEST(broken_and_missing_boundaries)
{
    /* Declared boundary never appears: no parts; BODYSTRUCTURE stays valid. */
    const char *m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--c\r\nx\r\n";
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK_INT(r->kind, MIME_MULTIPART);
    CHECK_INT(r->nchildren, 0);
    CHECK(r->missing_end_boundary);
    CHECK_INT(r->body_size, strlen("--c\r\nx\r\n"));
    struct buf out = BUF_INIT;
    CHECK_INT(imap_bodystructure(&out, r, false), 0);
    CHECK_STR(buf_cstr(&out),
              "((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 0 0) \"mixed\")");
    mime_free(r);

    /* Final boundary missing: the last part runs to the end. */
    m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nabc\r\n";
    r = mime_parse(m, strlen(m));
    CHECK_INT(r->nchildren, 1);
    CHECK(r->missing_end_boundary);
    CHECK_INT(child(r, 1)->body_size, 5);
    CHECK_INT(child(r, 1)->body_lines, 1);
    mime_free(r);

    /* No boundary parameter: one text/plain part, like Dovecot. */
    m = "Content-Type: multipart/mixed\r\n\r\n--b\r\nabc\r\n";
    r = mime_parse(m, strlen(m));
    CHECK_INT(r->kind, MIME_LEAF);
    CHECK(r->no_boundary);
    buf_reset(&out);
    CHECK_INT(imap_bodystructure(&out, r, true), 0);
    CHECK_STR(buf_cstr(&out),
              "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 10 2 NIL NIL NIL NIL)");
    mime_free(r);

    /* A boundary line right after a part's header, without the empty line,
     * and a boundary with trailing white space. */
    m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/x\r\n"
        "--b  \r\n\r\nz\r\n--b--";
    r = mime_parse(m, strlen(m));
    CHECK_INT(r->nchildren, 2);
    CHECK_INT(child(r, 1)->body_size, 0);
    CHECK_INT(child(r, 1)->hdr_size, strlen("Content-Type: text/x"));
    CHECK_INT(child(r, 2)->body_size, 1);
    CHECK(!r->missing_end_boundary);
    buf_free(&out);
    mime_free(r);
}

TEST(longest_boundary_wins)
{
    /* Inner boundary "a" is a prefix of the outer "ab": "--ab" belongs to
     * the outer multipart. */
    const char *m = "Content-Type: multipart/mixed; boundary=ab\r\n\r\n--ab\r\n"
                    "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nx\r\n"
                    "--ab\r\n\r\ny\r\n--ab--\r\n";
    struct mime_part *r = mime_parse(m, strlen(m));
    CHECK_INT(r->nchildren, 2);
    CHECK_INT(child(r, 1)->nchildren, 1);
    CHECK_INT(child(child(r, 1), 1)->body_size, 1);
    CHECK_INT(child(r, 2)->body_off, off(m, "y\r\n--ab--"));
    mime_free(r);
}

TEST(digest_default_type)
{
    const char *m = "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
                    "Subject: in digest\r\n\r\nbody\r\n--d--\r\n";
    struct mime_part *r = mime_parse(m, strlen(m));
    const struct mime_part *c = child(r, 1);
    CHECK(c && mime_part_is(c, "message", "rfc822"));
    CHECK_INT(c->kind, MIME_MESSAGE);
    CHECK(c->children && c->children->subject.p != NULL);
    CHECK_INT(c->children->body_size, 4);
    mime_free(r);
}

TEST(depth_limit)
{
    struct buf m = BUF_INIT;
    int levels = 150;
    for (int i = 0; i < levels; i++)
        buf_printf(&m, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i);
    buf_printf(&m, "\r\ndeep\r\n");
    for (int i = levels - 1; i >= 0; i--)
        buf_printf(&m, "--b%d--\r\n", i);
    struct mime_part *r = mime_parse(m.data, m.len);
    CHECK(r != NULL);
    const struct mime_part *p = r;
    while (p->children)
        p = p->children;
    CHECK_INT(p->depth, MIME_MAX_DEPTH);
    CHECK(p->opaque);
    CHECK_INT(p->kind, MIME_LEAF);
    CHECK_INT(check_msg(m.data, m.len), 0);
    struct buf out = BUF_INIT;
    CHECK_INT(imap_bodystructure(&out, r, true), 0);
    CHECK(strstr(buf_cstr(&out), "\"APPLICATION\" \"OCTET-STREAM\"") != NULL);
    buf_free(&out);
    mime_free(r);

    /* message/rfc822 nested without end stops at the limit too. */
    buf_reset(&m);
    for (int i = 0; i < 1000; i++)
        buf_printf(&m, "Content-Type: message/rfc822\r\n\r\n");
    CHECK_INT(check_msg(m.data, m.len), 0);
    buf_free(&m);
}

TEST(many_parts_linear)
{
    /* About 1 MB with 12000 parts: the part count is capped and the whole
     * thing parses in one pass (a quadratic parser takes minutes here). */
    struct buf m = BUF_INIT;
    buf_printf(&m, "Content-Type: multipart/mixed; boundary=zz\r\n\r\n");
    for (int i = 0; i < 12000; i++)
        buf_printf(&m, "--zz\r\nContent-Type: text/plain\r\n\r\npart %05d padding padding padding padding\r\n", i);
    buf_printf(&m, "--zz--\r\n");
    CHECK(m.len > 900000);
    clock_t t0 = clock();
    struct mime_part *r = mime_parse(m.data, m.len);
    CHECK(r != NULL);
    CHECK_INT(r->nchildren, MIME_MAX_PARTS - 1);
    CHECK(!r->missing_end_boundary);
    CHECK_INT(r->body_off + r->body_size, m.len);
    struct buf out = BUF_INIT;
    CHECK_INT(imap_bodystructure(&out, r, true), 0);
    fprintf(stderr, "many_parts_linear: %.3f s CPU\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    buf_free(&out);
    mime_free(r);
    /* Many boundary-like lines that match nothing. */
    buf_reset(&m);
    buf_printf(&m, "Content-Type: multipart/mixed; boundary=zz\r\n\r\n");
    for (int i = 0; i < 100000; i++)
        buf_printf(&m, "--z\r\n");
    CHECK_INT(check_msg(m.data, m.len), 0);
    buf_free(&m);
}

static void decode_is(const char *in, const char *want)
{
    struct buf out = BUF_INIT;
    CHECK_INT(mime_decode_header(in, strlen(in), &out), 0);
    CHECK_STR(buf_cstr(&out), want);
    buf_free(&out);
}

TEST(rfc2047)
{
    decode_is("=?utf-8?q?caf=C3=A9?=", "caf\xC3\xA9");
    decode_is("=?ISO-8859-1?B?SWYgeW91IGNhbiByZWFkIHRoaXMgeW8=?= "
              "=?ISO-8859-2?B?dSB1bmRlcnN0YW5kIHRoZSBleGFtcGxlLg==?=",
              "If you can read this you understand the example.");
    decode_is("=?iso-8859-1?q?Andr=E9?= Pirard", "Andr\xC3\xA9 Pirard");
    decode_is("=?utf-8?q?=C3?= \r\n =?utf-8?q?=A9?=", "\xC3\xA9");   /* split character */
    decode_is("=?utf-8?b?w6k=?==?utf-8?b?w6k=?=", "\xC3\xA9\xC3\xA9");
    decode_is("a =?us-ascii?q?b_c?= d", "a b c d");
    decode_is("=?x-no-such-charset?q?abc?=", "=?x-no-such-charset?q?abc?=");
    decode_is("=?utf-8?x?abc?=", "=?utf-8?x?abc?=");
    decode_is("=?utf-8?q?abc", "=?utf-8?q?abc");
    decode_is("=?utf-8?q?a b?=", "=?utf-8?q?a b?=");
    decode_is("=?utf-8?q?=FF?=", "\xEF\xBF\xBD");
    decode_is("=?utf-8*en?q?x?=", "x");
    decode_is("=?../../etc?q?x?=", "=?../../etc?q?x?=");
    decode_is("plain\r\n folded", "plain folded");
    decode_is("=?", "=?");
    decode_is("", "");
}

static struct buf param_msg;       /* the tree points into the message */

static const struct mime_param *params_of(struct mime_part **r, const char *ct)
{
    buf_reset(&param_msg);
    buf_printf(&param_msg, "Content-Type: %s\r\n\r\n", ct);
    *r = mime_parse(param_msg.data, param_msg.len);
    return (*r)->type_params;
}

TEST(rfc2231)
{
    struct mime_part *r;
    const struct mime_param *p;
    p = params_of(&r, "application/x-stuff;\r\n title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A");
    CHECK(p && p->extended);
    CHECK_STR(p ? p->name : NULL, "title");
    CHECK_STR(p ? p->value : NULL, "This is ***fun***");
    mime_free(r);

    p = params_of(&r, "message/external-body; access-type=URL;\r\n URL*0=\"ftp://\";\r\n"
                      " URL*1=\"cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar\"");
    p = mime_param_find(p, "url");
    CHECK(p && !p->extended);
    CHECK_STR(p ? p->value : NULL, "ftp://cs.utk.edu/pub/moore/bulk-mailer/bulk-mailer.tar");
    mime_free(r);

    p = params_of(&r, "application/x-stuff; title*2=\"isn't it!\";"
                      " title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*0*=us-ascii'en'This%20is%20even%20more%20");
    CHECK_STR(p ? p->value : NULL, "This is even more ***fun*** isn't it!");
    CHECK_STR(p ? p->raw : NULL, "us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!");
    mime_free(r);

    p = params_of(&r, "text/plain; name*=iso-8859-1''caf%E9; charset=\"a\\\"b\"; x=\"=?utf-8?b?w6k=?=\"");
    CHECK_STR(p ? p->value : NULL, "caf\xC3\xA9");
    CHECK_STR(mime_param_find(p, "charset")->raw, "a\"b");
    CHECK_STR(mime_param_find(p, "x")->value, "\xC3\xA9");
    CHECK_STR(mime_param_find(p, "x")->raw, "=?utf-8?b?w6k=?=");
    mime_free(r);

    /* Malformed: bad escapes, unknown charset, gaps, junk, unterminated quote. */
    p = params_of(&r, "text/plain; a*=%zz%4; b*=nope''%41; c*1=x; ;; junk; d=\"open");
    CHECK_STR(mime_param_find(p, "a")->value, "%zz%4");
    CHECK_STR(mime_param_find(p, "b")->value, "A");
    CHECK_STR(mime_param_find(p, "c")->value, "");
    CHECK_STR(mime_param_find(p, "d")->value, "open");
    mime_free(r);

    /* Comments and odd spacing; invalid type falls back to the default. */
    p = params_of(&r, "text (comment) / html ; charset = utf-8 (c)");
    CHECK_STR(r->type, "text");
    CHECK_STR(r->subtype, "html");
    CHECK_STR(mime_param_find(p, "charset")->value, "utf-8");
    mime_free(r);
    params_of(&r, "garbage");
    CHECK(r->type == NULL && mime_part_is(r, "text", "plain"));
    mime_free(r);
    params_of(&r, "");
    mime_free(r);
    buf_free(&param_msg);
}

TEST(body_decoders)
{
    struct buf out = BUF_INIT;
    CHECK_INT(mime_decode_base64(S("aGVs\r\nbG8g\r\nd29y!bGQ=\r\nignored"), &out), 0);
    CHECK_INT(out.len, 11);
    CHECK(memcmp(out.data, "hello world", 11) == 0);
    buf_reset(&out);
    CHECK_INT(mime_decode_qp(S("caf=C3=A9 =\r\nsoft  \r\n=ZZ=4\r\nend="), &out), 0);
    CHECK_INT(out.len, strlen("caf\xC3\xA9 soft\r\n=ZZ=4\r\nend"));
    CHECK(memcmp(out.data, "caf\xC3\xA9 soft\r\n=ZZ=4\r\nend", out.len) == 0);
    buf_reset(&out);
    CHECK_INT(mime_decode_qp(S("a=\nb\n"), &out), 0);
    CHECK_INT(out.len, 3);
    CHECK(memcmp(out.data, "ab\n", 3) == 0);
    buf_free(&out);
}

TEST(header_find_and_unfold)
{
    const char *h = "X-A: 1\r\nSubject:  two\r\n\tlines \r\nX-B: 3\r\n\r\nSubject: body\r\n";
    struct mime_str s = mime_header_find(h, strlen(h), "subject");
    CHECK(s.p == h + off(h, "  two"));
    struct buf out = BUF_INIT;
    CHECK_INT(mime_unfold(s.p, s.len, &out), 0);
    CHECK_STR(buf_cstr(&out), "two\tlines");
    CHECK(mime_header_find(h, strlen(h), "x-c").p == NULL);
    buf_free(&out);
}

/* Every fixture parses into a sound tree and writes without failure. */
static int parse_dir(const char *dir, int *files)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int bad = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".eml"))
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) {
            bad++;
            continue;
        }
        struct buf m = BUF_INIT;
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
            buf_append(&m, chunk, n);
        fclose(f);
        struct mime_part *r = mime_parse(m.data ? m.data : "", m.len);
        struct buf out = BUF_INIT;
        if (!r || check_msg(m.data ? m.data : "", m.len) < 0 || imap_bodystructure(&out, r, true) < 0 ||
            imap_envelope(&out, r) < 0) {
            fprintf(stderr, "fixture failed: %s\n", path);
            bad++;
        }
        (*files)++;
        buf_free(&out);
        mime_free(r);
        buf_free(&m);
    }
    closedir(d);
    return bad;
}

TEST(fixture_corpus)
{
    int files = 0;
    CHECK_INT(parse_dir("tests/fixtures/mime/rfc", &files), 0);
    CHECK_INT(parse_dir("tests/fixtures/mime/thirdparty", &files), 0);
    CHECK_INT(parse_dir("tests/fixtures/mime/malformed", &files), 0);
    CHECK(files >= 50);
}

int main(void)
{
    RUN(simple_message);
    RUN(no_trailing_newline_and_no_body);
    RUN(multipart_alternative);
    RUN(lf_only_message);
    RUN(nested_multipart_with_attachment);
    RUN(message_rfc822_with_multipart);
    RUN(message_rfc822_single_part_section);
    RUN(broken_and_missing_boundaries);
    RUN(longest_boundary_wins);
    RUN(digest_default_type);
    RUN(depth_limit);
    RUN(many_parts_linear);
    RUN(rfc2047);
    RUN(rfc2231);
    RUN(body_decoders);
    RUN(header_find_and_unfold);
    RUN(fixture_corpus);
    return test_summary();
}
