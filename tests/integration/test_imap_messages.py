"""The IMAP message commands end to end: FETCH (every item kind, sections,
partials, implicit \\Seen), STORE (all forms, .SILENT, keywords), SEARCH,
their UID forms, COPY and MOVE with COPYUID, EXPUNGE and UID EXPUNGE,
CLOSE, APPEND with flags, date and APPENDUID, quotas, and what a second
session hears of one session's changes. Messages arrive over SMTP or
APPEND; every test uses its own account on one module daemon."""

import email
import imaplib
import re
import time

import pytest

import helpers
import imaptools
from imaptools import Raw, code, deliver, multipart_message, simple_message

PASSWORD = imaptools.PASSWORD


@pytest.fixture(scope="module")
def d(mod_daemons):
    return mod_daemons.make(helpers.imap_settings(), name="imapmsg")


@pytest.fixture
def user(d):
    return imaptools.add_user(d, prefix="m")


def raw(d, user, box="INBOX"):
    c = Raw(d)
    c.login(user)
    if box is not None:
        c.select(box)
    return c


def fetch_lines(r):
    return [l for l in r.untagged if re.match(rb"^\* \d+ FETCH ", l)]


def flags_of(line):
    m = re.search(rb"FLAGS \(([^)]*)\)", line)
    assert m, line
    return set(m.group(1).decode().split())


def literal_after(line, name):
    """The octets of the literal that follows `name` in a FETCH line."""
    i = line.find(name.encode() + b" {")
    assert i >= 0, (name, line[:300])
    m = re.match(rb"\{(\d+)\}\r\n", line[i + len(name) + 1:])
    start = i + len(name) + 1 + m.end()
    return line[start:start + int(m.group(1))]


def append_n(c, n, box="INBOX", subject="bulk"):
    """n small messages with LITERAL+, pipelined; returns their APPENDUIDs."""
    tags = []
    for i in range(n):
        t = c.tag()
        msg = simple_message("%s %d" % (subject, i))
        c.send(("%s APPEND %s {%d+}\r\n" % (t, box, len(msg))).encode() + msg + b"\r\n")
        tags.append(t)
    uids = []
    for t in tags:
        r = c.response(t)
        assert r.ok, r
        uids.append(int(re.search(rb"APPENDUID \d+ (\d+)", r.tagged).group(1)))
    return uids


# --------------------------------------------------------------------------
# FETCH

def test_fetch_every_item_of_a_multipart_message(d, user):
    msg = multipart_message(user, "multi1")
    deliver(d, user, None, raw=msg)
    c = raw(d, user)
    r = c.cmd("FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE)")
    assert r.ok, r
    [line] = fetch_lines(r)
    assert line.startswith(b"* 1 FETCH (")
    assert re.search(rb"UID \d+", line)
    assert flags_of(line) == {"\\Recent"}
    assert re.search(rb'INTERNALDATE "\d\d?-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"', line)
    size = int(re.search(rb"RFC822\.SIZE (\d+)", line).group(1))
    assert b'"multi1"' in line and b'("Alice Example" NIL "alice" "example.org")' in line
    assert b'"Carol" NIL "carol" "example.org"' in line
    assert re.search(rb'BODYSTRUCTURE \(\("text" "plain" \("charset" "us-ascii"\)', line, re.I)
    assert re.search(rb'"mixed" \("boundary" "=-=b0undary=-="\)', line, re.I)
    assert b'"attachment" ("filename" "report.pdf")' in line
    # BODY is the non-extensible form: no disposition in it.
    [body] = fetch_lines(c.cmd("FETCH 1 BODY"))
    assert b"attachment" not in body and body.lower().endswith(b'"mixed"))')

    r = c.cmd("FETCH 1 (BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] "
              "BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (Subject CC)] RFC822.HEADER)")
    assert r.ok, r
    [line] = fetch_lines(r)
    full = literal_after(line, "BODY[]")
    assert len(full) == size
    assert full.endswith(msg), "the stored message ends with what was sent"
    header = literal_after(line, "BODY[HEADER]")
    assert full.startswith(header) and header.endswith(b"\r\n\r\n")
    assert literal_after(line, "BODY[TEXT]") == full[len(header):]
    assert literal_after(line, "BODY[1]") == b"Hello, this is the text part.\r\n"
    mime2 = literal_after(line, "BODY[2.MIME]")
    assert b"Content-Type: application/pdf" in mime2 and mime2.endswith(b"\r\n\r\n")
    fields = literal_after(line, "BODY[HEADER.FIELDS (Subject CC)]")
    assert fields == b"Cc: Carol <carol@example.org>\r\nSubject: multi1\r\n\r\n"
    assert literal_after(line, "RFC822.HEADER") == header
    assert "\\Seen" not in flags_of(c.cmd("FETCH 1 FLAGS").untagged[0])
    c.close()


