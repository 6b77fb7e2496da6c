"""Authenticated submission on 465 (implicit TLS) and 587 (STARTTLS
required): the port policy, AUTH PLAIN and LOGIN, the sender policy
(SPOOF_PROTECTION), the headers added to submitted mail and local delivery,
driven by smtplib, swaks, curl and the raw client. Loopback only."""

import email.utils
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from helpers import (HOSTNAME, QUEUED_RE, Smtp, dot_stuff, free_port, insecure_tls_context,
                     listen_port, make_message, unique, wait_until)
from mailnet import (PASSWORD, b64, header_block, plain_b64, random_loopback, submit,
                     wait_message)

USER = "user@example.test"          # helpers.provision: password secret-password-1
ALIAS = "alias@example.test"        # -> user@example.test
OTHER = "other@example.test"


def submission_settings(spoof):
    return {"SUBMISSION_LISTEN": "127.0.0.1:%d" % free_port(),
            "SUBMISSIONS_LISTEN": "127.0.0.1:%d" % free_port(),
            "SPOOF_PROTECTION": "1" if spoof else "0"}


@pytest.fixture(scope="module")
def subd(mod_daemons):
    """Submission with SPOOF_PROTECTION=0 (the default, set explicitly)."""
    return mod_daemons.make(submission_settings(False), name="sub")


@pytest.fixture(scope="module")
def spoofd(mod_daemons):
    return mod_daemons.make(submission_settings(True), name="spoof")


def p587(d):
    return listen_port(d, "SUBMISSION_LISTEN")


def p465(d):
    return listen_port(d, "SUBMISSIONS_LISTEN")


class SrcSmtp(Smtp):
    """The raw client from a chosen source address (failed logins are
    counted, and delayed more and more, per client address: every test that
    fails a login uses an address of its own), optionally over implicit TLS
    (port 465)."""

    def __init__(self, port, src="127.0.0.1", tls=False, timeout=15.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(src, 0))
        if tls:
            self.sock = insecure_tls_context().wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.reply()


def TlsSmtp(port, src="127.0.0.1"):
    return SrcSmtp(port, src, tls=True)


def client(d, kind, src="127.0.0.1"):
    """A raw session ready for AUTH: 587 after STARTTLS and EHLO, or 465."""
    if kind == "587":
        c = SrcSmtp(p587(d), src)
        c.ehlo()
        c.starttls()
    else:
        c = TlsSmtp(p465(d), src)
    c.ehlo()
    return c


def ehlo_keywords(reply):
    return [l[4:] for l in reply.lines[1:]]


def auth_mechanisms(reply):
    for kw in ehlo_keywords(reply):
        if kw.upper().startswith("AUTH "):
            return kw.upper().split()[1:]
    return None


def login(c, user=USER, password=PASSWORD):
    r = c.cmd("AUTH PLAIN " + plain_b64(user, password))
    assert r.line == "235 2.7.0 Authentication successful", r
    return r


# --------------------------------------------------------------------------
# Port policy

def test_587_before_tls_offers_starttls_not_auth(subd):
    with Smtp(p587(subd)) as c:
        assert c.greeting.code == 220
        r = c.ehlo()
        kws = [k.upper() for k in ehlo_keywords(r)]
        assert "STARTTLS" in kws, r
        assert auth_mechanisms(r) is None, r


@pytest.mark.parametrize("line", [
    "MAIL FROM:<user@example.test>", "RCPT TO:<user@example.test>", "DATA",
    "AUTH PLAIN " + plain_b64(USER, PASSWORD), "AUTH LOGIN", "VRFY user@example.test",
    "BDAT 10 LAST",
])
def test_587_commands_before_starttls_refused(subd, line):
    with Smtp(p587(subd)) as c:
        c.ehlo()
        r = c.cmd(line)
        assert r.line == "530 5.7.0 Must issue a STARTTLS command first", r
        # Allowed before TLS; the session is still usable afterwards.
        assert c.cmd("NOOP").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("HELO client.example.org").code == 250
        c.ehlo()
        c.starttls()
        r = c.ehlo()
        assert auth_mechanisms(r) is not None, r


def test_587_after_starttls_offers_auth_and_dsn(subd):
    with Smtp(p587(subd)) as c:
        c.ehlo()
        c.starttls()
        r = c.ehlo()
        kws = [k.upper() for k in ehlo_keywords(r)]
        mechs = auth_mechanisms(r)
        assert mechs is not None and {"PLAIN", "LOGIN"} <= set(mechs), r
        assert "DSN" in kws, r
        assert "STARTTLS" not in kws, r


