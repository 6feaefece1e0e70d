"""Storage backends, chosen by the scheme of ``storage.url`` (read in ``gateway.storage_url``).

A SQLite file's directory is created when missing. A PostgreSQL database
may be shared by several gateway instances; asyncpg also reads the ``PG*``
environment variables (``PGPASSWORD``, ``PGSSLMODE``, ...).
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import StorageSection
from gateway.errors import ConfigError
from gateway.storage.base import Storage, StorageUnavailable
from gateway.storage.postgres import PostgresStorage
from gateway.storage.sqlite import SQLiteStorage
from gateway.storage_url import FIELD, PostgresTarget, StorageUrlError, parse_storage_url

__all__ = ["PostgresStorage", "SQLiteStorage", "Storage", "StorageUnavailable", "open_storage"]

def open_storage(section: StorageSection) -> Storage:
    """The backend for ``section.url``, not yet opened: call ``await storage.open()``.

    A container loaded from a file has its SQLite path made absolute already
    (relative to the file); here a relative path is taken as it is. Error
    messages never repeat the URL: a PostgreSQL URL carries a password.
    """
    try:
        target = parse_storage_url(section.url)
    except StorageUrlError as exc:
        raise ConfigError([f"{FIELD}: {exc}"]) from None
    if isinstance(target, PostgresTarget):
        return PostgresStorage(
            target.url,
            pool_size=section.pool_size,
            command_timeout=section.command_timeout.total_seconds(),
            target=target,
        )
    parent = Path(target.path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([f"{FIELD}: cannot create the directory {parent}: {exc.strerror}"]) from None
    return SQLiteStorage(target.path, synchronous=section.synchronous, checkpoint_pages=section.checkpoint_pages)
