"""The loads (offered rates and max), dnsperf runs and their records."""

import re
import subprocess
import time

from .common import (ALTERNATOR, LOOPBACK, LOST_LIMIT, Child, cpu_seconds, find_tool, fmt,
                     fmt_cpus, log, udp_rcvbuf_errors, worker_cpu_seconds)
from .servers import snapshot_generation


def rate_label(rate):
    """10000 -> 10k, 12500 -> 12.5k, 2000000 -> 2M, 750 -> 750."""
    if rate >= 1_000_000 and rate % 1_000_000 == 0:
        return f"{rate // 1_000_000}M"
    if rate >= 1000 and rate % 100 == 0:
        return f"{rate / 1000:g}k"
    return str(rate)


def make_loads(args):
    """The loads of one round, in order: each offered rate (rate mode), then max."""
    loads = []
    if "rate" in args.modes:
        loads += [{"label": rate_label(r), "mode": "rate", "rate": r} for r in args.rates]
    if "max" in args.modes:
        loads.append({"label": "max", "mode": "max", "rate": None})
    return loads


def server_order(names, round_no):
    """The order the servers run in, within each load of round `round_no` (from 1): the
    list rotated by one place a round, so that over each len(names) rounds every server
    runs once in every position. In a fixed order one server would always run first,
    right after the previous load's last run, and another always last, and whatever the
    position costs (the state the run before leaves) would fall on one server alone."""
    names = list(names)
    if not names:
        return names
    shift = (round_no - 1) % len(names)
    return names[shift:] + names[:shift]


def dnsperf_argv(args, load, port, qfile):
    argv = ["taskset", "-c", fmt_cpus(args.client_cpus), find_tool("dnsperf"),
            "-s", LOOPBACK, "-p", str(port), "-d", qfile,
            "-l", f"{args.duration:g}", "-t", f"{args.query_timeout:g}",
            "-c", str(args.clients), "-T", str(args.dnsperf_threads),
            "-q", str(args.outstanding), "-b", str(args.buffer_kb),
            "-O", "suppress=timeouts,unexpected"]
    if load["mode"] == "rate":
        argv += ["-Q", str(load["rate"])]
    return [str(a) for a in argv]


def parse_dnsperf(text):
    def num(pattern, kind=float):
        m = re.search(pattern, text)
        return kind(m.group(1)) if m else None

    sent = num(r"Queries sent:\s+(\d+)", int)
    completed = num(r"Queries completed:\s+(\d+)", int)
    lost = num(r"Queries lost:\s+(\d+)", int)
    if sent is None or completed is None or lost is None:
        return None
    codes = {}
    m = re.search(r"Response codes:\s+(.*)", text)
    if m:
        for code, count in re.findall(r"([A-Za-z0-9]+) (\d+) \(", m.group(1)):
            codes[code] = int(count)
    return {
        "sent": sent,
        "completed": completed,
        "lost": lost,
        "interrupted": num(r"Queries interrupted:\s+(\d+)", int) or 0,
        "codes": codes,
        "qps": num(r"Queries per second:\s+([\d.]+)") or 0.0,
        "run_time_s": num(r"Run time \(s\):\s+([\d.]+)"),
        "latency_us": scale(num(r"Average Latency \(s\):\s+([\d.]+)")),
        "latency_min_us": scale(num(r"Average Latency \(s\):.*\(min ([\d.]+)")),
        "latency_max_us": scale(num(r"Average Latency \(s\):.*max ([\d.]+)\)")),
        "latency_stddev_us": scale(num(r"Latency StdDev \(s\):\s+([\d.]+)")),
    }


def scale(seconds):
    return None if seconds is None else seconds * 1e6


