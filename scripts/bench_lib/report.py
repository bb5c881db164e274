"""Summary, contention, ratios, targets and the printed report."""

from .common import (AFFINITY_RULES, ALTERNATOR, BASE_SERVER, CPU_RESOLUTION_S, REFERENCES, fmt, fmt_cpus,
                     log, machine_line)
from .runs import rate_label
from .stats import CONFIDENCE, median, median_interval, paired_ratios, trimmed, verdict

# ---------------------------------------------------------------- contention
#
# The development machine has 2 vCPUs shared with other work, and neighbours come and
# go. When they take the server's or dnsperf's CPU the numbers say nothing about the
# servers: the same command once gave the floor 6.8 us/query at 50k qps with ~90 us
# latency, and later 12.9-14.8 us/query with 1.6-2.1 ms latency, dnsperf unable to hold
# 50k qps. A load is CONTENDED, and no ratio is drawn for it, when
#
# (a) in rate mode any server answered under RATE_HELD of the offered rate in any
#     round. On a quiet machine every server holds the rate to within the queries still
#     in flight at the end (the 1% loss limit is checked on its own), 99% and up; 97%
#     leaves room for that and for a short run's start, and anything less means dnsperf
#     or the server was starved of CPU, so CPU per query and latency were measured
#     under different conditions than in the other runs;
# (b) across rounds the floor, which does the same fixed work every time, varied:
#     its CPU per query by more than FLOOR_CPU_SPREAD (max/min), or its average
#     latency by more than FLOOR_LATENCY_SPREAD. Between quiet runs the floor's CPU per
#     query moved by 5 to 15% (6.4 to 7.4 us at 50k in the runs of benches/README.md,
#     and ratios to it by 1.06x to 1.16x), so 1.30x is about twice the quiet noise and
#     still well under the ~2x of a contended run; its latency moved by up to ~2x
#     between quiet rounds (27 to 90 us at 50k: the average follows a few slow
#     answers), so 3x is clear of that and far under the ~20x of a contended run.
#     From 10 rounds on, the lowest and highest tenth of the floor's rounds are left
#     out of both spreads (stats.trimmed): max/min over many rounds grows with their
#     number, and one bad round in thirty does not move their median; the paired
#     intervals of the targets show what it does to the ratios.
#     Each CPU reading has a resolution (CPU_RESOLUTION_S: 1 us from the CPU clock, or one
#     clock tick where only /proc/PID/stat is read), so a run's CPU time is known to
#     CPU_TICK_SLACK of those; the spread must exceed the threshold even with that error
#     taken against it, which keeps very short runs from being flagged by the resolution
#     alone.
#
# Contention that lasts through every round shows in neither (a) nor (b). A hint, not a
# verdict: in rate mode the floor answers in tens of microseconds on a quiet machine
# (27 to 90 us at 50k), so a median above FLOOR_LATENCY_HINT_US is noted as a sign that
# every round may have been contended alike.
RATE_HELD = 0.97
FLOOR_CPU_SPREAD = 1.30
FLOOR_LATENCY_SPREAD = 3.0
CPU_TICK_SLACK = 2
FLOOR_LATENCY_HINT_US = 500

# The targets: (server, what, reference, limit, strict, offered rate or None for every
# load). A ratio server/reference at most `limit` (below it when strict) is met.
TARGETS = [
    ("default", "cpu_us_per_query", "floor", 1.03, False, None),
    ("default", "cpu_us_per_query", "knot", 1.00, True, None),
    ("uring", "cpu_us_per_query", "floor", 1.05, False, None),
    ("default", "latency_us", "floor", 1.05, False, 50000),
    # Zone-local answers: affinity on (queries from a placed source, AFFINITY_RULES
    # locations) against the same binary with it off.
    ("affinity", "cpu_us_per_query", "default", 1.05, False, 50000),
]


def ratio(a, b):
    return None if a is None or not b else a / b


