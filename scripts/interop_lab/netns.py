"""The lab's network namespaces: nothing is created in the host namespace.

  lab     (adns-lab-PID): every server. veth `vc0` carries 10.53.0.0/24 (fake
          root .2, resolvers .3-.6, simulated nodes .10-.60, alternator-dns
          .53-.57) and 10.53.1.0/24 (the 100-node cluster); veth `vf0` carries 10.53.2.1/24 towards the far client.
  client  (adns-cli-PID): veth `vc1`, 10.53.0.35/24 and the extra query sources
          10.53.0.100-.107, on the nodes' subnet; IPv6 on (link-local only), as
          on most hosts: glibc then knows each address's prefix length and
          applies RFC 6724 rule 9 to IPv4 answers.
  client4 (adns-c4-PID): veth `vd1`, 10.53.0.36/24, on the nodes' subnet, IPv6
          off: glibc gets no interface list (it asks for one only when the host
          has an IPv6 address) and rule 9 never applies.
  far     (adns-far-PID): veth `vf1`, 10.53.2.35/24, route to 10.53.0.0/16 only:
          a client off the nodes' subnet (rule 9 does not apply).
IPv6 is off in the lab namespace: every server is IPv4 only.
"""

import ctypes
import os
import shutil
import socket
import subprocess
import threading

from .util import Daemon, SetupError, log, run

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

NET = "10.53.0"
ROOT_ADDR = f"{NET}.2"
RESOLVER_ADDR = {"unbound": f"{NET}.3", "bind": f"{NET}.4", "kresd": f"{NET}.5",
                 "pdns": f"{NET}.6"}
NODES = [f"{NET}.{i}" for i in (10, 20, 30, 40, 50, 60)]
BIG_NODES = [f"10.53.1.{i}" for i in range(1, 101)]
CLIENT_ADDR = f"{NET}.35"
CLIENT_SOURCES = [CLIENT_ADDR] + [f"{NET}.{i}" for i in range(100, 108)]
CLIENT4_ADDR = f"{NET}.36"
FAR_ADDR = "10.53.2.35"
LAB_ADDRS = [ROOT_ADDR] + list(RESOLVER_ADDR.values()) + NODES + [
    f"{NET}.{i}" for i in (53, 54, 55, 56, 57)]


def in_netns(ns, fn):
    """Runs fn() on a thread that entered namespace ns; sockets it creates stay there."""
    box = {}

    def target():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def udp_socket(ns, source=None):
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if source:
            s.bind((source, 0))
        return s
    return in_netns(ns, make)


def tcp_socket(ns, source=None):
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            s.bind((source, 0))
        return s
    return in_netns(ns, make)


