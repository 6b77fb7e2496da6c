"""The Bayes classifier end to end (issue 6): `setup spam learn` from a
Maildir and an mbox, counted once per message; no Bayes score before the
minimum is learned (BAYES_MIN_LEARNED, set low here); then a spammy message
gets BAYES_9x in X-Spam-Status and a hammy one BAYES_00; an IMAP MOVE or
COPY into Junk learns spam, a MOVE out of Junk relearns ham."""

import os
import re

import pytest

import imaptools
from helpers import QUEUED_RE, imap_settings, make_message, send_raw_message, unique, wait_until

USER = "user@example.test"
MIN = "5"
ENV = {"BAYES_MIN_LEARNED": MIN}

SPAM_WORDS = ["viagra", "casino", "lottery", "winner", "pharmacy", "discount", "bonus",
              "jackpot", "refinance", "mortgage"]
HAM_WORDS = ["meeting", "agenda", "patch", "review", "minutes", "branch", "release",
             "kernel", "compiler", "tuesday"]


def text(words, i, n=12):
    return " ".join(words[(i * 3 + k) % len(words)] for k in range(n))


def message(kind, i, subject=None):
    words = SPAM_WORDS if kind == "spam" else HAM_WORDS
    subject = subject or "%s %s %d" % (words[i % 10], words[(i + 5) % 10], i)
    body = ("%s\r\n%s\r\n" % (text(words, i), text(words, i + 1))).encode()
    return make_message(subject, body=body)


def write_maildir(root, kind, n):
    """A Maildir with n messages in new/, readable by the mail user."""
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i in range(n):
        with open(os.path.join(root, "new", "%d.%s" % (i, kind)), "wb") as f:
            f.write(message(kind, i, subject="%s training %d %s" % (kind, i, unique())))
    for dirpath, dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o644)


def write_mbox(path, kind, start, n):
    with open(path, "wb") as f:
        for i in range(start, start + n):
            msg = message(kind, i, subject="%s mbox %d %s" % (kind, i, unique()))
            f.write(b"From sender@example.org Thu Jan  1 00:00:00 2026\n")
            f.write(msg.replace(b"\r\n", b"\n") + b"\n")
    os.chmod(path, 0o644)


def stats(d):
    rc, out, err = d.setup("spam", "stats", env=ENV)
    assert rc == 0, (rc, out, err)
    return {k: int(v) for k, v in re.findall(r"^(spam|ham|tokens): (\d+)$", out, re.M)}


def stored(d, subject):
    """The stored copy of a message, in INBOX or Junk."""
    for folder in (None, "Junk"):
        for p in d.messages(USER, folder):
            data = open(p, "rb").read()
            if subject.encode() in data:
                return folder, data
    return None, None


@pytest.fixture(scope="module")
def bayesd(mod_daemons):
    return mod_daemons.make(imap_settings({"ENABLE_SPAMASSASSIN": "1"}), name="bayes", env=ENV)


