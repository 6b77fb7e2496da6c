"""Two hosts in network namespaces: A is the MX of a.test (198.18.N.1),
B the MX of b.test (198.18.N.2), joined by a veth pair with no default route;
the DNS fixture runs inside A's namespace and is the only resolver of both.
Mail submitted to A for a user of B arrives in B's mailbox and the reply
comes back; a down B means retries, then delivery after `queue flush`; a
550 from B bounces into the sender's INBOX on A. Clients run inside the
namespaces (swaks via `ip netns exec`). Requires root."""

import subprocess

import pytest

from helpers import unique, wait_until
from mailnet import PASSWORD, add_user, attempts_shown, queue_list, wait_dsn, wait_message, \
    wait_queue_empty
from netns import NetnsUnavailable, NsDaemon, NsDns, TwoHostNet, in_ns

ALICE = "alice@a.test"
BOB = "bob@b.test"
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def hosts(mod_daemons):
    net = TwoHostNet()
    dns = None
    try:
        try:
            net.create()
        except NetnsUnavailable as e:
            pytest.skip("network namespaces unavailable (needs root): ip netns add: %s" % e)
        records = {"a.test": {"MX": [[10, "mx.a.test"]]},
                   "mx.a.test": {"A": [net.addr_a]},
                   "b.test": {"MX": [[10, "mx.b.test"]]},
                   "mx.b.test": {"A": [net.addr_b]}}
        dns = NsDns(net, net.ns_a, net.addr_a, records)
        dns.start("b.test")
        resolver = "%s:53" % net.addr_a
        daemons = {}
        for key, ns, addr, domain, user in (("a", net.ns_a, net.addr_a, "a.test", ALICE),
                                            ("b", net.ns_b, net.addr_b, "b.test", BOB)):
            d = NsDaemon(ns, addr, {"OVERRIDE_HOSTNAME": "mx." + domain,
                                    "SUBMISSIONS_LISTEN": "%s:465" % addr,
                                    "SUBMISSION_LISTEN": "%s:587" % addr,
                                    "DNS_RESOLVER": resolver}, name="ns" + key)
            mod_daemons.daemons.append(d)
            d.start()
            add_user(d, user)
            daemons[key] = d
        net.a, net.b = daemons["a"], daemons["b"]
        yield net
    finally:
        # Daemons first (they live in the namespaces), then the rest.
        for d in mod_daemons.daemons:
            if isinstance(d, NsDaemon) and d.running():
                d.stop()
        if dns:
            dns.cleanup()
        net.destroy()


def swaks_in(ns, server, user, sender, rcpt, subj, body="hello across hosts"):
    """Authenticated submission (465, implicit TLS) from inside ns."""
    cmd = ["swaks", "--server", server, "--port", "465", "--tlsc", "--auth", "PLAIN",
           "--auth-user", user, "--auth-password", PASSWORD, "--from", sender, "--to", rcpt,
           "--ehlo", "client.example.org", "--header", "Subject: " + subj,
           "--body", body + " " + subj, "--timeout", "15"]
    p = subprocess.run(in_ns(ns, cmd), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_network_is_private(hosts):
    for ns in (hosts.ns_a, hosts.ns_b):
        assert "default" not in hosts.routes(ns), hosts.routes(ns)


def test_mail_to_b_and_reply_back(hosts):
    subj = unique("netns")
    swaks_in(hosts.ns_a, hosts.addr_a, ALICE, ALICE, BOB, subj)
    data = wait_message(hosts.b, BOB, subj, TIMEOUT)
    hdrs = data.split(b"\r\n\r\n", 1)[0]
    assert b"with ESMTPSA" in hdrs, hdrs
    # B received it over port 25 from A's address.
    assert ("[%s]" % hosts.addr_a).encode() in hdrs, hdrs
    wait_queue_empty(hosts.a)

    reply = "Re: " + subj
    swaks_in(hosts.ns_b, hosts.addr_b, BOB, BOB, ALICE, reply)
    back = wait_message(hosts.a, ALICE, reply, TIMEOUT)
    assert ("[%s]" % hosts.addr_b).encode() in back.split(b"\r\n\r\n", 1)[0]
    wait_queue_empty(hosts.b)


def test_550_from_b_bounces_to_sender_on_a(hosts):
    subj = unique("netns550")
    swaks_in(hosts.ns_a, hosts.addr_a, ALICE, ALICE, "nobody@b.test", subj)
    dsn = wait_dsn(hosts.a, ALICE, subj, TIMEOUT)
    assert b"550" in dsn, dsn[:3000]
    wait_queue_empty(hosts.a)


def test_b_down_retries_then_flush_delivers(hosts):
    hosts.b.stop()
    hosts.b.proc = None
    try:
        subj = unique("netnsdown")
        swaks_in(hosts.ns_a, hosts.addr_a, ALICE, ALICE, BOB, subj)

        def failed():
            out = queue_list(hosts.a)
            return out if BOB in out and any(n >= 1 for n in attempts_shown(out)) else None
        wait_until(failed, TIMEOUT, interval=0.2, what="a failed attempt to reach B")
    finally:
        hosts.b.start()
    rc, out, err = hosts.a.setup("queue", "flush")
    assert rc == 0, (rc, out, err)
    wait_message(hosts.b, BOB, subj, TIMEOUT)
    wait_queue_empty(hosts.a)
    assert hosts.a.find(ALICE, subj) == [], "a temporary failure bounced"
