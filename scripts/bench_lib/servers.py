"""Tools, building, the simulated cluster and the servers under test."""

import ipaddress
import re
import shutil
import socket
from pathlib import Path

from .common import (AFFINITY_PLACED, AFFINITY_RULES, ALTERNATOR, BINARY, SIM_BINARY,
                     CHURN_REFRESH, DOMAIN, LOOPBACK, REFLECTOR, REFLECTOR_SRC, ROOT, SIM_DC,
                     SIM_NODES, SIM_RACK, BenchError, Child, find_tool, fmt_cpus, free_port,
                     install_missing, log, run_checked, wait_answering, wait_line, warn)

# The `default` server (and `affinity`, the same with zone-local answers on) logs at warn
# like the others, except the start-up lines of these
# modules (once, at start): the "alternator-dns ready ... backend=..." line says which
# I/O backend `auto` chose, and the line before it why.
DEFAULT_LOG_LEVEL = "warn,alternator_dns::server=info,alternator_dns::io=info"
# `affinity` also logs when a location's clients start being answered from its own nodes
# (once per location and change, none while dnsperf runs): how the script knows the
# placed location is served from its rack before measuring.
AFFINITY_LOG_LEVEL = DEFAULT_LOG_LEVEL + ",alternator_dns::nodes::tracker::locations=info"


def ensure_tools(args):
    """Installs missing Debian packages; apt-get only runs when something is missing."""
    wanted = {"taskset": "util-linux"}
    if not args.memory_only:
        wanted.update({"dnsperf": "dnsperf", "cc": "gcc"})
    if "knot" in args.servers and not args.memory_only:
        wanted["knotd"] = "knot"
    install_missing(wanted)
    if shutil.which("cargo") is None and not args.no_build:
        raise BenchError("cargo not found; install Rust first")


def build(args):
    """cargo build --release --locked --workspace (unless --no-build): alternator-dns and
    the simulated cluster; the reflector (cc -O2) when building, or with --no-build when
    it is missing or older than its source."""
    if args.no_build:
        for binary in (BINARY, SIM_BINARY):
            if not binary.is_file():
                raise BenchError(f"--no-build, but {binary} does not exist")
    else:
        run_checked(["cargo", "build", "--release", "--locked", "--workspace"], timeout=3600,
                    cwd=ROOT)
    if args.memory_only:
        return
    stale = (not REFLECTOR.is_file()
             or REFLECTOR.stat().st_mtime < REFLECTOR_SRC.stat().st_mtime)
    if args.no_build and not stale:
        return
    REFLECTOR.parent.mkdir(parents=True, exist_ok=True)
    run_checked([find_tool("cc"), "-O2", "-Wall", "-Wextra", "-pthread", "-o",
                 str(REFLECTOR), str(REFLECTOR_SRC)], timeout=300, cwd=ROOT)


def start_sim(args, workdir, children, churn=0, nodes=SIM_NODES, name=None, extra=()):
    argv = ["taskset", "-c", fmt_cpus(args.client_cpus), SIM_BINARY, "cluster"]
    for node in nodes:
        argv += ["--node", node]
    argv += ["--port", "0", "--churn-per-second", str(churn), *extra]
    child = Child(name or ("sim-churn" if churn else "sim"), argv, workdir)
    children.append(child)
    m = wait_line(child, r"Simulated Alternator nodes: " + re.escape(nodes[0]) + r":(\d+)")
    port = int(m.group(1))
    shown = ", ".join(f"{n}:{port}" for n in nodes[:3]) + (", ..." if len(nodes) > 3 else "")
    log(f"simulated cluster: {len(nodes)} nodes, {shown} (pid {child.pid})")
    return port


def worker_cpus_flag(args):
    """--cpus for alternator-dns: the first N server CPUs; none when there are fewer
    (the workers then go round-robin over the taskset mask)."""
    if args.threads <= len(args.server_cpus):
        return ["--cpus", fmt_cpus(args.server_cpus[: args.threads])]
    return []


KNOT_CONF = """\
server:
    rundir: "{dir}"
    listen: {addr}@{port}
    udp-workers: {threads}
    tcp-workers: 1
    background-workers: 1

log:
  - target: stderr
    any: warning

database:
    storage: "{dir}/db"

template:
  - id: default
    storage: "{dir}"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
  - domain: {domain}
    file: "{domain}.zone"
"""

KNOT_ZONE = """\
$ORIGIN {domain}.
$TTL 60
@       60  IN SOA  ns1.{domain}. hostmaster.{domain}. 1 3600 900 604800 60
@       60  IN NS   ns1.{domain}.
@       4   IN A    127.0.0.1
"""


