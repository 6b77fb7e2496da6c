"""IMAP under bad input and faults: the plaintext policy on 143, STARTTLS
misuse, commands in the wrong state, limits (line length, literal and
message size, error count, failed logins), clients that disconnect in the
middle of an APPEND, an index that is deleted or corrupt, a Maildir
imported from Dovecot with its dovecot-uidlist, files dropped into new/ by
other programs, and random garbage that must never crash the daemon or
disturb other sessions.

Tests that fail logins, restart the daemon or fuzz it use their own daemon:
failure delays and throttling are per client address."""

import os
import random
import re
import time

import pytest

import helpers
from imaptools import (PASSWORD, Raw, add_user, chown_tree, code, deliver, fetch_item,
                       flags_of, login, number, plain_b64, resp_code_value, search_result,
                       simple_message, status_items)

SIZE_LIMIT = 100000


@pytest.fixture(scope="module")
def faultd(mod_daemons):
    return mod_daemons.make(helpers.imap_settings({"POSTFIX_MESSAGE_SIZE_LIMIT":
                                                   str(SIZE_LIMIT)}), name="imapfault")


@pytest.fixture
def user(faultd):
    return add_user(faultd, prefix="f")


def index_files(d, addr):
    box = d.mailbox(addr)
    return [os.path.join(box, n) for n in os.listdir(box) if n.startswith("posthorn-index.db")]


# --------------------------------------------------------------------------
# The plaintext policy and STARTTLS

def test_login_before_starttls_privacy_required(faultd, user):
    r = Raw(faultd, tls=False)
    assert r.greeting.startswith(b"* OK [CAPABILITY "), r.greeting
    assert b"LOGINDISABLED" in r.greeting and b"STARTTLS" in r.greeting
    assert b"AUTH=PLAIN" not in r.greeting
    for cmd in ('LOGIN "%s" "%s"' % (user, PASSWORD), "AUTHENTICATE PLAIN " + plain_b64(user)):
        start = time.monotonic()
        res = r.cmd(cmd)
        assert res.status == "NO" and code(res.tagged) == "PRIVACYREQUIRED", (cmd, res)
        assert not res.conts
        # Refused without checking, so not delayed like a failed login.
        assert time.monotonic() - start < 0.9
    res = r.cmd("AUTHENTICATE PLAIN")
    assert res.status in ("NO", "BAD") and not res.conts, res
    caps = r.cmd("CAPABILITY").find("CAPABILITY")[0]
    assert b"LOGINDISABLED" in caps
    r.starttls()
    caps = r.cmd("CAPABILITY").find("CAPABILITY")[0]
    assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps
    assert r.cmd('LOGIN "%s" "%s"' % (user, PASSWORD)).ok
    r.close()


def test_starttls_twice_and_on_implicit_tls(faultd):
    r = Raw(faultd, tls=False)
    r.starttls()
    assert r.cmd("STARTTLS").status == "BAD"
    assert r.cmd("NOOP").ok
    r.close()
    r = Raw(faultd)
    assert r.cmd("STARTTLS").status == "BAD"
    assert r.cmd("NOOP").ok
    r.close()


def test_starttls_discards_pipelined_input(faultd):
    r = Raw(faultd, tls=False)
    r.send("a STARTTLS\r\nb NOOP\r\n")
    line = r.line()
    assert line.startswith(b"a OK"), line
    assert r.buf == b"", r.buf
    r.wrap()
    res = r.cmd("NOOP")
    assert res.ok
    assert not any(l.startswith(b"b ") for l in res.untagged), res
    # Nothing arrives later either.
    assert b"b OK" not in r.pending(0.3)
    r.close()


# --------------------------------------------------------------------------
# Bad commands and states

