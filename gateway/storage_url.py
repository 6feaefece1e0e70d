"""``storage.url``: which backend and where, decided when the container is loaded.

``sqlite:///relative/path`` and ``sqlite:////absolute/path`` name a SQLite
file; a relative path is relative to the container file's directory (or to
the current directory for a container that is not a file), so every
``gateway`` command given the same ``--config`` opens the same database,
wherever it is run from. ``postgresql://`` (or ``postgres://``)
``user:password@host:port/database`` names a PostgreSQL database.

Checking the URL here, rather than when the storage is opened, lets
``gateway validate`` refuse what ``gateway serve`` could not start with.
Messages never repeat the URL: a PostgreSQL URL carries a password.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

FIELD = "storage.url"
DEFAULT_PORT = 5432


class StorageUrlError(ValueError):
    """The URL cannot name a storage; the message starts with what to fix."""


@dataclass(frozen=True, slots=True)
class SQLiteTarget:
    path: str

    def describe(self) -> str:
        return f"sqlite {self.path}"


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """A PostgreSQL URL and the parts an operator may see: never the password."""

    url: str
    host: str
    port: int
    database: str
    user: str

    def describe(self) -> str:
        return f'postgresql {self.host}:{self.port} (database "{self.database}", user "{self.user}")'


def parse_storage_url(url: str, base_dir: Path | None = None) -> SQLiteTarget | PostgresTarget:
    """The target ``url`` names; a relative SQLite path is joined to ``base_dir`` when one is given."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres") and sep:
        return _postgres(url)
    if scheme.startswith(("postgresql+", "postgres+")):
        raise StorageUrlError("expected postgresql://user:password@host:port/database, without a driver name")
    if scheme != "sqlite" or not sep:
        raise StorageUrlError("expected sqlite:///relative/path, sqlite:////absolute/path or postgresql://...")
    if not rest.startswith("/") or len(rest) < 2:
        raise StorageUrlError("expected sqlite:///relative/path or sqlite:////absolute/path")
    path = rest[1:]
    if path == ":memory:" or path.startswith("file:"):
        raise StorageUrlError("SQLite storage needs a file path (an in-memory database loses every event)")
    if base_dir is not None and not os.path.isabs(path):
        path = str(base_dir / path)
    return SQLiteTarget(path)


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"


def _postgres(url: str) -> PostgresTarget:
    if "#" in url:
        raise StorageUrlError("a postgresql:// URL has no #fragment (is a '#' in the password unescaped? write it as %23)")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise StorageUrlError("not a valid postgresql:// URL (check the host and port)") from None
    # What asyncpg falls back on for a part the URL leaves out (libpq's rules).
    user = unquote(parts.username or "") or os.environ.get("PGUSER") or _login()
    return PostgresTarget(
        url=url,
        host=parts.hostname or os.environ.get("PGHOST") or "localhost",
        port=port or int(os.environ.get("PGPORT") or DEFAULT_PORT),
        database=unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE") or user,
        user=user,
    )


def _login() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"


def storage_description(url: str) -> str:
    """The storage for a log line: the SQLite path, or PostgreSQL's host, port, database and user."""
    try:
        return parse_storage_url(url).describe()
    except StorageUrlError:
        return "(not a valid storage.url)"