def test_465_implicit_tls_offers_auth(subd):
    with TlsSmtp(p465(subd)) as c:
        assert c.greeting.code == 220, c.greeting
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
        r = c.ehlo()
        kws = [k.upper() for k in ehlo_keywords(r)]
        assert {"PLAIN", "LOGIN"} <= set(auth_mechanisms(r) or []), r
        assert "STARTTLS" not in kws, r


def test_465_plaintext_client_gets_no_greeting(subd):
    # Implicit TLS: a plaintext client never sees a 220.
    with socket.create_connection(("127.0.0.1", p465(subd)), timeout=5) as s:
        s.settimeout(1.0)
        try:
            data = s.recv(100)
        except socket.timeout:
            data = b""
    assert not data.startswith(b"220"), data


@pytest.mark.parametrize("kind", ["587", "465"])
def test_mail_before_auth_refused(subd, kind):
    with client(subd, kind) as c:
        r = c.cmd("MAIL FROM:<%s>" % USER)
        assert r.line == "530 5.7.0 Authentication required", r
        login(c)
        assert c.cmd("MAIL FROM:<%s>" % USER).line.startswith("250 2.1.0")


def test_port_25_never_offers_auth(subd):
    with Smtp(subd.port) as c:
        r = c.ehlo()
        assert auth_mechanisms(r) is None, r
        c.starttls()
        r = c.ehlo()
        assert auth_mechanisms(r) is None, r
        r = c.cmd("AUTH PLAIN " + plain_b64(USER, PASSWORD))
        assert r.code >= 500, r


# --------------------------------------------------------------------------
# AUTH

@pytest.mark.parametrize("kind", ["587", "465"])
def test_auth_plain_initial_response(subd, kind):
    with client(subd, kind) as c:
        login(c)


@pytest.mark.parametrize("kind", ["587", "465"])
def test_auth_plain_continuation(subd, kind):
    with client(subd, kind) as c:
        r = c.cmd("AUTH PLAIN")
        assert r.code == 334, r
        r = c.cmd(plain_b64(USER, PASSWORD))
        assert r.line == "235 2.7.0 Authentication successful", r


@pytest.mark.parametrize("kind", ["587", "465"])
def test_auth_login(subd, kind):
    with client(subd, kind) as c:
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334, r
        r = c.cmd(b64(USER))
        assert r.code == 334, r
        r = c.cmd(b64(PASSWORD))
        assert r.line == "235 2.7.0 Authentication successful", r


def test_auth_login_with_initial_username(subd):
    with client(subd, "465") as c:
        r = c.cmd("AUTH LOGIN " + b64(USER))
        assert r.code == 334, r
        r = c.cmd(b64(PASSWORD))
        assert r.line == "235 2.7.0 Authentication successful", r


@pytest.mark.parametrize("how", ["plain-wrong-password", "plain-unknown-user",
                                 "login-wrong-password"])
def test_auth_failure_delayed(subd, how):
    src = random_loopback()
    with client(subd, "587", src) as c:
        t0 = time.monotonic()
        if how == "plain-wrong-password":
            r = c.cmd("AUTH PLAIN " + plain_b64(USER, "not-the-password"))
        elif how == "plain-unknown-user":
            r = c.cmd("AUTH PLAIN " + plain_b64("nobody@example.test", PASSWORD))
        else:
            assert c.cmd("AUTH LOGIN").code == 334
            assert c.cmd(b64(USER)).code == 334
            r = c.cmd(b64("not-the-password"))
        elapsed = time.monotonic() - t0
        assert r.line == "535 5.7.8 Error: authentication failed", r
        assert elapsed >= 0.9, "535 came after %.2fs, expected a delay" % elapsed
        # Still not authenticated, and a correct login still works.
        assert c.cmd("MAIL FROM:<%s>" % USER).line == "530 5.7.0 Authentication required"
        login(c)
    # Counted per client address.
    wait_until(lambda: [l for l in subd.log_text().splitlines()
                        if "login failed" in l and "client=%s " % src in l + " "],
               5.0, what="a logged login failure for %s" % src)


def test_auth_failures_delay_grows_per_address(subd):
    src = random_loopback()
    with client(subd, "465", src) as c:
        times = []
        for _ in range(2):
            t0 = time.monotonic()
            r = c.cmd("AUTH PLAIN " + plain_b64(USER, "not-the-password"))
            times.append(time.monotonic() - t0)
            assert r.line.startswith("535 5.7.8"), r
        assert times[1] > times[0] + 0.5, times
    # Another address starts from the first delay again, and a correct
    # password is never delayed.
    with client(subd, "465", random_loopback()) as c:
        t0 = time.monotonic()
        login(c)
        assert time.monotonic() - t0 < 0.9


