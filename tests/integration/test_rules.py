"""Header and body rules of the spam score through SMTP (issue 6): the names
of the rules a message hits show in X-Spam-Status tests= and in the log
line, with their weights; a well-formed message hits none."""

import pytest

from helpers import QUEUED_RE, send_raw_message, unique

USER = "user@example.test"


@pytest.fixture(scope="module")
def rulesd(mod_daemons):
    return mod_daemons.make({"ENABLE_SPAMASSASSIN": "1"}, name="rules")


def header_of(d, subj):
    data = d.read_one(USER, subj)
    hdr = data.split(b"\r\n\r\n", 1)[0].decode()
    return hdr.replace("\r\n\t", " ")


def status_tests(hdr):
    for line in hdr.split("\r\n"):
        if line.startswith("X-Spam-Status: "):
            return line.split("tests=", 1)[1].replace(" ", "").split(",")
    return None


def send(d, lines, body):
    msg = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
    final = send_raw_message(d.port, "sender@example.org", [USER], msg)
    assert QUEUED_RE.match(final.line), final


def test_no_date_no_msgid_html_only(rulesd):
    subj = unique("rules")
    send(rulesd, ["From: Sender <sender@example.org>", "To: <%s>" % USER,
                  "Subject: %s" % subj, "MIME-Version: 1.0",
                  "Content-Type: text/html; charset=utf-8"],
         "<html><body><p>Hello there</p></body></html>\r\n")
    hdr = header_of(rulesd, subj)
    # 1.36 + 0.497 + 1.105 = 2.962 >= SA_TAG 2.0
    assert "X-Spam-Status: No, score=2.96 required=6.31" in hdr, hdr
    assert status_tests(hdr) == ["MISSING_DATE", "MISSING_MID", "HTML_ONLY"], hdr
    log = rulesd.log_text()
    assert "reasons=MISSING_DATE(1.36),MISSING_MID(0.5),HTML_ONLY(1.1) action=tag" in log


def test_well_formed_message_hits_nothing(rulesd):
    subj = unique("fine")
    send(rulesd, ["From: Sender <sender@example.org>", "To: <%s>" % USER,
                  "Subject: %s" % subj, "Date: Thu, 01 Jan 2026 00:00:00 +0000",
                  "Message-ID: <%s@example.org>" % subj],
         "Hello, plain text.\r\n")
    hdr = header_of(rulesd, subj)
    assert "X-Spam-" not in hdr, hdr
    assert "reasons=- action=accept" in rulesd.log_text()


def test_forged_local_sender_and_bad_headers(rulesd):
    """From: in our own domain on port 25, a date and a Message-ID that are
    not RFC 5322, a shouting obfuscated subject, a link whose text names
    another domain."""
    subj = unique("forged")
    send(rulesd, ["From: <user@example.test>", "To: <%s>" % USER,
                  "Subject: %s CHEAP V1AGRA FOR YOU" % subj,
                  "Date: yesterday at noon",
                  "Message-ID: not-a-message-id", "MIME-Version: 1.0",
                  "Content-Type: multipart/alternative; boundary=b"],
         "--b\r\nContent-Type: text/plain\r\n\r\nLog in at www.bank.example\r\n"
         "--b\r\nContent-Type: text/html\r\n\r\n"
         "<a href=\"http://evil.example/login\">www.bank.example</a>\r\n--b--\r\n")
    hdr = header_of(rulesd, subj)
    tests = status_tests(hdr)
    assert tests is not None, hdr
    for name in ("INVALID_DATE", "INVALID_MSGID", "MISMATCHED_LINK", "FROM_LOCAL_UNAUTH"):
        assert name in tests, (name, hdr)
    assert "HTML_ONLY" not in tests
    assert "MISSING_DATE" not in tests


def test_empty_message_scored(rulesd):
    subj = unique("empty")
    send(rulesd, ["From: <sender@example.org>", "To: <%s>" % USER, "Subject: %s" % subj,
                  "Date: Thu, 01 Jan 2026 00:00:00 +0000",
                  "Message-ID: <%s@example.org>" % subj], "\r\n")
    hdr = header_of(rulesd, subj)
    assert status_tests(hdr) == ["EMPTY_BODY"], hdr


def test_rules_off_without_spamassassin(mod_daemons):
    d = mod_daemons.make({}, name="norules")
    subj = unique("off")
    send(d, ["From: <sender@example.org>", "To: <%s>" % USER, "Subject: %s" % subj,
             "Content-Type: text/html"], "<p>x</p>\r\n")
    hdr = header_of(d, subj)
    assert "X-Spam-" not in hdr
    assert "MISSING_DATE" not in d.log_text()
