"""The fake destination: an aiohttp endpoint that answers 200 and counts what the gateway delivers.

It keeps counts and the arrival times of the first and last delivery, not the
bodies, so a long run does not grow it. A body that is a JSON array (an
``http_request`` tag with ``batch_size``) counts as that many items. ``GET /_stats`` returns the counts.
It runs on the load-generator core, so the gateway's core does only the
gateway's work.

    python -m bench.sink --port 8091
"""

from __future__ import annotations

import argparse
import time

import orjson
from aiohttp import web

_OK = b'{"ok": true}'


class Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.items = 0
        self.bytes = 0
        self.first: float | None = None  # time.time() of the first delivery
        self.last: float | None = None

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.requests += 1
        self.items += len(orjson.loads(body)) if body[:1] == b"[" else 1
        self.bytes += len(body)
        return web.Response(body=_OK, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        body = {"requests": self.requests, "items": self.items, "bytes": self.bytes, "first": self.first, "last": self.last}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def make_app() -> web.Application:
    counter = Counter()
    app = web.Application()
    app.router.add_get("/_stats", counter.stats)
    app.router.add_route("*", "/{tail:.*}", counter.receive)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