def summarize(args, loads, runs):
    """Medians over rounds, one entry per (server, load), loads in order."""
    summary = []
    for load in loads:
        for name in args.servers:
            rs = [r for r in runs if r["server"] == name and r["load"] == load["label"]]
            if not rs:
                continue
            s = {
                "server": name, "load": load["label"], "mode": load["mode"],
                "offered_qps": load["rate"], "runs": len(rs),
                "completed": median([r["completed"] for r in rs]),
                "lost_percent": median([r["lost_percent"] for r in rs]),
                "qps": median([r["qps"] for r in rs]),
                "latency_us": median([r["latency_us"] for r in rs]),
                "cpu_us_per_query": median([r["cpu_us_per_query"] for r in rs]),
                "cpu_s": median([r["cpu_s"] for r in rs]),
                "cpu_percent": median([r["cpu_percent"] for r in rs]),
                "worker_cpu_us_per_query": median([r.get("worker_cpu_us_per_query")
                                                   for r in rs]),
                "swaps_per_s": median([r.get("swaps_per_s") for r in rs]),
                "non_noerror": sum(n for r in rs for c, n in r["codes"].items()
                                   if c != "NOERROR"),
            }
            s["limited_by"] = limited_by(args, s)
            summary.append(s)
    return summary


def limited_by(args, s):
    """In max mode, who set the pace: the server when its CPUs were (nearly) all busy."""
    if s["mode"] != "max" or s["cpu_percent"] is None:
        return None
    capacity = 100.0 * min(args.threads, len(args.server_cpus))
    return "server" if s["cpu_percent"] >= 0.9 * capacity else "client"


def contention(args, loads, runs):
    """Per load label: whether the load was contended, why, and the floor's spread."""
    out = {}
    for load in loads:
        rs = [r for r in runs if r["load"] == load["label"]]
        c = {"load": load["label"], "contended": False, "reasons": [], "short": [],
             "notes": [],
             "min_held_fraction": None, "floor_cpu_us_per_query": [],
             "floor_cpu_spread": None, "floor_cpu_spread_beyond_ticks": None,
             "floor_cpu_spread_range": None, "floor_latency_us": [],
             "floor_latency_spread": None, "floor_latency_spread_range": None,
             "floor_spread_checked": False}
        if load["mode"] == "rate":
            rate_not_held(load, rs, c)
        floor_spread(args, rs, c)
        lat = median(c["floor_latency_us"])
        if load["mode"] == "rate" and lat is not None and lat > FLOOR_LATENCY_HINT_US:
            c["notes"].append(
                f"the floor's median latency is {lat:,.0f} us at a fixed rate (quiet: tens "
                "of us): every round may have been contended alike, which no spread shows")
        c["contended"] = bool(c["reasons"])
        out[load["label"]] = c
    return out


def rate_not_held(load, rs, c):
    """(a): a server answered under RATE_HELD of the offered rate in some round."""
    rate = load["rate"]
    worst = {}
    for r in rs:
        if r["cpu_s"] is None or not r["completed"]:
            continue  # the server died or dnsperf failed: a failure, reported as one
        held = r["qps"] / rate
        if r["server"] not in worst or held < worst[r["server"]][0]:
            worst[r["server"]] = (held, r["round"], r["qps"])
    if worst:
        c["min_held_fraction"] = min(h for h, _, _ in worst.values())
    short = {n: w for n, w in worst.items() if w[0] < RATE_HELD}
    if not short:
        return
    who = ", ".join(f"{n} {h:.1%} (round {rnd}: {q:,.0f} qps)"
                    for n, (h, rnd, q) in short.items())
    reason = (f"the offered {rate:,} qps was not held (under {RATE_HELD:.0%}): {who}")
    if "floor" in worst and "floor" not in short:
        reason += "; the floor held it, so the servers named may be at their own limit"
    c["reasons"].append(reason)
    c["short"].append(f"offered rate not held (lowest {c['min_held_fraction']:.0%})")


