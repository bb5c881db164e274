"""The resident set of alternator-dns serving many simulated nodes (--memory)."""

import os
import re
import resource
import signal
import time

from .common import (BINARY, DOMAIN, LOOPBACK, MEMORY_TARGET_MIB, MEMORY_THREADS,
                     START_TIMEOUT, BenchError, Child, free_port, log, probe, wait_answering)
from .servers import metric, metrics_port, start_sim

# The DNS name in the simulated nodes' certificate with --memory-scheme https.
SIM_TLS_NAME = "alternator-sim.test"


def rss_kib(child):
    try:
        with open(f"/proc/{child.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    raise BenchError(f"cannot read the resident set of {child.name} (pid {child.pid}); "
                     f"exited?\n{child.tail()}")


def open_fds(child):
    try:
        return len(os.listdir(f"/proc/{child.pid}/fd"))
    except OSError as e:
        raise BenchError(f"cannot list the open files of {child.name}: {e}") from None


def raise_open_files_limit(nodes):
    """The simulated cluster holds a listener and a probe connection per node, and
    alternator-dns a connection per node: raise the soft limit (inherited by both)."""
    need = 2 * nodes + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise BenchError(f"--memory-nodes {nodes} needs about {need} open files, but the "
                         f"hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def measure_memory(args, workdir, children, problems):
    """Resident set of alternator-dns, MEMORY_THREADS workers, --memory-nodes nodes."""
    nodes = [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(args.memory_nodes)]
    raise_open_files_limit(len(nodes))
    # Over HTTPS the nodes share one certificate for one DNS name, signed by a
    # CA the simulator writes: the usual setup with --tls-server-name.
    sim_tls, dns_tls = [], []
    if args.memory_scheme == "https":
        tls_dir = os.path.join(workdir, "sim-tls")
        sim_tls = ["--tls-dir", tls_dir, "--tls-name", SIM_TLS_NAME]
        dns_tls = ["--alternator-scheme", "https", "--ca-file", os.path.join(tls_dir, "ca.pem"),
                   "--tls-server-name", SIM_TLS_NAME]
    sim_port = start_sim(args, workdir, children, nodes=nodes, name="sim-memory",
                         extra=sim_tls)
    results = []
    for health in ("true", "false"):
        name = f"memory-health-{health}"
        port = free_port()
        argv = [BINARY, "--listen", f"{LOOPBACK}:{port}", "--domain", DOMAIN,
                "--seed", f"{nodes[0]}:{sim_port}", "--alternator-port", str(sim_port),
                "--threads", str(MEMORY_THREADS), "--health-check", health,
                "--log-level", "warn", "--metrics-listen", f"{LOOPBACK}:{metrics_port(name)}",
                *dns_tls]
        child = Child(name, argv, workdir)
        children.append(child)
        log(f"{name}: pid {child.pid}  $ {' '.join(child.argv)}")
        served = rb"^alternator_dns_live_nodes\{name=\"" + re.escape(DOMAIN.encode()) + \
            rb"\.\"\} (\d+)"
        deadline = time.monotonic() + START_TIMEOUT
        while metric(name, served) != len(nodes):
            if not child.alive():
                raise BenchError(f"{name} exited with status {child.proc.returncode}:\n"
                                 f"{child.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} did not serve all {len(nodes)} nodes within "
                                 f"{START_TIMEOUT:.0f} s (serving {metric(name, served)})")
            time.sleep(0.2)
        wait_answering(child, port, need_answer=True)
        for _ in range(200):
            probe(port)
        first = rss_kib(child)
        samples = [first]
        end = time.monotonic() + args.memory_seconds
        while time.monotonic() < end:
            time.sleep(0.5)
            samples.append(rss_kib(child))
            probe(port)
        if not child.alive():
            raise BenchError(f"{name} died during the measurement:\n{child.tail()}")
        fds = open_fds(child)
        results.append({"health_check": health == "true", "nodes": len(nodes),
                        "scheme": args.memory_scheme,
                        "threads": MEMORY_THREADS, "rss_kib_first": first,
                        "rss_kib_max": max(samples), "rss_kib_last": samples[-1],
                        "open_fds": fds, "samples": len(samples)})
        status = child.stop()
        children.remove(child)
        if status not in (0, -signal.SIGTERM):
            raise BenchError(f"{name} exited with status {status} when stopped:\n{child.tail()}")
    log()
    log(f"== Resident set: alternator-dns, {MEMORY_THREADS} workers, {len(nodes)} nodes served "
        f"over {args.memory_scheme}, "
        f"sampled every 0.5 s for {args.memory_seconds:g} s")
    log(f"{'health checks':<14} {'first MiB':>9} {'max MiB':>8} {'last MiB':>8} {'open fds':>8}")
    for r in results:
        log(f"{'on' if r['health_check'] else 'off':<14} {r['rss_kib_first'] / 1024:>9.1f} "
            f"{r['rss_kib_max'] / 1024:>8.1f} {r['rss_kib_last'] / 1024:>8.1f} "
            f"{r['open_fds']:>8}")
    worst = max(r["rss_kib_max"] for r in results) / 1024
    verdict = "within" if worst <= MEMORY_TARGET_MIB else "ABOVE"
    log(f"largest: {worst:.1f} MiB, {verdict} the {MEMORY_TARGET_MIB} MiB target "
        f"(the target is for 1,000 nodes)")
    if worst > MEMORY_TARGET_MIB and len(nodes) <= 1000:
        problems.append(f"resident set {worst:.1f} MiB with {len(nodes)} nodes, above the "
                        f"{MEMORY_TARGET_MIB} MiB target")
    return results
