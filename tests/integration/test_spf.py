"""SPF (issue 6) through SMTP port 25, with the DNS fixture serving the
records: pass, fail (550 5.7.23 at MAIL), softfail and permerror (accepted
with a score and the headers), include loops, the void-lookup limit, "a/0",
the HELO identity for MAIL FROM:<>, and a DNS server that does not answer
(451 4.7.24, or accepted with SPF_DNS_ERROR=skip).

The client is 127.0.0.1: libspf2 would pass every loopback client without
looking; posthorn checks it like any other (see filters/spf.h). A daemon
whose DNS server went silent keeps that server marked slow in libunbound's
cache, so the timeout tests use daemons and fixtures of their own."""

import re
import time

import pytest

from dnsfixture import DnsFixture
from helpers import HOSTNAME, Smtp, dot_stuff, make_message, unique

USER = "user@example.test"

ZONE = {
    "pass.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all", "unrelated verification token"]},
    "fail.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
    "explained.test": {"TXT": ["v=spf1 exp=why.explained.test -all"]},
    "why.explained.test": {"TXT": ["%{i} may not send for %{d}"]},
    "soft.test": {"TXT": ["v=spf1 ip4:192.0.2.1 ~all"]},
    "neutral.test": {"TXT": ["v=spf1 ?all"]},
    "syntax.test": {"TXT": ["v=spf1 a: -all"]},
    "badcidr.test": {"TXT": ["v=spf1 ip4:127.0.0.1/024 +all"]},
    "multi.test": {"TXT": ["v=spf1 +all", "v=spf1 -all"]},
    "loop1.test": {"TXT": ["v=spf1 include:loop2.test -all"]},
    "loop2.test": {"TXT": ["v=spf1 include:loop1.test -all"]},
    "void.test": {"TXT": ["v=spf1 a:nx1.void.test mx:nx2.void.test exists:nx3.void.test +all"]},
    "void2.test": {"TXT": ["v=spf1 a:nx1.void.test mx:nx2.void.test +all"]},
    "a0.test": {"TXT": ["v=spf1 a/0 -all"], "A": ["192.0.2.1"]},
    "a0none.test": {"TXT": ["v=spf1 a:noaddr.a0.test/0 -all"]},
    "noaddr.a0.test": {"AAAA": ["2001:db8::1"]},
    "mx0.test": {"TXT": ["v=spf1 mx/0 -all"], "MX": [(10, "mail.mx0.test")]},
    "mail.mx0.test": {"A": ["192.0.2.2"]},
    "helo.pass.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
    "nospf.test": {"A": ["192.0.2.3"]},
}


def transaction(port, sender, helo="client.example.org", subject=None):
    """EHLO, MAIL, and when MAIL is accepted RCPT and DATA. Returns (MAIL
    reply, final reply or None, subject)."""
    subject = subject or unique("spf")
    with Smtp(port) as c:
        c.ehlo(helo)
        mail = c.cmd("MAIL FROM:<%s>" % sender)
        if mail.code != 250:
            c.cmd("QUIT")
            return mail, None, subject
        r = c.cmd("RCPT TO:<%s>" % USER)
        assert r.code == 250, r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(dot_stuff(make_message(subject, sender=sender or "mailer-daemon@x.test",
                                      to=USER)))
        final = c.reply()
        c.cmd("QUIT")
        return mail, final, subject


def headers_of(d, subject):
    """The stored message's header, unfolded."""
    data = d.read_one(USER, subject)
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    return re.sub(r"\r\n[ \t]+", " ", head)


def header(head, name):
    return [line.split(":", 1)[1].strip() for line in head.split("\r\n")
            if line.lower().startswith(name.lower() + ":")]


@pytest.fixture(scope="module")
def dns():
    fixture = DnsFixture(ZONE, host="127.0.0.1", port=0).start()
    yield fixture
    fixture.stop()


@pytest.fixture(scope="module")
def spfd(mod_daemons, dns):
    return mod_daemons.make({"ENABLE_POLICYD_SPF": "1",
                             "DNS_RESOLVER": "127.0.0.1:%d" % dns.port}, name="spf")


def delivered(d, sender, helo="client.example.org"):
    mail, final, subject = transaction(d.port, sender, helo)
    assert mail.code == 250, mail
    assert final is not None and final.code == 250, final
    return headers_of(d, subject)


def test_pass(spfd):
    head = delivered(spfd, "someone@pass.test")
    rs = header(head, "Received-SPF")
    assert len(rs) == 1, head
    assert rs[0].startswith("pass (%s: domain of pass.test designates 127.0.0.1 as "
                            "permitted sender)" % HOSTNAME), rs
    assert "client-ip=127.0.0.1;" in rs[0], rs
    assert 'envelope-from="someone@pass.test";' in rs[0], rs
    assert "helo=client.example.org;" in rs[0], rs
    ar = header(head, "Authentication-Results")
    assert any("spf=pass smtp.mailfrom=pass.test" in a for a in ar), ar


def test_fail_rejected_at_mail(spfd):
    mail, final, _ = transaction(spfd.port, "someone@fail.test")
    assert mail.code == 550, mail
    assert mail.line.startswith("550 5.7.23 SPF check failed: "), mail
    assert "fail.test does not designate 127.0.0.1" in mail.line, mail


