"""How long the disk takes to make a small write durable: ``python -m bench.fsync``.

    python -m bench.fsync                      # 300 fsyncs of 4 KiB in a temp dir on the disk the bench uses
    python -m bench.fsync --dir /var/lib/gateway --count 1000

With ``storage.synchronous: full`` (SQLite in WAL mode) every commit group
waits for one fsync of the write-ahead log before its requests get their
2xx, so a request's latency is at least the fsync of its group, and at most
the one before it plus its own. The tail of this distribution is therefore
a floor under the gateway's p99 that no change to the gateway moves; the
main run (``python -m bench``) records it with its latency figures.

Each probe overwrites one of 64 blocks of a 256 KiB file with fresh random
bytes (so that nothing is deduplicated or skipped) and times ``os.fsync``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

BLOCK = 4096
BLOCKS = 64


def probe(directory: Path | None = None, count: int = 300) -> dict[str, Any]:
    """``count`` timed fsyncs of a 4 KiB write in ``directory``; milliseconds at the usual percentiles."""
    with tempfile.TemporaryDirectory(prefix="fsync-probe-", dir=directory) as folder:
        path = Path(folder) / "probe"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, b"\0" * BLOCK * BLOCKS, 0)
            os.fsync(fd)
            times = []
            for n in range(count):
                os.pwrite(fd, os.urandom(BLOCK), (n % BLOCKS) * BLOCK)
                begun = time.perf_counter()
                os.fsync(fd)
                times.append((time.perf_counter() - begun) * 1000)
        finally:
            os.close(fd)
        filesystem = _filesystem(Path(folder))
    times.sort()

    def at(fraction: float) -> float:
        return round(times[min(len(times) - 1, int(fraction * len(times)))], 3)

    return {"count": count, "filesystem": filesystem, "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99),
            "max_ms": round(times[-1], 3)}


def _filesystem(path: Path) -> str:
    """The mount point and type the probe ran on, from /proc/mounts (the longest mount point above ``path``)."""
    best = ("?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and str(path).startswith(fields[1].rstrip("/") + "/") and len(fields[1]) >= len(best[0]):
                best = (fields[1], fields[2])
    except OSError:
        pass
    return f"{best[0]} ({best[1]})"


def render(result: dict[str, Any]) -> str:
    return (f"fsync of 4 KiB on {result['filesystem']}, {result['count']} times: p50 {result['p50_ms']:.2f} ms, "
            f"p90 {result['p90_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fsync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: the system temp dir)")
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args(argv)
    print(render(probe(args.dir, args.count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