def test_auth_cancelled_and_malformed(subd):
    with client(subd, "465", random_loopback()) as c:
        assert c.cmd("AUTH PLAIN").code == 334
        r = c.cmd("*")
        assert r.line.startswith("501"), r
        r = c.cmd("AUTH PLAIN !!!not-base64!!!")
        assert r.line.startswith("501"), r
        r = c.cmd("AUTH CRAM-MD5")
        assert r.line.startswith("504"), r
        login(c)


def test_auth_twice_refused(subd):
    with client(subd, "465") as c:
        login(c)
        r = c.cmd("AUTH PLAIN " + plain_b64(USER, PASSWORD))
        assert r.line.startswith("503 5.5.1"), r


# --------------------------------------------------------------------------
# Delivery through submission, with real clients

def first_received(hdrs):
    """The first Received header of a header block, unfolded lines joined."""
    lines = hdrs.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.startswith(b"Received:"):
            out = [line]
            for cont in lines[i + 1:]:
                if cont[:1] not in (b" ", b"\t"):
                    break
                out.append(cont)
            return b"\r\n".join(out)
    raise AssertionError("no Received header: %r" % hdrs)


def check_submitted(d, addr, marker):
    """The stored copy of a submitted message: recorded as ESMTPSA, without
    the client's address. Returns (file bytes, header block)."""
    data = wait_message(d, addr, marker, timeout=10.0)
    hdrs = header_block(data)
    rec = first_received(hdrs)
    assert b"with ESMTPSA" in rec, rec
    assert b"127.0.0.1" not in rec, "client IP in the Received header: %r" % rec
    return data, hdrs


@pytest.mark.parametrize("kind", ["587", "465"])
def test_smtplib_submission_local_delivery(subd, kind):
    subj = unique("smtplib-sub")
    msg = make_message(subj, sender=USER, to=OTHER)
    refused = submit("127.0.0.1", p465(subd) if kind == "465" else p587(subd), USER, USER,
                     [OTHER], msg, implicit=(kind == "465"))
    assert refused == {}
    data, hdrs = check_submitted(subd, OTHER, subj)
    assert data.endswith(msg.split(b"\r\n\r\n", 1)[1])


def test_smtplib_auth_login_mechanism(subd):
    subj = unique("smtplib-login")
    msg = make_message(subj, sender=USER, to=OTHER)
    with smtplib.SMTP_SSL("127.0.0.1", p465(subd), timeout=20,
                          context=insecure_tls_context()) as s:
        s.ehlo("client.example.org")
        s.user, s.password = USER, PASSWORD
        code, _ = s.auth("LOGIN", s.auth_login)
        assert code == 235
        assert s.sendmail(USER, [OTHER], msg) == {}
    check_submitted(subd, OTHER, subj)


def test_smtplib_wrong_password(subd):
    with smtplib.SMTP_SSL("127.0.0.1", p465(subd), timeout=20, context=insecure_tls_context(),
                          source_address=(random_loopback(), 0)) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(USER, "wrong")
        assert e.value.smtp_code == 535


SWAKS_CASES = {
    "587-tls-plain": ["--tls", "--auth", "PLAIN"],
    "587-tls-login": ["--tls", "--auth", "LOGIN"],
    "465-tlsc-plain": ["--tlsc", "--auth", "PLAIN"],
    "465-ssmtp-login": ["--protocol", "SSMTP", "--auth", "LOGIN"],
}


@pytest.mark.parametrize("case", sorted(SWAKS_CASES))
def test_swaks_submission(subd, case):
    subj = unique("swaks")
    port = p587(subd) if case.startswith("587") else p465(subd)
    cmd = ["swaks", "--server", "127.0.0.1", "--port", str(port), "--ehlo", "client.example.org",
           "--from", USER, "--to", OTHER, "--auth-user", USER, "--auth-password", PASSWORD,
           "--header", "Subject: " + subj, "--body", "swaks " + subj,
           "--timeout", "20"] + SWAKS_CASES[case]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "235 2.7.0 Authentication successful" in p.stdout, p.stdout
    check_submitted(subd, OTHER, subj)


