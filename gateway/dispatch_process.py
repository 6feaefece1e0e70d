"""``gateway dispatch``: the dispatcher and the vendor-request follow-up in a process of their own.

``gateway serve`` starts this as its child (``gateway.dispatch_supervisor``)
so that deliveries share neither the requests' event loop nor their
storage writer: with the dispatcher on the HTTP worker's loop, a pass that
claims, sends and settles a batch ran between two requests, and its claim
and settle SQL went through the same SQLite writer as the requests'
commits, in their commit groups. Here it has its own loop, its own storage
connection (its own writer thread, for SQLite) and, when supervised, a
lower CPU priority (``--nice``, ``--batch``), so that on a shared core the requests win.

What it shares with the HTTP workers (``gateway.dispatch_link``): a Unix
datagram socket the workers wake it through after a commit, and a heartbeat
file their ``/readyz`` reads. Its metrics reach ``/metrics`` through
prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, set by
``gateway serve``).

Supervised (``--parent-pid``), it dies with ``gateway serve``: the kernel
sends it SIGKILL when its parent is gone (``PR_SET_PDEATHSIG``), as the
in-process dispatcher would have died with its process; its leases then run
out and the items go out again, at least once as always. SIGINT is left to
the parent, which stops it with SIGTERM after the HTTP workers. SIGTERM
stops it cleanly: batches in flight finish (``Dispatcher.stop``), their
results are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from datetime import datetime, timezone
from typing import Callable

from gateway import metrics
from gateway.config import Container
from gateway.delivery_setup import build_delivery, follow_up_forever
from gateway.dispatch_link import HEARTBEAT_SECONDS, WAKE_GAP, heartbeat_path, stamp_heartbeat, wake_path
from gateway.dispatcher import Dispatcher
from gateway.storage import open_storage

log = logging.getLogger("gateway.dispatcher")

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when ``parent_pid`` ends; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise SystemExit(1)


class WakeListener:
    """The bound end of ``wake.sock``: a datagram wakes the dispatcher ``WAKE_GAP`` later.

    Waiting that long lets the items committed meanwhile go out in the same
    pass, and bounds the passes wake-ups cause to a few hundred a second.
    """

    def __init__(self, path: str, wake: Callable[[], None]) -> None:
        self.path = path
        self._wake = wake
        self._handle: asyncio.TimerHandle | None = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a dispatcher process that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(path)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        if self._handle is None:
            self._handle = self._loop.call_later(WAKE_GAP, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._wake()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


async def _heartbeat(dispatcher: Dispatcher, path: str | None, parent_pid: int | None, stop: asyncio.Event) -> None:
    """Stamp the heartbeat while the loop is alive, hand buffered metrics over, and stop when the parent is gone."""
    while not stop.is_set():
        if path is not None and dispatcher.alive:
            with contextlib.suppress(OSError):
                stamp_heartbeat(path)
        metrics.flush()
        if parent_pid is not None and os.getppid() != parent_pid:  # where PR_SET_PDEATHSIG is not available
            log.error("parent process gone; dispatcher stopping", extra={"parent_pid": parent_pid})
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HEARTBEAT_SECONDS):
                await stop.wait()


async def run(container: Container, runtime_dir: str | None, parent_pid: int | None) -> int:
    """Deliver until SIGTERM (or SIGINT when not supervised); returns the exit status."""
    storage = open_storage(container.file.storage)
    await storage.open()
    dispatcher, follow_up = build_delivery(container, storage, utcnow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if parent_pid is None:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    listener = WakeListener(wake_path(runtime_dir), dispatcher.wake) if runtime_dir else None
    await dispatcher.start()
    tasks = [
        asyncio.create_task(_heartbeat(dispatcher, heartbeat_path(runtime_dir) if runtime_dir else None, parent_pid,
                                       stop), name="dispatcher-heartbeat"),
        asyncio.create_task(follow_up_forever(follow_up), name="vendor-request-follow-up"),
    ]
    log.info("dispatcher process started", extra={"pid": os.getpid(), "destinations": sorted(dispatcher.senders),
                                                  "wake_socket": listener is not None})
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if listener is not None:
            listener.close()
        await dispatcher.stop()
        await storage.close()
        metrics.flush()
        log.info("dispatcher process stopped", extra={"pid": os.getpid()})
    return 0


def yield_the_cpu(nice: int, batch: bool) -> None:
    """Lower this process's CPU priority before any thread starts (threads inherit it).

    ``nice``: a smaller share of a busy core. ``batch`` (``SCHED_BATCH``): its
    wake-ups (a datagram, a timer, a storage answer) never preempt the HTTP
    worker in the middle of a request; it runs when the worker waits, or at
    the next scheduler tick, and still gets its share of a saturated core.
    """
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    if batch and hasattr(os, "SCHED_BATCH"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def main(container: Container, runtime_dir: str | None, parent_pid: int | None, nice: int,
         batch: bool = False) -> int:
    """The ``gateway dispatch`` command once its container loaded: priority, parent, event loop."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    yield_the_cpu(nice, batch)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(container, runtime_dir, parent_pid))
    return uvloop.run(run(container, runtime_dir, parent_pid))
