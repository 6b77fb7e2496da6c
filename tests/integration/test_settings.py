"""Settings: validation with -t, NAME__FILE, environment over file, the
privilege drop when started as root, and the log file."""

import os
import re
import subprocess

import pytest

from helpers import (QUEUED_RE, VMAIL_UID, Smtp, clean_env, make_message,
                     posthornd_path, send_raw_message, unique, wait_until)


@pytest.fixture
def conf_dir(daemons):
    """A Daemon that is never started: its settings file and dirs only."""
    d = daemons.make(start=False, name="conf")
    return d


def check(d, env=None):
    p = subprocess.run([posthornd_path(), "-c", d.conf, "-t"], capture_output=True,
                       text=True, timeout=30, env=clean_env(env))
    return p.returncode, p.stdout, p.stderr


def test_check_ok(conf_dir):
    rc, out, err = check(conf_dir)
    assert rc == 0, (out, err)


@pytest.mark.parametrize("name,value", [
    ("TLS_LEVEL", "old"),
    ("LOG_LEVEL", "loud"),
    ("POSTFIX_MESSAGE_SIZE_LIMIT", "ten-megabytes"),
    ("POSTFIX_MESSAGE_SIZE_LIMIT", "-5"),
    ("SSL_TYPE", "snakeoil"),
    ("SMTP_TIMEOUT", "soon"),
])
def test_check_invalid_value(conf_dir, name, value):
    conf_dir.settings[name] = value
    conf_dir.write_settings()
    rc, out, err = check(conf_dir)
    assert rc == 1, (name, rc, out, err)
    lines = [l for l in (out + err).splitlines() if name in l]
    assert lines, (out, err)
    assert any(("%s: invalid value '%s'" % (name, value)) in l and "accepted" in l
               for l in lines), lines


def test_invalid_value_fails_at_start_too(conf_dir):
    conf_dir.settings["TLS_LEVEL"] = "old"
    conf_dir.write_settings()
    p = subprocess.run([posthornd_path(), "-c", conf_dir.conf], capture_output=True,
                       text=True, timeout=30, env=clean_env())
    assert p.returncode == 1
    assert "TLS_LEVEL" in p.stderr


def test_environment_overrides_file(conf_dir):
    conf_dir.settings["TLS_LEVEL"] = "old"
    conf_dir.write_settings()
    rc, out, err = check(conf_dir, env={"TLS_LEVEL": "intermediate"})
    assert rc == 0, (out, err)
    conf_dir.settings["TLS_LEVEL"] = "modern"
    conf_dir.write_settings()
    rc, out, err = check(conf_dir, env={"TLS_LEVEL": "old"})
    assert rc == 1, (out, err)


def test_name_file_invalid_value(conf_dir):
    path = os.path.join(conf_dir.base, "level")
    with open(path, "w") as f:
        f.write("shouting\n")
    conf_dir.settings["LOG_LEVEL__FILE"] = path
    del conf_dir.settings["LOG_LEVEL"]
    conf_dir.write_settings()
    rc, out, err = check(conf_dir)
    assert rc == 1, (out, err)
    assert "LOG_LEVEL" in out + err


def ehlo_size(d):
    with Smtp(d.port) as c:
        r = c.ehlo()
    sizes = [l[4:] for l in r.lines if l[4:].startswith("SIZE")]
    assert len(sizes) == 1, r
    return sizes[0]


def test_name_file_and_env_at_runtime(daemons):
    d = daemons.make(start=False, name="namefile")
    path = os.path.join(d.base, "size")
    with open(path, "w") as f:
        f.write("12345\n")
    d.settings["POSTFIX_MESSAGE_SIZE_LIMIT__FILE"] = path
    d.write_settings()
    d.start()
    assert ehlo_size(d) == "SIZE 12345"
    d.stop()
    d.settings.pop("POSTFIX_MESSAGE_SIZE_LIMIT__FILE")
    d.settings["POSTFIX_MESSAGE_SIZE_LIMIT"] = "20000"
    d.write_settings()
    d.start(env={"POSTFIX_MESSAGE_SIZE_LIMIT": "30000"})
    assert ehlo_size(d) == "SIZE 30000"


@pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
def test_privilege_drop_and_ownership(daemons):
    d = daemons.make(name="priv")
    with open("/proc/%d/status" % d.pid) as f:
        status = f.read()
    uid = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M)
    gid = re.search(r"^Gid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M)
    assert uid and set(uid.groups()) == {str(VMAIL_UID)}, status
    assert gid and set(gid.groups()) == {str(VMAIL_UID)}, status
    groups = re.search(r"^Groups:(.*)$", status, re.M).group(1).split()
    assert "0" not in groups, status
    subj = unique("owner")
    send_raw_message(d.port, "s@example.org", ["user@example.test"], make_message(subj))
    path = d.find("user@example.test", subj)[0]
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (VMAIL_UID, VMAIL_UID)
    for p in (d.mail_dir, d.state_dir, d.log_dir, d.mailbox("user@example.test")):
        assert os.stat(p).st_uid == VMAIL_UID, p


def test_log_file_has_session_lines(daemons):
    d = daemons.make(name="log")
    subj = unique("logged")
    final = send_raw_message(d.port, "logger@example.org", ["user@example.test"],
                             make_message(subj))
    qid = QUEUED_RE.match(final.line).group(1)
    log = os.path.join(d.log_dir, "mail.log")
    assert os.path.isfile(log)
    wait_until(lambda: qid in d.log_text(), 10, what="queue id %s in mail.log" % qid)
    text = d.log_text()
    assert "127.0.0.1" in text
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z posthornd\[\d+\]: "
                      r"(error|warn|info|debug|trace): ")
    assert all(line.match(l) for l in text.splitlines() if l), text[:2000]
    # Everything logged also went to stderr.
    assert qid in d.stderr_text()

