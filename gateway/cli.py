"""The ``gateway`` command: serve, validate, and the operator's storage commands (``db migrate`` among them).

Every failure an operator can cause (a bad file, a storage that cannot be
opened, a database that is not there) ends in one line per problem on
stderr and exit status 1, never a traceback: ``main`` turns the gateway's
own errors into lines, and anything else into one line that names it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from datetime import datetime, timezone
from typing import Any, Sequence

import orjson

from gateway import secrets_mask
from gateway.cli_context import load_container as _load
from gateway.cli_context import with_storage as _with_storage
from gateway.config import CONFIG_ENV, Container
from gateway.dispatch_link import DISPATCH_DIR_ENV
from gateway.errors import ConfigError
from gateway.metrics import MULTIPROC_ENV
from gateway.order_report import order_report
from gateway.storage import PostgresStorage, open_storage
from gateway.storage import sqlite as sqlite_storage
from gateway.storage.base import Storage, StorageUnavailable
from gateway.vendor_requests import request_report

DEFAULT_PORT = 8080
# The dispatcher process yields the CPU to the HTTP workers when both want it: a request waits for no batch.
DISPATCHER_NICE = 5
OWN_METRICS_DIR_ENV = "GATEWAY_OWN_METRICS_DIR"  # the metrics directory serve made, and removes when it stops


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=os.environ.get(CONFIG_ENV),
        help=f"container file (default: ${CONFIG_ENV})",
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


class _Signalled(Exception):
    """SIGTERM or SIGINT reached ``gateway serve`` outside uvicorn's own handlers (or as uvicorn re-raised it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def dispatcher_mode(choice: str, container: Container, cpus: int | None = None) -> str:
    """``process`` or ``inline``; ``auto`` is ``process`` where it can have a core of its own.

    ``auto`` is ``inline`` when the debugger is on (it records delivery attempts in the traces it keeps in
    the HTTP worker's memory) and when this process may run on one CPU only (``cpus``: the CPUs it may
    use, read from its affinity when not given): on one core the dispatcher process cost more than it
    saved, p99 at half the maximum 12-25 ms against 9-15 ms inline (BENCHMARKS.md, "p99 latency:
    deliveries in a process of their own").
    """
    if choice != "auto":
        return choice
    if container.file.debug.enabled:
        return "inline"
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return "process" if cpus >= 2 else "inline"