def test_swaks_wrong_password(subd):
    p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(p587(subd)), "--tls",
                        "--local-interface", random_loopback(), "--from", USER, "--to", OTHER, "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", "wrong", "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "535 5.7.8 Error: authentication failed" in p.stdout, p.stdout


@pytest.mark.parametrize("url", ["smtps", "smtp"])
def test_curl_submission(subd, url):
    subj = unique("curl")
    msg = make_message(subj, sender=USER, to=OTHER)
    with tempfile.NamedTemporaryFile(suffix=".eml") as f:
        f.write(msg)
        f.flush()
        if url == "smtps":
            target = ["smtps://127.0.0.1:%d" % p465(subd)]
        else:
            target = ["smtp://127.0.0.1:%d" % p587(subd), "--ssl-reqd"]
        cmd = ["curl", "-sS", "-k", "--max-time", "30"] + target + [
            "--user", "%s:%s" % (USER, PASSWORD), "--mail-from", USER, "--mail-rcpt", OTHER,
            "--upload-file", f.name]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    data, _ = check_submitted(subd, OTHER, subj)
    assert data.endswith(msg.split(b"\r\n\r\n", 1)[1])


def test_curl_wrong_password(subd):
    p = subprocess.run(["curl", "-sS", "-k", "--max-time", "30",
                        "--interface", random_loopback(), "smtps://127.0.0.1:%d" % p465(subd), "--user", USER + ":wrong",
                        "--mail-from", USER, "--mail-rcpt", OTHER, "--upload-file", "/dev/null"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 67, (p.returncode, p.stderr)   # CURLE_LOGIN_DENIED


# --------------------------------------------------------------------------
# Headers added to submitted mail

def raw_submit(d, sender, rcpts, msg):
    """One authenticated transaction over 465; returns the final reply."""
    with client(d, "465") as c:
        login(c)
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.line.startswith("250 2.1.0"), r
        for rc in rcpts:
            r = c.cmd("RCPT TO:<%s>" % rc)
            assert r.line.startswith("250 2.1.5"), r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(dot_stuff(msg))
        final = c.reply()
        c.cmd("QUIT")
        return final


def test_message_id_and_date_added_when_missing(subd):
    subj = unique("nohdrs")
    msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nbody\r\n" % (USER, OTHER, subj)).encode()
    final = raw_submit(subd, USER, [OTHER], msg)
    assert QUEUED_RE.match(final.line), final
    data, hdrs = check_submitted(subd, OTHER, subj)
    names = [l.split(b":", 1)[0].lower() for l in hdrs.split(b"\r\n") if l[:1] not in (b" ", b"\t")]
    assert names.count(b"message-id") == 1, hdrs
    assert names.count(b"date") == 1, hdrs
    mid = [l for l in hdrs.split(b"\r\n") if l.lower().startswith(b"message-id:")][0]
    assert b"<" in mid and b"@" in mid and b">" in mid, mid
    date = [l for l in hdrs.split(b"\r\n") if l.lower().startswith(b"date:")][0]
    assert email.utils.parsedate_to_datetime(date.split(b":", 1)[1].strip().decode()), date


def test_message_id_and_date_kept_when_present(subd):
    subj = unique("hdrs")
    msg = make_message(subj, sender=USER, to=OTHER)
    final = raw_submit(subd, USER, [OTHER], msg)
    assert QUEUED_RE.match(final.line), final
    data, hdrs = check_submitted(subd, OTHER, subj)
    names = [l.split(b":", 1)[0].lower() for l in hdrs.split(b"\r\n") if l[:1] not in (b" ", b"\t")]
    assert names.count(b"message-id") == 1 and names.count(b"date") == 1, hdrs
    assert ("Message-ID: <%s@client.example.org>" % subj).encode() in hdrs
    assert b"Date: Thu, 01 Jan 2026 00:00:00 +0000" in hdrs
    assert data.endswith(msg)


def test_submission_to_alias_and_several_local_recipients(subd):
    subj = unique("multi")
    msg = make_message(subj, sender=USER, to=ALIAS)
    final = raw_submit(subd, USER, [ALIAS, OTHER, "postmaster@example.test"], msg)
    assert QUEUED_RE.match(final.line), final
    for rcpt in (USER, OTHER, "postmaster@example.test"):
        check_submitted(subd, rcpt, subj)


# --------------------------------------------------------------------------
# Sender policy

def spoof_session(d):
    c = client(d, "465")
    login(c)
    return c


@pytest.mark.parametrize("sender", [OTHER, "someone@elsewhere.example.org", "USER@example.test.evil"])
def test_spoof_protection_refuses_foreign_mail_from(spoofd, sender):
    with spoof_session(spoofd) as c:
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.line.startswith("553 5.7.1 "), r
        assert "not owned by user" in r.line, r
        # The session goes on: the user's own address is accepted.
        assert c.cmd("MAIL FROM:<%s>" % USER).line.startswith("250 2.1.0")


@pytest.mark.parametrize("sender", [USER, ALIAS, "User@Example.Test"])
def test_spoof_protection_allows_own_address_and_alias(spoofd, sender):
    subj = unique("own")
    msg = make_message(subj, sender=sender.lower(), to=OTHER)
    with spoof_session(spoofd) as c:
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.line.startswith("250 2.1.0"), r
        assert c.cmd("RCPT TO:<%s>" % OTHER).line.startswith("250 2.1.5")
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg))
        final = c.reply()
        assert QUEUED_RE.match(final.line), final
    check_submitted(spoofd, OTHER, subj)


