"""Shared pieces of the IMAP integration tests (test_imap_protocol.py,
test_imap_clients.py, test_imap_faults.py): connections with imaplib over
STARTTLS and implicit TLS, a raw client that sends exactly the bytes given
and reads responses with their literals, delivery over SMTP and test
messages."""

import base64
import imaplib
import os
import re
import smtplib
import socket
import ssl
import time
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import helpers
from helpers import insecure_tls_context, listen_port

PASSWORD = "secret-password-2"

# What every session advertises (RFC 3501 plus the extensions of the issue).
EXTENSIONS = ("IMAP4REV1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
              "UIDPLUS", "MOVE", "SPECIAL-USE", "CHILDREN", "UNSELECT", "QUOTA")


def imap_port(d):
    return listen_port(d, "IMAP_LISTEN")


def imaps_port(d):
    return listen_port(d, "IMAPS_LISTEN")


def add_user(d, password=PASSWORD, prefix="i"):
    addr = helpers.unique(prefix) + "@example.test"
    rc, out, err = d.setup("email", "add", addr, password)
    assert rc == 0, (rc, out, err)
    return addr


def deliver(d, to, subject, body=None, extra_headers=(), raw=None):
    """Delivers one message over SMTP (port 25); returns the bytes sent."""
    msg = raw if raw is not None else helpers.make_message(
        subject, body=body, to=to, extra_headers=extra_headers)
    with smtplib.SMTP("127.0.0.1", d.port, timeout=15) as s:
        s.sendmail("sender@example.org", [to], msg)
    return msg


# --------------------------------------------------------------------------
# imaplib

def imaps(d, timeout=15):
    return imaplib.IMAP4_SSL("127.0.0.1", imaps_port(d), ssl_context=insecure_tls_context(),
                             timeout=timeout)


def starttls(d, timeout=15):
    c = imaplib.IMAP4("127.0.0.1", imap_port(d), timeout=timeout)
    c.starttls(insecure_tls_context())
    return c


def login(d, addr, password=PASSWORD, select=None):
    """An imaplib session over 993, logged in (and with `select` selected)."""
    c = imaps(d)
    typ, _ = c.login(addr, password)
    assert typ == "OK"
    if select is not None:
        typ, data = c.select(select)
        assert typ == "OK", data
    return c


def caps_of(c):
    typ, data = c.capability()
    assert typ == "OK"
    return set(data[0].decode().upper().split())


def untagged(c, name):
    """imaplib's collected untagged responses of one kind (and clears them)."""
    return c.untagged_responses.pop(name.upper(), [])


# --------------------------------------------------------------------------
# Messages

def multipart_message(to, subject, text="Hello, this is the text part.\r\n",
                      attachment=b"\x00\x01binary attachment data\xff" * 8):
    """A multipart/mixed message: a text/plain part and a PDF attachment."""
    m = MIMEMultipart("mixed", boundary="=-=b0undary=-=")
    m["From"] = "Alice Example <alice@example.org>"
    m["To"] = "<%s>" % to
    m["Cc"] = "Carol <carol@example.org>"
    m["Subject"] = subject
    m["Message-ID"] = "<%s@client.example.org>" % subject
    m["Date"] = "Thu, 01 Jan 2026 00:00:00 +0000"
    m.attach(MIMEText(text, "plain", "us-ascii"))
    att = MIMEApplication(attachment, "pdf")
    att.add_header("Content-Disposition", "attachment", filename="report.pdf")
    m.attach(att)
    data = m.as_bytes()
    # email writes LF line ends; IMAP messages are CRLF.
    return re.sub(rb"\r?\n", b"\r\n", data)