def test_fail_uses_the_domains_explanation(spfd):
    mail, _, _ = transaction(spfd.port, "someone@explained.test")
    assert mail.line == "550 5.7.23 SPF check failed: 127.0.0.1 may not send for " \
                        "explained.test", mail


def test_softfail_accepted_with_score_and_headers(spfd):
    head = delivered(spfd, "someone@soft.test")
    rs = header(head, "Received-SPF")
    assert rs and rs[0].startswith("softfail ("), head
    ar = header(head, "Authentication-Results")
    assert any("spf=softfail smtp.mailfrom=soft.test" in a for a in ar), ar
    log = spfd.log_text()
    assert "SPF_SOFTFAIL(1.0)" in log, log[-3000:]


@pytest.mark.parametrize("domain, problem", [
    ("syntax.test", "empty domain"),
    ("badcidr.test", "bad prefix length"),
    ("multi.test", "more than one SPF record"),
    ("loop1.test", "DNS-querying terms"),
    ("void.test", "void lookups"),
])
def test_permerror_accepted_with_score(spfd, domain, problem):
    head = delivered(spfd, "someone@%s" % domain)
    rs = header(head, "Received-SPF")
    assert rs and rs[0].startswith("permerror ("), head
    assert problem in rs[0], rs
    ar = header(head, "Authentication-Results")
    assert any("spf=permerror smtp.mailfrom=%s" % domain in a for a in ar), ar
    assert "SPF_PERMERROR(1.0)" in spfd.log_text()


def test_two_void_lookups_allowed(spfd):
    rs = header(delivered(spfd, "someone@void2.test"), "Received-SPF")
    assert rs and rs[0].startswith("pass ("), rs


def test_neutral_and_none(spfd):
    rs = header(delivered(spfd, "someone@neutral.test"), "Received-SPF")
    assert rs and rs[0].startswith("neutral ("), rs
    rs = header(delivered(spfd, "someone@nospf.test"), "Received-SPF")
    assert rs and rs[0].startswith("none ("), rs
    rs = header(delivered(spfd, "someone@nxdomain.test"), "Received-SPF")
    assert rs and rs[0].startswith("none ("), rs


def test_zero_prefix_lengths(spfd):
    """a/0 and mx/0 (RFC 7208 5.3, 5.4): any IPv4 client, as long as the
    name (or an MX host) has an IPv4 address. libspf2 refuses the record."""
    rs = header(delivered(spfd, "someone@a0.test"), "Received-SPF")
    assert rs and rs[0].startswith("pass ("), rs
    rs = header(delivered(spfd, "someone@mx0.test"), "Received-SPF")
    assert rs and rs[0].startswith("pass ("), rs
    mail, _, _ = transaction(spfd.port, "someone@a0none.test")
    assert mail.line.startswith("550 5.7.23 "), mail


def test_null_sender_checks_helo(spfd):
    head = delivered(spfd, "", helo="helo.pass.test")
    rs = header(head, "Received-SPF")
    assert rs and rs[0].startswith("pass ("), head
    assert 'envelope-from="postmaster@helo.pass.test";' in rs[0], rs
    ar = header(head, "Authentication-Results")
    assert any("spf=pass smtp.helo=helo.pass.test" in a for a in ar), ar
    mail, _, _ = transaction(spfd.port, "", helo="fail.test")
    assert mail.line.startswith("550 5.7.23 "), mail


def silent_daemon(daemons, extra=None):
    fixture = DnsFixture({"slow.test": {"TXT": ["v=spf1 +all"]}}, host="127.0.0.1",
                         port=0).start()
    fixture.fail("slow.test", "TIMEOUT")
    s = {"ENABLE_POLICYD_SPF": "1", "DNS_RESOLVER": "127.0.0.1:%d" % fixture.port}
    s.update(extra or {})
    return fixture, daemons.make(s, name="spfslow")


def test_dns_timeout_tempfails(daemons):
    fixture, d = silent_daemon(daemons)
    try:
        start = time.monotonic()
        mail, _, _ = transaction(d.port, "someone@slow.test")
        took = time.monotonic() - start
        assert mail.line.startswith("451 4.7.24 "), mail
        assert took < 30, took
    finally:
        fixture.stop()


def test_dns_timeout_skipped_when_configured(daemons):
    fixture, d = silent_daemon(daemons, {"SPF_DNS_ERROR": "skip"})
    try:
        head = delivered(d, "someone@slow.test")
        rs = header(head, "Received-SPF")
        assert rs and rs[0].startswith("temperror ("), head
        assert "SPF_SKIPPED" in d.log_text()
    finally:
        fixture.stop()


def test_off_when_disabled(daemons, dns):
    d = daemons.make({"ENABLE_POLICYD_SPF": "0", "DNS_RESOLVER": "127.0.0.1:%d" % dns.port},
                     name="spfoff")
    mail, final, subject = transaction(d.port, "someone@fail.test")
    assert mail.code == 250 and final.code == 250, (mail, final)
    assert header(headers_of(d, subject), "Received-SPF") == []
