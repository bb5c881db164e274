"""Checks of runs.py: the order servers run in within a round."""

import collections
import unittest

from bench_lib.runs import server_order


class ServerOrder(unittest.TestCase):
    def test_the_first_round_keeps_the_given_order(self):
        self.assertEqual(server_order(["default", "knot", "floor"], 1),
                         ["default", "knot", "floor"])

    def test_every_server_takes_every_position_equally_often(self):
        names = ["default", "uring", "knot", "floor"]
        positions = collections.Counter()
        for round_no in range(1, 3 * len(names) + 1):
            order = server_order(names, round_no)
            self.assertEqual(sorted(order), sorted(names))
            positions.update((name, i) for i, name in enumerate(order))
        self.assertEqual(set(positions.values()), {3})
        self.assertEqual(len(positions), len(names) ** 2)

    def test_takes_the_servers_dict_and_tolerates_none(self):
        servers = {"default": 1, "floor": 2}
        self.assertEqual(server_order(servers, 2), ["floor", "default"])
        self.assertEqual(server_order({}, 5), [])


if __name__ == "__main__":
    unittest.main()
