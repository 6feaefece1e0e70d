"""Storage backends, chosen by the scheme of ``storage.url``.

``sqlite:///relative/path`` and ``sqlite:////absolute/path`` name a SQLite
file (its directory is created when missing). ``postgresql://`` (or
``postgres://``) ``user:password@host:port/database`` names a PostgreSQL
database that several gateway instances may share; asyncpg also reads the
``PG*`` environment variables (``PGPASSWORD``, ``PGSSLMODE``, ...).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from gateway.config import StorageSection
from gateway.errors import ConfigError
from gateway.storage.base import Storage, StorageUnavailable
from gateway.storage.postgres import PostgresStorage
from gateway.storage.sqlite import SQLiteStorage

__all__ = ["PostgresStorage", "SQLiteStorage", "Storage", "StorageUnavailable", "open_storage"]

_EXPECTED = "storage.url: expected sqlite:///relative/path, sqlite:////absolute/path or postgresql://..."


def open_storage(section: StorageSection) -> Storage:
    """The backend for ``section.url``, not yet opened: call ``await storage.open()``.

    Error messages never repeat the URL: a PostgreSQL URL carries a password.
    """
    scheme, sep, rest = section.url.partition("://")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres") and sep:
        return _postgres(section)
    if scheme.startswith(("postgresql+", "postgres+")):
        raise ConfigError(["storage.url: expected postgresql://user:password@host:port/database, without a driver name"])
    if scheme != "sqlite" or not sep:
        raise ConfigError([_EXPECTED])
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(["storage.url: expected sqlite:///relative/path or sqlite:////absolute/path"])
    path = rest[1:]
    if path == ":memory:" or path.startswith("file:"):
        raise ConfigError(["storage.url: SQLite storage needs a file path (an in-memory database loses every event)"])
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([f"storage.url: cannot create the directory {parent}: {exc.strerror}"]) from None
    return SQLiteStorage(path, synchronous=section.synchronous)


def _postgres(section: StorageSection) -> PostgresStorage:
    if "#" in section.url:
        raise ConfigError(["storage.url: a postgresql:// URL has no #fragment (is a '#' in the password unescaped?)"])
    try:
        urlsplit(section.url).port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        raise ConfigError(["storage.url: not a valid postgresql:// URL (check the host and port)"]) from None
    return PostgresStorage(
        section.url,
        pool_size=section.pool_size,
        command_timeout=section.command_timeout.total_seconds(),
    )
