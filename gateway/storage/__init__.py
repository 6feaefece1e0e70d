"""Storage backends, chosen by the scheme of ``storage.url``.

``sqlite:///relative/path`` and ``sqlite:////absolute/path`` name a SQLite
file (its directory is created when missing). PostgreSQL comes in a later
version.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config import StorageSection
from gateway.errors import ConfigError
from gateway.storage.base import Storage, StorageUnavailable
from gateway.storage.sqlite import SQLiteStorage

__all__ = ["SQLiteStorage", "Storage", "StorageUnavailable", "open_storage"]


def open_storage(section: StorageSection) -> Storage:
    """The backend for ``section.url``, not yet opened: call ``await storage.open()``.

    Error messages never repeat the URL: a PostgreSQL URL carries a password.
    """
    scheme, sep, rest = section.url.partition("://")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        raise ConfigError(["storage.url: PostgreSQL storage is not available in this version"])
    if scheme != "sqlite" or not sep:
        raise ConfigError(["storage.url: expected sqlite:///relative/path, sqlite:////absolute/path or postgresql://..."])
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