def test_learn_and_score(bayesd, tmp_path_factory):
    d = bayesd
    # Before training: no Bayes reason at all.
    subj = unique("early")
    final = send_raw_message(d.port, "sender@example.org", [USER], message("spam", 100, subj))
    assert QUEUED_RE.match(final.line), final
    assert "BAYES_" not in d.log_text()

    base = tmp_path_factory.mktemp("bayes")
    os.chmod(base, 0o755)
    write_maildir(os.path.join(base, "spam"), "spam", 4)
    write_maildir(os.path.join(base, "ham"), "ham", 6)
    mbox = os.path.join(base, "spam.mbox")
    write_mbox(mbox, "spam", 10, 2)

    rc, out, err = d.setup("spam", "learn", "spam", os.path.join(base, "spam"), mbox, env=ENV)
    assert rc == 0, (rc, out, err)
    assert "6 messages learned as spam" in out, out
    rc, out, err = d.setup("spam", "learn", "ham", os.path.join(base, "ham"), env=ENV)
    assert rc == 0, (rc, out, err)
    assert "6 messages learned as ham" in out, out
    # Learning the same messages again counts nothing.
    rc, out, err = d.setup("spam", "learn", "spam", os.path.join(base, "spam"), env=ENV)
    assert rc == 0 and "0 messages learned as spam (4 already learned" in out, (rc, out, err)
    s = stats(d)
    assert (s["spam"], s["ham"]) == (6, 6), s
    assert s["tokens"] > 20

    # A spammy message: BAYES_99 or BAYES_999 in X-Spam-Status.
    subj = unique("spammy")
    final = send_raw_message(d.port, "sender@example.org", [USER], message("spam", 50, subj))
    assert QUEUED_RE.match(final.line), final
    folder, data = stored(d, subj)
    assert data is not None
    hdr = data.split(b"\r\n\r\n", 1)[0].decode()
    m = re.search(r"X-Spam-Status: (Yes|No), score=\S+ required=\S+ tests=(\S+)", hdr)
    assert m, hdr
    assert re.search(r"\bBAYES_9\d+\b", m.group(2)), hdr
    # A hammy one: BAYES_00, a negative score, no spam headers.
    subj = unique("hammy")
    final = send_raw_message(d.port, "sender@example.org", [USER], message("ham", 50, subj))
    assert QUEUED_RE.match(final.line), final
    folder, data = stored(d, subj)
    assert folder is None and b"X-Spam-Flag: YES" not in data
    assert "BAYES_00(-1.9)" in d.log_text()
    # A file that cannot be read is an error, the others are still learned.
    rc, out, err = d.setup("spam", "learn", "ham", os.path.join(base, "missing"), env=ENV)
    assert rc == 1 and "cannot read" in err, (rc, out, err)


def uid_of(c, subject):
    typ, data = c.uid("SEARCH", "SUBJECT", '"%s"' % subject)
    assert typ == "OK", data
    uids = data[0].split()
    assert len(uids) == 1, data
    return uids[0].decode()


def test_imap_junk_learning(bayesd):
    d = bayesd
    before = stats(d)
    subj, subj2 = unique("tojunk"), unique("copyjunk")
    for s, i in ((subj, 60), (subj2, 61)):
        final = send_raw_message(d.port, "sender@example.org", [USER], message("ham", i, s))
        assert QUEUED_RE.match(final.line), final
    c = imaptools.login(d, USER, password="secret-password-1", select="INBOX")
    try:
        # MOVE into Junk: learned as spam, on a worker, after the reply.
        typ, data = c.uid("MOVE", uid_of(c, subj), "Junk")
        assert typ == "OK", data
        wait_until(lambda: stats(d)["spam"] == before["spam"] + 1, timeout=10,
                   what="the moved message learned as spam")
        assert stats(d)["ham"] == before["ham"]
        # COPY into Junk counts too.
        typ, data = c.uid("COPY", uid_of(c, subj2), "Junk")
        assert typ == "OK", data
        wait_until(lambda: stats(d)["spam"] == before["spam"] + 2, timeout=10,
                   what="the copied message learned as spam")
        # Out of Junk: relearned as ham (its spam count moves over).
        typ, data = c.select("Junk")
        assert typ == "OK", data
        typ, data = c.uid("MOVE", uid_of(c, subj), "INBOX")
        assert typ == "OK", data
        wait_until(lambda: stats(d)["ham"] == before["ham"] + 1, timeout=10,
                   what="the message moved out of Junk relearned as ham")
        assert stats(d)["spam"] == before["spam"] + 1
        # Junk to Trash says nothing.
        typ, data = c.uid("MOVE", uid_of(c, subj2), "Trash")
        assert typ == "OK", data
    finally:
        c.logout()
    assert "bayes: learned 1 of 1 messages of %s as ham" % USER in d.log_text()
    s = stats(d)
    assert (s["spam"], s["ham"]) == (before["spam"] + 1, before["ham"] + 1), s
