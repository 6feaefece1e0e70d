"""The debugger's commands: ``gateway explain FILE`` and ``gateway resend FILE``.

``explain`` is the page's Explain tab on the command line: FILE is a request
in the shape of the GA4 fixtures (method, path, query, headers, body); the
output is the trace the request would leave with the current container, as
JSON, personal data masked as on the page. Nothing is stored or sent.

``resend`` does the same and records the dry-run requests in the storage's
dry-run table (``gateway deliveries list`` shows them): the command-line side
of the page's "Resend to dry-run destinations". Dead letters are replayed
with ``gateway dead-letters replay --id N``, which existed before.

Exit status: 0 with the explanation (a request the client would refuse is an
explanation too: its ``status`` and ``error`` say so), 2 when FILE cannot be
read as a request description.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

from gateway.cli_context import load_container, with_storage


def _read_spec(path: str) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise SystemExit(f"gateway: {path}: no such file") from None
    except orjson.JSONDecodeError as exc:
        print(f"gateway: {path}: not valid JSON ({exc})", file=sys.stderr)
        raise SystemExit(2) from None


def _print(trace: Any) -> None:
    sys.stdout.write(orjson.dumps(trace.to_json(), option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def cmd_explain(args: argparse.Namespace) -> int:
    from gateway.debug.explain import SpecError, explain

    container = load_container(args.config)
    spec = _read_spec(args.file)
    try:
        trace = asyncio.run(explain(container, spec))
    except SpecError as exc:
        print(f"gateway: {args.file}: {exc}", file=sys.stderr)
        return 2
    _print(trace)
    return 0


def cmd_resend(args: argparse.Namespace) -> int:
    from gateway.debug.explain import SpecError, explain

    container = load_container(args.config)
    spec = _read_spec(args.file)

    async def run(storage: Any) -> Any:
        async def record(destination: str, batch_key: str, request: Any, item_count: int) -> None:
            await storage.record_dry_run(destination, batch_key, request.for_record(), item_count,
                                         datetime.now(timezone.utc))

        return await explain(container, spec, also_record=record,
                             note=f"resend of {args.file} to dry-run destinations")

    try:
        trace = asyncio.run(with_storage(container, run))
    except SpecError as exc:
        print(f"gateway: {args.file}: {exc}", file=sys.stderr)
        return 2
    _print(trace)
    return 0


def add_commands(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``explain`` and ``resend`` to the ``gateway`` command's subparsers."""
    explain = sub.add_parser("explain", help="what the container would do with a request (nothing stored or sent)")
    explain.add_argument("file", help="a JSON request: method, path, query, headers, body (like the GA4 fixtures)")
    config_arg(explain)
    explain.set_defaults(func=cmd_explain)

    resend = sub.add_parser("resend", help="send a request's events to dry-run destinations (recorded, never sent)")
    resend.add_argument("file", help="a JSON request, as for explain")
    config_arg(resend)
    resend.set_defaults(func=cmd_resend)
