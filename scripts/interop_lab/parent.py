"""The fake root: knotd serving `.` signed by itself (ECDSA P-256, NSEC), with
insecure delegations of alternator.test (two instances) and big.test."""

import os

from . import dnswire
from .netns import NET, ROOT_ADDR, udp_socket
from .util import SetupError, log, run, wait_for

ROOT_NS = "a.root-servers.lab."

# The delegations the root carries: zone -> [(ns name, address)]
DELEGATIONS = {
    "alternator.test.": [("ns1.alternator.test.", f"{NET}.53"),
                         ("ns2.alternator.test.", f"{NET}.54")],
    "big.test.": [("ns1.big.test.", f"{NET}.56")],
}


def root_zone():
    lines = [
        "$ORIGIN .",
        f". 3600 IN SOA {ROOT_NS} hostmaster.lab. 1 1800 900 604800 60",
        f". 3600 IN NS {ROOT_NS}",
        f"{ROOT_NS} 3600 IN A {ROOT_ADDR}",
    ]
    for zone, servers in DELEGATIONS.items():
        for name, addr in servers:
            lines.append(f"{zone} 3600 IN NS {name}")
            lines.append(f"{name} 3600 IN A {addr}")
    return "\n".join(lines) + "\n"


def hints_text():
    return f". 3600000 IN NS {ROOT_NS}\n{ROOT_NS} 3600000 IN A {ROOT_ADDR}\n"


class Parent:
    def __init__(self, lab, tmp):
        self.lab = lab
        self.dir = os.path.join(tmp, "knot")
        os.makedirs(self.dir)
        self.hints = os.path.join(tmp, "root.hints")
        self.ds = None          # (keytag, alg, digest type, hex)
        self.dnskeys = []       # DNSKEY presentation texts (flags proto alg key)
        self.daemon = None

    def start(self):
        d = self.dir
        with open(os.path.join(d, "root.zone"), "w") as f:
            f.write(root_zone())
        with open(self.hints, "w") as f:
            f.write(hints_text())
        conf = os.path.join(d, "knot.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    rundir: "{d}"
    listen: {ROOT_ADDR}@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "{d}"
policy:
  - id: lab
    algorithm: ecdsap256sha256
    nsec3: off
template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: .
    file: "{d}/root.zone"
    dnssec-signing: on
    dnssec-policy: lab
""")
        run(["knotc", "-c", conf, "conf-check"])
        self.daemon = self.lab.spawn(self.lab.lab, "knotd", ["knotd", "-c", conf])
        sock = lambda: udp_socket(self.lab.lab)  # noqa: E731

        def signed():
            r, _ = dnswire.udp_query(ROOT_ADDR, ".", "DNSKEY", timeout=1, rd=False, do=True,
                                     sock_factory=sock)
            keys = r.rrs(48)
            if r.rcode == 0 and keys and r.rrs(46):
                return keys
            return None
        keys = wait_for("knotd to serve the signed root", signed, 20, 0.2, self.daemon)
        ksks = [k for k in keys if int.from_bytes(k[3][:2], "big") & 1]
        if not ksks:
            raise SetupError("the signed root has no KSK (flags 257)")
        self.dnskeys = [dnswire.dnskey_text(k[3]) for k in keys]
        self.ds = dnswire.ds_from_dnskey(".", ksks[0][3])
        self._check_with_keymgr(conf)
        log(f"fake root signed by knotd at {ROOT_ADDR}; trust anchor . DS "
            f"{self.ds[0]} {self.ds[1]} {self.ds[2]} {self.ds[3][:16]}...")

    def _check_with_keymgr(self, conf):
        """The DS computed from the served DNSKEY must be what keymgr says."""
        p = run(["keymgr", "-c", conf, ".", "ds"], check=False)
        if p.returncode != 0:
            log(f"note: keymgr . ds failed ({p.stderr.strip()}); using the DS computed "
                "from the served DNSKEY")
            return
        want = f"{self.ds[0]} {self.ds[1]} {self.ds[2]} {self.ds[3]}"
        got = [" ".join(ln.split()[-4:]).upper() for ln in p.stdout.splitlines()
               if " DS " in ln]
        if want.upper() not in got:
            raise SetupError(f"keymgr's DS ({got}) differs from the served key's ({want})")

    def ds_text(self):
        return f"{self.ds[0]} {self.ds[1]} {self.ds[2]} {self.ds[3]}"

    def ds_record(self):
        return f". 3600 IN DS {self.ds_text()}"

