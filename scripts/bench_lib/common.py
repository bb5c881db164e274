"""Constants, output, child processes, /proc readers, DNS probes and the machine."""

import argparse
import datetime
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
BINARY = ROOT / "target" / "release" / "alternator-dns"
SIM_BINARY = ROOT / "target" / "release" / "alternator-sim"
REFLECTOR_SRC = ROOT / "scripts" / "reflector.c"
REFLECTOR = ROOT / "target" / "reflector"
DOMAIN = "alternator.bench"
LOOPBACK = "127.0.0.1"
SIM_NODES = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
# Where `alternator-sim cluster` puts every node (DEFAULT_DC, DEFAULT_RACK in sim/src/lib.rs).
SIM_DC = "dc1"
SIM_RACK = "rack1"
# The `affinity` server's location table: AFFINITY_RULES rules, one of which (AFFINITY_PLACED)
# places dnsperf's source address, LOOPBACK (dnsperf -s 127.0.0.1 without -a sends from
# it), in SIM_DC/SIM_RACK; the others are prefixes that do not contain LOOPBACK.
AFFINITY_RULES = 1000
AFFINITY_PLACED = "127.0.0.0/8"
ALL_SERVERS = ["default", "affinity", "uring", "mmsg", "knot", "floor", "uring-churn",
               "mmsg-churn", "uring-cmp", "mmsg-cmp"]
DEFAULT_SERVERS = ["default", "uring", "mmsg", "knot", "floor"]
ALL_MODES = ["rate", "max"]
DEFAULT_RATES = [10000, 50000, 100000]
# Every alternator-dns variant; `default` runs without --io (what users get: `auto`), and
# so does `affinity`, with zone-local answers on (--affinity true, AFFINITY_RULES
# locations).
ALTERNATOR = ("default", "affinity", "uring", "mmsg", "uring-churn", "mmsg-churn", "uring-cmp",
              "mmsg-cmp")
# What each variant is compared with besides the references: a -churn or -cmp variant with
# its backend, `affinity` with `default` (the same binary and backend, affinity off).
BASE_SERVER = {"affinity": "default", "uring-churn": "uring", "mmsg-churn": "mmsg",
               "uring-cmp": "uring", "mmsg-cmp": "mmsg"}
# The churn variants poll a simulated cluster whose membership changes
# CHURN_PER_SECOND times a second, every CHURN_REFRESH, health checks off: the
# served snapshot is swapped about that often while dnsperf runs.
CHURN_PER_SECOND = 100
CHURN_REFRESH = "4ms"
REFERENCES = ("floor", "knot")
START_TIMEOUT = 30.0  # seconds for a server to answer its first query
STOP_GRACE = 3.0  # SIGTERM, then SIGKILL after this long
LOST_LIMIT = 1.0  # percent of queries lost allowed in rate mode
MEMORY_THREADS = 2  # workers of alternator-dns in the memory measurement
MEMORY_TARGET_MIB = 32  # the resident-set target with MEMORY_THREADS workers, 1,000 nodes
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_cpu_clock(pid):
    """The clock id of process pid's CPU time (clock_getcpuclockid(3): CPUCLOCK_SCHED)."""
    return ((~pid) << 3) | 2


def _cpu_clock_works():
    try:
        time.clock_gettime(_process_cpu_clock(os.getpid()))
        return True
    except OSError:
        return False


# CPU time is read from the process's CPU clock (clock_gettime on another process's
# clock, in nanoseconds, the scheduler's own accounting) where the kernel offers it, else
# from /proc/PID/stat in clock ticks (usually 10 ms, which alone can move a ratio by a few
# percent in a 5 s run at 10k qps). CPU_RESOLUTION_S is one reading's resolution.
CPU_CLOCK = _cpu_clock_works()
CPU_RESOLUTION_S = 1e-6 if CPU_CLOCK else 1 / CLK_TCK


class BenchError(Exception):
    """A failure that ends the benchmark."""


class Terminated(BaseException):
    """SIGTERM reached the script."""


def log(msg=""):
    print(msg, flush=True)


def warn(msg):
    print(f"bench-dnsperf: {msg}", file=sys.stderr, flush=True)


def fmt_cpus(cpus):
    return ",".join(str(c) for c in cpus)


def fmt(value, spec, width):
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def cpu_list(text):
    """Parses `0`, `2-5,8` into a list of CPU numbers."""
    cpus = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a:
            raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}")
        cpus.extend(c for c in range(a, b + 1) if c not in cpus)
    return cpus