def cmd_serve(args: argparse.Namespace) -> int:
    container = _load(args.config, serving=True)  # refuse to start on a bad file, with every error listed
    # Open (and migrate) the storage once before uvicorn starts: a storage that cannot be opened is
    # then one line and exit status 1 here, not a traceback from inside the server's start-up.
    asyncio.run(_with_storage(container, _nothing))
    mode = dispatcher_mode(args.dispatcher, container)
    if (args.workers > 1 or mode == "process") and not os.environ.get(MULTIPROC_ENV):
        # Each process (workers, dispatcher) writes its metrics here; /metrics adds them up.
        os.environ[MULTIPROC_ENV] = os.environ[OWN_METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="gateway-metrics-")
        if args.workers == 1:
            # This process serves too, and prometheus-client chose where its values live when it was
            # imported, before the variable was set: start again, from the top, with it set (same PID).
            os.execv(sys.executable, [sys.executable, "-m", "gateway.cli", *args.argv])
    import uvicorn

    from gateway.server import raise_open_file_limit

    os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    from gateway.logs import configure_logging

    configure_logging(args.log_level)
    soft, hard = raise_open_file_limit()
    logging.getLogger("gateway.server").info("open file limit", extra={"soft": soft, "hard": hard})
    supervisor, runtime_dir = None, None
    if mode == "process":
        from gateway.dispatch_supervisor import DispatcherSupervisor

        runtime_dir = tempfile.mkdtemp(prefix="gateway-dispatch-")
        os.environ[DISPATCH_DIR_ENV] = runtime_dir
        argv = [sys.executable, "-m", "gateway.cli", "dispatch", "--config", os.environ[CONFIG_ENV],
                "--runtime-dir", runtime_dir, "--parent-pid", str(os.getpid()), "--nice", str(args.dispatcher_nice), "--batch"]
        if args.log_level:
            argv += ["--log-level", args.log_level]
        supervisor = DispatcherSupervisor(argv, metrics_dir=os.environ.get(MULTIPROC_ENV))
    else:
        os.environ.pop(DISPATCH_DIR_ENV, None)
    logging.getLogger("gateway.server").info("dispatcher", extra={"mode": mode})
    caught: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        caught.append(signum)
        raise _Signalled(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)} if supervisor else {}
    try:
        if supervisor is not None:
            supervisor.start()
        _run_uvicorn(uvicorn, args, container)
    except _Signalled:
        pass
    finally:
        if supervisor is not None:
            supervisor.stop()
        if runtime_dir is not None:
            shutil.rmtree(runtime_dir, ignore_errors=True)
        own = os.environ.get(OWN_METRICS_DIR_ENV)
        if own and own == os.environ.get(MULTIPROC_ENV):  # made by this serve, which all its processes ended
            shutil.rmtree(own, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for sig in caught[:1]:  # exit as the signal says, as uvicorn alone does (-15 for SIGTERM, 130 for SIGINT)
        signal.raise_signal(sig)
    return 0


def _run_uvicorn(uvicorn: Any, args: argparse.Namespace, container: Any) -> None:
    from gateway.server import uvicorn_options

    uvicorn.run(
        "gateway.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,
        # X-Forwarded-For is read by the gateway itself, from server.trusted_proxies only;
        # uvicorn must not rewrite the peer address first.
        proxy_headers=False,
        **uvicorn_options(container),
    )


def cmd_dispatch(args: argparse.Namespace) -> int:
    """The dispatcher alone: what ``gateway serve`` starts as its child, or a delivery process of its own."""
    container = _load(args.config)
    from gateway.dispatch_process import main as dispatch_main
    from gateway.logs import configure_logging

    configure_logging(args.log_level)
    return dispatch_main(container, args.runtime_dir, args.parent_pid, args.nice, args.batch)


async def _nothing(storage: Storage) -> None:
    return None


def cmd_validate(args: argparse.Namespace) -> int:
    path = args.file or args.config
    container = _load(path, serving=True)
    for warning in container.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    off = f", {len(container.switched_off)} switched off" if container.switched_off else ""
    print(
        f"{path}: ok ({_plural(len(container.clients), 'client')}{off}, "
        f"{_plural(len(container.triggers), 'trigger')}, {_plural(len(container.tags), 'tag')})"
    )
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    container = _load(args.config)
    if args.action == "list":
        letters = asyncio.run(_with_storage(container, lambda s: s.list_dead_letters(args.limit)))
        _print_json([
            {"id": d.id, "destination": d.destination, "tag": d.tag, "batch_key": d.batch_key,
             "idempotency_key": d.idempotency_key, "attempts": d.attempts, "code": d.code,
             "message": secrets_mask.mask_text(d.message) if d.message else d.message,
             "created_at": d.created_at, "failed_at": d.failed_at}
            for d in letters
        ])
        return 0
    ids = args.id or None
    now = datetime.now(timezone.utc)
    count = asyncio.run(_with_storage(container, lambda s: s.replay_dead_letters(ids, now)))
    print(f"replayed {count} dead letter(s)")
    return 0


def cmd_deliveries(args: argparse.Namespace) -> int:
    """Dry-run records, credentials masked again on display: rows an older version stored were kept in clear."""
    container = _load(args.config)
    records = asyncio.run(_with_storage(container, lambda s: s.list_dry_runs(args.last)))
    _print_json([
        {"id": r.id, "destination": r.destination, "batch_key": r.batch_key, "items": r.item_count,
         "recorded_at": r.recorded_at, "request": secrets_mask.mask_record(r.request)}
        for r in records
    ])
    return 0


def cmd_requests(args: argparse.Namespace) -> int:
    """Requests a vendor processes later (Data Manager request ids) and what it said about them."""
    container = _load(args.config)
    tracked = asyncio.run(_with_storage(container, lambda s: s.list_requests(args.last)))
    _print_json([request_report(t) for t in tracked])
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    """Create or migrate the schema (what every start does too) and say which version it is at."""
    container = _load(args.config)
    storage = open_storage(container.file.storage)
    asyncio.run(_open_and_close(storage))
    if isinstance(storage, PostgresStorage):
        version, ran = storage.schema_version, storage.migrations_run
        print(f"schema at version {version} " + (f"({ran} migration(s) applied)" if ran else "(up to date)"))
    else:  # SQLite migrates to the newest version it knows inside open()
        print(f"schema at version {len(sqlite_storage.MIGRATIONS)}")
    return 0


async def _open_and_close(storage: Storage) -> None:
    await storage.open()
    await storage.close()


def cmd_orders(args: argparse.Namespace) -> int:
    container = _load(args.config)
    history = asyncio.run(_with_storage(container, lambda s: s.order_history(args.order_id)))
    if history.order is None and not (history.held or history.deliveries or history.changes):
        print(f"gateway: no order {args.order_id} in the ledger", file=sys.stderr)
        return 1
    _print_json(order_report(history))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="Server-side tagging gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    _config_arg(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default=None)
    serve.add_argument("--graceful-timeout", type=int, default=20, help="seconds to finish in-flight requests on SIGTERM")
    serve.add_argument(
        "--dispatcher", choices=["auto", "process", "inline"], default="auto",
        help="where deliveries run: process (a dispatcher process of its own, started and restarted by serve),"
             " inline (on each HTTP worker's event loop); auto (default): process where serve may use two CPUs or"
             " more, inline on one CPU or when debug.enabled")
    serve.add_argument("--dispatcher-nice", type=int, default=DISPATCHER_NICE,
                       help=f"how much lower the dispatcher process's CPU priority is (default {DISPATCHER_NICE})")
    serve.set_defaults(func=cmd_serve)

    dispatch = sub.add_parser("dispatch", help="run the dispatcher alone (gateway serve starts one as its child)")
    _config_arg(dispatch)
    dispatch.add_argument("--runtime-dir", default=None,
                          help="directory of the wake-up socket and heartbeat shared with serve's HTTP workers")
    dispatch.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    dispatch.add_argument("--nice", type=int, default=0, help="lower the process's CPU priority by this much")
    dispatch.add_argument("--batch", action="store_true",
                          help="schedule it as SCHED_BATCH: its wake-ups never preempt the HTTP workers (Linux)")
    dispatch.add_argument("--log-level", default=None)
    dispatch.set_defaults(func=cmd_dispatch)

    validate = sub.add_parser("validate", help="check a container file and print every error")
    validate.add_argument("file", nargs="?", help="container file (or --config)")
    _config_arg(validate)
    validate.set_defaults(func=cmd_validate)

    dead = sub.add_parser("dead-letters", help="list or replay items that could not be delivered")
    dead_sub = dead.add_subparsers(dest="action", required=True)
    dl_list = dead_sub.add_parser("list")
    _config_arg(dl_list)
    dl_list.add_argument("--limit", type=int, default=100)
    dl_replay = dead_sub.add_parser("replay")
    _config_arg(dl_replay)
    dl_replay.add_argument("--id", type=int, action="append", help="dead letter id (repeatable); default: all")
    for p in (dl_list, dl_replay):
        p.set_defaults(func=cmd_dead_letters)

    deliveries = sub.add_parser("deliveries", help="show recorded dry-run requests, and vendor requests processed later")
    deliveries_sub = deliveries.add_subparsers(dest="action", required=True)
    d_list = deliveries_sub.add_parser("list")
    _config_arg(d_list)
    d_list.add_argument("--last", type=int, default=10)
    d_list.set_defaults(func=cmd_deliveries)
    d_requests = deliveries_sub.add_parser(
        "requests", help="requests a vendor processes later (Data Manager request ids) with their status and errors")
    _config_arg(d_requests)
    d_requests.add_argument("--last", type=int, default=20)
    d_requests.set_defaults(func=cmd_requests)

    db = sub.add_parser("db", help="the storage's schema")
    db_sub = db.add_subparsers(dest="action", required=True)
    db_migrate = db_sub.add_parser(
        "migrate", help="create or migrate the schema and print its version (every start does this too)"
    )
    _config_arg(db_migrate)
    db_migrate.set_defaults(func=cmd_db_migrate)

    orders = sub.add_parser("orders", help="show what the order ledger holds for an order")
    orders_sub = orders.add_subparsers(dest="action", required=True)
    o_show = orders_sub.add_parser("show", help="the ledger entry, its refunds and every delivery made for it")
    o_show.add_argument("order_id")
    _config_arg(o_show)
    o_show.set_defaults(func=cmd_orders)

    from gateway.debug.commands import add_commands as add_debug_commands  # explain, resend

    add_debug_commands(sub, _config_arg)
    reference = sub.add_parser("config-reference", help="print the configuration reference (markdown) from the config models")
    reference.set_defaults(func=cmd_config_reference)
    return parser


def cmd_config_reference(args: argparse.Namespace) -> int:
    from gateway.reference import config_reference

    print(config_reference())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what `serve` starts again with (cmd_serve)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # found after the file loaded: the storage's directory, say
        for line in exc.errors:
            print(f"gateway: {line}", file=sys.stderr)
    except StorageUnavailable as exc:  # never the URL: it may hold a password
        print(f"gateway: cannot open the storage: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback; GATEWAY_LOG_LEVEL=debug shows it
        print(f"gateway: unexpected error ({type(exc).__name__}): {_first_line(exc)}", file=sys.stderr)
        if os.environ.get("GATEWAY_LOG_LEVEL", "").lower() == "debug":
            import traceback

            traceback.print_exc()
    return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


if __name__ == "__main__":
    raise SystemExit(main())