def simple_message(subject, body=b"Hello.\r\n", sender="sender@example.org",
                   to="user@example.test", extra_headers=(), date=None):
    hdrs = ["From: <%s>" % sender, "To: <%s>" % to, "Subject: %s" % subject,
            "Message-ID: <%s@client.example.org>" % helpers.unique("mid"),
            "Date: %s" % (date or "Thu, 01 Jan 2026 00:00:00 +0000")]
    hdrs += list(extra_headers)
    if isinstance(body, str):
        body = body.encode()
    return ("\r\n".join(hdrs) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------
# A raw client

class Closed(Exception):
    """The server closed the connection while a response was expected."""


class Response:
    """One tagged command's result: untagged lines (bytes, literals inlined
    as they came), continuation lines and the tagged line."""

    def __init__(self, untagged, tagged, conts):
        self.untagged = untagged
        self.tagged = tagged
        self.conts = conts

    @property
    def status(self):
        parts = self.tagged.split(b" ", 2)
        return parts[1].decode() if len(parts) > 1 else ""

    @property
    def ok(self):
        return self.status == "OK"

    def find(self, prefix):
        """Untagged lines starting with prefix (bytes or str, after "* ")."""
        if isinstance(prefix, str):
            prefix = prefix.encode()
        return [l for l in self.untagged if l[2:].upper().startswith(prefix.upper())]

    def __repr__(self):
        return "Response(%r, %r)" % (self.untagged, self.tagged)


LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")


class Raw:
    """A line-level IMAP client: implicit TLS (993) or plaintext (143)."""

    def __init__(self, d, tls=True, timeout=15.0, greet=True):
        port = imaps_port(d) if tls else imap_port(d)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.ntag = 0
        if tls:
            self.wrap()
        self.greeting = self.line() if greet else None

    def wrap(self):
        self.sock = insecure_tls_context().wrap_socket(self.sock,
                                                       server_hostname=helpers.HOSTNAME)

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            chunk = b""
        if not chunk:
            raise Closed("connection closed; unread %r" % self.buf[:500])
        self.buf += chunk

    def raw_line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def line(self):
        """One response line with its literals inlined (the "{n}" markers
        kept, each followed by CRLF and its octets)."""
        line = self.raw_line()
        while True:
            m = LITERAL_AT_END.search(line)
            if not m or line.startswith(b"+"):
                return line
            line += b"\r\n" + self.take(int(m.group(1))) + self.raw_line()

    def tag(self):
        self.ntag += 1
        return "t%d" % self.ntag

    def response(self, tag):
        """Reads up to the tagged line of `tag`."""
        if isinstance(tag, str):
            tag = tag.encode()
        untagged, conts = [], []
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                return Response(untagged, line, conts)
            if line.startswith(b"+"):
                conts.append(line)
            else:
                untagged.append(line)

    def cmd(self, text):
        """Sends "<tag> text" and returns its Response."""
        t = self.tag()
        self.send(("%s %s\r\n" % (t, text)).encode() if isinstance(text, str)
                  else t.encode() + b" " + text + b"\r\n")
        return self.response(t)

    def login(self, addr, password=PASSWORD):
        r = self.cmd('LOGIN "%s" "%s"' % (addr, password))
        assert r.ok, r
        return r

    def select(self, box="INBOX"):
        r = self.cmd("SELECT " + box)
        assert r.ok, r
        return r

    def append(self, box, msg, flags="", date="", nonsync=False):
        """APPEND with a literal: waits for "+" unless nonsync (LITERAL+)."""
        t = self.tag()
        head = "%s APPEND %s%s%s {%d%s}\r\n" % (t, box, " (%s)" % flags if flags else "",
                                               ' "%s"' % date if date else "", len(msg),
                                               "+" if nonsync else "")
        self.send(head)
        conts = []
        if not nonsync:
            cont = self.line()
            if not cont.startswith(b"+"):
                return Response([], cont, [])
            conts.append(cont)
        self.send(msg + b"\r\n")
        r = self.response(t)
        r.conts = conts + r.conts
        return r

    def starttls(self):
        r = self.cmd("STARTTLS")
        assert r.ok, r
        assert self.buf == b"", "data after the OK before the handshake: %r" % self.buf
        self.wrap()
        return r

    def pending(self, wait=0.3):
        """Whatever arrives within `wait` seconds (kept in self.buf)."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                break
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            self.buf += chunk
        self.sock.settimeout(self.timeout)
        return self.buf

    def closed(self, timeout=5.0):
        """True when the server closes the connection before the deadline;
        what it sent before stays in self.buf."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError) as e:
            if isinstance(e, socket.timeout):
                return False
            return True
        finally:
            try:
                self.sock.settimeout(self.timeout)
            except OSError:
                pass
        return False

    def wait_for(self, pattern, timeout=5.0):
        """Reads lines until one matches the regex (bytes); returns the
        match, or None at the deadline. Lines read are kept in self.seen."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        self.seen = getattr(self, "seen", [])
        while True:
            while b"\r\n" in self.buf:
                line = self.line()
                self.seen.append(line)
                m = rx.search(line)
                if m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                self._fill()
            except socket.timeout:
                return None
            finally:
                self.sock.settimeout(self.timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def plain_b64(addr, password=PASSWORD, authzid=""):
    return base64.b64encode(authzid.encode() + b"\0" + addr.encode() + b"\0"
                            + password.encode()).decode()


def code(line):
    """The response code of a status line: b't1 NO [TRYCREATE] x' -> 'TRYCREATE'."""
    m = re.search(rb"^\S+ (?:OK|NO|BAD|BYE|PREAUTH) \[([^\]\s]+)", line)
    return m.group(1).decode().upper() if m else None


def number(lines, name):
    """The n of '* n NAME' among untagged lines (the last one), or None."""
    rx = re.compile(rb"^\* (\d+) " + name.encode() + rb"\b", re.I)
    found = None
    for l in lines:
        m = rx.match(l)
        if m:
            found = int(m.group(1))
    return found


def resp_code_value(lines, name):
    """The value of '* OK [NAME value]' among untagged lines."""
    rx = re.compile(rb"^\* OK \[" + name.encode() + rb" ([^\]]*)\]", re.I)
    for l in lines:
        m = rx.match(l)
        if m:
            return m.group(1).decode()
    return None


def list_names(lines):
    """{name: set of attributes} of '* LIST' / '* LSUB' lines (quoted names
    or atoms; literals are inlined by Raw.line)."""
    out = {}
    rx = re.compile(rb'^\* (?:LIST|LSUB) \(([^)]*)\) (?:"[^"]*"|NIL) (.*)$', re.I | re.S)
    for l in lines:
        if isinstance(l, tuple):
            l = l[0] + l[1]
        m = rx.match(l)
        if not m:
            continue
        name = m.group(2)
        lit = re.match(rb"^\{\d+\}\r\n(.*)$", name, re.S)
        if lit:
            name = lit.group(1)
        elif name.startswith(b'"'):
            name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        out[name.decode()] = set(m.group(1).decode().lower().split())
    return out


def mailbox_files(d, addr, folder=None):
    """Message files in cur/ and new/ of a mailbox (or a folder of it)."""
    return d.messages(addr, folder)


def chown_tree(path, uid=helpers.VMAIL_UID):
    """Files the tests create for the daemon must belong to the mail user."""
    if os.geteuid() != 0:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, uid, uid)
        for f in files:
            os.chown(os.path.join(root, f), uid, uid)


def fetch_item(line, item):
    """The value of one item in a '* n FETCH (...)' line: bytes for a
    string or literal, None for NIL, the raw text for anything else up to
    the next space (lists: up to the matching parenthesis)."""
    upper = line.upper()
    key = item.upper().encode() + b" "
    i = upper.find(key)
    if i < 0:
        raise KeyError("%s not in %r" % (item, line[:300]))
    rest = line[i + len(key):]
    m = re.match(rb"\{(\d+)\}\r\n", rest)
    if m:
        n = int(m.group(1))
        return rest[m.end():m.end() + n]
    if rest.startswith(b'"'):
        m = re.match(rb'"((?:[^"\\]|\\.)*)"', rest)
        return re.sub(rb"\\(.)", rb"\1", m.group(1))
    if rest.upper().startswith(b"NIL"):
        return None
    if rest.startswith(b"("):
        depth, j, inq = 0, 0, False
        while j < len(rest):
            ch = rest[j:j + 1]
            if inq:
                if ch == b"\\":
                    j += 1
                elif ch == b'"':
                    inq = False
            elif ch == b'"':
                inq = True
            elif ch == b"{":
                m = re.match(rb"\{(\d+)\}\r\n", rest[j:])
                if m:
                    j += m.end() + int(m.group(1)) - 1
            elif ch == b"(":
                depth += 1
            elif ch == b")":
                depth -= 1
                if depth == 0:
                    return rest[:j + 1]
            j += 1
        return rest
    return re.match(rb"[^ )]*", rest).group(0)


def flags_of(line):
    """The FLAGS of a FETCH line as a set of str (case kept)."""
    m = re.search(rb"FLAGS \(([^)]*)\)", line, re.I)
    assert m, "no FLAGS in %r" % line
    return set(m.group(1).decode().split())


def seq_of(line):
    m = re.match(rb"^\* (\d+) ", line)
    return int(m.group(1)) if m else None


def uid_set(text):
    """'1:3,7' -> [1, 2, 3, 7]."""
    out = []
    for part in text.split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += list(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


def status_items(line):
    """'* STATUS name (MESSAGES 2 UIDNEXT 3)' -> {'MESSAGES': 2, ...}."""
    m = re.search(rb"\(([^()]*)\)\s*$", line)
    assert m, line
    words = m.group(1).decode().split()
    return {words[i].upper(): int(words[i + 1]) for i in range(0, len(words), 2)}


def search_result(r):
    """The numbers of a SEARCH response, as a sorted list."""
    lines = r.find("SEARCH")
    assert len(lines) == 1, r
    return sorted(int(x) for x in lines[0].split()[2:])


def internaldate_epoch(text):
    """'05-Feb-2024 10:11:12 +0100' (day may be space-padded) -> epoch."""
    if isinstance(text, bytes):
        text = text.decode()
    m = re.match(r"^\s*(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$", text)
    assert m, text
    import calendar
    mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec"].index(m.group(2)) + 1
    t = calendar.timegm((int(m.group(3)), mon, int(m.group(1)), int(m.group(4)),
                         int(m.group(5)), int(m.group(6))))
    off = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    return t - off if m.group(7) == "+" else t + off


def apply_updates(count, lines):
    """Follows the EXPUNGE and EXISTS responses among `lines` from a
    message count, checking that each is valid when it is sent (an EXPUNGE
    names an existing number, EXISTS never shrinks the mailbox); returns
    the final count."""
    for l in lines:
        m = re.match(rb"^\* (\d+) (EXPUNGE|EXISTS)$", l, re.I)
        if not m:
            continue
        n = int(m.group(1))
        if m.group(2).upper() == b"EXPUNGE":
            assert 1 <= n <= count, ("EXPUNGE %d with %d messages" % (n, count), lines)
            count -= 1
        else:
            assert n >= count, ("EXISTS %d after %d messages" % (n, count), lines)
            count = n
    return count