def test_fetch_partial_and_rfc822_text(d, user):
    body = b"0123456789abcdefghij\r\n"
    deliver(d, user, None, raw=simple_message("partial", body=body, to=user))
    c = raw(d, user)
    r = c.cmd("FETCH 1 (BODY.PEEK[TEXT]<0.10> BODY.PEEK[TEXT]<5.100> BODY.PEEK[]<100000.5>)")
    assert r.ok, r
    [line] = fetch_lines(r)
    assert literal_after(line, "BODY[TEXT]<0>") == b"0123456789"
    assert literal_after(line, "BODY[TEXT]<5>") == body[5:]
    assert re.search(rb'BODY\[\]<100000> (""|\{0\})', line)
    r = c.cmd("FETCH 1 RFC822.TEXT")
    [line] = fetch_lines(r)
    assert literal_after(line, "RFC822.TEXT") == body
    assert "\\Seen" in flags_of(line), "RFC822.TEXT sets \\Seen and reports FLAGS"
    c.close()


def test_body_sets_seen_peek_does_not(d, user):
    for i in range(2):
        deliver(d, user, None, raw=simple_message("seen%d" % i, to=user))
    c = raw(d, user)
    r = c.cmd("FETCH 1 BODY.PEEK[]")
    assert b"FLAGS" not in fetch_lines(r)[0]
    r = c.cmd("FETCH 2 BODY[HEADER]")
    [line] = fetch_lines(r)
    assert "\\Seen" in flags_of(line)
    r = c.cmd("FETCH 1:2 FLAGS")
    got = [flags_of(l) for l in fetch_lines(r)]
    assert "\\Seen" not in got[0] and "\\Seen" in got[1]
    # Not sent again as an unsolicited update after the next command.
    r = c.cmd("NOOP")
    assert not fetch_lines(r), r
    c.close()
    # EXAMINE never sets \Seen.
    c = Raw(d)
    c.login(user)
    assert c.cmd("EXAMINE INBOX").ok
    r = c.cmd("FETCH 1 BODY[]")
    assert r.ok and b"FLAGS" not in fetch_lines(r)[0], r
    r = c.cmd("FETCH 1 FLAGS")
    assert "\\Seen" not in flags_of(fetch_lines(r)[0])
    c.close()


def test_fetch_sets_and_uid_fetch(d, user):
    c = raw(d, user)
    uids = append_n(c, 5)
    r = c.cmd("NOOP")
    r = c.cmd("FETCH 2:3,5 UID")
    got = [(int(m.group(1)), int(m.group(2))) for m in
           (re.match(rb"\* (\d+) FETCH \(UID (\d+)\)", l) for l in fetch_lines(r))]
    assert got == [(2, uids[1]), (3, uids[2]), (5, uids[4])]
    r = c.cmd("FETCH * FLAGS")
    assert fetch_lines(r)[0].startswith(b"* 5 FETCH")
    r = c.cmd("FETCH 6 FLAGS")
    assert r.status == "BAD", r
    r = c.cmd("FETCH 1:9 FLAGS")
    assert r.status == "BAD", r
    # UID FETCH returns UID always; sets naming no UIDs are fine.
    r = c.cmd("UID FETCH %d FLAGS" % uids[3])
    [line] = fetch_lines(r)
    assert line.startswith(b"* 4 FETCH (UID %d " % uids[3])
    r = c.cmd("UID FETCH %d:%d FLAGS" % (uids[4] + 10, uids[4] + 20))
    assert r.ok and not fetch_lines(r), r
    r = c.cmd("UID FETCH %d:* FLAGS" % (uids[4] + 100))
    assert [l[:9] for l in fetch_lines(r)] == [b"* 5 FETCH"], "n:* includes the last UID"
    assert c.cmd("FETCH 1 (FLAGS").status == "BAD"
    assert c.cmd("FETCH 1 NOSUCHITEM").status == "BAD"
    c.close()


