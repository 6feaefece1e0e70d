"""The SQLite file's disk full, or gone read-only, under the gateway: 503 with Retry-After, nothing half-written.

Three faults the gateway process itself experiences, each chosen because
it is what a server really does, not a simulation inside SQLite:

- ``disk_full``: the SQLite file lives on a small tmpfs of its own, and a
  ballast file takes every free byte, as logs filling a volume do. Writes
  get ENOSPC. Needs root (mount); skipped otherwise. Freeing the ballast
  must be enough for the gateway to take requests again by itself.
- ``file_size_limit``: the gateway process's RLIMIT_FSIZE is lowered to
  just above what its files hold (prlimit, like ``ulimit -f``), so its next
  growing write gets EFBIG. Works without root, on any Linux; raising the
  limit again must be enough to recover.
- ``read_only``: the SQLite file lives on an ext4 image mounted with
  ``errors=remount-ro``, and the kernel is told the filesystem is corrupt
  (``/sys/fs/ext4/<dev>/trigger_fs_error``): it turns the filesystem
  read-only under the running gateway, exactly what happens on a failing
  disk. Writes get EROFS for good; the operator's remedy (stop, remount,
  start) is what the test does. Needs root and a loop device.

(``chmod`` cannot make the file read-only for a process running as root,
and SQLite's ``max_page_count`` set from another connection is not a limit
the gateway's own connection sees; neither is used.)

In each case: requests are answered 2xx until the fault, then 503 with
``Retry-After`` and a JSON body (a malformed one still gets its 400); the
outbox (read from the file itself while the fault lasts) holds every event
of each 2xx'd request and no event of a 503'd one, a batched GA4 request
(three events) never partly; after the fault every request sent again is
delivered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest

from tests.faults.harness import LoadGenerator, Tally, container_yaml, sink_arrivals, sink_on
from tests.running import GatewayProcess, free_port, wait_until


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _unmount(folder: Path, timeout: float = 10.0) -> None:
    """``umount``, again while the kernel says the target is busy: a killed process lets go of its files a moment
    after it is reaped (a full suite on a loaded machine saw the remount fail on a mount never taken down)."""
    deadline = time.monotonic() + timeout
    while True:
        done = _run("umount", str(folder))
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, f"umount {folder}: {done.stderr.strip()}"
        time.sleep(0.1)


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[None]:
    folder.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield
    finally:
        _run("umount", "-l", str(folder))


@contextlib.contextmanager
def _ext4(image: Path, folder: Path) -> Iterator[str]:
    """An ext4 image mounted on ``folder`` with errors=remount-ro; yields its sysfs name (loop0, ...)."""
    if os.geteuid() != 0 or shutil.which("mkfs.ext4") is None or not Path("/dev/loop-control").exists():
        pytest.skip("needs root, mkfs.ext4 and a loop device to mount an ext4 image")
    folder.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    done = _run("mkfs.ext4", "-q", "-F", str(image))
    assert done.returncode == 0, done.stderr
    done = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(folder))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {done.stderr.strip()}")
    try:
        device = Path(_run("findmnt", "-no", "SOURCE", str(folder)).stdout.strip()).name
        if not Path(f"/sys/fs/ext4/{device}/trigger_fs_error").exists():
            pytest.skip("this kernel has no /sys/fs/ext4/<dev>/trigger_fs_error")
        yield device
    finally:
        _run("umount", "-l", str(folder))


def _fill(folder: Path) -> Path:
    """A ballast file that takes every free byte of the filesystem holding ``folder``."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as handle:  # unbuffered: ENOSPC shows at the write that meets it
        for size in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):  # ENOSPC: full at this granularity
                while True:
                    handle.write(b"\0" * size)
    return ballast


