"""How precisely a run measured a ratio: per-round ratios and an interval for their median.

A target such as "at most 1.03x the floor" is checked on medians over rounds, but on a
shared machine a single run's CPU per query moves by 10% and more between rounds, so a
median of 1.02x may come from rounds ranging over 0.92-1.15x. Each round runs every
server at a load one after the other, so a server and its reference in the same round
met about the same conditions; their ratio per round, and an interval for the median of
those ratios, say how far the run can tell a ratio from its limit.

The interval is distribution-free (no assumption on how the noise is shaped): for n
values sorted, [x(k), x(n+1-k)] holds the true median with probability
1 - 2 * P(Binomial(n, 1/2) <= k - 1); k is the largest for which that is at least
CONFIDENCE. With fewer than 6 rounds no k reaches 95% and the widest interval (the
smallest and largest value) is given with its lower coverage (5 rounds: 93.8%); with
fewer than 5 no interval settles a target.
"""

import math
import statistics

CONFIDENCE = 0.95
# An interval covering less than this settles nothing: 5 rounds (93.8%) are the fewest that
# can; with 4 (87.5%) or fewer, "holds" would be a guess.
MIN_COVERAGE = 0.90


def median_interval(values, confidence=CONFIDENCE):
    """(low, high, coverage) for the median of `values`, or None when there are none."""
    xs = sorted(v for v in values if v is not None)
    n = len(xs)
    if n == 0:
        return None
    k, coverage = 1, coverage_of(n, 1)
    while k + 1 <= (n + 1) // 2 and coverage_of(n, k + 1) >= confidence:
        k += 1
        coverage = coverage_of(n, k)
    return xs[k - 1], xs[n - k], coverage


def coverage_of(n, k):
    """P(x(k) <= median <= x(n+1-k)) for n independent values: 1 - 2 P(Bin(n, 1/2) < k)."""
    below = sum(math.comb(n, i) for i in range(k)) / 2 ** n
    return max(0.0, 1.0 - 2.0 * below)


def paired_ratios(runs, server, reference, load, key):
    """Per round in which both ran this load and measured `key`: server / reference."""
    by_round = {}
    for r in runs:
        if r["load"] == load and r["server"] in (server, reference):
            by_round.setdefault(r["round"], {})[r["server"]] = r.get(key)
    out = []
    for _, pair in sorted(by_round.items()):
        a, b = pair.get(server), pair.get(reference)
        if a is not None and b:
            out.append(a / b)
    return out


def verdict(interval, limit, strict):
    """Whether the interval settles a target: 'within' (all of it meets the limit),
    'beyond' (none of it does), or 'unresolved' (the limit lies inside it, or the interval
    covers under MIN_COVERAGE: too few rounds)."""
    if interval is None or interval[2] < MIN_COVERAGE:
        return "unresolved"
    low, high, _ = interval
    meets = (lambda r: r < limit) if strict else (lambda r: r <= limit)
    if meets(high):
        return "within"
    if not meets(low):
        return "beyond"
    return "unresolved"


def trimmed(items, key=lambda x: x):
    """`items` sorted by `key`, less the lowest and highest tenth (rounded down: nothing
    is dropped from fewer than 10). A spread over many rounds then measures how the
    rounds varied, not the single worst one, which the median barely feels."""
    xs = sorted(items, key=key)
    cut = len(xs) // 10
    return xs[cut:len(xs) - cut]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
