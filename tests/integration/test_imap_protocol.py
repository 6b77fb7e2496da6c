"""IMAP4rev1 (RFC 3501) and its extensions on a real daemon: Python's
imaplib over STARTTLS (IMAP_LISTEN) and implicit TLS (IMAPS_LISTEN), and a
raw client where the bytes on the wire matter. Every test uses its own fresh
account on one module daemon, so tests do not see each other's mail.
Two sessions watch each other's changes; IDLE sees SMTP deliveries."""

import imaplib
import re
import smtplib
import time

import pytest

import helpers
from imaptools import (EXTENSIONS, PASSWORD, Raw, add_user, apply_updates, caps_of, code,
                       deliver, fetch_item, flags_of, imaps, internaldate_epoch, list_names, login,
                       multipart_message, number, plain_b64, resp_code_value, search_result,
                       seq_of, simple_message, starttls, status_items, uid_set)

SPECIAL_USE = {"Drafts": "\\drafts", "Sent": "\\sent", "Junk": "\\junk",
               "Trash": "\\trash", "Archive": "\\archive"}


@pytest.fixture(scope="module")
def imapd(mod_daemons):
    return mod_daemons.make(helpers.imap_settings(), name="imap")


@pytest.fixture
def user(imapd):
    return add_user(imapd)


@pytest.fixture
def raw(imapd, user):
    """A raw session over 993, logged in as the test's user."""
    r = Raw(imapd)
    r.login(user)
    yield r
    r.close()


# --------------------------------------------------------------------------
# Capabilities, STARTTLS, login

def test_starttls_capabilities_and_login(imapd, user):
    c = imaplib.IMAP4("127.0.0.1", helpers.listen_port(imapd, "IMAP_LISTEN"), timeout=15)
    assert c.welcome.startswith(b"* OK [CAPABILITY "), c.welcome
    caps = caps_of(c)
    for cap in EXTENSIONS + ("STARTTLS", "LOGINDISABLED"):
        assert cap in caps, (cap, caps)
    assert "AUTH=PLAIN" not in caps
    with pytest.raises(imaplib.IMAP4.error):
        c.login(user, PASSWORD)
    c.starttls(helpers.insecure_tls_context())
    caps = caps_of(c)
    assert "AUTH=PLAIN" in caps and "STARTTLS" not in caps and "LOGINDISABLED" not in caps
    for cap in EXTENSIONS:
        assert cap in caps, (cap, caps)
    typ, data = c.login(user, PASSWORD)
    assert typ == "OK"
    # RFC 3501 7.2.1: the post-login capabilities may come in the tagged OK.
    assert data[0].startswith(b"[CAPABILITY "), data
    assert b"AUTH=PLAIN" not in data[0] and b"IMAP4rev1" in data[0]
    assert c.noop()[0] == "OK"
    assert c.logout()[0] == "BYE"


def test_imaps_capabilities_and_login(imapd, user):
    c = imaps(imapd)
    assert c.welcome.startswith(b"* OK "), c.welcome
    caps = caps_of(c)
    assert "AUTH=PLAIN" in caps and "SASL-IR" in caps
    assert "STARTTLS" not in caps and "LOGINDISABLED" not in caps
    assert c.login(user.upper(), PASSWORD)[0] == "OK"
    c.logout()


def test_imaplib_authenticate_plain(imapd, user):
    for connect in (imaps, starttls):
        c = connect(imapd)
        typ, _ = c.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0"
                                + PASSWORD.encode())
        assert typ == "OK"
        assert c.select("INBOX")[0] == "OK"
        c.logout()


def test_authenticate_plain_sasl_ir_continuation_and_cancel(imapd, user):
    r = Raw(imapd)
    # SASL-IR (RFC 4959): the initial response on the command line.
    resp = r.cmd("AUTHENTICATE PLAIN " + plain_b64(user))
    assert resp.ok and not resp.conts, resp
    assert r.cmd("SELECT INBOX").ok
    r.close()

    r = Raw(imapd)
    t = r.tag()
    r.send("%s AUTHENTICATE PLAIN\r\n" % t)
    assert r.line().startswith(b"+")
    r.send("*\r\n")      # the client cancels (RFC 3501 6.2.2)
    assert r.response(t).status == "BAD"
    t = r.tag()
    r.send("%s AUTHENTICATE PLAIN\r\n" % t)
    assert r.line().startswith(b"+")
    r.send(plain_b64(user) + "\r\n")
    assert r.response(t).ok
    r.close()

    r = Raw(imapd)
    # An empty initial response ("=") is an empty string, not a missing one.
    resp = r.cmd("AUTHENTICATE PLAIN =")
    assert resp.status in ("NO", "BAD"), resp
    # An authorization identity other than the user is refused.
    resp = r.cmd("AUTHENTICATE PLAIN " + plain_b64(user, authzid="postmaster@example.test"))
    assert resp.status == "NO", resp
    resp = r.cmd("AUTHENTICATE CRAM-MD5")
    assert resp.status in ("NO", "BAD"), resp
    r.close()


def test_login_with_quoted_and_literal_arguments(imapd, user):
    r = Raw(imapd)
    t = r.tag()
    r.send("%s LOGIN {%d}\r\n" % (t, len(user)))
    assert r.line().startswith(b"+")
    r.send('%s "%s"\r\n' % (user, PASSWORD))
    resp = r.response(t)
    assert resp.ok, resp
    assert code(resp.tagged) == "CAPABILITY"
    r.close()

    r = Raw(imapd)
    # LITERAL+ (RFC 7888): no continuation for {n+}.
    resp = r.cmd("LOGIN {%d+}\r\n%s {%d+}\r\n%s" % (len(user), user, len(PASSWORD), PASSWORD))
    assert resp.ok and not resp.conts, resp
    r.close()


def test_already_authenticated_commands_refused(raw):
    assert raw.cmd('LOGIN "a@example.test" "x"').status == "BAD"
    assert raw.cmd("AUTHENTICATE PLAIN AAAA").status == "BAD"
    assert raw.cmd("STARTTLS").status == "BAD"


# --------------------------------------------------------------------------
# SELECT and EXAMINE

