"""What one warm query touches, counted from valgrind lackey's memory trace.

On a shared machine the worker's caches are often cold when a query arrives, and each
cache line or page the answer path needs then costs a miss the reflector (the floor) does
not pay; timings cannot show a change of a few lines through the noise. This counts them
instead: the answer bench's trace mode (`ANSWER_BENCH_TRACE=1`, benches/answer/cold.rs)
makes one warm call of the worker's handler between two updates of a marker and prints the
marker's address and a stack address; lackey (`--trace-mem=yes`) logs every instruction
fetch (I) and data load (L), store (S) and modify (M). The records between the marker's
two updates are the call's.
"""

import re
from dataclasses import dataclass

LINE = 64
PAGE = 4096
# Data within this distance of the stack address the trace mode printed is stack.
STACK_REACH = 1 << 20

_RECORD = re.compile(r"^\s*([ILSM])\s+([0-9a-fA-F]+),(\d+)")


class FootprintError(Exception):
    pass


@dataclass(frozen=True)
class Footprint:
    instructions: int
    data_accesses: int
    code_lines: int
    code_pages: int
    stack_lines: int
    other_data_lines: int
    data_pages: int

    @property
    def lines(self):
        """Every distinct cache line the call touched: code, stack and other data."""
        return self.code_lines + self.stack_lines + self.other_data_lines


def records(lines):
    """The trace's records, (kind, address, size), in order, from its text or an iterable
    of its lines (an open file: the trace of a whole run is large, so it is read as it
    goes); valgrind's own lines (==PID== ...) are skipped."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    for line in lines:
        m = _RECORD.match(line)
        if m:
            yield m.group(1), int(m.group(2), 16), int(m.group(3))


def between_markers(trace, marker):
    """The records strictly between the first and the last data access to `marker`'s
    8 bytes, those accesses excluded; only the records from the first access on are kept."""
    segment, hits, end = [], 0, 0
    for record in trace:
        kind, addr, _ = record
        if kind != "I" and marker <= addr < marker + 8:
            hits += 1
            end = len(segment)
        elif hits:
            segment.append(record)
    if hits < 2:
        raise FootprintError(f"the trace has {hits} access(es) to the marker at "
                             f"{marker:#x}, not the two around the call")
    return segment[:end]


def footprint(segment, stack):
    """Counts what `segment` touched; data within STACK_REACH of `stack` is stack."""
    code, data, stack_lines = set(), set(), set()
    instructions = accesses = 0
    for kind, addr, size in segment:
        first, last = addr // LINE, (addr + max(size, 1) - 1) // LINE
        spanned = range(first, last + 1)
        if kind == "I":
            instructions += 1
            code.update(spanned)
            continue
        accesses += 1
        if abs(addr - stack) < STACK_REACH:
            stack_lines.update(spanned)
        else:
            data.update(spanned)
    pages = {line * LINE // PAGE for line in data | stack_lines}
    return Footprint(
        instructions=instructions,
        data_accesses=accesses,
        code_lines=len(code),
        code_pages=len({line * LINE // PAGE for line in code}),
        stack_lines=len(stack_lines),
        other_data_lines=len(data),
        data_pages=len(pages),
    )


def addresses(stdout):
    """The marker and stack addresses the trace mode printed."""
    found = dict(re.findall(r"^(marker|stack) (0x[0-9a-fA-F]+)$", stdout, re.M))
    if set(found) != {"marker", "stack"}:
        raise FootprintError("the bench printed no marker or stack address; was it built "
                             "from this tree (ANSWER_BENCH_TRACE)?")
    return int(found["marker"], 16), int(found["stack"], 16)
