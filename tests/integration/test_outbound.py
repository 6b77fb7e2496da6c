"""Outbound mail between two daemons on loopback: A (mx.a.test) accepts a
submission for a user of b.test and delivers it through the queue to B
(mx.b.test), found by MX lookup through the DNS fixture (DNS_RESOLVER) or
through a relay host; bounces for 5xx, null MX and mail loops; retries for a
destination that is down; `setup queue list|flush|delete`.

Each daemon listens on a random 127.x.y.z of its own, so both can use port
25 (and 465/587) and tests stay parallel-safe. The DNS fixture is the only
resolver and knows only *.test names: nothing can reach a real host."""

import smtplib

import pytest

from dnsfixture import DnsFixture
from helpers import Smtp, make_message, unique, wait_until
from mailnet import (QUEUE_ID_RE, add_user, attempts_shown, dsn_status_fields, greets,
                     host_daemon, parse, queue_ids, queue_list, random_loopback, settle, submit,
                     wait_dsn, wait_message, wait_queue_empty)

ALICE = "alice@a.test"
BOB = "bob@b.test"
DELIVERY_TIMEOUT = 20.0


class Net:
    """The DNS fixture and the daemons of one test."""

    def __init__(self, pool):
        self.pool = pool
        self.dns = None
        self.a_addr = random_loopback()
        self.b_addr = random_loopback()
        while self.b_addr == self.a_addr:
            self.b_addr = random_loopback()

    def start_dns(self, records):
        """records: dnsfixture's format. a.test always points to A."""
        zone = {"a.test": {"MX": [(10, "mx.a.test")]},
                "mx.a.test": {"A": [self.a_addr]}}
        zone.update(records)
        self.dns = DnsFixture(zone, host="127.0.0.1", port=0)
        self.dns.start()
        return self.dns

    def resolver(self):
        return "127.0.0.1:%d" % self.dns.port

    def daemon_a(self, settings=None, start=True):
        s = {"DNS_RESOLVER": self.resolver(), "SPOOF_PROTECTION": "0"}
        s.update(settings or {})
        d = host_daemon(self.pool, self.a_addr, "mx.a.test", s, name="A", start=start)
        if start:
            add_user(d, ALICE)
        self.a = d
        return d

    def daemon_b(self, settings=None, start=True, addr=None):
        s = {"DNS_RESOLVER": self.resolver()}
        s.update(settings or {})
        d = host_daemon(self.pool, addr or self.b_addr, "mx.b.test", s, name="B", start=start)
        if start:
            add_user(d, BOB)
        self.b = d
        return d

    def stop(self):
        if self.dns:
            self.dns.stop()


@pytest.fixture
def net(daemons):
    n = Net(daemons)
    yield n
    n.stop()


def b_zone(net, mx=None, a=None):
    """b.test: MX 10 mx.b.test -> B unless given."""
    return {"b.test": {"MX": mx if mx is not None else [(10, "mx.b.test")]},
            "mx.b.test": {"A": a if a is not None else [net.b_addr]}}


def send_from_a(net, rcpts, subj, sender=ALICE, implicit=True):
    msg = make_message(subj, sender=sender, to=rcpts[0])
    refused = submit(net.a.host, 465 if implicit else 587, ALICE, sender, rcpts, msg,
                     implicit=implicit)
    assert refused == {}, refused
    return msg


def received_from_a(data):
    """B's copy went through A's submission and then A's SMTP client."""
    text = data.split(b"\r\n\r\n", 1)[0]
    assert text.count(b"Received:") >= 2, text
    assert b"with ESMTPSA" in text, text


# --------------------------------------------------------------------------
# Direct delivery by MX

def test_mx_delivery_a_to_b(net):
    net.start_dns(b_zone(net))
    net.daemon_b()
    a = net.daemon_a()
    subj = unique("mx")
    msg = send_from_a(net, [BOB], subj)
    data = wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)
    received_from_a(data)
    assert data.startswith(b"Return-Path: <%s>" % ALICE.encode()), data[:200]
    assert data.endswith(msg.split(b"\r\n\r\n", 1)[1])
    # A said EHLO with its OVERRIDE_HOSTNAME (the source address is the
    # kernel's choice on loopback, so it is not checked here).
    assert b"Received: from mx.a.test (" in data.split(b"\r\n\r\n", 1)[0], data[:400]
    wait_queue_empty(a)
    assert a.messages(ALICE) == [], "unexpected mail (a bounce?) for the sender"


