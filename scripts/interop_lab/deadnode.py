"""Dead-node window: how long after a node dies do clients still get it."""

import time

from .netns import NODES
from .servers import INSTANCES, wait_served, live_nodes
from .util import log, median

POLL = 0.02        # one query per path every 20 ms
LIMIT = 15.0       # stop polling 15 s after the kill at the latest
QUIET = 8.0        # ... or once no path has named the dead node for this long


def measure(engine, lab, sim, paths, kills, instances):
    """{path.key: {'windows': [...], 'median': s}} plus per-kill details."""
    addrs = [INSTANCES[i][1] for i in instances if INSTANCES[i][3] == "main"]
    domains = {INSTANCES[i][1]: INSTANCES[i][0] for i in instances}
    windows = {p.key: [] for p in paths}
    kills_out = []
    for k in range(kills):
        victim = NODES[(2 * k) % len(NODES)]
        last_seen = {p.key: None for p in paths}
        first_seen_after = {}
        state = {"t_kill": None, "last_any": None}

        def on_answer(p, t, r, _err):
            tk = state["t_kill"]
            if r is None or tk is None or t < tk:
                return
            if victim in r.addresses():
                last_seen[p.key] = t - tk
                state["last_any"] = t
                first_seen_after.setdefault(p.key, t - tk)

        def stop(elapsed):
            if state["t_kill"] is None:
                # One second of traffic first, so the caches hold the node.
                if elapsed >= 1.0:
                    sim.command("down", victim)
                    state["t_kill"] = elapsed
                return False
            since = elapsed - state["t_kill"]
            quiet_from = state["last_any"] if state["last_any"] is not None else state["t_kill"]
            return since >= LIMIT or (since >= QUIET and elapsed - quiet_from >= QUIET)

        engine.run(paths, POLL, duration=LIMIT + 2, on_answer=on_answer, stop=stop)
        sim.command("up", victim)
        back = wait_served(lab, addrs, None, len(NODES), timeout=15, domains=domains)
        for p in paths:
            # None: no answer named the node after the kill (a cached answer
            # without it), which says nothing about how long it would have lasted.
            windows[p.key].append(last_seen[p.key])
        served = {a: live_nodes(lab.lab, a, domains[a]) for a in addrs}
        kills_out.append({"victim": victim, "last_seen": dict(last_seen),
                          "back_in_service": back, "live_nodes_after_up": served})
        log(f"dead-node kill {k + 1}/{kills} ({victim}): last seen "
            + ", ".join(f"{key} {v:.2f}s" if v is not None else f"{key} -"
                        for key, v in last_seen.items()))
        time.sleep(5)  # TTL + 1: every cache holds answers with the node again
    out = {}
    for key, w in windows.items():
        seen = [x for x in w if x is not None]
        out[key] = {"windows": w, "median": median(seen), "max": max(seen) if seen else None,
                    "seen_in": len(seen), "kills": len(w)}
    return {"paths": out,
            "kills": kills_out, "poll_interval": POLL, "limit": LIMIT}
