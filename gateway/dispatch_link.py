"""What ties ``gateway serve``'s HTTP workers to its dispatcher process: a wake-up datagram and a heartbeat file.

Both live in one directory that ``gateway serve`` makes for the run and
hands to every process it starts in ``GATEWAY_DISPATCH_DIR``:

- ``wake.sock``: a Unix datagram socket the dispatcher process binds. A
  worker that committed new outbox items sends it one byte, so delivery
  starts within milliseconds instead of at the next poll. One ``sendto`` on
  a non-blocking socket is a few microseconds, and a worker sends at most
  one per ``WAKE_GAP``; when nobody listens (the dispatcher is restarting)
  or the socket's queue is full, the datagram is dropped, which is harmless:
  the dispatcher polls the outbox every ``delivery.poll_interval`` anyway and
  runs a pass as soon as it starts. A datagram, not a pipe or a stream:
  nothing to connect or reconnect when either side restarts, and a sender
  can never block on a slow reader.
- ``heartbeat``: a file whose modification time the dispatcher process
  sets every ``HEARTBEAT_SECONDS`` while its loop is alive
  (``Dispatcher.alive``). ``/readyz`` of a worker reads its age: past
  ``HEARTBEAT_STALE`` seconds deliveries are not running and the answer is
  503, as it is when the in-process dispatcher's loop stops.

Storage-agnostic on purpose (SQLite and PostgreSQL alike), and local: a
dispatcher on another machine (``gateway dispatch`` without these files)
finds new work by polling.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from gateway import metrics

DISPATCH_DIR_ENV = "GATEWAY_DISPATCH_DIR"
WAKE_SOCKET = "wake.sock"
HEARTBEAT_FILE = "heartbeat"
HEARTBEAT_SECONDS = 1.0  # how often the dispatcher process stamps the heartbeat while its loop is alive
HEARTBEAT_STALE = 5.0  # seconds after which /readyz says deliveries are not running
# Seconds between two wake-ups from one worker, and how long the dispatcher waits after one before its
# pass: every item committed in that window goes out in the same pass, and a worker under load sends
# at most 200 datagrams a second however many requests it commits.
WAKE_GAP = 0.005


def wake_path(directory: str) -> str:
    return os.path.join(directory, WAKE_SOCKET)


def heartbeat_path(directory: str) -> str:
    return os.path.join(directory, HEARTBEAT_FILE)


def stamp_heartbeat(path: str) -> None:
    """Set the heartbeat file's modification time to now (creating the file the first time)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        with open(path, "ab"):
            pass


class DispatcherLink:
    """An HTTP worker's side: wake the dispatcher process, and tell whether it is alive."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._wake_path = wake_path(directory)
        self._heartbeat_path = heartbeat_path(directory)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._last_wake = 0.0

    def wake(self) -> None:
        """Tell the dispatcher process there is new work (at most once per ``WAKE_GAP``); never blocks, never raises."""
        now = time.monotonic()
        if now - self._last_wake < WAKE_GAP:
            return
        self._last_wake = now
        try:
            self._sock.sendto(b"w", self._wake_path)
        except OSError:  # not listening (restarting), or its queue is full: it polls anyway
            pass

    def heartbeat(self) -> float | None:
        """Unix time of the dispatcher process's last heartbeat, None when it never stamped one."""
        try:
            return os.stat(self._heartbeat_path).st_mtime
        except OSError:
            return None

    def alive(self) -> bool:
        """The dispatcher process stamped its heartbeat within ``HEARTBEAT_STALE`` seconds."""
        beat = self.heartbeat()
        return beat is not None and time.time() - beat < HEARTBEAT_STALE

    def report(self) -> None:
        """Export the dispatcher process's heartbeat as this worker's ``gateway_dispatcher_heartbeat_timestamp_seconds``.

        The gauge is the minimum over the processes that write it: a worker that
        left its own at zero would keep the ``GatewayDispatcherStopped`` alert firing.
        """
        beat = self.heartbeat()
        if beat is not None:
            metrics.DISPATCHER_HEARTBEAT.set(beat)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