def test_mixed_local_and_remote_recipients(net):
    net.start_dns(b_zone(net))
    net.daemon_b()
    a = net.daemon_a()
    add_user(a, "carol@a.test")
    subj = unique("mixed")
    send_from_a(net, ["carol@a.test", BOB], subj, implicit=False)
    # The local copy is in place when the 250 came.
    assert a.find("carol@a.test", subj), "local copy missing right after the 250"
    wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)
    wait_queue_empty(a)


def test_mx_preference_order(net):
    # MX 5 points to a daemon that must win over MX 20 (another b.test server).
    c_addr = random_loopback()
    net.start_dns({"b.test": {"MX": [(20, "mx2.b.test"), (5, "mx1.b.test")]},
                   "mx1.b.test": {"A": [net.b_addr]},
                   "mx2.b.test": {"A": [c_addr]}})
    b = net.daemon_b()
    c = net.daemon_b(addr=c_addr)
    net.daemon_a()
    subj = unique("pref")
    send_from_a(net, [BOB], subj)
    wait_message(b, BOB, subj, DELIVERY_TIMEOUT)
    assert c.find(BOB, subj) == [], "delivered to the less preferred MX"


def test_mx_unreachable_first_falls_back_to_next(net):
    dead = random_loopback()       # nothing listens there: connection refused
    net.start_dns({"b.test": {"MX": [(5, "dead.b.test"), (10, "mx.b.test")]},
                   "dead.b.test": {"A": [dead]},
                   "mx.b.test": {"A": [net.b_addr]}})
    net.daemon_b()
    a = net.daemon_a()
    subj = unique("fallback")
    send_from_a(net, [BOB], subj)
    wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)
    wait_queue_empty(a)


def test_several_addresses_per_host_tried_in_turn(net):
    dead = random_loopback()
    net.start_dns(b_zone(net, a=[dead, net.b_addr]))
    net.daemon_b()
    net.daemon_a()
    subj = unique("addrs")
    send_from_a(net, [BOB], subj)
    wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)


def test_a_record_fallback_without_mx(net):
    net.start_dns({"b.test": {"A": [net.b_addr]}})
    net.daemon_b()
    a = net.daemon_a()
    subj = unique("nomx")
    send_from_a(net, [BOB], subj)
    wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)
    wait_queue_empty(a)


# --------------------------------------------------------------------------
# Bounces

def test_550_from_b_bounces_to_sender(net):
    net.start_dns(b_zone(net))
    b = net.daemon_b()
    a = net.daemon_a()
    # What B answers for an unknown user, to find it quoted in the DSN.
    with Smtp(25, host=net.b_addr) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<%s>" % ALICE)
        refusal = c.cmd("RCPT TO:<nobody@b.test>")
    assert refusal.code == 550, refusal
    subj = unique("550")
    send_from_a(net, ["nobody@b.test"], subj)
    dsn = wait_dsn(a, ALICE, subj, DELIVERY_TIMEOUT)
    text = dsn.decode("utf-8", "replace")
    assert refusal.line[4:] in " ".join(text.split()), (refusal.line, text[:3000])
    fields = dsn_status_fields(dsn)
    assert any(v.lower().startswith("failed") for v in fields.get("action", [])), fields
    assert any(v.startswith("5.") for v in fields.get("status", [])), fields
    assert any("nobody@b.test" in v for v in fields.get("final-recipient", [])), fields
    msg = parse(dsn)
    assert ALICE in msg["To"], msg["To"]
    assert msg["Auto-Submitted"], "a DSN is marked Auto-Submitted"
    wait_queue_empty(a)
    assert b.messages(BOB) == []
    # Exactly one DSN.
    assert len(a.find(ALICE, subj)) == 1


