"""PERMIT_NETWORKS: clients in the listed networks may relay through port 25
without authentication; everyone else still gets 554 for remote domains."""

import subprocess

import pytest

from helpers import (QUEUED_RE, Smtp, clean_env, dot_stuff, make_message,
                     posthornd_path, unique, wait_until)

RELAY_DENIED = "554 5.7.1 <%s>: Relay access denied"


def relay_attempt(d, rcpt):
    """MAIL + RCPT to a remote address on port 25; returns the RCPT reply."""
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.org>").code == 250
        return c.cmd("RCPT TO:<%s>" % rcpt)


def test_permitted_network_relays_and_queues(daemons):
    d = daemons.make({"PERMIT_NETWORKS": "10.0.0.0/8, 127.0.0.0/8"}, name="permit")
    rcpt = unique("x") + "@remote.test"
    subj = unique("relayed")
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.org>").code == 250
        assert c.cmd("RCPT TO:<%s>" % rcpt).line == "250 2.1.5 Ok"
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj, to=rcpt)))
        assert QUEUED_RE.match(c.reply().line)
    rc, out, err = d.setup("queue", "list")
    assert rc == 0, (rc, out, err)
    assert rcpt in out, out
    wait_until(lambda: "client in PERMIT_NETWORKS: may relay" in d.log_text(),
               what="the PERMIT_NETWORKS log line")


def test_permitted_network_does_not_get_auth_on_25(daemons):
    d = daemons.make({"PERMIT_NETWORKS": "127.0.0.1"}, name="noauth")
    with Smtp(d.port) as c:
        r = c.ehlo()
        assert "AUTH" not in r.text, r


def test_default_empty_denies_relay(daemons):
    d = daemons.make(name="default")
    rcpt = unique("x") + "@remote.test"
    assert relay_attempt(d, rcpt).line == RELAY_DENIED % rcpt
    assert "PERMIT_NETWORKS: may relay" not in d.log_text()


def test_other_network_denies_relay(daemons):
    d = daemons.make({"PERMIT_NETWORKS": "10.0.0.0/8,::1/128"}, name="other")
    rcpt = unique("x") + "@remote.test"
    assert relay_attempt(d, rcpt).line == RELAY_DENIED % rcpt


@pytest.mark.parametrize("value", ["127.0.0.0/33", "localhost", "10.0.0.0/8,", "::/129"])
def test_invalid_value_is_refused(daemons, value):
    d = daemons.make({"PERMIT_NETWORKS": value}, start=False, name="bad")
    p = subprocess.run([posthornd_path(), "-c", d.conf, "-t"], capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 1, (p.stdout, p.stderr)
    text = p.stdout + p.stderr
    assert ("PERMIT_NETWORKS: invalid value '%s'; accepted: empty or a comma-separated "
            "list of IPv4/IPv6 networks (CIDR)" % value) in text, text