def test_select_and_examine_responses(imapd, user):
    for i in range(2):
        deliver(imapd, user, helpers.unique("sel%d" % i))
    a = Raw(imapd)
    a.login(user)
    r = a.select("INBOX")
    assert code(r.tagged) == "READ-WRITE", r
    assert number(r.untagged, "EXISTS") == 2
    assert number(r.untagged, "RECENT") == 2
    flags = r.find("FLAGS")
    assert flags and all(f in flags[0] for f in
                         (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft"))
    perm = resp_code_value(r.untagged, "PERMANENTFLAGS")
    assert perm is not None and "\\*" in perm and "\\Seen" in perm, r
    uidvalidity = int(resp_code_value(r.untagged, "UIDVALIDITY"))
    assert uidvalidity > 0
    assert int(resp_code_value(r.untagged, "UIDNEXT")) == 3
    assert resp_code_value(r.untagged, "UNSEEN") == "1"

    # \Recent belongs to the first session: another sees none recent.
    b = Raw(imapd)
    b.login(user)
    r = b.cmd("EXAMINE INBOX")
    assert r.ok and code(r.tagged) == "READ-ONLY", r
    assert number(r.untagged, "EXISTS") == 2 and number(r.untagged, "RECENT") == 0
    assert resp_code_value(r.untagged, "PERMANENTFLAGS") in ("()", None)
    assert int(resp_code_value(r.untagged, "UIDVALIDITY")) == uidvalidity
    # Read-only: no flag changes, and reading the text does not set \Seen.
    assert b.cmd("STORE 1 +FLAGS (\\Flagged)").status == "NO"
    r = b.cmd("FETCH 1 (BODY[] FLAGS)")
    assert r.ok and "\\Seen" not in flags_of(r.find("1 FETCH")[0])
    assert b.cmd("EXPUNGE").status == "NO"
    r = b.cmd("FETCH 1 FLAGS")
    assert "\\Seen" not in flags_of(r.find("1 FETCH")[0])
    a.close()
    b.close()


def test_select_recent_claimed_once_and_reselect(imapd, user):
    deliver(imapd, user, helpers.unique("rec"))
    r = Raw(imapd)
    r.login(user)
    assert number(r.select().untagged, "RECENT") == 1
    # Selecting again in the same session: the messages were claimed by
    # the earlier selection, so they are no longer new for anyone.
    res = r.select()
    assert number(res.untagged, "EXISTS") == 1
    r.close()
    r = Raw(imapd)
    r.login(user)
    assert number(r.select().untagged, "RECENT") == 0
    r.close()


def test_select_missing_and_noselect(raw):
    r = raw.cmd("SELECT NoSuchBox")
    assert r.status == "NO" and code(r.tagged) == "NONEXISTENT", r
    # A failed SELECT leaves no mailbox selected (RFC 3501 6.3.1).
    assert raw.cmd("FETCH 1 FLAGS").status == "BAD"
    assert raw.cmd("EXAMINE NoSuchBox").status == "NO"
    assert raw.cmd("STATUS NoSuchBox (MESSAGES)").status == "NO"


# --------------------------------------------------------------------------
# Mailboxes: LIST, CREATE, DELETE, RENAME, SUBSCRIBE, STATUS

def test_special_use_folders_created_and_listed(raw):
    r = raw.cmd('LIST "" "*"')
    assert r.ok
    boxes = list_names(r.untagged)
    assert "INBOX" in boxes
    for name, attr in SPECIAL_USE.items():
        assert name in boxes, boxes
        assert attr in boxes[name], (name, boxes[name])
        assert "\\hasnochildren" in boxes[name]
    assert "\\hasnochildren" in boxes["INBOX"]
    # Delimiter is '.'
    assert all(b'"."' in l for l in r.find("LIST")), r
    r = raw.cmd('LSUB "" "*"')
    subs = list_names(r.untagged)
    for name in list(SPECIAL_USE) + ["INBOX"]:
        assert name in subs, subs


def test_list_patterns_and_children(raw):
    for name in ("Work", "Work.Reports", "Work.Reports.2024", "Play"):
        assert raw.cmd("CREATE " + name).ok, name
    top = list_names(raw.cmd('LIST "" "%"').untagged)
    assert {"INBOX", "Work", "Play"} <= set(top)
    assert not any("." in n for n in top), top
    assert "\\haschildren" in top["Work"] and "\\hasnochildren" in top["Play"]
    every = list_names(raw.cmd('LIST "" "*"').untagged)
    assert {"Work.Reports", "Work.Reports.2024"} <= set(every)
    assert "\\haschildren" in every["Work.Reports"]
    assert "\\hasnochildren" in every["Work.Reports.2024"]
    assert set(list_names(raw.cmd('LIST "" "Work.%"').untagged)) == {"Work.Reports"}
    assert set(list_names(raw.cmd('LIST "Work." "%"').untagged)) == {"Work.Reports"}
    assert set(list_names(raw.cmd('LIST "" "Work*"').untagged)) == {
        "Work", "Work.Reports", "Work.Reports.2024"}
    assert set(list_names(raw.cmd('LIST "" "*.2024"').untagged)) == {"Work.Reports.2024"}
    assert set(list_names(raw.cmd('LIST "" "inbox"').untagged)) == {"INBOX"}
    assert list_names(raw.cmd('LIST "" "NoSuch*"').untagged) == {}
    # The empty pattern asks for the delimiter (RFC 3501 6.3.8).
    r = raw.cmd('LIST "" ""')
    assert r.ok and len(r.untagged) == 1, r
    assert re.match(rb'^\* LIST \(\\Noselect\) "\." ""$', r.untagged[0], re.I), r
    # A child created without its parent: the parent shows with children.
    assert raw.cmd("CREATE Lone.Child").ok
    top = list_names(raw.cmd('LIST "" "%"').untagged)
    assert "Lone" in top and "\\haschildren" in top["Lone"], top


def test_create_delete_rename(raw, imapd, user):
    assert raw.cmd("CREATE Projects").ok
    r = raw.cmd("CREATE Projects")
    assert r.status == "NO" and code(r.tagged) == "ALREADYEXISTS", r
    r = raw.cmd("CREATE INBOX")
    assert r.status == "NO", r
    # A trailing delimiter is dropped (RFC 3501 6.3.3).
    assert raw.cmd("CREATE Clients.").ok
    assert "Clients" in list_names(raw.cmd('LIST "" "Clients*"').untagged)
    assert raw.cmd("CREATE Projects.Alpha").ok
    r = raw
    assert r.append("Projects.Alpha", simple_message("alpha")).ok
    before = status_items(r.cmd("STATUS Projects.Alpha (MESSAGES UIDVALIDITY UIDNEXT)")
                          .find("STATUS")[0])
    assert before["MESSAGES"] == 1
    res = r.cmd("RENAME Projects Archive")
    assert res.status == "NO" and code(res.tagged) == "ALREADYEXISTS", res
    res = r.cmd("RENAME NoSuch Other")
    assert res.status == "NO" and code(res.tagged) == "NONEXISTENT", res
    assert r.cmd("RENAME Projects Done").ok
    boxes = list_names(r.cmd('LIST "" "*"').untagged)
    assert "Done" in boxes and "Done.Alpha" in boxes
    assert "Projects" not in boxes and "Projects.Alpha" not in boxes
    after = status_items(r.cmd("STATUS Done.Alpha (MESSAGES UIDVALIDITY UIDNEXT)")
                         .find("STATUS")[0])
    assert after == before
    assert len(imapd.messages(user, "Done.Alpha")) == 1

    res = r.cmd("DELETE NoSuch")
    assert res.status == "NO" and code(res.tagged) == "NONEXISTENT", res
    assert r.cmd("DELETE INBOX").status == "NO"
    assert r.cmd("DELETE Done.Alpha").ok
    assert "Done.Alpha" not in list_names(r.cmd('LIST "" "*"').untagged)
    assert r.cmd("SELECT Done.Alpha").status == "NO"
    # Recreated: a new UIDVALIDITY (RFC 3501 2.3.1.1).
    assert r.cmd("CREATE Done.Alpha").ok
    again = status_items(r.cmd("STATUS Done.Alpha (MESSAGES UIDVALIDITY)").find("STATUS")[0])
    assert again["MESSAGES"] == 0 and again["UIDVALIDITY"] != before["UIDVALIDITY"]


def test_delete_parent_keeps_children(raw):
    assert raw.cmd("CREATE Parent.Kid").ok
    raw.cmd("CREATE Parent")        # may exist already as the superior name
    assert raw.cmd("DELETE Parent").ok
    boxes = list_names(raw.cmd('LIST "" "*"').untagged)
    assert "Parent.Kid" in boxes
    assert raw.cmd("SELECT Parent.Kid").ok


def test_rename_inbox_moves_messages(imapd, user):
    for i in range(2):
        deliver(imapd, user, helpers.unique("ren%d" % i))
    r = Raw(imapd)
    r.login(user)
    old = status_items(r.cmd("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)").find("STATUS")[0])
    assert old["MESSAGES"] == 2
    assert r.cmd("RENAME INBOX OldMail").ok
    moved = status_items(r.cmd("STATUS OldMail (MESSAGES)").find("STATUS")[0])
    assert moved["MESSAGES"] == 2
    inbox = status_items(r.cmd("STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY)")
                         .find("STATUS")[0])
    # INBOX stays, empty; its UIDs are not reused.
    assert inbox["MESSAGES"] == 0
    assert inbox["UIDVALIDITY"] != old["UIDVALIDITY"] or inbox["UIDNEXT"] >= old["UIDNEXT"]
    assert "INBOX" in list_names(r.cmd('LIST "" "*"').untagged)
    assert number(r.select("INBOX").untagged, "EXISTS") == 0
    assert imapd.messages(user) == []
    assert len(imapd.messages(user, "OldMail")) == 2
    r.close()


def test_subscribe_unsubscribe_lsub(raw):
    assert raw.cmd("CREATE News").ok
    assert raw.cmd("CREATE News.Tech").ok
    assert raw.cmd("SUBSCRIBE News.Tech").ok
    assert raw.cmd("SUBSCRIBE News.Tech").ok   # twice is fine
    subs = list_names(raw.cmd('LSUB "" "News*"').untagged)
    assert set(subs) == {"News.Tech"}, subs
    subs = list_names(raw.cmd('LSUB "" "News.%"').untagged)
    assert set(subs) == {"News.Tech"}
    assert raw.cmd("UNSUBSCRIBE News.Tech").ok
    assert list_names(raw.cmd('LSUB "" "News*"').untagged) == {}
    assert raw.cmd("UNSUBSCRIBE Trash").ok
    subs = list_names(raw.cmd('LSUB "" "*"').untagged)
    assert "Trash" not in subs and "Sent" in subs


def test_modified_utf7_names(raw, imapd, user):
    name = "Entw&APw-rfe"        # "Entwürfe"
    assert raw.cmd('CREATE "%s"' % name).ok
    assert raw.cmd('CREATE "%s.&ZeVnLIqe-"' % name).ok    # "Entwürfe.日本語"
    boxes = list_names(raw.cmd('LIST "" "Entw*"').untagged)
    assert set(boxes) == {name, name + ".&ZeVnLIqe-"}, boxes
    assert "\\haschildren" in boxes[name]
    assert raw.cmd('SELECT "%s"' % name).ok
    assert raw.append(name, simple_message("umlaut")).ok
    st = status_items(raw.cmd('STATUS "%s" (MESSAGES)' % name).find("STATUS")[0])
    assert st["MESSAGES"] == 1
    # Invalid modified UTF-7: unterminated shift, "&" not written as "&-",
    # printable ASCII encoded in base64, raw 8-bit.
    for bad in (b'"Bad&Jjo"', b'"&AGE-"', b'"Caf\xc3\xa9"', b'"a&-&ZeVnLIqe"', b'"&ZeV-"'):
        r = raw.cmd(b"CREATE " + bad)
        assert r.status in ("NO", "BAD"), (bad, r)
    # "&-" is a literal ampersand.
    assert raw.cmd('CREATE "R&-D"').ok
    assert "R&-D" in list_names(raw.cmd('LIST "" "R*"').untagged)


def test_status(imapd, user):
    for i in range(3):
        deliver(imapd, user, helpers.unique("st%d" % i))
    r = Raw(imapd)
    r.login(user)
    res = r.cmd("STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
    assert res.ok
    st = status_items(res.find("STATUS")[0])
    assert st["MESSAGES"] == 3 and st["RECENT"] == 3 and st["UNSEEN"] == 3
    assert st["UIDNEXT"] == 4 and st["UIDVALIDITY"] > 0
    # STATUS does not claim \Recent; SELECT then does.
    sel = r.select()
    assert number(sel.untagged, "RECENT") == 3
    assert r.cmd("STORE 1 +FLAGS (\\Seen)").ok
    st = status_items(r.cmd("STATUS Sent (MESSAGES UNSEEN)").find("STATUS")[0])
    assert st == {"MESSAGES": 0, "UNSEEN": 0}
    r2 = Raw(imapd)
    r2.login(user)
    st = status_items(r2.cmd("STATUS INBOX (UNSEEN RECENT)").find("STATUS")[0])
    assert st == {"UNSEEN": 2, "RECENT": 0}
    assert r2.cmd("STATUS INBOX (BOGUS)").status == "BAD"
    r.close()
    r2.close()


# --------------------------------------------------------------------------
# APPEND

def test_append_flags_internaldate_appenduid(raw, imapd, user):
    msg = simple_message(helpers.unique("app"), body=b"appended\r\n")
    date = "05-Feb-2024 10:11:12 +0100"
    r = raw.append("INBOX", msg, flags="\\Seen \\Flagged $Label1", date=date)
    assert r.ok and code(r.tagged) == "APPENDUID", r
    v, uid = (int(x) for x in re.search(rb"\[APPENDUID (\d+) (\d+)\]", r.tagged).groups())
    assert r.conts, "a synchronizing literal gets a continuation"
    sel = raw.select()
    assert int(resp_code_value(sel.untagged, "UIDVALIDITY")) == v
    assert b"$Label1" in sel.find("FLAGS")[0]
    res = raw.cmd("UID FETCH %d (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])" % uid)
    line = res.find("1 FETCH")[0]
    assert flags_of(line) >= {"\\Seen", "\\Flagged", "$Label1"}
    assert internaldate_epoch(fetch_item(line, "INTERNALDATE")) == internaldate_epoch(date)
    assert int(fetch_item(line, "RFC822.SIZE")) == len(msg)
    assert fetch_item(line, "BODY[]") == msg
    # Without flags and date: \Recent for the selecting session? It arrived
    # while selected, so it is ours; internal date is now.
    msg2 = simple_message(helpers.unique("app2"))
    before = time.time()
    r = raw.append("INBOX", msg2)
    assert r.ok
    assert number(r.untagged, "EXISTS") == 2, r
    uid2 = int(re.search(rb"\[APPENDUID \d+ (\d+)\]", r.tagged).group(1))
    assert uid2 > uid
    line = raw.cmd("UID FETCH %d (FLAGS INTERNALDATE)" % uid2).find("2 FETCH")[0]
    assert abs(internaldate_epoch(fetch_item(line, "INTERNALDATE")) - before) < 120
    assert "\\Seen" not in flags_of(line)
    # The flags are in the Maildir file name too.
    names = [p.rsplit("/", 1)[1] for p in imapd.messages(user)]
    assert any(n.endswith(":2,FS") for n in names), names


def test_append_errors(raw):
    r = raw.append("NoSuchFolder", simple_message("x"))
    assert r.status == "NO" and code(r.tagged) == "TRYCREATE", r
    r = raw.append("INBOX", simple_message("x"), date="31-Feb-2024 99:00:00 +0000")
    assert r.status == "BAD", r
    r = raw.append("INBOX", b"")
    assert r.status in ("BAD", "NO"), r


def test_literal_plus_append_without_continuation(raw):
    msg = simple_message(helpers.unique("lplus"))
    t = raw.tag()
    raw.send(("%s APPEND INBOX (\\Draft) {%d+}\r\n" % (t, len(msg))).encode() + msg + b"\r\n"
             + b"t99 NOOP\r\n")
    r = raw.response(t)
    assert r.ok and not r.conts, r
    assert code(r.tagged) == "APPENDUID"
    assert raw.response("t99").ok
    raw.select()
    r = raw.cmd("FETCH 1 (FLAGS BODY.PEEK[])")
    assert fetch_item(r.find("1 FETCH")[0], "BODY[]") == msg
    assert "\\Draft" in flags_of(r.find("1 FETCH")[0])


def test_append_in_selected_state_of_other_mailbox(raw):
    raw.select("INBOX")
    r = raw.append("Drafts", simple_message("draft"), flags="\\Draft")
    assert r.ok and number(r.untagged, "EXISTS") is None, r
    st = status_items(raw.cmd("STATUS Drafts (MESSAGES)").find("STATUS")[0])
    assert st["MESSAGES"] == 1


# --------------------------------------------------------------------------
# CHECK, CLOSE, UNSELECT, EXPUNGE

def _append_n(r, n, flags=""):
    uids = []
    for i in range(n):
        res = r.append("INBOX", simple_message(helpers.unique("m%d" % i)), flags=flags)
        assert res.ok, res
        uids.append(int(re.search(rb"\[APPENDUID \d+ (\d+)\]", res.tagged).group(1)))
    return uids


def test_check_close_unselect_expunge(raw, imapd, user):
    _append_n(raw, 4)
    raw.select()
    assert raw.cmd("CHECK").ok
    assert raw.cmd("STORE 2,4 +FLAGS.SILENT (\\Deleted)").ok
    # UNSELECT leaves \Deleted messages alone.
    r = raw.cmd("UNSELECT")
    assert r.ok and not any(b"EXPUNGE" in l for l in r.untagged), r
    assert raw.cmd("FETCH 1 FLAGS").status == "BAD"   # nothing selected now
    assert len(imapd.messages(user)) == 4
    # CLOSE expunges them silently.
    raw.select()
    r = raw.cmd("CLOSE")
    assert r.ok and not any(b"EXPUNGE" in l for l in r.untagged), r
    assert len(imapd.messages(user)) == 2
    assert raw.cmd("CLOSE").status == "BAD"
    # EXPUNGE reports each message, numbers counting down as they go.
    _append_n(raw, 3)
    sel = raw.select()
    assert number(sel.untagged, "EXISTS") == 5
    assert raw.cmd("STORE 1,3,5 +FLAGS (\\Deleted)").ok
    r = raw.cmd("EXPUNGE")
    exp = [seq_of(l) for l in r.find("") if l.endswith(b"EXPUNGE")]
    assert sorted(exp) in ([1, 2, 3], [1, 3, 5]) and len(exp) == 3, r
    # Whatever the order, the numbers must be valid when each was sent.
    left = list(range(1, 6))
    for n in exp:
        assert 1 <= n <= len(left), (exp, left)
        del left[n - 1]
    assert left == [2, 4]
    assert number(raw.cmd("NOOP").untagged, "EXISTS") is None
    r = raw.cmd("FETCH 1:* FLAGS")
    assert len(r.find("")) == 2
    # EXAMINE: CLOSE expunges nothing.
    assert raw.cmd("STORE 1 +FLAGS (\\Deleted)").ok
    raw.cmd("EXAMINE INBOX")
    assert raw.cmd("CLOSE").ok
    assert len(imapd.messages(user)) == 2


def test_uid_expunge(raw, imapd, user):
    uids = _append_n(raw, 4, flags="\\Deleted")
    raw.select()
    r = raw.cmd("UID EXPUNGE %d:%d" % (uids[1], uids[2]))
    assert r.ok, r
    exp = [l for l in r.untagged if l.endswith(b"EXPUNGE")]
    assert len(exp) == 2, r
    r = raw.cmd("UID SEARCH ALL")
    assert search_result(r) == [uids[0], uids[3]]
    # Not \Deleted: not expunged even when named.
    assert raw.cmd("UID STORE %d -FLAGS (\\Deleted)" % uids[0]).ok
    r = raw.cmd("UID EXPUNGE %d,%d" % (uids[0], uids[3]))
    assert len([l for l in r.untagged if l.endswith(b"EXPUNGE")]) == 1
    assert search_result(raw.cmd("UID SEARCH ALL")) == [uids[0]]
    assert len(imapd.messages(user)) == 1


# --------------------------------------------------------------------------
# SEARCH

@pytest.fixture
def search_box(imapd, user):
    """Four messages with known headers, dates, sizes and flags. 1-3 were
    seen by an earlier session (not \\Recent), 4 is \\Recent for `r`."""
    m1 = simple_message("Quarterly report", body=b"The numbers are up.\r\n",
                        sender="alice@example.org", to="bob@example.org",
                        extra_headers=["Cc: Carol <carol@example.org>"],
                        date="Mon, 01 Jan 2024 12:00:00 +0000")
    m2 = simple_message("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
                        body="Schöne Grüße aus Köln.\r\n".encode(),
                        sender="bob@example.org", to="alice@example.org",
                        extra_headers=["Bcc: dave@example.org", "MIME-Version: 1.0",
                                       "Content-Type: text/plain; charset=utf-8",
                                       "Content-Transfer-Encoding: 8bit"],
                        date="Thu, 15 Feb 2024 12:00:00 +0000")
    m3 = simple_message("Lunch", body=b"padding line of text\r\n" * 250,
                        sender="carol@example.org", to="bob@example.org",
                        extra_headers=["X-Custom: magic-value"],
                        date="Fri, 01 Mar 2024 12:00:00 +0000")
    m4 = simple_message("Re: Lunch", body=b"Sure.\r\n", sender="dave@example.org",
                        to="carol@example.org", date="Sun, 10 Mar 2024 12:00:00 +0000")
    first = Raw(imapd)
    first.login(user)
    for msg, flags, date in ((m1, "\\Seen \\Answered", "05-Jan-2024 12:00:00 +0000"),
                             (m2, "\\Flagged $Important", "15-Feb-2024 12:00:00 +0000"),
                             (m3, "\\Deleted \\Draft", "01-Mar-2024 12:00:00 +0000")):
        assert first.append("INBOX", msg, flags=flags, date=date).ok
    first.select()
    first.cmd("LOGOUT")
    first.close()
    r = Raw(imapd)
    r.login(user)
    assert r.append("INBOX", m4, date="10-Mar-2024 12:00:00 +0000").ok
    sel = r.select()
    assert number(sel.untagged, "EXISTS") == 4 and number(sel.untagged, "RECENT") == 1
    r.sizes = [len(m) for m in (m1, m2, m3, m4)]
    yield r
    r.close()


SEARCHES = [
    ("ALL", [1, 2, 3, 4]),
    ("ANSWERED", [1]), ("UNANSWERED", [2, 3, 4]),
    ("SEEN", [1]), ("UNSEEN", [2, 3, 4]),
    ("FLAGGED", [2]), ("UNFLAGGED", [1, 3, 4]),
    ("DELETED", [3]), ("UNDELETED", [1, 2, 4]),
    ("DRAFT", [3]), ("UNDRAFT", [1, 2, 4]),
    ("KEYWORD $Important", [2]), ("UNKEYWORD $Important", [1, 3, 4]),
    ("KEYWORD $Nothing", []),
    ("RECENT", [4]), ("NEW", [4]), ("OLD", [1, 2, 3]),
    ("FROM alice", [1]), ('FROM "DAVE@example"', [4]), ("FROM nobody", []),
    ("TO bob", [1, 3]), ("CC carol", [1]), ("BCC dave", [2]),
    ("SUBJECT lunch", [3, 4]), ('SUBJECT "re: lunch"', [4]), ("SUBJECT Quarterly", [1]),
    ("BODY numbers", [1]), ("BODY magic-value", []), ("TEXT magic-value", [3]),
    ("TEXT Quarterly", [1]),
    ("HEADER X-Custom magic", [3]), ('HEADER X-Custom ""', [3]), ('HEADER Bcc "dave"', [2]),
    ("LARGER 4000", [3]), ("SMALLER 1000", [1, 2, 4]),
    ("BEFORE 1-Feb-2024", [1]), ("ON 15-Feb-2024", [2]), ("SINCE 1-Mar-2024", [3, 4]),
    ("SINCE 2-Mar-2024", [4]), ("BEFORE 5-Jan-2024", []),
    ("SENTBEFORE 1-Feb-2024", [1]), ("SENTON 15-Feb-2024", [2]),
    ("SENTSINCE 1-Mar-2024", [3, 4]), ("SENTON 10-Mar-2024", [4]),
    ("NOT SEEN", [2, 3, 4]), ("OR FLAGGED DRAFT", [2, 3]),
    ("NOT (OR SEEN FLAGGED)", [3, 4]), ("(FROM carol SUBJECT lunch)", [3]),
    ("OR (SEEN ANSWERED) (DELETED DRAFT)", [1, 3]), ("NOT NOT SEEN", [1]),
    ("OR OR SEEN FLAGGED RECENT", [1, 2, 4]), ("UNSEEN UNDELETED", [2, 4]),
    ("2:3", [2, 3]), ("1,4", [1, 4]), ("3:*", [3, 4]), ("*", [4]), ("4:2", [2, 3, 4]),
    ("1:* NOT 2", [1, 3, 4]), ("OR 1 4 SUBJECT lunch", [4]),
    ("CHARSET US-ASCII SUBJECT Lunch", [3, 4]),
]


def test_search_keys(search_box):
    r = search_box
    failures = []
    for criteria, expected in SEARCHES:
        res = r.cmd("SEARCH " + criteria)
        if not res.ok:
            failures.append((criteria, res.tagged))
            continue
        got = search_result(res)
        if got != expected:
            failures.append((criteria, got, expected))
    assert not failures, failures


def test_search_sizes_are_rfc822_sizes(search_box):
    r = search_box
    s3 = r.sizes[2]
    assert search_result(r.cmd("SEARCH LARGER %d" % (s3 - 1))) == [3]
    assert search_result(r.cmd("SEARCH LARGER %d" % s3)) == []
    assert 3 not in search_result(r.cmd("SEARCH SMALLER %d" % s3))
    assert 3 in search_result(r.cmd("SEARCH SMALLER %d" % (s3 + 1)))


def test_uid_search_and_uid_key(search_box):
    r = search_box
    uids = search_result(r.cmd("UID SEARCH ALL"))
    assert len(uids) == 4 and uids == sorted(uids)
    assert search_result(r.cmd("UID SEARCH FLAGGED")) == [uids[1]]
    assert search_result(r.cmd("SEARCH UID %d:%d" % (uids[1], uids[2]))) == [2, 3]
    assert search_result(r.cmd("UID SEARCH UID %d,%d" % (uids[0], uids[3]))) == \
        [uids[0], uids[3]]
    assert search_result(r.cmd("UID SEARCH UID %d:*" % (uids[3] + 100))) == [uids[3]]
    assert search_result(r.cmd("SEARCH UID 99999")) == []


def test_search_charset_utf8_literals_and_encoded_words(search_box):
    r = search_box
    for key, word in (("SUBJECT", "Köln"), ("SUBJECT", "grüße"), ("BODY", "Schöne"),
                      ("TEXT", "KöLN")):
        data = word.encode()
        t = r.tag()
        r.send("%s SEARCH CHARSET UTF-8 %s {%d}\r\n" % (t, key, len(data)))
        assert r.line().startswith(b"+")
        r.send(data + b"\r\n")
        res = r.response(t)
        assert res.ok, (key, word, res)
        assert search_result(res) == [2], (key, word, res)
    # LITERAL+ form, and a quoted UTF-8 string (8-bit in a quoted string is
    # not allowed by RFC 3501: either refused or taken as the literal).
    data = "Grüße".encode()
    res = r.cmd(b"SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n" % len(data) + data)
    assert res.ok and search_result(res) == [2], res
    res = r.cmd("SEARCH CHARSET KOI8-NONSUCH SUBJECT x")
    assert res.status == "NO" and code(res.tagged) == "BADCHARSET", res
    assert r.cmd("SEARCH FROBNICATE").status == "BAD"
    assert r.cmd("SEARCH BEFORE 2024-01-01").status == "BAD"
    assert r.cmd("SEARCH (SEEN").status == "BAD"


# --------------------------------------------------------------------------
# FETCH

def _part(msg, boundary, index):
    """The header and body of the index-th (1-based) part of a multipart."""
    delim = b"\r\n--" + boundary + b"\r\n"
    body = msg.split(b"\r\n\r\n", 1)[1]
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary)
    part = chunks[index][2:]   # drop the CRLF after the delimiter line
    head, text = part.split(b"\r\n\r\n", 1)
    assert delim
    return head + b"\r\n\r\n", text


def test_fetch_items_of_a_multipart(raw, user):
    subject = helpers.unique("fetch")
    msg = multipart_message(user, subject)
    r = raw.append("INBOX", msg, date="07-Mar-2024 08:09:10 +0000")
    assert r.ok, r
    raw.select()
    res = raw.cmd("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE UID)")
    line = res.find("1 FETCH")[0]
    assert int(fetch_item(line, "RFC822.SIZE")) == len(msg)
    assert internaldate_epoch(fetch_item(line, "INTERNALDATE")) == \
        internaldate_epoch("07-Mar-2024 08:09:10 +0000")
    env = fetch_item(line, "ENVELOPE")
    local, domain = user.split("@")
    alice = b'(("Alice Example" NIL "alice" "example.org"))'
    expected = (b'("Thu, 01 Jan 2026 00:00:00 +0000" "' + subject.encode() + b'" '
                + alice + b" " + alice + b" " + alice + b' ((NIL NIL "' + local.encode()
                + b'" "' + domain.encode() + b'")) (("Carol" NIL "carol" "example.org")) '
                b'NIL NIL "<' + subject.encode() + b'@client.example.org>")')
    assert env == expected, env

    res = raw.cmd("FETCH 1 BODYSTRUCTURE")
    bs = fetch_item(res.find("1 FETCH")[0], "BODYSTRUCTURE")
    head1, text1 = _part(msg, b"=-=b0undary=-=", 1)
    head2, text2 = _part(msg, b"=-=b0undary=-=", 2)
    rx = (rb'^\(\("text" "plain" \("charset" "us-ascii"\) NIL NIL "7bit" %d %d .*\)'
          rb'\("application" "pdf" NIL NIL NIL "base64" %d .*"attachment" '
          rb'\("filename" "report.pdf"\).*\) "mixed" \("boundary" "=-=b0undary=-="\)'
          % (len(text1), text1.count(b"\r\n"), len(text2)))
    assert re.match(rx, bs, re.I | re.S), bs
    res = raw.cmd("FETCH 1 BODY")
    body = fetch_item(res.find("1 FETCH")[0], "BODY")
    assert re.match(rb'^\(\("text" "plain" .*\) "mixed"\)$', body, re.I | re.S), body

    res = raw.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1.MIME] "
                  "BODY.PEEK[TEXT]<0.10> RFC822.HEADER BODY.PEEK[1] BODY.PEEK[2.MIME] "
                  "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT DATE)])")
    line = res.find("1 FETCH")[0]
    head, text = msg.split(b"\r\n\r\n", 1)
    assert fetch_item(line, "BODY[HEADER.FIELDS (SUBJECT)]") == \
        b"Subject: " + subject.encode() + b"\r\n\r\n"
    assert fetch_item(line, "BODY[1.MIME]") == head1
    assert fetch_item(line, "BODY[2.MIME]") == head2
    assert fetch_item(line, "BODY[1]") == text1
    assert fetch_item(line, "BODY[TEXT]<0>") == text[:10]
    assert fetch_item(line, "RFC822.HEADER") == head + b"\r\n\r\n"
    notsub = fetch_item(line, "BODY[HEADER.FIELDS.NOT (SUBJECT DATE)]")
    assert b"Subject:" not in notsub and b"Date:" not in notsub and b"From:" in notsub
    assert "\\Seen" not in flags_of(raw.cmd("FETCH 1 FLAGS").find("1 FETCH")[0])

    res = raw.cmd("FETCH 1 (BODY[]<5.20> RFC822.TEXT)")
    line = res.find("1 FETCH")[0]
    assert fetch_item(line, "BODY[]<5>") == msg[5:25]
    assert fetch_item(line, "RFC822.TEXT") == text
    # BODY[] (not PEEK) sets \Seen, and the response says so.
    assert "\\Seen" in flags_of(line) or "\\Seen" in flags_of(
        raw.cmd("FETCH 1 FLAGS").find("1 FETCH")[0])
    res = raw.cmd("FETCH 1 (RFC822 BODY[2])")
    line = res.find("1 FETCH")[0]
    assert fetch_item(line, "RFC822") == msg
    assert fetch_item(line, "BODY[2]") == text2
    # Macros.
    line = raw.cmd("FETCH 1 FAST").find("1 FETCH")[0]
    assert fetch_item(line, "RFC822.SIZE") and fetch_item(line, "INTERNALDATE")
    line = raw.cmd("FETCH 1 ALL").find("1 FETCH")[0]
    assert fetch_item(line, "ENVELOPE")
    line = raw.cmd("FETCH 1 FULL").find("1 FETCH")[0]
    assert fetch_item(line, "BODY")
    # A partial beyond the end is empty; a missing part is empty.
    line = raw.cmd("FETCH 1 BODY.PEEK[TEXT]<100000.10>").find("1 FETCH")[0]
    assert fetch_item(line, "BODY[TEXT]<100000>") in (b"", None)
    # A part that does not exist: RFC 3501 leaves it open (NIL or NO).
    assert raw.cmd("FETCH 1 BODY.PEEK[9]").status in ("OK", "NO")
    assert raw.cmd("FETCH 2 FLAGS").status in ("BAD", "NO")
    assert raw.cmd("FETCH 1 (FROB)").status == "BAD"
    assert raw.cmd("FETCH 0 FLAGS").status == "BAD"


