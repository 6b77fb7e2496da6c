"""Regression tests for bugs found in the review of the IMAP server and the
mailbox index: flag changes of one session lost by another's STORE or
implicit \\Seen, and the other findings listed with each test."""

import os
import re
import time

import pytest

import helpers
import imaptools
from imaptools import Raw, apply_updates, number, simple_message


@pytest.fixture(scope="module")
def d(mod_daemons):
    return mod_daemons.make(helpers.imap_settings(), name="imapreview")


@pytest.fixture
def user(d):
    return imaptools.add_user(d, prefix="r")


def session(d, user, box="INBOX"):
    c = Raw(d)
    c.login(user)
    if box is not None:
        c.select(box)
    return c


def append(c, box="INBOX", subject="review", flags=""):
    r = c.append(box, simple_message(subject), flags=flags)
    assert r.ok, r
    return int(re.search(rb"APPENDUID \d+ (\d+)", r.tagged).group(1))


def flags_in(r, seq=1):
    """The flags of message seq after the response: its last FLAGS."""
    found = None
    for l in r.untagged:
        m = re.match(rb"^\* (\d+) FETCH .*FLAGS \(([^)]*)\)", l, re.S)
        if m and int(m.group(1)) == seq:
            found = set(m.group(2).decode().split())
    assert found is not None, "no FLAGS for %d in %r" % (seq, r)
    return found


# --------------------------------------------------------------------------
# Lost flag updates: STORE and the implicit \Seen of FETCH BODY[] computed
# the new flags from the session's snapshot, so a change another session
# made since this one last synced was overwritten.

def test_store_keeps_flags_set_by_another_session(d, user):
    a = session(d, user)
    append(a)
    b = session(d, user)
    assert a.cmd("NOOP").ok                     # both know message 1
    r = b.cmd("STORE 1 +FLAGS (\\Flagged $Important)")
    assert r.ok, r
    # a has not heard of b's change yet; its STORE must not undo it.
    r = a.cmd("STORE 1 +FLAGS (\\Answered $Work)")
    assert r.ok, r
    r = b.cmd("FETCH 1 (FLAGS)")
    got = flags_in(r)
    assert {"\\Flagged", "\\Answered", "$Important", "$Work"} <= got, r
    # And a's own FETCH response of the STORE showed the real flags.
    r = a.cmd("FETCH 1 (FLAGS)")
    assert {"\\Flagged", "\\Answered", "$Important", "$Work"} <= flags_in(r), r
    a.close()
    b.close()


def test_store_minus_flags_keeps_flags_set_by_another_session(d, user):
    a = session(d, user)
    append(a, flags="\\Seen")
    b = session(d, user)
    assert b.cmd("STORE 1 +FLAGS (\\Flagged)").ok
    assert a.cmd("STORE 1 -FLAGS.SILENT (\\Seen)").ok
    r = b.cmd("FETCH 1 (FLAGS)")
    got = flags_in(r)
    assert "\\Flagged" in got and "\\Seen" not in got, r
    a.close()
    b.close()


def test_fetch_body_seen_keeps_flags_set_by_another_session(d, user):
    a = session(d, user)
    append(a)
    b = session(d, user)
    assert b.cmd("STORE 1 +FLAGS (\\Flagged)").ok
    r = a.cmd("FETCH 1 (BODY[TEXT])")
    assert r.ok, r
    assert {"\\Seen", "\\Flagged"} <= flags_in(r), r
    r = b.cmd("FETCH 1 (FLAGS)")
    assert {"\\Seen", "\\Flagged"} <= flags_in(r), r
    a.close()
    b.close()


# --------------------------------------------------------------------------
# A Maildir file name with more than seven flag letters (a Dovecot Maildir
# keeps keywords as lowercase letters): the snapshot kept only seven, so
# every later sync saw a "change" and sent a FETCH (FLAGS) after every
# command, forever.

def test_long_maildir_flags_do_not_repeat_fetch(d, user):
    c = session(d, user)
    append(c, flags="\\Seen")
    files = d.messages(user)
    assert len(files) == 1 and "/cur/" in files[0], files
    base = os.path.basename(files[0]).split(":2,")[0]
    os.rename(files[0], os.path.join(os.path.dirname(files[0]), base + ":2,FPRSabcd"))
    c.close()
    c = session(d, user)
    r = c.cmd("NOOP")
    assert r.ok, r
    r = c.cmd("NOOP")
    assert r.ok and not any(b"FETCH" in l for l in r.untagged), r
    r = c.cmd("FETCH 1 (FLAGS)")
    assert r.ok and len([l for l in r.untagged if b"FETCH" in l]) == 1, r
    assert {"\\Flagged", "\\Answered", "\\Seen"} <= flags_in(r), r
    c.close()


# --------------------------------------------------------------------------
# Edge cases checked in the review (they hold; kept as regression tests).

def test_uid_sets_on_empty_and_at_the_top(d, user):
    c = session(d, user)
    for cmd in ("UID FETCH * FLAGS", "UID FETCH 1:* FLAGS", "FETCH 1:* FLAGS",
                "UID FETCH 4294967295 FLAGS", "UID SEARCH UID 4294967295:*",
                "UID STORE * +FLAGS (\\Seen)", "UID EXPUNGE 1:*"):
        r = c.cmd(cmd)
        assert r.ok and not any(b"FETCH" in l for l in r.untagged), (cmd, r)
    uid = append(c)
    r = c.cmd("UID FETCH 4294967295:%d FLAGS" % (uid + 5))   # reversed, past the top
    assert r.ok and len([l for l in r.untagged if b"FETCH" in l]) == 0, r
    r = c.cmd("UID FETCH 4294967295:* (UID)")                # "*" is the top UID
    assert r.ok and [l for l in r.untagged if b"FETCH" in l] == [
        b"* 1 FETCH (UID %d)" % uid], r
    assert c.cmd("FETCH 2 FLAGS").status == "BAD"
    c.close()


def test_literal_split_across_packets_and_idle_done_pipelined(d, user):
    c = session(d, user)
    msg = simple_message("split")
    t = c.tag()
    c.send(("%s APPEND INBOX {%d+}\r\n" % (t, len(msg))).encode() + msg[:7])
    time.sleep(0.2)
    c.send(msg[7:30])
    time.sleep(0.2)
    c.send(msg[30:] + b"\r\n")
    r = c.response(t)
    assert r.ok, r
    # IDLE, DONE and the next command in one packet.
    c.send(b"i1 IDLE\r\nDONE\r\ni2 FETCH 1 (UID)\r\n")
    r = c.response("i2")
    assert r.ok and any(re.match(rb"^\* 1 FETCH \(UID \d+\)$", l) for l in r.untagged), r
    c.close()


def test_expunge_by_other_session_reported_once_with_right_numbers(d, user):
    a = session(d, user)
    for i in range(4):
        append(a, subject="x%d" % i)
    b = session(d, user)
    assert b.cmd("STORE 2,4 +FLAGS.SILENT (\\Deleted)").ok
    assert b.cmd("EXPUNGE").ok
    # FETCH may not announce them; NOOP then does, highest first or adjusted.
    r = a.cmd("FETCH 1:4 (UID)")
    assert not any(l.endswith(b"EXPUNGE") for l in r.untagged), r
    r = a.cmd("NOOP")
    assert apply_updates(4, r.untagged) == 2, r
    r = a.cmd("FETCH 1:* (UID)")
    assert len([l for l in r.untagged if b"FETCH" in l]) == 2, r
    a.close()
    b.close()
