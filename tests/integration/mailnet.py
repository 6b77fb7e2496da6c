"""Helpers for the submission and outbound tests: daemons that listen on an
address of their own (any 127.0.0.0/8 address works on Linux loopback, so
every daemon can have port 25, 465 and 587), authenticated submission, the
`setup queue` CLI and reading delivery status notifications.

Nothing here sends traffic outside loopback: recipient domains are *.test
names that only the tests' DNS fixture (DNS_RESOLVER) answers."""

import base64
import email
import email.policy
import random
import re
import smtplib
import socket
import time

from helpers import Daemon, insecure_tls_context, wait_until

PASSWORD = "secret-password-1"
QUEUE_ID_RE = re.compile(r"\b[0-9a-f]{16}\b")

_rng = random.SystemRandom()


def _bindable(addr, port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, port))
        except OSError:
            return False
    return True


def random_loopback():
    """An unused 127.x.y.z (never 127.0.0.1), random so that tests running
    in parallel do not collide on port 25."""
    while True:
        addr = "127.%d.%d.%d" % (_rng.randint(1, 254), _rng.randint(0, 255),
                                 _rng.randint(2, 254))
        if all(_bindable(addr, p) for p in (25, 465, 587)):
            return addr


class HostDaemon(Daemon):
    """A Daemon on its own address with port 25 and both submission ports
    (465 implicit TLS, 587 STARTTLS)."""

    def __init__(self, host, hostname, settings=None, name="d"):
        own = {"SMTP_LISTEN": "%s:25" % host,
               "SUBMISSIONS_LISTEN": "%s:465" % host,
               "SUBMISSION_LISTEN": "%s:587" % host,
               "OVERRIDE_HOSTNAME": hostname}
        own.update(settings or {})
        super().__init__(own, name=name)
        self.host = host
        self.port = 25

    def _greets(self):
        if self.proc.poll() is not None:
            raise AssertionError("posthornd exited with %s during start:\n%s"
                                 % (self.proc.returncode, self.stderr_tail()))
        return greets(self.host, self.port)


def greets(host, port):
    """True when host:port answers with a 220 greeting."""
    try:
        with socket.create_connection((host, port), timeout=2) as s:
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


def host_daemon(pool, host, hostname, settings=None, name="d", start=True):
    """A HostDaemon owned by a conftest DaemonPool (stopped and removed at
    the end of the test whatever happens)."""
    d = HostDaemon(host, hostname, settings, name=name)
    pool.daemons.append(d)
    if start:
        d.start()
    return d


def add_user(d, addr, password=PASSWORD):
    rc, out, err = d.setup("email", "add", addr, password)
    assert rc == 0, (addr, rc, out, err)


def add_alias(d, alias, target):
    rc, out, err = d.setup("alias", "add", alias, target)
    assert rc == 0, (alias, rc, out, err)


# --------------------------------------------------------------------------
# Submission

def submit(host, port, user, sender, rcpts, msg, password=PASSWORD, implicit=True):
    """Authenticated submission with smtplib: implicit TLS (465) or STARTTLS
    (587). Returns the refused-recipients dict (empty on success)."""
    ctx = insecure_tls_context()
    if implicit:
        s = smtplib.SMTP_SSL(host, port, local_hostname="client.example.org",
                             timeout=20, context=ctx)
    else:
        s = smtplib.SMTP(host, port, local_hostname="client.example.org", timeout=20)
    try:
        if not implicit:
            s.starttls(context=ctx)
        s.login(user, password)
        return s.sendmail(sender, rcpts, msg)
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            s.close()


def plain_b64(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


def b64(text):
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------
# The queue CLI

def queue_list(d):
    rc, out, err = d.setup("queue", "list")
    assert rc == 0, ("setup queue list", rc, out, err)
    return out


def queue_ids(d):
    return QUEUE_ID_RE.findall(queue_list(d))


def queue_empty(d):
    return "queue is empty" in queue_list(d)


def wait_queue_empty(d, timeout=20.0):
    try:
        wait_until(lambda: queue_empty(d), timeout, interval=0.2, what="an empty queue")
    except AssertionError as e:
        raise AssertionError("%s; setup queue list:\n%s" % (e, queue_list(d))) from None


def attempts_shown(out):
    """The attempt counts that `setup queue list` shows (any of the usual
    spellings: 'attempts: 2', 'attempts=2', '2 attempts')."""
    found = [int(m) for m in re.findall(r"attempts?\s*[:=]?\s*(\d+)", out, re.I)]
    found += [int(m) for m in re.findall(r"(\d+)\s+attempts?", out, re.I)]
    return found


# --------------------------------------------------------------------------
# Mailboxes and DSNs

def wait_message(d, addr, marker, timeout=20.0):
    """Waits for exactly one message of addr containing marker; returns it."""
    wait_until(lambda: d.find(addr, marker), timeout, interval=0.1,
               what="%r in the mailbox of %s" % (marker, addr))
    return d.read_one(addr, marker)


def parse(data):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def header_block(data):
    return data.split(b"\r\n\r\n", 1)[0]


def is_dsn(data):
    """True for an RFC 3464 report (multipart/report; report-type=delivery-status)."""
    msg = parse(data)
    return (msg.get_content_type() == "multipart/report"
            and msg.get_param("report-type") == "delivery-status")


def dsn_status_fields(data):
    """The per-recipient fields of the message/delivery-status part, lower
    case names -> list of values."""
    msg = parse(data)
    fields = {}
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        blocks = payload if isinstance(payload, list) else [parse(payload.encode())]
        for block in blocks:
            for k, v in block.items():
                fields.setdefault(k.lower(), []).append(" ".join(v.split()))
    return fields


def wait_dsn(d, addr, marker, timeout=20.0):
    """A bounce for the message carrying marker (the DSN quotes the original
    message or its headers) in addr's INBOX."""
    data = wait_message(d, addr, marker, timeout)
    assert is_dsn(data), "not a delivery status notification:\n%r" % data[:2000]
    return data


def settle(seconds):
    """Lets the daemon run for a while when a test must show that something
    does NOT happen (no bounce, no delivery)."""
    time.sleep(seconds)

