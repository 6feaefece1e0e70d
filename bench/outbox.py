"""Reading a scenario's SQLite outbox from outside the gateway: what was committed, what was delivered when.

The file is opened read-only; in WAL mode that never blocks the gateway's
writer, so it is safe while the gateway runs (for the pending count) as well
as after it stopped (for the committed-count check). ``created_at`` is set
when the request's items are handed to the group commit, just before the 2xx;
``delivered_at`` when the dispatcher settled the item after the destination's
2xx. Their difference is the "2xx to delivered" time.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import percentiles


@dataclass(frozen=True, slots=True)
class Committed:
    pending: int
    delivered: int
    dead: int

    @property
    def total(self) -> int:
        return self.pending + self.delivered + self.dead


def _connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def committed(db: Path) -> Committed:
    """Every item the outbox holds, by state, plus dead letters: nothing a 2xx promised may be missing."""
    with _connect(db) as conn:
        rows = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    pending = rows.pop("pending", 0)
    delivered = rows.pop("delivered", 0)
    return Committed(pending, delivered, dead + sum(rows.values()))


def pending(db: Path) -> int:
    with _connect(db) as conn:
        return conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]


def delivery_lag_ms(db: Path, since: float, until: float) -> dict[str, float]:
    """Percentiles of delivered_at - created_at for items committed between two unix times."""
    with _connect(db) as conn:
        rows = conn.execute(
            "SELECT (delivered_at - created_at) * 1000 FROM outbox"
            " WHERE status = 'delivered' AND created_at BETWEEN ? AND ?",
            (since, until),
        ).fetchall()
    return {**percentiles([r[0] for r in rows]), "items": float(len(rows))}
