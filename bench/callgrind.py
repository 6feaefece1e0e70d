"""Instructions counted by valgrind's callgrind: the command prefix, switching counting on, reading the totals.

A process runs under ``valgrind --tool=callgrind`` with counting off
(``--instr-atstart=no``: start-up runs about five times faster uncounted), and
``instrument`` switches it on once the server answers, through
``callgrind_control`` (valgrind's own client, by PID). Every thread is
counted, and every child process too (``--trace-children=yes``: a dispatcher
in a process of its own would be part of the figure); each writes its own
file (``--separate-threads=yes``), so ``read`` can give the total and say
which thread spent what.

Callgrind counts the instructions a process executes in user space: the
kernel's work for its system calls (socket I/O, fsync) is not in the figure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

OUT_PREFIX = "callgrind"
MAIN_THREAD = "main thread (event loop)"
WRITER_THREAD = "SQLite writer thread"
OTHER_THREADS = "other threads and processes"
# A function only the thread that writes SQLite's WAL runs: how the writer thread is told from the others.
_WRITER_MARK = "sqlite3WalFrames"


def missing() -> str | None:
    """Why instructions cannot be counted here, or None when they can."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install -y valgrind)"
    return None


def prefix(out_dir: Path) -> list[str]:
    """The argv prefix that runs a command under callgrind, counting off until ``instrument``."""
    return [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes", "--trace-children=yes",
        f"--callgrind-out-file={out_dir}/{OUT_PREFIX}.%p", f"--log-file={out_dir}/valgrind.%p.log",
    ]


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc/<pid>/task/*/children."""
    found = [pid]
    for parent in found:
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                found += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def instrument(pid: int) -> None:
    """Switch counting on in ``pid`` and its children under callgrind, each by its PID (other runs are left alone)."""
    listing = subprocess.run(["callgrind_control"], capture_output=True, text=True, timeout=60).stdout
    active = {int(found) for found in re.findall(r"^PID (\d+):", listing, re.MULTILINE)}
    if pid not in active:
        raise RuntimeError(f"process {pid} is not running under callgrind: {listing[-500:]}")
    for each in (p for p in descendants(pid) if p in active):
        done = subprocess.run(["callgrind_control", "--instr=on", str(each)], capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0 or "OK" not in done.stdout:
            raise RuntimeError(f"callgrind_control --instr=on {each} failed: {done.stdout} {done.stderr}")


@dataclass(frozen=True, slots=True)
class Count:
    """Instructions (Ir) of one run, in total and by thread."""

    total: int
    by_thread: dict[str, int] = field(default_factory=dict)  # MAIN_THREAD, WRITER_THREAD, OTHER_THREADS
    files: tuple[str, ...] = ()


def read(out_dir: Path, main_pid: int) -> Count:
    """Add up the files a run left in ``out_dir``: one per process and thread, all of them counted."""
    by_thread: Counter[str] = Counter()
    files = sorted(out_dir.glob(f"{OUT_PREFIX}.*-*"))
    if not files:
        raise RuntimeError(f"callgrind wrote no output in {out_dir}")
    for path in files:
        pid, _, thread = path.name.removeprefix(f"{OUT_PREFIX}.").partition("-")
        text = path.read_text(errors="replace")
        summary = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
        if summary is None:
            raise RuntimeError(f"{path}: no summary line (did the process end cleanly?)")
        if int(pid) != main_pid:
            label = OTHER_THREADS
        elif int(thread) == 1:
            label = MAIN_THREAD
        elif _WRITER_MARK in text:
            label = WRITER_THREAD
        else:
            label = OTHER_THREADS
        by_thread[label] += int(summary.group(1))
    return Count(sum(by_thread.values()), dict(by_thread), tuple(str(p) for p in files))


def self_costs(out_dir: Path) -> tuple[Counter[str], Counter[str]]:
    """Own instructions by binary (libpython, pydantic-core, SQLite, libc ...) and by function, over every file.

    A callgrind file lists, per function, cost lines ``<position> <Ir>``; the line after a ``calls=``
    line is the inclusive cost of that call, not the function's own, and is skipped. Names are
    compressed: ``ob=(3) /usr/lib/...`` the first time, ``ob=(3)`` (or ``cob=(3)``) after; likewise
    ``fn=`` and ``cfn=``. A function is keyed ``<binary file name>:<function>``.
    """
    by_object: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for path in sorted(out_dir.glob(f"{OUT_PREFIX}.*-*")):
        objects: dict[str, str] = {}
        functions: dict[str, str] = {}
        current_object, current_function = "?", "?"
        after_call = False
        with path.open(errors="replace") as lines:
            for line in lines:
                first = line[:1]
                if first.isdigit() or first in "+-*":
                    if after_call:
                        after_call = False
                        continue
                    parts = line.split()
                    if len(parts) > 1:
                        by_object[current_object] += int(parts[1])
                        by_function[f"{Path(current_object).name}:{current_function}"] += int(parts[1])
                elif line.startswith("ob="):
                    current_object = _name(objects, line[3:].strip())
                elif line.startswith("cob="):
                    _name(objects, line[4:].strip())
                elif line.startswith("fn="):
                    # callgrind marks a recursive call's depth as name'2, name'3 ...: one function for us
                    current_function = re.sub(r"'\d+$", "", _name(functions, line[3:].strip()))
                elif line.startswith("cfn="):
                    _name(functions, line[4:].strip())
                elif line.startswith("calls="):
                    after_call = True
    return by_object, by_function


def _name(names: dict[str, str], text: str) -> str:
    match = re.match(r"\((\d+)\)(?: (.*))?$", text)
    if match is None:
        return text
    if match.group(2) is not None:
        names[match.group(1)] = match.group(2)
    return names.get(match.group(1), text)
