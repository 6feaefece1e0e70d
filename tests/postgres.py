"""Databases for the PostgreSQL tests, on the server at 127.0.0.1:5432.

``GATEWAY_TEST_POSTGRES`` names the server's maintenance database (default
``postgresql://postgres@127.0.0.1:5432/postgres``). Every database made here
has a unique ``gw_test_<pid>_<random>`` name, is created from ``template0``
and is dropped with ``FORCE`` afterwards, so a pool a failing test left open
does not keep it alive. Nothing else on the server is touched.

Creating a database costs 50-250 ms; emptying one costs about 1 ms. So the
contract tests share one database per module and empty it before each test
(``empty_database``), and only tests about a database's own life (its
migrations) make one each (``fresh_database``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import uuid
from typing import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ADMIN_URL = os.environ.get("GATEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_of(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{database}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _name() -> str:
    return f"gw_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """Yields the URL of an empty database that exists only for the ``async with`` block."""
    name = _name()
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield url_of(name)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def shared_database() -> Iterator[str]:
    """``fresh_database`` for a sync fixture of a wider scope: the admin work runs on a loop of its own."""
    name = _name()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(f'CREATE DATABASE "{name}" TEMPLATE template0')).result()
        try:
            yield url_of(name)
        finally:
            pool.submit(asyncio.run, _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')).result()


async def empty_database(url: str) -> None:
    """Delete every row of every table but ``schema_version`` (a migrated schema stays migrated)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'"
        )
        if tables:
            await conn.execute("; ".join(f'DELETE FROM "{t[0]}"' for t in tables))
    finally:
        await conn.close()