INNER_HEAD = (b"From: Bob <bob@example.org>\r\nSubject: inner\r\nMIME-Version: 1.0\r\n"
              b"Content-Type: multipart/alternative; boundary=\"in\"\r\n\r\n")
INNER_PLAIN_MIME = b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
INNER_HTML_MIME = b"Content-Type: text/html\r\n\r\n"
INNER_BODY = (b"--in\r\n" + INNER_PLAIN_MIME + b"inner plain\r\nsecond line\r\n--in\r\n"
              + INNER_HTML_MIME + b"<p>inner html</p>\r\n--in--\r\n")
NESTED = (b"From: <alice@example.org>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=\"out\"\r\n\r\n"
          b"preamble\r\n--out\r\nContent-Type: text/plain\r\n\r\nouter text\r\n"
          b"--out\r\nContent-Type: message/rfc822\r\n\r\n" + INNER_HEAD + INNER_BODY
          + b"\r\n--out--\r\nepilogue\r\n")


def test_fetch_nested_parts_of_an_attached_message(raw):
    assert raw.append("INBOX", NESTED).ok
    raw.select()
    res = raw.cmd("FETCH 1 (BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] "
                  "BODY.PEEK[2.2.MIME] BODY.PEEK[2.2] BODY.PEEK[1] BODY.PEEK[2] "
                  "BODY.PEEK[2.1]<6.5> BODY.PEEK[2.HEADER.FIELDS (SUBJECT)])")
    line = res.find("1 FETCH")[0]
    assert fetch_item(line, "BODY[1]") == b"outer text"
    assert fetch_item(line, "BODY[2]") == INNER_HEAD + INNER_BODY
    assert fetch_item(line, "BODY[2.HEADER]") == INNER_HEAD
    assert fetch_item(line, "BODY[2.TEXT]") == INNER_BODY
    assert fetch_item(line, "BODY[2.1]") == b"inner plain\r\nsecond line"
    assert fetch_item(line, "BODY[2.1]<6>") == b"plain"
    assert fetch_item(line, "BODY[2.2.MIME]") == INNER_HTML_MIME
    assert fetch_item(line, "BODY[2.2]") == b"<p>inner html</p>"
    assert fetch_item(line, "BODY[2.HEADER.FIELDS (SUBJECT)]") == b"Subject: inner\r\n\r\n"
    bs = fetch_item(raw.cmd("FETCH 1 BODYSTRUCTURE").find("1 FETCH")[0], "BODYSTRUCTURE")
    whole = len(INNER_HEAD + INNER_BODY)
    lines = (INNER_HEAD + INNER_BODY).count(b"\r\n")
    # RFC 3501 7.4.2: message/rfc822 has the envelope, the body structure and
    # the line count of the encapsulated message after the basic fields.
    rx = (rb'^\(\("text" "plain" \("charset" "us-ascii"\) NIL NIL "7bit" 10 1.*\)'
          rb'\("message" "rfc822" NIL NIL NIL "7bit" %d \(NIL "inner" .*\) '
          rb'\(\("text" "plain" \("charset" "utf-8"\) NIL NIL "7bit" 24 2.*\)'
          rb'\("text" "html" .*"7bit" 17 1.*\) "alternative".*\) %d.*\) "mixed"' % (whole, lines))
    assert re.match(rx, bs, re.I | re.S), bs


