"""Session limits: message size, line length, recipients, errors, idle time
and connections per address. One daemon with small limits."""

import socket

import pytest

from helpers import QUEUED_RE, Closed, Smtp, dot_stuff, make_message, unique

SIZE_LIMIT = 20000


@pytest.fixture(scope="module")
def limited(mod_daemons):
    return mod_daemons.make({"POSTFIX_MESSAGE_SIZE_LIMIT": str(SIZE_LIMIT),
                             "SMTP_MAX_RECIPIENTS": "5",
                             "SMTP_TIMEOUT": "2",
                             "MAX_CONNECTIONS_PER_IP": "3"}, name="limits")


def test_ehlo_advertises_size(limited):
    with Smtp(limited.port) as c:
        r = c.ehlo()
        assert "250-SIZE %d" % SIZE_LIMIT in r.lines or "250 SIZE %d" % SIZE_LIMIT in r.lines, r


def test_size_parameter_over_limit(limited):
    with Smtp(limited.port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=%d" % (SIZE_LIMIT + 1))
        assert r.line.startswith("552 5.3.4"), r
        r = c.cmd("MAIL FROM:<a@example.org> SIZE=%d" % (SIZE_LIMIT - 1000))
        assert r.line == "250 2.1.0 Ok", r


def test_data_over_limit_refused_and_session_continues(limited):
    big = unique("big")
    small = unique("small")
    body = (b"x" * 998 + b"\r\n") * (SIZE_LIMIT // 1000 + 5)
    with Smtp(limited.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<user@example.test>")
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(big, body=body)))
        r = c.reply()
        assert r.line.startswith("552 5.3.4"), r
        # Still in sync and usable.
        assert c.cmd("MAIL FROM:<a@example.org>").line == "250 2.1.0 Ok"
        c.cmd("RCPT TO:<user@example.test>")
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(small)))
        assert QUEUED_RE.match(c.reply().line)
    assert limited.find("user@example.test", big) == []
    assert len(limited.find("user@example.test", small)) == 1


def test_bdat_over_limit_refused(limited):
    big = unique("bigbdat")
    msg = make_message(big, body=b"y" * (SIZE_LIMIT + 10) + b"\r\n")
    with Smtp(limited.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<user@example.test>")
        c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
        r = c.reply()
        assert r.line.startswith("552 5.3.4"), r
        assert c.cmd("NOOP").line == "250 2.0.0 Ok"
    assert limited.find("user@example.test", big) == []


def test_line_too_long(limited):
    with Smtp(limited.port) as c:
        c.ehlo()
        r = c.cmd("NOOP " + "a" * 1900)
        assert "too long" not in r.line, r
        c.send("NOOP " + "a" * 3000 + "\r\n")
        r = c.reply()
        assert r.line.startswith("500 5.5.2") and "line too long" in r.line, r
        assert c.wait_closed(10)


def test_too_many_recipients(limited):
    subj = unique("rcpts")
    with Smtp(limited.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        for i in range(5):
            assert c.cmd("RCPT TO:<user+%d@example.test>" % i).line == "250 2.1.5 Ok"
        r = c.cmd("RCPT TO:<other@example.test>")
        assert r.line == "452 4.5.3 Error: too many recipients", r
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj)))
        assert QUEUED_RE.match(c.reply().line)
    assert len(limited.find("user@example.test", subj)) == 1
    assert limited.find("other@example.test", subj) == []


def test_too_many_errors(limited):
    with Smtp(limited.port) as c:
        c.ehlo()
        replies = []
        try:
            for _ in range(12):
                r = c.cmd("BOGUS")
                replies.append(r.line)
                if r.code == 421:
                    break
        except Closed:
            pass
        assert replies[:9] == ["500 5.5.2 Error: command not recognized"] * 9, replies
        assert replies[-1].startswith("421 4.7.0") and "too many errors" in replies[-1], replies
        assert len(replies) <= 11, replies
        assert c.wait_closed(10)


def test_idle_timeout(limited):
    with Smtp(limited.port) as c:
        c.ehlo()
        assert c.wait_closed(20)
        text = c.buf.decode(errors="replace")
        assert text.startswith("421 4.4.2") and "timeout" in text.lower(), text


def test_idle_timeout_in_data(limited):
    with Smtp(limited.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<a@example.org>")
        c.cmd("RCPT TO:<user@example.test>")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: stalled\r\n\r\npartial")
        assert c.wait_closed(20)
        assert c.buf.startswith(b"421 4.4.2"), c.buf


def _greets(port):
    try:
        with Smtp(port, timeout=5) as c:
            return c.greeting.line.startswith("220 ")
    except (OSError, Closed):
        return False


def test_connection_limit_per_ip(limited):
    from helpers import wait_until
    held = [Smtp(limited.port) for _ in range(3)]
    try:
        for c in held:
            assert c.greeting.code == 220
        extra = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
        data = b""
        try:
            while True:
                chunk = extra.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        extra.close()
        assert data.startswith(b"421 4.7.0") and b"too many connections" in data, data
        # The held sessions are unaffected.
        for c in held:
            assert c.cmd("NOOP").line == "250 2.0.0 Ok"
    finally:
        for c in held:
            c.close()
    # Once they are gone, new connections are welcome again.
    wait_until(lambda: _greets(limited.port), 10, what="a greeting after the limit")
