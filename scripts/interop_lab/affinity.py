"""Zone-local answers through a caching resolver's subnet cache.

alternator-dns with `--affinity true` and one `--location` per client subnet
(10.53.0.0/24 = dc1/rack1: the `client` and `client4` namespaces; 10.53.2.0/24
= dc1/rack2: the `far` namespace) serves alternator-ecs.internal from four
simulated nodes (`alternator-sim cluster --node IP@DC/RACK`: two per rack).
An Unbound of its own answers the
clients, with `module-config: "subnetcache validator iterator"` and
`send-client-subnet` pointing at alternator-dns, a stub zone for the name,
and queries sent from an address in no location (10.53.4.3). So a client
gets its own rack only if Unbound passed its subnet on (ECS, RFC 7871) and
kept the answers of the two subnets apart in its cache.

Checks (each {"ok": bool, "detail": str}):
  server-ECS         a query with ECS 10.53.2.0/24 sent straight to
                     alternator-dns from Unbound's address: rack2, ECS back
                     with scope 24
  resolver-unplaced  the same without ECS: every node (Unbound's own address
                     is in no location)
  near, near-v4only, far
                     through Unbound, rounds of lookups from the three
                     namespaces in turn (within the TTL, so the later ones
                     meet Unbound's cache): every answer is exactly the
                     client's rack
"""

import os
import random
import socket
import struct
import time

from . import dnswire
from .netns import CLIENT4_ADDR, CLIENT_ADDR, FAR_ADDR, NET, udp_socket
from .resolvers import unbound_server
from .servers import Sim, live_nodes
from .util import SetupError, log, run, tail, wait_for

ZONE = "alternator-ecs.internal"
SERVER = f"{NET}.58"
RESOLVER = f"{NET}.7"
RESOLVER_OUT = "10.53.4.3"
PORT = 8000
RACK1 = [f"{NET}.71", f"{NET}.72"]
RACK2 = [f"{NET}.73", f"{NET}.74"]
LOCATIONS = {"10.53.0.0/24": "dc1/rack1", "10.53.2.0/24": "dc1/rack2"}
ROUNDS = 10
CHECKS = ["server-ECS", "resolver-unplaced", "near", "near-v4only", "far"]


def _ok(detail=""):
    return {"ok": True, "detail": detail}


def _fail(detail):
    return {"ok": False, "detail": detail}


def unbound_conf(d, parent):
    return unbound_server(d, parent, RESOLVER, RESOLVER_OUT, "subnetcache validator iterator") + f"""\
    # alternator-dns gets the clients' subnets.
    send-client-subnet: {SERVER}
    domain-insecure: "{ZONE}"
stub-zone:
    name: "{ZONE}"
    stub-addr: {SERVER}
remote-control:
    control-enable: no
"""


def server_argv(binary):
    argv = [binary.path, "--domain", ZONE, "--seed", f"{RACK1[0]}:{PORT}",
            "--alternator-port", str(PORT), "--listen", f"{SERVER}:53",
            "--metrics-listen", f"{SERVER}:9153", "--threads", "1",
            "--ns", f"ns1.{ZONE}={SERVER}", "--answers", "all", "--affinity", "true"]
    for cidr, place in LOCATIONS.items():
        argv += ["--location", f"{cidr}={place}"]
    return argv


