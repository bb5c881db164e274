"""Installs the Debian packages the lab needs without starting their daemons."""

import os
import shutil
import time

from .util import SetupError, log, processes_named, run

POLICY = "/usr/sbin/policy-rc.d"
DAEMONS = ("unbound", "named", "kresd", "pdns_recursor", "knotd")

# package -> a program it ships (what tells that it is installed)
PACKAGES = {
    "iproute2": "/usr/sbin/ip",  # /sbin/ip on some systems; shutil.which finds it
    "knot": "/usr/sbin/knotd",
    "knot-dnsutils": "/usr/bin/kdig",
    "bind9-dnsutils": "/usr/bin/dig",
    "unbound": "/usr/sbin/unbound",
    "bind9": "/usr/sbin/named",
    "knot-resolver": "/usr/sbin/kresd",
    "pdns-recursor": "/usr/sbin/pdns_recursor",
    "zonemaster-cli": "/usr/bin/zonemaster-cli",
}
RESOLVER_PACKAGE = {"unbound": "unbound", "bind": "bind9", "kresd": "knot-resolver",
                    "pdns": "pdns-recursor"}


def program(package):
    path = PACKAGES[package]
    if os.access(path, os.X_OK):
        return path
    return shutil.which(os.path.basename(path))


def needed_packages(resolvers, zonemaster):
    pkgs = ["iproute2", "knot", "knot-dnsutils", "bind9-dnsutils"]
    pkgs += [RESOLVER_PACKAGE[r] for r in resolvers]
    if zonemaster:
        pkgs.append("zonemaster-cli")
    return pkgs


def ensure_packages(resolvers, zonemaster, no_install):
    """Returns {'installed': [...], 'daemons_started': {pid: name}}; raises SetupError."""
    pkgs = needed_packages(resolvers, zonemaster)
    missing = [p for p in pkgs if not program(p)]
    if not missing:
        return {"installed": [], "daemons_started": {}}
    if no_install:
        raise SetupError("missing (and --no-install given): "
                         + ", ".join(f"{p} ({PACKAGES[p]})" for p in missing))
    if not shutil.which("apt-get"):
        raise SetupError("apt-get not found; install by hand: " + " ".join(missing))
    before = processes_named(DAEMONS)
    created_policy = False
    if os.path.exists(POLICY):
        # Someone else's policy: use it only if it forbids starting services.
        p = run([POLICY, "unbound", "start"], check=False)
        if p.returncode not in (101, 104):
            raise SetupError(
                f"{POLICY} exists and allows starting services (exit {p.returncode}); "
                "installing would start resolvers in the host namespace. Install by hand: "
                + " ".join(missing))
    else:
        with open(POLICY, "w") as f:
            f.write("#!/bin/sh\n# Written by scripts/interop for the time of its apt-get"
                    " install: start no services.\nexit 101\n")
        os.chmod(POLICY, 0o755)
        created_policy = True
    started = time.time()
    try:
        log(f"installing {' '.join(missing)} (services kept from starting by {POLICY})")
        env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive"]
        p = run(env_cmd + ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                + missing, check=False, timeout=900)
        if p.returncode != 0:
            log("apt-get install failed; running apt-get update and trying again")
            run(env_cmd + ["apt-get", "update", "-q"], timeout=600)
            run(env_cmd + ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                + missing, timeout=900)
    finally:
        if created_policy:
            os.unlink(POLICY)
    after = processes_named(DAEMONS)
    new = {pid: comm for pid, comm in after.items() if pid not in before}
    if new:
        # Never killed here: they were not started by this program, and which
        # part of the install started them cannot be proven from here.
        log("WARNING: these daemons started during the package install, in the host "
            "namespace (not stopped by this program): "
            + ", ".join(f"{comm} pid {pid}" for pid, comm in sorted(new.items())))
    still = [p for p in missing if not program(p)]
    if still:
        raise SetupError("installed, but still missing: " + " ".join(still))
    log(f"installed in {time.time() - started:.0f}s; no resolver daemon was started"
        if not new else "installed")
    return {"installed": missing, "daemons_started": {str(k): v for k, v in new.items()}}


def versions(resolvers):
    """Human-readable versions of the programs used."""
    out = {}

    def first_line(cmd):
        try:
            p = run(cmd, check=False, timeout=20)
        except SetupError as e:
            return str(e)
        text = (p.stdout or "") + (p.stderr or "")
        for line in text.splitlines():
            if line.strip():
                return line.strip()
        return "?"

    def deb(pkg):
        p = run(["dpkg-query", "-W", "-f", "${Version}", pkg], check=False)
        return p.stdout.strip() if p.returncode == 0 else "?"

    cmds = {"unbound": (["unbound", "-V"], "unbound"), "bind": (["named", "-v"], "bind9"),
            "kresd": (["kresd", "--version"], "knot-resolver"),
            "pdns": (["pdns_recursor", "--version"], "pdns-recursor")}
    for r in resolvers:
        cmd, pkg = cmds[r]
        line = first_line(cmd)
        if r == "pdns":
            # pdns_recursor --version prints the version among log lines
            p = run(cmd, check=False)
            for ln in ((p.stdout or "") + (p.stderr or "")).splitlines():
                if "PowerDNS Recursor" in ln:
                    line = ln[ln.index("PowerDNS Recursor"):].split(" (C)")[0].strip()
                    break
        out[r] = f"{line} (Debian {deb(pkg)})"
    out["knotd"] = f"{first_line(['knotd', '--version'])} (Debian {deb('knot')})"
    return out