def floor_spread(args, rs, c):
    """(b): the floor's CPU per query or latency varied too much across rounds."""
    floor = [r for r in rs if r["server"] == "floor" and r["cpu_us_per_query"] is not None]
    c["floor_cpu_us_per_query"] = [r["cpu_us_per_query"] for r in floor]
    c["floor_latency_us"] = [r["latency_us"] for r in floor if r["latency_us"] is not None]
    if len(floor) < 2:
        needs = [n for n, lacking in (("--rounds 2 or more", args.rounds < 2),
                                      ("the floor among --servers",
                                       "floor" not in args.servers)) if lacking]
        c["notes"].append("the floor's spread over rounds is not checked: "
                          + (f"it needs {' and '.join(needs)}" if needs
                             else "fewer than 2 floor runs with a result"))
        c["floor_spread_checked"] = False
        return
    c["floor_spread_checked"] = True
    floor = trimmed(floor, key=lambda r: r["cpu_us_per_query"])
    cpu = [r["cpu_us_per_query"] for r in floor]
    c["floor_cpu_spread_range"] = [min(cpu), max(cpu)]
    if min(cpu) > 0:
        c["floor_cpu_spread"] = max(cpu) / min(cpu)
        slack = CPU_TICK_SLACK * CPU_RESOLUTION_S
        hi = max((r["cpu_s"] - slack) / r["completed"] for r in floor)
        lo = min((r["cpu_s"] + slack) / r["completed"] for r in floor)
        c["floor_cpu_spread_beyond_ticks"] = max(hi, 0.0) / lo
        if c["floor_cpu_spread_beyond_ticks"] > FLOOR_CPU_SPREAD:
            c["reasons"].append(
                f"the floor's CPU per query varied {c['floor_cpu_spread']:.2f}x over rounds "
                f"({min(cpu):.2f} to {max(cpu):.2f} us; limit {FLOOR_CPU_SPREAD:.2f}x)")
            c["short"].append(f"floor cpu us/q spread {c['floor_cpu_spread']:.2f}x")
        elif c["floor_cpu_spread"] > FLOOR_CPU_SPREAD:
            c["notes"].append(
                f"the floor's CPU per query varied {c['floor_cpu_spread']:.2f}x, but only "
                f"{c['floor_cpu_spread_beyond_ticks']:.2f}x once the CPU readings' resolution "
                f"(+-{CPU_TICK_SLACK} x {CPU_RESOLUTION_S:g} s a run) is allowed for: not "
                "counted (longer runs measure it more finely)")
    lat = trimmed(c["floor_latency_us"])
    c["floor_latency_spread_range"] = [min(lat), max(lat)] if lat else None
    if len(lat) >= 2 and min(lat) > 0:
        c["floor_latency_spread"] = max(lat) / min(lat)
        if c["floor_latency_spread"] > FLOOR_LATENCY_SPREAD:
            c["reasons"].append(
                f"the floor's latency varied {c['floor_latency_spread']:.1f}x over rounds "
                f"({min(lat):,.0f} to {max(lat):,.0f} us; limit {FLOOR_LATENCY_SPREAD:g}x)")
            c["short"].append(f"floor latency spread {c['floor_latency_spread']:.1f}x")


def make_ratios(loads, summary, contended):
    """Each alternator-dns variant over the floor and Knot (a -churn or -cmp variant also
    over its backend, affinity over default), for uncontended loads only."""
    ratios = []
    by_key = {(s["server"], s["load"]): s for s in summary}
    for load in loads:
        label = load["label"]
        if contended[label]["contended"]:
            continue
        for name in ALTERNATOR:
            mine = by_key.get((name, label))
            if not mine:
                continue
            # A -churn variant is compared with its backend on the workers' CPU
            # alone (its control thread works hard on purpose), a -cmp one and
            # affinity (with default) on all.
            base = by_key.get((BASE_SERVER[name], label)) if name in BASE_SERVER else None
            cpu = ("worker_cpu_us_per_query" if name.endswith("-churn")
                   else "cpu_us_per_query")
            pairs = [(base, cpu)] if base else []
            pairs += [(by_key.get((ref, label)), "cpu_us_per_query") for ref in REFERENCES]
            for other, key in pairs:
                if other:
                    ratios.append({
                        "server": name, "load": label, "mode": load["mode"],
                        "vs": other["server"],
                        "cpu_us_per_query": ratio(mine[key], other[key]),
                        "qps": ratio(mine["qps"], other["qps"]),
                        "latency": ratio(mine["latency_us"], other["latency_us"]),
                    })
    return ratios


