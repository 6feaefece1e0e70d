"""The ceiling: a bare Starlette app answering 204, on exactly the uvicorn settings of ``gateway serve``.

It answers every path the benchmark sends to (reading a POST's body), so that
each scenario can be compared with the same request answered by nothing.

Whatever the gateway does per request (parse, consent, rules, tags, the
durable commit, metrics, the dispatcher sharing the core) shows as the
distance from this app's figures. The uvicorn arguments are those of
``gateway.cli.cmd_serve`` with one worker; keep them in step.

    python -m bench.ceiling --port 8090
    python -m bench.ceiling --port 8090 --asgi   # no Starlette: uvicorn, httptools and uvloop alone
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


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


async def bare_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """No framework at all: what uvicorn, httptools and uvloop cost on their own (``--asgi``)."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):
            pass
    if scope["path"] == "/healthz":
        body = b'{"status": "ok"}'
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--asgi", action="store_true", help="serve a bare ASGI function instead of Starlette")
    args = parser.parse_args()
    uvicorn.run(
        bare_asgi if args.asgi else app,
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