def test_unknown_and_wrong_state_commands(faultd, user):
    r = Raw(faultd)
    assert r.cmd("FROBNICATE").status == "BAD"
    for cmd in ("SELECT INBOX", "EXAMINE INBOX", "LIST \"\" *", "CREATE x",
                "STATUS INBOX (MESSAGES)", "FETCH 1 FLAGS", "UID FETCH 1 FLAGS", "EXPUNGE",
                "CLOSE", "IDLE"):
        assert r.cmd(cmd).status == "BAD", cmd
    r.login(user)
    for cmd in ("FETCH 1 FLAGS", "STORE 1 +FLAGS (\\Seen)", "SEARCH ALL", "COPY 1 Trash",
                "MOVE 1 Trash", "EXPUNGE", "UID FETCH 1 FLAGS", "UID SEARCH ALL", "CLOSE",
                "UNSELECT", "CHECK", "UID FROB 1", "SELECT", "LIST", "STATUS INBOX",
                "CREATE", "RENAME INBOX", "FETCH"):
        res = r.cmd(cmd)
        assert res.status == "BAD", (cmd, res)
    r.select()
    for cmd in ("FETCH x FLAGS", "FETCH 1", "STORE 1 +FLAGS", "SEARCH", "COPY 1",
                "FETCH 1 BODY[HEADER.FIELDS]", "FETCH 1 BODY[1.2.X]", 'SELECT "unterminated',
                "FETCH 1 (FLAGS", "UID"):
        res = r.cmd(cmd)
        assert res.status == "BAD", (cmd, res)
    res = r.cmd("SELECT NoSuchBox")
    assert res.status == "NO" and code(res.tagged) == "NONEXISTENT", res
    for cmd in ("DELETE NoSuchBox", "RENAME NoSuchBox Other"):
        res = r.cmd(cmd)
        assert res.status == "NO" and code(res.tagged) == "NONEXISTENT", (cmd, res)
    r.close()


def test_untagged_bad_for_lines_without_a_tag(faultd):
    r = Raw(faultd)
    for line in (b"\r\n", b" NOOP\r\n", b"+ NOOP\r\n", b"(x) NOOP\r\n"):
        r.send(line)
        got = r.line()
        assert got.startswith(b"* BAD"), (line, got)
    assert r.cmd("NOOP").ok
    r.close()


def test_many_bad_commands_end_with_bye(faultd, user):
    r = Raw(faultd)
    r.login(user)
    for i in range(30):
        try:
            r.send("x%d FROB\r\n" % i)
        except OSError:
            break
    assert r.closed(5.0)
    assert b"* BYE" in r.buf, r.buf[-300:]
    assert r.buf.count(b" BAD ") <= 25
    # Another session is unaffected.
    c = login(faultd, user, select="INBOX")
    assert c.noop()[0] == "OK"
    c.logout()


def test_long_line_is_refused_and_closed(faultd, user):
    r = Raw(faultd)
    r.login(user)
    r.send(b"a NOOP " + b"x" * (70 * 1024) + b"\r\n")
    assert r.closed(5.0)
    assert b"* BAD" in r.buf, r.buf[:300]
    # A line just below the limit is a mere syntax error.
    r = Raw(faultd)
    r.login(user)
    res = r.cmd("NOOP " + "x" * 60000)
    assert res.status == "BAD"
    assert r.cmd("NOOP").ok
    r.close()


def test_literal_limits_outside_append(faultd, user):
    r = Raw(faultd)
    r.login(user)
    # 64 KB is the most any literal but APPEND's may carry.
    t = r.tag()
    r.send("%s SELECT {%d}\r\n" % (t, 10 * 1024 * 1024))
    res = r.response(t)
    assert res.status in ("BAD", "NO") and not res.conts, res
    r.close()
    assert faultd.running()


def test_append_too_big_toobig_without_continuation(faultd, user):
    r = Raw(faultd)
    r.login(user)
    t = r.tag()
    r.send("%s APPEND INBOX {%d}\r\n" % (t, SIZE_LIMIT + 1))
    line = r.line()
    assert line.startswith(t.encode() + b" NO"), line
    assert code(line) == "TOOBIG", line
    # The session goes on; a message within the limit is taken.
    assert r.cmd("NOOP").ok
    msg = simple_message("fits", body=b"y" * (SIZE_LIMIT - 2000))
    res = r.append("INBOX", msg)
    assert res.ok, res
    # A non-synchronizing literal that is too big: refused (the octets are
    # coming anyway, so the server may close the connection).
    big = b"z" * (SIZE_LIMIT + 10)
    t = r.tag()
    try:
        r.send(("%s APPEND INBOX {%d+}\r\n" % (t, len(big))).encode() + big + b"\r\n")
    except OSError:
        pass
    try:
        res = r.response(t)
        assert res.status in ("BAD", "NO"), res
    except Exception:
        assert b"BAD" in r.buf or b"BYE" in r.buf or r.buf == b"", r.buf[:300]
    r.close()
    assert len(faultd.messages(user)) == 1


