"""The DNS fixture answers as documented, over UDP and TCP."""

import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest
from dnslib import RCODE, DNSRecord

sys.path.insert(0, os.path.dirname(__file__))

from dnsfixture import DnsFixture  # noqa: E402

RECORDS = {
    "b.test": {"MX": [(10, "mx.b.test"), (20, "mx2.b.test")]},
    "mx.b.test": {"A": ["198.18.10.2"], "AAAA": []},
    "a.test": {"TXT": ["v=spf1 -all", ["part one ", "part two"]]},
    "null.test": {"MX": [(0, ".")]},
    "2.10.18.198.in-addr.arpa": {"PTR": ["mx.b.test"]},
}


@pytest.fixture
def dns():
    fx = DnsFixture(RECORDS).start()
    yield fx
    fx.stop()


def ask(fx, name, qtype, tcp=False, timeout=2.0):
    q = DNSRecord.question(name, qtype)
    return DNSRecord.parse(q.send("127.0.0.1", fx.port, tcp=tcp, timeout=timeout))


def test_mx_a_and_ttl(dns):
    r = ask(dns, "b.test", "MX")
    assert r.header.rcode == RCODE.NOERROR
    assert sorted((rr.rdata.preference, str(rr.rdata.label)) for rr in r.rr) == \
        [(10, "mx.b.test."), (20, "mx2.b.test.")]
    assert all(rr.ttl == 60 for rr in r.rr)
    r = ask(dns, "MX.B.TEST.", "A")
    assert [str(rr.rdata) for rr in r.rr] == ["198.18.10.2"]


def test_nxdomain_nodata_and_null_mx(dns):
    assert ask(dns, "nosuch.test", "A").header.rcode == RCODE.NXDOMAIN
    r = ask(dns, "mx.b.test", "AAAA")
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    r = ask(dns, "b.test", "TXT")
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    r = ask(dns, "null.test", "MX")
    assert len(r.rr) == 1
    assert r.rr[0].rdata.preference == 0 and str(r.rr[0].rdata.label) == "."


def test_txt_and_ptr(dns):
    r = ask(dns, "a.test", "TXT")
    got = sorted([bytes(s) for s in rr.rdata.data] for rr in r.rr)
    assert got == [[b"part one ", b"part two"], [b"v=spf1 -all"]]
    r = ask(dns, "2.10.18.198.in-addr.arpa", "PTR")
    assert [str(rr.rdata) for rr in r.rr] == ["mx.b.test."]


def test_tcp_and_truncation(dns):
    dns.set("big.test", {"TXT": ["x" * 200 + str(i) for i in range(5)]})
    r = ask(dns, "big.test", "TXT")
    assert r.header.tc == 1 and not r.rr
    r = ask(dns, "big.test", "TXT", tcp=True)
    assert len(r.rr) == 5


def test_runtime_changes_and_failures(dns):
    dns.add("new.test", "A", "198.18.0.9")
    assert [str(rr.rdata) for rr in ask(dns, "new.test", "A").rr] == ["198.18.0.9"]
    dns.remove("new.test")
    assert ask(dns, "new.test", "A").header.rcode == RCODE.NXDOMAIN
    dns.fail("b.test", "SERVFAIL")
    assert ask(dns, "b.test", "MX").header.rcode == RCODE.SERVFAIL
    dns.fail("b.test", "REFUSED")
    assert ask(dns, "b.test", "MX", tcp=True).header.rcode == RCODE.REFUSED
    dns.fail("b.test", "TIMEOUT")
    with pytest.raises(socket.timeout):
        ask(dns, "b.test", "MX", timeout=0.5)
    dns.clear_failure("b.test")
    assert len(ask(dns, "b.test", "MX").rr) == 2
    assert ("b.test", "MX") in dns.queries
    with pytest.raises(ValueError):
        dns.fail("b.test", "SLOW")


def test_standalone_mode():
    with tempfile.TemporaryDirectory() as tmp:
        zone = os.path.join(tmp, "zone.json")
        with open(zone, "w") as f:
            json.dump({"b.test": {"MX": [[10, "mx.b.test"]]},
                       "_fail": {"bad.test": "SERVFAIL"}}, f)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proc = subprocess.Popen(
            [sys.executable, os.path.join(os.path.dirname(__file__), "dnsfixture.py"),
             "--listen", "127.0.0.1:%d" % port, "--zone", zone],
            stdout=subprocess.PIPE, text=True)
        try:
            assert "listening" in proc.stdout.readline()
            q = DNSRecord.question("b.test", "MX")
            r = DNSRecord.parse(q.send("127.0.0.1", port, timeout=2))
            assert r.rr[0].rdata.preference == 10
            q = DNSRecord.question("bad.test", "A")
            r = DNSRecord.parse(q.send("127.0.0.1", port, timeout=2))
            assert r.header.rcode == RCODE.SERVFAIL
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        assert proc.returncode == 0
