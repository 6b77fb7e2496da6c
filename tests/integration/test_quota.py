"""Mailbox quotas: `setup quota set|del` (exit codes and reasons), and
port-25 delivery refusing mail for a full mailbox with 452 4.2.2 (at RCPT,
so other recipients still get the message, or at DATA) and a message that
can never fit with 552 5.2.2. ENABLE_QUOTAS=0 turns it off,
POSTFIX_MAILBOX_SIZE_LIMIT applies to accounts without a quota of their
own, and changes reach the running daemon without a reload."""

import os

import pytest

from helpers import Smtp, dot_stuff, make_message, unique, wait_until

QUOTA = 20 * 1024
GRACE = QUOTA // 10     # Dovecot's default quota_grace, as docker-mailserver's


@pytest.fixture(scope="module")
def d(mod_daemons):
    return mod_daemons.make(name="quota")


def add_user(d, quota=None):
    addr = unique("q") + "@example.test"
    rc, out, err = d.setup("email", "add", addr, "secret-password-3")
    assert rc == 0, (rc, out, err)
    if quota is not None:
        rc, out, err = d.setup("quota", "set", addr, quota)
        assert rc == 0, (rc, out, err)
    return addr


def sized_message(size, to):
    """A message of about `size` octets (the trace headers come on top)."""
    subject = unique("quota")
    head = make_message(subject, body=b"", to=to)
    lines = max(1, (size - len(head)) // 72)
    body = (b"x" * 70 + b"\r\n") * lines
    return make_message(subject, body=body, to=to)


def transaction(d, rcpts, msg, declare_size=False):
    """One SMTP transaction; returns (RCPT replies, final reply or None when
    no recipient was accepted)."""
    with Smtp(d.port) as c:
        c.ehlo()
        size = " SIZE=%d" % len(msg) if declare_size else ""
        r = c.cmd("MAIL FROM:<sender@example.org>%s" % size)
        assert r.code == 250, r
        replies = [c.cmd("RCPT TO:<%s>" % rc) for rc in rcpts]
        final = None
        if any(r.code == 250 for r in replies):
            r = c.cmd("DATA")
            assert r.code == 354, r
            c.send(dot_stuff(msg))
            final = c.reply()
        c.cmd("QUIT")
        return replies, final


def stored_bytes(d, addr):
    return sum(os.path.getsize(p) for p in d.messages(addr))


def rcpt_reply(d, addr, size=None):
    with Smtp(d.port) as c:
        c.ehlo()
        size = " SIZE=%d" % size if size else ""
        assert c.cmd("MAIL FROM:<sender@example.org>%s" % size).code == 250
        return c.cmd("RCPT TO:<%s>" % addr)


def one_line_reason(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("setup: "), err
    return lines[0]


# --- setup quota -----------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("quota",), ("quota", "set"), ("quota", "set", "user@example.test"),
    ("quota", "set", "user@example.test", "1M", "extra"), ("quota", "del"),
    ("quota", "del", "a@example.test", "b@example.test"), ("quota", "frob", "x"),
])
def test_usage_errors_exit_2(d, args):
    rc, out, err = d.setup(*args)
    assert rc == 2, (args, rc, out, err)
    one_line_reason(err)


@pytest.mark.parametrize("quota", ["10Q", "-1", "1.5M", "M", "", "1 M", "99999999999999999999",
                                   "9000000000T"])
def test_invalid_quota_exit_1(d, quota):
    rc, out, err = d.setup("quota", "set", "user@example.test", quota)
    assert rc == 1, (quota, rc, out, err)
    assert "invalid quota" in one_line_reason(err)


def test_unknown_account_refused(d):
    for verb in (("set", "1M"), ("del",)):
        rc, out, err = d.setup("quota", verb[0], "nobody@example.test", *verb[1:])
        assert rc == 1, (verb, rc, out, err)
        assert "no such user: nobody@example.test" in one_line_reason(err)
    # An alias is not an account.
    rc, out, err = d.setup("quota", "set", "alias@example.test", "1M")
    assert rc == 1, (rc, out, err)
    rc, out, err = d.setup("quota", "set", "not-an-address", "1M")
    assert rc == 1 and "invalid address" in one_line_reason(err), (rc, out, err)


def test_set_and_del_succeed(d):
    addr = add_user(d)
    for quota in ("0", "500M", "1G", "10240K", "20480", "2T", "3kb"):
        rc, out, err = d.setup("quota", "set", addr, quota)
        assert (rc, err) == (0, ""), (quota, rc, out, err)
    rc, out, err = d.setup("quota", "del", addr)
    assert (rc, err) == (0, ""), (rc, out, err)
    rc, out, err = d.setup("quota", "del", addr)   # none left: still fine
    assert rc == 0, (rc, out, err)


def test_help_lists_quota(d):
    rc, out, err = d.setup("help")
    assert rc == 0
    assert "quota set <address> <quota>" in out and "quota del <address>" in out


# --- delivery --------------------------------------------------------------

def fill(d, addr, piece=3000, max_messages=30):
    """Sends messages until RCPT is refused, halving their size whenever
    one no longer fits; returns how many were stored and the refusal."""
    stored = 0
    for _ in range(max_messages):
        replies, final = transaction(d, [addr], sized_message(piece, addr))
        if replies[0].code != 250:
            return stored, replies[0]
        if final.code == 250:
            stored += 1
        else:
            # Too big for the room left, but the mailbox is not full yet.
            assert final.line.startswith("452 4.2.2"), final
            piece //= 2
    raise AssertionError("never refused after %d messages" % max_messages)


