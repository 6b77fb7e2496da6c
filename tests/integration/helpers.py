"""Shared helpers for the posthorn integration tests: a daemon under test,
a raw SMTP client that shows every reply line, the setup CLI and polling.

Every Daemon owns a private temp base directory (mode 0755 so the daemon can
still reach it after dropping to the mail user), its own settings file and
its own loopback port; stop() always ends the process (SIGTERM, then SIGKILL
after a deadline)."""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

HOSTNAME = "mail.example.test"
DOMAIN = "example.test"
VMAIL_UID = 5000

# Settings names the daemon reads; never inherited from the caller's
# environment, so that the environment of CI cannot change a test.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR",
             "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


def build_dir():
    default = os.path.join(os.path.dirname(__file__), "..", "..", "build")
    return os.path.abspath(os.environ.get("POSTHORN_BUILD", default))


def posthornd_path():
    return os.path.join(build_dir(), "posthornd")


def setup_path():
    return os.path.join(build_dir(), "setup")


def clean_env(extra=None):
    env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if extra:
        env.update(extra)
    return env


def free_port():
    """A free high loopback port (bound to 0 and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a true value; returns that value.
    Raises AssertionError naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def unique(prefix="m"):
    unique.counter += 1
    return "%s-%d-%d-%d" % (prefix, os.getpid(), time.monotonic_ns(), unique.counter)


unique.counter = 0


# --------------------------------------------------------------------------
# Raw SMTP client

class Reply:
    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])

    @property
    def line(self):
        """The last line, e.g. '250 2.1.0 Ok'."""
        return self.lines[-1]

    @property
    def text(self):
        return "\n".join(self.lines)

    def __repr__(self):
        return "Reply(%r)" % self.lines


class Closed(Exception):
    """The server closed the connection while a reply was expected."""


class Smtp:
    """A line-level SMTP client: sends exactly the bytes given and parses
    replies one at a time, so that tests see every reply in order."""

    def __init__(self, port, host="127.0.0.1", timeout=15.0, greet=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.reply() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            raise Closed("connection closed; unread %r" % self.buf)
        self.buf += chunk

    def readline(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            line = self.readline()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return Reply(lines)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def ehlo(self, name="client.example.org"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, r
        return r

    def pending(self, wait=0.0):
        """Bytes the server sent that nobody read yet (waits up to `wait`)."""
        self.sock.settimeout(wait if wait > 0 else 0.001)
        try:
            chunk = self.sock.recv(65536)
            if chunk:
                self.buf += chunk
        except (socket.timeout, BlockingIOError, ConnectionResetError):
            pass
        finally:
            self.sock.settimeout(self.timeout)
        return self.buf

    def wait_closed(self, timeout=10.0):
        """True when the server closes the connection before the deadline;
        whatever it sent before is kept in self.buf."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        self.sock.settimeout(self.timeout)
        return False

    def starttls(self):
        r = self.cmd("STARTTLS")
        assert r.line.startswith("220 2.0.0"), r
        assert self.buf == b"", "data after the 220 before the handshake: %r" % self.buf
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(msg):
    """CRLF message bytes -> DATA payload ending with the terminator."""
    lines = msg.split(b"\r\n")
    stuffed = [b"." + l if l.startswith(b".") else l for l in lines]
    out = b"\r\n".join(stuffed)
    if not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out + b".\r\n"


def make_message(subject, body=None, sender="sender@example.org", to="user@example.test",
                 extra_headers=()):
    """A CRLF message with a unique Message-ID derived from the subject."""
    if body is None:
        body = b"Hello.\r\nThis is " + subject.encode() + b".\r\n"
    hdrs = ["From: <%s>" % sender, "To: <%s>" % to, "Subject: %s" % subject,
            "Message-ID: <%s@client.example.org>" % subject,
            "Date: Thu, 01 Jan 2026 00:00:00 +0000"]
    hdrs += list(extra_headers)
    return ("\r\n".join(hdrs) + "\r\n\r\n").encode() + body