class Lab:
    def __init__(self, cleanup, tmp):
        pid = os.getpid()
        self.lab = f"adns-lab-{pid}"
        self.client = f"adns-cli-{pid}"
        self.far = f"adns-far-{pid}"
        self.client4 = f"adns-c4-{pid}"
        self.cleanup = cleanup
        self.tmp = tmp
        self.daemons = []

    def ip(self, ns, *args):
        return run(["ip", "-n", ns] + list(args))

    def create(self):
        existing = run(["ip", "netns", "list"]).stdout
        stale = [ln.split()[0] for ln in existing.splitlines()
                 if ln.startswith(("adns-lab-", "adns-cli-", "adns-far-", "adns-c4-"))]
        for name in stale:
            pid = name.rsplit("-", 1)[-1]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                log(f"note: namespace {name} is left from an earlier run that died "
                    f"(remove it with: ip netns del {name})")
        for ns in (self.lab, self.client, self.client4, self.far):
            run(["ip", "netns", "add", ns])
            self.cleanup.push(f"delete namespace {ns}", lambda ns=ns: self._del_ns(ns))
            self.ip(ns, "link", "set", "lo", "up")
            if ns in (self.lab, self.client4):
                for key in ("all", "default"):
                    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w",
                         f"net.ipv6.conf.{key}.disable_ipv6=1"])
        # veth pairs are created inside the lab namespace: no host interface ever.
        self.ip(self.lab, "link", "add", "vc0", "type", "veth", "peer", "name", "vc1",
                "netns", self.client)
        self.ip(self.lab, "link", "add", "vf0", "type", "veth", "peer", "name", "vf1",
                "netns", self.far)
        self.ip(self.lab, "link", "add", "vd0", "type", "veth", "peer", "name", "vd1",
                "netns", self.client4)
        batch = [f"addr add {a}/24 dev vc0" for a in LAB_ADDRS + BIG_NODES]
        batch += ["addr add 10.53.2.1/24 dev vf0", "link set vc0 up", "link set vf0 up",
                  "link set vd0 up", f"route add {CLIENT4_ADDR}/32 dev vd0"]
        run(["ip", "-n", self.lab, "-batch", "-"], input_text="\n".join(batch) + "\n")
        batch = [f"addr add {a}/24 dev vc1" for a in CLIENT_SOURCES]
        run(["ip", "-n", self.client, "-batch", "-"], input_text="\n".join(batch) + "\n")
        self.ip(self.client, "link", "set", "vc1", "up")
        self.ip(self.far, "addr", "add", f"{FAR_ADDR}/24", "dev", "vf1")
        self.ip(self.far, "link", "set", "vf1", "up")
        self.ip(self.far, "route", "add", "10.53.0.0/16", "via", "10.53.2.1")
        self.ip(self.client4, "addr", "add", f"{CLIENT4_ADDR}/24", "dev", "vd1")
        self.ip(self.client4, "link", "set", "vd1", "up")
        for ns in (self.client, self.client4, self.far):
            d = f"/etc/netns/{ns}"
            os.makedirs(d, exist_ok=True)
            self.cleanup.push(f"remove {d}", lambda d=d: shutil.rmtree(d, True))
            with open(f"{d}/resolv.conf", "w") as f:
                f.write(f"nameserver {NET}.53\noptions timeout:1 attempts:2\n")
            # glibc reads /etc/hosts first; an empty one keeps host entries out.
            with open(f"{d}/hosts", "w") as f:
                f.write("127.0.0.1 localhost\n")
        log(f"namespaces {self.lab}, {self.client}, {self.client4}, {self.far} ready")

    def _del_ns(self, ns):
        p = run(["ip", "netns", "del", ns], check=False)
        if p.returncode != 0:
            log(f"cleanup: ip netns del {ns}: {p.stderr.strip()}")

    def spawn(self, ns, name, argv, stdin=False, logname=None):
        logfile = os.path.join(self.tmp, logname or f"{name}.log")
        d = Daemon(name, ["ip", "netns", "exec", ns] + list(argv), logfile, stdin=stdin)
        self.daemons.append(d)
        self.cleanup.push(f"stop {name} (pid {d.pid})", d.stop)
        return d

    def stop(self, daemon):
        daemon.stop()
        if daemon in self.daemons:
            self.daemons.remove(daemon)

    def exec_argv(self, ns, argv, resolv_conf=None):
        """argv run in ns; with resolv_conf, that file is /etc/resolv.conf for it alone
        (a private mount namespace: nothing is mounted in the host's)."""
        if resolv_conf is None:
            return ["ip", "netns", "exec", ns] + list(argv)
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, resolv_conf] + list(argv)

    def popen(self, ns, argv, resolv_conf=None, **kw):
        return subprocess.Popen(self.exec_argv(ns, argv, resolv_conf), **kw)


def require_root():
    if os.geteuid() != 0:
        raise PermissionError("scripts/interop needs root (network namespaces, "
                              "port 53, package installs); run it with sudo")


def check_tools():
    for t in ("ip", "unshare", "mount"):
        if not shutil.which(t):
            raise SetupError(f"{t} not found")
