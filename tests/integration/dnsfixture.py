"""A DNS server for tests (Debian's python3-dnslib), UDP and TCP on one port.

    dns = DnsFixture({
        "b.test": {"MX": [(10, "mx.b.test")]},
        "mx.b.test": {"A": ["198.18.10.2"], "AAAA": []},
        "a.test": {"TXT": ["v=spf1 -all"]},
        "null.test": {"MX": [(0, ".")]},          # RFC 7505 null MX
    }).start()
    ... DNS_RESOLVER=127.0.0.1:%d % dns.port ...
    dns.stop()

Answers are authoritative with TTL 60 (or the fixture's `ttl`). A name not
in the table is NXDOMAIN; a name without the asked type is NOERROR with no
answer (NODATA). TXT values are strings, or lists of strings for a record of
several character-strings; strings over 255 bytes are split. Names may be
given with or without the trailing dot and are matched case-insensitively.
`fail(name, "SERVFAIL" | "REFUSED" | "TIMEOUT" | "GARBAGE")` makes a name
fail (TIMEOUT: no answer at all; GARBAGE: a malformed reply, see
garbage_reply); `clear_failure(name)` undoes it. `set`, `remove` and
`fail` may be called while the server runs (they take a lock).

UDP answers larger than the client's limit (512, or its EDNS size) are sent
truncated with TC set, so clients retry over TCP.

Run standalone, for example inside a network namespace:
    /usr/bin/python3 dnsfixture.py --listen 198.18.10.1:53 --zone zone.json
zone.json holds the same mapping (MX entries as [preference, host]) and may
have a "_fail" key: {"name": "SERVFAIL"|"REFUSED"|"TIMEOUT"|"GARBAGE"}.
"""

import argparse
import json
import signal
import socket
import socketserver
import struct
import threading

from dnslib import AAAA, CNAME, DNSRecord, MX, PTR, QTYPE, RCODE, RR, TXT, A

FAILURES = ("SERVFAIL", "REFUSED", "TIMEOUT", "GARBAGE")
TYPES = ("A", "AAAA", "MX", "TXT", "PTR", "CNAME")


def _key(name):
    return str(name).rstrip(".").lower()


def _txt_strings(value):
    parts = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for p in parts:
        b = p.encode() if isinstance(p, str) else bytes(p)
        if not b:
            out.append(b"")
        while b:
            out.append(b[:255])
            b = b[255:]
    return out


