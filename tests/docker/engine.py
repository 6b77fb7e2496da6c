"""A private Docker engine for the end-to-end test.

Installs Debian's docker.io, docker-compose and debootstrap when missing
(nothing auto-starts: a policy-rc.d says no), starts dockerd with its data
under a temporary directory and its networks on 198.18.0.0/15, and undoes
exactly what it added when stopped: the process (by pid), the docker0 and
br-* bridges and the iptables rules and chains that were not there before.
"""

import os
import shlex
import shutil
import subprocess
import time

PACKAGES = ["docker.io", "docker-compose", "debootstrap", "python3-dnslib", "python3-yaml", "openssl"]
POLICY = "/usr/sbin/policy-rc.d"
DOCKER = "/usr/bin/docker"
COMPOSE = "/usr/bin/docker-compose"
BRIDGE_IP = "198.18.0.1"


class EngineUnavailable(Exception):
    """dockerd cannot run on this machine: the test is skipped."""


def _installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                       capture_output=True, text=True)
    return "install ok installed" in r.stdout


def install_packages():
    missing = [p for p in PACKAGES if not _installed(p)]
    if not missing:
        return
    print("docker: installing " + " ".join(missing), flush=True)
    created = False
    if not os.path.exists(POLICY):
        with open(POLICY, "w") as f:
            f.write("#!/bin/sh\n# posthorn docker test: no service starts\nexit 101\n")
        os.chmod(POLICY, 0o755)
        created = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing,
                           env=env, check=True, capture_output=True, text=True)
    finally:
        if created:
            os.unlink(POLICY)


def _iptables_rules(table):
    r = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True)
    chains, rules = set(), []
    for line in r.stdout.splitlines():
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            rules.append(line)
    return chains, rules


def _links():
    r = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
    return {line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines() if ":" in line}


class Engine:
    def __init__(self, root):
        self.root = root
        self.sock = os.path.join(root, "docker.sock")
        self.proc = None
        self.before = {}
        self.links_before = set()
        self.forward_before = None

    @property
    def env(self):
        return dict(os.environ, DOCKER_HOST="unix://" + self.sock,
                    COMPOSE_INTERACTIVE_NO_CLI="1", DOCKER_BUILDKIT="0")

    def start(self, timeout=60):
        for table in ("filter", "nat"):
            self.before[table] = _iptables_rules(table)
        self.links_before = _links()
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            self.forward_before = f.read().strip()
        env = dict(os.environ, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
                   NO_PROXY="")
        r = self.root
        cmd = ["dockerd", "--data-root", f"{r}/data", "--exec-root", f"{r}/exec",
               "-H", "unix://" + self.sock, "--pidfile", f"{r}/docker.pid",
               "--bip", BRIDGE_IP + "/24",
               "--default-address-pool", "base=198.18.128.0/17,size=24",
               "--storage-driver", "overlay2"]
        self.log = open(os.path.join(r, "dockerd.log"), "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineUnavailable("dockerd exited: " + self._log_tail())
            ok = subprocess.run([DOCKER, "version"], env=self.env, capture_output=True)
            if ok.returncode == 0:
                return
            time.sleep(0.2)
        raise EngineUnavailable("dockerd did not answer within %d s: %s" % (timeout, self._log_tail()))

    def _log_tail(self):
        try:
            with open(os.path.join(self.root, "dockerd.log")) as f:
                return " | ".join(f.read().strip().splitlines()[-3:])
        except OSError:
            return "(no log)"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cleanup_network()
        # overlay mounts under the data root outlive dockerd when it was killed
        subprocess.run(["sh", "-c", "grep -o ' %s/[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"
                        % shlex.quote(self.root)], capture_output=True)

    def _cleanup_network(self):
        for link in sorted(_links() - self.links_before):
            if link == "docker0" or link.startswith("br-") or link.startswith("veth"):
                subprocess.run(["ip", "link", "delete", link], capture_output=True)
        for table in ("filter", "nat"):
            chains_before, rules_before = self.before.get(table, (set(), []))
            chains, rules = _iptables_rules(table)
            for rule in rules:
                if rule not in rules_before:
                    args = shlex.split(rule)
                    args[0] = "-D"
                    subprocess.run(["iptables", "-t", table] + args, capture_output=True)
            for chain in chains - chains_before:
                subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
            for chain in chains - chains_before:
                subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
        if self.forward_before is not None:
            with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
                f.write(self.forward_before + "\n")

    def docker(self, *args, check=True, timeout=600, input=None):
        return subprocess.run([DOCKER] + list(args), env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout, input=input)

    def compose(self, project_dir, *args, check=True, timeout=300, input=None):
        return subprocess.run([COMPOSE, "--ansi", "never", "-p", "posthorntest"] + list(args),
                              cwd=project_dir, env=self.env, capture_output=True, text=True,
                              check=check, timeout=timeout, input=input)


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)
