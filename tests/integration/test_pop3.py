"""POP3 on a real daemon: poplib over STLS (POP3_LISTEN) and implicit TLS
(POP3S_LISTEN), raw sockets where the bytes on the wire matter, curl,
fetchmail and getmail6. Messages arrive over SMTP. Every test uses its own
fresh account, so tests on the module daemon do not see each other's mail;
tests that fail logins or restart use their own daemon (the failure delay
is per client address)."""

import base64
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

import helpers
from helpers import insecure_tls_context, listen_port

PASSWORD = "secret-password-2"


@pytest.fixture(scope="module")
def popd(mod_daemons):
    return mod_daemons.make(helpers.pop3_settings(), name="pop3")


@pytest.fixture
def user(popd):
    addr = helpers.unique("p") + "@example.test"
    rc, out, err = popd.setup("email", "add", addr, PASSWORD)
    assert rc == 0, (rc, out, err)
    return addr


def deliver(d, to, subject, body=None):
    msg = helpers.make_message(subject, body=body, to=to)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.sendmail("sender@example.org", [to], msg)
    return msg


def stls(d):
    p = poplib.POP3("127.0.0.1", listen_port(d, "POP3_LISTEN"), timeout=15)
    p.stls(insecure_tls_context())
    return p


def pop3s(d):
    return poplib.POP3_SSL("127.0.0.1", listen_port(d, "POP3S_LISTEN"),
                           context=insecure_tls_context(), timeout=15)


def login(p, addr, password=PASSWORD):
    p.user(addr)
    return p.pass_(password)


def plain_b64(addr, password=PASSWORD):
    return base64.b64encode(b"\0" + addr.encode() + b"\0" + password.encode()).decode()


class Raw:
    """A line-level POP3 client that sends exactly the bytes given."""

    def __init__(self, d, implicit_tls=True):
        port = listen_port(d, "POP3S_LISTEN" if implicit_tls else "POP3_LISTEN")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        if implicit_tls:
            self.tls()
        self.buf = b""
        self.greeting = self.line()

    def tls(self):
        self.sock = insecure_tls_context().wrap_socket(self.sock,
                                                       server_hostname=helpers.HOSTNAME)

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed; unread %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def multiline(self):
        """The raw body of a multi-line response, up to and without the
        terminating '.' line (still dot-stuffed)."""
        while b"\r\n.\r\n" not in b"\r\n" + self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed; unread %r" % self.buf)
            self.buf += chunk
        whole = b"\r\n" + self.buf
        end = whole.index(b"\r\n.\r\n")
        body = whole[2:end + 2] if end > 0 else b""
        self.buf = whole[end + 5:]
        return body

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()

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


# --------------------------------------------------------------------------
# Capabilities, STLS and the plaintext policy

def test_capa_stls_and_plaintext_refusal(popd, user):
    p = poplib.POP3("127.0.0.1", listen_port(popd, "POP3_LISTEN"), timeout=15)
    assert p.getwelcome() == b"+OK posthorn POP3 ready"
    capa = p.capa()
    for cap in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "STLS"):
        assert cap in capa, capa
    assert capa["IMPLEMENTATION"] == ["posthorn"]
    assert "USER" not in capa and "SASL" not in capa
    for cmd in ("USER " + user, "PASS " + PASSWORD, "AUTH PLAIN " + plain_b64(user)):
        with pytest.raises(poplib.error_proto) as e:
            p._shortcmd(cmd)
        assert e.value.args[0].startswith(b"-ERR [AUTH] "), e.value
    p.stls(insecure_tls_context())
    capa = p.capa()
    assert "USER" in capa and capa["SASL"] == ["PLAIN"] and "STLS" not in capa
    with pytest.raises(poplib.error_proto):
        p._shortcmd("STLS")
    assert login(p, user).startswith(b"+OK")
    # After login, no login mechanisms are advertised.
    capa = p.capa()
    assert "USER" not in capa and "SASL" not in capa and "TOP" in capa
    p.quit()


def test_stls_discards_pipelined_input(popd):
    r = Raw(popd, implicit_tls=False)
    r.send("STLS\r\nQUIT\r\n")
    assert r.line() == b"+OK Begin TLS negotiation"
    assert r.buf == b""
    r.tls()
    # The QUIT sent before the handshake is gone: the session is alive.
    assert r.cmd("NOOP").startswith(b"-ERR")
    assert r.cmd("STLS").startswith(b"-ERR")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()