def _outbox_keys(db: Path) -> set[str]:
    """Every idempotency key in the outbox, read from the file (read-only, beside the running gateway)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row[0] for row in conn.execute("SELECT idempotency_key FROM outbox")}


def _sink_key(event_id: str) -> str:
    return f"http_request:forward:{event_id}"


async def _until_refused(load: LoadGenerator, tally: Tally, start: int, limit: int = 3000) -> int:
    """Send requests until 5 were answered 503 (and a bad one 400 meanwhile); returns the next request number."""
    refused = 0
    n = start
    while refused < 5:
        assert n - start < limit, "the fault never made the gateway answer 503"
        status = await (load.ga4_batch(n) if n % 2 else load.order_webhook(n))
        refused += status == 503
        if refused:
            assert await load.bad_hit(n) == 400  # bad input is still told so, storage or not
        n += 1
    return n


FAULTS = ["disk_full", "file_size_limit", "read_only"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_disk_that_cannot_take_writes_gets_503_with_retry_after_and_nothing_half_written(tmp_path, fault):
    tally = Tally()
    sink_port = free_port()
    mounted: contextlib.AbstractContextManager = contextlib.nullcontext()
    data = tmp_path / "data"
    if fault == "disk_full":
        mounted = _tmpfs(data, "64m")
    elif fault == "read_only":
        mounted = _ext4(tmp_path / "ext4.img", data)
    else:
        data.mkdir()
    with mounted as device:
        db = data / "gateway.db"
        config = tmp_path / "container.yaml"
        config.write_text(container_yaml(storage_url=f"sqlite:///{db}", sink_port=sink_port, fake=None))
        gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
        sink = await sink_on(sink_port)
        try:
            await gateway.start()
            async with LoadGenerator(gateway.url, tally, patient=False, destinations=frozenset({"http_request"})) as load:
                for n in range(20):  # before the fault
                    assert await (load.ga4_batch(n) if n % 2 else load.order_webhook(n)) in (200, 204)

                clear: Callable[[], None]
                if fault == "disk_full":
                    ballast = _fill(data)
                    clear = ballast.unlink
                elif fault == "file_size_limit":
                    used = max(p.stat().st_size for p in (db, Path(f"{db}-wal"), tmp_path / "gateway.log"))
                    gateway.set_file_size_limit(used + 64 * 1024)
                    clear = lambda: gateway.set_file_size_limit(None)  # noqa: E731
                else:
                    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("fault test")
                    clear = lambda: None  # noqa: E731 - a filesystem gone read-only stays so

                end = await _until_refused(load, tally, 20)
                assert load.last_503 is not None
                assert load.last_503["retry-after"] == "5"
                assert load.last_503["content-type"] == "application/json"
                assert orjson.loads(load.last_503["body"]) == {"error": "storage unavailable", "detail": None}

                stored = _outbox_keys(db)  # while the fault lasts
                refused = {key for keys in tally.undecided.values() for key in keys}
                accepted = tally.expected["http_request"]
                assert {_sink_key(k) for k in accepted} <= stored, "a 2xx'd event is not in the outbox"
                assert not {_sink_key(k) for k in refused} & stored, "a 503'd event is in the outbox"
                # no batch partly: every batch's three events are all in, or all out
                for n in range(1, end, 2):
                    keys = {_sink_key(f"batch-{n}-{i}") for i in range(3)}
                    assert len(keys & stored) in (0, 3), f"batch {n} half-written"

                if fault == "read_only":  # the operator's way out: stop, fsck, remount, start
                    gateway.kill()
                    _unmount(data)
                    _run("e2fsck", "-fy", str(tmp_path / "ext4.img"))
                    mounted = _run("mount", "-o", "loop", str(tmp_path / "ext4.img"), str(data))
                    assert mounted.returncode == 0, mounted.stderr
                    with contextlib.closing(sqlite3.connect(db)) as conn:
                        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                    await gateway.start()
                else:
                    clear()

                load.patient = True  # the senders come back, as Retry-After told them
                for n in range(20, end):
                    assert await (load.ga4_batch(n) if n % 2 else load.order_webhook(n)) in (200, 204)

            await wait_until(lambda: tally.expected["http_request"] <= set(sink_arrivals(sink)), timeout=30)
            await _settle_quietly()
        finally:
            gateway.kill()
            await sink.close()
        counts = tally.settle({"http_request": sink_arrivals(sink)}, title=f"{fault.replace('_', ' ')} under load")
    assert tally.undecided == {}
    assert (counts.lost, counts.unexpected) == (0, 0)
    assert counts.delivered == counts.accepted


async def _settle_quietly() -> None:
    await asyncio.sleep(1.2)  # a lease more: late duplicates are counted too
