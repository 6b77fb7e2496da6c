"""Network namespaces for the multi-host tests: a private two-host network
(a veth pair between two namespaces, addresses in 198.18.0.0/15, loopback
up, no default route), programs run inside a namespace through
`ip netns exec`, and a posthornd launcher for that.

Everything created here is removed by TwoHostNet.destroy(), which the tests
call in teardown whatever happened: processes are ended (SIGTERM, then
SIGKILL), then the namespaces are deleted (which deletes the veth pair)."""

import json
import os
import random
import subprocess
import sys
import tempfile

from helpers import Daemon, clean_env, posthornd_path, wait_until

IP = "ip"
_rng = random.SystemRandom()


class NetnsUnavailable(Exception):
    """`ip netns add` failed: not root, or no CAP_SYS_ADMIN in a container."""


def run(cmd, check=True, timeout=20):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                                (p.stderr or p.stdout).strip()))
    return p


def in_ns(ns, cmd):
    """The argv that runs cmd inside namespace ns."""
    return [IP, "netns", "exec", ns] + list(cmd)


def ns_greets(ns, host, port):
    """True when host:port, seen from inside ns, answers with a 220."""
    probe = ("import socket,sys\n"
             "try:\n"
             "    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),2)\n"
             "    d=b''\n"
             "    while b'\\r\\n' not in d:\n"
             "        c=s.recv(4096)\n"
             "        if not c: break\n"
             "        d+=c\n"
             "    s.sendall(b'QUIT\\r\\n')\n"
             "    sys.exit(0 if d.startswith(b'220 ') else 1)\n"
             "except OSError:\n"
             "    sys.exit(1)\n")
    p = subprocess.run(in_ns(ns, [sys.executable, "-c", probe, host, str(port)]),
                       capture_output=True, timeout=10)
    return p.returncode == 0


class TwoHostNet:
    """Namespaces <prefix>a and <prefix>b joined by a veth pair: host A is
    198.18.N.1/24, host B is 198.18.N.2/24."""

    def __init__(self):
        tag = "ph%d%s" % (os.getpid() % 100000, "".join(_rng.choice("abcdefghjk")
                                                        for _ in range(3)))
        self.ns_a = tag + "a"
        self.ns_b = tag + "b"
        n = _rng.randint(0, 255)
        self.addr_a = "198.18.%d.1" % n
        self.addr_b = "198.18.%d.2" % n
        self.created = []
        self.procs = []

    def create(self):
        p = run([IP, "netns", "add", self.ns_a], check=False)
        if p.returncode != 0:
            raise NetnsUnavailable((p.stderr or p.stdout).strip())
        self.created.append(self.ns_a)
        run([IP, "netns", "add", self.ns_b])
        self.created.append(self.ns_b)
        # The pair is created inside A with its peer moved straight into B,
        # so no interface name is ever taken in the host's namespace.
        run(in_ns(self.ns_a, [IP, "link", "add", "ph0", "type", "veth", "peer", "name", "ph0",
                              "netns", self.ns_b]))
        for ns, addr in ((self.ns_a, self.addr_a), (self.ns_b, self.addr_b)):
            run(in_ns(ns, [IP, "link", "set", "lo", "up"]))
            run(in_ns(ns, [IP, "addr", "add", addr + "/24", "dev", "ph0"]))
            run(in_ns(ns, [IP, "link", "set", "ph0", "up"]))
        return self

    def routes(self, ns):
        return run(in_ns(ns, [IP, "route", "show"])).stdout

    def spawn(self, ns, cmd, log_path):
        """A background process inside ns, ended by destroy()."""
        log = open(log_path, "ab")
        try:
            p = subprocess.Popen(in_ns(ns, cmd), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, env=clean_env())
        finally:
            log.close()
        self.procs.append(p)
        return p

    def destroy(self):
        for p in self.procs:
            stop_process(p)
        self.procs = []
        for ns in reversed(self.created):
            run([IP, "netns", "del", ns], check=False)
        self.created = []


def stop_process(p, timeout=10.0):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class NsDns:
    """tests/integration/dnsfixture.py in its __main__ mode, inside a
    namespace, serving a zone written to a temp JSON file."""

    def __init__(self, net, ns, addr, records, port=53):
        self.net, self.ns, self.addr, self.port = net, ns, addr, port
        fd, self.zone_path = tempfile.mkstemp(prefix="posthorn-zone-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(records, f)
        self.log_path = self.zone_path + ".log"
        self.proc = None

    def start(self, probe_name, timeout=10.0):
        import dnsfixture   # the DNS engineer's fixture, run as a script
        script = os.path.abspath(dnsfixture.__file__)
        self.proc = self.net.spawn(self.ns, [sys.executable, script, "--listen",
                                             "%s:%d" % (self.addr, self.port),
                                             "--zone", self.zone_path], self.log_path)
        wait_until(lambda: self.answers(probe_name), timeout, interval=0.1,
                   what="the DNS fixture in %s" % self.ns)
        return self

    def answers(self, name, qtype="MX"):
        if self.proc.poll() is not None:
            raise AssertionError("dnsfixture exited with %s: %s" % (self.proc.returncode,
                                                                    self.log()))
        probe = ("import dnslib,sys\n"
                 "q=dnslib.DNSRecord.question(sys.argv[3],sys.argv[4])\n"
                 "r=dnslib.DNSRecord.parse(q.send(sys.argv[1],int(sys.argv[2]),timeout=1))\n"
                 "sys.exit(0 if r.rr else 1)\n")
        p = subprocess.run(in_ns(self.ns, [sys.executable, "-c", probe, self.addr,
                                           str(self.port), name, qtype]),
                           capture_output=True, timeout=10)
        return p.returncode == 0

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    def cleanup(self):
        if self.proc:
            stop_process(self.proc)
        for p in (self.zone_path, self.log_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


class NsDaemon(Daemon):
    """A Daemon started inside a namespace (`ip netns exec NS posthornd -c
    FILE`; ip execs posthornd, so signals reach the daemon itself) and
    probed from inside it. Port 25 on its namespace address."""

    def __init__(self, ns, addr, settings=None, name="d"):
        own = {"SMTP_LISTEN": "%s:25" % addr}
        own.update(settings or {})
        super().__init__(own, name=name)
        self.ns = ns
        self.host = addr
        self.port = 25

    def start(self, extra_settings=None, env=None, wait=True, timeout=20.0):
        assert not self.running(), "daemon already running"
        if extra_settings:
            self.settings.update(extra_settings)
            self.write_settings()
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(in_ns(self.ns, [posthornd_path(), "-c", self.conf]),
                                     stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=subprocess.STDOUT, env=clean_env(env))
        if wait:
            self.wait_ready(timeout)
        return self

    def _greets(self):
        if self.proc.poll() is not None:
            raise AssertionError("posthornd exited with %s during start:\n%s"
                                 % (self.proc.returncode, self.stderr_tail()))
        return ns_greets(self.ns, self.host, self.port)