def test_append_over_quota(faultd, user):
    rc, out, err = faultd.setup("quota", "set", user, "10K")
    assert rc == 0, (rc, out, err)
    r = Raw(faultd)
    r.login(user)
    res = r.append("INBOX", simple_message("big", body=b"q" * 30000))
    assert res.status == "NO" and code(res.tagged) == "OVERQUOTA", res
    assert faultd.messages(user) == []
    assert r.append("INBOX", simple_message("small", body=b"q" * 1000)).ok
    r.close()


# --------------------------------------------------------------------------
# Failed logins (own daemon: delays and throttling are per address)

def test_failed_login_delayed_counted_and_throttled(daemons):
    d = daemons.make(helpers.imap_settings(), name="imapauth")
    addr = "user@example.test"
    r = Raw(d)
    start = time.monotonic()
    res = r.cmd('LOGIN "%s" "wrong-password"' % addr)
    elapsed = time.monotonic() - start
    assert res.status == "NO" and code(res.tagged) == "AUTHENTICATIONFAILED", res
    assert elapsed >= 0.9, elapsed
    log = d.log_text()
    assert re.search(r"login failed user=user@example\.test client=127\.0\.0\.1 failures=1",
                     log), log[-2000:]
    assert "wrong-password" not in log
    # The session goes on; the right password is not delayed.
    start = time.monotonic()
    assert r.cmd('LOGIN "%s" "secret-password-1"' % addr).ok
    assert time.monotonic() - start < 0.9
    r.close()

    # Nine more failures at once (delays run in parallel), then even the
    # right password is refused without checking.
    clients = [Raw(d) for _ in range(9)]
    tags = []
    for c in clients:
        t = c.tag()
        c.send('%s AUTHENTICATE PLAIN %s\r\n' % (t, plain_b64(addr, "bad")))
        tags.append(t)
    for c, t in zip(clients, tags):
        res = c.response(t)
        assert res.status == "NO", res
        c.close()
    r = Raw(d)
    res = r.cmd('LOGIN "%s" "secret-password-1"' % addr)
    assert res.status == "NO" and code(res.tagged) == "UNAVAILABLE", res
    assert "throttled" in d.log_text()
    r.close()


# --------------------------------------------------------------------------
# Disconnects

def test_disconnect_mid_append_leaves_nothing(faultd, user):
    r = Raw(faultd)
    r.login(user)
    t = r.tag()
    r.send("%s APPEND INBOX (\\Seen) {5000}\r\n" % t)
    assert r.line().startswith(b"+")
    r.send(b"Subject: half\r\n\r\n" + b"h" * 982)
    time.sleep(0.1)
    r.close()
    # The same for a folder, with a non-synchronizing literal.
    r = Raw(faultd)
    r.login(user)
    r.send("a APPEND Drafts {5000+}\r\n" + "d" * 1000)
    time.sleep(0.1)
    r.close()
    time.sleep(0.5)
    box = faultd.mailbox(user)
    for sub in ("cur", "new", "tmp"):
        for folder in (box, os.path.join(box, ".Drafts")):
            p = os.path.join(folder, sub)
            if os.path.isdir(p):
                assert os.listdir(p) == [], (p, os.listdir(p))
    c = Raw(faultd)
    c.login(user)
    assert number(c.select().untagged, "EXISTS") == 0
    assert number(c.select("Drafts").untagged, "EXISTS") == 0
    c.close()


def test_disconnect_during_large_fetch_does_not_disturb_others(faultd, user):
    body = b"".join(b"line %05d of a large message\r\n" % i for i in range(2500))
    deliver(faultd, user, "large", body=body)
    other = Raw(faultd)
    other.login(user)
    other.select()
    r = Raw(faultd)
    r.login(user)
    r.select()
    r.send("a FETCH 1:* BODY[]\r\nb FETCH 1:* BODY[]\r\nc FETCH 1:* BODY[]\r\n")
    r.close()
    assert other.cmd("NOOP").ok
    line = other.cmd("FETCH 1 BODY.PEEK[TEXT]").find("1 FETCH")[0]
    assert fetch_item(line, "BODY[TEXT]") == body
    other.close()