def test_empty_mailbox(d, user):
    c = raw(d, user)
    r = c.cmd("FETCH 1:* FLAGS")
    assert r.ok and not fetch_lines(r), r
    assert c.cmd("FETCH 1 FLAGS").status == "BAD"
    r = c.cmd("UID FETCH 1:* FLAGS")
    assert r.ok and not fetch_lines(r), r
    r = c.cmd("SEARCH ALL")
    assert r.ok and r.find("SEARCH") == [b"* SEARCH"], r
    r = c.cmd("EXPUNGE")
    assert r.ok, r
    r = c.cmd("UID STORE 1:* +FLAGS (\\Seen)")
    assert r.ok and not fetch_lines(r), r
    c.close()


def test_fetch_many_messages_in_batches(d, user):
    c = raw(d, user)
    uids = append_n(c, 450)
    c.cmd("NOOP")
    r = c.cmd("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert r.ok, r
    lines = fetch_lines(r)
    assert len(lines) == 450
    got = [int(re.search(rb"UID (\d+)", l).group(1)) for l in lines]
    assert got == uids
    assert b"Subject: bulk 449" in lines[-1]
    r = c.cmd("FETCH 1:* BODY[]")
    assert r.ok and len(fetch_lines(r)) == 450
    r = c.cmd("SEARCH UNSEEN")
    assert r.find("SEARCH") == [b"* SEARCH"], "FETCH BODY[] set \\Seen on all of them"
    c.close()


def test_client_that_stops_reading_or_disconnects(d, user):
    """A big FETCH to a client that does not read waits for the output to
    drain; a client that goes away mid-FETCH leaves the daemon well."""
    c = raw(d, user)
    body = (b"z" * 998 + b"\r\n") * 100
    tags = []
    for i in range(60):
        t = c.tag()
        msg = simple_message("big %d" % i, body=body)
        c.send(("%s APPEND INBOX {%d+}\r\n" % (t, len(msg))).encode() + msg + b"\r\n")
        tags.append(t)
    for t in tags:
        assert c.response(t).ok
    c.cmd("NOOP")
    c.send(b"f1 FETCH 1:* BODY.PEEK[]\r\n")
    time.sleep(1.0)
    c.close()
    c = raw(d, user)
    r = c.cmd("FETCH 1:* BODY.PEEK[]")
    assert r.ok and len(fetch_lines(r)) == 60, r.tagged
    assert all(len(literal_after(l, "BODY[]")) > len(body) for l in fetch_lines(r))
    c.close()


def test_fetch_of_messages_expunged_by_another_session(d, user):
    a = raw(d, user)
    append_n(a, 3)
    a.cmd("NOOP")
    b = raw(d, user)
    assert b.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)").ok
    assert b.cmd("EXPUNGE").ok
    # a has not been told: message 2 is gone, so plain FETCH says so.
    r = a.cmd("FETCH 1:3 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert r.status == "NO" and code(r.tagged) == "EXPUNGEISSUED", r
    assert len(fetch_lines(r)) == 2
    assert not r.find("2 EXPUNGE") and not any(b"EXPUNGE" in l for l in r.untagged)
    r = a.cmd("NOOP")
    assert b"* 2 EXPUNGE" in r.untagged, r
    a.close()
    b.close()


# --------------------------------------------------------------------------
# STORE

def test_store_forms_and_keywords(d, user):
    c = raw(d, user)
    append_n(c, 3)
    c.cmd("NOOP")
    r = c.cmd("STORE 1 +FLAGS (\\Flagged $Label1)")
    assert r.ok, r
    [line] = fetch_lines(r)
    assert line.startswith(b"* 1 FETCH (FLAGS (")
    assert {"\\Flagged", "$Label1"} <= flags_of(line)
    r = c.cmd("STORE 1 FLAGS (\\Answered custom)")
    assert flags_of(fetch_lines(r)[0]) - {"\\Recent"} == {"\\Answered", "custom"}
    r = c.cmd("STORE 1 -FLAGS (CUSTOM)")
    assert flags_of(fetch_lines(r)[0]) - {"\\Recent"} == {"\\Answered"}
    r = c.cmd("STORE 1:3 +FLAGS.SILENT (\\Seen)")
    assert r.ok and not fetch_lines(r), r
    r = c.cmd("STORE 2 -FLAGS \\Seen")
    assert flags_of(fetch_lines(r)[0]) - {"\\Recent"} == set()
    # Unchanged flags are still reported (RFC 3501 6.4.6 SHOULD).
    r = c.cmd("STORE 3 +FLAGS (\\Seen)")
    assert len(fetch_lines(r)) == 1
    r = c.cmd("UID STORE 1:* +FLAGS ($Important)")
    lines = fetch_lines(r)
    assert len(lines) == 3 and all(re.match(rb"\* \d FETCH \(UID \d+ FLAGS", l) for l in lines)
    assert c.cmd("STORE 1 +FLAGS (\\Recent)").status == "BAD"
    assert c.cmd("STORE 1 XFLAGS (\\Seen)").status == "BAD"
    assert c.cmd("STORE 4 +FLAGS (\\Seen)").status == "BAD"
    r = c.cmd("FETCH 1:3 FLAGS")
    got = [flags_of(l) - {"\\Recent"} for l in fetch_lines(r)]
    assert got == [{"\\Answered", "\\Seen", "$Important"}, {"$Important"},
                   {"\\Seen", "$Important"}]
    c.close()
    # Keywords and flags survive a new session.
    c = raw(d, user)
    r = c.cmd("FETCH 1 FLAGS")
    assert flags_of(fetch_lines(r)[0]) - {"\\Recent"} == {"\\Answered", "\\Seen", "$Important"}
    c.close()


def test_store_on_read_only_mailbox(d, user):
    c = Raw(d)
    c.login(user)
    assert c.cmd("APPEND INBOX {%d+}\r\n" % 8 + "a: b\r\n\r\n").ok
    assert c.cmd("EXAMINE INBOX").ok
    r = c.cmd("STORE 1 +FLAGS (\\Seen)")
    assert r.status == "NO", r
    assert c.cmd("EXPUNGE").status == "NO"
    assert c.cmd("CREATE Other").ok
    assert c.cmd("MOVE 1 Other").status == "NO"
    r = c.cmd("COPY 1 Other")
    assert r.ok and code(r.tagged) == "COPYUID", r
    c.close()


# --------------------------------------------------------------------------
# SEARCH

def test_search_keys(d, user):
    deliver(d, user, None, raw=multipart_message(user, "needle-subject"))
    deliver(d, user, None, raw=simple_message("plain one", to=user,
                                              body=b"the body has a haystack\r\n"))
    deliver(d, user, None, raw=simple_message("plain two", to=user, sender="bob@other.example",
                                              body=b"x" * 5000 + b"\r\n",
                                              date="Mon, 05 Jan 2026 10:00:00 +0000"))
    c = raw(d, user)
    assert c.cmd("STORE 2 +FLAGS.SILENT (\\Seen $Work)").ok

    def search(q):
        r = c.cmd(q)
        assert r.ok, (q, r)
        [line] = r.find("SEARCH")
        return [int(x) for x in line.split()[2:]]

    assert search("SEARCH ALL") == [1, 2, 3]
    assert search("SEARCH SUBJECT needle") == [1]
    assert search("SEARCH FROM bob") == [3]
    assert search("SEARCH FROM alice@example.org") == [1]
    assert search("SEARCH SEEN") == [2]
    assert search("SEARCH UNSEEN") == [1, 3]
    assert search("SEARCH KEYWORD $Work") == [2]
    assert search("SEARCH UNKEYWORD $work") == [1, 3]
    assert search("SEARCH LARGER 4000") == [3]
    assert search("SEARCH BODY haystack") == [2]
    assert search("SEARCH TEXT HAYSTACK") == [2]
    assert search("SEARCH OR SEEN LARGER 4000") == [2, 3]
    assert search("SEARCH NOT SEEN NOT LARGER 4000") == [1]
    assert search("SEARCH 2:* UNSEEN") == [3]
    assert search("SEARCH HEADER Message-ID needle-subject") == [1]
    assert search("SEARCH SENTSINCE 3-Jan-2026") == [3]
    assert search("SEARCH SINCE 1-Jan-2000 RECENT") == [1, 2, 3]
    assert search("SEARCH CHARSET UTF-8 SUBJECT plain") == [2, 3]
    assert search('SEARCH SUBJECT "no such thing"') == []
    r = c.cmd("UID FETCH 1:* UID")
    uids = [int(re.search(rb"UID (\d+)", l).group(1)) for l in fetch_lines(r)]
    assert search("UID SEARCH SUBJECT plain") == uids[1:]
    assert search("UID SEARCH UID %d" % uids[2]) == [uids[2]]
    r = c.cmd("SEARCH CHARSET KOI8-R ALL")
    assert r.status == "NO" and b"[BADCHARSET" in r.tagged, r
    assert c.cmd("SEARCH NOSUCHKEY").status == "BAD"
    c.close()


# --------------------------------------------------------------------------
# COPY, MOVE, EXPUNGE, CLOSE

def test_copy_with_copyuid(d, user):
    c = raw(d, user)
    uids = append_n(c, 5)
    c.cmd("NOOP")
    assert c.cmd("STORE 2 +FLAGS.SILENT (\\Flagged $Kw)").ok
    assert c.cmd("CREATE Dest").ok
    r = c.cmd("COPY 1:3,5 Dest")
    assert r.ok, r
    m = re.match(rb"^\S+ OK \[COPYUID (\d+) (\S+) (\S+)\]", r.tagged)
    assert m, r
    assert m.group(2).decode() == "%d:%d,%d" % (uids[0], uids[2], uids[4])
    assert m.group(3) == b"1:4"
    r = c.cmd("UID COPY %d Dest" % uids[3])
    m2 = re.match(rb"^\S+ OK \[COPYUID (\d+) (\d+) (\d+)\]", r.tagged)
    assert m2 and m2.group(1) == m.group(1) and int(m2.group(2)) == uids[3]
    assert m2.group(3) == b"5"
    r = c.cmd("COPY 1 NoSuchBox")
    assert r.status == "NO" and code(r.tagged) == "TRYCREATE", r
    r = c.cmd("UID COPY 999999 Dest")
    assert r.ok and b"COPYUID" not in r.tagged, r
    # The copies keep flags and keywords.
    r = c.cmd("SELECT Dest")
    assert b"* 5 EXISTS" in r.untagged, r
    r = c.cmd("FETCH 2 FLAGS")
    assert {"\\Flagged", "$Kw"} <= flags_of(fetch_lines(r)[0])
    c.close()


def test_move_with_copyuid_and_expunges(d, user):
    c = raw(d, user)
    uids = append_n(c, 5)
    c.cmd("NOOP")
    assert c.cmd("CREATE Moved").ok
    r = c.cmd("MOVE 2,4 Moved")
    assert r.ok, r
    assert r.untagged[0].startswith(b"* OK [COPYUID "), r
    m = re.match(rb"^\* OK \[COPYUID \d+ (\S+) (\S+)\]", r.untagged[0])
    assert m.group(1).decode() == "%d,%d" % (uids[1], uids[3]) and m.group(2) == b"1:2"
    exp = [l for l in r.untagged if l.endswith(b" EXPUNGE")]
    # Ascending with numbers adjusted: 2, then old 4 which is now 3.
    assert exp == [b"* 2 EXPUNGE", b"* 3 EXPUNGE"], r
    r = c.cmd("UID MOVE %d Moved" % uids[4])
    assert r.ok and b"* 3 EXPUNGE" in r.untagged, r
    r = c.cmd("UID FETCH 1:* UID")
    assert [int(re.search(rb"UID (\d+)", l).group(1)) for l in fetch_lines(r)] == \
        [uids[0], uids[2]]
    r = c.cmd("NOOP")
    assert not any(b"EXPUNGE" in l for l in r.untagged), "no EXPUNGE twice"
    r = c.cmd("STATUS Moved (MESSAGES)")
    assert b"MESSAGES 3" in b" ".join(r.untagged), r
    r = c.cmd("MOVE 1 NoSuchBox")
    assert code(r.tagged) == "TRYCREATE", r
    c.close()


def test_expunge_and_uid_expunge(d, user):
    c = raw(d, user)
    uids = append_n(c, 6)
    c.cmd("NOOP")
    assert c.cmd("STORE 1,3,4,6 +FLAGS.SILENT (\\Deleted)").ok
    r = c.cmd("UID EXPUNGE %d:%d" % (uids[2], uids[3]))
    assert r.ok, r
    assert [l for l in r.untagged if l.endswith(b"EXPUNGE")] == [b"* 3 EXPUNGE", b"* 3 EXPUNGE"]
    r = c.cmd("EXPUNGE")
    assert [l for l in r.untagged if l.endswith(b"EXPUNGE")] == [b"* 1 EXPUNGE", b"* 3 EXPUNGE"]
    r = c.cmd("UID FETCH 1:* UID")
    assert [int(re.search(rb"UID (\d+)", l).group(1)) for l in fetch_lines(r)] == \
        [uids[1], uids[4]]
    r = c.cmd("EXPUNGE")
    assert r.ok and not any(b"EXPUNGE" in l for l in r.untagged)
    c.close()


def test_close_expunges_silently(d, user):
    c = raw(d, user)
    append_n(c, 3)
    c.cmd("NOOP")
    assert c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)").ok
    r = c.cmd("CLOSE")
    assert r.ok and not any(b"EXPUNGE" in l for l in r.untagged), r
    assert c.cmd("FETCH 1 FLAGS").status == "BAD", "no mailbox selected after CLOSE"
    r = c.cmd("SELECT INBOX")
    assert b"* 2 EXISTS" in r.untagged, r
    c.close()


