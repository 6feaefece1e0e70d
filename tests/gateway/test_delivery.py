"""A delivery carries its item, or the item's JSON as the outbox stores it, and reads one from the other on demand."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from gateway.delivery import Delivery
from gateway.storage.sqlite import SQLiteStorage

T0 = datetime(2026, 12, 7, 6, 0, 0, tzinfo=timezone.utc)


def test_a_delivery_built_from_json_reads_its_item_from_it_and_equals_one_built_from_the_item() -> None:
    raw = b'{"event_name":"x","extra":{}}'
    from_json = Delivery("http_request", "hook", "k", None, "hook", raw=raw)
    from_item = Delivery("http_request", "hook", "k", {"event_name": "x", "extra": {}}, "hook")

    assert (from_json.raw is raw, from_json.item) == (True, {"event_name": "x", "extra": {}})
    assert from_item.raw == orjson.dumps(from_item.item)
    assert from_json == from_item and from_json != Delivery("http_request", "hook", "k", {"event_name": "y"}, "hook")


def test_a_delivery_needs_its_item_or_its_json() -> None:
    with pytest.raises(ValueError):
        Delivery("http_request", "hook", "k", None, "hook")


async def test_the_outbox_stores_the_json_as_it_was_given(tmp_path: Path) -> None:
    raw = b'{"b":1,"a":1.5e16}'  # not what orjson would write for the item ({"b":1,"a":1.5e+16})
    storage = SQLiteStorage(tmp_path / "outbox.db")
    await storage.open()
    try:
        assert await storage.enqueue([Delivery("http_request", "hook", "k", None, "hook", raw=raw)], T0)
    finally:
        await storage.close()

    with closing(sqlite3.connect(tmp_path / "outbox.db")) as conn:
        assert conn.execute("SELECT item FROM outbox").fetchone()[0] == raw