def find_tool(name):
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = Path(d) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def install_missing(wanted):
    """Installs the Debian package of each tool of `wanted` ({tool: package}) that is not
    found; apt-get only runs when something is missing."""
    missing = sorted({pkg for tool, pkg in wanted.items() if find_tool(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise BenchError(f"missing tools; please install: {' '.join(missing)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_checked(sudo + ["apt-get", "update", "-qq"], timeout=600, env=env)
    run_checked(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"]
                + missing, timeout=900, env=env)
    still = [t for t in wanted if find_tool(t) is None]
    if still:
        raise BenchError(f"still missing after apt-get: {' '.join(still)}")


def run_checked(cmd, timeout, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    try:
        return subprocess.run(cmd, check=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    except subprocess.CalledProcessError as e:
        raise BenchError(f"{cmd[0]} failed with exit status {e.returncode}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{cmd[0]} took longer than {timeout} s") from None


# ---------------------------------------------------------------- the machine


def machine_info(argv):
    """What the results were measured on, and how the script was started."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"),
        "command": shlex.join(argv),
        "load_average_start": list(os.getloadavg()),
        "load_average_end": None,
    }


def machine_line(machine):
    load = machine["load_average_start"]
    end = machine.get("load_average_end")
    loads = f"load average {load[0]:.2f} at start" + (
        f", {end[0]:.2f} at end" if end else "")
    return (f"{machine['cpu_model']}, {machine['cpus']} CPUs "
            f"({machine['cpus_usable']} usable), Linux {machine['kernel']}, "
            f"{machine['date_utc']}, {loads}")


# ---------------------------------------------------------------- processes


class Child:
    """A process this script started, with its output in files; ended by PID."""

    def __init__(self, name, argv, workdir):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.out_path = Path(workdir) / f"{name}.out"
        self.err_path = Path(workdir) / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # A session of its own: Ctrl-C in the terminal reaches only this
            # script, which then ends every child itself.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stdout(self):
        return self.out_path.read_text(errors="replace")

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def tail(self, lines=15):
        text = (self.stdout() + self.stderr()).strip().splitlines()
        return "\n".join("    " + line for line in text[-lines:]) or "    (no output)"

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                warn(f"{self.name} (pid {self.pid}) ignored SIGTERM for {STOP_GRACE} s; "
                     "sending SIGKILL")
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(STOP_GRACE)
        return self.proc.returncode


def cpu_seconds(pid):
    """CPU time (user and system) of the whole process: all its threads, live and exited."""
    if CPU_CLOCK:
        return time.clock_gettime(_process_cpu_clock(pid))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _thread_cpu_seconds(task):
    """CPU time of one thread: /proc/PID/task/TID/schedstat's first field (nanoseconds on
    a CPU) where the clock is read in nanoseconds, else utime+stime in ticks."""
    if CPU_CLOCK:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def worker_cpu_seconds(pid):
    """CPU time of the process's UDP worker threads only (the data plane)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if not (task / "comm").read_text().startswith("udp-worker"):
                continue
            total += _thread_cpu_seconds(task)
        except (OSError, ValueError, IndexError):
            continue
    return total


def udp_rcvbuf_errors():
    """The kernel's count of UDP datagrams dropped for a full receive buffer (all sockets)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (as of now)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((LOOPBACK, 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise BenchError("cannot find a free port")


# ---------------------------------------------------------------- DNS probes


def dns_query(name, qtype=1):
    qid = random.randrange(1 << 16)
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return qid, struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack(">HH", qtype, 1)


def probe(port, timeout=0.3):
    """Sends `alternator.bench A` once; returns (rcode, ancount) or None without an answer."""
    qid, query = dns_query(DOMAIN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (LOOPBACK, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = s.recv(4096)
            except (socket.timeout, ConnectionRefusedError):
                return None
            if len(data) >= 12:
                rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
                if rid == qid and flags & 0x8000:
                    return flags & 0xF, ancount
    return None


def wait_answering(child, port, need_answer):
    """Waits until the server answers NOERROR (with an A record when need_answer)."""
    deadline = time.monotonic() + START_TIMEOUT
    last = None
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited with status {child.proc.returncode} "
                             f"before answering:\n{child.tail()}")
        last = probe(port)
        if last is not None and last[0] == 0 and (last[1] > 0 or not need_answer):
            return
        time.sleep(0.1)
    what = "no answer" if last is None else f"rcode {last[0]}, {last[1]} answers"
    raise BenchError(f"{child.name} did not answer {DOMAIN} A within {START_TIMEOUT:.0f} s "
                     f"({what}):\n{child.tail()}")


def wait_line(child, pattern, stream="stdout", timeout=START_TIMEOUT):
    """The first match of `pattern` in the child's stdout (or stderr), waiting for it."""
    read = child.stdout if stream == "stdout" else child.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, read(), re.M)
        if m:
            return m
        if not child.alive():
            raise BenchError(f"{child.name} exited with status {child.proc.returncode}:\n"
                             f"{child.tail()}")
        time.sleep(0.05)
    raise BenchError(f"{child.name} printed nothing matching {pattern!r} within "
                     f"{timeout:.0f} s:\n{child.tail()}")