# The racks of the `affinity` server's other rules (no simulated node is in them; the
# server polls /localnodes for each, as it would for racks of another deployment).
AFFINITY_OTHER_RACKS = [("dc1", "rack2"), ("dc1", "rack3"), ("dc2", "rack1"), ("dc2", "rack2")]


def affinity_rules():
    """The `affinity` server's location table: AFFINITY_RULES (cidr, dc, rack), the last
    placing LOOPBACK (dnsperf's source) in SIM_DC/SIM_RACK, the others prefixes that do
    not contain it, spread over AFFINITY_OTHER_RACKS:
      - beside the path to LOOPBACK/32 inside AFFINITY_PLACED, the sibling at every
        longer prefix length (127.128.0.0/9, ..., 127.0.0.0/32): each is more specific
        than the placed rule and shares all but its last bit with the source, so the
        lookup for the source walks to full depth past near misses;
      - 16 /16s in 172.16.0.0/12, the rest /24s in 10.0.0.0/8."""
    placed = ipaddress.ip_network(AFFINITY_PLACED)
    source = ipaddress.ip_address(LOOPBACK)
    others = []
    for length in range(placed.prefixlen + 1, 33):
        on_path = ipaddress.ip_network(f"{source}/{length}", strict=False)
        others.append(ipaddress.ip_network(
            (int(on_path.network_address) ^ (1 << (32 - length)), length)))
    others += [ipaddress.ip_network(f"172.{16 + i}.0.0/16") for i in range(16)]
    i = 0
    while len(others) < AFFINITY_RULES - 1:
        others.append(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24"))
        i += 1
    assert len(set(others)) == len(others) and all(source not in n for n in others)
    rules = [(str(n), *AFFINITY_OTHER_RACKS[k % len(AFFINITY_OTHER_RACKS)])
             for k, n in enumerate(others)]
    return rules + [(str(placed), SIM_DC, SIM_RACK)]


def affinity_config(rules):
    """The TOML --config file of the `affinity` server: its location table alone (the
    other settings are flags, as for the other servers)."""
    lines = [f"# scripts/bench-dnsperf: {len(rules)} locations; {LOOPBACK} (dnsperf's "
             f"source) is placed in {SIM_DC}/{SIM_RACK}, where the simulated nodes are"]
    for cidr, dc, rack in rules:
        lines += ["", "[[location]]", f'cidr = ["{cidr}"]', f'dc = "{dc}"', f'rack = "{rack}"']
    return "\n".join(lines) + "\n"


def affinity_config_file(workdir):
    """Writes the `affinity` server's --config file (once); returns its path."""
    path = Path(workdir) / "affinity.toml"
    if not path.is_file():
        path.write_text(affinity_config(affinity_rules()))
    return path


def server_argv(name, args, port, sim_port, workdir):
    pin = ["taskset", "-c", fmt_cpus(args.server_cpus)]
    if name in ALTERNATOR:
        backend, _, variant = name.partition("-")
        extra = (["--refresh-interval", CHURN_REFRESH, "--health-check", "false"]
                 if variant == "churn" else [])
        binary = args.compare_binary if variant == "cmp" else BINARY
        io = (["--log-level", DEFAULT_LOG_LEVEL] if backend == "default"
              else ["--io", backend, "--log-level", "warn"])
        if backend == "affinity":
            # `default` with zone-local answers: no --io.
            io = ["--log-level", AFFINITY_LOG_LEVEL]
            extra = ["--config", affinity_config_file(workdir), "--affinity", "true"]
        return pin + [binary, "--listen", f"{LOOPBACK}:{port}", "--domain", DOMAIN,
                      "--seed", f"{LOOPBACK}:{sim_port}", "--alternator-port", str(sim_port),
                      "--threads", str(args.threads)] + worker_cpus_flag(args) + io + [
                      "--metrics-listen", f"{LOOPBACK}:{metrics_port(name)}"] + extra
    if name == "knot":
        kdir = Path(workdir) / "knot"
        kdir.mkdir(exist_ok=True)
        (kdir / "knot.conf").write_text(KNOT_CONF.format(
            dir=kdir, addr=LOOPBACK, port=port, threads=args.threads, domain=DOMAIN))
        (kdir / f"{DOMAIN}.zone").write_text(KNOT_ZONE.format(domain=DOMAIN))
        return pin + [find_tool("knotd"), "-c", kdir / "knot.conf"]
    if name == "floor":
        return pin + [REFLECTOR, "-a", LOOPBACK, "-p", str(port), "-t", str(args.threads),
                      "-c", fmt_cpus(args.server_cpus)]
    raise AssertionError(name)


METRICS_PORTS = {}


def metrics_port(name):
    """A free port for an alternator-dns server's metrics, chosen once per server."""
    if name not in METRICS_PORTS:
        METRICS_PORTS[name] = free_port()
    return METRICS_PORTS[name]


def metrics_text(name):
    """The server's /metrics page (bytes), or None."""
    try:
        with socket.create_connection((LOOPBACK, metrics_port(name)), timeout=2) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    except OSError:
        return None
    return data


def metric(name, pattern):
    """The first number matching `pattern` (a bytes regex with one group) in the server's
    /metrics, or None."""
    data = metrics_text(name)
    m = re.search(pattern, data, re.M) if data is not None else None
    return int(m.group(1)) if m else None


def snapshot_generation(name):
    """alternator_dns_snapshot_generation from the server's /metrics, or None."""
    return metric(name, rb"^alternator_dns_snapshot_generation (\d+)")


def metrics_backend(name):
    """The io_backend label of alternator_dns_build_info, or None."""
    data = metrics_text(name)
    m = re.search(rb'^alternator_dns_build_info\{[^}]*io_backend="([^"]*)"', data or b"", re.M)
    return m.group(1).decode() if m else None


def start_server(name, args, sim_port, workdir, children):
    """Starts one server; returns (child, port, info) once it answers."""
    port = free_port()
    child = Child(name, server_argv(name, args, port, sim_port, workdir), workdir)
    children.append(child)
    wait_answering(child, port, need_answer=name != "floor")
    log(f"{name:<8} pid {child.pid:<7} 127.0.0.1:{port}  $ {' '.join(child.argv)}")
    info = {"pid": child.pid, "port": port, "argv": child.argv, "backend": None,
            "backend_log": None}
    if name in ALTERNATOR:
        info["backend"] = metrics_backend(name)
    if name in ("default", "affinity"):
        chosen_backend(child, info)
    if name == "affinity":
        placed_rack_served(child, info, workdir)
    return child, port, info


def placed_rack_served(child, info, workdir):
    """Waits until the `affinity` server answers the placed location's clients from its
    own rack (its log says so once the rack's list is polled and its nodes probed; until
    then they get the usual nodes, which would measure nothing of the rack path)."""
    rules = affinity_rules()
    cidr, dc, rack = rules[-1]
    others = sorted({f"{d}/{r}" for _, d, r in rules[:-1]})
    info["locations"] = {"rules": len(rules), "placed": f"{cidr}={dc}/{rack}",
                         "other_racks": others, "placed_log": None}
    log(f"         {len(rules)} locations (--config {affinity_config_file(workdir)}): "
        f"{cidr}={dc}/{rack} places dnsperf's source {LOOPBACK}; {len(rules) - 1} "
        f"others, none containing it, over {', '.join(others)}")
    pattern = (r"^(?=.*clients of this location from its own nodes)"
               rf"(?=.*\blocation={re.escape(dc)}/{re.escape(rack)}(?:\s|$)).*$")
    try:
        m = wait_line(child, pattern, stream="stderr")
    except BenchError as e:
        raise BenchError(f"affinity did not answer the clients of {dc}/{rack} from that "
                         f"rack's nodes: {e}") from None
    line = re.sub(r"^\S+\s+INFO\s+\S+:\s*", "", m.group(0)).strip()
    info["locations"]["placed_log"] = line
    log(f"         {line}")


def chosen_backend(child, info):
    """Shows which backend `auto` chose: alternator-dns's start-up line (and the
    fallback warning, if any), checked against its metrics."""
    m = wait_line(child, r"^.*alternator-dns ready.*$", stream="stderr", timeout=10)
    # Without the timestamp and the module path: "alternator-dns ready domain=... backend=..."
    line = re.sub(r"^\S+\s+INFO\s+\S+:\s*", "", m.group(0)).strip()
    info["backend_log"] = [line]
    fallback = re.search(r"^.*falling back to recvmmsg.*$", child.stderr(), re.M)
    if fallback:
        info["backend_log"].insert(0, re.sub(r"^\S+\s+WARN\s+\S+:\s*", "",
                                             fallback.group(0)).strip())
    b = re.search(r"\bbackend=(\S+)", line)
    logged = b.group(1) if b else None
    if logged and info["backend"] and logged != info["backend"]:
        warn(f"{child.name}: the log says backend={logged}, the metrics say {info['backend']}")
    info["backend"] = logged or info["backend"]
    log(f"         {child.name} (no --io) chose backend={info['backend']}; its log:")
    for text in info["backend_log"]:
        log(f"         {text}")
