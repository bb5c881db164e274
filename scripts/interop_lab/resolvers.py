"""The four resolvers, each with its configuration in a temp dir, in the lab namespace.

One instance of each serves every shape at once:
  delegated  alternator.test, iterated from the fake root (NS delegation, glue)
  stub       alternator.internal, not delegated: a stub zone (RD=0 recipe) + NTA
  forward    alternator-fwd.internal, not delegated: a forward zone (RD=1 recipe) + NTA
The recipes are in RECIPES below, as they go into the README."""

import os

from . import dnswire
from .netns import RESOLVER_ADDR, ROOT_ADDR, udp_socket
from .parent import ROOT_NS
from .servers import INSTANCES
from .util import SetupError, log, run, wait_for

STUB = INSTANCES["stub"]
FWD = INSTANCES["forward"]
STUB_ZONE, STUB_ADDR = STUB[0], STUB[1]
FWD_ZONE, FWD_ADDR = FWD[0], FWD[1]

RECIPES = {
    "unbound": {
        "stub": f'server:\n    domain-insecure: "{STUB_ZONE}"\nstub-zone:\n'
                f'    name: "{STUB_ZONE}"\n    stub-addr: {STUB_ADDR}',
        "forward": f'server:\n    domain-insecure: "{FWD_ZONE}"\nforward-zone:\n'
                   f'    name: "{FWD_ZONE}"\n    forward-addr: {FWD_ADDR}',
    },
    "bind": {
        "stub": f'options {{ validate-except {{ "{STUB_ZONE}"; }}; }};\n'
                f'zone "{STUB_ZONE}" {{ type static-stub; server-addresses {{ {STUB_ADDR}; }}; }};',
        "forward": f'options {{ validate-except {{ "{FWD_ZONE}"; }}; }};\n'
                   f'zone "{FWD_ZONE}" {{ type forward; forward only; '
                   f'forwarders {{ {FWD_ADDR}; }}; }};',
    },
    "kresd": {
        "stub": f"trust_anchors.set_insecure({{'{STUB_ZONE}'}})\n"
                f"policy.add(policy.suffix(policy.STUB('{STUB_ADDR}'), "
                f"{{todname('{STUB_ZONE}.')}}))",
        "forward": f"trust_anchors.set_insecure({{'{FWD_ZONE}'}})\n"
                   f"policy.add(policy.suffix(policy.FLAGS({{'NO_CACHE'}}), "
                   f"{{todname('{FWD_ZONE}.')}}))\n"
                   f"policy.add(policy.suffix(policy.FORWARD('{FWD_ADDR}'), "
                   f"{{todname('{FWD_ZONE}.')}}))",
    },
    "pdns": {
        "stub": f"# recursor.conf\nforward-zones={STUB_ZONE}={STUB_ADDR}\n"
                f"# lua-config-file\naddNTA('{STUB_ZONE}', 'not delegated: stub zone')",
        "forward": f"# recursor.conf\nforward-zones-recurse={FWD_ZONE}={FWD_ADDR}\n"
                   f"# lua-config-file\naddNTA('{FWD_ZONE}', 'not delegated: forward zone')",
    },
}
NAMES = {"unbound": "Unbound", "bind": "BIND named", "kresd": "Knot Resolver (kresd)",
         "pdns": "PowerDNS Recursor"}


def unbound_server(d, parent, addr, outgoing, modules):
    """The start of the `server:` clause every Unbound of the lab has: listening on addr:53,
    querying from outgoing, in the foreground, in directory d, validating from the lab's root
    (its DS written to d/root.ds), with the given module-config."""
    with open(f"{d}/root.ds", "w") as f:
        f.write(parent.ds_record() + "\n")
    return f"""server:
    verbosity: 1
    num-threads: 1
    interface: {addr}
    port: 53
    outgoing-interface: {outgoing}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    log-time-ascii: yes
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    access-control: 10.53.0.0/16 allow
    root-hints: "{parent.hints}"
    trust-anchor-file: "{d}/root.ds"
    so-reuseport: no
    module-config: "{modules}"
"""