# --------------------------------------------------------------------------
# Files changed by other programs

def _drop(d, addr, msg, folder=None, name=None):
    """Writes a message into new/ the Maildir way (tmp/, then rename)."""
    box = d.mailbox(addr, folder)
    name = name or "%d.M%dP%d.otherprogram" % (time.time(), random.randrange(1 << 30),
                                                os.getpid())
    tmp = os.path.join(box, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(msg)
    if os.geteuid() == 0:
        os.chown(tmp, helpers.VMAIL_UID, helpers.VMAIL_UID)
    os.rename(tmp, os.path.join(box, "new", name))
    return name


def test_file_dropped_into_new_shows_up(faultd, user):
    r = Raw(faultd)
    r.login(user)
    assert number(r.select().untagged, "EXISTS") == 0
    m1 = simple_message("dropped one")
    _drop(faultd, user, m1)
    res = r.cmd("NOOP")
    assert number(res.untagged, "EXISTS") == 1, res
    line = r.cmd("FETCH 1 (BODY.PEEK[] RFC822.SIZE)").find("1 FETCH")[0]
    assert fetch_item(line, "BODY[]") == m1
    assert int(fetch_item(line, "RFC822.SIZE")) == len(m1)
    # During IDLE: inotify, no polling by the client.
    t = r.tag()
    r.send("%s IDLE\r\n" % t)
    assert r.line().startswith(b"+")
    _drop(faultd, user, simple_message("dropped two"))
    start = time.monotonic()
    m = r.wait_for(rb"^\* (\d+) EXISTS$", timeout=5.0)
    assert m and int(m.group(1)) == 2, r.seen
    assert time.monotonic() - start < 1.5
    # A flag changed by renaming the file outside (as a Maildir client
    # would: into cur/ with the info suffix) shows as FETCH FLAGS.
    path = faultd.find(user, "dropped one")
    assert len(path) == 1, path
    base = os.path.basename(path[0]).split(":2,")[0]
    os.rename(path[0], os.path.join(faultd.mailbox(user), "cur", base + ":2,F"))
    m = r.wait_for(rb"^\* \d+ FETCH \(.*\\Flagged", timeout=5.0)
    assert m, r.seen
    r.send("DONE\r\n")
    assert r.response(t).ok
    r.close()


def _dovecot_name(n, size, flags):
    return "17000000%02d.M%dP1.oldhost,S=%d,W=%d:2,%s" % (n, n, size, size + 2, flags)


def test_dovecot_uidlist_import(faultd, user):
    box = faultd.mailbox(user)
    msgs = [simple_message("dovecot %d" % i) for i in range(4)]
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)
        os.makedirs(os.path.join(box, ".Archive", sub), exist_ok=True)
    names = []
    for i, (msg, flags) in enumerate(zip(msgs[:3], ("S", "FS", ""))):
        name = _dovecot_name(i + 1, len(msg), flags)
        with open(os.path.join(box, "cur", name), "wb") as f:
            f.write(msg)
        names.append(name.split(":2,")[0])
    # One more, in new/, that the uidlist does not name: it gets a UID
    # after the recorded ones.
    with open(os.path.join(box, "new", "1700000099.M99P1.oldhost"), "wb") as f:
        f.write(msgs[3])
    with open(os.path.join(box, "dovecot-uidlist"), "w") as f:
        f.write("3 V1700000000 N43 G0123456789abcdef0123456789abcdef\n"
                "7 :%s\n12 W1234 :%s\n42 G1 W99 :%s\n" % tuple(names))
    arch = _dovecot_name(50, len(msgs[0]), "S")
    with open(os.path.join(box, ".Archive", "cur", arch), "wb") as f:
        f.write(msgs[0])
    with open(os.path.join(box, ".Archive", "dovecot-uidlist"), "w") as f:
        f.write("3 V1600000000 N6\n5 :%s\n" % arch.split(":2,")[0])
    with open(os.path.join(box, "subscriptions"), "w") as f:
        f.write("Archive\n")
    chown_tree(box)

    r = Raw(faultd)
    r.login(user)
    sel = r.select()
    assert resp_code_value(sel.untagged, "UIDVALIDITY") == "1700000000"
    assert number(sel.untagged, "EXISTS") == 4
    uids = search_result(r.cmd("UID SEARCH ALL"))
    assert uids[:3] == [7, 12, 42] and uids[3] >= 43, uids
    assert int(resp_code_value(sel.untagged, "UIDNEXT")) == uids[3] + 1
    res = r.cmd("UID FETCH 7:42 (FLAGS BODY.PEEK[])")
    by_uid = {int(fetch_item(l, "UID")): l for l in res.untagged if b"FETCH" in l}
    assert fetch_item(by_uid[7], "BODY[]") == msgs[0]
    assert fetch_item(by_uid[42], "BODY[]") == msgs[2]
    assert "\\Seen" in flags_of(by_uid[7]) and "\\Flagged" in flags_of(by_uid[12])
    assert "\\Seen" not in flags_of(by_uid[42])
    st = status_items(r.cmd("STATUS Archive (MESSAGES UIDVALIDITY UIDNEXT)")
                      .find("STATUS")[0])
    assert st == {"MESSAGES": 1, "UIDVALIDITY": 1600000000, "UIDNEXT": 6}
    r.select("Archive")
    assert search_result(r.cmd("UID SEARCH ALL")) == [5]
    r.close()