def test_partial_failure_one_bounce_one_delivery(net):
    net.start_dns(b_zone(net))
    net.daemon_b()
    a = net.daemon_a()
    subj = unique("partial")
    send_from_a(net, [BOB, "nobody@b.test"], subj)
    wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)
    dsn = wait_dsn(a, ALICE, subj, DELIVERY_TIMEOUT)
    fields = dsn_status_fields(dsn)
    finals = " ".join(fields.get("final-recipient", []))
    assert "nobody@b.test" in finals and BOB not in finals, fields
    wait_queue_empty(a)


def test_null_mx_bounces(net):
    net.start_dns({"b.test": {"MX": [(0, ".")]}})
    a = net.daemon_a()
    subj = unique("nullmx")
    send_from_a(net, [BOB], subj)
    dsn = wait_dsn(a, ALICE, subj, DELIVERY_TIMEOUT)
    fields = dsn_status_fields(dsn)
    assert "5.1.10" in fields.get("status", []), fields
    wait_queue_empty(a)


def test_mx_pointing_at_own_address_is_a_loop(net):
    net.start_dns(b_zone(net, a=[net.a_addr]))
    a = net.daemon_a()
    subj = unique("loop")
    send_from_a(net, [BOB], subj)
    dsn = wait_dsn(a, ALICE, subj, DELIVERY_TIMEOUT)
    fields = dsn_status_fields(dsn)
    assert "5.4.6" in fields.get("status", []), fields
    wait_queue_empty(a)
    # Not delivered to A itself under any name.
    assert len(a.find(ALICE, subj)) == 1


def test_no_bounce_for_null_sender(net):
    net.start_dns(b_zone(net))
    net.daemon_b()
    a = net.daemon_a()
    subj = unique("nullsender")
    msg = make_message(subj, sender=ALICE, to="nobody@b.test")
    try:
        assert submit(net.a_addr, 465, ALICE, "", ["nobody@b.test"], msg) == {}
    except smtplib.SMTPSenderRefused as e:
        pytest.skip("submission refuses MAIL FROM:<> (%s %s)" % (e.smtp_code, e.smtp_error))
    wait_queue_empty(a)
    settle(1.0)
    assert a.find(ALICE, subj) == [], "a bounce for a <> sender"


# --------------------------------------------------------------------------
# Retries and the queue CLI

def test_down_destination_retries_then_flush_delivers(net):
    net.start_dns(b_zone(net))
    b = net.daemon_b(start=False)
    a = net.daemon_a()
    subj = unique("down")
    send_from_a(net, [BOB], subj)

    def failed_once():
        out = queue_list(a)
        return out if BOB in out and any(n >= 1 for n in attempts_shown(out)) else None
    out = wait_until(failed_once, DELIVERY_TIMEOUT, interval=0.2,
                     what="a failed attempt in `setup queue list`")
    ids = queue_ids(a)
    assert len(ids) == 1, out
    low = out.lower()
    assert "refused" in low or "connect" in low, "no error shown:\n" + out
    assert a.messages(ALICE) == [], "a temporary failure must not bounce"

    b.start()
    add_user(b, BOB)
    rc, fout, ferr = a.setup("queue", "flush")
    assert rc == 0, (rc, fout, ferr)
    wait_message(b, BOB, subj, DELIVERY_TIMEOUT)
    wait_queue_empty(a)
    assert "queue is empty" in queue_list(a)


def queue_sections(out):
    """`setup queue list` output -> {id: the text from that id to the next}."""
    ids = QUEUE_ID_RE.findall(out)
    starts = [out.index(q) for q in ids] + [len(out)]
    return {q: out[starts[i]:starts[i + 1]] for i, q in enumerate(ids)}