def test_pop3s_is_implicit_tls_and_stls_refused(popd, user):
    p = pop3s(popd)
    assert p.getwelcome() == b"+OK posthorn POP3 ready"
    capa = p.capa()
    assert "STLS" not in capa and "USER" in capa and capa["SASL"] == ["PLAIN"]
    with pytest.raises(poplib.error_proto):
        p._shortcmd("STLS")
    assert login(p, user).startswith(b"+OK")
    p.quit()


# --------------------------------------------------------------------------
# Every command

def test_every_command_over_stls(popd, user):
    msgs = [deliver(popd, user, helpers.unique("s%d" % i)) for i in range(3)]
    p = stls(popd)
    assert login(p, user).startswith(b"+OK")
    count, size = p.stat()
    assert count == 3
    resp, listing, _ = p.list()
    sizes = {int(n): int(s) for n, s in (l.split() for l in listing)}
    assert sorted(sizes) == [1, 2, 3] and sum(sizes.values()) == size
    assert p.list(2) == b"+OK 2 %d" % sizes[2]
    resp, uidls, _ = p.uidl()
    uids = {int(n): u for n, u in (l.split() for l in uidls)}
    assert all(len(u) == 16 and int(u, 16) for u in uids.values())
    assert len(set(uids.values())) == 3
    assert p.uidl(3) == b"+OK 3 " + uids[3]
    for n in (1, 2, 3):
        resp, lines, octets = p.retr(n)
        data = b"\r\n".join(lines) + b"\r\n"
        # The exact sizes: LIST's count is what RETR sends, unstuffed.
        assert len(data) == sizes[n], (n, len(data), sizes[n])
        assert resp == b"+OK %d octets" % sizes[n]
        assert data.endswith(msgs[n - 1]), (data, msgs[n - 1])
    resp, lines, _ = p.top(1, 1)
    head, body = msgs[0].split(b"\r\n\r\n", 1)
    assert lines[-2:] == [b"", body.split(b"\r\n")[0]]
    resp, lines, _ = p.top(1, 0)
    assert lines[-1] == b"" and b"Subject: " in b"\n".join(lines)
    assert p.dele(2).startswith(b"+OK")
    for bad in ("DELE 2", "RETR 2", "LIST 2", "TOP 2 1", "UIDL 2"):
        with pytest.raises(poplib.error_proto) as e:
            p._shortcmd(bad)
        assert b"already deleted" in e.value.args[0], (bad, e.value)
    assert p.stat() == (2, size - sizes[2])
    assert [l.split()[0] for l in p.list()[1]] == [b"1", b"3"]
    for bad in ("RETR 4", "TOP 1", "APOP a b", "USER x"):
        with pytest.raises(poplib.error_proto):
            p._shortcmd(bad)
    assert p.rset().startswith(b"+OK")
    assert p.stat() == (3, size)
    assert p.noop().startswith(b"+OK")
    assert p.quit().startswith(b"+OK")
    # RSET undid the deletion.
    assert len(popd.messages(user)) == 3


def test_auth_plain_initial_response_and_continuation(popd, user):
    deliver(popd, user, helpers.unique("plain"))
    p = pop3s(popd)
    assert p._shortcmd("AUTH PLAIN " + plain_b64(user)).startswith(b"+OK")
    assert p.stat()[0] == 1
    p.quit()

    p = pop3s(popd)
    p._putcmd("AUTH PLAIN")
    assert p._getline()[0].startswith(b"+")
    p._putcmd("*")
    with pytest.raises(poplib.error_proto):
        p._getresp()
    p._putcmd("AUTH PLAIN")
    assert p._getline()[0].startswith(b"+")
    p._putcmd(plain_b64(user.upper()))
    assert p._getresp().startswith(b"+OK")
    assert p.stat()[0] == 1
    p.quit()