def test_fetch_smtp_delivered_size_matches_body(imapd, user):
    deliver(imapd, user, helpers.unique("size"), body=b"line\r\n" * 100)
    r = Raw(imapd)
    r.login(user)
    r.select()
    line = r.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[] UID)").find("1 FETCH")[0]
    whole = fetch_item(line, "BODY[]")
    assert int(fetch_item(line, "RFC822.SIZE")) == len(whole)
    assert whole.startswith(b"Return-Path: <sender@example.org>\r\n")
    files = imapd.messages(user)
    assert open(files[0], "rb").read() == whole
    r.close()


def test_imaplib_tour(imapd, user):
    """The usual client sequence through imaplib over STARTTLS."""
    deliver(imapd, user, helpers.unique("tour"))
    c = starttls(imapd)
    c.login(user, PASSWORD)
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, data = c.uid("SEARCH", None, "ALL")
    uid = data[0].split()[0]
    typ, data = c.uid("FETCH", uid, "(FLAGS BODY.PEEK[HEADER])")
    assert typ == "OK" and b"Subject: tour" in data[0][1]
    typ, data = c.uid("STORE", uid, "+FLAGS", "(\\Answered)")
    assert typ == "OK" and b"\\Answered" in data[0]
    typ, data = c.uid("COPY", uid, "Archive")
    assert typ == "OK" and c.untagged_responses.get("COPYUID")
    typ, data = c.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(time.time()),
                         simple_message("sent copy"))
    assert typ == "OK" and c.untagged_responses.get("APPENDUID")
    typ, data = c.list()
    assert typ == "OK" and len(data) >= 6
    typ, data = c.status("Archive", "(MESSAGES)")
    assert typ == "OK" and b"MESSAGES 1" in data[0]
    c.close()
    c.logout()