def _rdata(rtype, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, host = value
        return MX(host if host not in ("", ".") else ".", pref)
    if rtype == "TXT":
        return TXT(_txt_strings(value))
    if rtype == "PTR":
        return PTR(value)
    if rtype == "CNAME":
        return CNAME(value)
    raise ValueError("unsupported record type %r" % rtype)


def garbage_reply(query):
    """A reply that a resolver can match to `query` (same ID, QR set, the
    question echoed) but cannot parse: the header announces two answers, and
    the first one's owner name is a compression pointer to itself, followed
    by a record cut short."""
    qid = query[:2] if len(query) >= 2 else b"\0\0"
    end = 12
    while end < len(query) and query[end] != 0:   # the question's labels
        end += 1 + query[end]
    question = query[12:end + 5]                  # root label, type, class
    header = qid + struct.pack("!HHHHH", 0x8580, 1, 2, 0, 0)
    # 0xc000 | offset: a pointer to the very octets of the pointer.
    loop = struct.pack("!H", 0xC000 | (12 + len(question)))
    return header + question + loop + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x7f"


class _UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        reply = self.server.fixture.answer(data, udp=True)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TCPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.settimeout(10)
        try:
            while True:
                head = self._read(sock, 2)
                if head is None:
                    return
                (n,) = struct.unpack("!H", head)
                data = self._read(sock, n)
                if data is None:
                    return
                reply = self.server.fixture.answer(data, udp=False)
                if reply is None:
                    continue
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return

    @staticmethod
    def _read(sock, n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DnsFixture:
    def __init__(self, records=None, host="127.0.0.1", port=0, ttl=60):
        self.host = host
        self.port = port
        self.ttl = ttl
        self._lock = threading.Lock()
        self._records = {}
        self._failures = {}
        self._servers = []
        self._threads = []
        self.queries = []          # (name, type) asked, in order
        for name, rrs in (records or {}).items():
            self.set(name, rrs)

    # -- records ---------------------------------------------------------
    def set(self, name, rrs):
        """Replaces all records of `name` with rrs ({"A": [...], ...})."""
        for rtype, values in rrs.items():
            if rtype not in TYPES:
                raise ValueError("unsupported record type %r" % rtype)
            for v in values:
                _rdata(rtype, v)   # validate now, not in the server thread
        with self._lock:
            self._records[_key(name)] = {t: list(v) for t, v in rrs.items()}

    def add(self, name, rtype, value):
        _rdata(rtype, value)
        with self._lock:
            self._records.setdefault(_key(name), {}).setdefault(rtype, []).append(value)

    def remove(self, name, rtype=None):
        """Removes a name (then NXDOMAIN), or only its records of rtype."""
        with self._lock:
            if rtype is None:
                self._records.pop(_key(name), None)
            elif _key(name) in self._records:
                self._records[_key(name)].pop(rtype, None)

    def fail(self, name, how):
        if how not in FAILURES:
            raise ValueError("failure must be one of %s" % ", ".join(FAILURES))
        with self._lock:
            self._failures[_key(name)] = how

    def clear_failure(self, name):
        with self._lock:
            self._failures.pop(_key(name), None)

    # -- answering -------------------------------------------------------
    def answer(self, data, udp):
        """The packed reply to the query in data, or None for no reply."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        if not req.questions:
            return None
        q = req.q
        name, qtype = _key(q.qname), QTYPE.get(q.qtype)
        reply = req.reply()
        reply.header.aa = 1
        with self._lock:
            self.queries.append((name, qtype))
            how = self._failures.get(name)
            rrs = self._records.get(name)
            rrs = {t: list(v) for t, v in rrs.items()} if rrs is not None else None
        if how == "TIMEOUT":
            return None
        if how == "GARBAGE":
            return garbage_reply(data)
        if how is not None:
            reply.header.rcode = getattr(RCODE, how)
        elif rrs is None:
            reply.header.rcode = RCODE.NXDOMAIN
        else:
            values = rrs.get(qtype, [])
            if not values and qtype != "CNAME" and rrs.get("CNAME"):
                qtype, values = "CNAME", rrs["CNAME"]
            for v in values:
                reply.add_answer(RR(q.qname, getattr(QTYPE, qtype), rdata=_rdata(qtype, v),
                                    ttl=self.ttl))
        packed = reply.pack()
        if udp:
            limit = 512
            for ar in req.ar:
                if ar.rtype == QTYPE.OPT:
                    limit = max(512, ar.rclass)
            if len(packed) > limit:
                short = req.reply()
                short.header.aa = 1
                short.header.tc = 1
                packed = short.pack()
        return packed

    # -- lifecycle -------------------------------------------------------
    def start(self):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        _UDPServer.address_family = family
        _TCPServer.address_family = family
        for attempt in range(20):
            udp = _UDPServer((self.host, self.port), _UDPHandler)
            port = udp.server_address[1]
            try:
                tcp = _TCPServer((self.host, port), _TCPHandler)
            except OSError:
                udp.server_close()
                if self.port:
                    raise
                continue
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        self.port = port
        for srv in (udp, tcp):
            srv.fixture = self
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 daemon=True)
            t.start()
            self._servers.append(srv)
            self._threads.append(t)
        return self

    def stop(self):
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join()
        self._servers, self._threads = [], []

    @property
    def resolver(self):
        """The DNS_RESOLVER value for this fixture."""
        if ":" in self.host:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def load_zone(path):
    with open(path) as f:
        zone = json.load(f)
    failures = zone.pop("_fail", {})
    records = {}
    for name, rrs in zone.items():
        records[name] = {t: [tuple(v) if t == "MX" else v for v in vals]
                         for t, vals in rrs.items()}
    return records, failures


def main():
    ap = argparse.ArgumentParser(description="DNS server for posthorn tests")
    ap.add_argument("--listen", required=True, help="IP:PORT or [IPv6]:PORT")
    ap.add_argument("--zone", required=True, help="JSON file of records")
    ap.add_argument("--ttl", type=int, default=60)
    args = ap.parse_args()
    hostport = args.listen
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]:")
    else:
        host, _, port = hostport.rpartition(":")
    records, failures = load_zone(args.zone)
    fx = DnsFixture(records, host=host, port=int(port), ttl=args.ttl)
    for name, how in failures.items():
        fx.fail(name, how)
    fx.start()
    print("dnsfixture listening on %s" % fx.resolver, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    done.wait()
    fx.stop()


if __name__ == "__main__":
    main()