# --------------------------------------------------------------------------
# The index: deleted, corrupt, gone with its uidlist (own daemon: restarts)

def _state(d, addr, folder="INBOX"):
    r = Raw(d)
    r.login(addr, "secret-password-1")
    sel = r.select(folder)
    out = (int(resp_code_value(sel.untagged, "UIDVALIDITY")),
           search_result(r.cmd("UID SEARCH ALL")),
           search_result(r.cmd("UID SEARCH SEEN")))
    r.cmd("LOGOUT")
    r.close()
    return out


def test_index_deleted_or_corrupt_is_rebuilt(daemons):
    d = daemons.make(helpers.imap_settings(), name="imapindex")
    addr = "user@example.test"
    for i in range(4):
        deliver(d, addr, helpers.unique("ix%d" % i))
    r = Raw(d)
    r.login(addr, "secret-password-1")
    r.select()
    assert r.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)").ok
    assert r.cmd("EXPUNGE").ok                     # UIDs now start at 2
    assert r.cmd("STORE 2 +FLAGS (\\Seen)").ok
    assert r.cmd("COPY 1:2 Archive").ok
    r.close()
    inbox = _state(d, addr)
    archive = _state(d, addr, "Archive")
    assert inbox[1][0] == 2 and len(inbox[1]) == 3 and inbox[2] == [inbox[1][1]]

    # SIGTERM with a session in IDLE: "* BYE", then a clean exit.
    idle = Raw(d)
    idle.login(addr, "secret-password-1")
    idle.select()
    idle.send("i1 IDLE\r\n")
    assert idle.line().startswith(b"+")
    start = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - start < 10
    assert idle.closed()
    assert b"* BYE" in idle.buf, idle.buf

    # Deleted while stopped: rebuilt with the same UIDVALIDITY and UIDs.
    files = index_files(d, addr)
    assert any(f.endswith("posthorn-index.db") for f in files), files
    for f in files:
        os.unlink(f)
    d.start()
    assert _state(d, addr) == inbox
    assert _state(d, addr, "Archive") == archive

    # Corrupt (garbage over the first bytes): rebuilt the same way.
    d.stop()
    db = os.path.join(d.mailbox(addr), "posthorn-index.db")
    for f in index_files(d, addr):
        if f != db:
            os.unlink(f)
    with open(db, "r+b") as f:
        f.write(b"\xde\xad\xbe\xef garbage " * 16)
    d.start()
    assert _state(d, addr) == inbox
    assert _state(d, addr, "Archive") == archive

    # Index and uidlists gone: a new UIDVALIDITY, every message still there
    # and flags from the file names.
    d.stop()
    box = d.mailbox(addr)
    for f in index_files(d, addr):
        os.unlink(f)
    for root, dirs, names in os.walk(box):
        for n in names:
            if n == "dovecot-uidlist":
                os.unlink(os.path.join(root, n))
    d.start()
    fresh = _state(d, addr)
    assert fresh[0] != inbox[0]
    assert len(fresh[1]) == 3 and len(fresh[2]) == 1
    assert len(_state(d, addr, "Archive")[1]) == 2


