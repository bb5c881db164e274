"""The query engine: many paths at a fixed rate from a fixed set of client
source addresses, one thread, non-blocking sockets, bounded in time and count."""

import collections
import random
import selectors
import socket
import time

from . import dnswire
from .netns import CLIENT_SOURCES, NODES, in_netns, tcp_socket

SOCKETS_PER_SOURCE = 3
TIMEOUT = 2.0


class Engine:
    def __init__(self, ns):
        self.ns = ns

        def make():
            socks = []
            for src in CLIENT_SOURCES:
                for _ in range(SOCKETS_PER_SOURCE):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind((src, 0))
                    s.setblocking(False)
                    socks.append(s)
            return socks
        self.socks = in_netns(ns, make)

    def close(self):
        for s in self.socks:
            s.close()

    def run(self, paths, interval, count=None, duration=None, on_answer=None, stop=None):
        """Sends one A query per path every `interval` s (count per path, or for
        duration s); calls on_answer(path, t, reply or None, error) for each.
        stop(now) may end it early. Returns per-path stats."""
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, i)
        stats = {p.key: {"sent": 0, "answered": 0, "timeouts": 0, "errors": 0,
                         "rcodes": collections.Counter(), "tcp": 0} for p in paths}
        outstanding = {}  # (sock index, id) -> (path, send time, name)
        start = time.monotonic()
        # Stagger the paths so they do not all send in the same instant.
        nxt = {p.key: start + random.random() * interval for p in paths}
        sent = collections.Counter()
        end = start + duration if duration else None
        planned = duration if duration else (count or 0) * interval * 1.2
        hard_end = start + planned + TIMEOUT + 30
        rr = 0
        try:
            while True:
                now = time.monotonic()
                if stop is not None and stop(now - start):
                    break
                sending = [p for p in paths
                           if (count is None or sent[p.key] < count)
                           and (end is None or now < end)]
                if not sending and not outstanding:
                    break
                if now > hard_end:  # a bound whatever happens
                    break
                for p in sending:
                    if nxt[p.key] <= now:
                        i = rr % len(self.socks)
                        rr += 1
                        qid = random.getrandbits(16)
                        while (i, qid) in outstanding:
                            qid = random.getrandbits(16)
                        _, msg = dnswire.build_query(p.zone, "A", qid=qid, rd=True)
                        try:
                            self.socks[i].sendto(msg, (p.server, 53))
                            outstanding[(i, qid)] = (p, now)
                        except OSError:
                            stats[p.key]["errors"] += 1
                        sent[p.key] += 1
                        stats[p.key]["sent"] += 1
                        # jitter +-20% so requests do not align with TTL edges
                        nxt[p.key] += interval * random.uniform(0.8, 1.2)
                due = [nxt[p.key] for p in sending]
                wait = max(0.0, min(due) - time.monotonic()) if due else 0.05
                for key, _ in sel.select(timeout=min(wait, 0.05)):
                    s = key.fileobj
                    i = key.data
                    while True:
                        try:
                            data, frm = s.recvfrom(65535)
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
                        try:
                            r = dnswire.Reply(data)
                        except ValueError:
                            continue
                        ent = outstanding.pop((i, r.id), None)
                        if ent is None or frm[0] != ent[0].server:
                            continue
                        p, t0 = ent
                        if r.has(dnswire.TC):
                            stats[p.key]["tcp"] += 1
                            try:
                                r = dnswire.tcp_query(p.server, p.zone, "A", 3.0,
                                                      sock_factory=lambda: tcp_socket(self.ns))
                            except OSError as e:
                                stats[p.key]["errors"] += 1
                                if on_answer:
                                    on_answer(p, t0 - start, None, str(e))
                                continue
                        stats[p.key]["answered"] += 1
                        stats[p.key]["rcodes"][r.rcode_name] += 1
                        if on_answer:
                            on_answer(p, t0 - start, r, None)
                now = time.monotonic()
                for k, (p, t0) in list(outstanding.items()):
                    if now - t0 > TIMEOUT:
                        del outstanding[k]
                        stats[p.key]["timeouts"] += 1
                        if on_answer:
                            on_answer(p, t0 - start, None, "timeout")
        finally:
            sel.close()
        for st in stats.values():
            st["rcodes"] = dict(st["rcodes"])
        return stats


def balance(engine, paths, lookups, duration):
    """Share of each node as the first address, per path."""
    first = {p.key: collections.Counter() for p in paths}
    sizes = {p.key: [] for p in paths}

    def on_answer(p, _t, r, _err):
        if r is None:
            return
        addrs = r.addresses()
        if addrs:
            first[p.key][addrs[0]] += 1
            sizes[p.key].append(len(addrs))

    stats = engine.run(paths, duration / lookups, count=lookups, on_answer=on_answer)
    out = {}
    for p in paths:
        n = sum(first[p.key].values())
        shares = {a: (first[p.key][a] / n if n else 0.0) for a in NODES}
        other = {a: c for a, c in first[p.key].items() if a not in NODES}
        out[p.key] = dict(stats[p.key], lookups=lookups, with_address=n,
                          shares=shares, other_first=other,
                          max_share=max(shares.values()) if n else None,
                          mean_addresses=(sum(sizes[p.key]) / len(sizes[p.key])
                                          if sizes[p.key] else 0))
    return out
