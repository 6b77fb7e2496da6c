"""IMAP end to end, quickly: the session (greeting, capabilities, STARTTLS,
logins, errors, literals, IDLE, untagged updates, shutdown) and the mailbox
commands (LIST with special-use folders, SELECT, CREATE/RENAME/DELETE,
SUBSCRIBE/LSUB, STATUS, QUOTA), with imaplib and a raw client. The full
suite lives in the other test_imap_*.py files."""

import base64
import imaplib
import os
import re
import signal
import smtplib
import socket
import ssl
import time

import pytest

import helpers
from helpers import insecure_tls_context, listen_port

PASSWORD = "secret-password-2"
SPECIAL = {"Drafts": "\\Drafts", "Sent": "\\Sent", "Junk": "\\Junk", "Trash": "\\Trash",
           "Archive": "\\Archive"}


@pytest.fixture(scope="module")
def imapd(mod_daemons):
    return mod_daemons.make(helpers.imap_settings(), name="imap")


@pytest.fixture
def user(imapd):
    return add_user(imapd)


def add_user(d):
    addr = helpers.unique("c") + "@example.test"
    rc, out, err = d.setup("email", "add", addr, PASSWORD)
    assert rc == 0, (rc, out, err)
    return addr


def deliver(d, to, subject):
    msg = helpers.make_message(subject, to=to)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.sendmail("sender@example.org", [to], msg)
    return msg


def imaps(d):
    return imaplib.IMAP4_SSL("127.0.0.1", listen_port(d, "IMAPS_LISTEN"),
                             ssl_context=insecure_tls_context(), timeout=15)


def login(d, addr):
    c = imaps(d)
    typ, _ = c.login(addr, PASSWORD)
    assert typ == "OK"
    return c


class Raw:
    """Sends exactly the bytes given; reads lines (literals left inline)."""

    def __init__(self, d, tls=True):
        port = listen_port(d, "IMAPS_LISTEN" if tls else "IMAP_LISTEN")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        if tls:
            self.tls()
        self.buf = b""
        self.greeting = self.line()

    def tls(self):
        self.sock = insecure_tls_context().wrap_socket(self.sock,
                                                       server_hostname=helpers.HOSTNAME)

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self, timeout=15):
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed; unread %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def until_tagged(self, tag, timeout=15):
        """Lines up to and including the tagged one: (untagged, tagged)."""
        lines = []
        while True:
            ln = self.line(timeout)
            if ln.startswith(tag + " "):
                return lines, ln
            lines.append(ln)

    def cmd(self, tag, text):
        self.send("%s %s\r\n" % (tag, text))
        return self.until_tagged(tag)

    def login(self, addr):
        untagged, tagged = self.cmd("L", "LOGIN %s %s" % (addr, PASSWORD))
        assert tagged.startswith("L OK"), tagged
        return tagged

    def closed(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


def caps(line):
    m = re.search(r"\[CAPABILITY ([^\]]*)\]", line)
    assert m, line
    return m.group(1).split()


def list_lines(c, ref='""', pattern='"*"', verb="list"):
    typ, data = getattr(c, verb)(ref, pattern)
    assert typ == "OK", data
    out = {}
    for item in data:
        if item is None:
            continue
        m = re.match(rb'\(([^)]*)\) "\." (.*)$', item)
        assert m, item
        name = m.group(2).decode()
        if name.startswith('"'):
            name = name[1:-1]
        out[name] = m.group(1).decode().split()
    return out


# --- the session -------------------------------------------------------------


def test_greeting_and_starttls(imapd, user):
    r = Raw(imapd, tls=False)
    assert r.greeting.startswith("* OK [CAPABILITY ")
    before = caps(r.greeting)
    assert {"IMAP4rev1", "STARTTLS", "LOGINDISABLED", "IDLE", "UIDPLUS", "MOVE",
            "SPECIAL-USE", "QUOTA", "LITERAL+", "SASL-IR"} <= set(before)
    assert "AUTH=PLAIN" not in before
    _, tagged = r.cmd("a", "LOGIN %s %s" % (user, PASSWORD))
    assert tagged.startswith("a NO [PRIVACYREQUIRED]"), tagged
    _, tagged = r.cmd("b", "AUTHENTICATE PLAIN")
    assert tagged.startswith("b NO [PRIVACYREQUIRED]"), tagged
    _, tagged = r.cmd("c", "STARTTLS")
    assert tagged.startswith("c OK"), tagged
    r.tls()
    untagged, tagged = r.cmd("d", "CAPABILITY")
    after = untagged[0].split()[2:]
    assert "AUTH=PLAIN" in after and "STARTTLS" not in after and "LOGINDISABLED" not in after
    _, tagged = r.cmd("e", "STARTTLS")
    assert tagged.startswith("e BAD"), tagged
    tagged = r.login(user)
    post = caps(tagged)
    assert "IMAP4rev1" in post and "AUTH=PLAIN" not in post and "STARTTLS" not in post
    r.close()


def test_imaplib_starttls_login(imapd, user):
    c = imaplib.IMAP4("127.0.0.1", listen_port(imapd, "IMAP_LISTEN"), timeout=15)
    assert "LOGINDISABLED" in c.capabilities
    c.starttls(insecure_tls_context())
    assert "AUTH=PLAIN" in c.capabilities
    assert c.login(user, PASSWORD)[0] == "OK"
    assert c.logout()[0] == "BYE"


def test_login_over_993_and_authenticate(imapd, user):
    c = login(imapd, user)
    c.logout()
    r = Raw(imapd)
    assert "AUTH=PLAIN" in caps(r.greeting) and "STARTTLS" not in caps(r.greeting)
    b64 = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode()).decode()
    _, tagged = r.cmd("a", "AUTHENTICATE PLAIN " + b64)     # SASL-IR
    assert tagged.startswith("a OK [CAPABILITY "), tagged
    r.close()
    r = Raw(imapd)
    r.send("a AUTHENTICATE PLAIN\r\n")
    assert r.line() == "+ "
    r.send("*\r\n")
    _, tagged = r.until_tagged("a")
    assert tagged.startswith("a BAD"), tagged
    r.send("b AUTHENTICATE PLAIN\r\n")
    assert r.line() == "+ "
    r.send(b64 + "\r\n")
    _, tagged = r.until_tagged("b")
    assert tagged.startswith("b OK"), tagged
    r.close()