def send_raw_message(port, sender, rcpts, msg, tls=False, helo="client.example.org"):
    """One transaction over the raw client; returns the final reply."""
    with Smtp(port) as c:
        c.ehlo(helo)
        if tls:
            c.starttls()
            c.ehlo(helo)
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.line.startswith("250 2.1.0"), r
        for rc in rcpts:
            r = c.cmd("RCPT TO:<%s>" % rc)
            assert r.line.startswith("250 2.1.5"), (rc, r)
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(dot_stuff(msg))
        final = c.reply()
        c.cmd("QUIT")
        return final


QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")


# --------------------------------------------------------------------------
# The daemon under test

LISTENERS_OFF = ("SUBMISSIONS_LISTEN", "SUBMISSION_LISTEN", "IMAP_LISTEN",
                 "IMAPS_LISTEN", "POP3_LISTEN", "POP3S_LISTEN")


class Daemon:
    def __init__(self, settings=None, name="d"):
        self.base = tempfile.mkdtemp(prefix="posthorn-it-%s-" % name)
        os.chmod(self.base, 0o755)
        self.mail_dir = os.path.join(self.base, "mail")
        self.state_dir = os.path.join(self.base, "state")
        self.config_dir = os.path.join(self.base, "config")
        self.log_dir = os.path.join(self.base, "log")
        for d in (self.mail_dir, self.state_dir, self.config_dir, self.log_dir):
            os.mkdir(d)
            os.chmod(d, 0o755)
        self.conf = os.path.join(self.base, "posthorn.env")
        self.stderr_path = os.path.join(self.base, "stderr.log")
        self.port = free_port()
        self.settings = {
            "MAIL_DIR": self.mail_dir,
            "STATE_DIR": self.state_dir,
            "CONFIG_DIR": self.config_dir,
            "LOG_DIR": self.log_dir,
            "SMTP_LISTEN": "127.0.0.1:%d" % self.port,
            "OVERRIDE_HOSTNAME": HOSTNAME,
            "LOG_LEVEL": "debug",
            "ENABLE_CLAMAV": "0",
            # SPF needs DNS; the tests that check it turn it on with their
            # own DNS fixture.
            "ENABLE_POLICYD_SPF": "0",
            "WORKER_THREADS": "4",
            # Never the system resolver: a test that needs DNS starts its own
            # fixture and overrides this. Nothing listens on the discard
            # port, so lookups fail at once as temporary errors.
            "DNS_RESOLVER": "127.0.0.1:9",
        }
        for name in LISTENERS_OFF:
            self.settings[name] = ""
        if settings:
            self.settings.update(settings)
        self.env = {}
        self.proc = None
        self._stderr = None
        self.write_settings()

    # -- settings and lifecycle ------------------------------------------
    def write_settings(self):
        with open(self.conf, "w") as f:
            f.write("# written by the posthorn integration tests\n")
            for k, v in self.settings.items():
                f.write("%s=%s\n" % (k, v))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, extra_settings=None, env=None, wait=True, timeout=20.0):
        assert not self.running(), "daemon already running"
        if extra_settings:
            self.settings.update(extra_settings)
            self.write_settings()
        if env is not None:
            self.env = dict(env)
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen([posthornd_path(), "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=subprocess.STDOUT, env=clean_env(self.env))
        if wait:
            self.wait_ready(timeout)
        return self

    def _greets(self):
        if self.proc.poll() is not None:
            raise AssertionError("posthornd exited with %s during start:\n%s"
                                 % (self.proc.returncode, self.stderr_tail()))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                data = b""
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
                s.sendall(b"QUIT\r\n")
                return data.startswith(b"220 ")
        except OSError:
            return False

    def wait_ready(self, timeout=20.0):
        wait_until(self._greets, timeout, interval=0.05, what="posthornd's 220 greeting")

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=45.0):
        """Sends sig, waits for the exit (SIGKILL after the deadline) and
        returns the exit status (negative: killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self._close_stderr()
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL, timeout=10.0)

    def restart(self, **kw):
        self.stop()
        self.proc = None
        return self.start(**kw)

    def _close_stderr(self):
        if self._stderr:
            self._stderr.close()
            self._stderr = None

    def cleanup(self):
        rc = self.stop() if self.running() else None
        tail = self.stderr_tail(40)
        shutil.rmtree(self.base, ignore_errors=True)
        return rc, tail

    # -- logs -------------------------------------------------------------
    def log_text(self):
        try:
            with open(os.path.join(self.log_dir, "mail.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr_text(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=30):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    # -- setup CLI -----------------------------------------------------------
    def setup(self, *args, input=None, env=None):
        return run_setup(self.conf, *args, input=input, env=env)

    # -- mailboxes ------------------------------------------------------------
    def mailbox(self, addr, folder=None):
        local, domain = addr.lower().rsplit("@", 1)
        path = os.path.join(self.mail_dir, domain, local)
        if folder:
            path = os.path.join(path, "." + folder)
        return path

    def messages(self, addr, folder=None):
        """Files in new/ and cur/ of addr's Maildir (or one of its folders)."""
        box = self.mailbox(addr, folder)
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(box, sub)
            if os.path.isdir(d):
                out += [os.path.join(d, n) for n in sorted(os.listdir(d))
                        if not n.startswith(".")]
        return out

    def tmp_files(self, addr):
        d = os.path.join(self.mailbox(addr), "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def find(self, addr, marker):
        """Message files of addr containing the marker bytes."""
        if isinstance(marker, str):
            marker = marker.encode()
        hits = []
        for p in self.messages(addr):
            with open(p, "rb") as f:
                if marker in f.read():
                    hits.append(p)
        return hits

    def read_one(self, addr, marker):
        hits = self.find(addr, marker)
        assert len(hits) == 1, "expected one copy of %s for %s, found %d" % (
            marker, addr, len(hits))
        with open(hits[0], "rb") as f:
            return f.read()


def run_setup(conf, *args, input=None, env=None):
    """Runs build/setup -c conf args...; returns (rc, stdout, stderr)."""
    p = subprocess.run([setup_path(), "-c", conf] + list(args), input=input,
                       capture_output=True, text=True, timeout=60, env=clean_env(env))
    return p.returncode, p.stdout, p.stderr


def provision(d):
    """The accounts most tests use."""
    for addr in ("user@example.test", "other@example.test", "postmaster@example.test",
                 "box@catch.test"):
        rc, out, err = d.setup("email", "add", addr, "secret-password-1")
        assert rc == 0, (addr, rc, out, err)
    for alias, target in (("alias@example.test", "user@example.test"),
                          ("@catch.test", "box@catch.test")):
        rc, out, err = d.setup("alias", "add", alias, target)
        assert rc == 0, (alias, rc, out, err)


def split_stored(data):
    """Stored file -> (Return-Path line, Received header, rest)."""
    first, rest = data.split(b"\r\n", 1)
    m = re.match(rb"(Received: [^\r]*(?:\r\n[ \t][^\r]*)*)\r\n", rest)
    assert m, "no Received header after Return-Path: %r" % data[:300]
    return first, m.group(1), rest[m.end():]


# --------------------------------------------------------------------------
# POP3

def pop3_settings(settings=None):
    """Settings for a daemon that serves POP3 (STLS) and POP3S on free
    loopback ports; read them back with listen_port()."""
    out = {"ENABLE_POP3": "1",
           "POP3_LISTEN": "127.0.0.1:%d" % free_port(),
           "POP3S_LISTEN": "127.0.0.1:%d" % free_port()}
    if settings:
        out.update(settings)
    return out


def imap_settings(settings=None):
    """Settings for a daemon that serves IMAP (STARTTLS) and IMAPS on free
    loopback ports; read them back with listen_port()."""
    out = {"ENABLE_IMAP": "1",
           "IMAP_LISTEN": "127.0.0.1:%d" % free_port(),
           "IMAPS_LISTEN": "127.0.0.1:%d" % free_port()}
    if settings:
        out.update(settings)
    return out


def listen_port(d, setting):
    """The port of a daemon's single-address *_LISTEN setting."""
    return int(d.settings[setting].rsplit(":", 1)[1])


def insecure_tls_context():
    """A client context that accepts the daemon's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