def test_queue_flush_one_id_and_delete(net):
    net.start_dns(b_zone(net))
    b = net.daemon_b(start=False)
    a = net.daemon_a()
    s1, s2 = unique("keep"), unique("drop")
    send_from_a(net, [BOB], s1)
    send_from_a(net, ["bob2@b.test"], s2)

    def two_failed():
        out = queue_list(a)
        return len(queue_ids(a)) == 2 and len([n for n in attempts_shown(out) if n >= 1]) >= 2
    wait_until(two_failed, DELIVERY_TIMEOUT, interval=0.2, what="two failed messages")
    out = queue_list(a)
    sections = queue_sections(out)
    keep = [q for q, text in sections.items() if BOB in text]
    drop = [q for q, text in sections.items() if "bob2@b.test" in text]
    assert len(keep) == 1 and len(drop) == 1 and keep != drop, out

    rc, dout, derr = a.setup("queue", "delete", drop[0])
    assert rc == 0, (rc, dout, derr)
    assert queue_ids(a) == keep, queue_list(a)
    rc, dout, derr = a.setup("queue", "delete", drop[0])
    assert rc != 0, "deleting an unknown id succeeded: %r" % dout
    rc, dout, derr = a.setup("queue", "delete", "0123456789abcdef")
    assert rc != 0

    b.start()
    add_user(b, BOB)
    add_user(b, "bob2@b.test")
    rc, fout, ferr = a.setup("queue", "flush", keep[0])
    assert rc == 0, (rc, fout, ferr)
    wait_message(b, BOB, s1, DELIVERY_TIMEOUT)
    wait_queue_empty(a)
    assert b.find("bob2@b.test", s2) == []
    assert a.messages(ALICE) == [], "deleting must not bounce"


def test_queue_list_empty_and_usage(net):
    net.start_dns(b_zone(net))
    a = net.daemon_a()
    assert "queue is empty" in queue_list(a)
    rc, out, err = a.setup("queue", "delete")
    assert rc == 2, (rc, out, err)
    rc, out, err = a.setup("queue", "bogus")
    assert rc == 2, (rc, out, err)


def test_queue_survives_restart(net):
    net.start_dns(b_zone(net))
    b = net.daemon_b(start=False)
    a = net.daemon_a()
    subj = unique("restart")
    send_from_a(net, [BOB], subj)
    wait_until(lambda: any(n >= 1 for n in attempts_shown(queue_list(a))), DELIVERY_TIMEOUT,
               interval=0.2, what="a failed attempt")
    ids = queue_ids(a)
    a.kill9()
    a.proc = None
    a.start()
    assert queue_ids(a) == ids
    b.start()
    add_user(b, BOB)
    assert a.setup("queue", "flush")[0] == 0
    wait_message(b, BOB, subj, DELIVERY_TIMEOUT)
    wait_queue_empty(a)


# --------------------------------------------------------------------------
# Relay hosts

RELAY_USER = "relay@b.test"
RELAY_PASSWORD = "relay-password-9"


def relay_b(net):
    """B with a user for A to authenticate as; b.test has no DNS at all so
    that only the relay can deliver."""
    b = net.daemon_b()
    add_user(b, RELAY_USER, RELAY_PASSWORD)
    return b


@pytest.mark.parametrize("how", ["RELAY_HOST", "DEFAULT_RELAY_HOST"])
def test_relay_through_b_submission_with_auth(net, how):
    net.start_dns({})
    b = relay_b(net)
    if how == "RELAY_HOST":
        relay = {"RELAY_HOST": net.b_addr, "RELAY_PORT": "587"}
    else:
        relay = {"DEFAULT_RELAY_HOST": "[%s]:587" % net.b_addr}
    relay.update({"RELAY_USER": RELAY_USER, "RELAY_PASSWORD": RELAY_PASSWORD,
                  "RELAY_TLS_VERIFY": "0"})
    a = net.daemon_a(relay)
    subj = unique("relay")
    send_from_a(net, [BOB], subj)
    data = wait_message(b, BOB, subj, DELIVERY_TIMEOUT)
    hdrs = data.split(b"\r\n\r\n", 1)[0]
    # Both hops were authenticated submissions (A's and B's).
    assert hdrs.count(b"with ESMTPSA") >= 2, hdrs
    wait_queue_empty(a)