def make_targets(loads, summary, contended, runs):
    """The targets checked per load; status met, missed, or not checked (and why); for
    those checked, the interval of the per-round ratios' median and whether it settles
    the target (see stats.py)."""
    by_key = {(s["server"], s["load"]): s for s in summary}
    results = []
    for server, what, ref, limit, strict, only_rate in TARGETS:
        applicable = [l for l in loads if only_rate is None or l["rate"] == only_rate]
        measured = any((server, l["label"]) in by_key and (ref, l["label"]) in by_key
                       for l in loads)
        if not applicable and measured:
            results.append(target(server, what, ref, limit, strict, rate_label(only_rate),
                                  None, None, "not checked",
                                  f"no {only_rate:,} qps load in this run"))
        for load in applicable:
            mine, other = by_key.get((server, load["label"])), by_key.get((ref, load["label"]))
            if not mine or not other:
                continue
            a, b = mine[what], other[what]
            if contended[load["label"]]["contended"]:
                status, why = "not checked", "contended"
            elif ratio(a, b) is None:
                status, why = "not checked", "no value"
            else:
                r = a / b
                status, why = ("met" if (r < limit if strict else r <= limit) else "MISSED"), ""
            results.append(target(server, what, ref, limit, strict, load["label"], a, b,
                                  status, why))
            if status != "not checked":
                per_round = paired_ratios(runs, server, ref, load["label"], what)
                interval = median_interval(per_round)
                results[-1].update(rounds_paired=len(per_round), interval=interval,
                                   settled=verdict(interval, limit, strict))
            if what == "cpu_us_per_query" and mine["cpu_s"] and other["cpu_s"]:
                # How far the ratio may be off from the CPU readings' resolution alone.
                results[-1]["tick_resolution"] = (CPU_TICK_SLACK * CPU_RESOLUTION_S) * (
                    1 / mine["cpu_s"] + 1 / other["cpu_s"])
    order = {l["label"]: i for i, l in enumerate(loads)}
    results.sort(key=lambda t: order.get(t["load"], len(loads)))  # stable: by load
    return results


def target(server, what, ref, limit, strict, label, a, b, status, why):
    name = {"cpu_us_per_query": "cpu us/q", "latency_us": "latency"}[what]
    rel = "<" if strict else "<="
    goal = f"{server} {name} {rel} {ref}" if limit == 1 else \
        f"{server} {name} {rel} {limit:.2f}x {ref}"
    return {"load": label, "server": server, "metric": what, "vs": ref, "limit": limit,
            "strict": strict, "target": goal, "value": a, "reference": b,
            "ratio": ratio(a, b), "status": status, "why": why, "tick_resolution": None,
            "rounds_paired": 0, "interval": None, "settled": None}


# ---------------------------------------------------------------- printing


def print_report(args, machine, loads, summary, contended, ratios, targets):
    offered = ", ".join(l["label"] for l in loads if l["mode"] == "rate")
    log()
    log(f"== Summary: medians over {args.rounds} round(s) of {args.duration:g} s per run; "
        f"servers on CPU {fmt_cpus(args.server_cpus)} ({args.threads} worker(s)), dnsperf "
        f"on CPU {fmt_cpus(args.client_cpus)} (-T {args.dnsperf_threads} -c {args.clients} "
        f"-q {args.outstanding})" + (f"; rate mode offers {offered} qps" if offered else ""))
    log(f"machine: {machine_line(machine)}")
    log(f"command: {machine['command']}")
    log(f"{'server':<11} {'load':<5} {'qps':>10} {'lat us':>8} {'cpu us/q':>9} "
        f"{'wrk us/q':>9} {'cpu %':>6} {'lost%':>6} {'swaps/s':>8} {'non-NOERROR':>11} "
        f"{'runs':>4}  limit")
    for s in summary:
        log(f"{s['server']:<11} {s['load']:<5} {fmt(s['qps'], '.0f', 10)} "
            f"{fmt(s['latency_us'], '.1f', 8)} {fmt(s['cpu_us_per_query'], '.3f', 9)} "
            f"{fmt(s['worker_cpu_us_per_query'], '.3f', 9)} "
            f"{fmt(s['cpu_percent'], '.1f', 6)} {fmt(s['lost_percent'], '.2f', 6)} "
            f"{fmt(s['swaps_per_s'], '.1f', 8)} "
            f"{s['non_noerror']:>11} {s['runs']:>4}  {s['limited_by'] or '-'}")
    print_contention(loads, contended)
    print_ratios(loads, contended, ratios)
    print_affinity(loads, summary, contended)
    print_targets(targets)


