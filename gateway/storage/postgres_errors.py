"""What a failed connection to PostgreSQL means, in words an operator can act on.

asyncpg reports ``InvalidCatalogNameError`` or ``ConnectionRefusedError``
and nothing about where it tried. These messages name the host, port,
database and user (never the password, and never asyncpg's own text, which
can quote the URL) and say what to do next. The SQLSTATE codes are
PostgreSQL's (https://www.postgresql.org/docs/current/errcodes-appendix.html).
"""

from __future__ import annotations

import socket

import asyncpg

from gateway.storage.base import StorageUnavailable
from gateway.storage_url import PostgresTarget

# SQLSTATE -> what it means here and what to do.
_BY_CODE = {
    "28P01": "wrong password (28P01); check the password in storage.url or PGPASSWORD",
    "28000": "no such role, or pg_hba.conf has no entry for this client (28000); check the user and pg_hba.conf",
    "53300": "too many connections (53300); raise max_connections or lower storage.pool_size on every instance",
    "57P03": "the server is starting up or shutting down (57P03); the gateway tries again at its next start",
    "42501": "the user may not create the gateway's tables (42501); grant it CREATE on the database's public schema",
}


def connect_failure(exc: BaseException, target: PostgresTarget, timeout: float) -> StorageUnavailable:
    """A ``StorageUnavailable`` for an ``open()`` that failed with ``exc``."""
    where = f"{target.host}:{target.port}"
    who = f'database "{target.database}", user "{target.user}"'
    code = getattr(exc, "sqlstate", None)
    if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        return StorageUnavailable(
            f'postgresql: database "{target.database}" does not exist on {where} (user "{target.user}"); '
            f"create it first: createdb -h {target.host} -p {target.port} -U {target.user} {target.database}"
        )
    if code in _BY_CODE:
        return StorageUnavailable(f"postgresql: {where} refused the connection ({who}): {_BY_CODE[code]}")
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused; is PostgreSQL running and listening there?"
    elif isinstance(exc, socket.gaierror):
        reason = "the host name does not resolve; check the host in storage.url"
    elif isinstance(exc, TimeoutError):
        reason = f"no answer within {timeout:g}s (storage.command_timeout); check the host, port and firewall"
    elif isinstance(exc, OSError):
        reason = f"{exc.strerror or type(exc).__name__}; check the host and port"
    else:
        reason = type(exc).__name__ + (f" ({code})" if code else "")
    return StorageUnavailable(f"postgresql: cannot connect to {where} ({who}): {reason}")
