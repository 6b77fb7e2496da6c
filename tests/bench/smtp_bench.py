"""SMTP throughput benchmark for posthornd (run through tests/bench/run).

Starts build/posthornd with temp dirs and one account on a free loopback
port, runs Postfix's smtp-source against it, and reports messages accepted
per second, the number of files in the Maildir, and posthornd's peak RSS."""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))

import helpers  # noqa: E402

RCPT = "user@example.test"


def vm_hwm_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def count_files(d):
    return len(d.messages(RCPT))


def run(args):
    settings = {"LOG_LEVEL": args.log_level}
    d = helpers.Daemon(settings, name="bench")
    d.settings.pop("WORKER_THREADS")  # the daemon's default
    for item in args.set:
        name, _, value = item.partition("=")
        d.settings[name] = value
    d.write_settings()
    try:
        d.start()
        rc, out, err = d.setup("email", "add", RCPT, "bench-password")
        if rc != 0:
            sys.exit("bench: setup email add failed (%d): %s" % (rc, err.strip()))
        cmd = [args.smtp_source, "-c"] + (["-d"] if args.keep_sessions else []) + [
               "-s", str(args.sessions), "-l", str(args.size),
               "-m", str(args.messages), "-f", "bench@example.org", "-t", RCPT,
               "127.0.0.1:%d" % d.port]
        t0 = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
        elapsed = time.monotonic() - t0
        hwm = vm_hwm_kib(d.pid)
        files = count_files(d)
        alive = d.running()
        rc_stop = d.stop()
        return {"cmd": " ".join(cmd[1:]), "rc": p.returncode, "stderr": p.stderr,
                "elapsed": elapsed, "files": files, "hwm": hwm, "alive": alive,
                "rc_stop": rc_stop}
    finally:
        rc, tail = d.cleanup()
        if rc not in (None, 0):
            print("bench: posthornd stderr tail:\n" + tail, file=sys.stderr)


def report(r, args):
    rate = args.messages / r["elapsed"] if r["elapsed"] > 0 else 0
    rows = [("smtp-source", r["cmd"]),
            ("elapsed", "%.2f s" % r["elapsed"]),
            ("messages accepted/s", "%.0f" % rate),
            ("files in Maildir", "%d (expected %d)%s" % (
                r["files"], args.messages, "" if r["files"] == args.messages else "  MISMATCH")),
            ("posthornd peak RSS (VmHWM)", "%.1f MiB" % (r["hwm"] / 1024.0)),
            ("smtp-source exit status", str(r["rc"])),
            ("posthornd exit status", str(r["rc_stop"]))]
    w = max(len(k) for k, _ in rows)
    print("-" * (w + 40))
    for k, v in rows:
        print("%-*s  %s" % (w, k, v))
    print("-" * (w + 40))
    if r["stderr"].strip():
        lines = r["stderr"].strip().splitlines()
        print("smtp-source reported %d line(s) on stderr, first: %s" % (len(lines), lines[0]))
    ok = r["files"] == args.messages and r["rc"] == 0 and r["alive"]
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smtp-source", required=True)
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--keep-sessions", action="store_true",
                    help="smtp-source -d: many messages per connection, to measure the "
                         "storage path without the cost of a connection per message")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a posthornd setting for this run, e.g. WORKER_THREADS=8")
    args = ap.parse_args()
    for p in (helpers.posthornd_path(), helpers.setup_path()):
        if not os.access(p, os.X_OK):
            sys.exit("bench: %s missing; run make first" % p)
    sys.exit(report(run(args), args))


if __name__ == "__main__":
    main()
