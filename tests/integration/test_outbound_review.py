"""Outbound delivery, the review findings: outcomes recorded per route as
soon as that route's attempt ends (no second delivery after a crash while
another route is slow), a bounded SIGTERM with attempts in flight,
NOTIFY=SUCCESS answered with a "relayed" DSN when the remote server does
not offer DSN, NOTIFY=NEVER, and a domain with neither MX nor address as a
permanent failure.

Daemons listen on random 127.x.y.z addresses; the DNS fixture is the only
resolver and knows only *.test names. The "slow" MX is a socket in this
test that accepts connections and never says a word."""

import smtplib
import socket
import time

import pytest

from test_outbound import Net, b_zone
from helpers import insecure_tls_context, make_message, unique, wait_until
from mailnet import (PASSWORD, dsn_status_fields, queue_list, random_loopback, settle,
                     wait_dsn, wait_message, wait_queue_empty)

ALICE = "alice@a.test"
BOB = "bob@b.test"
CAROL = "carol@c.test"
TIMEOUT = 20.0


@pytest.fixture
def net(daemons):
    n = Net(daemons)
    yield n
    n.stop()


class SilentServer:
    """Listens on addr:25 and accepts, then says nothing: an MX that keeps
    an attempt waiting for its greeting."""

    def __init__(self, addr):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, 25))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.conns = []

    def accepted(self):
        """Accepts what is waiting; True once some client connected."""
        try:
            while True:
                c, _ = self.sock.accept()
                self.conns.append(c)
        except OSError:
            pass
        return len(self.conns) > 0

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


def submit(net, rcpts, msg, rcpt_options=()):
    s = smtplib.SMTP_SSL(net.a.host, 465, local_hostname="client.example.org", timeout=20,
                         context=insecure_tls_context())
    try:
        s.login(ALICE, PASSWORD)
        refused = s.sendmail(ALICE, rcpts, msg, rcpt_options=list(rcpt_options))
        assert refused == {}, refused
    finally:
        s.quit()


def rcpt_line(out, addr):
    for line in out.splitlines():
        if line.strip().startswith(addr):
            return line
    return ""


def slow_c_zone(net, c_addr):
    zone = b_zone(net)
    zone.update({"c.test": {"MX": [(10, "mx.c.test")]}, "mx.c.test": {"A": [c_addr]}})
    return zone


# --------------------------------------------------------------------------
# Outcomes per route, at once

def test_delivered_route_is_recorded_while_another_route_hangs(net):
    c_addr = random_loopback()
    silent = SilentServer(c_addr)
    try:
        net.start_dns(slow_c_zone(net, c_addr))
        b = net.daemon_b()
        a = net.daemon_a()
        subj = unique("tworoutes")
        submit(net, [BOB, CAROL], make_message(subj, sender=ALICE, to=BOB))
        wait_message(b, BOB, subj, TIMEOUT)
        wait_until(silent.accepted, TIMEOUT, interval=0.1, what="A's connection to c.test")
        # B's delivery is durable although c.test's attempt still runs.
        wait_until(lambda: "delivered" in rcpt_line(queue_list(a), BOB), TIMEOUT,
                   interval=0.2, what="bob delivered in `setup queue list`")
        assert "pending" in rcpt_line(queue_list(a), CAROL), queue_list(a)

        # A crash now, then a restart: c.test refuses, and bob is not sent
        # to again.
        a.kill9()
        a.proc = None
        silent.close()
        a.start()
        wait_until(lambda: "attempts=1" in rcpt_line(queue_list(a), CAROL), TIMEOUT,
                   interval=0.2, what="a new attempt for carol after the restart")
        settle(1.0)
        assert len(b.find(BOB, subj)) == 1, "bob got the message twice"
        assert "delivered" in rcpt_line(queue_list(a), BOB), queue_list(a)
    finally:
        silent.close()


def test_sigterm_aborts_hanging_attempts_and_records_them(net):
    c_addr = random_loopback()
    silent = SilentServer(c_addr)
    try:
        net.start_dns(slow_c_zone(net, c_addr))
        a = net.daemon_a()
        subj = unique("sigterm")
        submit(net, [CAROL], make_message(subj, sender=ALICE, to=CAROL))
        wait_until(silent.accepted, TIMEOUT, interval=0.1, what="A's connection to c.test")
        start = time.monotonic()
        rc = a.stop(timeout=45.0)
        took = time.monotonic() - start
        assert rc == 0, (rc, a.stderr_tail())
        assert took < 35.0, "the drain took %.1f s" % took
        line = rcpt_line(queue_list(a), CAROL)
        assert "pending" in line and "attempts=1" in line, queue_list(a)
        assert "shutting down" in line, queue_list(a)
        assert a.messages(ALICE) == [], "an aborted attempt must not bounce"
    finally:
        silent.close()


# --------------------------------------------------------------------------
# NOTIFY (RFC 3461)

def test_notify_success_to_server_without_dsn_gets_relayed_report(net):
    net.start_dns(b_zone(net))
    b = net.daemon_b()          # port 25 offers no DSN extension
    a = net.daemon_a()
    subj = unique("notifysuccess")
    submit(net, [BOB], make_message(subj, sender=ALICE, to=BOB),
           rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
    wait_message(b, BOB, subj, TIMEOUT)
    dsn = wait_dsn(a, ALICE, subj, TIMEOUT)
    fields = dsn_status_fields(dsn)
    assert fields.get("action") == ["relayed"], fields
    assert all(v.startswith("2.") for v in fields.get("status", [])), fields
    assert any(BOB in v for v in fields.get("final-recipient", [])), fields
    text = dsn.decode("utf-8", "replace")
    assert "could not be delivered" not in text, text[:2000]
    # A success report returns the headers, not the message.
    assert "text/rfc822-headers" in text, text[:3000]
    wait_queue_empty(a)
    assert len(a.find(ALICE, subj)) == 1


def test_notify_never_suppresses_the_bounce(net):
    net.start_dns(b_zone(net))
    net.daemon_b()
    a = net.daemon_a()
    subj = unique("notifynever")
    submit(net, ["nobody@b.test"], make_message(subj, sender=ALICE, to="nobody@b.test"),
           rcpt_options=["NOTIFY=NEVER"])
    wait_queue_empty(a)
    settle(1.0)
    assert a.find(ALICE, subj) == [], "a DSN despite NOTIFY=NEVER"


def test_plain_delivery_sends_no_report(net):
    net.start_dns(b_zone(net))
    b = net.daemon_b()
    a = net.daemon_a()
    subj = unique("nonotify")
    submit(net, [BOB], make_message(subj, sender=ALICE, to=BOB), rcpt_options=["NOTIFY=FAILURE"])
    wait_message(b, BOB, subj, TIMEOUT)
    wait_queue_empty(a)
    settle(1.0)
    assert a.find(ALICE, subj) == []


# --------------------------------------------------------------------------
# A domain with no MX and no address

@pytest.mark.parametrize("zone,status", [({}, "5.1.2"),
                                         ({"b.test": {"TXT": ["v=spf1 -all"]}}, "5.4.4")],
                         ids=["nxdomain", "nodata"])
def test_domain_without_mx_or_address_bounces(net, zone, status):
    net.start_dns(zone)
    a = net.daemon_a()
    subj = unique("noaddr")
    submit(net, [BOB], make_message(subj, sender=ALICE, to=BOB))
    dsn = wait_dsn(a, ALICE, subj, TIMEOUT)
    fields = dsn_status_fields(dsn)
    assert fields.get("status") == [status], fields
    wait_queue_empty(a)
