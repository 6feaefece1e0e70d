"""Request headers straight from an ASGI scope, as the collection path and the debugger's middleware read them.

Its own module so that ``gateway.debug.middleware`` reads headers exactly as
``gateway.collect`` does without importing it: ``collect`` puts that
middleware in front of its routes when the debugger is on.
"""

from __future__ import annotations

from starlette.types import Scope

_FORWARDED_FOR = "x-forwarded-for"


def scope_headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; of a repeated header the first wins, as in Starlette's ``Headers.get``.

    ``X-Forwarded-For`` is the exception: its lines are one list, in order
    (RFC 9110, 5.3). A proxy that appends its own line after the one the
    client wrote must have its line read, or the client picks its address.
    """
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
        elif key == _FORWARDED_FOR:
            headers[key] += "," + value.decode("latin-1")
    return headers
