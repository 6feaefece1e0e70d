"""The pieces between `gateway serve`'s workers and its dispatcher process: wake-up datagrams, heartbeat, supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time

from gateway.dispatch_link import WAKE_GAP, DispatcherLink, heartbeat_path, stamp_heartbeat, wake_path
from gateway.dispatch_process import WakeListener
from gateway.dispatch_supervisor import DispatcherSupervisor
from tests.running import process_exists


def test_a_worker_sends_at_most_one_wake_up_per_gap_and_never_fails_without_a_listener(tmp_path):
    link = DispatcherLink(str(tmp_path))
    link.wake()  # nobody listens yet: dropped, no exception
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(wake_path(str(tmp_path)))
    receiver.setblocking(False)
    try:
        time.sleep(WAKE_GAP * 2)
        for _ in range(50):
            link.wake()  # all within one gap: one datagram
        time.sleep(WAKE_GAP * 2)
        link.wake()
        received = 0
        while True:
            try:
                receiver.recv(64)
            except BlockingIOError:
                break
            received += 1
        assert received == 2
    finally:
        receiver.close()
        link.close()


async def test_the_listener_wakes_the_dispatcher_once_for_a_burst_of_datagrams(tmp_path):
    woken: list[float] = []
    listener = WakeListener(wake_path(str(tmp_path)), lambda: woken.append(time.monotonic()))
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    try:
        for _ in range(20):  # more than the socket queues (net.unix.max_dgram_qlen, 10 by default): the rest drop
            with contextlib.suppress(BlockingIOError):
                sender.sendto(b"w", wake_path(str(tmp_path)))
        sent = time.monotonic()
        for _ in range(100):
            if woken:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(WAKE_GAP * 4)
        assert len(woken) == 1
        assert woken[0] - sent >= WAKE_GAP * 0.9  # waited a gap, so items committed meanwhile go in the same pass
    finally:
        sender.close()
        listener.close()
    assert not os.path.exists(wake_path(str(tmp_path)))


def test_alive_follows_the_heartbeat_files_age(tmp_path):
    link = DispatcherLink(str(tmp_path))
    assert not link.alive()  # never stamped
    stamp_heartbeat(heartbeat_path(str(tmp_path)))
    assert link.alive()
    old = time.time() - 30
    os.utime(heartbeat_path(str(tmp_path)), (old, old))
    assert not link.alive()
    stamp_heartbeat(heartbeat_path(str(tmp_path)))
    assert link.alive()
    link.close()


def test_the_supervisor_restarts_a_dying_child_with_growing_delays_and_stops_it_by_pid(tmp_path):
    starts = tmp_path / "starts"
    # Each child notes when it started, then exits at once with status 3.
    script = f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); raise SystemExit(3)"
    supervisor = DispatcherSupervisor([sys.executable, "-c", script], backoff_initial=0.1, backoff_max=0.4)
    supervisor.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(starts.read_text().split() if starts.exists() else []) < 5:
            time.sleep(0.05)
    finally:
        supervisor.stop()
    times = [float(t) for t in starts.read_text().split()]
    assert len(times) >= 5
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.1 and gaps[2] >= 0.4 and gaps[3] >= 0.4  # 0.1, 0.2, 0.4, 0.4 (capped) plus start-up


def test_stop_sends_sigterm_and_waits_for_the_child():
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
              "print('up', flush=True)\n"
              "time.sleep(60)\n")
    supervisor = DispatcherSupervisor([sys.executable, "-c", script])
    supervisor.start()
    pid = supervisor.pid
    assert pid is not None
    time.sleep(1.0)  # the child installs its handler
    assert supervisor.stop() == 7  # its own SIGTERM handler ran: stopped by signal, not killed
    assert not process_exists(pid)