def measure(args, name, child, port, load, qfile, workdir, children, tag):
    """One dnsperf run; returns the run's record (with `problems`)."""
    argv = dnsperf_argv(args, load, port, qfile)
    drops0 = udp_rcvbuf_errors()
    alternator = name in ALTERNATOR
    gen0 = snapshot_generation(name) if alternator else None
    wcpu0 = worker_cpu_seconds(child.pid) if alternator else None
    cpu0 = cpu_seconds(child.pid)
    t0 = time.monotonic()
    perf = Child(f"dnsperf-{tag}", argv, workdir)
    children.append(perf)
    limit = args.duration + args.query_timeout + 30
    try:
        perf.proc.wait(limit)
    except subprocess.TimeoutExpired:
        pass
    wall = time.monotonic() - t0
    cpu1 = cpu_seconds(child.pid) if child.alive() else None
    wcpu1 = worker_cpu_seconds(child.pid) if alternator and cpu1 is not None else None
    gen1 = snapshot_generation(name) if alternator and cpu1 is not None else None
    drops1 = udp_rcvbuf_errors()
    timed_out = perf.alive()
    status = perf.stop()
    children.remove(perf)
    output = perf.stdout() + perf.stderr()
    run = {"server": name, "load": load["label"], "mode": load["mode"],
           "offered_qps": load["rate"], "pid": child.pid, "wall_s": wall,
           "dnsperf": " ".join(argv), "problems": [],
           "udp_rcvbuf_drops": None if drops0 is None or drops1 is None else drops1 - drops0}
    stats = parse_dnsperf(output)
    if timed_out:
        run["problems"].append(f"dnsperf still running after {limit:.0f} s; stopped")
    elif status != 0:
        run["problems"].append(f"dnsperf exited with status {status}")
    if stats is None:
        run["problems"].append("no statistics in dnsperf's output:\n" + perf.tail())
        stats = {"sent": 0, "completed": 0, "lost": 0, "codes": {}, "qps": 0.0,
                 "latency_us": None}
    run.update(stats)
    if cpu1 is None:
        run["problems"].append(f"{name} died during the run (status "
                               f"{child.proc.returncode}):\n{child.tail()}")
        run["cpu_s"] = None
        run["cpu_us_per_query"] = None
        run["cpu_percent"] = None
    else:
        run["cpu_s"] = cpu1 - cpu0
        run["cpu_us_per_query"] = (run["cpu_s"] * 1e6 / run["completed"]
                                   if run["completed"] else None)
        run["cpu_percent"] = run["cpu_s"] * 100 / wall
    run["worker_cpu_us_per_query"] = (
        (wcpu1 - wcpu0) * 1e6 / run["completed"]
        if wcpu0 is not None and wcpu1 is not None and run["completed"] else None)
    run["swaps_per_s"] = ((gen1 - gen0) / wall
                          if gen0 is not None and gen1 is not None else None)
    run["lost_percent"] = 100.0 * run["lost"] / run["sent"] if run["sent"] else 0.0
    others = {c: n for c, n in run["codes"].items() if c != "NOERROR"}
    if others:
        run["problems"].append("response codes other than NOERROR: "
                               + ", ".join(f"{c} {n}" for c, n in others.items()))
    if stats is not None and run["completed"] == 0:
        run["problems"].append("no query was answered")
    if load["mode"] == "rate" and run["lost_percent"] > LOST_LIMIT:
        run["problems"].append(f"lost {run['lost_percent']:.2f}% of queries in rate mode "
                               f"(limit {LOST_LIMIT:g}%)")
    return run


RUN_HEADER = (f"{'round':>5}  {'server':<11} {'load':<5} {'completed':>10} {'lost':>7} "
              f"{'lost%':>6} {'drops':>6} {'qps':>10} {'lat us':>8} {'cpu us/q':>9} "
              f"{'cpu %':>6}  codes")


def print_run(round_no, run):
    codes = ", ".join(f"{c} {n}" for c, n in run["codes"].items()) or "none"
    log(f"{round_no:>5}  {run['server']:<11} {run['load']:<5} {run['completed']:>10} "
        f"{run['lost']:>7} {run['lost_percent']:>6.2f} {fmt(run['udp_rcvbuf_drops'], 'd', 6)} "
        f"{run['qps']:>10.0f} "
        f"{fmt(run['latency_us'], '.1f', 8)} {fmt(run['cpu_us_per_query'], '.3f', 9)} "
        f"{fmt(run['cpu_percent'], '.1f', 6)}  {codes}"
        + ("  <-- " + "; ".join(p.splitlines()[0] for p in run["problems"])
           if run["problems"] else ""))
    for p in run["problems"]:
        if "\n" in p:
            log(p)
