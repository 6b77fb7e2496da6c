"""Durability and signals: parallel load with every message stored exactly
once, kill -9 under load losing nothing that got a 250, SIGTERM finishing
the transaction in flight, SIGHUP keeping the daemon serving."""

import os
import re
import signal
import smtplib
import socket
import threading

from helpers import (QUEUED_RE, Closed, Smtp, dot_stuff, make_message, unique,
                     wait_until)

SUBJECT_RE = re.compile(rb"^Subject: (\S+)\r$", re.M)


def subjects_in(d, addr):
    """Subject of every stored message of addr, as a list (duplicates kept)."""
    out = []
    for p in d.messages(addr):
        with open(p, "rb") as f:
            m = SUBJECT_RE.search(f.read())
        assert m, p
        out.append(m.group(1).decode())
    return out


def sender_thread(port, prefix, count, accepted, errors, stop=None, rcpt="user@example.test"):
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="load.example.org",
                          timeout=60) as s:
            i = 0
            while (count is None or i < count) and not (stop and stop.is_set()):
                subj = "%s-%d" % (prefix, i)
                s.sendmail("load@example.org", [rcpt], make_message(subj, to=rcpt))
                accepted.append(subj)  # only after the 250
                i += 1
    except (smtplib.SMTPException, OSError) as e:
        if not (stop and stop.is_set()):
            errors.append(repr(e))


def test_parallel_clients_every_message_once(daemons):
    d = daemons.make(name="load")
    accepted, errors = [], []
    tag = unique("load")
    threads = [threading.Thread(target=sender_thread,
                                args=(d.port, "%s-t%d" % (tag, t), 50, accepted, errors))
               for t in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert len(accepted) == 1000
    stored = subjects_in(d, "user@example.test")
    assert len(stored) == 1000
    assert sorted(stored) == sorted(accepted)
    assert d.tmp_files("user@example.test") == []


def test_kill9_under_load_loses_nothing(daemons):
    d = daemons.make(name="kill9")
    accepted, errors = [], []
    stop = threading.Event()
    tag = unique("k9")
    threads = [threading.Thread(target=sender_thread,
                                args=(d.port, "%s-t%d" % (tag, t), None, accepted, errors,
                                      stop))
               for t in range(10)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(accepted) >= 150 or errors, 120, what="150 accepted messages")
        assert errors == []
        d.kill9()
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    acked = list(accepted)
    assert acked
    d.proc = None
    d.start()
    wait_until(lambda: d.tmp_files("user@example.test") == [], 15,
               what="tmp/ emptied after restart")
    stored = subjects_in(d, "user@example.test")
    assert len(stored) == len(set(stored)), "a message stored twice"
    missing = set(acked) - set(stored)
    assert not missing, "lost %d acknowledged messages: %s" % (len(missing), sorted(missing)[:5])
    # And the restarted daemon works.
    subj = unique("after")
    with smtplib.SMTP("127.0.0.1", d.port, timeout=30) as s:
        s.sendmail("x@example.org", ["user@example.test"], make_message(subj))
    assert len(d.find("user@example.test", subj)) == 1


def test_sigterm_finishes_transaction_in_flight(daemons):
    d = daemons.make(name="sigterm")
    subj = unique("inflight")
    msg = make_message(subj, body=b"first half\r\n" * 50 + b"second half\r\n" * 50)
    half = len(msg) // 2
    busy = Smtp(d.port)
    idle = Smtp(d.port)
    try:
        busy.ehlo()
        idle.ehlo()
        assert busy.cmd("MAIL FROM:<t@example.org>").line == "250 2.1.0 Ok"
        assert busy.cmd("RCPT TO:<user@example.test>").line == "250 2.1.5 Ok"
        assert busy.cmd("DATA").code == 354
        busy.send(msg[:half])
        d.proc.send_signal(signal.SIGTERM)
        # The idle session is told at once; that also shows the signal was seen.
        assert idle.wait_closed(15)
        assert idle.buf.startswith(b"421 4.3.2"), idle.buf
        assert b"shutting down" in idle.buf
        # No new connections are taken.
        try:
            with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
                s.settimeout(5)
                got = s.recv(100)
            assert not got.startswith(b"220"), got
        except OSError:
            pass
        busy.send(_finish(msg, half))
        r = busy.reply()
        assert QUEUED_RE.match(r.line), r
        try:
            r = busy.reply()
            assert r.line.startswith("421 4.3.2"), r
        except Closed:
            raise AssertionError("closed without a 421 after the message")
        assert busy.wait_closed(15)
    finally:
        busy.close()
        idle.close()
    rc = d.wait_exit(30)
    assert rc == 0, "exit status %r" % rc
    assert len(d.find("user@example.test", subj)) == 1
    assert d.read_one("user@example.test", subj).endswith(msg)


def _finish(msg, half):
    """The rest of a DATA payload whose first `half` bytes were sent raw
    (the test message has no line starting with a dot)."""
    assert b"\r\n." not in msg
    return msg[half:] + b".\r\n"


def test_sigterm_idle_daemon_exits_0(daemons):
    d = daemons.make(name="sigterm-idle", provision=False)
    assert d.stop(signal.SIGTERM, timeout=30) == 0


def test_sigterm_does_not_wait_for_stalled_tls_handshake(daemons):
    # A client that said STARTTLS and then went quiet is idle, not a
    # transaction in flight: it must not hold up the shutdown.
    d = daemons.make(name="sigterm-tls", provision=False)
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("STARTTLS").line.startswith("220 2.0.0")
        d.proc.send_signal(signal.SIGTERM)
        assert c.wait_closed(15), "session in the TLS handshake not closed on SIGTERM"
    assert d.wait_exit(15) == 0


def test_sighup_keeps_serving(daemons):
    d = daemons.make(name="sighup")
    with Smtp(d.port) as held:
        held.ehlo()
        os.kill(d.pid, signal.SIGHUP)
        os.kill(d.pid, signal.SIGHUP)
        assert held.cmd("NOOP").line == "250 2.0.0 Ok"
        subj = unique("hup")
        held.cmd("MAIL FROM:<h@example.org>")
        held.cmd("RCPT TO:<user@example.test>")
        assert held.cmd("DATA").code == 354
        held.send(dot_stuff(make_message(subj)))
        assert QUEUED_RE.match(held.reply().line)
    assert d.running()
    with Smtp(d.port) as c:
        c.ehlo()
        c.starttls()
        c.ehlo()
        assert c.cmd("NOOP").line == "250 2.0.0 Ok"
    assert len(d.find("user@example.test", subj)) == 1
    assert d.running()