def print_contention(loads, contended):
    log()
    log(f"== Contention: the floor's spread over rounds (max/min; CONTENDED above "
        f"{FLOOR_CPU_SPREAD:.2f}x CPU per query or {FLOOR_LATENCY_SPREAD:g}x latency), and "
        f"the offered rate held (CONTENDED under {RATE_HELD:.0%} for any server in any round)")
    log(f"{'load':<5} {'floor cpu us/q spread':<26} {'floor latency spread':<26} "
        f"{'rate held':>9}  verdict")
    for load in loads:
        c = contended[load["label"]]
        cpu, lat = c["floor_cpu_spread_range"], c["floor_latency_spread_range"]
        cpu_text = (f"{c['floor_cpu_spread']:.2f}x ({cpu[0]:.2f}-{cpu[1]:.2f})"
                    if c["floor_cpu_spread"] is not None else "-")
        lat_text = (f"{c['floor_latency_spread']:.2f}x ({lat[0]:,.0f}-{lat[1]:,.0f} us)"
                    if c["floor_latency_spread"] is not None else "-")
        held = (f"{c['min_held_fraction']:.1%}" if c["min_held_fraction"] is not None
                else "-")
        verdict = ("CONTENDED" if c["contended"] else "ok" if c["floor_spread_checked"]
                   else "ok as far as checked")
        log(f"{load['label']:<5} {cpu_text:<26} {lat_text:<26} {held:>9}  {verdict}")
        for reason in c["reasons"]:
            log(f"      - {reason}")
        for note in c["notes"]:
            log(f"      (note: {note})")


def print_ratios(loads, contended, ratios):
    log()
    log("== Ratios: alternator-dns / reference (cpu us/q and lat: lower is better; "
        "qps: higher is better; a -churn or -cmp variant also with its backend, "
        "-churn on the workers' CPU alone; affinity also with default, i.e. affinity off)")
    log(f"{'server':<11} {'load':<5} {'vs':<11} {'cpu us/q':>9} {'qps':>7} {'lat':>7}")
    for load in loads:
        label = load["label"]
        if contended[label]["contended"]:
            log(f"{'-':<11} {label:<5} CONTENDED, ratios not drawn: "
                f"{'; '.join(contended[label]['short'])} (see Contention above)")
            continue
        for r in (r for r in ratios if r["load"] == label):
            log(f"{r['server']:<11} {label:<5} {r['vs']:<11} "
                f"{fmt(r['cpu_us_per_query'], '.2f', 8)}x {fmt(r['qps'], '.2f', 6)}x "
                f"{fmt(r['latency'], '.2f', 6)}x")


def affinity_ratios(loads, summary, contended):
    """Per load: the affinity server over default (the same binary, affinity off), on
    medians; None for a contended load."""
    by_key = {(s["server"], s["load"]): s for s in summary}
    out = []
    for load in loads:
        on, off = by_key.get(("affinity", load["label"])), by_key.get(("default", load["label"]))
        if not on or not off:
            continue
        row = {"load": load["label"], "contended": contended[load["label"]]["contended"],
               "on": on, "off": off}
        # Ratios of medians, as in make_ratios; None where the load was contended.
        for key in ("cpu_us_per_query", "worker_cpu_us_per_query", "latency_us"):
            row[key] = None if row["contended"] else ratio(on[key], off[key])
        out.append(row)
    return out


