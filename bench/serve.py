"""``gateway serve`` with the dispatcher off: what the request path costs on its own.

    python -m bench.serve --config examples/container.yaml --port 8090

Everything is ``gateway serve`` itself (``gateway.cli.cmd_serve``: its uvicorn
settings, its logging, ``gc.freeze``), except that the app is built with
``create_app(..., run_dispatcher=False)``, the switch the tests use. The
instruction count (``bench/instructions.py``) runs the sample container this
way, so that the figure is the request path's and not the dry-run recorder's.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import gateway.app
from gateway.cli import main as gateway_main

MARK = "bench.serve: dispatcher off"  # written to stderr when the app is built; the harness looks for it


def main(argv: list[str] | None = None) -> int:
    create_app = gateway.app.create_app

    def without_dispatcher(*args: Any, **kwargs: Any) -> Any:
        print(MARK, file=sys.stderr, flush=True)
        return create_app(*args, **{**kwargs, "run_dispatcher": False})

    gateway.app.create_app = functools.update_wrapper(without_dispatcher, create_app)
    return gateway_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
