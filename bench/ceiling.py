"""The ceiling: a bare Starlette app answering 204, on exactly the uvicorn settings of ``gateway serve``.

It answers every path the benchmark sends to (reading a POST's body), so that
each scenario can be compared with the same request answered by nothing.

Whatever the gateway does per request (parse, consent, rules, tags, the
durable commit, metrics, the dispatcher sharing the core) shows as the
distance from this app's figures. The uvicorn arguments are those of
``gateway.cli.cmd_serve`` with one worker; keep them in step.

    python -m bench.ceiling --port 8090
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def collect(request: Request) -> Response:
    if request.method == "POST":
        await request.body()  # a collector reads what it is sent; so does the ceiling
    return Response(status_code=204)


async def healthz(request: Request) -> Response:
    return Response(b'{"status": "ok"}', media_type="application/json")


# The gateway's paths the benchmark sends to (GA4, the JSON beacon, the order webhook), all answered alike.
app = Starlette(routes=[
    Route("/g/collect", collect, methods=["GET", "POST"]),
    Route("/collect", collect, methods=["POST"]),
    Route("/webhooks/order-update", collect, methods=["POST"]),
    Route("/healthz", healthz),
])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
