"""DNSBL through SMTP (issue 6): the client's address looked up in DNS block
lists served by the DNS fixture. Clients connect from several loopback
addresses (127.0.0.x) so that each test has its own listings:

  127.0.0.2  black.test (weight 3 = DNSBL_THRESHOLD): refused at connect
  127.0.0.3  grey.test (1): accepted, DNSBL_GREY_TEST in the spam score
  127.0.0.4  black.test (3) and the allowlist white.test (-2): accepted
  127.0.0.5  refusing.test answers 127.255.255.254 (Spamhaus: "query
             refused"): not a listing
  127.0.0.6  black.test does not answer: the zone is skipped, logged
  127.0.0.1  (the readiness probe) listed nowhere

Spam headers are on with a low SA_TAG so that a DNSBL score shows in
X-Spam-Status."""

import socket
import time

import pytest

from dnsfixture import DnsFixture
from helpers import QUEUED_RE, Smtp, dot_stuff, make_message, unique

USER = "user@example.test"
ZONES = "black.test*3,grey.test*1,white.test*-2,refusing.test*3"


class SmtpFrom(Smtp):
    """The raw client, connecting from a given loopback address."""

    def __init__(self, port, source, timeout=20.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.reply()


def listed(ip_last, *zones, code="127.0.0.2"):
    return {"%d.0.0.127.%s" % (ip_last, z): {"A": [code]} for z in zones}


@pytest.fixture(scope="module")
def dns():
    records = {}
    records.update(listed(2, "black.test"))
    records.update(listed(3, "grey.test", code="127.0.0.3"))
    records.update(listed(4, "black.test", "white.test"))
    records.update(listed(5, "refusing.test", code="127.255.255.254"))
    records.update(listed(6, "black.test"))
    fx = DnsFixture(records).start()
    fx.fail("6.0.0.127.black.test", "TIMEOUT")
    yield fx
    fx.stop()


@pytest.fixture(scope="module")
def blkd(mod_daemons, dns):
    return mod_daemons.make({"ENABLE_DNSBL": "1", "DNSBL_ZONES": ZONES,
                             "DNSBL_THRESHOLD": "3", "ENABLE_SPAMASSASSIN": "1",
                             "SA_TAG": "0.5", "DNS_RESOLVER": dns.resolver},
                            name="dnsbl")


def deliver_from(d, source, subj):
    """One message from `source`; returns the final reply."""
    with SmtpFrom(d.port, source) as c:
        assert c.greeting.code == 220, c.greeting
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@example.org>").code == 250
        assert c.cmd("RCPT TO:<%s>" % USER).code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj)))
        final = c.reply()
        c.cmd("QUIT")
        return final


def header_of(d, subj):
    data = d.read_one(USER, subj)
    hdr = data.split(b"\r\n\r\n", 1)[0].decode()
    return hdr.replace("\r\n\t", " ").replace("\r\n ", " ")


def status_tests(hdr):
    for line in hdr.split("\r\n"):
        if line.startswith("X-Spam-Status: "):
            return line.split("tests=", 1)[1].replace(" ", "").split(",")
    return None


def test_listed_client_refused_at_connect(blkd):
    with SmtpFrom(blkd.port, "127.0.0.2") as c:
        assert c.greeting.line == ("554 5.7.1 Service unavailable; client [127.0.0.2] "
                                   "blocked using black.test"), c.greeting
        c.send("EHLO client.example.org\r\n")
        r = c.reply()
        assert r.code >= 500, r
        r = c.cmd("MAIL FROM:<sender@example.org>")
        assert r.code >= 500, r
    log = blkd.log_text()
    assert "listed by black.test (127.0.0.2)" in log
    assert "stage=connect filter=dnsbl client=127.0.0.2" in log
    assert "reasons=DNSBL_BLACK_TEST action=reject" in log


def test_low_weight_listing_scores(blkd):
    subj = unique("grey")
    final = deliver_from(blkd, "127.0.0.3", subj)
    assert QUEUED_RE.match(final.line), final
    hdr = header_of(blkd, subj)
    assert "X-Spam-Status: No, score=1.0 required=6.31" in hdr, hdr
    assert status_tests(hdr) == ["DNSBL_GREY_TEST"], hdr
    assert "DNSBL_GREY_TEST(1.0)" in blkd.log_text()


def test_allowlist_offsets(blkd):
    """black.test alone would refuse (3); white.test's -2 brings it to 1."""
    subj = unique("white")
    final = deliver_from(blkd, "127.0.0.4", subj)
    assert QUEUED_RE.match(final.line), final
    hdr = header_of(blkd, subj)
    assert "score=1.0 " in hdr, hdr
    assert status_tests(hdr) == ["DNSBL_BLACK_TEST", "DNSBL_WHITE_TEST"], hdr


def test_refused_query_is_not_a_listing(blkd):
    subj = unique("refused")
    final = deliver_from(blkd, "127.0.0.5", subj)
    assert QUEUED_RE.match(final.line), final
    hdr = header_of(blkd, subj)
    assert "X-Spam-Status" not in hdr, hdr     # score 0, under SA_TAG
    log = blkd.log_text()
    assert "refusing.test refused the query (127.255.255.254), zone skipped" in log


def test_silent_dns_server_skips_zone(blkd, dns):
    subj = unique("timeout")
    start = time.monotonic()
    final = deliver_from(blkd, "127.0.0.6", subj)
    assert QUEUED_RE.match(final.line), final
    # at most one DNS timeout for all zones together (they are asked at once)
    assert time.monotonic() - start < 15
    assert ("6.0.0.127.black.test", "A") in dns.queries
    hdr = header_of(blkd, subj)
    assert "X-Spam-Status" not in hdr, hdr
    assert "lookup in black.test failed (DNS timeout or error), zone skipped" in blkd.log_text()


def test_every_zone_asked_in_one_go(blkd, dns):
    """127.0.0.1 is listed nowhere: every zone was asked for it (the
    readiness probe did that already) and the mail goes through."""
    subj = unique("clean")
    final = deliver_from(blkd, "127.0.0.1", subj)
    assert QUEUED_RE.match(final.line), final
    for zone in ("black.test", "grey.test", "white.test", "refusing.test"):
        assert ("1.0.0.127.%s" % zone, "A") in dns.queries, zone
    assert "X-Spam-Status" not in header_of(blkd, subj)


def test_dnsbl_off_by_default(mod_daemons, dns):
    d = mod_daemons.make({"DNS_RESOLVER": dns.resolver}, name="nodnsbl")
    before = len(dns.queries)
    with SmtpFrom(d.port, "127.0.0.2") as c:
        assert c.greeting.code == 220, c.greeting
        c.cmd("QUIT")
    assert not [q for q in dns.queries[before:] if q[0].endswith(".black.test")]