# --------------------------------------------------------------------------
# APPEND

def test_append_flags_date_appenduid(d, user):
    m = imaptools.login(d, user)
    msg = simple_message("appended", to=user)
    typ, data = m.append("INBOX", "(\\Seen \\Flagged $Custom)",
                         '"14-Jul-2025 10:20:30 +0200"', msg)
    assert typ == "OK", data
    mm = re.search(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert mm, data
    uid = int(mm.group(2))
    m.select("INBOX")
    typ, data = m.uid("FETCH", str(uid), "(FLAGS INTERNALDATE RFC822.SIZE)")
    assert typ == "OK"
    head = data[0]
    assert re.search(rb'INTERNALDATE "14-Jul-2025 08:20:30 \+0000"', head), head
    assert {"\\Seen", "\\Flagged", "$Custom"} <= set(
        re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split())
    typ, data = m.uid("FETCH", str(uid), "BODY.PEEK[]")
    assert data[0][1] == msg
    assert int(re.search(rb"RFC822\.SIZE (\d+)", head).group(1)) == len(msg)
    m.logout()


def test_append_edge_cases(d, user):
    c = Raw(d)
    c.login(user)
    r = c.append("INBOX", b"")
    assert r.status == "NO", r
    r = c.append("NoSuchFolder", b"Subject: x\r\n\r\nbody\r\n")
    assert r.status == "NO" and code(r.tagged) == "TRYCREATE", r
    r = c.append("INBOX", b"Subject: x\r\n\r\nbody\r\n", flags="\\Recent")
    assert r.status == "BAD", r
    r = c.append("INBOX", b"Subject: x\r\n\r\nbody\r\n", date="31-Foo-2020 00:00:00 +0000")
    assert r.status == "BAD", r
    # Bare LF becomes CRLF, so RFC822.SIZE and BODY[] agree.
    r = c.append("INBOX", b"Subject: lf\n\nline one\nline two\n")
    assert r.ok, r
    c.select()
    r = c.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[])")
    [line] = fetch_lines(r)
    body = literal_after(line, "BODY[]")
    assert body == b"Subject: lf\r\n\r\nline one\r\nline two\r\n"
    assert int(re.search(rb"RFC822\.SIZE (\d+)", line).group(1)) == len(body)
    # Appending to the selected mailbox: EXISTS comes with the OK.
    r = c.append("INBOX", b"Subject: y\r\n\r\nbody\r\n")
    assert r.ok and b"* 2 EXISTS" in r.untagged, r
    c.close()