# --------------------------------------------------------------------------
# STORE, COPY, MOVE

def test_store_forms_and_keywords(raw, imapd, user):
    uids = _append_n(raw, 3)
    raw.select()
    r = raw.cmd("STORE 1 +FLAGS (\\Flagged \\Seen)")
    lines = r.find("1 FETCH")
    assert len(lines) == 1 and flags_of(lines[0]) >= {"\\Flagged", "\\Seen"}, r
    r = raw.cmd("STORE 1 -FLAGS (\\Seen)")
    assert "\\Seen" not in flags_of(r.find("1 FETCH")[0])
    r = raw.cmd("STORE 1:2 FLAGS (\\Answered $Work Junk)")
    assert len(r.find("")) >= 2
    for l in r.untagged:
        if b"FETCH" in l:
            f = flags_of(l) - {"\\Recent"}
            assert f == {"\\Answered", "$Work", "Junk"}, l
    r = raw.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert r.ok and not any(b"FETCH" in l for l in r.untagged), r
    r = raw.cmd("UID STORE %d +FLAGS ($Later)" % uids[2])
    line = r.find("3 FETCH")[0]
    assert int(fetch_item(line, "UID")) == uids[2]
    assert flags_of(line) >= {"\\Deleted", "$Later"}
    # Keywords are new flags in the mailbox's FLAGS once used.
    sel = raw.select()
    fl = sel.find("FLAGS")[0]
    assert b"$Work" in fl and b"$Later" in fl and b"Junk" in fl
    r = raw.cmd("FETCH 1:3 FLAGS")
    got = {seq_of(l): flags_of(l) - {"\\Recent"} for l in r.untagged if b"FETCH" in l}
    assert got == {1: {"\\Answered", "$Work", "Junk"}, 2: {"\\Answered", "$Work", "Junk"},
                   3: {"\\Deleted", "$Later"}}
    assert raw.cmd("SEARCH KEYWORD $work").ok
    assert search_result(raw.cmd("SEARCH KEYWORD $Later")) == [3]
    r = raw.cmd("STORE 1 -FLAGS ($Work)")
    assert "$Work" not in flags_of(r.find("1 FETCH")[0])
    # Maildir letters: Answered is R, Deleted is T.
    names = sorted(p.rsplit("/", 1)[1] for p in imapd.messages(user))
    assert sum(n.endswith(":2,R") for n in names) == 2, names
    assert sum(n.endswith(":2,T") for n in names) == 1, names
    for bad in ("STORE 1 FROB (\\Seen)", "STORE 1 +FLAGS", "STORE 9 +FLAGS (\\Seen)",
                "STORE 1 +FLAGS (\\Seen"):
        assert raw.cmd(bad).status in ("BAD", "NO"), bad