def _unbound(d, addr, parent, shapes, extra):
    insecure = "".join(f'    domain-insecure: "{z}"\n' for s, z in
                       (("stub", STUB_ZONE), ("forward", FWD_ZONE)) if s in shapes)
    conf = unbound_server(d, parent, addr, addr, "validator iterator") + f"""\
    # test. is one of Unbound's default local zones (RFC 6761): undo that.
    local-zone: "test." nodefault
    val-log-level: 2
    msg-cache-size: 4m
    rrset-cache-size: 8m
{insecure}"""
    if "stub" in shapes:
        conf += f'stub-zone:\n    name: "{STUB_ZONE}"\n    stub-addr: {STUB_ADDR}\n'
    if "forward" in shapes:
        conf += f'forward-zone:\n    name: "{FWD_ZONE}"\n    forward-addr: {FWD_ADDR}\n'
    conf += "remote-control:\n    control-enable: no\n" + extra
    path = f"{d}/unbound.conf"
    with open(path, "w") as f:
        f.write(conf)
    run(["unbound-checkconf", path])
    return ["unbound", "-d", "-c", path]


def _bind(d, addr, parent, shapes, extra):
    ds = parent.ds
    zones = [z for s, z in (("stub", STUB_ZONE), ("forward", FWD_ZONE)) if s in shapes]
    quoted = " ".join('"' + z + '";' for z in zones)
    except_ = f"    validate-except {{ {quoted} }};\n" if zones else ""
    conf = f"""options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port 53 {{ {addr}; }};
    listen-on-v6 {{ none; }};
    query-source address {addr};
    recursion yes;
    allow-query {{ any; }};
    allow-recursion {{ any; }};
    allow-query-cache {{ any; }};
    dnssec-validation yes;
{except_}    notify no;
    max-cache-size 32M;
}};
trust-anchors {{ "." static-ds {ds[0]} {ds[1]} {ds[2]} "{ds[3]}"; }};
zone "." {{ type hint; file "{parent.hints}"; }};
controls {{ }};
logging {{
    channel all {{ stderr; severity info; print-time yes; print-category yes; }};
    category default {{ all; }};
    category lame-servers {{ all; }};
    category dnssec {{ all; }};
}};
"""
    if "stub" in shapes:
        conf += (f'zone "{STUB_ZONE}" {{ type static-stub; '
                 f'server-addresses {{ {STUB_ADDR}; }}; }};\n')
    if "forward" in shapes:
        conf += (f'zone "{FWD_ZONE}" {{ type forward; forward only; '
                 f'forwarders {{ {FWD_ADDR}; }}; }};\n')
    path = f"{d}/named.conf"
    with open(path, "w") as f:
        f.write(conf + extra)
    run(["named-checkconf", path])
    return ["named", "-f", "-4", "-n", "1", "-c", path]


def _kresd(d, addr, parent, shapes, extra):
    insecure = [z for s, z in (("stub", STUB_ZONE), ("forward", FWD_ZONE)) if s in shapes]
    conf = f"""-- Knot Resolver 5 for the interop lab
modules.load('hints > iterate')
net.ipv6 = false
net.listen('{addr}', 53, {{ kind = 'dns' }})
net.outgoing_v4('{addr}')
cache.open(32 * MB, 'lmdb://{d}/cache')
hints.root({{ ['{ROOT_NS}'] = '{ROOT_ADDR}' }})
trust_anchors.remove('.')
trust_anchors.add('{parent.ds_record()}')
-- test. is one of kresd's special-use names (answered locally, blocked): let it pass.
policy.add(policy.suffix(policy.PASS, {{todname('test.')}}))
"""
    if insecure:
        conf += "trust_anchors.set_insecure({" + ", ".join(f"'{z}'" for z in insecure) + "})\n"
    if "stub" in shapes:
        conf += (f"policy.add(policy.suffix(policy.STUB('{STUB_ADDR}'), "
                 f"{{todname('{STUB_ZONE}.')}}))\n")
    if "forward" in shapes:
        # Without NO_CACHE, kresd answers NXDOMAIN from the root's cached NSEC
        # (aggressive negative caching) that proves `internal.` does not exist.
        conf += (f"policy.add(policy.suffix(policy.FLAGS({{'NO_CACHE'}}), "
                 f"{{todname('{FWD_ZONE}.')}}))\n")
    if "forward" in shapes:
        conf += (f"policy.add(policy.suffix(policy.FORWARD('{FWD_ADDR}'), "
                 f"{{todname('{FWD_ZONE}.')}}))\n")
    if os.environ.get("INTEROP_DEBUG"):
        conf += "log_level('debug')\n"
    path = f"{d}/kresd.conf"
    with open(path, "w") as f:
        f.write(conf + extra)
    return ["kresd", "-n", "-c", path, d]


