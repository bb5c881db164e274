"""getaddrinfo() as an application calls it: glibc's stub resolver in the
client namespaces, with /etc/resolv.conf pointing at one resolver (a private
mount namespace per process), and RFC 6724 sorting (rule 9 on the nodes' subnet)."""

import json
import os
import subprocess
import time

from .netns import NODES

# Run in the client namespace by `python3 -c`: argv = name, calls, duration.
CHILD = r"""
import collections, json, socket, sys, time
name, calls, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
first = collections.Counter(); errors = collections.Counter(); sizes = []
start = time.monotonic()
for i in range(calls):
    due = start + i * duration / calls
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    if time.monotonic() - start > duration + 30:
        errors["out of time"] += calls - i
        break
    try:
        res = socket.getaddrinfo(name, 8000, 0, socket.SOCK_STREAM)
        addrs = [r[4][0] for r in res]
        first[addrs[0]] += 1
        sizes.append(len(addrs))
    except socket.gaierror as e:
        errors[e.strerror or str(e)] += 1
src = None
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("10.53.0.10", 8000)); src = s.getsockname()[0]; s.close()
except OSError:
    pass
try:
    with open("/proc/net/if_inet6") as f:
        v6 = sum(1 for ln in f if ln.split()[-1] != "lo")
except OSError:
    v6 = 0
print(json.dumps({"first": first, "errors": errors, "source": src, "ipv6_addresses": v6,
                  "mean_addresses": sum(sizes) / len(sizes) if sizes else 0}))
"""


def start(lab, tmp, ns, label, path, calls, duration):
    conf = os.path.join(tmp, f"resolv-{label}-{path.resolver}-{path.shape}.conf")
    with open(conf, "w") as f:
        f.write(f"nameserver {path.server}\noptions timeout:1 attempts:2\n")
    argv = ["python3", "-c", CHILD, path.zone, str(calls), str(duration)]
    proc = lab.popen(ns, argv, resolv_conf=conf, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True, start_new_session=True)
    # Killed through its Popen, which never signals a process already reaped.
    lab.cleanup.push(f"stop getaddrinfo client (pid {proc.pid})",
                     lambda: proc.kill() if proc.poll() is None else None)
    return (label, path, proc, time.monotonic() + duration + 60)


def collect(running):
    out = {}
    for label, path, proc, deadline in running:
        try:
            so, se = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            so, se = proc.communicate()
        key = f"{path.key}/{label}"
        try:
            d = json.loads(so.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out[key] = {"error": f"getaddrinfo child failed: {se.strip()[-500:]}"}
            continue
        n = sum(d["first"].values())
        shares = {a: d["first"].get(a, 0) / n if n else 0.0 for a in NODES}
        out[key] = {"client": label, "source": d["source"],
                    "ipv6_addresses": d["ipv6_addresses"], "calls": n + sum(
            d["errors"].values()), "answered": n, "errors": d["errors"], "shares": shares,
            "other_first": {a: c for a, c in d["first"].items() if a not in NODES},
            "max_share": max(shares.values()) if n else None,
            "mean_addresses": d["mean_addresses"]}
    return out
