"""The virus scan (ENABLE_CLAMAV=1, filters/antivirus.c) through SMTP on port
25 and authenticated submission. The signature database is made here, at
test time, and never committed: MD5 signatures (.hdb, md5:size:name) of the
EICAR test string and of clam.exe from Debian's clamav-testfiles package.
ClamAV unpacks attachments and archives, so the hash of the inner file
matches inside a MIME part, a zip, a 7z, a packed executable or a PDF.
SPF is off in these daemons (no DNS here)."""

import base64
import hashlib
import io
import os
import shutil
import smtplib
import tempfile
import time
import zipfile
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import SMTP as SMTP_POLICY

import pytest

from helpers import QUEUED_RE, Smtp, dot_stuff, free_port, listen_port, unique, wait_until
from mailnet import submit

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TESTFILES = "/usr/share/clamav-testfiles"
USER = "user@example.test"
CLEAN_HEADER = b"X-Virus-Scanned: ClamAV using posthorn\r\n"
SKIPPED_HEADER = b"X-Virus-Scanned: skipped (message too large)\r\n"


def read_testfile(name):
    path = os.path.join(TESTFILES, name)
    if not os.path.exists(path):
        pytest.fail("%s missing: install clamav-testfiles (tests/install-deps)" % path,
                    pytrace=False)
    with open(path, "rb") as f:
        return f.read()


def hdb_line(data, name):
    return "%s:%d:%s\n" % (hashlib.md5(data).hexdigest(), len(data), name)


def write_db(dirname, filename="test.hdb"):
    """The test database: EICAR and clam.exe. Readable by the mail user the
    daemon runs as."""
    path = os.path.join(dirname, filename)
    with open(path, "w") as f:
        f.write(hdb_line(EICAR, "Eicar-Test-Signature"))
        f.write(hdb_line(read_testfile("clam.exe"), "ClamAV-Test-File"))
    os.chmod(path, 0o644)
    return path


def make_db_dir(with_db=True):
    d = tempfile.mkdtemp(prefix="posthorn-clamdb-")
    os.chmod(d, 0o755)
    if with_db:
        write_db(d)
    return d


def attachment_message(subject, filename=None, data=None, padding=0):
    """A multipart/mixed CRLF message with a text part and, when given, one
    base64 attachment."""
    m = MIMEMultipart()
    m["From"] = "<sender@example.org>"
    m["To"] = "<%s>" % USER
    m["Subject"] = subject
    m["Message-ID"] = "<%s@client.example.org>" % subject
    m["Date"] = "Thu, 01 Jan 2026 00:00:00 +0000"
    m.attach(MIMEText("See the attachment.\n" + "padding line\n" * padding))
    if filename is not None:
        part = MIMEApplication(data, Name=filename)
        part["Content-Disposition"] = 'attachment; filename="%s"' % filename
        m.attach(part)
    return m.as_bytes(policy=SMTP_POLICY)


def zip_of(name, data):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return b.getvalue()


def send(port, msg, sender="sender@example.org"):
    """One transaction; returns the reply to the end of data."""
    with Smtp(port) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.line.startswith("250 "), r
        r = c.cmd("RCPT TO:<%s>" % USER)
        assert r.line.startswith("250 "), r
        r = c.cmd("DATA")
        assert r.code == 354, r
        c.send(dot_stuff(msg))
        final = c.reply()
        c.cmd("QUIT")
        return final


def wait_loaded(d, timeout=30.0):
    wait_until(lambda: "clamav: loaded virus database" in d.log_text(), timeout,
               interval=0.05, what="the virus database to load")


@pytest.fixture(scope="module")
def dbdir():
    d = make_db_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def clamd(mod_daemons, dbdir):
    d = mod_daemons.make({"ENABLE_POLICYD_SPF": "0", "ENABLE_CLAMAV": "1",
                          "CLAMAV_DB_DIR": dbdir,
                          "SUBMISSIONS_LISTEN": "127.0.0.1:%d" % free_port()},
                         name="clam")
    wait_loaded(d)
    return d


def test_eicar_attachment_rejected(clamd):
    subj = unique("eicar")
    final = send(clamd.port, attachment_message(subj, "eicar.com", EICAR))
    assert final.line == "554 5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL", final
    assert clamd.find(USER, subj) == []
    log = clamd.log_text()
    assert "filter=clamav" in log and "Virus found: Eicar-Test-Signature" in log


def test_eicar_in_zip_rejected(clamd):
    subj = unique("eicarzip")
    msg = attachment_message(subj, "eicar.zip", zip_of("docs/eicar.com", EICAR))
    final = send(clamd.port, msg)
    assert final.line.startswith("554 5.7.1 Virus found: Eicar-Test-Signature"), final
    assert clamd.find(USER, subj) == []


@pytest.mark.parametrize("name", ["clam.zip", "clam.7z", "clam.tar.gz", "clam.cab",
                                  "clam-upx.exe", "clam.ole.doc", "clam.pdf"])
def test_clamav_testfiles_rejected(clamd, name):
    subj = unique("testfile")
    final = send(clamd.port, attachment_message(subj, name, read_testfile(name)))
    assert final.line.startswith("554 5.7.1 Virus found: ClamAV-Test-File"), (name, final)
    assert clamd.find(USER, subj) == []


