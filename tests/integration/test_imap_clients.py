"""Real IMAP clients against a real daemon: curl's imap:// and imaps://
URLs (fetch by UID, STARTTLS with --ssl-reqd, listing, custom commands,
upload as APPEND) and mbsync (isync) syncing a mailbox down and back up
with flag changes, deletions, new messages and new folders on both sides.
Every test uses its own fresh account on one module daemon."""

import os
import shutil
import subprocess
import tempfile

import pytest

import helpers
from imaptools import (PASSWORD, add_user, deliver, flags_of, imap_port,
                       imaps_port, login, simple_message)


@pytest.fixture(scope="module")
def imapd(mod_daemons):
    return mod_daemons.make(helpers.imap_settings(), name="imapclients")


@pytest.fixture
def user(imapd):
    return add_user(imapd, prefix="c")


@pytest.fixture
def home():
    path = tempfile.mkdtemp(prefix="posthorn-imap-home-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _curl(*args, ok=True):
    p = subprocess.run(["curl", "-sS", "-k", "--max-time", "20"] + list(args),
                       capture_output=True, timeout=30)
    if ok:
        assert p.returncode == 0, (args, p.returncode, p.stderr)
    return p


def _server_copy(d, addr, uid, box="INBOX"):
    c = login(d, addr, select=box)
    typ, data = c.uid("FETCH", str(uid), "(BODY.PEEK[])")
    c.logout()
    assert typ == "OK" and data and isinstance(data[0], tuple), data
    return data[0][1]


# --------------------------------------------------------------------------
# curl

def test_curl_fetch_by_uid_over_imaps_and_starttls(imapd, user):
    for i in range(2):
        deliver(imapd, user, helpers.unique("curl%d" % i))
    creds = "%s:%s" % (user, PASSWORD)
    stored = _server_copy(imapd, user, 2)
    url = "imaps://127.0.0.1:%d/INBOX;UID=2" % imaps_port(imapd)
    assert _curl("-u", creds, url).stdout == stored
    url = "imap://127.0.0.1:%d/INBOX;UID=2" % imap_port(imapd)
    assert _curl("--ssl-reqd", "-u", creds, url).stdout == stored
    # A section of the message.
    head, text = stored.split(b"\r\n\r\n", 1)
    url = "imaps://127.0.0.1:%d/INBOX;UID=2;SECTION=TEXT" % imaps_port(imapd)
    assert _curl("-u", creds, url).stdout == text
    # Plain imap:// without TLS must not log in (LOGINDISABLED).
    p = _curl("-u", creds, "imap://127.0.0.1:%d/INBOX;UID=2" % imap_port(imapd), ok=False)
    assert p.returncode != 0 and p.stdout == b""
    # A wrong password fails.
    p = _curl("-u", "%s:wrong" % user, url, ok=False)
    assert p.returncode != 0


def test_curl_list_search_and_upload(imapd, user, home):
    deliver(imapd, user, helpers.unique("curlsearch"))
    creds = "%s:%s" % (user, PASSWORD)
    base = "imaps://127.0.0.1:%d/" % imaps_port(imapd)
    listing = _curl("-u", creds, base).stdout
    lines = listing.split(b"\r\n")
    for name in (b"INBOX", b"Drafts", b"Sent", b"Junk", b"Trash", b"Archive"):
        assert any(l.startswith(b"* LIST ") and (l.endswith(b" " + name) or
                                                 l.endswith(b' "' + name + b'"'))
                   for l in lines), listing
    out = _curl("-u", creds, "-X", "UID SEARCH ALL", base + "INBOX").stdout
    assert out.strip() == b"* SEARCH 1", out
    out = _curl("-u", creds, "-X", 'STATUS INBOX (MESSAGES UIDNEXT)', base).stdout
    assert b"MESSAGES 1" in out and b"UIDNEXT 2" in out, out

    # Upload: curl sends APPEND.
    msg = simple_message(helpers.unique("upload"), body=b"uploaded by curl\r\n", to=user)
    path = os.path.join(home, "msg.eml")
    with open(path, "wb") as f:
        f.write(msg)
    _curl("-u", creds, "-T", path, base + "Sent")
    assert len(imapd.messages(user, "Sent")) == 1
    assert _server_copy(imapd, user, 1, "Sent") == msg


# --------------------------------------------------------------------------
# mbsync

MBSYNCRC = """IMAPAccount remote
Host 127.0.0.1
Port {port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}

IMAPStore remote
Account remote

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""


def _mbsync(home, rc):
    p = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True, text=True,
                       env=dict(os.environ, HOME=home), timeout=90)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p


def _local_files(local, folder="INBOX"):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(local, folder, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, n) for n in os.listdir(d)]
    return out


def _local_find(local, marker, folder="INBOX"):
    hits = [p for p in _local_files(local, folder) if marker.encode() in open(p, "rb").read()]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def _set_local_flags(path, flags):
    """Changes a local message's flags the Maildir way: into cur/ with the
    info suffix."""
    folder = os.path.dirname(os.path.dirname(path))
    base = os.path.basename(path).split(":2,")[0]
    new = os.path.join(folder, "cur", base + ":2," + flags)
    os.rename(path, new)
    return new


def _local_flags(path):
    name = os.path.basename(path)
    return name.split(":2,", 1)[1] if ":2," in name else ""


def _server_view(d, addr, box="INBOX"):
    """{subject marker: flags} of a server mailbox."""
    c = login(d, addr, select=box)
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    c.logout()
    out = {}
    if data == [None]:
        return out
    for i, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        # FLAGS may come before or after the literal.
        after = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
        subject = item[1].decode().split(":", 1)[1].strip()
        out[subject] = flags_of(item[0] + after)
    return out


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_round_trip(imapd, user, home):
    subjects = [helpers.unique("mb%d" % i) for i in range(3)]
    for s in subjects:
        deliver(imapd, user, s)
    local = os.path.join(home, "Mail")
    os.mkdir(local)
    rc = os.path.join(home, "mbsyncrc")
    with open(rc, "w") as f:
        f.write(MBSYNCRC.format(port=imaps_port(imapd), user=user, password=PASSWORD,
                                cert=os.path.join(imapd.state_dir, "tls", "cert.pem"),
                                local=local))

    # Down: three messages, and the special-use folders.
    _mbsync(home, rc)
    assert len(_local_files(local)) == 3
    for s in subjects:
        assert _local_find(local, s), s
    for folder in ("Drafts", "Sent", "Junk", "Trash", "Archive"):
        assert os.path.isdir(os.path.join(local, folder, "cur")), os.listdir(local)

    # Local changes: one seen, one deleted, one new message, one new folder.
    _set_local_flags(_local_find(local, subjects[0]), "S")
    _set_local_flags(_local_find(local, subjects[1]), "T")
    added = helpers.unique("local")
    with open(os.path.join(local, "INBOX", "new", "1700000000.1_1.localhost"), "wb") as f:
        f.write(simple_message(added, to=user))
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(local, "Projects", sub))
    in_folder = helpers.unique("proj")
    with open(os.path.join(local, "Projects", "cur", "1700000001.2_1.localhost:2,F"),
              "wb") as f:
        f.write(simple_message(in_folder, to=user))

    _mbsync(home, rc)
    view = _server_view(imapd, user)
    assert set(view) == {subjects[0], subjects[2], added}, view
    assert "\\Seen" in view[subjects[0]]
    assert "\\Seen" not in view[subjects[2]]
    proj = _server_view(imapd, user, "Projects")
    assert set(proj) == {in_folder} and "\\Flagged" in proj[in_folder], proj

    # Server changes: a flag and a deletion.
    c = login(imapd, user, select="INBOX")
    typ, data = c.search(None, "SUBJECT", subjects[2])
    n2 = data[0].split()[0]
    typ, data = c.search(None, "SUBJECT", subjects[0])
    n0 = data[0].split()[0]
    assert c.store(n2, "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert c.store(n0, "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert c.expunge()[0] == "OK"
    c.logout()

    _mbsync(home, rc)
    assert _local_find(local, subjects[0]) is None
    assert _local_find(local, subjects[1]) is None
    assert "F" in _local_flags(_local_find(local, subjects[2]))
    assert _local_find(local, added) is not None
    assert len(_local_files(local)) == 2
    # A last sync with nothing to do changes nothing.
    _mbsync(home, rc)
    assert set(_server_view(imapd, user)) == {subjects[2], added}
    assert len(_local_files(local)) == 2