def test_copy_and_move_with_copyuid(raw, imapd, user):
    uids = _append_n(raw, 3, flags="\\Flagged $K")
    raw.select()
    dst = status_items(raw.cmd("STATUS Archive (UIDVALIDITY UIDNEXT)").find("STATUS")[0])
    r = raw.cmd("COPY 1:2 Archive")
    m = re.search(rb"\[COPYUID (\d+) ([\d:,]+) ([\d:,]+)\]", r.tagged)
    assert r.ok and m, r
    assert int(m.group(1)) == dst["UIDVALIDITY"]
    assert uid_set(m.group(2).decode()) == uids[:2]
    new = uid_set(m.group(3).decode())
    assert new == [dst["UIDNEXT"], dst["UIDNEXT"] + 1]
    assert len(imapd.messages(user)) == 3
    assert len(imapd.messages(user, "Archive")) == 2
    r = raw.cmd("COPY 1 NoSuchBox")
    assert r.status == "NO" and code(r.tagged) == "TRYCREATE", r
    # MOVE (RFC 6851): untagged COPYUID, then EXPUNGE.
    r = raw.cmd("UID MOVE %d Trash" % uids[1])
    assert r.ok, r
    okc = [l for l in r.untagged if l.startswith(b"* OK [COPYUID ")]
    assert len(okc) == 1, r
    assert re.search(rb"\[COPYUID \d+ %d \d+\]" % uids[1], okc[0]), okc
    exp = [l for l in r.untagged if l.endswith(b"EXPUNGE")]
    assert exp == [b"* 2 EXPUNGE"], r
    assert r.untagged.index(okc[0]) < r.untagged.index(exp[0])
    r = raw.cmd("MOVE 1:* Junk")
    assert r.ok and len([l for l in r.untagged if l.endswith(b"EXPUNGE")]) == 2, r
    assert imapd.messages(user) == []
    assert len(imapd.messages(user, "Junk")) == 2
    raw.select("Junk")
    r = raw.cmd("FETCH 1:* FLAGS")
    assert all(flags_of(l) >= {"\\Flagged", "$K"} for l in r.untagged), r
    assert raw.cmd("UID COPY 999999 Archive").ok    # UIDs that do not exist: nothing
    raw.cmd("EXAMINE Junk")
    assert raw.cmd("MOVE 1 INBOX").status == "NO"