def test_wrong_password(daemons):
    d = daemons.make(helpers.imap_settings(), name="imapfail")
    addr = add_user(d)
    r = Raw(d)
    start = time.monotonic()
    _, tagged = r.cmd("a", "LOGIN %s wrong-password" % addr)
    assert tagged == "a NO [AUTHENTICATIONFAILED] Authentication failed."
    assert time.monotonic() - start >= 0.9      # auth.c's delay
    _, tagged = r.cmd("b", "SELECT INBOX")
    assert tagged.startswith("b BAD"), tagged
    r.close()


def test_literals_and_errors(imapd, user):
    r = Raw(imapd)
    # A synchronizing literal gets "+", LITERAL+ does not.
    r.send("a LOGIN {%d}\r\n" % len(user))
    assert r.line().startswith("+ ")
    r.send("%s {%d+}\r\n%s\r\n" % (user, len(PASSWORD), PASSWORD))
    _, tagged = r.until_tagged("a")
    assert tagged.startswith("a OK"), tagged
    _, tagged = r.cmd("b", "FROBNICATE")
    assert tagged.startswith("b BAD"), tagged
    _, tagged = r.cmd("c", "FETCH 1 FLAGS")        # no mailbox selected
    assert tagged.startswith("c BAD"), tagged
    _, tagged = r.cmd("d", "LOGIN a b")              # already logged in
    assert tagged.startswith("d BAD"), tagged
    r.send("(bad\r\n")
    assert r.line().startswith("* BAD")
    # Too big for a non-APPEND literal: refused without reading it.
    r.send("e STATUS {100000}\r\n")
    assert r.line().startswith("e BAD")
    # APPEND beyond POSTFIX_MESSAGE_SIZE_LIMIT: [TOOBIG] before the octets.
    r.send("f APPEND INBOX {20000000}\r\n")
    assert r.line().startswith("f NO [TOOBIG]")
    _, tagged = r.cmd("g", "NOOP")
    assert tagged.startswith("g OK"), tagged
    r.close()


def test_too_many_errors_and_long_line(imapd):
    r = Raw(imapd)
    for i in range(20):
        r.send("x%d BLAH\r\n" % i)
    lines = [r.line() for _ in range(21)]
    assert lines[-1] == "* BYE Too many errors", lines[-3:]
    assert r.closed()
    r = Raw(imapd)
    r.send("a NOOP " + "x" * 70000 + "\r\n")
    assert r.line().startswith("* BAD")
    assert r.closed()