def _pdns(d, addr, parent, shapes, extra):
    lua = f"clearTA('.')\naddTA('.', '{parent.ds_text()}')\n"
    conf = f"""config-dir={d}
socket-dir={d}
local-address={addr}
local-port=53
query-local-address={addr}
allow-from=10.53.0.0/16
hint-file={parent.hints}
dnssec=validate
lua-config-file={d}/recursor.lua
# 10.0.0.0/8 is in the default dont-query list: the lab's servers live there.
dont-query=
daemon=no
write-pid=no
threads=1
pdns-distributes-queries=no
disable-syslog=yes
loglevel=4
"""
    if "stub" in shapes:
        conf += f"forward-zones={STUB_ZONE}={STUB_ADDR}\n"
        lua += f"addNTA('{STUB_ZONE}', 'not delegated: stub zone')\n"
    if "forward" in shapes:
        conf += f"forward-zones-recurse={FWD_ZONE}={FWD_ADDR}\n"
        lua += f"addNTA('{FWD_ZONE}', 'not delegated: forward zone')\n"
    with open(f"{d}/recursor.conf", "w") as f:
        f.write(conf + extra)
    with open(f"{d}/recursor.lua", "w") as f:
        f.write(lua)
    return ["pdns_recursor", f"--config-dir={d}"]


BUILDERS = {"unbound": _unbound, "bind": _bind, "kresd": _kresd, "pdns": _pdns}

# What each resolver needs so that it does not cache alternator-dns's TTL 0
# answers (mode `nocache`, the README's recommendation behind resolvers):
# Unbound and BIND honour TTL 0 as they are; Knot Resolver raises every TTL
# to cache.min_ttl (5 s) and still holds TTL 0 answers about a second with
# min_ttl(0), so the zone gets NO_CACHE, as the first rule; PowerDNS Recursor
# raises TTLs under minimum-ttl-override (1 s), and its packet cache replays
# the raised answer.
NO_CACHE_FIRST = {
    "kresd": "".join(
        f"policy.add(policy.suffix(policy.FLAGS({{'NO_CACHE'}}), {{todname('{z}.')}}))\n"
        for z in ("alternator.test", STUB_ZONE, FWD_ZONE)),
}
NO_CACHE_LAST = {"pdns": "minimum-ttl-override=0\n"}


def with_no_cache(kind, argv_dir_conf):
    """Rewrites the configuration file a builder wrote to carry NO_CACHE_FIRST
    before everything else and NO_CACHE_LAST after."""
    first, last = NO_CACHE_FIRST.get(kind, ""), NO_CACHE_LAST.get(kind, "")
    if not first and not last:
        return
    with open(argv_dir_conf) as f:
        text = f.read()
    with open(argv_dir_conf, "w") as f:
        f.write(first + text + last)


CONF_FILES = {"unbound": "unbound.conf", "bind": "named.conf", "kresd": "kresd.conf",
              "pdns": "recursor.conf"}


class Resolver:
    def __init__(self, lab, tmp, kind, parent, shapes, tag, extra=""):
        self.lab = lab
        self.kind = kind
        self.addr = RESOLVER_ADDR[kind]
        self.dir = os.path.join(tmp, f"{kind}-{tag}")
        os.makedirs(self.dir)
        self.argv = BUILDERS[kind](self.dir, self.addr, parent, shapes, extra)
        if tag == "nocache":
            with_no_cache(kind, os.path.join(self.dir, CONF_FILES[kind]))
        self.tag = tag
        self.daemon = None

    def start(self):
        self.daemon = self.lab.spawn(self.lab.lab, f"{self.kind}-{self.tag}", self.argv,
                                     logname=f"{self.kind}-{self.tag}.log")

        def ready():
            r, _ = dnswire.udp_query(self.addr, ".", "SOA", timeout=1,
                                     sock_factory=lambda: udp_socket(self.lab.lab))
            return r.rcode == 0 and r.rrs(6)
        wait_for(f"{NAMES[self.kind]} to answer . SOA on {self.addr}", ready, 30, 0.3,
                 self.daemon)

    def stop(self):
        if self.daemon:
            self.lab.stop(self.daemon)
            self.daemon = None

    def log_tail(self, n=30):
        from .util import tail
        return tail(self.daemon.logfile if self.daemon else "", n)


def start_all(lab, tmp, kinds, parent, shapes, tag, extra=None):
    started = []
    try:
        for k in kinds:
            r = Resolver(lab, tmp, k, parent, shapes, tag, (extra or {}).get(k, ""))
            r.start()
            started.append(r)
    except SetupError:
        for r in started:
            r.stop()
        raise
    log(f"resolvers up: {', '.join(f'{r.kind} {r.addr}' for r in started)}")
    return started
