"""``gateway serve``'s side of its dispatcher process: start it, restart it when it dies, stop it by its PID.

One thread waits on the child (``Popen.wait``: no polling, so it costs the
HTTP worker that shares this process nothing while the child runs). When the
child exits on its own it is restarted after a backoff that doubles from
``BACKOFF_INITIAL`` up to ``BACKOFF_MAX`` and starts over once a child has
run for ``STABLE_AFTER`` seconds. Its undelivered items are not lost
meanwhile: they wait in the outbox, and the ones it had claimed go out again
once their lease runs out.

The child is spawned from that same thread, which lives as long as the
child: the kernel's parent-death signal (``gateway.dispatch_process``) is tied
to the thread that forked, not to the process.

A dead child's gauges are removed from the metrics directory (a dead
process's outbox depth or heartbeat would otherwise stay in the maximum or
minimum the workers' ``/metrics`` computes); its counters and histograms
stay, so the totals keep counting up.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Sequence

log = logging.getLogger("gateway.serve")

BACKOFF_INITIAL = 0.5  # seconds before the first restart
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0  # a child that ran this long restarts the backoff from BACKOFF_INITIAL when it dies
STOP_TIMEOUT = 30.0  # SIGTERM, then this long (Dispatcher.stop's 10 s and the settling grace fit), then SIGKILL


class DispatcherSupervisor:
    def __init__(self, argv: Sequence[str], *, metrics_dir: str | None = None,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 stop_timeout: float = STOP_TIMEOUT) -> None:
        self.argv = list(argv)
        self.metrics_dir = metrics_dir
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawned = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start the supervising thread; returns once the first child is spawned."""
        self._thread.start()
        self._spawned.wait(timeout)

    def _run(self) -> None:
        delay = self.backoff_initial
        while not self._stopping.is_set():
            with self._lock:
                if self._stopping.is_set():
                    break
                try:
                    self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
                except OSError as exc:
                    self._proc = None
                    log.error("could not start the dispatcher process", extra={"error": str(exc)})
            self._spawned.set()
            started = time.monotonic()
            proc = self._proc
            if proc is not None:
                log.info("dispatcher process running", extra={"pid": proc.pid, "restarts": self.restarts})
                code = proc.wait()
                self._forget_gauges(proc.pid)
                if self._stopping.is_set():
                    break
                if time.monotonic() - started >= STABLE_AFTER:
                    delay = self.backoff_initial
                log.error("dispatcher process exited; restarting it",
                          extra={"pid": proc.pid, "exit_code": code, "restart_in_seconds": delay})
            if self._stopping.wait(delay):
                break
            delay = min(self.backoff_max, delay * 2)
            self.restarts += 1

    def _forget_gauges(self, pid: int) -> None:
        if not self.metrics_dir:
            return
        for path in glob.glob(os.path.join(self.metrics_dir, f"gauge_*_{pid}.db")):
            with contextlib.suppress(OSError):
                os.unlink(path)

    def stop(self) -> int | None:
        """SIGTERM the child by its PID, wait up to ``stop_timeout``, then SIGKILL; returns its exit status."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        if proc is not None:
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                log.error("dispatcher process did not stop in time; killing it", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._thread.is_alive():
            self._thread.join(5)
        return None if proc is None else proc.returncode
