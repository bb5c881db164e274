"""Tests of footprint.py: reading lackey's trace and counting what one call touched."""

import io
import unittest

from bench_lib.footprint import (Footprint, FootprintError, addresses, between_markers,
                                 footprint, records)

MARKER = 0x4c2000
STACK = 0x1ffefff000

# What lackey writes: valgrind's own lines, instruction fetches indented by one space less.
TRACE = f"""==123== Lackey, an example Valgrind tool
I  00401000,4
 S 1ffeffe000,8
 M {MARKER:08x},8
I  00401004,3
I  0040103e,4
 L 04035a00,8
 L 04035a38,16
 S 1ffefff010,8
I  00402000,2
 L 004c2008,8
 M {MARKER:08x},8
I  00401008,4
 L 04037000,8
==123== ended
"""


class Reading(unittest.TestCase):
    def test_records_skip_valgrinds_lines(self):
        trace = list(records(TRACE))
        self.assertEqual(len(trace), 13)
        self.assertEqual(trace[0], ("I", 0x401000, 4))
        self.assertEqual(trace[1], ("S", 0x1ffeffe000, 8))

    def test_reads_an_open_file_as_it_goes(self):
        self.assertEqual(list(records(io.StringIO(TRACE))), list(records(TRACE)))

    def test_the_call_is_between_the_markers_updates(self):
        seg = between_markers(records(TRACE), MARKER)
        self.assertEqual(seg[0], ("I", 0x401004, 3))
        self.assertEqual(seg[-1], ("L", 0x4c2008, 8))
        self.assertNotIn(("L", 0x4037000, 8), seg)
        self.assertNotIn(("S", 0x1ffeffe000, 8), seg)

    def test_a_trace_without_both_updates_is_refused(self):
        one = "\n".join(line for i, line in enumerate(TRACE.splitlines()) if i != 11)
        with self.assertRaises(FootprintError):
            between_markers(records(one), MARKER)

    def test_addresses_come_from_the_benchs_output(self):
        self.assertEqual(addresses("marker 0x4c2000\nstack 0x1ffefff000\n"), (MARKER, STACK))
        with self.assertRaises(FootprintError):
            addresses("marker 0x4c2000\n")


class Counting(unittest.TestCase):
    def test_lines_and_pages_by_kind(self):
        f = footprint(between_markers(records(TRACE), MARKER), STACK)
        # Code: 0x401004 and 0x40103e share a line, and the 4 bytes at 0x40103e reach
        # into the next; 0x402000 is another line and page.
        # Data: 0x4035a00 and 0x4035a38 are one line, but the 16 bytes at 0x4035a38
        # reach into the next; 0x4c2008 is static data, 0x1ffefff010 stack.
        self.assertEqual(f, Footprint(instructions=3, data_accesses=4, code_lines=3,
                                      code_pages=2, stack_lines=1, other_data_lines=3,
                                      data_pages=3))
        self.assertEqual(f.lines, 7)

    def test_an_access_across_a_page_counts_both_pages(self):
        f = footprint([("L", 0x4035ffc, 8)], STACK)
        self.assertEqual((f.other_data_lines, f.data_pages), (2, 2))


if __name__ == "__main__":
    unittest.main()
