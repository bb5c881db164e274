"""Process management, cleanup, logging and small helpers shared by the lab."""

import os
import signal
import subprocess
import sys
import time


class SetupError(Exception):
    """Something the lab needs could not be set up (exit status 2)."""


def log(msg):
    """Progress on stderr, so stdout stays the markdown report."""
    print(f"[interop {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tail(path, lines=25):
    try:
        with open(path, "rb") as f:
            data = f.read()[-20000:].decode("utf-8", "replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(data.splitlines()[-lines:])


def run(cmd, check=True, timeout=120, capture=True, input_text=None):
    """Runs a short command; returns CompletedProcess. Raises SetupError on failure."""
    try:
        p = subprocess.run(cmd, input=input_text, capture_output=capture, text=True,
                           timeout=timeout)
    except FileNotFoundError as e:
        raise SetupError(f"{cmd[0]}: not found ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise SetupError(f"{' '.join(cmd)}: timed out after {timeout}s") from e
    if check and p.returncode != 0:
        out = ((p.stdout or "") + (p.stderr or "")).strip()
        raise SetupError(f"{' '.join(cmd)} failed (exit {p.returncode}): {out[-2000:]}")
    return p


class Daemon:
    """A process this harness started (in a namespace), killed by PID only."""

    def __init__(self, name, argv, logfile, stdin=False, env=None):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self._log = open(logfile, "ab")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE if stdin else self._log, stderr=self._log,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            start_new_session=True, env=env)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def check_alive(self):
        if not self.alive():
            raise SetupError(
                f"{self.name} exited (status {self.proc.returncode}) right after start; "
                f"command: {' '.join(self.argv)}\nlast lines of {self.logfile}:\n"
                f"{tail(self.logfile)}")

    def stop(self, timeout=5.0):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log(f"warning: {self.name} (pid {self.pid}) did not die")
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                try:
                    f.close()
                except OSError:
                    pass
        self._log.close()


class Cleanup:
    """A stack of undo actions run once, in reverse, on exit, error or signal."""

    def __init__(self):
        self._actions = []
        self._done = False

    def push(self, desc, fn):
        self._actions.append((desc, fn))

    def run(self):
        if self._done:
            return
        self._done = True
        while self._actions:
            desc, fn = self._actions.pop()
            try:
                fn()
            except Exception as e:  # cleanup goes on whatever fails
                log(f"cleanup: {desc}: {e}")


class Terminated(Exception):
    """SIGTERM or SIGINT arrived."""


def install_signal_handlers():
    def handler(signum, _frame):
        # Ignore further signals while cleaning up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def wait_for(what, fn, timeout, interval=0.1, daemon=None):
    """Polls fn() until it returns a true value (returned), or raises SetupError."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if daemon is not None:
            daemon.check_alive()
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # the thing polled is not ready yet
            last = e
        time.sleep(interval)
    msg = f"timed out after {timeout}s waiting for {what}"
    if last is not None:
        msg += f" (last error: {last})"
    if daemon is not None:
        msg += f"\nlast lines of {daemon.logfile}:\n{tail(daemon.logfile)}"
    raise SetupError(msg)


def processes_named(names):
    """{pid: comm} of running processes whose comm is in names."""
    found = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm in names:
            found[int(d)] = comm
    return found


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