# --------------------------------------------------------------------------
# NAMESPACE, ID, ENABLE, QUOTA

def test_namespace_id_enable(imapd, user):
    r = Raw(imapd)
    res = r.cmd('ID ("name" "pytest" "version" "1")')
    assert res.ok and len(res.find("ID (")) == 1, res
    assert b"posthorn" in res.find("ID (")[0]
    assert r.cmd("ID NIL").ok
    assert r.cmd("ENABLE CONDSTORE").status in ("BAD", "NO")   # not authenticated
    r.login(user)
    res = r.cmd("NAMESPACE")
    assert res.ok and res.find("NAMESPACE") == [b'* NAMESPACE (("" ".")) NIL NIL'], res
    res = r.cmd("ENABLE CONDSTORE UTF8=ACCEPT X-NOSUCH")
    assert res.ok, res
    enabled = res.find("ENABLED")
    assert len(enabled) == 1 and enabled[0].split()[2:] == [], res
    r.close()


def test_quota(imapd, user):
    rc, out, err = imapd.setup("quota", "set", user, "10M")
    assert rc == 0, (rc, out, err)
    deliver(imapd, user, helpers.unique("q"), body=b"x" * 5000 + b"\r\n")
    r = Raw(imapd)
    r.login(user)
    res = r.cmd("GETQUOTAROOT INBOX")
    assert res.ok, res
    assert len(res.find("QUOTAROOT")) == 1, res
    assert re.match(rb'^\* QUOTAROOT "?INBOX"? ""$', res.find("QUOTAROOT")[0]), res
    q = res.find("QUOTA ")
    m = re.match(rb'^\* QUOTA "" \(STORAGE (\d+) (\d+)\)$', q[0]) if q else None
    assert m, res
    assert int(m.group(2)) == 10240
    assert 5 <= int(m.group(1)) <= 10
    res = r.cmd('GETQUOTA ""')
    assert res.ok and res.find("QUOTA ")[0] == q[0], res
    assert r.cmd('GETQUOTA "other"').status == "NO"
    assert r.cmd('SETQUOTA "" (STORAGE 1)').status in ("NO", "BAD")
    res = r.cmd("GETQUOTAROOT Archive")
    assert res.ok and res.find("QUOTA ") == q, res
    r.close()
    rc, out, err = imapd.setup("quota", "del", user)
    assert rc == 0


