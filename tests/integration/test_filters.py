"""Inbound filtering through SMTP (issue 6): the filter pipeline's end-of-data
verdicts (GTUBE rejected, spam to Junk with its headers, clean mail with
Authentication-Results), greylisting at RCPT, what authenticated submission
and a server with every filter off skip. SPF is turned off in these daemons
(ENABLE_POLICYD_SPF=0): they have no DNS, and SPF has its own tests."""

import imaplib
import os
import time

import pytest

from helpers import (HOSTNAME, QUEUED_RE, Smtp, dot_stuff, free_port, imap_settings,
                     insecure_tls_context, listen_port, make_message, send_raw_message,
                     unique)
from mailnet import submit

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
USER = "user@example.test"

BASE = {"ENABLE_POLICYD_SPF": "0"}


def settings(**kw):
    out = dict(BASE)
    out.update(kw)
    return out


def gtube_message(subject):
    body = ("This is the GTUBE, the\r\n\t%s\r\n" % GTUBE).encode()
    return make_message(subject, body=body)


def transaction(port, sender, rcpt, msg):
    """MAIL, RCPT, DATA in one session; returns (rcpt reply, final reply or
    None when RCPT was refused)."""
    with Smtp(port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.line.startswith("250 "), r
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        if r.code != 250:
            c.cmd("QUIT")
            return r, None
        r2 = c.cmd("DATA")
        assert r2.code == 354, r2
        c.send(dot_stuff(msg))
        final = c.reply()
        c.cmd("QUIT")
        return r, final


@pytest.fixture(scope="module")
def spamd(mod_daemons):
    """Spam scoring on, default thresholds (GTUBE's 1000 is over SA_KILL)."""
    return mod_daemons.make(settings(ENABLE_SPAMASSASSIN="1"), name="spam")


@pytest.fixture(scope="module")
def junkd(mod_daemons):
    """SA_KILL above GTUBE: GTUBE is spam, delivered to Junk, \\Seen."""
    return mod_daemons.make(imap_settings(settings(
        ENABLE_SPAMASSASSIN="1", SA_KILL="2000", MARK_SPAM_AS_READ="1",
        SPAM_SUBJECT="'***SPAM*** '", SUBMISSIONS_LISTEN="127.0.0.1:%d" % free_port())),
        name="junk")


def test_gtube_rejected(spamd):
    subj = unique("gtube")
    final = send_raw_message(spamd.port, "sender@example.org", [USER], gtube_message(subj))
    assert final.line == "554 5.7.1 Spam message rejected", final
    assert spamd.find(USER, subj) == []
    log = spamd.log_text()
    assert "reasons=GTUBE(1000.0) action=reject" in log, log[-2000:]


def test_clean_message_inbox_with_auth_results(spamd):
    subj = unique("clean")
    forged = ["Authentication-Results: %s; spf=pass smtp.mailfrom=forged.example" % HOSTNAME,
              "Authentication-Results: other.example; dkim=pass"]
    msg = make_message(subj, extra_headers=forged)
    final = send_raw_message(spamd.port, "sender@example.org", [USER], msg)
    assert QUEUED_RE.match(final.line), final
    data = spamd.read_one(USER, subj)
    hdr = data.split(b"\r\n\r\n", 1)[0]
    assert b"Authentication-Results: %s; none\r\n" % HOSTNAME.encode() in hdr
    # The forged result in our name is gone, the other host's stays.
    assert b"forged.example" not in hdr
    assert b"Authentication-Results: other.example; dkim=pass" in hdr
    # Score 0, under SA_TAG: no spam headers.
    assert b"X-Spam-" not in hdr
    assert spamd.messages(USER, "Junk") == []
    # Above the session's Received header, below Return-Path.
    lines = hdr.split(b"\r\n")
    assert lines[0].startswith(b"Return-Path: ")
    assert lines[1].startswith(b"Authentication-Results: ")
    assert lines[2].startswith(b"Received: ")
    assert "action=accept" in spamd.log_text()


def test_spam_lands_in_junk_seen_and_tagged(junkd):
    subj = unique("junk")
    msg = gtube_message(subj)
    msg = msg.replace(b"\r\n\r\n", b"\r\nX-Spam-Flag: NO\r\n\r\n", 1)   # a sender's own label
    final = send_raw_message(junkd.port, "sender@example.org", [USER], msg)
    assert QUEUED_RE.match(final.line), final
    assert junkd.find(USER, subj) == []          # not in INBOX
    junk = junkd.messages(USER, "Junk")
    hits = [p for p in junk if subj.encode() in open(p, "rb").read()]
    assert len(hits) == 1, junk
    path = hits[0]
    assert os.path.basename(os.path.dirname(path)) == "cur"
    assert path.endswith(":2,S"), path           # MARK_SPAM_AS_READ=1: \Seen
    data = open(path, "rb").read()
    hdr = data.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nX-Spam-Flag: YES\r\n" in hdr
    assert b"X-Spam-Flag: NO" not in hdr
    assert b"\r\nX-Spam-Score: 1000.0\r\n" in hdr
    assert b"X-Spam-Status: Yes, score=1000.0 required=6.31 tests=GTUBE\r\n" in hdr
    assert b"\r\nSubject: ***SPAM*** " + subj.encode() + b"\r\n" in hdr
    assert b"Authentication-Results: %s; none" % HOSTNAME.encode() in hdr
    assert "reasons=GTUBE(1000.0) action=junk" in junkd.log_text()
    # The IMAP client sees it in the special-use Junk folder, already read.
    m = imaplib.IMAP4_SSL("127.0.0.1", listen_port(junkd, "IMAPS_LISTEN"),
                          ssl_context=insecure_tls_context(), timeout=15)
    try:
        m.login(USER, "secret-password-1")
        typ, data = m.list('""', "Junk")
        assert typ == "OK" and b"\\Junk" in data[0], data
        typ, _ = m.select("Junk", readonly=True)
        assert typ == "OK"
        typ, data = m.search(None, "SUBJECT", subj, "SEEN")
        assert typ == "OK" and len(data[0].split()) == 1, data
    finally:
        m.logout()


def test_submission_not_scored(junkd):
    """Authenticated submission skips spam scoring (and everything else
    but the virus scan): GTUBE lands in INBOX untouched."""
    subj = unique("subgtube")
    msg = gtube_message(subj)
    port = listen_port(junkd, "SUBMISSIONS_LISTEN")
    assert submit("127.0.0.1", port, USER, USER, [USER], msg) == {}
    data = junkd.read_one(USER, subj)
    hdr = data.split(b"\r\n\r\n", 1)[0]
    assert b"X-Spam-" not in hdr
    assert b"Authentication-Results" not in hdr
    assert b"***SPAM***" not in hdr


def test_everything_off_no_filter_work(daemons):
    d = daemons.make(settings(), name="off")
    subj = unique("off")
    final = send_raw_message(d.port, "sender@example.org", [USER], gtube_message(subj))
    assert QUEUED_RE.match(final.line), final
    data = d.read_one(USER, subj)
    assert b"Authentication-Results" not in data
    assert b"X-Spam-" not in data
    log = d.log_text()
    assert "accepted client=" in log
    # LOG_LEVEL=debug: every filter job logs "filter: <id> stage=..."
    assert " filter: " not in log, [l for l in log.splitlines() if " filter: " in l]


# --------------------------------------------------------------------------
# Greylisting

@pytest.fixture(scope="module")
def greyd(mod_daemons):
    return mod_daemons.make(settings(ENABLE_POSTGREY="1", POSTGREY_DELAY="2",
                                     SUBMISSIONS_LISTEN="127.0.0.1:%d" % free_port()),
                            name="grey")


def test_greylisting_defers_then_accepts(greyd):
    subj = unique("grey")
    sender = unique("s") + "@example.org"
    msg = make_message(subj, sender=sender)
    start = time.monotonic()
    r, final = transaction(greyd.port, sender, USER, msg)
    assert r.line == ("450 4.2.0 <%s>: Recipient address rejected: Delayed by Postgrey"
                      % USER), r
    assert final is None
    # Retried too early: still deferred. (The clock has whole seconds, so
    # with POSTGREY_DELAY=2 a retry passes after more than 1 s.)
    r, final = transaction(greyd.port, sender, USER, msg)
    if time.monotonic() - start < 0.9:
        assert r.code == 450, r
    # Retry like an MTA until it passes; it must, soon after the delay.
    deadline = start + 15
    while r.code == 450 and time.monotonic() < deadline:
        time.sleep(0.2)
        r, final = transaction(greyd.port, sender, USER, msg)
    assert r.code == 250, r
    assert time.monotonic() - start > 1.0
    assert QUEUED_RE.match(final.line), final
    assert len(greyd.find(USER, subj)) == 1
    # Passed for good: the next message of the triplet goes straight in.
    r, final = transaction(greyd.port, sender, USER, make_message(subj + "-2", sender=sender))
    assert r.code == 250 and QUEUED_RE.match(final.line), (r, final)
    assert os.path.exists(os.path.join(greyd.state_dir, "greylist.db"))
    assert "filter=greylist" in greyd.log_text()


def test_greylisting_per_recipient(greyd):
    """Another recipient is another triplet; the refusal is per recipient."""
    sender = unique("s") + "@example.org"
    with Smtp(greyd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<%s>" % sender).code == 250
        r1 = c.cmd("RCPT TO:<%s>" % USER)
        r2 = c.cmd("RCPT TO:<other@example.test>")
        assert r1.code == 450 and r2.code == 450, (r1, r2)
        assert "other@example.test" in r2.line
        # Unknown users are refused as such, never greylisted.
        r3 = c.cmd("RCPT TO:<nobody@example.test>")
        assert r3.line.startswith("550 5.1.1"), r3
        c.cmd("QUIT")


def test_submission_not_greylisted(greyd):
    subj = unique("subgrey")
    port = listen_port(greyd, "SUBMISSIONS_LISTEN")
    assert submit("127.0.0.1", port, USER, USER, [USER], make_message(subj, sender=USER)) == {}
    assert len(greyd.find(USER, subj)) == 1
