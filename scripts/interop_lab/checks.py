"""The correctness matrix: what one path (a resolver and a shape, or `direct`)
answers for the zone's names."""

import threading
import time

from . import dnswire
from .netns import NODES, BIG_NODES, udp_socket, tcp_socket
from .servers import INSTANCES, SHAPE_INSTANCE

BASIC = ["A", "AAAA", "SOA", "NS", "NXDOMAIN", "TCP", "DNSSEC"]
LATE = ["NS-name", "no-poison"]
COLUMNS = BASIC[:5] + LATE + BASIC[5:]


class Path:
    """Where a client's queries go: a resolver address and the zone of a shape."""

    def __init__(self, resolver, shape, server):
        self.resolver = resolver      # 'unbound', ..., or 'direct'
        self.shape = shape
        self.server = server          # the address queried (RD=1)
        inst = INSTANCES[SHAPE_INSTANCE[shape]]
        self.zone = inst[0]
        self.ns = inst[2]             # [(name, address)]

    @property
    def key(self):
        return f"{self.resolver}/{self.shape}"


class Querier:
    def __init__(self, ns):
        self.ns = ns

    def q(self, server, name, qtype, **kw):
        return dnswire.udp_query(server, name, qtype, timeout=kw.pop("timeout", 3.0),
                                 sock_factory=lambda: udp_socket(self.ns),
                                 tcp_factory=lambda: tcp_socket(self.ns), **kw)


def _ok(detail=""):
    return {"ok": True, "detail": detail}


def _fail(detail):
    return {"ok": False, "detail": detail}


def _na(detail):
    return {"ok": None, "detail": detail}


def _query(qr, path, name, qtype, **kw):
    try:
        return qr.q(path.server, name, qtype, **kw)
    except OSError as e:
        return None, f"no answer ({e.__class__.__name__}: {e})"


def basic_checks(qr, path):
    """A, AAAA, SOA, NS, NXDOMAIN, TCP (100 nodes), DNSSEC."""
    out = {}
    zone = path.zone
    r, t = _query(qr, path, zone, "A")
    if r is None:
        out["A"] = _fail(t)
    else:
        addrs = r.addresses()
        stray = [a for a in addrs if a not in NODES]
        if r.rcode != 0 or not addrs or stray:
            out["A"] = _fail(f"{r.rcode_name}, addresses {addrs}")
        else:
            out["A"] = _ok(f"{len(addrs)} address(es)")
    r, t = _query(qr, path, zone, "AAAA")
    if r is None:
        out["AAAA"] = _fail(t)
    elif r.rcode != 0 or r.addresses(28):
        out["AAAA"] = _fail(f"{r.rcode_name}, {r.addresses(28)}")
    else:
        out["AAAA"] = _ok("NODATA")
    r, t = _query(qr, path, zone, "SOA")
    if r is None:
        out["SOA"] = _fail(t)
    else:
        soa = [x for x in r.rrs(6) if x[0].rstrip(".").lower() == zone]
        out["SOA"] = (_ok(f"serial {soa[0][3][2]}") if r.rcode == 0 and soa
                      else _fail(f"{r.rcode_name}, answer {r.answer}"))
    r, t = _query(qr, path, zone, "NS")
    want = sorted(n for n, _ in path.ns)
    if r is None:
        out["NS"] = _fail(t)
    else:
        got = sorted(x[3].rstrip(".").lower() for x in r.rrs(2))
        out["NS"] = (_ok(" ".join(got)) if r.rcode == 0 and got == want
                     else _fail(f"{r.rcode_name}, NS {got}, want {want}"))
    r, t = _query(qr, path, f"nope.{zone}", "A")
    if r is None:
        out["NXDOMAIN"] = _fail(t)
    else:
        out["NXDOMAIN"] = (_ok() if r.rcode == 3 else _fail(f"{r.rcode_name}"))
    if path.shape != "delegated":
        out["TCP"] = _na("big.test is delegated only")
    else:
        big_server = INSTANCES["big"][1] if path.resolver == "direct" else path.server
        try:
            r, transport = qr.q(big_server, INSTANCES["big"][0], "A", timeout=5)
            addrs = r.addresses()
            good = r.rcode == 0 and sorted(addrs) == sorted(BIG_NODES)
            detail = f"{len(addrs)} addresses, client got TC and used {transport}"
            out["TCP"] = _ok(detail) if good else _fail(f"{r.rcode_name}, {detail}")
        except OSError as e:
            out["TCP"] = _fail(f"no answer ({e})")
    if path.resolver == "direct":
        out["DNSSEC"] = _na("authoritative, unsigned")
    else:
        r, t = _query(qr, path, ".", "SOA", do=True, ad=True)
        if r is None:
            out["DNSSEC"] = _fail(t)
        else:
            r2, t2 = _query(qr, path, zone, "A", do=True, ad=True)
            if r.rcode != 0 or not r.has(dnswire.AD):
                out["DNSSEC"] = _fail(f". SOA: {r.rcode_name}, AD={int(r.has(dnswire.AD))}")
            elif r2 is None or r2.rcode != 0:
                out["DNSSEC"] = _fail(f"{zone} A with DO: {t2 if r2 is None else r2.rcode_name}")
            else:
                out["DNSSEC"] = _ok(f"AD on . SOA; {zone} AD={int(r2.has(dnswire.AD))}")
    return out


def ns_name_checks(qr, path, window=10.0, interval=0.5):
    """Each NS name's A gives its address; then <zone> A keeps working for `window` s
    (no SERVFAIL from a resolver that cached the NS names' negative answers)."""
    out = {}
    good, bad_ns = [], []
    for name, addr in path.ns:
        r, t = _query(qr, path, name, "A")
        if r is None:
            bad_ns.append(f"{name} A: {t}")
        elif r.rcode == 0 and addr in r.addresses():
            good.append(f"{name} A {addr}")
        else:
            bad_ns.append(f"{name} A: {r.rcode_name} {r.addresses()}")
        # Resolvers ask for the NS names' AAAA too: NODATA, not NXDOMAIN.
        r, t = _query(qr, path, name, "AAAA")
        if r is None:
            bad_ns.append(f"{name} AAAA: {t}")
        elif r.rcode != 0:
            bad_ns.append(f"{name} AAAA: {r.rcode_name}")
    out["NS-name"] = _fail("; ".join(bad_ns)) if bad_ns else _ok("; ".join(good))
    bad = []
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < window:
        n += 1
        r, t = _query(qr, path, path.zone, "A", timeout=2)
        at = time.monotonic() - start
        if r is None:
            bad.append(f"{at:.1f}s: {t}")
        elif r.rcode != 0 or not r.addresses():
            bad.append(f"{at:.1f}s: {r.rcode_name}")
        time.sleep(interval)
    if path.resolver == "direct":
        out["no-poison"] = _na("no cache")
    elif bad:
        out["no-poison"] = _fail(f"{len(bad)}/{n} failed after the NS-name lookup, first "
                                 + bad[0] + (f", last {bad[-1]}" if len(bad) > 1 else ""))
    else:
        out["no-poison"] = _ok(f"{n} queries over {window:.0f}s")
    return out


def run_parallel(paths, fn):
    """{path.key: fn(path)} with one thread per path."""
    results = {}

    def one(p):
        try:
            results[p.key] = fn(p)
        except Exception as e:  # a broken check is a failed check
            results[p.key] = {"error": _fail(f"{e.__class__.__name__}: {e}")}
    threads = [threading.Thread(target=one, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results
