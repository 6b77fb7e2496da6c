"""Delivery on port 25: where mail lands, how it looks on disk, and the
address resolution order (alias, user, user+tag, catch-all)."""

import os
import smtplib
import ssl
import subprocess

import pytest

from helpers import (HOSTNAME, QUEUED_RE, Smtp, dot_stuff, make_message,
                     send_raw_message, split_stored, unique)


def smtplib_send(port, sender, rcpts, msg, tls=False):
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org",
                      timeout=20) as s:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            code, _ = s.starttls(context=ctx)
            assert code == 220
        refused = s.sendmail(sender, rcpts, msg)
        assert refused == {}


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_smtplib_delivery_to_user(smtpd, tls):
    subj = unique("smtplib")
    msg = make_message(subj)
    smtplib_send(smtpd.port, "sender@example.org", ["user@example.test"], msg, tls)
    data = smtpd.read_one("user@example.test", subj)
    rp, received, rest = split_stored(data)
    assert rp == b"Return-Path: <sender@example.org>"
    assert received.startswith(b"Received: from client.example.org ([127.0.0.1])")
    assert b"by " + HOSTNAME.encode() + b" (posthorn) with " in received
    if tls:
        assert b"with ESMTPS id " in received
        assert b"(using TLSv1.3 with cipher " in received
    else:
        assert b"with ESMTP id " in received
        assert b"using TLS" not in received
    assert rest == msg


def test_raw_delivery_body_intact_and_unstuffed(smtpd):
    subj = unique("raw")
    body = (b"first line\r\n"
            b".leading dot line\r\n"
            b"..two dots\r\n"
            b".\r\n"  # a line with a single dot is content once stuffed
            b"8bit: \xc3\xa4\xc3\xb6\xc3\xbc \xe2\x82\xac\r\n"
            b"trailing spaces   \r\n"
            b"\r\n"
            b"last line\r\n")
    msg = make_message(subj, body=body)
    final = send_raw_message(smtpd.port, "sender@example.org", ["user@example.test"], msg)
    m = QUEUED_RE.match(final.line)
    assert m, final
    data = smtpd.read_one("user@example.test", subj)
    _, received, rest = split_stored(data)
    assert m.group(1).encode() in received
    assert rest == msg
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_alias_delivers_to_target(smtpd):
    subj = unique("alias")
    msg = make_message(subj, to="alias@example.test")
    send_raw_message(smtpd.port, "s@example.org", ["alias@example.test"], msg)
    assert len(smtpd.find("user@example.test", subj)) == 1
    assert not os.path.exists(smtpd.mailbox("alias@example.test"))


def test_catch_all(smtpd):
    subj = unique("catchall")
    msg = make_message(subj, to="anything@catch.test")
    send_raw_message(smtpd.port, "s@example.org", ["anything-at-all@catch.test"], msg)
    assert len(smtpd.find("box@catch.test", subj)) == 1


def test_plus_addressing(smtpd):
    subj = unique("plus")
    msg = make_message(subj, to="user+news@example.test")
    send_raw_message(smtpd.port, "s@example.org", ["user+news@example.test"], msg)
    assert len(smtpd.find("user@example.test", subj)) == 1


def test_uppercase_recipient_is_the_same_user(smtpd):
    subj = unique("upper")
    send_raw_message(smtpd.port, "s@example.org", ["USER@Example.Test"], make_message(subj))
    assert len(smtpd.find("user@example.test", subj)) == 1


def test_one_copy_when_rcpts_resolve_to_same_mailbox(smtpd):
    subj = unique("dedup")
    rcpts = ["user@example.test", "alias@example.test", "user+tag@example.test",
             "user@example.test"]
    final = send_raw_message(smtpd.port, "s@example.org", rcpts, make_message(subj))
    assert QUEUED_RE.match(final.line), final
    assert len(smtpd.find("user@example.test", subj)) == 1


def test_several_recipients_one_copy_each(smtpd):
    subj = unique("multi")
    rcpts = ["user@example.test", "other@example.test", "whoever@catch.test"]
    send_raw_message(smtpd.port, "s@example.org", rcpts, make_message(subj))
    for box in ("user@example.test", "other@example.test", "box@catch.test"):
        assert len(smtpd.find(box, subj)) == 1, box
    assert len(smtpd.find("postmaster@example.test", subj)) == 0


