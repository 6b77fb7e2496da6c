/* Unit tests for core/imap_bodystructure.c: IMAP strings, ENVELOPE and
 * BODY/BODYSTRUCTURE texts compared with the exact RFC 3501 output. */
#include <stdbool.h>
#include <string.h>

#include "buf.h"
#include "imap_bodystructure.h"
#include "mime.h"
#include "test.h"

static struct buf result;

static const char *envelope_of(const char *msg)
{
    buf_reset(&result);
    struct mime_part *r = mime_parse(msg, strlen(msg));
    if (!r || imap_envelope(&result, r) < 0)
        buf_printf(&result, "FAILED");
    mime_free(r);
    return buf_cstr(&result);
}

static const char *body_of(const char *msg, bool ext)
{
    buf_reset(&result);
    struct mime_part *r = mime_parse(msg, strlen(msg));
    if (!r || imap_bodystructure(&result, r, ext) < 0)
        buf_printf(&result, "FAILED");
    mime_free(r);
    return buf_cstr(&result);
}

static const char *nstring(const char *s, size_t len)
{
    buf_reset(&result);
    imap_write_nstring(&result, s, len);
    return buf_cstr(&result);
}

TEST(strings)
{
    CHECK_STR(nstring(NULL, 0), "NIL");
    CHECK_STR(nstring("", 0), "\"\"");
    CHECK_STR(nstring("a\"b\\c", 5), "\"a\\\"b\\\\c\"");
    CHECK_STR(nstring("caf\xC3\xA9", 5), "{5}\r\ncaf\xC3\xA9");
    CHECK_STR(nstring("a\r\nb", 4), "{4}\r\na\r\nb");
    buf_reset(&result);
    CHECK_INT(imap_write_nstring(&result, "a\0b", 3), 0);
    CHECK_INT(result.len, 8);
    CHECK(memcmp(result.data, "{3}\r\na\0b", 8) == 0);
    char big[IMAP_QUOTED_MAX + 1];
    memset(big, 'x', sizeof big);
    buf_reset(&result);
    imap_write_nstring(&result, big, sizeof big);
    CHECK(result.len > 7 && memcmp(result.data, "{1001}\r\n", 8) == 0);
}

TEST(envelope_basic)
{
    CHECK_STR(envelope_of("Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
                          "From: Terry Gray <gray@cac.washington.edu>\r\n"
                          "Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
                          "To: imap@cac.washington.edu\r\n"
                          "cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n"
                          "Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
                          "\r\nbody\r\n"),
              "(\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" \"IMAP4rev1 WG mtg summary and minutes\""
              " ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\"))"
              " ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\"))"
              " ((\"Terry Gray\" NIL \"gray\" \"cac.washington.edu\"))"
              " ((NIL NIL \"imap\" \"cac.washington.edu\"))"
              " ((NIL NIL \"minutes\" \"CNRI.Reston.VA.US\")(\"John Klensin\" NIL \"KLENSIN\" \"MIT.EDU\"))"
              " NIL NIL \"<B27397-0100000@cac.washington.edu>\")");
    /* No header at all. */
    CHECK_STR(envelope_of("\r\nbody"), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)");
}

/* Parentheses balance outside quoted strings (no literals expected). */
static bool balanced(const char *s)
{
    int depth = 0;
    bool quoted = false;
    for (; *s; s++) {
        if (quoted && *s == '\\' && s[1])
            s++;
        else if (*s == '"')
            quoted = !quoted;
        else if (!quoted && *s == '(')
            depth++;
        else if (!quoted && *s == ')' && --depth < 0)
            return false;
    }
    return depth == 0 && !quoted;
}

TEST(envelope_addresses)
{
    /* Sender and Reply-To given; comments as names; routes; groups. */
    CHECK_STR(envelope_of("From: a@b (Alice A.)\r\n"
                          "Sender: <@r1,@r2:s@t>\r\n"
                          "Reply-To: \"Quoted \\\"Name\\\"\" <r@s>\r\n"
                          "To: undisclosed-recipients:;\r\n"
                          "Cc: John Q. Public <jqp@x>, nodomain, <>\r\n"
                          "Bcc: g1: a@b; g2: c@d\r\n"
                          "In-Reply-To: <x@y>\r\n"
                          "Subject: \r\n"
                          "\r\n"),
              "(NIL \"\""
              " ((\"Alice A.\" NIL \"a\" \"b\"))"
              " ((NIL \"@r1,@r2\" \"s\" \"t\"))"
              " ((\"Quoted \\\"Name\\\"\" NIL \"r\" \"s\"))"
              " ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))"
              " ((\"John Q. Public\" NIL \"jqp\" \"x\")(NIL NIL \"nodomain\" \"MISSING_DOMAIN\")"
              "(NIL NIL \"MISSING_MAILBOX\" \"MISSING_DOMAIN\"))"
              " ((NIL NIL \"g1\" NIL)(NIL NIL \"a\" \"b\")(NIL NIL NIL NIL)"
              "(NIL NIL \"g2\" NIL)(NIL NIL \"c\" \"d\")(NIL NIL NIL NIL))"
              " \"<x@y>\" NIL)");
    /* Empty address fields are NIL; an 8-bit subject becomes a literal;
     * encoded words stay raw. */
    CHECK_STR(envelope_of("From: =?utf-8?q?J=C3=B6rg?= <j@x>\r\nTo:  \r\nSubject: caf\xC3\xA9\r\n\r\n"),
              "(NIL {5}\r\ncaf\xC3\xA9"
              " ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x\"))"
              " ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x\"))"
              " ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"x\"))"
              " NIL NIL NIL NIL NIL)");
    /* Garbage never breaks the syntax: parentheses balance outside quoted
     * strings and every group start has its end. */
    const char *e = envelope_of("From: <<<>>>,,,;;:::\"unterminated\r\n\r\n");
    CHECK(strncmp(e, "(NIL NIL ((", 11) == 0);
    CHECK(balanced(e));
    CHECK(strstr(e, "(NIL NIL \"unterminated\" \"MISSING_DOMAIN\")(NIL NIL NIL NIL))") != NULL);
    CHECK(balanced(envelope_of("To: a:b:c:(((\r\n\r\n")));
    CHECK(balanced(envelope_of("To: \"\\\r\n\r\n")));
}

