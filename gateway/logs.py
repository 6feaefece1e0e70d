"""JSON log lines, one object per line, without personal data.

Call sites pass ids, codes and counts in ``extra``; this formatter copies
those onto the line. It never formats the event or request bodies: keeping
personal data out of logs is easiest when no code path ever hands it over.

Every line written while a collection request is handled carries its
``trace_id`` (the ``X-Gateway-Trace`` the client got back), read from a
context variable set by ``gateway.debug.middleware``, so one request's lines
can be found, and opened at ``/debug``, without any call site passing it.

Credentials are masked on every line (``gateway.secrets_mask``): a message or
field that holds a URL with ``user:password@`` or ``?api_key=``, an
``Authorization`` value or a vendor's answer echoing one is written masked,
whoever logged it (our code, aiohttp, uvicorn).
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone

import orjson

from gateway.debug.trace import TRACE_ID
from gateway.secrets_mask import mask_text, mask_tree

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_text(record.getMessage()),
        }
        trace_id = TRACE_ID.get()
        if trace_id is not None:
            line["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = _masked(key, value)
        if record.exc_info and record.exc_info[0] is not None:
            line["error_type"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


def _masked(key: str, value: object) -> object:
    """A field from ``extra``, its credentials masked; ids, codes and counts pass unchanged."""
    if isinstance(value, str):
        return mask_tree({key: value})[key]
    if isinstance(value, (dict, list)):
        return mask_tree(value)
    return value


def configure_logging(level: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("GATEWAY_LOG_LEVEL", "INFO")).upper())
    # uvicorn's own access log would duplicate our request metrics on the hot path.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