def test_any_state_commands(imapd, user):
    r = Raw(imapd)
    untagged, tagged = r.cmd("a", 'ID ("name" "test")')
    assert untagged == ['* ID ("name" "posthorn")'] and tagged.startswith("a OK")
    _, tagged = r.cmd("b", "ENABLE CONDSTORE")       # not yet authenticated
    assert tagged.startswith("b BAD")
    r.login(user)
    untagged, tagged = r.cmd("c", "ENABLE CONDSTORE UTF8=ACCEPT")
    assert untagged == ["* ENABLED"] and tagged.startswith("c OK")
    untagged, tagged = r.cmd("d", "NAMESPACE")
    assert untagged == ['* NAMESPACE (("" ".")) NIL NIL']
    _, tagged = r.cmd("e", 'SETQUOTA "" (STORAGE 10)')
    assert tagged.startswith("e NO [NOPERM]")
    untagged, tagged = r.cmd("f", "LOGOUT")
    assert untagged[0].startswith("* BYE") and tagged.startswith("f OK")
    assert r.closed()


# --- mailboxes ---------------------------------------------------------------


def test_list_special_use(imapd, user):
    c = login(imapd, user)
    boxes = list_lines(c)
    assert set(boxes) == {"INBOX"} | set(SPECIAL)
    for name, attr in SPECIAL.items():
        assert attr in boxes[name] and "\\HasNoChildren" in boxes[name], boxes
    assert boxes["INBOX"] == ["\\HasNoChildren"]
    subs = list_lines(c, verb="lsub")
    assert set(subs) == {"INBOX"} | set(SPECIAL)
    typ, data = c.list('""', '""')
    assert data == [b'(\\Noselect) "." ""']
    c.logout()


def test_select_after_delivery(imapd, user):
    deliver(imapd, user, "first")
    deliver(imapd, user, "second")
    c = login(imapd, user)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"2"]
    assert c.untagged_responses["RECENT"] == [b"2"]
    assert c.untagged_responses["UIDNEXT"] == [b"3"]
    assert int(c.untagged_responses["UIDVALIDITY"][0]) > 0
    assert c.untagged_responses["UNSEEN"] == [b"1"]
    assert "READ-ONLY" not in c.untagged_responses
    c.logout()
    # \Recent went to the first session; EXAMINE is read-only.
    c = login(imapd, user)
    typ, data = c.select("INBOX", readonly=True)
    assert typ == "OK" and data == [b"2"]
    assert c.untagged_responses["RECENT"] == [b"0"]
    assert "READ-ONLY" in c.untagged_responses
    typ, data = c.select("Nope")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    c.logout()


def test_create_rename_delete(imapd, user):
    c = login(imapd, user)
    assert c.create("Projects.2024")[0] == "OK"
    assert c.create("Work.")[0] == "OK"                 # trailing delimiter ignored
    typ, data = c.create("Work")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    typ, data = c.create("INBOX")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    for bad in ("a..b", ".a", "a/b"):
        typ, data = c.create('"%s"' % bad)
        assert typ == "NO" and b"CANNOT" in data[0], bad
    top = list_lines(c, pattern='"%"')
    assert top["Projects"] == ["\\Noselect", "\\HasChildren"]
    assert top["Work"] == ["\\HasNoChildren"]
    assert "Projects.2024" not in top
    assert list_lines(c)["Projects.2024"] == ["\\HasNoChildren"]
    assert c.create("Projects")[0] == "OK"
    assert list_lines(c, pattern='"P%"')["Projects"] == ["\\HasChildren"]
    assert c.rename("Work", "Jobs")[0] == "OK"
    typ, data = c.rename("Work", "Other")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    typ, data = c.rename("Jobs", "Trash")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    boxes = list_lines(c)
    assert "Jobs" in boxes and "Work" not in boxes
    assert c.delete("Jobs")[0] == "OK"
    typ, data = c.delete("Jobs")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    typ, data = c.delete("INBOX")
    assert typ == "NO"
    assert "Jobs" not in list_lines(c)
    c.logout()


