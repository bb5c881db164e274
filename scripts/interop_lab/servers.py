"""The system under test: simulated Alternator clusters and alternator-dns instances."""

import os
import queue
import re
import threading
import time

from .netns import BIG_NODES, NET, NODES, tcp_socket
from .util import SetupError, log, run, tail, wait_for

PORT = 8000

# name -> (domain, listen address, [(ns name, address)], cluster)
INSTANCES = {
    "ns1": ("alternator.test", f"{NET}.53",
            [("ns1.alternator.test", f"{NET}.53"), ("ns2.alternator.test", f"{NET}.54")],
            "main"),
    "ns2": ("alternator.test", f"{NET}.54",
            [("ns1.alternator.test", f"{NET}.53"), ("ns2.alternator.test", f"{NET}.54")],
            "main"),
    "stub": ("alternator.internal", f"{NET}.55",
             [("ns1.alternator.internal", f"{NET}.55")], "main"),
    "forward": ("alternator-fwd.internal", f"{NET}.57",
                [("ns1.alternator-fwd.internal", f"{NET}.57")], "main"),
    "big": ("big.test", f"{NET}.56", [("ns1.big.test", f"{NET}.56")], "big"),
}
SHAPE_INSTANCE = {"delegated": "ns1", "stub": "stub", "forward": "forward"}
MODE_FLAGS = {
    "one": ["--answers", "1"],
    "all": ["--answers", "all"],
    "split": ["--answers", "1", "--resolver-answers", "all"],
    "nocache": ["--answers", "1", "--ttl", "0"],
}


def sim_command(path):
    """[path, subcommand] running a simulated cluster: `alternator-sim cluster`, or
    `alternator-dns sim` of builds before the simulator had its own crate; None if
    path is neither."""
    for sub in ("cluster", "sim"):
        p = run([path, sub, "--help"], check=False)
        if p.returncode == 0 and "--node" in p.stdout:
            return [path, sub]
    return None


class Binary:
    """What the alternator-dns binary under test and the simulator support."""

    def __init__(self, path, sim_path):
        if not os.access(path, os.X_OK):
            raise SetupError(f"{path}: not an executable (build it with cargo build --release)")
        self.path = os.path.abspath(path)
        self.sim_path = os.path.abspath(sim_path)
        help_text = run([self.path, "--help"]).stdout
        self.resolver_answers = "--resolver-answers" in help_text
        # --ns NAME=ADDR came with --resolver-answers.
        self.ns_with_address = self.resolver_answers or "NAME=ADDR" in help_text
        self.sim_argv = sim_command(self.sim_path)
        if self.sim_argv is None:
            raise SetupError(f"{self.sim_path}: neither `alternator-sim cluster` nor "
                             "`alternator-dns sim` (give --sim-binary)")
        sim_help = run(self.sim_argv + ["--help"]).stdout
        self.sim_control = "--control-stdin" in sim_help
        self.version = run([self.path, "--version"]).stdout.strip()

    def supports(self, mode):
        return mode != "split" or self.resolver_answers


class Sim:
    """The simulated cluster (`alternator-sim cluster --control-stdin`, or the `sim`
    subcommand of builds from before it had a crate of its own), run in the lab
    namespace."""

    def __init__(self, lab, binary, name, nodes):
        self.name = name
        self.nodes = nodes
        argv = binary.sim_argv + ["--port", str(PORT)]
        for n in nodes:
            argv += ["--node", n]
        self.control = binary.sim_control
        if self.control:
            argv.append("--control-stdin")
        self.daemon = lab.spawn(lab.lab, f"sim-{name}", argv, stdin=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        first = self._line(15)
        if first is None or not first.startswith("Simulated Alternator nodes"):
            raise SetupError(f"sim {name} did not start: {first!r}\n{tail(self.daemon.logfile)}")

    def _reader(self):
        for line in self.daemon.proc.stdout:
            self.lines.put(line.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def _line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def command(self, verb, ip):
        if not self.control:
            raise SetupError("the sim binary has no --control-stdin (give --sim-binary)")
        self.daemon.proc.stdin.write(f"{verb} {ip}\n".encode())
        self.daemon.proc.stdin.flush()
        reply = self._line(5)
        if reply != "ok":
            raise SetupError(f"sim {self.name}: '{verb} {ip}' answered {reply!r}")


def http_get(ns, addr, port, path, timeout=2.0):
    s = tcp_socket(ns)
    try:
        s.settimeout(timeout)
        s.connect((addr, port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body.decode("utf-8", "replace")


def metrics(ns, addr):
    _, body = http_get(ns, addr, 9153, "/metrics")
    return body


def live_nodes(ns, addr, domain):
    m = re.search(r'alternator_dns_live_nodes\{name="' + re.escape(domain) + r'\.?"\} (\d+)',
                  metrics(ns, addr))
    return int(m.group(1)) if m else None


class Servers:
    """The alternator-dns instances of one answer mode."""

    def __init__(self, lab, binary, mode, instances):
        self.lab = lab
        self.binary = binary
        self.mode = mode
        self.instances = instances
        self.daemons = {}

    def argv(self, name):
        domain, addr, ns, cluster = INSTANCES[name]
        seed = (NODES if cluster == "main" else BIG_NODES)[0]
        argv = [self.binary.path, "--domain", domain, "--seed", f"{seed}:{PORT}",
                "--alternator-port", str(PORT), "--listen", f"{addr}:53",
                "--metrics-listen", f"{addr}:9153", "--threads", "1"]
        for nsname, nsaddr in ns:
            argv += ["--ns", f"{nsname}={nsaddr}" if self.binary.ns_with_address else nsname]
        if cluster == "big":
            argv += ["--answers", "all"]
        else:
            argv += MODE_FLAGS[self.mode]
        return argv

    def start(self):
        for name in self.instances:
            argv = self.argv(name)
            p = run(argv + ["--check"], check=False)
            if p.returncode != 0:
                raise SetupError(f"alternator-dns --check refused: {' '.join(argv)}\n"
                                 f"{p.stdout}{p.stderr}")
            self.daemons[name] = self.lab.spawn(
                self.lab.lab, f"adns-{name}-{self.mode}", argv,
                logname=f"alternator-dns-{name}-{self.mode}.log")
        for name, d in self.daemons.items():
            domain, addr, _, cluster = INSTANCES[name]
            want = len(NODES if cluster == "main" else BIG_NODES)
            wait_for(f"alternator-dns {name} ({domain} on {addr}) to serve {want} nodes",
                     lambda: live_nodes(self.lab.lab, addr, domain) == want, 30, 0.25, d)
        log(f"alternator-dns ({self.mode}: {' '.join(MODE_FLAGS[self.mode])}) serving on "
            + ", ".join(INSTANCES[n][1] for n in self.instances))

    def stop(self):
        for d in self.daemons.values():
            self.lab.stop(d)
        self.daemons = {}


def wait_served(lab, addrs, domain, count, timeout=15, domains=None):
    """Waits until every instance in addrs serves `count` nodes of its domain."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(live_nodes(lab.lab, a, (domains or {}).get(a, domain)) == count
               for a in addrs):
            return True
        time.sleep(0.1)
    return False