def test_null_sender_accepted(smtpd):
    subj = unique("bounce")
    final = send_raw_message(smtpd.port, "", ["user@example.test"], make_message(subj))
    assert QUEUED_RE.match(final.line), final
    data = smtpd.read_one("user@example.test", subj)
    assert data.startswith(b"Return-Path: <>\r\nReceived: ")


def test_postmaster_without_domain(smtpd):
    # RFC 5321 4.5.1: <Postmaster> must be accepted; it is
    # postmaster@<domain of the hostname>.
    subj = unique("postmaster")
    with Smtp(smtpd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.org>").line.startswith("250 2.1.0")
        r = c.cmd("RCPT TO:<Postmaster>")
        assert r.line.startswith("250 2.1.5"), r
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj)))
        assert QUEUED_RE.match(c.reply().line)
    assert len(smtpd.find("postmaster@example.test", subj)) == 1


def test_unknown_user_550(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>")
        r = c.cmd("RCPT TO:<nobody@example.test>")
        assert r.code == 550 and r.line.startswith("550 5.1.1"), r
        # The session goes on; a good recipient after a bad one still works.
        assert c.cmd("RCPT TO:<user@example.test>").line.startswith("250 2.1.5")


def test_relay_denied_554(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>")
        r = c.cmd("RCPT TO:<someone@elsewhere.test>")
        assert r.line == "554 5.7.1 <someone@elsewhere.test>: Relay access denied", r


def test_alias_to_remote_target_is_forwarded_through_the_queue(smtpd):
    rc, out, err = smtpd.setup("alias", "add", "fwd@example.test", "someone@remote.test")
    assert rc == 0, (rc, out, err)
    subj = unique("forward")
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>")
        assert c.cmd("RCPT TO:<fwd@example.test>").line == "250 2.1.5 Ok"
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj, to="fwd@example.test")))
        assert QUEUED_RE.match(c.reply().line)
    # No local copy; the outbound queue holds it for the remote target.
    rc, out, err = smtpd.setup("queue", "list")
    assert rc == 0, (rc, out, err)
    assert "someone@remote.test" in out, out


def test_partial_recipients_only_valid_ones_get_it(smtpd):
    subj = unique("partial")
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>")
        assert c.cmd("RCPT TO:<nobody@example.test>").code == 550
        assert c.cmd("RCPT TO:<other@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj)))
        assert QUEUED_RE.match(c.reply().line)
    assert len(smtpd.find("other@example.test", subj)) == 1
    assert not os.path.exists(smtpd.mailbox("nobody@example.test"))


def test_swaks_delivery(smtpd):
    subj = unique("swaks")
    p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(smtpd.port),
                        "--from", "swaks@example.org", "--to", "user@example.test",
                        "--helo", "swaks.example.org", "--header", "Subject: " + subj,
                        "--body", "swaks body line\n.dot line", "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "250 2.0.0 Ok: queued as" in p.stdout
    data = smtpd.read_one("user@example.test", subj)
    assert data.startswith(b"Return-Path: <swaks@example.org>\r\n")
    assert b"\r\n.dot line\r\n" in data


def test_swaks_starttls_delivery(smtpd):
    subj = unique("swakstls")
    p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(smtpd.port),
                        "--from", "swaks@example.org", "--to", "other@example.test",
                        "--tls", "--header", "Subject: " + subj, "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    data = smtpd.read_one("other@example.test", subj)
    assert b"with ESMTPS id " in data


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls"])
def test_curl_delivery(smtpd, tmp_path, tls):
    subj = unique("curl")
    msg = make_message(subj, to="user+curl@example.test")
    f = tmp_path / "msg.eml"
    f.write_bytes(msg)
    cmd = ["curl", "-sS", "--max-time", "30", "smtp://127.0.0.1:%d/client.example.org"
           % smtpd.port, "--mail-from", "curl@example.org",
           "--mail-rcpt", "user+curl@example.test", "--upload-file", str(f)]
    if tls:
        cmd[1:1] = ["--ssl-reqd", "-k"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    data = smtpd.read_one("user@example.test", subj)
    _, received, rest = split_stored(data)
    assert rest == msg
    assert (b"ESMTPS" in received) == tls
