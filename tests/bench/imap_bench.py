"""IMAP throughput benchmark: posthornd against Dovecot 2.3 (run through
tests/bench/run, or directly: python3 tests/bench/imap_bench.py --help).

Every server gets the same 50 accounts (the same password hashes), the same
throwaway TLS certificate and the same preloaded mailboxes (20 messages
each, APPENDed over IMAP). Then N client processes (default 20) loop for a
fixed time: connect, [STARTTLS], LOGIN, SELECT INBOX, FETCH 1:* (FLAGS),
FETCH of the last five (BODY.PEEK[HEADER]), FETCH one (BODY[]), STORE +FLAGS
(\\Seen), APPEND, STORE +FLAGS (\\Deleted) on the first, EXPUNGE, LOGOUT.
Each tagged OK counts as one operation. Client i uses the accounts i, i+N,
i+2N, ... in turn, so two clients never share a mailbox.

Reports lines of figures (never pass/fail), per server and mode:
operations/s, logins/s, errors, the server's CPU time per operation (its
whole process tree; steadier than ops/s when other work shares the machine),
the server's, the clients' and the whole machine's CPU use, and the 1-minute
load average before the run (other work on the machine shows there).
The module also holds what imap_idle_bench.py shares: the servers, the
certificate, the hashes and the memory figures."""

import argparse
import ctypes
import multiprocessing
import os
import pwd
import queue
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import helpers  # noqa: E402

PASSWORD = "bench-password-1"
DOMAIN = helpers.DOMAIN
HOSTNAME = helpers.HOSTNAME
DOVECOT_DIR = os.path.join(HERE, "dovecot")
DOVECOT_VARIANTS = ("tuned", "default", "hibernate")


def user_name(i):
    return "user%02d@%s" % (i, DOMAIN)


# --------------------------------------------------------------------------
# Password hashes (libcrypt, like posthorn and Dovecot themselves)

def _libcrypt():
    lc = ctypes.CDLL("libcrypt.so.1")
    lc.crypt_gensalt.restype = ctypes.c_char_p
    lc.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p,
                                 ctypes.c_int]
    lc.crypt.restype = ctypes.c_char_p
    lc.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lc


SCHEMES = {"sha512-crypt": b"$6$", "yescrypt": b"$y$"}


def make_hashes(n, scheme):
    """n crypt(3) hashes of PASSWORD, each with its own salt, default cost."""
    lc = _libcrypt()
    out = []
    for _ in range(n):
        setting = lc.crypt_gensalt(SCHEMES[scheme], 0, None, 0)
        h = lc.crypt(PASSWORD.encode(), setting)
        if not setting or not h or h.startswith(b"*"):
            sys.exit("bench: libcrypt cannot make %s hashes" % scheme)
        out.append(h.decode())
    return out


def make_cert(directory):
    """A throwaway self-signed P-256 certificate (posthorn's own kind)."""
    os.makedirs(directory, exist_ok=True)
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                    "/CN=" + HOSTNAME, "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.chmod(key, 0o644)  # read by the servers' unprivileged processes; thrown away
    os.chmod(directory, 0o755)
    return cert, key


# --------------------------------------------------------------------------
# Process figures from /proc

def _stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()  # fields from 3 (state) on


def process_tree(root):
    """root and every descendant that is alive now."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def tree_cpu_seconds(root):
    """CPU time of root's live tree plus the children root has reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in process_tree(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])          # utime, stime
        if pid == root:
            total += int(f[13]) + int(f[14])      # cutime, cstime
    return total / tick


def machine_busy():
    """(busy jiffies, total jiffies) over all CPUs since boot."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def _kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root):
    """(sum of VmRSS, sum of Pss, process count) of root's tree, in KiB."""
    pids = process_tree(root)
    rss = sum(_kib("/proc/%d/status" % p, "VmRSS:") for p in pids)
    pss = sum(_kib("/proc/%d/smaps_rollup" % p, "Pss:") for p in pids)
    return rss, pss, len(pids)


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------
# A minimal, fast IMAP client (raw sockets: the client must not be the
# bottleneck)

class ImapError(Exception):
    pass


