"""The SMTP dialogue on port 25: replies and enhanced codes, sequencing,
PIPELINING, CHUNKING, STARTTLS, and the smuggling and injection defences."""

import ssl

import pytest

from helpers import (HOSTNAME, QUEUED_RE, Smtp, dot_stuff, make_message,
                     split_stored, unique)


def test_greeting_and_ehlo_keywords(smtpd):
    with Smtp(smtpd.port) as c:
        assert c.greeting.line == "220 %s ESMTP posthorn" % HOSTNAME
        r = c.ehlo()
        assert r.lines[0].startswith("250-" + HOSTNAME)
        kws = [l[4:] for l in r.lines[1:]]
        for kw in ("PIPELINING", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME",
                   "SMTPUTF8", "CHUNKING"):
            assert kw in kws, (kw, r)
        assert "SIZE 10240000" in kws, r
        assert not any(k.startswith("AUTH") for k in kws), r


def test_helo(smtpd):
    with Smtp(smtpd.port) as c:
        r = c.cmd("HELO client.example.org")
        assert r.code == 250 and len(r.lines) == 1, r
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"


def test_simple_commands(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        assert c.cmd("NOOP").line == "250 2.0.0 Ok"
        assert c.cmd("RSET").line == "250 2.0.0 Ok"
        assert c.cmd("VRFY user@example.test").code == 252
        assert c.cmd("EXPN staff").line.startswith("502 5.5.1")
        assert c.cmd("HELP").code == 214
        assert c.cmd("FROBNICATE").line == "500 5.5.2 Error: command not recognized"
        assert c.cmd("QUIT").line.startswith("221 2.0.0")
        assert c.wait_closed(10)


def test_sequencing_errors(smtpd):
    with Smtp(smtpd.port) as c:
        assert c.cmd("MAIL FROM:<a@example.org>").line.startswith("503 5.5.1")
        c.ehlo()
        assert c.cmd("RCPT TO:<user@example.test>").line.startswith("503 5.5.1")
        assert c.cmd("DATA").line.startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"
        assert c.cmd("MAIL FROM:<a@example.org>").line.startswith("503 5.5.1")
        # MAIL but no valid recipient.
        assert c.cmd("RCPT TO:<nobody@example.test>").code == 550
        assert c.cmd("DATA").line.startswith("554 5.5.1")
        assert c.cmd("RSET").line == "250 2.0.0 Ok"
        assert c.cmd("RCPT TO:<user@example.test>").line.startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<user@example.test>").line == "250 2.1.5 Ok"


@pytest.mark.parametrize("arg", ["<a>", "<@a>", "<a:@a>", "a@example.org",
                                 "<a@example.org", "<a b@example.org>"])
def test_bad_sender_syntax(smtpd, arg):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:" + arg)
        assert r.line.startswith("501 5.1.7"), r
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"


@pytest.mark.parametrize("arg", ["<a>", "<@a>", "<a:@a>", "user@example.test", "<>"])
def test_bad_recipient_syntax(smtpd, arg):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        r = c.cmd("RCPT TO:" + arg)
        assert r.line.startswith("501 5.1.3"), r


def test_mail_parameters(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@example.org> FROBNICATE=1")
        assert r.line.startswith("555 5.5.4"), r
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME")
        assert r.line == "250 2.1.0 Ok", r
        c.cmd("RSET")
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=99999999999")
        assert r.line.startswith("552 5.3.4"), r


def test_auth_refused_on_port_25(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AHNlY3JldA==")
        assert r.line.startswith("503 5.5.1"), r


def test_pipelined_transaction_replies_in_order(smtpd):
    subj = unique("pipe")
    msg = make_message(subj)
    with Smtp(smtpd.port) as c:
        c.send("EHLO client.example.org\r\n"
               "MAIL FROM:<p@example.org>\r\n"
               "RCPT TO:<user@example.test>\r\n"
               "RCPT TO:<nobody@example.test>\r\n"
               "RCPT TO:<other@example.test>\r\n"
               "DATA\r\n")
        r = c.reply()
        assert r.code == 250 and r.lines[0].startswith("250-" + HOSTNAME), r
        assert c.reply().line == "250 2.1.0 Ok"
        assert c.reply().line == "250 2.1.5 Ok"
        assert c.reply().line.startswith("550 5.1.1")
        assert c.reply().line == "250 2.1.5 Ok"
        assert c.reply().code == 354
        c.send(dot_stuff(msg) + b"NOOP\r\nQUIT\r\n")
        assert QUEUED_RE.match(c.reply().line)
        assert c.reply().line == "250 2.0.0 Ok"
        assert c.reply().line.startswith("221 2.0.0")
    assert len(smtpd.find("user@example.test", subj)) == 1
    assert len(smtpd.find("other@example.test", subj)) == 1


def test_whole_session_in_one_send(smtpd):
    subjects = [unique("onesend") for _ in range(2)]
    payload = b"EHLO client.example.org\r\n"
    for s in subjects:
        payload += (b"MAIL FROM:<p@example.org>\r\nRCPT TO:<user@example.test>\r\n"
                    b"DATA\r\n" + dot_stuff(make_message(s)))
    payload += b"QUIT\r\n"
    with Smtp(smtpd.port) as c:
        c.send(payload)
        assert c.reply().code == 250
        for _ in subjects:
            assert c.reply().line == "250 2.1.0 Ok"
            assert c.reply().line == "250 2.1.5 Ok"
            assert c.reply().code == 354
            assert QUEUED_RE.match(c.reply().line)
        assert c.reply().line.startswith("221 2.0.0")
        assert c.wait_closed(10)
    for s in subjects:
        assert len(smtpd.find("user@example.test", s)) == 1


def test_bdat_chunks_binary_safe(smtpd):
    subj = unique("bdat")
    # Not dot-stuffed, CRLF split across chunks, a lone "." line, 8-bit
    # and NUL octets: BDAT content is taken exactly as counted.
    body = (b"line one\r\n.\r\n..two dots stay two\r\n"
            + bytes(range(0x80, 0x100)) + b"\x00\x01\x7f\r\n"
            + b"QUIT\r\nend\r\n")
    msg = make_message(subj, body=body)
    cut1 = msg.index(b"\r\n.\r\n") + 1  # chunk 1 ends with CR, chunk 2 starts with LF
    cut2 = len(msg) - 7
    chunks = [msg[:cut1], msg[cut1:cut2], msg[cut2:]]
    with Smtp(smtpd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<b@example.org>").line == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<user@example.test>").line == "250 2.1.5 Ok"
        for ch in chunks:
            c.send(b"BDAT %d\r\n" % len(ch) + ch)
            r = c.reply()
            assert r.line == "250 2.0.0 %d octets received" % len(ch), r
        r = c.cmd("BDAT 0 LAST")
        assert QUEUED_RE.match(r.line), r
        assert c.cmd("NOOP").line == "250 2.0.0 Ok"
    data = smtpd.read_one("user@example.test", subj)
    _, received, rest = split_stored(data)
    assert rest == msg
    assert b"with ESMTP id " in received


def test_bdat_last_with_data_pipelined(smtpd):
    subj = unique("bdatlast")
    msg = make_message(subj)
    with Smtp(smtpd.port) as c:
        c.ehlo()
        half = len(msg) // 2
        c.send(b"MAIL FROM:<b@example.org>\r\nRCPT TO:<other@example.test>\r\n"
               + b"BDAT %d\r\n" % half + msg[:half]
               + b"BDAT %d LAST\r\n" % (len(msg) - half) + msg[half:] + b"NOOP\r\n")
        assert c.reply().line == "250 2.1.0 Ok"
        assert c.reply().line == "250 2.1.5 Ok"
        assert c.reply().line == "250 2.0.0 %d octets received" % half
        assert QUEUED_RE.match(c.reply().line)
        assert c.reply().line == "250 2.0.0 Ok"
    assert split_stored(smtpd.read_one("other@example.test", subj))[2] == msg


def test_bdat_without_transaction_discards_chunk(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        chunk = b"MAIL FROM:<evil@example.org>\r\n"
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        r = c.reply()
        assert r.line.startswith("503 5.5.1"), r
        # The chunk was read and dropped: the next reply is the NOOP's.
        assert c.reply().line == "250 2.0.0 Ok"
        c.cmd("MAIL FROM:<b@example.org>")
        chunk = b"RSET\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
        assert c.reply().line.startswith("503 5.5.1")
        assert c.reply().line == "250 2.0.0 Ok"


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n"],
                         ids=["lf-dot-lf", "cr-dot-cr", "crlf-dot-lf", "lf-dot-crlf"])
def test_smuggling_refused(smtpd, smuggle):
    subj = unique("smuggle")
    inner = unique("inner")
    with Smtp(smtpd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"
        assert c.cmd("RCPT TO:<user@example.test>").line == "250 2.1.5 Ok"
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: " + subj.encode() + b"\r\n\r\na" + smuggle
               + b"MAIL FROM:<x@y.example>\r\n"
               + b"RCPT TO:<other@example.test>\r\n"
               + b"DATA\r\n"
               + b"Subject: " + inner.encode() + b"\r\n\r\nsmuggled\r\n"
               + b".\r\n")
        r = c.reply()
        assert r.line.startswith("550 5.6.0"), r
        # Exactly one reply for all of it: the next one answers our NOOP.
        r = c.cmd("NOOP")
        assert r.line == "250 2.0.0 Ok", r
        assert c.pending(0.2) == b""
        # The transaction was reset; a fresh one works.
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"
    for box in ("user@example.test", "other@example.test"):
        assert smtpd.find(box, subj) == []
        assert smtpd.find(box, inner) == []


def test_bare_lf_in_body_refused(smtpd):
    subj = unique("barelf")
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<user@example.test>")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: " + subj.encode() + b"\r\n\r\nline\nother line\r\n.\r\n")
        assert c.reply().line.startswith("550 5.6.0")
    assert smtpd.find("user@example.test", subj) == []


def test_starttls_then_ehlo_again(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.starttls()
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        assert c.cmd("MAIL FROM:<a@example.org>").line.startswith("503 5.5.1")
        r = c.ehlo()
        assert not any("STARTTLS" in l for l in r.lines), r
        assert c.cmd("STARTTLS").line.startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"


def test_starttls_injection_discarded(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.send("STARTTLS\r\nNOOP\r\nMAIL FROM:<evil@example.org>\r\n")
        r = c.reply()
        assert r.line.startswith("220 2.0.0"), r
        assert c.pending(0.2) == b"", "reply to an injected command in plaintext"
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        # The first reply over TLS must answer our EHLO, not the injected NOOP.
        r = c.cmd("EHLO client.example.org")
        assert r.lines[0].startswith("250-" + HOSTNAME), r
        assert c.cmd("RCPT TO:<user@example.test>").line.startswith("503 5.5.1")


def test_starttls_not_offered_twice_and_received_says_tls(smtpd):
    subj = unique("tlsraw")
    msg = make_message(subj)
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<user@example.test>")
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg))
        assert QUEUED_RE.match(c.reply().line)
    _, received, rest = split_stored(smtpd.read_one("user@example.test", subj))
    assert b"ESMTPS" in received and b"TLSv1." in received
    assert rest == msg
