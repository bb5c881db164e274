"""The markdown report (stdout) and the JSON file."""

import json

from .checks import COLUMNS
from .netns import NODES

SHORT = {"ok": "ok", "fail": "FAIL", "na": "n/a"}


def _mark(c):
    if c is None:
        return "-"
    return {True: "ok", False: "**FAIL**", None: "n/a"}[c["ok"]]


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def failures(result):
    out = []
    for mode, m in result.get("modes", {}).items():
        for path, cs in m["correctness"].items():
            for name, c in cs.items():
                if c["ok"] is False:
                    out.append(f"{mode} {path} {name}: {c['detail']}")
    for name, c in (result.get("affinity") or {}).get("checks", {}).items():
        if c["ok"] is False:
            out.append(f"affinity {name}: {c['detail']}")
    return out


def write_json(result, path):
    with open(path, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True, default=str)
        f.write("\n")


def _table(head, rows):
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n\n"


def markdown(result):
    o = ["# alternator-dns behind real resolvers\n"]
    mi = result.get("machine", {})
    o.append(f"Machine: {mi.get('cpu')} ({mi.get('cpus')} CPUs), Linux {mi.get('kernel')}, "
             f"{mi.get('date')}, Python {mi.get('python')}.\n\n")
    b = result.get("binary")
    if b:
        o.append(f"Binary: `{b['path']}` ({b['version']}); --resolver-answers: "
                 f"{'yes' if b['resolver_answers'] else 'no'}; --ns NAME=ADDR: "
                 f"{'yes' if b['ns_with_address'] else 'no'}. Simulated cluster: "
                 f"`{' '.join(b['sim'])}` (--control-stdin: "
                 f"{'yes' if b['sim_control_stdin'] else 'no'}).\n\n")
    inst = result.get("install") or {}
    if inst.get("installed"):
        o.append(f"Installed now: {', '.join(inst['installed'])}; daemons started by the "
                 f"install: {inst['daemons_started'] or 'none'}.\n")
    if result.get("versions"):
        o.append(_table(["program", "version"], sorted(result["versions"].items())))
    opts = result.get("options", {})
    o.append(f"\nOptions: resolvers {','.join(opts.get('resolvers', []))}; shapes "
             f"{','.join(opts.get('shapes', []))}; modes {','.join(opts.get('modes', []))}; "
             f"{opts.get('lookups')} lookups and {opts.get('gai_calls')} getaddrinfo() calls "
             f"per path over {opts.get('duration')} s; {opts.get('kills')} kill(s).\n")
    if result.get("trust_anchor"):
        o.append(f"Fake root trust anchor: `{result['trust_anchor']}`.\n")
    for m, why in result.get("skipped_modes", {}).items():
        o.append(f"Mode `{m}` skipped: {why}.\n")
    for mode, m in result.get("modes", {}).items():
        o.append(f"\n## Mode `{mode}` (`{' '.join(m['flags'])}`)\n")
        o.append("\n### Correctness\n")
        rows = [[k] + [_mark(cs.get(c)) for c in COLUMNS] for k, cs in m["correctness"].items()]
        o.append(_table(["path"] + COLUMNS, rows))
        notes = []
        for k, cs in m["correctness"].items():
            for c in COLUMNS + ["error"]:
                if c in cs and cs[c]["ok"] is False:
                    notes.append(f"- {k} {c}: {cs[c]['detail']}")
        tcp = [f"{k}: {cs['TCP']['detail']}" for k, cs in m["correctness"].items()
               if cs.get("TCP", {}).get("ok")]
        if notes:
            o.append("\nFailures:\n\n" + "\n".join(notes) + "\n")
        if tcp:
            o.append("\nTCP (big.test, 100 nodes): " + "; ".join(tcp) + ".\n")
        if m.get("rd"):
            o.append("\n### RD bit of the queries each resolver sent to alternator-dns "
                     "(packet capture)\n")
            rows = []
            for k, v in m["rd"].items():
                seen = "RD=0" if v["rd0"] and not v["rd1"] else "RD=1" if v["rd1"] and not \
                    v["rd0"] else "mixed" if v["rd0"] else "none seen"
                rows.append([k, v["rd0"], v["rd1"], v["udp"], v["tcp"], seen])
            o.append(_table(["resolver/shape", "RD=0", "RD=1", "UDP", "TCP", "sends"], rows))
        if m.get("balance"):
            o.append("\n### Balance: share of each node as the FIRST address (raw DNS "
                     "lookups, RD=1)\n")
            head = ["path", "answered", "timeouts", "addrs/answer", "queries to server",
                    "max share"] + ["." + n.split(".")[-1] for n in NODES]
            rows = []
            for k, v in m["balance"].items():
                rows.append([k, f"{v['answered']}/{v['sent']}", v["timeouts"],
                             f"{v['mean_addresses']:.2f}", v.get("upstream_queries", "-"),
                             f"**{_pct(v['max_share'])}**"]
                            + [_pct(v["shares"][n]) for n in NODES])
            o.append(_table(head, rows))
        if m.get("getaddrinfo"):
            o.append("\n### Balance through getaddrinfo() (glibc; `near` = client on the "
                     "nodes' /24 with IPv6 link-local addresses, `near-v4only` = the same "
                     "with IPv6 off, `far` = client on another subnet)\n")
            head = ["path/client", "source", "IPv6 addrs", "answered", "errors", "addrs/answer",
                    "max share"] + ["." + n.split(".")[-1] for n in NODES]
            rows = []
            for k, v in m["getaddrinfo"].items():
                if "error" in v:
                    rows.append([k, v["error"]] + [""] * (len(head) - 2))
                    continue
                errs = sum(v["errors"].values())
                rows.append([k, v["source"], v["ipv6_addresses"], f"{v['answered']}/{v['calls']}", errs,
                             f"{v['mean_addresses']:.2f}", f"**{_pct(v['max_share'])}**"]
                            + [_pct(v["shares"][n]) for n in NODES])
            o.append(_table(head, rows))
        d = m.get("dead_node")
        if d:
            o.append("\n### Dead-node window (time from the kill to the last answer naming "
                     "the node)\n")
            if "skipped" in d:
                o.append(f"Skipped: {d['skipped']}.\n")
            else:
                victims = ", ".join(k["victim"] for k in d["kills"])
                o.append(f"Polled every {int(d['poll_interval'] * 1000)} ms, at most "
                         f"{d['limit']:.0f} s after each kill; victims {victims}.\n\n")
                o.append("`-`: no answer named the node after the kill (the resolver's "
                         "cached answer did not hold it).\n\n")
                rows = [[k, _secs(v["median"]), _secs(v.get("max")),
                         f"{v.get('seen_in', '?')}/{v.get('kills', '?')}",
                         ", ".join("-" if w is None else f"{w:.2f}" for w in v["windows"])]
                        for k, v in d["paths"].items()]
                o.append(_table(["path", "median", "max", "kills seen after", "each kill (s)"],
                                rows))
    o.append(summary(result))
    o.append(affinity_section(result.get("affinity")))
    rec = result.get("recipes") or {}
    if any(rec.values()):
        o.append("\n## Stub and forward recipes used (each with its negative trust anchor)\n")
        for r, shapes in rec.items():
            for shape, text in shapes.items():
                o.append(f"\n{r}, {shape}:\n\n```\n{text}\n```\n")
    zm = result.get("zonemaster")
    if zm:
        o.append("\n## Zonemaster (WARNING and above)\n")
        if "skipped" in zm:
            o.append(f"Skipped: {zm['skipped']}.\n")
        elif "error" in zm:
            o.append(f"Error: {zm['error']}\n")
        else:
            o.append(f"`{zm['command']}` (servers in mode `{zm.get('mode')}`, "
                     f"{zm['seconds']} s)\n\n")
            rows = [[x["level"], x["module"], x["testcase"], x["tag"],
                     _args(x["args"]), x["class"], x["why"]] for x in zm["messages"]]
            if rows:
                o.append(_table(["level", "module", "test case", "tag", "arguments",
                                 "concerns", "why"], rows))
            else:
                o.append("No message at WARNING or above.\n")
    fails = result.get("failures", [])
    o.append(f"\n## Verdict: {'all correctness checks passed' if not fails else str(len(fails)) + ' correctness check(s) failed'}\n")
    for f in fails:
        o.append(f"- {f}\n")
    return "".join(o)


