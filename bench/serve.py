"""``gateway serve`` with the dispatcher off: what the request path costs on its own.

    python -m bench.serve --config examples/container.yaml --port 8090
    python -m bench.serve --until parse --config examples/container.yaml --port 8090

Everything is ``gateway serve`` itself (``gateway.cli.cmd_serve``: its uvicorn
settings, its logging, ``gc.freeze``), except that the app is built with
``create_app(..., run_dispatcher=False)``, the switch the tests use. The
instruction count (``bench/instructions.py``) runs the sample container this
way, so that the figure is the request path's and not the dry-run recorder's.

``--until`` cuts the request path short after a stage, for the profile
(``bench/stages.py``): ``front`` answers as soon as the client is chosen and
the request read (the client's ``parse`` returns no event), ``parse`` runs the
client but not the pipeline, ``pipeline`` runs consent, rules and tags but
commits nothing; ``commit`` (the default) is the whole path.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

from starlette.applications import Starlette

import gateway.app
from gateway.cli import main as gateway_main
from gateway.client import ClientResult
from gateway.pipeline import Outcome

MARK = "bench.serve: dispatcher off"  # written to stderr when the app is built; the harness looks for it
STAGES = ("front", "parse", "pipeline", "commit")


def _no_event(raw: Any, config: Any) -> ClientResult:
    return ClientResult([], status=204)


def _no_deliveries(events: Any, client: str = "") -> Outcome:
    return Outcome()


async def _no_commit(deliveries: Any, now: Any, request_key: str | None = None) -> bool:
    return True


def cut(app: Starlette, until: str) -> None:
    """Stop the request path after the stage ``until``, through the seams ``Gateway._handle`` calls."""
    gw = app.state.gateway
    if until == "front":
        for entry in gw.container.clients:
            entry.module.parse = _no_event
    if until in ("front", "parse"):
        gw.pipeline.process = _no_deliveries
    if until in ("front", "parse", "pipeline"):
        gw.storage.enqueue = _no_commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--until", choices=STAGES, default="commit", help="the last stage that runs (default: all)")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    create_app = gateway.app.create_app

    def without_dispatcher(*a: Any, **kw: Any) -> Starlette:
        print(f"{MARK}, until {args.until}", file=sys.stderr, flush=True)
        app = create_app(*a, **{**kw, "run_dispatcher": False})
        cut(app, args.until)
        return app

    gateway.app.create_app = functools.update_wrapper(without_dispatcher, create_app)
    # inline: this process builds the app (with the switch above), and no dispatcher process is started.
    return gateway_main(["serve", "--dispatcher", "inline", *rest])


if __name__ == "__main__":
    raise SystemExit(main())