def test_testfile_mailbox_message_rejected(clamd):
    """clam.exe.mbox.base64 is a whole message with the virus attached."""
    data = read_testfile("clam.exe.mbox.base64")
    msg = data.split(b"\n", 1)[1] if data.startswith(b"From ") else data   # mbox "From " line
    msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    final = send(clamd.port, msg)
    assert final.line.startswith("554 5.7.1 Virus found: ClamAV-Test-File"), final


def test_clean_message_accepted_with_header(clamd):
    subj = unique("clean")
    msg = attachment_message(subj, "notes.zip", zip_of("notes.txt", b"nothing to see\n"))
    final = send(clamd.port, msg)
    assert QUEUED_RE.match(final.line), final
    data = clamd.read_one(USER, subj)
    hdr = data.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert CLEAN_HEADER in hdr
    assert SKIPPED_HEADER not in hdr


def test_submission_scanned(clamd):
    """Authenticated submission skips the spam checks but not the scan."""
    port = listen_port(clamd, "SUBMISSIONS_LISTEN")
    subj = unique("subvirus")
    msg = attachment_message(subj, "eicar.com", EICAR)
    with pytest.raises(smtplib.SMTPDataError) as e:
        submit("127.0.0.1", port, USER, USER, [USER], msg)
    assert e.value.smtp_code == 554
    assert b"Virus found: Eicar-Test-Signature" in e.value.smtp_error
    assert clamd.find(USER, subj) == []
    subj = unique("subclean")
    assert submit("127.0.0.1", port, USER, USER, [USER], attachment_message(subj)) == {}
    assert CLEAN_HEADER in clamd.read_one(USER, subj)


def test_empty_db_dir_tempfails_until_database(daemons):
    """No database yet (freshclam has not run): an error line at start,
    451 4.7.1 for mail, accepted once a database is written (the daemon
    checks the directory every 5 s while it has none)."""
    db = make_db_dir(with_db=False)
    try:
        d = daemons.make({"ENABLE_POLICYD_SPF": "0", "ENABLE_CLAMAV": "1",
                          "CLAMAV_DB_DIR": db}, name="clamempty")
        wait_until(lambda: "cannot load the virus database" in d.log_text(), 20,
                   what="the load error")
        subj = unique("notready")
        final = send(d.port, attachment_message(subj))
        assert final.line == "451 4.7.1 Virus scanner not ready", final
        assert d.find(USER, subj) == []
        write_db(db)
        deadline = time.monotonic() + 30
        while final.code == 451 and time.monotonic() < deadline:
            time.sleep(0.5)
            final = send(d.port, attachment_message(subj))
        assert QUEUED_RE.match(final.line), final
        assert CLEAN_HEADER in d.read_one(USER, subj)
        final = send(d.port, attachment_message(unique("v"), "eicar.com", EICAR))
        assert final.line.startswith("554 5.7.1 Virus found: Eicar-Test-Signature"), final
    finally:
        shutil.rmtree(db, ignore_errors=True)


def test_corrupt_db_dir_tempfails(daemons):
    db = make_db_dir(with_db=False)
    try:
        path = os.path.join(db, "broken.hdb")
        with open(path, "w") as f:
            f.write("this is not a signature\n")
        os.chmod(path, 0o644)
        d = daemons.make({"ENABLE_POLICYD_SPF": "0", "ENABLE_CLAMAV": "1",
                          "CLAMAV_DB_DIR": db}, name="clambad")
        wait_until(lambda: "cannot load the virus database" in d.log_text(), 20,
                   what="the load error")
        assert "Malformed database" in d.log_text()
        final = send(d.port, attachment_message(unique("bad")))
        assert final.line == "451 4.7.1 Virus scanner not ready", final
    finally:
        shutil.rmtree(db, ignore_errors=True)


def test_over_size_limit_accepted_unscanned(daemons, dbdir):
    d = daemons.make({"ENABLE_POLICYD_SPF": "0", "ENABLE_CLAMAV": "1",
                      "CLAMAV_DB_DIR": dbdir, "CLAMAV_MESSAGE_SIZE_LIMIT": "4K"},
                     name="clamsize")
    wait_loaded(d)
    # Under the limit: scanned.
    final = send(d.port, attachment_message(unique("small"), "eicar.com", EICAR))
    assert final.line.startswith("554 5.7.1 Virus found"), final
    # Over it: accepted without a scan, and the header says so.
    subj = unique("large")
    msg = attachment_message(subj, "eicar.com", EICAR, padding=400)
    assert len(msg) > 4096
    final = send(d.port, msg)
    assert QUEUED_RE.match(final.line), final
    hdr = d.read_one(USER, subj).split(b"\r\n\r\n", 1)[0] + b"\r\n"
    assert SKIPPED_HEADER in hdr
    assert CLEAN_HEADER not in hdr
    assert "not scanned" in d.log_text()


def test_clamav_off_no_header(smtpd):
    """ENABLE_CLAMAV=0 (the default): no scan, no header."""
    subj = unique("off")
    final = send(smtpd.port, attachment_message(subj, "eicar.com", EICAR))
    assert QUEUED_RE.match(final.line), final
    assert b"X-Virus-Scanned" not in smtpd.read_one(USER, subj)