# --------------------------------------------------------------------------
# Random input (own daemon)

WORDS = ["NOOP", "SELECT", "EXAMINE", "FETCH", "UID", "STORE", "SEARCH", "COPY", "MOVE",
         "APPEND", "LIST", "LSUB", "STATUS", "CREATE", "DELETE", "RENAME", "EXPUNGE",
         "IDLE", "DONE", "CHECK", "CLOSE", "UNSELECT", "ENABLE", "ID", "NAMESPACE",
         "GETQUOTAROOT", "SUBSCRIBE", "CAPABILITY", "INBOX", "Trash", "1:*", "*", "1,2:3",
         "4294967295", "4294967296", "0", "(", ")", "((((((", "))", "BODY[", "BODY[]",
         "BODY.PEEK[HEADER.FIELDS (", "<0.>", "<1.99999999999>", "FLAGS", "+FLAGS",
         "(\\Seen", "\\Deleted", "$kw", "OR", "NOT", "CHARSET", "UTF-8", "HEADER", "\"",
         "\"\\", "\"a\\\"b\"", "NIL", "{", "{0}", "{1}", "{99999999999}", "{5+}", "{-1}",
         "{4294967296+}", "&", "&Jjo", "%", "[", "]", "\x00", "\xff\xfe", "x" * 300]


def _fuzz_line(rng):
    parts = []
    if rng.random() < 0.9:
        parts.append("f%d" % rng.randrange(1000))
    for _ in range(rng.randrange(1, 8)):
        if rng.random() < 0.8:
            parts.append(rng.choice(WORDS))
        else:
            parts.append("".join(chr(rng.randrange(1, 256)) for _ in range(rng.randrange(1, 20))))
    line = " ".join(parts).replace("\r", "").replace("\n", "")
    data = line.encode("latin-1")
    if rng.random() < 0.15:
        n = rng.randrange(0, 50)
        data += b" {%d%s}\r\n" % (n, b"+" if rng.random() < 0.5 else b"") + \
            bytes(rng.randrange(256) for _ in range(rng.randrange(0, n + 5)))
    return data + (b"\r\n" if rng.random() < 0.97 else b"\n")


def test_random_input_never_crashes(daemons):
    d = daemons.make(helpers.imap_settings(), name="imapfuzz")
    addr = "user@example.test"
    deliver(d, addr, "fuzz target", body=b"some text\r\n")
    watcher = Raw(d)
    watcher.login(addr, "secret-password-1")
    watcher.select()
    rng = random.Random(20240501)
    fuzz = None
    reconnects = 0
    for i in range(400):
        if fuzz is None:
            fuzz = Raw(d)
            fuzz.login(addr, "secret-password-1")
            if rng.random() < 0.7:
                fuzz.select()
            reconnects += 1
        try:
            fuzz.send(_fuzz_line(rng))
            fuzz.buf = b""
            fuzz.pending(0.005)
        except Exception:
            fuzz.close()
            fuzz = None
            continue
        if i % 40 == 39:
            # Still answering? (a literal may be swallowing input; start over)
            fuzz.close()
            fuzz = None
    if fuzz:
        fuzz.close()
    assert d.running(), d.stderr_tail()
    res = watcher.cmd("NOOP")
    assert res.ok, res
    line = watcher.cmd("FETCH 1 BODY.PEEK[TEXT]").find("1 FETCH")[0]
    assert fetch_item(line, "BODY[TEXT]") == b"some text\r\n"
    watcher.close()
    c = login(d, addr, "secret-password-1", select="INBOX")
    assert c.noop()[0] == "OK"
    c.logout()
    # Empty lines, NULs and 8-bit bytes before login: still no crash, and
    # no login failure was caused by garbage.
    r = Raw(d)
    r.send(b"\x00\x01\x02\r\n\xff\xff\r\n{5}\r\nabc\r\n" + b"(" * 200 + b"\r\n")
    r.pending(0.3)
    r.close()
    assert d.running()
    assert d.stop() == 0
    assert "AddressSanitizer" not in d.stderr_text()
    assert reconnects >= 1
