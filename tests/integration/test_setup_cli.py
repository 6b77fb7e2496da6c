"""The setup CLI: verbs, exit codes (0 ok, 1 validation, 2 usage), one-line
reasons, and changes that reach the running daemon without a reload."""

import pytest

from helpers import QUEUED_RE, Smtp, dot_stuff, make_message, unique


@pytest.fixture(scope="module")
def d(mod_daemons):
    return mod_daemons.make(name="setup", provision=False)


def one_line_reason(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("setup: "), err
    return lines[0]


def rcpt_reply(d, addr):
    with Smtp(d.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<s@example.org>").code == 250
        return c.cmd("RCPT TO:<%s>" % addr)


def listed_emails(d):
    rc, out, err = d.setup("email", "list")
    assert rc == 0, (rc, out, err)
    return out


def test_email_add_list_update_del(d):
    rc, out, err = d.setup("email", "add", "alice@example.test", "pw-alice-1")
    assert rc == 0, (out, err)
    assert "* alice@example.test" in listed_emails(d).splitlines()
    rc, out, err = d.setup("email", "update", "alice@example.test", "pw-alice-2")
    assert rc == 0, (out, err)
    rc, out, err = d.setup("email", "del", "-y", "alice@example.test")
    assert rc == 0, (out, err)
    assert "* alice@example.test" not in listed_emails(d).splitlines()


def test_password_from_stdin(d):
    rc, out, err = d.setup("email", "add", "stdin@example.test", input="pw-from-stdin\n")
    assert rc == 0, (out, err)
    assert "* stdin@example.test" in listed_emails(d).splitlines()


def test_uppercase_is_lowercased_with_warning(d):
    rc, out, err = d.setup("email", "add", "Bob@Example.TEST", "pw-bob-1")
    assert rc == 0, (out, err)
    assert err.strip(), "no warning on stderr"
    assert "bob@example.test" in err.lower()
    out = listed_emails(d)
    assert "* bob@example.test" in out.splitlines()
    assert "Bob@" not in out


@pytest.mark.parametrize("args", [
    ("email", "add", "not-an-address", "pw"),
    ("email", "add", "a@", "pw"),
    ("email", "add", "@example.test", "pw"),
    ("email", "update", "ghost@example.test", "pw"),
    ("email", "del", "-y", "ghost@example.test"),
    ("alias", "add", "not-an-address", "x@example.test"),
    ("alias", "del", "ghost-alias@example.test", "x@example.test"),
])
def test_validation_errors_exit_1(d, args):
    rc, out, err = d.setup(*args)
    assert rc == 1, (args, rc, out, err)
    one_line_reason(err)


@pytest.mark.parametrize("args", [
    (), ("frobnicate",), ("email",), ("email", "frobnicate"), ("email", "add"),
    ("alias", "add", "only-one@example.test"), ("alias",),
])
def test_usage_errors_exit_2(d, args):
    rc, out, err = d.setup(*args)
    assert rc == 2, (args, rc, out, err)


def test_duplicate_account(d):
    assert d.setup("email", "add", "dup@example.test", "pw-dup-1")[0] == 0
    rc, out, err = d.setup("email", "add", "dup@example.test", "pw-dup-2")
    assert rc == 1, (rc, out, err)
    one_line_reason(err)
    assert listed_emails(d).splitlines().count("* dup@example.test") == 1


def test_alias_add_list_del(d):
    assert d.setup("email", "add", "carol@example.test", "pw-carol")[0] == 0
    rc, out, err = d.setup("alias", "add", "info@example.test", "carol@example.test")
    assert rc == 0, (out, err)
    rc, out, err = d.setup("alias", "add", "sales@example.test", "carol@example.test")
    assert rc == 0, (out, err)
    rc, out, err = d.setup("alias", "list")
    assert rc == 0
    lines = out.splitlines()
    assert "* info@example.test carol@example.test" in lines, out
    assert "* sales@example.test carol@example.test" in lines, out
    out = listed_emails(d)
    lines = out.splitlines()
    i = lines.index("* carol@example.test")
    assert lines[i + 1].startswith("    [ aliases -> "), out
    assert "info@example.test" in lines[i + 1] and "sales@example.test" in lines[i + 1]
    # Duplicate alias.
    rc, out, err = d.setup("alias", "add", "info@example.test", "carol@example.test")
    assert rc == 1, (rc, out, err)
    one_line_reason(err)
    rc, out, err = d.setup("alias", "del", "info@example.test", "carol@example.test")
    assert rc == 0, (out, err)
    rc, out, _ = d.setup("alias", "list")
    assert "* info@example.test carol@example.test" not in out.splitlines()
    assert "* sales@example.test carol@example.test" in out.splitlines()


def test_alias_account_conflicts(d):
    assert d.setup("email", "add", "dave@example.test", "pw-dave")[0] == 0
    assert d.setup("alias", "add", "helpdesk@example.test", "dave@example.test")[0] == 0
    rc, out, err = d.setup("alias", "add", "dave@example.test", "carol@example.test")
    assert rc == 1, "an alias that is an account: %r" % ((rc, out, err),)
    one_line_reason(err)
    rc, out, err = d.setup("email", "add", "helpdesk@example.test", "pw-x")
    assert rc == 1, "an account that is an alias: %r" % ((rc, out, err),)
    one_line_reason(err)


def test_changes_reach_running_daemon_without_reload(d):
    addr = unique("live") + "@example.test"
    assert rcpt_reply(d, addr).line.startswith("550 5.1.1")
    assert d.setup("email", "add", addr, "pw-live")[0] == 0
    assert rcpt_reply(d, addr).line == "250 2.1.5 Ok"
    subj = unique("livemsg")
    with Smtp(d.port) as c:
        c.ehlo()
        c.cmd("MAIL FROM:<s@example.org>")
        c.cmd("RCPT TO:<%s>" % addr)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(make_message(subj, to=addr)))
        assert QUEUED_RE.match(c.reply().line)
    assert len(d.find(addr, subj)) == 1
    # An alias added now works now, too.
    alias = unique("livealias") + "@example.test"
    assert rcpt_reply(d, alias).code == 550
    assert d.setup("alias", "add", alias, addr)[0] == 0
    assert rcpt_reply(d, alias).line == "250 2.1.5 Ok"
    assert d.setup("alias", "del", alias, addr)[0] == 0
    assert rcpt_reply(d, alias).line.startswith("550 5.1.1")
    assert d.setup("email", "del", "-y", addr)[0] == 0
    assert rcpt_reply(d, addr).line.startswith("550 5.1.1")


def test_catch_all_alias(d):
    assert d.setup("email", "add", "sink@catchall.test", "pw-sink")[0] == 0
    assert rcpt_reply(d, "random@catchall.test").line.startswith("550 5.1.1")
    assert d.setup("alias", "add", "@catchall.test", "sink@catchall.test")[0] == 0
    assert rcpt_reply(d, "random@catchall.test").line == "250 2.1.5 Ok"
    rc, out, _ = d.setup("alias", "list")
    assert "* @catchall.test sink@catchall.test" in out.splitlines()
