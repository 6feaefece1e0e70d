"""Processes the benchmark starts: pinned to a core, watched through /proc, stopped by their PID.

Every process is started through ``Proc`` and registered; ``stop_all`` (run
in a ``finally`` and at exit) stops whatever is still running, each by its own
PID: SIGTERM first so the gateway closes its outbox cleanly, SIGKILL only if
it does not exit in time. Nothing is ever killed by name.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_running: list["Proc"] = []


@dataclass(frozen=True, slots=True)
class Cores:
    """Which core the server under test gets and which the load side (generator, sink) gets.

    ``None`` means no pinning: the machine has a single core or no taskset.
    """

    server: int | None
    load: int | None

    @classmethod
    def detect(cls) -> "Cores":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            return cls(cpus[0], cpus[1])
        return cls(None, None)

    def describe(self) -> str:
        if self.server is None:
            return "not pinned (fewer than 2 cores or no taskset)"
        return (f"server on core {self.server}, load generator and fakes on core {self.load}"
                f" (nice {NICE_SERVER} / {NICE_GENERATOR} / {NICE_FAKE} when root)")


# Priorities (nice), so that the machine's other work disturbs the figures less, and so that on the
# load core the generator, which timestamps requests, wins over the sink whenever both want the CPU.
# Without root, nice cannot lower these numbers and everything runs at the default priority.
NICE_SERVER = -10
NICE_GENERATOR = -10
NICE_FAKE = -5


def pinned(argv: list[str], core: int | None, nice: int | None = None) -> list[str]:
    """``argv`` prefixed with taskset (and nice); both exec the command, so the PID stays the command's.

    ``nice`` is the absolute niceness wanted; nice(1) adjusts relative to ours, which pin_self changed.
    """
    if nice is not None and shutil.which("nice"):
        argv = ["nice", "-n", str(nice - os.getpriority(os.PRIO_PROCESS, 0)), *argv]
    return argv if core is None else ["taskset", "-c", str(core), *argv]


def pin_self(core: int | None) -> None:
    """Move the benchmark's own process (the Python load generator) to the load core, at generator priority."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE_GENERATOR)
    except PermissionError:
        pass


def machine_busy_pct(seconds: float = 1.0) -> float:
    """How busy all CPUs were over ``seconds`` (from /proc/stat): other work on the machine skews every figure."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """One child process, started pinned, logging to a file, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], core: int | None, log_path: Path,
                 env: dict[str, str] | None = None, nice: int | None = None):
        self.name = name
        self.log_path = log_path
        log = open(log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                pinned(argv, core, nice),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        finally:
            log.close()
        _running.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_http(self, url: str, timeout: float = 30.0) -> None:
        """Wait until ``url`` answers 2xx; fail with the log's tail if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if 200 <= response.status < 300:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {url} within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        if self in _running:
            _running.remove(self)
        return self.popen.returncode

    # -- /proc readings --------------------------------------------------------

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and its parts from /proc/<pid>/status, in KiB: RssAnon is the heap, RssFile mapped files."""
        out: dict[str, int] = {}
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    name, _, value = line.partition(":")
                    if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                        out[name] = int(value.split()[0])
        except OSError:
            return {}
        return out

    def cpu_seconds(self) -> float | None:
        """utime + stime from /proc/<pid>/stat (all threads, including the SQLite writer)."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


def cpu_accounting() -> tuple[float, float]:
    """(CPU seconds of all processes, CPU seconds of this process and its waited-for children) since boot.

    Only user, nice and system time count: interrupts and softirqs (where loopback traffic is processed)
    and steal are charged to no process, so they cannot be told apart.
    """
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    busy = (values[0] + values[1] + values[2]) / os.sysconf("SC_CLK_TCK")
    mine = os.times()
    return busy, mine.user + mine.system + mine.children_user + mine.children_system


def stop_all() -> None:
    for proc in list(reversed(_running)):
        try:
            proc.stop(timeout=10)
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"bench: could not stop {proc.name} (pid {proc.pid}): {exc}", file=sys.stderr)


atexit.register(stop_all)
