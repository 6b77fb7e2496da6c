"""IMAP IDLE memory benchmark: posthornd against Dovecot 2.3 (run through
tests/bench/run, or directly: python3 tests/bench/imap_idle_bench.py --help).

Starts each server like imap_bench.py does (same accounts, certificate and
preloaded mailboxes), measures its memory, opens N (default 1000) TLS
connections to the implicit-TLS port from one asyncio process, and on each
logs in (the N sessions spread over the 50 accounts), SELECTs INBOX and
sends IDLE. Once every connection has its "+ idling" and a settling time
has passed, measures the memory again and reports

    (after - before) / N

for VmRSS (summed over the server's processes: for Dovecot that counts the
shared libraries once per process) and for PSS (from smaps_rollup, shared
pages divided among the processes that map them). Lines of figures, never
pass/fail."""

import argparse
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import imap_bench as ib  # noqa: E402


async def read_tagged(reader, tag):
    """Reads response lines until the tagged one; returns it. Literals are
    not expected in these replies (LOGIN, SELECT)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ib.ImapError("connection closed by the server")
        if line.startswith(tag + b" "):
            if line[len(tag) + 1:len(tag) + 3] != b"OK":
                raise ib.ImapError(line.decode(errors="replace").strip())
            return line


async def open_idle(i, port, mode, ctx, users, sem, conns, errors):
    async with sem:
        try:
            if mode == "tls":
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname=ib.HOSTNAME, limit=1 << 20)
            else:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
            greeting = await reader.readline()
            if not greeting.startswith(b"* OK"):
                raise ib.ImapError("greeting %r" % greeting[:100])
            if mode == "starttls":
                writer.write(b"s STARTTLS\r\n")
                await read_tagged(reader, b"s")
                await writer.start_tls(ctx, server_hostname=ib.HOSTNAME)
            user = ib.user_name(users[i % len(users)])
            writer.write(b"a LOGIN %s %s\r\n" % (user.encode(), ib.PASSWORD.encode()))
            await read_tagged(reader, b"a")
            writer.write(b"b SELECT INBOX\r\n")
            await read_tagged(reader, b"b")
            writer.write(b"c IDLE\r\n")
            while True:
                line = await reader.readline()
                if not line or line.startswith(b"c "):
                    raise ib.ImapError("IDLE refused: %r" % line[:200])
                if line.startswith(b"+"):
                    break
            conns.append((reader, writer))
        except (OSError, ib.ImapError, asyncio.IncompleteReadError) as e:
            errors.append("%s: %s" % (type(e).__name__, e))


async def open_all(port, mode, n, users, parallel):
    ctx = ib.client_context()
    sem = asyncio.Semaphore(parallel)
    conns, errors = [], []
    await asyncio.gather(*(open_idle(i, port, mode, ctx, users, sem, conns, errors)
                           for i in range(n)))
    return conns, errors


async def close_all(conns):
    for reader, writer in conns:
        try:
            writer.write(b"DONE\r\nd LOGOUT\r\n")
            writer.close()
        except (OSError, RuntimeError):
            pass
    await asyncio.sleep(0.5)


def stable_memory(pid, settle):
    """Memory after `settle` seconds and once two readings 0.5 s apart agree
    within 1 % (at most 10 more seconds)."""
    time.sleep(settle)
    prev = ib.tree_memory(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cur = ib.tree_memory(pid)
        if abs(cur[0] - prev[0]) <= prev[0] / 100:
            return cur
        prev = cur
    return prev


INOTIFY = "/proc/sys/fs/inotify/max_user_instances"


def raise_inotify(want):
    """Dovecot's imap processes take one inotify instance each, all as the
    mail user; beyond the limit (128 by default) they log a warning, poll
    instead and never hibernate. Returns the old value to restore, or None."""
    try:
        with open(INOTIFY) as f:
            old = int(f.read())
        if old >= want:
            return None
        with open(INOTIFY, "w") as f:
            f.write(str(want))
        return old
    except (OSError, ValueError) as e:
        print("bench: cannot raise %s to %d (%s); Dovecot will poll instead of "
              "using inotify" % (INOTIFY, want, e))
        return None


def bench_server(name, hashes, cert, key, args):
    server = ib.make_server(name, hashes, cert, key, args.connections + 200,
                            args.log_level, args.set)
    if args.mode == "starttls" and "starttls" not in server.modes:
        print("%-18s skipped: no STARTTLS" % name)
        return
    loop = asyncio.new_event_loop()
    try:
        server.start()
        ib.preload(server, argparse.Namespace(clients=min(20, args.users), users=args.users,
                                              messages=args.messages))
        before = stable_memory(server.pid, 1.0)
        t = time.monotonic()
        conns, errors = loop.run_until_complete(open_all(
            server.ports[args.mode], args.mode, args.connections,
            list(range(args.users)), args.parallel))
        opened = time.monotonic() - t
        after = stable_memory(server.pid, args.settle)
        n = len(conns)
        alive = server.alive()
        loop.run_until_complete(close_all(conns))
        report(server, args, before, after, n, errors, opened, alive)
    except (RuntimeError, AssertionError, OSError, ib.ImapError) as e:
        print("%-18s failed: %s" % (name, e))
        if isinstance(server, ib.Dovecot):
            print(server.log_tail())
    finally:
        loop.close()
        server.stop()


def report(server, args, before, after, n, errors, opened, alive):
    per = n or 1
    print("%-18s %s  idling %4d/%d (opened in %.1f s)  processes %d -> %d  "
          "RSS %.1f -> %.1f MiB = %5.1f KiB/conn  PSS %.1f -> %.1f MiB = %5.1f KiB/conn%s"
          % (server.name, args.mode, n, args.connections, opened, before[2], after[2],
             before[0] / 1024, after[0] / 1024, (after[0] - before[0]) / per,
             before[1] / 1024, after[1] / 1024, (after[1] - before[1]) / per,
             "" if alive else "  SERVER DIED"))
    if errors:
        print("%-18s %d connection(s) failed, first: %s" % ("", len(errors), errors[0][:300]))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="posthorn,dovecot-default,dovecot-tuned,"
                    "dovecot-hibernate",
                    help="comma-separated: posthorn, dovecot-default, dovecot-tuned, "
                         "dovecot-hibernate")
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--mode", choices=("tls", "starttls"), default="tls")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20, help="preloaded per mailbox")
    ap.add_argument("--parallel", type=int, default=50,
                    help="connections being set up at the same time")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds to wait after the last IDLE before measuring "
                         "(Dovecot hibernates after 2 s in hibernate.conf)")
    ap.add_argument("--inotify-instances", type=int, default=None,
                    help="raise %s to this for the run and restore it after "
                         "(default: connections + 200; 0 leaves it alone)" % INOTIFY)
    ap.add_argument("--scheme", choices=sorted(ib.SCHEMES), default="sha512-crypt")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--set", action="append", default=[], metavar="SETTING",
                    help="posthorn: NAME=VALUE; dovecot: a config line")
    args = ap.parse_args()
    if args.inotify_instances is None:
        args.inotify_instances = args.connections + 200
    names = ib.server_names(args.servers, ("posthorn",) + tuple(
        "dovecot-" + v for v in ib.DOVECOT_VARIANTS))
    nofile = ib.raise_nofile(args.connections * 3 + 200)
    if nofile < args.connections + 100:
        print("bench: RLIMIT_NOFILE is %d, too low for %d connections"
              % (nofile, args.connections))
    base = ib.tempfile.mkdtemp(prefix="posthorn-bench-tls-")
    old_inotify = None
    if args.inotify_instances:
        old_inotify = raise_inotify(args.inotify_instances)
    try:
        cert, key = ib.make_cert(base)
        hashes = ib.make_hashes(args.users, args.scheme)
        print("# IMAP IDLE memory: %d %s connections over %d accounts, measured %.0f s "
              "after the last IDLE" % (args.connections, args.mode, args.users, args.settle))
        print("# machine: %s; fs.inotify.max_user_instances %s"
              % (ib.machine_line(), open(INOTIFY).read().strip()))
        for name in names:
            bench_server(name, hashes, cert, key, args)
    finally:
        ib.shutil.rmtree(base, ignore_errors=True)
        if old_inotify is not None:
            with open(INOTIFY, "w") as f:
                f.write(str(old_inotify))


if __name__ == "__main__":
    main()