def ecs_query(ns, source, server, name, ecs=None, timeout=2.0):
    """A query (RD=0, EDNS) for name A from source in namespace ns, with the
    ECS option (family, source prefix, address) when given; the Reply."""
    qid = random.getrandbits(16)
    msg = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 1)
    msg += dnswire.encode_name(name) + struct.pack("!HH", 1, 1)
    options = b""
    if ecs:
        family, prefix, addr = ecs
        raw = socket.inet_aton(addr)[:(prefix + 7) // 8]
        data = struct.pack("!HBB", family, prefix, 0) + raw
        options = struct.pack("!HH", 8, len(data)) + data
    msg += b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options
    s = udp_socket(ns, source)
    try:
        s.settimeout(timeout)
        s.connect((server, 53))
        s.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            reply = dnswire.Reply(s.recv(65535))
            if reply.id == qid:
                return reply
    finally:
        s.close()


def ecs_text(ecs):
    """An ECS option as read by reply_ecs, e.g. 10.53.2.0/24 scope 24."""
    family, source, scope, raw = ecs
    if family == 1 and len(raw) <= 4:
        return f"{socket.inet_ntoa(raw + bytes(4 - len(raw)))}/{source} scope {scope}"
    return f"family {family} {raw.hex()}/{source} scope {scope}"


def reply_ecs(reply):
    """[(family, source prefix, scope, address bytes)] of the reply's OPT."""
    found = []
    for rr in reply.additional:
        if rr[1] != 41:
            continue
        data, at = rr[3], 0
        while at + 4 <= len(data):
            code, length = struct.unpack("!HH", data[at:at + 4])
            body = data[at + 4:at + 4 + length]
            if code == 8 and len(body) >= 4:
                family, source, scope = struct.unpack("!HBB", body[:4])
                found.append((family, source, scope, bytes(body[4:])))
            at += 4 + length
    return found


def _server_checks(lab):
    out = {}
    want = (1, 24, 24, socket.inet_aton("10.53.2.0")[:3])
    last = {}

    def placed():
        r = ecs_query(lab.lab, RESOLVER_OUT, SERVER, ZONE, (1, 24, "10.53.2.0"))
        last["reply"] = r
        return sorted(r.addresses()) == RACK2 and reply_ecs(r) == [want]
    try:
        wait_for("alternator-dns to place ECS 10.53.2.0/24 in rack2", placed, 20, 0.2)
        out["server-ECS"] = _ok(f"{RACK2}, ECS back: {ecs_text(want)}")
    except SetupError:
        r = last.get("reply")
        seen = "none" if r is None else ", ".join(ecs_text(e) for e in reply_ecs(r)) or "none"
        out["server-ECS"] = _fail("no reply" if r is None else
                                  f"{r.rcode_name} {sorted(r.addresses())}, ECS back: {seen}; "
                                  f"want {RACK2}, ECS back: {ecs_text(want)}")
    try:
        r = ecs_query(lab.lab, RESOLVER_OUT, SERVER, ZONE)
        got = sorted(r.addresses())
        out["resolver-unplaced"] = (_ok(f"{got}") if got == sorted(RACK1 + RACK2) else
                                    _fail(f"{r.rcode_name} {got}, want every node"))
    except OSError as e:
        out["resolver-unplaced"] = _fail(f"no answer ({e})")
    return out


def _resolver_checks(lab):
    clients = [("near", lab.client, CLIENT_ADDR, RACK1),
               ("near-v4only", lab.client4, CLIENT4_ADDR, RACK1),
               ("far", lab.far, FAR_ADDR, RACK2)]
    bad = {name: [] for name, *_ in clients}
    for i in range(ROUNDS):
        for name, ns, source, want in clients:
            try:
                r, _ = dnswire.udp_query(RESOLVER, ZONE, "A", timeout=3,
                                         sock_factory=lambda ns=ns, s=source: udp_socket(ns, s))
                got = sorted(r.addresses())
                if r.rcode != 0 or got != want:
                    bad[name].append(f"round {i + 1}: {r.rcode_name} {got}")
            except OSError as e:
                bad[name].append(f"round {i + 1}: no answer ({e.__class__.__name__})")
        time.sleep(0.2)
    out = {}
    for name, _, source, want in clients:
        if bad[name]:
            out[name] = _fail(f"from {source}, want {want}: {len(bad[name])}/{ROUNDS} wrong, "
                              + "; ".join(bad[name][:3]))
        else:
            out[name] = _ok(f"from {source}: {want} in all {ROUNDS} lookups")
    return out


def run_check(lab, tmp, binary, parent):
    """Starts the nodes, alternator-dns and Unbound, runs the checks, stops
    them; the result for the report's "affinity" key."""
    if "--affinity" not in run([binary.path, "--help"]).stdout:
        return {"skipped": f"{binary.path} has no --affinity"}
    if "subnetcache" not in run(["unbound", "-V"], check=False).stdout:
        return {"skipped": "this Unbound has no subnetcache module"}
    if "@DC/RACK" not in run(binary.sim_argv + ["--help"]).stdout:
        return {"skipped": f"{binary.sim_path} has no --node IP@DC/RACK"}
    for addr in [RESOLVER, SERVER] + RACK1 + RACK2:
        lab.ip(lab.lab, "addr", "add", f"{addr}/24", "dev", "vc0")
    lab.ip(lab.lab, "addr", "add", f"{RESOLVER_OUT}/32", "dev", "lo")
    d = os.path.join(tmp, "affinity")
    os.makedirs(d)
    started = []
    try:
        sim = Sim(lab, binary, "affinity", [f"{a}@dc1/rack1" for a in RACK1]
                  + [f"{a}@dc1/rack2" for a in RACK2])
        started.append(sim.daemon)
        argv = server_argv(binary)
        p = run(argv + ["--check"], check=False)
        if p.returncode != 0:
            raise SetupError(f"alternator-dns --check refused: {' '.join(argv)}\n"
                             f"{p.stdout}{p.stderr}")
        server = lab.spawn(lab.lab, "adns-affinity", argv, logname="alternator-dns-affinity.log")
        started.append(server)
        wait_for(f"alternator-dns ({ZONE} on {SERVER}) to serve 4 nodes",
                 lambda: live_nodes(lab.lab, SERVER, ZONE) == 4, 30, 0.25, server)
        conf = unbound_conf(d, parent)
        with open(f"{d}/unbound.conf", "w") as f:
            f.write(conf)
        run(["unbound-checkconf", f"{d}/unbound.conf"])
        unbound = lab.spawn(lab.lab, "unbound-ecs", ["unbound", "-d", "-c", f"{d}/unbound.conf"],
                            logname="unbound-ecs.log")
        started.append(unbound)

        def ready():
            r, _ = dnswire.udp_query(RESOLVER, ".", "SOA", timeout=1,
                                     sock_factory=lambda: udp_socket(lab.lab))
            return r.rcode == 0 and r.rrs(6)
        wait_for(f"Unbound with subnetcache to answer . SOA on {RESOLVER}", ready, 30, 0.3,
                 unbound)
        log(f"affinity: alternator-dns --affinity on {SERVER}, Unbound with subnetcache on "
            f"{RESOLVER}; locations {LOCATIONS}")
        checks = _server_checks(lab)
        checks.update(_resolver_checks(lab))
        for name, c in checks.items():
            if not c["ok"]:
                log(f"affinity {name} failed: {c['detail']}")
        if not all(c["ok"] for c in checks.values()):
            log(f"alternator-dns log:\n{tail(server.logfile)}\nUnbound log:\n"
                f"{tail(unbound.logfile)}")
        return {"checks": checks, "server": SERVER, "resolver": RESOLVER,
                "resolver_source": RESOLVER_OUT, "locations": LOCATIONS,
                "flags": argv[1:], "unbound_conf": conf}
    finally:
        for daemon in reversed(started):
            lab.stop(daemon)
