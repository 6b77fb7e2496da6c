"""Filter cost benchmark for posthornd (issue 6): messages per second through
port 25 with the inbound filters on, against all off.

Each configuration gets a fresh posthornd (temp dirs, one account, SMTP on a
free loopback port) and the same Postfix smtp-source run:

  off     ENABLE_POLICYD_SPF=0 ENABLE_SPAMASSASSIN=0 ENABLE_DNSBL=0 ENABLE_CLAMAV=0
  filters SPF, spam scoring (GTUBE, rules, Bayes) and DNSBL on
  clamav  the same plus ENABLE_CLAMAV=1 with a test database
and, on request (--configs), one filter alone: spf, dnsbl, spam, clamav-only.

The DNS fixture (tests/integration/dnsfixture.py) runs in this process and
is posthornd's DNS_RESOLVER: the sender domain has the SPF record
"v=spf1 ip4:127.0.0.0/8 -all" (every message passes), and the DNSBL zones
have no records (NXDOMAIN: the client is listed nowhere). The ClamAV
database is written at run time: one MD5 (.hdb) signature of the EICAR
string, as tests/integration/test_clamav.py does.

Reported per configuration: wall time, messages accepted per second, files
in the Maildir (must equal --messages), posthornd's peak RSS (VmHWM) and its
CPU time (user+system) per message. The CPU figure is the one to compare when
other work shares the machine. No assertions beyond the exit status: it is
non-zero when a count is wrong, smtp-source failed or posthornd died.

    tests/bench/run must supply smtp-source; standalone:
    LD_LIBRARY_PATH=/var/tmp/posthorn-bench/root/usr/lib/postfix \\
      python3 tests/bench/filter_bench.py \\
      --smtp-source /var/tmp/posthorn-bench/root/usr/sbin/smtp-source"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))

import helpers  # noqa: E402
from dnsfixture import DnsFixture  # noqa: E402

RCPT = "user@example.test"
SENDER = "bench@bench.test"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
ZONES = "zen.bench.test*3,bl.bench.test*2,wl.bench.test*-5"

OFF = {"ENABLE_POLICYD_SPF": "0", "ENABLE_SPAMASSASSIN": "0", "ENABLE_DNSBL": "0",
       "ENABLE_CLAMAV": "0", "ENABLE_POSTGREY": "0"}
FILTERS = dict(OFF, ENABLE_POLICYD_SPF="1", ENABLE_SPAMASSASSIN="1", ENABLE_DNSBL="1",
               DNSBL_ZONES=ZONES)
CLAMAV = dict(FILTERS, ENABLE_CLAMAV="1")
CONFIGS = {"off": OFF, "filters": FILTERS, "clamav": CLAMAV,
           # one filter at a time, for a breakdown (--configs spf,dnsbl,...)
           "spf": dict(OFF, ENABLE_POLICYD_SPF="1"),
           "dnsbl": dict(OFF, ENABLE_DNSBL="1", DNSBL_ZONES=ZONES),
           "spam": dict(OFF, ENABLE_SPAMASSASSIN="1"),
           "clamav-only": dict(OFF, ENABLE_CLAMAV="1")}
LABELS = {"off": "all filters off",
          "filters": "SPF + spam scoring + DNSBL",
          "clamav": "SPF + spam scoring + DNSBL + ClamAV",
          "spf": "SPF only",
          "dnsbl": "DNSBL only (3 zones)",
          "spam": "spam scoring only",
          "clamav-only": "ClamAV only"}


def proc_status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def cpu_seconds(pid):
    """User + system CPU time of the process (all threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / float(ticks)


def write_clamav_db():
    d = tempfile.mkdtemp(prefix="posthorn-bench-clamdb-")
    os.chmod(d, 0o755)
    path = os.path.join(d, "bench.hdb")
    with open(path, "w") as f:
        f.write("%s:%d:Eicar-Test-Signature\n" % (hashlib.md5(EICAR).hexdigest(), len(EICAR)))
    os.chmod(path, 0o644)
    return d


def sample_lines(log):
    """The last per-message filter line and Received-SPF-related line of the
    log, to show that the filters ran."""
    out = []
    for marker in ("filter: ", "spf: "):
        hits = [l for l in log.splitlines() if marker in l]
        if hits:
            out.append(hits[-1])
    return out


def run_one(name, args, dns, dbdir):
    settings = dict(CONFIGS[name])
    settings.update({"LOG_LEVEL": args.log_level, "DNS_RESOLVER": dns.resolver,
                     "CLAMAV_DB_DIR": dbdir})
    d = helpers.Daemon(settings, name="fbench-" + name)
    d.settings.pop("WORKER_THREADS")  # the daemon's default
    for item in args.set:
        k, _, v = item.partition("=")
        d.settings[k] = v
    d.write_settings()
    try:
        d.start()
        rc, out, err = d.setup("email", "add", RCPT, "bench-password")
        if rc != 0:
            sys.exit("bench: setup email add failed (%d): %s" % (rc, err.strip()))
        if settings["ENABLE_CLAMAV"] == "1":
            helpers.wait_until(lambda: "clamav: loaded virus database" in d.log_text(), 60,
                               interval=0.05, what="the virus database to load")
        cmd = [args.smtp_source, "-c", "-s", str(args.sessions), "-l", str(args.size),
               "-m", str(args.messages), "-f", SENDER, "-t", RCPT,
               "127.0.0.1:%d" % d.port]
        cpu0 = cpu_seconds(d.pid)
        t0 = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(d.pid) - cpu0
        hwm = proc_status_kib(d.pid, "VmHWM")
        files = len(d.messages(RCPT))
        alive = d.running()
        log = d.log_text()
        rc_stop = d.stop()
        return {"name": name, "cmd": " ".join(cmd[1:]), "rc": p.returncode,
                "stderr": p.stderr, "elapsed": elapsed, "cpu": cpu, "files": files,
                "hwm": hwm, "alive": alive, "rc_stop": rc_stop,
                "sample": sample_lines(log)}
    finally:
        rc, tail = d.cleanup()
        if rc not in (None, 0):
            print("bench: posthornd stderr tail:\n" + tail, file=sys.stderr)


def report(results, args):
    print("filter cost: smtp-source -c -s %d -l %d -m %d, one connection per message"
          % (args.sessions, args.size, args.messages))
    w = max(len(v) for v in LABELS.values())
    print("%-*s  %8s  %7s  %9s  %11s  %12s  %s" % (w, "configuration", "wall s", "msgs/s",
                                                  "files", "peak RSS", "CPU ms/msg", "exit"))
    ok = True
    for r in results:
        rate = args.messages / r["elapsed"] if r["elapsed"] > 0 else 0
        good = r["files"] == args.messages and r["rc"] == 0 and r["alive"]
        ok = ok and good
        print("%-*s  %8.2f  %7.0f  %9s  %7.1f MiB  %12.2f  smtp-source %d, posthornd %s%s"
              % (w, LABELS[r["name"]], r["elapsed"], rate,
                 "%d/%d" % (r["files"], args.messages), r["hwm"] / 1024.0,
                 1000.0 * r["cpu"] / args.messages, r["rc"], r["rc_stop"],
                 "" if good else "  MISMATCH"))
        for line in r["sample"]:
            print("  log: " + line[-160:])
        if r["stderr"].strip():
            lines = r["stderr"].strip().splitlines()
            print("  smtp-source: %d line(s) on stderr, first: %s" % (len(lines), lines[0]))
    try:
        with open("/proc/loadavg") as f:
            print("load average after the runs: %s" % " ".join(f.read().split()[:3]))
    except OSError:
        pass
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smtp-source", required=True)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--configs", default="off,filters,clamav",
                    help="comma-separated, in order, from: " + ",".join(CONFIGS))
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the list of configurations, alternating, N times")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a posthornd setting for every run, e.g. WORKER_THREADS=4")
    args = ap.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    for n in names:
        if n not in CONFIGS:
            sys.exit("bench: unknown configuration %r" % n)
    for p in (helpers.posthornd_path(), helpers.setup_path()):
        if not os.access(p, os.X_OK):
            sys.exit("bench: %s missing; run make first" % p)
    dns = DnsFixture({"bench.test": {"TXT": ["v=spf1 ip4:127.0.0.0/8 -all"]}}).start()
    dbdir = write_clamav_db()
    try:
        results = [run_one(n, args, dns, dbdir) for _ in range(args.rounds) for n in names]
    finally:
        dns.stop()
        shutil.rmtree(dbdir, ignore_errors=True)
    sys.exit(report(results, args))


if __name__ == "__main__":
    main()