# --------------------------------------------------------------------------
# Two sessions

def test_two_sessions_see_each_others_changes(imapd, user):
    a = Raw(imapd)
    a.login(user)
    _append_n(a, 3)
    a.select()
    b = Raw(imapd)
    b.login(user)
    b.select()

    assert a.cmd("STORE 2 +FLAGS (\\Seen)").ok
    r = b.cmd("NOOP")
    fetch = [l for l in r.untagged if b"FETCH" in l]
    assert len(fetch) == 1 and seq_of(fetch[0]) == 2 and "\\Seen" in flags_of(fetch[0]), r

    # Keyword changes (no file rename) reach the other session too.
    assert a.cmd("STORE 3 +FLAGS ($Star)").ok
    r = b.cmd("NOOP")
    fetch = [l for l in r.untagged if b"FETCH" in l]
    assert len(fetch) == 1 and "$Star" in flags_of(fetch[0]), r

    assert a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)").ok
    assert a.cmd("EXPUNGE").ok
    assert a.append("INBOX", simple_message(helpers.unique("new"))).ok
    r = b.cmd("NOOP")
    exp = [l for l in r.untagged if l.endswith(b"EXPUNGE")]
    assert exp == [b"* 1 EXPUNGE"], r
    # One expunged, one appended: 3 again, with every number valid in the
    # order the updates were sent ("* 1 EXPUNGE" then "* 3 EXISTS", or
    # "* 4 EXISTS" then "* 1 EXPUNGE").
    assert any(l.endswith(b"EXISTS") for l in r.untagged), r
    assert apply_updates(3, r.untagged) == 3
    assert search_result(b.cmd("SEARCH ALL")) == [1, 2, 3]
    a.close()
    b.close()


def test_no_expunge_during_fetch_store_search(imapd, user):
    """RFC 3501 7.4.1: no EXPUNGE response while answering FETCH, STORE or
    SEARCH; it waits for NOOP (or a UID command)."""
    a = Raw(imapd)
    a.login(user)
    _append_n(a, 3)
    a.select()
    b = Raw(imapd)
    b.login(user)
    b.select()
    assert a.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)").ok
    assert a.cmd("EXPUNGE").ok
    for cmd in ("FETCH 1:* (FLAGS)", "STORE 3 +FLAGS ($Seen2)", "SEARCH ALL"):
        r = b.cmd(cmd)
        assert not any(l.endswith(b"EXPUNGE") for l in r.untagged), (cmd, r)
        assert r.status in ("OK", "NO"), (cmd, r)
    # SEARCH still sees three sequence numbers (the client was not told).
    r = b.cmd("NOOP")
    assert [l for l in r.untagged if l.endswith(b"EXPUNGE")] == [b"* 1 EXPUNGE"], r
    assert search_result(b.cmd("SEARCH ALL")) == [1, 2]
    a.close()
    b.close()


# --------------------------------------------------------------------------
# IDLE

def _idle(r):
    t = r.tag()
    r.send("%s IDLE\r\n" % t)
    cont = r.line()
    assert cont.startswith(b"+"), cont
    return t


def test_idle_sees_smtp_delivery_append_and_flags(imapd, user):
    deliver(imapd, user, helpers.unique("idle0"))
    b = Raw(imapd)
    b.login(user)
    b.select()
    t = _idle(b)
    for i in range(2):
        msg = helpers.make_message(helpers.unique("idle"), to=user)
        with smtplib.SMTP("127.0.0.1", imapd.port, timeout=15) as s:
            s.sendmail("sender@example.org", [user], msg)
            delivered = time.monotonic()
        m = b.wait_for(rb"^\* (\d+) EXISTS$", timeout=5.0)
        elapsed = time.monotonic() - delivered
        assert m and int(m.group(1)) == 2 + i, b.seen
        assert elapsed < 1.5, "EXISTS came %.2fs after the delivery" % elapsed

    a = login(imapd, user, select="INBOX")
    a.append("INBOX", None, None, simple_message(helpers.unique("idleapp")))
    m = b.wait_for(rb"^\* (\d+) EXISTS$", timeout=2.0)
    assert m and int(m.group(1)) == 4, b.seen
    a.store("1", "+FLAGS", "(\\Flagged)")
    m = b.wait_for(rb"^\* 1 FETCH \(.*FLAGS \(([^)]*)\)", timeout=2.0)
    assert m and b"\\Flagged" in m.group(1), b.seen
    # EXPUNGE may be sent during IDLE.
    a.store("2", "+FLAGS", "(\\Deleted)")
    a.expunge()
    m = b.wait_for(rb"^\* (\d+) EXPUNGE$", timeout=2.0)
    assert m and int(m.group(1)) == 2, b.seen
    a.logout()

    b.send("DONE\r\n")
    r = b.response(t)
    assert r.ok, r
    assert b.cmd("NOOP").ok
    assert search_result(b.cmd("SEARCH ALL")) == [1, 2, 3]
    b.close()


def test_idle_in_authenticated_state_and_bad_continuation(imapd, user):
    r = Raw(imapd)
    r.login(user)
    t = _idle(r)
    r.send("DONE\r\n")
    assert r.response(t).ok
    r.select()
    t = _idle(r)
    r.send("NOOP\r\n")            # anything but DONE ends IDLE with BAD
    res = r.response(t)
    assert res.status == "BAD", res
    assert r.cmd("NOOP").ok
    r.close()


def test_pipelined_commands_answered_in_order(imapd, user):
    deliver(imapd, user, helpers.unique("pipe"))
    r = Raw(imapd)
    r.send('a1 LOGIN "%s" "%s"\r\na2 SELECT INBOX\r\na3 FETCH 1 (FLAGS)\r\n'
           'a4 STORE 1 +FLAGS (\\Seen)\r\na5 SEARCH SEEN\r\na6 NOOP\r\na7 LOGOUT\r\n'
           % (user, PASSWORD))
    for t in ("a1", "a2", "a3", "a4"):
        assert r.response(t).ok, t
    res = r.response("a5")
    assert search_result(res) == [1]
    assert r.response("a6").ok
    res = r.response("a7")
    assert res.ok and res.find("BYE"), res
    assert r.closed()
