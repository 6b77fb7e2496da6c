"""Edge cases found in review: permanent answers for addresses no account can
have, refused recipients not ending a session, SIGTERM letting a BDAT
transaction finish, junk-command limits, and a manual certificate replaced
and picked up on SIGHUP."""

import os
import shutil
import signal
import ssl
import subprocess
import tempfile

import pytest

from helpers import QUEUED_RE, Closed, Smtp, dot_stuff, make_message, unique, wait_until


@pytest.mark.parametrize("rcpt, prefix", [
    ('<"john doe"@example.test>', "550 5.1.1"),   # quoted local part in a local domain
    ("<user@[127.0.0.1]>", "554 5.7.1"),           # address literal: not ours
    ("<a@b>", "554 5.7.1"),                        # dotless domain: not ours
])
def test_unusable_addresses_get_permanent_replies(smtpd, rcpt, prefix):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.org>").line == "250 2.1.0 Ok"
        r = c.cmd("RCPT TO:%s" % rcpt)
        assert r.line.startswith(prefix), r


def test_refused_recipients_do_not_end_the_session(smtpd):
    subj = unique("stale")
    with Smtp(smtpd.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>")
        assert c.cmd("RCPT TO:<user@example.test>").line == "250 2.1.5 Ok"
        for i in range(15):
            assert c.cmd("RCPT TO:<gone%d@example.test>" % i).line.startswith("550 5.1.1")
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj)))
        assert QUEUED_RE.match(c.reply().line)
    assert len(smtpd.find("user@example.test", subj)) == 1


def test_ehlo_loop_without_mail_is_cut_off(smtpd):
    with Smtp(smtpd.port) as c:
        c.ehlo()
        last = None
        try:
            for _ in range(150):
                last = c.cmd("EHLO again.example.org")
                if last.code == 421:
                    break
        except Closed:
            pass
        assert last is not None and last.line.startswith("421 4.7.0"), last
        assert c.wait_closed(10)


def test_sigterm_lets_a_bdat_transaction_finish(daemons):
    d = daemons.make(name="sigterm-bdat")
    subj = unique("bdat-inflight")
    msg = make_message(subj)
    first, second = msg[:40], msg[40:]
    with Smtp(d.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<t@example.org>")
        assert c.cmd("RCPT TO:<user@example.test>").line == "250 2.1.5 Ok"
        c.send(b"BDAT %d\r\n" % len(first) + first)
        assert c.reply().code == 250
        d.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "shutdown" in d.log_text(), 10, what="shutdown logged")
        c.send(b"BDAT %d LAST\r\n" % len(second) + second)
        r = c.reply()
        assert QUEUED_RE.match(r.line), r
        assert c.reply().line.startswith("421 4.3.2")
    assert d.wait_exit(30) == 0
    assert len(d.find("user@example.test", subj)) == 1


def _make_cert(directory, cn):
    key = os.path.join(directory, "key.pem")
    cert = os.path.join(directory, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=" + cn,
                    "-keyout", key + ".new", "-out", cert + ".new"],
                   check=True, capture_output=True)
    # Readable by the mail user the daemon runs as after dropping root.
    for path in (key + ".new", cert + ".new"):
        os.chmod(path, 0o644)
        os.replace(path, path[:-4])
    return cert, key


def _served_cn(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with Smtp(port) as c:
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        tls = ctx.wrap_socket(c.sock, server_hostname="mail.example.test")
        der = tls.getpeercert(binary_form=True)
        tls.close()
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


@pytest.fixture
def certdir():
    # Readable by the mail user: pytest's tmp_path sits under a 0700 directory.
    path = tempfile.mkdtemp(prefix="posthorn-it-certs-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_manual_certificate_replaced_and_reloaded_on_sighup(daemons, certdir):
    cert, key = _make_cert(certdir, "first.example.test")
    d = daemons.make({"SSL_TYPE": "manual", "SSL_CERT_PATH": cert, "SSL_KEY_PATH": key},
                     name="manual-tls", provision=False)
    assert "first.example.test" in _served_cn(d.port)
    _make_cert(certdir, "second.example.test")
    os.kill(d.pid, signal.SIGHUP)
    wait_until(lambda: "TLS certificate reloaded" in d.log_text(), 10, what="reload logged")
    assert "second.example.test" in _served_cn(d.port)
    assert d.running()


def test_manual_certificate_missing_is_a_clear_error(daemons, tmp_path):
    d = daemons.make({"SSL_TYPE": "manual", "SSL_CERT_PATH": str(tmp_path / "nope.pem"),
                      "SSL_KEY_PATH": str(tmp_path / "nope.key")},
                     name="manual-missing", start=False)
    d.start(wait=False)
    assert d.wait_exit(20) == 1
    assert "SSL_CERT_PATH" in d.stderr_text()