def test_over_quota(d, user):
    rc, out, err = d.setup("quota", "set", user, "20K")
    assert rc == 0, (rc, out, err)
    c = Raw(d)
    c.login(user)
    big = simple_message("big", to=user, body=(b"y" * 78 + b"\r\n") * 400)
    r = c.append("INBOX", big)
    assert r.status == "NO" and code(r.tagged) == "OVERQUOTA", r
    small = simple_message("small", to=user, body=(b"z" * 78 + b"\r\n") * 150)
    r = c.append("INBOX", small)
    assert r.ok, r
    c.select()
    assert c.cmd("CREATE Copies").ok
    r = c.cmd("COPY 1 Copies")
    assert r.status == "NO" and code(r.tagged) == "OVERQUOTA", r
    # MOVE does not add usage.
    assert c.cmd("MOVE 1 Copies").ok
    c.close()


# --------------------------------------------------------------------------
# Two sessions

def test_changes_seen_by_another_session(d, user):
    a = raw(d, user)
    append_n(a, 3)
    a.cmd("NOOP")
    b = raw(d, user)
    r = b.cmd("STORE 1 +FLAGS (\\Flagged)")
    assert r.ok
    r = a.cmd("NOOP")
    lines = fetch_lines(r)
    assert len(lines) == 1 and lines[0].startswith(b"* 1 FETCH") and \
        "\\Flagged" in flags_of(lines[0]), r
    r = b.cmd("STORE 1 +FLAGS ($Shared)")
    r = a.cmd("NOOP")
    assert "$Shared" in flags_of(fetch_lines(r)[0]), r
    assert b.cmd("STORE 3 +FLAGS.SILENT (\\Deleted)").ok
    r = b.cmd("EXPUNGE")
    assert b"* 3 EXPUNGE" in r.untagged
    r = a.cmd("NOOP")
    assert b"* 3 EXPUNGE" in r.untagged, r
    # b's own change is not reported back to b.
    r = b.cmd("NOOP")
    assert not fetch_lines(r) and not any(b"EXPUNGE" in l for l in r.untagged), r
    a.close()
    b.close()


def test_imaplib_round_trip(d, user):
    """The calls a plain imaplib client makes, end to end."""
    deliver(d, user, None, raw=multipart_message(user, "imaplib1"))
    m = imaptools.login(d, user, select="INBOX")
    typ, data = m.fetch("1", "(RFC822)")
    assert typ == "OK"
    parsed = email.message_from_bytes(data[0][1])
    assert parsed["Subject"] == "imaplib1" and parsed.is_multipart()
    typ, data = m.search(None, "SEEN")
    assert data == [b"1"]
    typ, data = m.store("1", "+FLAGS", "\\Deleted")
    assert typ == "OK" and b"\\Deleted" in data[0]
    typ, data = m.expunge()
    assert typ == "OK" and data == [b"1"]
    with pytest.raises(imaplib.IMAP4.error):
        m.fetch("1", "(FLAGS)")
    m.logout()