def test_pipelined_commands_answered_in_order(popd, user):
    deliver(popd, user, helpers.unique("pipe"))
    r = Raw(popd)
    r.send("USER %s\r\nPASS %s\r\nSTAT\r\nLIST 1\r\nUIDL 1\r\nRETR 1\r\nNOOP\r\nDELE 9\r\nQUIT\r\n"
           % (user, PASSWORD))
    assert r.line().startswith(b"+OK")                       # USER
    assert r.line().startswith(b"+OK Logged in, 1 messages")  # PASS
    stat = r.line()
    assert stat.startswith(b"+OK 1 ")
    assert r.line() == b"+OK 1 " + stat.split()[2]          # LIST 1
    assert r.line().startswith(b"+OK 1 ")                    # UIDL 1
    assert r.line().startswith(b"+OK ")                      # RETR 1
    assert len(r.multiline()) == int(stat.split()[2])
    assert r.line().startswith(b"+OK")                       # NOOP
    assert r.line().startswith(b"-ERR No such message")      # DELE 9
    assert r.line().startswith(b"+OK")                       # QUIT
    assert r.closed()


def test_dot_stuffing_on_the_wire(popd, user):
    body = b".hidden\r\n..two dots\r\nplain\r\n.\r\nend\r\n"
    deliver(popd, user, helpers.unique("dots"), body=body)
    r = Raw(popd)
    r.cmd("USER " + user)
    r.cmd("PASS " + PASSWORD)
    size = int(r.cmd("LIST 1").split()[2])
    assert r.cmd("RETR 1").startswith(b"+OK")
    wire = r.multiline()
    assert b"\r\n..hidden\r\n...two dots\r\nplain\r\n..\r\nend\r\n" in wire
    unstuffed = b"\r\n".join(l[1:] if l.startswith(b".") else l
                             for l in wire.split(b"\r\n"))
    assert len(unstuffed) == size
    assert r.cmd("TOP 1 2").startswith(b"+OK")
    assert r.multiline().endswith(b"\r\n\r\n..hidden\r\n...two dots\r\n")
    r.cmd("QUIT")
    r.close()


def test_bad_arguments_then_too_many_errors(popd, user):
    deliver(popd, user, helpers.unique("bad"))
    r = Raw(popd)
    assert r.cmd("STAT").startswith(b"-ERR")            # not logged in
    r.cmd("USER " + user)
    assert r.cmd("PASS " + PASSWORD).startswith(b"+OK")
    replies = [r.cmd(c) for c in ("RETR 0", "RETR x", "RETR", "LIST 1 2", "STAT 1",
                                  "TOP 1 -1", "XYZZY", "RETR 99999999999")]
    assert all(x.startswith(b"-ERR ") and len(x) > 6 for x in replies), replies
    assert replies[0] == b"-ERR No such message"
    assert r.cmd("NOOP") == b"+OK Nothing to do"
    # The tenth error ends the session (and deletes nothing).
    assert r.cmd("DELE 1") == b"+OK Message 1 deleted"
    assert r.cmd("RSET x").startswith(b"-ERR")
    assert r.closed()
    assert b"Too many errors" in r.buf
    assert len(popd.messages(user)) == 1


def test_long_line_refused_and_closed(popd):
    r = Raw(popd)
    r.send("NOOP " + "x" * 300 + "\r\n")
    assert r.line() == b"-ERR line too long"
    assert r.closed()


# --------------------------------------------------------------------------
# Sessions and the maildrop

def test_deletion_only_on_quit(popd, user):
    for i in range(2):
        deliver(popd, user, helpers.unique("del%d" % i))
    p = stls(popd)
    login(p, user)
    p.dele(1)
    p.dele(2)
    p.close()   # no QUIT: nothing is deleted
    helpers.wait_until(lambda: _can_login(popd, user), what="the mailbox lock released")
    assert len(popd.messages(user)) == 2

    p = pop3s(popd)
    login(p, user)
    assert p.stat()[0] == 2
    uid2 = p.uidl(2)
    p.dele(1)
    assert b"1 messages deleted" in p.quit()
    assert len(popd.messages(user)) == 1
    p = pop3s(popd)
    login(p, user)
    assert p.stat()[0] == 1
    assert p.uidl(1).split()[2] == uid2.split()[2]
    p.quit()


def _can_login(d, addr):
    p = pop3s(d)
    try:
        login(p, addr)
    except poplib.error_proto:
        p.close()
        return False
    p.quit()
    return True