def test_fills_until_full_then_rcpt_452(d):
    addr = add_user(d, "20K")
    stored, refusal = fill(d, addr)
    assert refusal.line.startswith("452 4.2.2"), refusal
    assert addr in refusal.line
    assert stored == len(d.messages(addr)) and stored >= 6
    # Full: at or over the limit, but never beyond the grace.
    assert QUOTA <= stored_bytes(d, addr) <= QUOTA + GRACE
    assert "mailbox %s full" % addr in d.log_text()


def test_message_larger_than_quota_552(d):
    addr = add_user(d, "20K")
    msg = sized_message(QUOTA + GRACE + 1000, addr)
    # Declared with SIZE: refused at RCPT.
    replies, final = transaction(d, [addr], msg, declare_size=True)
    assert replies[0].line.startswith("552 5.2.2"), replies
    assert final is None
    # Not declared: refused after DATA.
    replies, final = transaction(d, [addr], msg)
    assert replies[0].code == 250, replies
    assert final.line.startswith("552 5.2.2"), final
    assert d.messages(addr) == []
    # A message that fits still arrives.
    replies, final = transaction(d, [addr], sized_message(2000, addr))
    assert final.code == 250, final
    assert len(d.messages(addr)) == 1


def test_other_recipients_still_get_the_message(d):
    full = add_user(d, "20K")
    fill(d, full)
    other = add_user(d)
    msg = sized_message(1000, other)
    replies, final = transaction(d, [full, other], msg)
    assert replies[0].line.startswith("452 4.2.2"), replies
    assert replies[1].code == 250, replies
    assert final.code == 250, final
    assert len(d.messages(other)) == 1


def test_data_refusal_when_it_no_longer_fits(d):
    """RCPT without SIZE accepts a mailbox that still has room; the message
    turns out too big for that room: 452 4.2.2 after DATA, nothing stored,
    and nothing for the other recipient either (one reply per message)."""
    addr = add_user(d, "20K")
    other = add_user(d)
    replies, final = transaction(d, [addr], sized_message(18000, addr))
    assert final.code == 250, final
    replies, final = transaction(d, [addr, other], sized_message(6000, addr))
    assert [r.code for r in replies] == [250, 250], replies
    assert final.line.startswith("452 4.2.2"), final
    assert len(d.messages(addr)) == 1 and d.messages(other) == []


def test_quota_changes_apply_without_reload(d):
    addr = add_user(d)
    for _ in range(3):
        replies, final = transaction(d, [addr], sized_message(4000, addr))
        assert final.code == 250, final
    # Lowered below the usage: full.
    rc, out, err = d.setup("quota", "set", addr, "10K")
    assert rc == 0, (rc, out, err)
    wait_until(lambda: rcpt_reply(d, addr).line.startswith("452 4.2.2"), timeout=15,
               what="RCPT 452 after quota set")
    # Unlimited (0), then no quota at all (POSTFIX_MAILBOX_SIZE_LIMIT=0).
    rc, out, err = d.setup("quota", "set", addr, "0")
    assert rc == 0, (rc, out, err)
    wait_until(lambda: rcpt_reply(d, addr).code == 250, timeout=15, what="RCPT 250 after 0")
    rc, out, err = d.setup("quota", "set", addr, "10K")
    assert rc == 0
    wait_until(lambda: rcpt_reply(d, addr).code == 452, timeout=15, what="RCPT 452 again")
    rc, out, err = d.setup("quota", "del", addr)
    assert rc == 0, (rc, out, err)
    wait_until(lambda: rcpt_reply(d, addr).code == 250, timeout=15, what="RCPT 250 after del")


def test_mail_placed_by_other_tools_counts(d):
    """Usage comes from the Maildir: files that appear there (an import, a
    folder filled over IMAP) count once the cached usage expires."""
    addr = add_user(d, "20K")
    replies, final = transaction(d, [addr], sized_message(1000, addr))
    assert final.code == 250
    folder = os.path.join(d.mailbox(addr), ".Archive", "cur")
    os.makedirs(folder)
    with open(os.path.join(folder, "1.M1P1.elsewhere:2,S"), "wb") as f:
        f.write(b"x" * QUOTA)
    wait_until(lambda: rcpt_reply(d, addr).line.startswith("452 4.2.2"), timeout=15,
               what="the imported mail to count")


# --- settings --------------------------------------------------------------

def test_enable_quotas_0_ignores_quotas(daemons):
    d = daemons.make({"ENABLE_QUOTAS": "0", "POSTFIX_MAILBOX_SIZE_LIMIT": "5000"},
                     name="noquota")
    addr = add_user(d, "1K")   # set, but not enforced
    msg = sized_message(8000, addr)
    for declare in (True, False):
        replies, final = transaction(d, [addr], msg, declare_size=declare)
        assert replies[0].code == 250, replies
        assert final.code == 250, final
    assert len(d.messages(addr)) == 2


def test_mailbox_size_limit_without_own_quota(daemons):
    d = daemons.make({"POSTFIX_MAILBOX_SIZE_LIMIT": str(QUOTA)}, name="mbxlimit")
    addr = add_user(d)
    replies, final = transaction(d, [addr], sized_message(QUOTA + GRACE + 500, addr),
                                 declare_size=True)
    assert replies[0].line.startswith("552 5.2.2"), replies
    stored, refusal = fill(d, addr)
    assert refusal.line.startswith("452 4.2.2"), refusal
    assert QUOTA <= stored_bytes(d, addr) <= QUOTA + GRACE
    # A quota of its own wins, and 0 means unlimited.
    rc, out, err = d.setup("quota", "set", addr, "0")
    assert rc == 0, (rc, out, err)
    replies, final = transaction(d, [addr], sized_message(QUOTA * 2, addr), declare_size=True)
    assert final is not None and final.code == 250, (replies, final)