def print_affinity(loads, summary, contended):
    rows = affinity_ratios(loads, summary, contended)
    if not rows:
        return
    log()
    log(f"== Affinity: affinity (--affinity true, {AFFINITY_RULES:,} locations, dnsperf's "
        "source placed) / default (affinity off); medians over rounds, CPU per answered "
        "query: all threads (cpu) and the UDP workers alone (wrk)")
    log(f"{'load':<5} {'cpu us/q on':>11} {'off':>7} {'ratio':>7}  {'wrk us/q on':>11} "
        f"{'off':>7} {'ratio':>7}  {'lat':>7}")
    for r in rows:
        on, off = r["on"], r["off"]
        if r["contended"]:
            log(f"{r['load']:<5} CONTENDED, ratio not drawn (see Contention above)")
            continue
        log(f"{r['load']:<5} {fmt(on['cpu_us_per_query'], '.3f', 11)} "
            f"{fmt(off['cpu_us_per_query'], '.3f', 7)} {fmt(r['cpu_us_per_query'], '.3f', 6)}x  "
            f"{fmt(on['worker_cpu_us_per_query'], '.3f', 11)} "
            f"{fmt(off['worker_cpu_us_per_query'], '.3f', 7)} "
            f"{fmt(r['worker_cpu_us_per_query'], '.3f', 6)}x  {fmt(r['latency_us'], '.2f', 6)}x")


def print_targets(targets):
    if not targets:
        return
    log()
    log("== Targets (medians; checked on loads that were not contended)")
    log(f"{'load':<5} {'target':<36} result")
    shown = set()
    for t in targets:
        if t["why"] == "contended":
            if t["load"] not in shown:
                log(f"{t['load']:<5} {'every target':<36} not checked (contended)")
                shown.add(t["load"])
            continue
        unit = " us" if t["metric"] == "latency_us" else ""
        if t["status"] in ("met", "MISSED"):
            result = (f"{t['status']}: {t['ratio']:.3f}x ({t['value']:.2f} vs "
                      f"{t['reference']:.2f}{unit})")
            if (t["tick_resolution"] or 0) > 0.02:
                result += f"; +-{t['tick_resolution']:.0%} from the CPU readings"
            result += interval_text(t)
        else:
            result = f"not checked ({t['why']})"
        log(f"{t['load']:<5} {t['target']:<36} {result}")
    counts = {k: sum(1 for t in targets if t["status"] == k)
              for k in ("met", "MISSED", "not checked")}
    if any((t["tick_resolution"] or 0) > 0.02 for t in targets
           if t["status"] in ("met", "MISSED")):
        log("(+-N% from the CPU readings: how far their resolution alone may move a ratio "
            "at this run length, at worst; longer runs resolve more)")
    settled = {k: sum(1 for t in targets if t["settled"] == k)
               for k in ("within", "beyond", "unresolved")}
    log(f"(per round: the {CONFIDENCE:.0%} interval of the median of the per-round ratios "
        "(coverage in brackets); 'holds' or 'misses' when all of it is on one side of the "
        "limit, 'unresolved' when the limit lies inside or there were under 5 rounds: the "
        "run cannot tell, more rounds or a quieter machine can)")
    log(f"targets: {counts['met']} met, {counts['MISSED']} missed, "
        f"{counts['not checked']} not checked; per round: {settled['within']} hold, "
        f"{settled['beyond']} miss, {settled['unresolved']} unresolved")


def interval_text(t):
    """The per-round interval of a checked target, and what it settles."""
    if t["interval"] is None:
        return ""
    low, high, coverage = t["interval"]
    word = {"within": "holds", "beyond": "misses", "unresolved": "unresolved"}[t["settled"]]
    return (f"; per round {low:.3f}-{high:.3f}x ({coverage:.0%} of {t['rounds_paired']}): "
            f"{word}")


def contention_verdict(loads, contended):
    """The end of the final line: how many loads were contended."""
    bad = [l["label"] for l in loads if contended[l["label"]]["contended"]]
    unchecked = any(not contended[l["label"]]["floor_spread_checked"] for l in loads)
    if not bad:
        return f"none of {len(loads)} load(s) contended" + (
            " (the floor's spread over rounds was not checked)" if unchecked else "")
    text = (f"{len(bad)} of {len(loads)} load(s) CONTENDED ({', '.join(bad)}): "
            f"ratios not drawn for {'it' if len(bad) == 1 else 'them'}")
    if len(bad) == len(loads):
        text += "; nothing to compare from this run, rerun on a quieter machine"
    return text