TEST(single_part_bodies)
{
    /* The default type, and text without a charset parameter. */
    CHECK_STR(body_of("Subject: x\r\n\r\nhello\r\n", true),
              "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 7 1 NIL NIL NIL NIL)");
    CHECK_STR(body_of("Subject: x\r\n\r\nhello\r\n", false),
              "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 7 1)");
    CHECK_STR(body_of("Content-Type: TEXT/HTML; format=flowed\r\n\r\n<p>\r\n\r\n", true),
              "(\"TEXT\" \"HTML\" (\"format\" \"flowed\" \"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 7 2"
              " NIL NIL NIL NIL)");
    /* Every body field and every extension field. */
    CHECK_STR(body_of("Content-Type: image/png; name=\"a b.png\"\r\n"
                      "Content-ID: <id@x>\r\n"
                      "Content-Description: a\r\n picture\r\n"
                      "Content-Transfer-Encoding: BASE64\r\n"
                      "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n"
                      "Content-Disposition: inline; filename=\"a b.png\"; size=3\r\n"
                      "Content-Language: en\r\n"
                      "Content-Location: http://example.com/a.png\r\n"
                      "\r\n"
                      "AAAA\r\n", true),
              "(\"image\" \"png\" (\"name\" \"a b.png\") \"<id@x>\" \"a picture\" \"BASE64\" 6"
              " \"Q2hlY2sgSW50ZWdyaXR5IQ==\" (\"inline\" (\"filename\" \"a b.png\" \"size\" \"3\"))"
              " (\"en\") \"http://example.com/a.png\")");
    /* A transfer-encoded message/rfc822 cannot be parsed: no envelope, so
     * it is reported as an opaque attachment. */
    CHECK_STR(body_of("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n",
                      false),
              "(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"base64\" 6)");
    /* Disposition without parameters. */
    CHECK_STR(body_of("Content-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n\r\nx", true),
              "(\"application\" \"octet-stream\" NIL NIL NIL \"7BIT\" 1 NIL (\"attachment\" NIL) NIL NIL)");
}

TEST(message_rfc822_body)
{
    const char *m = "Content-Type: message/rfc822\r\n\r\n"
                    "From: x@y\r\nSubject: in\r\n\r\nhi\r\n";
    CHECK_STR(body_of(m, false),
              "(\"message\" \"rfc822\" NIL NIL NIL \"7BIT\" 30"
              " (NIL \"in\" ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\")) ((NIL NIL \"x\" \"y\"))"
              " NIL NIL NIL NIL NIL)"
              " (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 4 1) 4)");
}

TEST(multipart_extension_fields)
{
    const char *m = "Content-Type: multipart/mixed; boundary=\"=_x\"\r\n"
                    "Content-Disposition: inline\r\n"
                    "Content-Language: de, en\r\n"
                    "Content-Location: here\r\n"
                    "\r\n"
                    "--=_x\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: quoted-printable\r\n"
                    "\r\n"
                    "caf=C3=A9\r\n"
                    "--=_x--\r\n";
    CHECK_STR(body_of(m, true),
              "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 9 1"
              " NIL NIL NIL NIL)"
              " \"mixed\" (\"boundary\" \"=_x\") (\"inline\" NIL) (\"de\" \"en\") \"here\")");
    CHECK_STR(body_of(m, false),
              "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 9 1) \"mixed\")");
}

int main(void)
{
    RUN(strings);
    RUN(envelope_basic);
    RUN(envelope_addresses);
    RUN(single_part_bodies);
    RUN(message_rfc822_body);
    RUN(multipart_extension_fields);
    buf_free(&result);
    return test_summary();
}