def test_subscribe_lsub_status(imapd, user):
    c = login(imapd, user)
    assert c.create("Lists")[0] == "OK"
    assert c.subscribe("Lists")[0] == "OK"
    assert "Lists" in list_lines(c, verb="lsub")
    assert c.unsubscribe("Trash")[0] == "OK"
    subs = list_lines(c, verb="lsub")
    assert "Trash" not in subs and "Lists" in subs
    deliver(imapd, user, "status me")
    typ, data = c.status("INBOX", "(MESSAGES UNSEEN UIDNEXT RECENT UIDVALIDITY)")
    assert typ == "OK"
    m = re.match(rb'"INBOX" \(MESSAGES 1 UNSEEN 1 UIDNEXT 2 RECENT 1 UIDVALIDITY (\d+)\)',
                 data[0])
    assert m, data
    typ, data = c.status("Lists", "(MESSAGES)")
    assert data == [b'"Lists" (MESSAGES 0)']
    typ, data = c.status("Missing", "(MESSAGES)")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    c.logout()


def test_quota(imapd, user):
    c = login(imapd, user)
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK"
    assert data == [[b'"INBOX" ""'], [b'"" ()']]
    c.logout()
    rc, out, err = imapd.setup("quota", "set", user, "10M")
    assert rc == 0, (rc, out, err)
    deliver(imapd, user, "quota")
    c = login(imapd, user)
    typ, data = c.getquotaroot("INBOX")
    m = re.match(rb'"" \(STORAGE (\d+) 10240\)', data[1][0])
    assert m and int(m.group(1)) >= 1, data
    typ, data = c.getquota('""')
    assert typ == "OK" and data[0].endswith(b" 10240)")
    typ, data = c.getquota("other")
    assert typ == "NO"
    c.logout()


# --- updates and IDLE ----------------------------------------------------------


def message_file(d, addr):
    files = d.messages(addr)
    assert len(files) == 1, files
    return files[0]


def test_noop_reports_changes_made_elsewhere(imapd, user):
    deliver(imapd, user, "one")
    r = Raw(imapd)
    r.login(user)
    untagged, tagged = r.cmd("a", "SELECT INBOX")
    assert "* 1 EXISTS" in untagged
    # Flags changed by another program: a FETCH (FLAGS) at the next NOOP.
    path = message_file(imapd, user)
    box = os.path.dirname(os.path.dirname(path))
    base = os.path.basename(path).split(":")[0]
    seen = os.path.join(box, "cur", base + ":2,S")
    os.rename(path, seen)
    untagged, tagged = r.cmd("b", "NOOP")
    assert tagged.startswith("b OK")
    assert untagged == ["* 1 FETCH (FLAGS (\\Seen \\Recent))"], untagged
    # New mail: EXISTS and RECENT.
    deliver(imapd, user, "two")
    untagged, _ = r.cmd("c", "NOOP")
    assert untagged == ["* 2 EXISTS", "* 2 RECENT"], untagged
    # A message removed by another program: EXPUNGE.
    os.unlink(seen)
    untagged, _ = r.cmd("d", "CHECK")
    assert untagged == ["* 1 EXPUNGE"], untagged
    untagged, tagged = r.cmd("e", "UNSELECT")
    assert tagged.startswith("e OK")
    _, tagged = r.cmd("f", "NOOP")
    assert tagged.startswith("f OK")
    r.close()


def test_idle_sees_delivery(imapd, user):
    r = Raw(imapd)
    r.login(user)
    r.cmd("a", "SELECT INBOX")
    r.send("b IDLE\r\n")
    assert r.line() == "+ idling"
    start = time.monotonic()
    deliver(imapd, user, "wake up")
    assert r.line(timeout=5) == "* 1 EXISTS"
    assert time.monotonic() - start < 1.0
    assert r.line(timeout=5) == "* 1 RECENT"
    r.send("DONE\r\n")
    _, tagged = r.until_tagged("b")
    assert tagged == "b OK IDLE terminated."
    r.send("c IDLE\r\n")
    assert r.line() == "+ idling"
    r.send("nonsense\r\n")
    _, tagged = r.until_tagged("c")
    assert tagged.startswith("c BAD")
    r.close()


def test_idle_sessions_and_sigterm(daemons):
    d = daemons.make(helpers.imap_settings(), name="imapterm")
    addr = add_user(d)
    idlers = []
    for i in range(3):
        r = Raw(d)
        r.login(addr)
        if i < 2:
            r.cmd("s", "SELECT INBOX")
        r.send("i IDLE\r\n")
        assert r.line() == "+ idling"
        idlers.append(r)
    d.proc.send_signal(signal.SIGTERM)
    for r in idlers:
        assert r.line(timeout=10) == "* BYE Server shutting down"
        assert r.closed()
    assert d.wait_exit(15) == 0