def affinity_section(a):
    """The subnet-cache check (see affinity.py)."""
    if not a:
        return ""
    o = ["\n## Zone-local answers through Unbound's subnet cache (`--affinity`)\n"]
    if "skipped" in a:
        o.append(f"Skipped: {a['skipped']}.\n")
        return "".join(o)
    o.append(f"alternator-dns on {a['server']} with locations "
             + ", ".join(f"`{c}={p}`" for c, p in a["locations"].items())
             + f"; Unbound on {a['resolver']} (`subnetcache validator iterator`, "
             f"`send-client-subnet: {a['server']}`), querying from {a['resolver_source']}, "
             "an address in no location.\n")
    rows = [[name, _mark(c), c["detail"].replace("|", "\\|")] for name, c in a["checks"].items()]
    o.append(_table(["check", "result", "detail"], rows))
    return "".join(o)


def _secs(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f} s"


def _args(a):
    if not a:
        return ""
    text = "; ".join(f"{k}={v}" for k, v in sorted(a.items()))
    return text.replace("|", "\\|")[:160]


def summary(result):
    """Max first-address share per path and mode, side by side."""
    modes = result.get("modes", {})
    if not modes:
        return ""
    names = list(modes)
    paths = []
    for m in modes.values():
        for p in m["paths"]:
            if p not in paths:
                paths.append(p)
    o = ["\n## Summary across modes\n", "\nMax share of one node as the first address "
         "(6 nodes: 16.7% is perfect balance). DNS = raw lookups; gai = getaddrinfo() "
         "near / near-v4only / far. Dead = median dead-node window.\n\n"]
    head = ["path"]
    for n in names:
        head += [f"{n}: DNS", f"{n}: gai", f"{n}: dead"]
    rows = []
    for p in paths:
        row = [p]
        for n in names:
            m = modes[n]
            b = m.get("balance", {}).get(p)
            row.append(_pct(b["max_share"]) if b else "-")
            g = [m.get("getaddrinfo", {}).get(f"{p}/{c}") for c in
                 ("near", "near-v4only", "far")]
            row.append(" / ".join(_pct(x.get("max_share")) if x and "error" not in x
                                  else "-" for x in g) if any(g) else "-")
            d = (m.get("dead_node") or {}).get("paths", {}).get(p)
            row.append(_secs(d["median"], 1) if d else "-")
        rows.append(row)
    o.append(_table(head, rows))
    return "".join(o)