def test_second_session_is_in_use(popd, user):
    first = pop3s(popd)
    login(first, user)
    second = pop3s(popd)
    second.user(user)
    with pytest.raises(poplib.error_proto) as e:
        second.pass_(PASSWORD)
    assert e.value.args[0].startswith(b"-ERR [IN-USE]"), e.value
    first.quit()
    assert login(second, user).startswith(b"+OK")
    second.quit()


def test_view_is_a_snapshot(popd, user):
    deliver(popd, user, helpers.unique("snap1"))
    p = stls(popd)
    login(p, user)
    assert p.stat()[0] == 1
    deliver(popd, user, helpers.unique("snap2"))
    assert len(popd.messages(user)) == 2
    assert p.stat()[0] == 1
    assert len(p.list()[1]) == 1
    with pytest.raises(poplib.error_proto):
        p.retr(2)
    p.quit()
    p = stls(popd)
    login(p, user)
    assert p.stat()[0] == 2
    p.quit()


# --------------------------------------------------------------------------
# Failed logins, restarts (own daemons)

def test_wrong_password_is_delayed_and_counted(daemons):
    d = daemons.make(helpers.pop3_settings(), name="pop3auth")
    p = pop3s(d)
    p.user("user@example.test")
    start = time.monotonic()
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("wrong")
    assert time.monotonic() - start >= 0.9
    assert e.value.args[0].startswith(b"-ERR [AUTH]"), e.value
    assert "auth: pop3 login failed user=user@example.test client=127.0.0.1 failures=1" \
        in d.log_text()
    assert "wrong" not in d.log_text()
    # The session goes on: the right password works (and is not delayed).
    start = time.monotonic()
    assert login(p, "user@example.test", "secret-password-1").startswith(b"+OK")
    assert time.monotonic() - start < 0.9
    p.quit()


def test_uidl_stable_across_restart(daemons):
    d = daemons.make(helpers.pop3_settings(), name="pop3uidl")
    for i in range(2):
        deliver(d, "user@example.test", helpers.unique("r%d" % i))
    p = pop3s(d)
    login(p, "user@example.test", "secret-password-1")
    before = p.uidl()[1]
    p.quit()
    d.restart()
    p = pop3s(d)
    login(p, "user@example.test", "secret-password-1")
    assert p.uidl()[1] == before
    p.quit()


# --------------------------------------------------------------------------
# Real clients

def _curl(*args):
    p = subprocess.run(["curl", "-sS", "-k", "--max-time", "20"] + list(args),
                       capture_output=True, timeout=30)
    assert p.returncode == 0, (args, p.stderr)
    return p.stdout


def test_curl_pop3_stls_and_pop3s(popd, user):
    msg = deliver(popd, user, helpers.unique("curl"))
    creds = "%s:%s" % (user, PASSWORD)
    port = listen_port(popd, "POP3_LISTEN")
    listing = _curl("--ssl-reqd", "-u", creds, "pop3://127.0.0.1:%d/" % port)
    n, size = listing.split()
    assert n == b"1" and int(size) > len(msg)
    data = _curl("--ssl-reqd", "-u", creds, "pop3://127.0.0.1:%d/1" % port)
    assert len(data) == int(size) and data.endswith(msg)
    sport = listen_port(popd, "POP3S_LISTEN")
    assert _curl("-u", creds, "pop3s://127.0.0.1:%d/1" % sport) == data
    assert _curl("-u", creds, "pop3s://127.0.0.1:%d/" % sport) == listing
    # Plain pop3:// without TLS must not log in.
    p = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", creds,
                        "pop3://127.0.0.1:%d/" % port], capture_output=True, timeout=30)
    assert p.returncode != 0


@pytest.fixture
def home():
    path = tempfile.mkdtemp(prefix="posthorn-pop3-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _fetchmail(home, rc_text):
    rc = os.path.join(home, ".fetchmailrc")
    with open(rc, "w") as f:
        f.write(rc_text)
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=home, FETCHMAILHOME=home)
    p = subprocess.run(["fetchmail", "-f", rc, "--nosyslog", "-v"], capture_output=True,
                       text=True, env=env, timeout=60)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")