class Deadline(Exception):
    """The run's time is up; the reply that came after it is not counted."""


LITERAL_RE = re.compile(rb"\{(\d+)\+?\}$")
EXISTS_RE = re.compile(rb"^\* (\d+) EXISTS$", re.M)


def client_context():
    return helpers.insecure_tls_context()


class Client:
    def __init__(self, port, mode, ctx, timeout=30.0, deadline=None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "tls":
            sock = ctx.wrap_socket(sock, server_hostname=HOSTNAME)
        self.sock = sock
        self.buf = bytearray()
        self.tagn = 0
        self.deadline = deadline  # time.time() after which nothing counts
        self.ops = 0
        self.lat = {}             # command name -> [count, seconds]
        greeting = self.readline()
        if not greeting.startswith(b"* OK"):
            raise ImapError("greeting: %r" % greeting[:200])
        if mode == "starttls":
            self.ok(b"STARTTLS")  # counted: it is a command the server answers
            if self.buf:
                raise ImapError("data after the STARTTLS reply: %r" % bytes(self.buf[:100]))
            self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def _fill(self):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ImapError("connection closed by the server")
        self.buf += chunk

    def readline(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            self._fill()

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def response(self):
        """One response line with its literals inlined."""
        line = self.readline()
        m = LITERAL_RE.search(line)
        while m:
            line += b"\r\n" + self._read_exact(int(m.group(1))) + self.readline()
            m = LITERAL_RE.search(line)
        return line

    def _tag(self):
        self.tagn += 1
        return b"a%d" % self.tagn

    def _finish(self, tag, what, t0):
        untagged = []
        prefix = tag + b" "
        while True:
            r = self.response()
            if r.startswith(prefix):
                if r[len(prefix):len(prefix) + 2] != b"OK":
                    raise ImapError("%s: %r" % (what, r[:200]))
                if self.deadline is not None and time.time() > self.deadline:
                    raise Deadline()
                self.ops += 1
                st = self.lat.setdefault(what, [0, 0.0])
                st[0] += 1
                st[1] += time.monotonic() - t0
                return untagged
            untagged.append(r)

    def ok(self, cmd):
        t0 = time.monotonic()
        tag = self._tag()
        self.sock.sendall(tag + b" " + cmd + b"\r\n")
        return self._finish(tag, cmd.split(b" ", 1)[0].decode(), t0)

    def append(self, mailbox, msg, flags=b""):
        t0 = time.monotonic()
        tag = self._tag()
        self.sock.sendall(b"%s APPEND %s %s{%d}\r\n" % (
            tag, mailbox, flags + b" " if flags else b"", len(msg)))
        while True:
            r = self.response()
            if r.startswith(b"+"):
                break
            if r.startswith(tag + b" "):
                raise ImapError("APPEND: %r" % r[:200])
        self.sock.sendall(msg + b"\r\n")
        return self._finish(tag, "APPEND", t0)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def exists_of(untagged):
    n = 0
    for r in untagged:
        m = EXISTS_RE.match(r)
        if m:
            n = int(m.group(1))
    return n


def make_message(rng, seq, size):
    """A plain text message of about `size` octets, CRLF."""
    hdr = ("From: Sender %d <sender%d@example.org>\r\nTo: <user@%s>\r\n"
           "Subject: benchmark message %d with a subject of usual length\r\n"
           "Message-ID: <bench-%d-%d@example.org>\r\n"
           "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n"
           % (seq, seq, DOMAIN, seq, os.getpid(), seq)).encode()
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"posthorn", b"mail"]
    lines, n = [], len(hdr)
    while n < size:
        line = b" ".join(rng.choice(words) for _ in range(12))
        lines.append(line)
        n += len(line) + 2
    return hdr + b"\r\n".join(lines) + b"\r\n"


# --------------------------------------------------------------------------
# Servers

class Posthorn:
    """build/posthornd with IMAP on 143-like (STARTTLS) and 993-like ports."""
    name = "posthorn"
    modes = ("starttls", "tls")
    skip_reason = {"plain": "posthorn refuses LOGIN before STARTTLS (LOGINDISABLED)"}

    def __init__(self, hashes, cert, key, conn_limit, log_level, extra):
        settings = helpers.imap_settings({
            "LOG_LEVEL": log_level, "SSL_TYPE": "manual",
            "SSL_CERT_PATH": cert, "SSL_KEY_PATH": key,
            "MAX_CONNECTIONS": str(conn_limit),
            "MAX_CONNECTIONS_PER_IP": str(conn_limit)})
        self.d = helpers.Daemon(settings, name="imapbench")
        self.d.settings.pop("WORKER_THREADS")  # the daemon's default
        for item in extra:
            k, _, v = item.partition("=")
            self.d.settings[k] = v
        self.d.write_settings()
        self.hashes = hashes
        self.ports = {"starttls": helpers.listen_port(self.d, "IMAP_LISTEN"),
                      "tls": helpers.listen_port(self.d, "IMAPS_LISTEN")}
        self.ports["plain"] = self.ports["starttls"]

    def start(self):
        self.d.start()
        imp = os.path.join(self.d.base, "import")
        os.mkdir(imp)
        with open(os.path.join(imp, "postfix-accounts.cf"), "w") as f:
            for i, h in enumerate(self.hashes):
                f.write("%s|{%s}%s\n" % (user_name(i),
                                          "SHA512-CRYPT" if h.startswith("$6$") else "CRYPT", h))
        rc, out, err = self.d.setup("import", "dms", imp)
        if rc != 0:
            raise RuntimeError("setup import dms failed (%d): %s %s" % (rc, out, err))
        wait_greeting(self.ports["tls"], tls=True, proc=self.d.proc)

    @property
    def pid(self):
        return self.d.pid

    def alive(self):
        return self.d.running()

    def describe(self):
        return "posthornd %s" % helpers.posthornd_path()

    def stop(self):
        rc, tail = self.d.cleanup()
        if rc not in (None, 0):
            print("bench: posthornd exit %s, stderr tail:\n%s" % (rc, tail), file=sys.stderr)


class Dovecot:
    """Dovecot 2.3 as the bench's child with tests/bench/dovecot/<variant>.conf."""
    modes = ("plain", "starttls", "tls")
    skip_reason = {}

    def __init__(self, variant, hashes, cert, key, conn_limit, log_level, extra):
        self.variant = variant
        self.name = "dovecot-" + variant
        self.hashes = hashes
        self.base = tempfile.mkdtemp(prefix="posthorn-bench-dovecot-")
        self.proc = None
        try:
            self._configure(cert, key, conn_limit, log_level, extra)
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    def _configure(self, cert, key, conn_limit, log_level, extra):
        hashes = self.hashes
        variant = self.variant
        os.chmod(self.base, 0o755)
        self.ports = {"plain": helpers.free_port(), "tls": helpers.free_port()}
        self.ports["starttls"] = self.ports["plain"]
        root = os.geteuid() == 0
        if root:
            uid = gid = 5000
            internal, login = "dovecot", "dovenull"
        else:
            uid, gid = os.getuid(), os.getgid()
            internal = login = pwd.getpwuid(uid).pw_name
        for sub in ("run", "state", "log", "tls", "mail"):
            os.mkdir(os.path.join(self.base, sub))
            os.chmod(os.path.join(self.base, sub), 0o755)
        shutil.copy(cert, os.path.join(self.base, "tls", "cert.pem"))
        shutil.copy(key, os.path.join(self.base, "tls", "key.pem"))
        if root:
            os.chown(os.path.join(self.base, "mail"), uid, gid)
        with open(os.path.join(self.base, "users"), "w") as f:
            for i, h in enumerate(hashes):
                f.write("%s:%s::::::\n" % (user_name(i), h))
        values = {"BASE": self.base, "INTERNAL_USER": internal, "LOGIN_USER": login,
                  "FIRST_VALID_UID": str(min(uid, 500)) if uid else "1",
                  "UID": str(uid), "GID": str(gid),
                  "DH_FILE": "/usr/share/dovecot/dh.pem",
                  "CONN_LIMIT": str(conn_limit), "CLIENT_LIMIT": str(conn_limit * 4),
                  "IMAP_PORT": str(self.ports["plain"]),
                  "IMAPS_PORT": str(self.ports["tls"]),
                  "NCPU": str(os.cpu_count() or 1), "VARIANT": variant}
        for name in os.listdir(DOVECOT_DIR):
            if not name.endswith(".conf"):
                continue
            with open(os.path.join(DOVECOT_DIR, name)) as f:
                text = f.read()
            for k, v in values.items():
                text = text.replace("@%s@" % k, v)
            left = re.findall(r"@[A-Z_]+@", text)
            if left:
                raise RuntimeError("%s: unknown placeholders %s" % (name, left))
            with open(os.path.join(self.base, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(self.base, name), 0o644)
        self.conf = os.path.join(self.base, "dovecot.conf")
        if log_level == "debug":
            with open(self.conf, "a") as f:
                f.write("auth_verbose = yes\nmail_debug = yes\n")
        for item in extra:
            with open(self.conf, "a") as f:
                f.write(item + "\n")

    def start(self):
        self.proc = subprocess.Popen([dovecot_binary(), "-F", "-c", self.conf],
                                     stdin=subprocess.DEVNULL,
                                     stdout=open(os.path.join(self.base, "log", "stdout"), "ab"),
                                     stderr=subprocess.STDOUT)
        wait_greeting(self.ports["tls"], tls=True, proc=self.proc,
                      log=os.path.join(self.base, "log", "dovecot.log"))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def describe(self):
        return "%s -F -c %s (%s.conf)" % (dovecot_binary(), self.conf, self.variant)

    def log_tail(self, n=20):
        try:
            with open(os.path.join(self.base, "log", "dovecot.log"), errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for p in process_tree(self.proc.pid):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def dovecot_binary():
    return shutil.which("dovecot") or "/usr/sbin/dovecot"


def dovecot_version():
    try:
        p = subprocess.run([dovecot_binary(), "--version"], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None
    except OSError:
        return None


def wait_greeting(port, tls, proc, log=None, timeout=30.0):
    ctx = client_context()

    def greets():
        if proc.poll() is not None:
            tail = ""
            if log and os.path.exists(log):
                with open(log, errors="replace") as f:
                    tail = f.read()[-3000:]
            raise RuntimeError("server exited with %s during start\n%s" % (proc.returncode, tail))
        try:
            c = Client(port, "tls" if tls else "plain", ctx, timeout=2)
            c.close()
            return True
        except (OSError, ImapError):
            return False

    helpers.wait_until(greets, timeout, interval=0.1, what="IMAP greeting on %d" % port)


def make_server(name, hashes, cert, key, conn_limit, log_level, extra):
    if name == "posthorn":
        return Posthorn(hashes, cert, key, conn_limit, log_level, extra)
    variant = name.split("-", 1)[1]
    return Dovecot(variant, hashes, cert, key, conn_limit, log_level, extra)


def server_names(arg, allowed):
    names = [n.strip() for n in arg.split(",") if n.strip()]
    out = []
    for n in names:
        if n not in allowed:
            sys.exit("bench: unknown server %r (known: %s)" % (n, ", ".join(allowed)))
        if n.startswith("dovecot") and not dovecot_version():
            print("bench: %s skipped: dovecot is not installed "
                  "(apt-get install -y --no-install-recommends dovecot-imapd)" % n)
            continue
        if n == "posthorn" and not os.access(helpers.posthornd_path(), os.X_OK):
            print("bench: posthorn skipped: %s missing; run make first"
                  % helpers.posthornd_path())
            continue
        out.append(n)
    return out


# --------------------------------------------------------------------------
# Preload and the load generator

def preload_worker(port, mode, users, messages, seed):
    """Fills each user's INBOX to `messages` messages, SELECTs it once."""
    rng = random.Random(seed)
    ctx = client_context()
    for u in users:
        c = Client(port, mode, ctx)
        c.ok(b"LOGIN %s %s" % (user_name(u).encode(), PASSWORD.encode()))
        have = exists_of(c.ok(b"SELECT INBOX"))
        for k in range(have, messages):
            size = rng.choice((1500, 3000, 6000, 12000, 25000))
            c.append(b"INBOX", make_message(rng, u * 1000 + k, size))
        c.ok(b"SELECT INBOX")
        c.ok(b"LOGOUT")
        c.close()


def preload(server, args):
    mode = "starttls" if "plain" not in server.modes else "plain"
    port = server.ports[mode]
    procs = []
    for w in range(min(args.clients, args.users)):
        users = list(range(w, args.users, args.clients))
        p = multiprocessing.Process(target=preload_worker,
                                    args=(port, mode, users, args.messages, w))
        p.start()
        procs.append(p)
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError("preload failed (a client exited with %s)" % p.exitcode)


def session(c, user, rng, msg):
    """One client session after connect: the command mix of the issue."""
    c.ok(b"LOGIN %s %s" % (user.encode(), PASSWORD.encode()))
    exists = exists_of(c.ok(b"SELECT INBOX"))
    if exists:
        c.ok(b"FETCH 1:* (FLAGS)")
        c.ok(b"FETCH %d:%d (BODY.PEEK[HEADER])" % (max(1, exists - 4), exists))
        n = rng.randint(1, exists)
        c.ok(b"FETCH %d (BODY[])" % n)
        c.ok(b"STORE %d +FLAGS (\\Seen)" % n)
    c.append(b"INBOX", msg)
    if exists:
        c.ok(b"STORE 1 +FLAGS (\\Deleted)")
        c.ok(b"EXPUNGE")
    c.ok(b"LOGOUT")


def load_worker(idx, port, mode, users, start_at, stop_at, results):
    rng = random.Random(idx)
    ctx = client_context()
    msg = make_message(rng, 900000 + idx, 4000)
    ops = iterations = errors = 0
    first_error = ""
    lat = {}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    k = 0
    while time.time() < stop_at:  # an unfinished session's completed commands count
        user = user_name(users[k % len(users)])
        k += 1
        c = None
        try:
            c = Client(port, mode, ctx, deadline=stop_at)
            session(c, user, rng, msg)
            iterations += 1
        except Deadline:
            pass
        except Exception as e:  # noqa: BLE001 - counted and reported, the run goes on
            errors += 1
            if not first_error:
                first_error = "%s: %s" % (type(e).__name__, e)
            time.sleep(0.01)
        finally:
            if c is not None:
                ops += c.ops
                for name, (n, t) in c.lat.items():
                    st = lat.setdefault(name, [0, 0.0])
                    st[0] += n
                    st[1] += t
                c.close()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    results.put((ops, iterations, errors, first_error, cpu, lat))


def run_load(server, mode, args):
    port = server.ports[mode]
    load = os.getloadavg()[0]
    results = multiprocessing.Queue()
    procs = []
    start_at = time.time() + 1.0 + 0.02 * args.clients
    stop_at = start_at + args.duration
    for i in range(args.clients):
        users = list(range(i, args.users, args.clients)) or [i % args.users]
        p = multiprocessing.Process(target=load_worker,
                                    args=(i, port, mode, users, start_at, stop_at, results))
        p.start()
        procs.append(p)
    time.sleep(max(0.0, start_at - time.time()))
    cpu0, busy0, t0 = tree_cpu_seconds(server.pid), machine_busy(), time.monotonic()
    time.sleep(max(0.0, stop_at - time.time()))
    cpu1, busy1, t1 = tree_cpu_seconds(server.pid), machine_busy(), time.monotonic()
    got = []
    for _ in procs:
        try:
            got.append(results.get(timeout=60))
        except queue.Empty:
            break
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.kill()
    if len(got) < len(procs):
        raise RuntimeError("%d of %d client processes gave no result"
                           % (len(procs) - len(got), len(procs)))
    elapsed = t1 - t0
    ncpu = os.cpu_count() or 1
    lat = {}
    for g in got:
        for name, (n, t) in g[5].items():
            st = lat.setdefault(name, [0, 0.0])
            st[0] += n
            st[1] += t
    return {
        "ops": sum(g[0] for g in got), "iterations": sum(g[1] for g in got),
        "errors": sum(g[2] for g in got),
        "first_error": next((g[3] for g in got if g[3]), ""),
        "client_cpu": sum(g[4] for g in got), "server_cpu": cpu1 - cpu0,
        "machine": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "elapsed": elapsed, "ncpu": ncpu, "lat": lat, "alive": server.alive(), "load": load,
    }


def print_row(server, mode, r, args):
    e = r["elapsed"]
    print("%-16s %-8s  ops/s %7.0f  logins/s %6.1f  errors %4d  server CPU/op %5.0f us  "
          "CPU: server %4.0f%% client %4.0f%% machine %3.0f%% of %d, load before %.1f%s"
          % (server.name, mode, r["ops"] / e, r["iterations"] / e, r["errors"],
             1e6 * r["server_cpu"] / max(1, r["ops"]),
             100 * r["server_cpu"] / e, 100 * r["client_cpu"] / e,
             100 * r["machine"], r["ncpu"], r["load"], "" if r["alive"] else "  SERVER DIED"))
    if args.latency:
        order = ("STARTTLS", "LOGIN", "SELECT", "FETCH", "STORE", "APPEND", "EXPUNGE", "LOGOUT")
        print("%-16s %-8s  mean ms: %s" % ("", "", "  ".join(
            "%s %.1f" % (k, 1000 * r["lat"][k][1] / r["lat"][k][0])
            for k in order if k in r["lat"])))
    if r["first_error"]:
        print("%-16s %-8s  first error: %s" % ("", "", r["first_error"][:300]))
    sys.stdout.flush()


def bench_server(name, hashes, cert, key, args):
    server = make_server(name, hashes, cert, key, args.conn_limit, args.log_level, args.set)
    try:
        server.start()
        t = time.monotonic()
        preload(server, args)
        print("# %s: %s; preloaded %d mailboxes x %d messages in %.1f s"
              % (server.name, server.describe(), args.users, args.messages,
                 time.monotonic() - t))
        for mode in args.modes:
            if mode not in server.modes:
                print("%-16s %-8s  skipped: %s" % (server.name, mode,
                                                  server.skip_reason.get(mode, "n/a")))
                continue
            print_row(server, mode, run_load(server, mode, args), args)
            if not server.alive():
                break
    except (RuntimeError, AssertionError, OSError, ImapError) as e:
        print("%-16s failed: %s" % (name, e))
        if isinstance(server, Dovecot):
            print(server.log_tail())
    finally:
        server.stop()


def machine_line():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "nproc %d, %s, kernel %s" % (os.cpu_count() or 0, model, os.uname().release)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="posthorn,dovecot-tuned,dovecot-default",
                    help="comma-separated: posthorn, dovecot-tuned, dovecot-default")
    ap.add_argument("--modes", default="plain,starttls,tls",
                    help="comma-separated: plain (143, no TLS), starttls, tls (993)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20, help="preloaded per mailbox")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    ap.add_argument("--scheme", choices=sorted(SCHEMES), default="sha512-crypt",
                    help="password hash of every account (default: docker-mailserver's)")
    ap.add_argument("--conn-limit", type=int, default=2000,
                    help="connection limits given to both servers")
    ap.add_argument("--latency", action="store_true",
                    help="also print the mean latency of each command (as the clients see it)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--set", action="append", default=[], metavar="SETTING",
                    help="posthorn: NAME=VALUE; dovecot: a config line")
    args = ap.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    names = server_names(args.servers, ("posthorn",) + tuple(
        "dovecot-" + v for v in DOVECOT_VARIANTS))
    raise_nofile(args.conn_limit * 2 + 100)
    base = tempfile.mkdtemp(prefix="posthorn-bench-tls-")
    try:
        cert, key = make_cert(base)
        hashes = make_hashes(args.users, args.scheme)
        print("# IMAP benchmark: %d clients, %d mailboxes x %d messages, %.0f s per run, "
              "%s hashes" % (args.clients, args.users, args.messages, args.duration,
                             args.scheme))
        print("# machine: %s; %s" % (machine_line(), dovecot_version() and
                                     "dovecot " + dovecot_version() or "no dovecot"))
        for name in names:
            bench_server(name, hashes, cert, key, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