def test_spoof_protection_checks_from_header(spoofd):
    subj = unique("fromhdr")
    msg = make_message(subj, sender=OTHER, to=OTHER)   # From: other, MAIL FROM: user
    with spoof_session(spoofd) as c:
        assert c.cmd("MAIL FROM:<%s>" % USER).line.startswith("250 2.1.0")
        assert c.cmd("RCPT TO:<%s>" % OTHER).line.startswith("250 2.1.5")
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg))
        final = c.reply()
        assert final.line.startswith("553 5.7.1 "), final
        assert "not owned by user" in final.line, final
        # The session is still usable after the refusal.
        assert c.cmd("RSET").code == 250
    assert spoofd.find(OTHER, subj) == []


def test_spoof_protection_accepts_alias_in_from_header(spoofd):
    subj = unique("fromalias")
    msg = make_message(subj, sender=ALIAS, to=OTHER)
    final = raw_submit(spoofd, USER, [OTHER], msg)
    assert QUEUED_RE.match(final.line), final
    check_submitted(spoofd, OTHER, subj)


def test_spoof_protection_smtplib_refused(spoofd):
    msg = make_message(unique("smtplib-spoof"), sender=OTHER, to=OTHER)
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        submit("127.0.0.1", p465(spoofd), USER, OTHER, [OTHER], msg)
    assert e.value.smtp_code == 553


def test_no_spoof_protection_any_sender(subd):
    subj = unique("anysender")
    sender = "someone@elsewhere.example.org"
    msg = make_message(subj, sender=OTHER, to=OTHER)
    final = raw_submit(subd, sender, [OTHER], msg)
    assert QUEUED_RE.match(final.line), final
    data, _ = check_submitted(subd, OTHER, subj)
    assert data.startswith(("Return-Path: <%s>" % sender).encode())


def test_submitted_user_is_not_in_the_clear(subd):
    # Credentials never cross a plaintext connection: the 587 port refuses
    # AUTH before TLS even when the client insists.
    with Smtp(p587(subd)) as c:
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain_b64(USER, PASSWORD))
        assert r.code == 530, r
        r = c.cmd("MAIL FROM:<%s>" % USER)
        assert r.code == 530, r


@pytest.mark.parametrize("from_field", [
    "From: other@example.test, <user@example.test>",       # a bare address beside a bracketed one
    "From: other@example.test (<user@example.test>)",      # brackets inside a comment
    "From: <user@example.test>\r\nFrom: <other@example.test>",  # two From: fields
    'From: "<user@example.test>" <other@example.test>',   # brackets inside a display name
    "From: friends: other@example.test, <user@example.test>;",  # a group
])
def test_spoof_protection_reads_the_whole_from_field(spoofd, from_field):
    subj = unique("fromlist")
    msg = ("%s\r\nTo: <%s>\r\nSubject: %s\r\n\r\nbody\r\n" % (from_field, OTHER, subj)).encode()
    final = raw_submit(spoofd, USER, [OTHER], msg)
    assert final.line.startswith("553 5.7.1 "), (from_field, final)
    assert spoofd.find(OTHER, subj) == []


def test_spoof_protection_accepts_display_names_and_comments(spoofd):
    subj = unique("fromok")
    msg = ('From: "Us, the team (really)" <user@example.test> (work), alias@example.test\r\n'
           "To: <%s>\r\nSubject: %s\r\n\r\nbody\r\n" % (OTHER, subj)).encode()
    final = raw_submit(spoofd, USER, [OTHER], msg)
    assert QUEUED_RE.match(final.line), final
