"""Checks of stats.py: the interval's order statistics and coverage, pairing by round,
and what an interval settles. Run by scripts/test (python3 -m unittest)."""

import random
import statistics
import unittest

from bench_lib.stats import coverage_of, median_interval, paired_ratios, trimmed, verdict


class MedianInterval(unittest.TestCase):
    def test_order_statistics_by_round_count(self):
        xs = [float(i) for i in range(1, 16)]
        # 5 rounds: no k reaches 95%, so the whole range at 1 - 2/32.
        self.assertEqual(median_interval(xs[:5]), (1.0, 5.0, 1 - 2 / 32))
        # 9 rounds: k = 2, 1 - 2 * (1 + 9) / 512.
        self.assertEqual(median_interval(xs[:9]), (2.0, 8.0, 1 - 20 / 512))
        # 15 rounds: k = 4 (96.5%); k = 5 would cover only 88%.
        low, high, coverage = median_interval(xs)
        self.assertEqual((low, high), (4.0, 12.0))
        self.assertAlmostEqual(coverage, 1 - 2 * 576 / 32768)
        self.assertLess(coverage_of(15, 5), 0.95)

    def test_unsorted_input_and_missing_values(self):
        self.assertEqual(median_interval([3.0, None, 1.0, 2.0]), (1.0, 3.0, 0.75))
        self.assertIsNone(median_interval([None]))
        self.assertEqual(median_interval([2.0]), (2.0, 2.0, 0.0))

    def test_holds_the_true_median_as_often_as_it_says(self):
        rng = random.Random(17)
        for n in (5, 9, 15, 25):
            trials, hits, claimed = 4000, 0, None
            for _ in range(trials):
                # Skewed noise around a true median of 1.0 (lognormal: median exp(0)).
                xs = [rng.lognormvariate(0.0, 0.08) for _ in range(n)]
                low, high, claimed = median_interval(xs)
                hits += low <= 1.0 <= high
            # The binomial error of 4,000 trials is under 0.4%; allow 1.5%.
            self.assertGreater(hits / trials, claimed - 0.015, f"{n} rounds")
            self.assertLess(hits / trials, claimed + 0.015, f"{n} rounds")

    def test_narrows_with_more_rounds(self):
        rng = random.Random(5)
        widths = {}
        for n in (9, 36):
            spans = []
            for _ in range(300):
                low, high, _ = median_interval([rng.gauss(1.0, 0.06) for _ in range(n)])
                spans.append(high - low)
            widths[n] = statistics.median(spans)
        # Four times the rounds: about half the width.
        self.assertLess(widths[36], 0.65 * widths[9])


class Pairing(unittest.TestCase):
    def run_of(self, server, load, round_no, value):
        return {"server": server, "load": load, "round": round_no, "cpu": value}

    def test_pairs_by_round_and_skips_gaps(self):
        runs = [
            self.run_of("default", "50k", 1, 6.0), self.run_of("floor", "50k", 1, 5.0),
            self.run_of("default", "50k", 2, 7.0), self.run_of("floor", "50k", 2, None),
            self.run_of("floor", "50k", 3, 4.0), self.run_of("default", "50k", 3, 4.4),
            self.run_of("default", "10k", 1, 99.0), self.run_of("floor", "10k", 1, 1.0),
            self.run_of("knot", "50k", 1, 8.0),
        ]
        ratios = paired_ratios(runs, "default", "floor", "50k", "cpu")
        self.assertEqual(len(ratios), 2)
        self.assertAlmostEqual(ratios[0], 1.2)
        self.assertAlmostEqual(ratios[1], 1.1)
        self.assertEqual(paired_ratios(runs, "default", "uring", "50k", "cpu"), [])


class Trimmed(unittest.TestCase):
    def test_drops_a_tenth_at_each_end_from_ten_values_on(self):
        self.assertEqual(trimmed([3, 1, 2]), [1, 2, 3])
        self.assertEqual(trimmed(list(range(9, 0, -1))), list(range(1, 10)))
        self.assertEqual(trimmed(list(range(10))), list(range(1, 9)))
        self.assertEqual(trimmed(list(range(30))), list(range(3, 27)))
        runs = [{"cpu": v} for v in (5.0, 9.0, 6.0, 6.1, 6.2, 6.3, 6.4, 6.5, 6.6, 1.0)]
        kept = [r["cpu"] for r in trimmed(runs, key=lambda r: r["cpu"])]
        self.assertEqual(kept, [5.0, 6.0, 6.1, 6.2, 6.3, 6.4, 6.5, 6.6])


class Verdict(unittest.TestCase):
    def test_sides_of_the_limit(self):
        self.assertEqual(verdict((0.98, 1.02, 0.96), 1.03, False), "within")
        self.assertEqual(verdict((0.98, 1.03, 0.96), 1.03, False), "within")
        self.assertEqual(verdict((0.98, 1.04, 0.96), 1.03, False), "unresolved")
        self.assertEqual(verdict((1.031, 1.09, 0.96), 1.03, False), "beyond")
        self.assertEqual(verdict(None, 1.03, False), "unresolved")

    def test_too_few_rounds_settle_nothing(self):
        four = median_interval([1.0, 1.01, 1.02, 1.01])
        self.assertEqual(verdict(four, 1.03, False), "unresolved")
        five = median_interval([1.0, 1.01, 1.02, 1.01, 1.0])
        self.assertEqual(verdict(five, 1.03, False), "within")
        self.assertEqual(verdict(median_interval([1.5]), 1.03, False), "unresolved")

    def test_strict_limits_exclude_the_limit_itself(self):
        self.assertEqual(verdict((0.85, 0.99, 0.96), 1.0, True), "within")
        self.assertEqual(verdict((0.85, 1.0, 0.96), 1.0, True), "unresolved")
        self.assertEqual(verdict((1.0, 1.1, 0.96), 1.0, True), "beyond")


if __name__ == "__main__":
    unittest.main()
