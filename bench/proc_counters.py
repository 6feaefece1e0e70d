"""What the processes of a ``bench.workers`` run did, read from ``/proc`` and ``perf``: CPU by group, and syscalls.

CPU is read as utime + stime of each process (all its threads) before and
after the measured load; ``perf stat`` counts syscall tracepoints in the
gateway's workers, which costs them almost nothing (no ptrace).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def proc_stat(pid: str) -> tuple[str, int, float] | None:
    """(command name, parent pid, CPU seconds) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1: text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_group(gateway_pid: int, sink_pid: int | None) -> dict[str, float]:
    """CPU seconds so far of the gateway's process tree (supervisor and workers), the sink, and PostgreSQL.

    PostgreSQL is every process called ``postgres``: the whole server, whoever its clients are.
    """
    table = {pid: s for pid in os.listdir("/proc") if pid.isdigit() and (s := proc_stat(pid)) is not None}
    tree = {gateway_pid}
    grew = True
    while grew:  # the supervisor's children, theirs (uvicorn spawns workers), ...
        before = len(tree)
        tree |= {int(pid) for pid, (_, ppid, _) in table.items() if ppid in tree}
        grew = len(tree) > before
    out = {"gateway": sum(table[str(p)][2] for p in tree if str(p) in table),
           "postgresql": sum(s[2] for s in table.values() if s[0] == "postgres"),
           "sink": table[str(sink_pid)][2] if sink_pid is not None and str(sink_pid) in table else 0.0}
    out["gateway_processes"] = float(len(tree))
    return out


# What the SQLite writers do besides computing: a commit's fsync (fdatasync in WAL mode), and the sleeps of
# SQLite's busy handler while another process holds the write lock (it polls: 1, 2, 5, 10 ... ms, not woken).
SYSCALLS = ("fdatasync", "fsync", "clock_nanosleep", "nanosleep")


def count_syscalls(pids: list[int], seconds: float, output: Path) -> subprocess.Popen[bytes] | None:
    """``perf stat`` counting ``SYSCALLS`` in ``pids`` (all their threads) for ``seconds``; None without perf."""
    if not shutil.which("perf") or not pids:
        return None
    events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS)
    return subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(output), "-e", events,
                             "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_syscalls(proc: subprocess.Popen[bytes] | None, output: Path) -> dict[str, int] | None:
    if proc is None or proc.wait(30) != 0 or not output.exists():
        return None
    counts: dict[str, int] = {}
    for line in output.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("syscalls:sys_enter_") and fields[0].isdigit():
            counts[fields[2].removeprefix("syscalls:sys_enter_")] = int(fields[0])
    return counts or None


def gateway_workers(supervisor: int) -> list[int]:
    """The processes serving requests: the supervisor's children when there are several, else the supervisor."""
    children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                and (s := proc_stat(pid)) is not None and s[1] == supervisor and s[0].startswith("python")]
    return children or [supervisor]


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of all cores since boot, interrupts and softirqs (loopback traffic) included."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def children_seconds() -> float:
    mine = os.times()
    return mine.children_user + mine.children_system