def test_fetchmail_keep_then_delete(popd, user, home):
    subjects = [helpers.unique("fm%d" % i) for i in range(2)]
    for s in subjects:
        deliver(popd, user, s)
    out = os.path.join(home, "out.mbox")
    rc_text = ('poll 127.0.0.1 service %d protocol POP3 uidl\n'
               '  user "%s" there with password "%s" is "nobody" here\n'
               '  sslproto "TLS1.2+" no sslcertck %%s\n'
               '  mda "cat >> %s"\n' % (listen_port(popd, "POP3_LISTEN"), user, PASSWORD, out))
    rc, log = _fetchmail(home, rc_text % "keep")
    assert rc == 0, log
    data = open(out, "rb").read()
    assert all(data.count(s.encode() + b"@") == 1 for s in subjects), data
    assert len(popd.messages(user)) == 2
    # Second run: nothing new (fetchmail exits 1 for "no mail").
    rc, log = _fetchmail(home, rc_text % "keep")
    assert rc == 1, log
    assert open(out, "rb").read() == data
    # Without keep, fetched messages are deleted on the server.
    rc, log = _fetchmail(home, rc_text % "nokeep fetchall")
    assert rc == 0, log
    helpers.wait_until(lambda: popd.messages(user) == [], what="messages deleted")


@pytest.mark.skipif(shutil.which("getmail") is None, reason="getmail6 not installed")
def test_getmail_ssl_retriever(popd, user, home):
    subjects = [helpers.unique("gm%d" % i) for i in range(2)]
    for s in subjects:
        deliver(popd, user, s)
    maildir = os.path.join(home, "Maildir")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(maildir, sub))
    # getmail refuses to deliver as root; then it delivers as nobody.
    as_user = ""
    if os.geteuid() == 0:
        as_user = "user = nobody\n"
        for path in [home, maildir] + [os.path.join(maildir, s) for s in ("new", "cur", "tmp")]:
            os.chmod(path, 0o777)
    rcfile = os.path.join(home, "getmailrc")
    with open(rcfile, "w") as f:
        f.write("[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
                "port = %d\nusername = %s\npassword = %s\n\n"
                "[destination]\ntype = Maildir\npath = %s/\n%s\n"
                "[options]\nread_all = false\ndelete = false\nverbose = 0\n"
                % (listen_port(popd, "POP3S_LISTEN"), user, PASSWORD, maildir, as_user))
    gdir = os.path.join(home, ".getmail")
    os.mkdir(gdir)

    cmd = ["getmail", "--getmaildir", gdir, "--rcfile", rcfile]
    env = dict(os.environ, HOME=home)
    for run in range(2):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, (run, p.stdout, p.stderr)
        got = os.listdir(os.path.join(maildir, "new"))
        # The second run fetches nothing new.
        assert len(got) == 2, (run, got, p.stdout, p.stderr)
    texts = b"".join(open(os.path.join(maildir, "new", n), "rb").read() for n in got)
    assert all(s.encode() in texts for s in subjects)
    assert len(popd.messages(user)) == 2


def test_large_pipelined_retrs_arrive_intact(popd, user):
    # Three 2 MB answers pipelined without reading: the server waits for
    # its output to drain instead of buffering everything.
    body = b"".join(b"line %07d of a large message\r\n" % i for i in range(64000))
    deliver(popd, user, helpers.unique("big"), body=body)
    r = Raw(popd)
    r.cmd("USER " + user)
    r.cmd("PASS " + PASSWORD)
    size = int(r.cmd("LIST 1").split()[2])
    r.send("RETR 1\r\nRETR 1\r\nRETR 1\r\nQUIT\r\n")
    for _ in range(3):
        assert r.line() == b"+OK %d octets" % size
        assert len(r.multiline()) == size
    assert r.line().startswith(b"+OK")
    assert r.closed()


def test_sigterm_ends_pop3_sessions(daemons):
    d = daemons.make(helpers.pop3_settings(), name="pop3term")
    deliver(d, "user@example.test", helpers.unique("term"))
    r = Raw(d)
    r.cmd("USER user@example.test")
    r.cmd("PASS secret-password-1")
    assert r.cmd("DELE 1").startswith(b"+OK")
    start = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - start < 10
    assert r.closed()
    assert r.buf.startswith(b"-ERR [SYS/TEMP]")
    # No QUIT: nothing was deleted.
    assert len(d.messages("user@example.test")) == 1