def test_relay_implicit_tls_465(net):
    net.start_dns({})
    b = relay_b(net)
    a = net.daemon_a({"RELAY_HOST": net.b_addr, "RELAY_PORT": "465", "RELAY_USER": RELAY_USER,
                      "RELAY_PASSWORD": RELAY_PASSWORD, "RELAY_TLS_VERIFY": "0"})
    subj = unique("relay465")
    send_from_a(net, [BOB], subj)
    wait_message(b, BOB, subj, DELIVERY_TIMEOUT)
    wait_queue_empty(a)


def test_relay_wrong_password_stays_queued_with_error(net):
    net.start_dns({})
    relay_b(net)
    a = net.daemon_a({"RELAY_HOST": net.b_addr, "RELAY_PORT": "587", "RELAY_USER": RELAY_USER,
                      "RELAY_PASSWORD": "wrong-password", "RELAY_TLS_VERIFY": "0"})
    subj = unique("relaybad")
    send_from_a(net, [BOB], subj)

    def error_shown():
        out = queue_list(a)
        return out if "535" in out else None
    out = wait_until(error_shown, DELIVERY_TIMEOUT, interval=0.2,
                     what="the relay's 535 in `setup queue list`")
    assert BOB in out, out
    assert net.b.find(BOB, subj) == []


def test_relay_tls_verify_fails_on_self_signed(net):
    # RELAY_TLS_VERIFY defaults to 1: B's self-signed certificate is refused,
    # the message stays queued (a TLS problem is temporary).
    net.start_dns({})
    relay_b(net)
    a = net.daemon_a({"RELAY_HOST": net.b_addr, "RELAY_PORT": "587", "RELAY_USER": RELAY_USER,
                      "RELAY_PASSWORD": RELAY_PASSWORD})
    subj = unique("relayverify")
    send_from_a(net, [BOB], subj)
    wait_until(lambda: any(n >= 1 for n in attempts_shown(queue_list(a))), DELIVERY_TIMEOUT,
               interval=0.2, what="a failed attempt")
    assert net.b.find(BOB, subj) == []
    assert a.messages(ALICE) == []


def test_setup_relay_per_domain(net):
    net.start_dns({})
    b = relay_b(net)
    a = net.daemon_a({"RELAY_TLS_VERIFY": "0"})
    rc, out, err = a.setup("relay", "add-domain", "a.test", net.b_addr, "587")
    assert rc == 0, (rc, out, err)
    rc, out, err = a.setup("relay", "add-auth", "a.test", RELAY_USER, RELAY_PASSWORD)
    assert rc == 0, (rc, out, err)
    subj = unique("relaydomain")
    send_from_a(net, [BOB], subj)
    data = wait_message(b, BOB, subj, DELIVERY_TIMEOUT)
    assert data.split(b"\r\n\r\n", 1)[0].count(b"with ESMTPSA") >= 2
    wait_queue_empty(a)


def test_setup_relay_exclude_domain_delivers_directly(net):
    dead = random_loopback()
    net.start_dns(b_zone(net))
    net.daemon_b()
    a = net.daemon_a({"RELAY_HOST": dead, "RELAY_PORT": "25"})
    rc, out, err = a.setup("relay", "exclude-domain", "a.test")
    assert rc == 0, (rc, out, err)
    subj = unique("exclude")
    send_from_a(net, [BOB], subj)
    data = wait_message(net.b, BOB, subj, DELIVERY_TIMEOUT)
    received_from_a(data)
    wait_queue_empty(a)


def test_setup_relay_usage_errors(net):
    net.start_dns({})
    a = net.daemon_a()
    for args in (("relay",), ("relay", "add-domain", "a.test"), ("relay", "add-auth", "a.test"),
                 ("relay", "exclude-domain"), ("relay", "bogus", "x")):
        rc, out, err = a.setup(*args)
        assert rc == 2, (args, rc, out, err)


def test_b_really_listens_on_its_own_address(net):
    # Guards the premise of these tests: two daemons, one port 25 each.
    net.start_dns(b_zone(net))
    net.daemon_b()
    net.daemon_a()
    assert greets(net.a_addr, 25) and greets(net.b_addr, 25)
    assert greets(net.b_addr, 587)
