"""The http_request destination: one request per item, or per batch of items, to the URL of the tag that built it.

There is no ``destinations.http_request`` section: URL, method, headers and
mode are all on the tag, found by the item's batch key (the tag's name).

How an answer is read, following the usual webhook conventions:
- 2xx: delivered.
- 408, 425, 429 and 5xx: retry later, no sooner than ``Retry-After`` (seconds
  or an HTTP date; RFC 9110 section 10.2.3).
- any other status, redirects included (they are not followed: a moved
  endpoint is a config change, not something to guess): permanent failure,
  dead-lettered with code ``http_<status>`` and at most 200 characters of the
  answer, which may echo what was sent.
- no connection, or no answer in time: retry, ``connection_error`` / ``timeout``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, cast

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import sender
from gateway.delivery import Result
from gateway.sender import OutgoingRequest, PendingItem, SenderContext
from gateway.tag import TagConfig
from tags import http_request

Config = None



@dataclass(frozen=True, slots=True)
class _Target:
    method: str
    url: str
    headers: dict[str, str]
    mode: Literal["live", "dry_run"]
    batch_size: int  # 1: one event per request, as a JSON object; more: up to this many, as a JSON array
    # The URL parsed and the headers in aiohttp's own form, made once per tag rather than on every request.
    parsed_url: URL
    request_headers: CIMultiDictProxy[str]
    secret_headers: tuple[str, ...]  # the config's own, on top of the ones gateway.secrets_mask knows


class Sender(sender.Sender):
    destination = "http_request"
    max_batch_size = 1

    def __init__(self, config: None, tags: list[TagConfig], ctx: SenderContext) -> None:
        super().__init__(config, tags, ctx)
        self._targets = {tag.name: _target(tag) for tag in tags}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.ctx.request_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        target = self._targets.get(batch_key)
        if target is None:
            # The tag was removed from the config; replay the dead letters once it is back.
            return [Result.permanent("unknown_tag", "no http_request tag with this name in the config")] * len(items)
        size = target.batch_size
        results: list[Result] = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            # The items' JSON as the outbox stored it: one object, or an array of them (what orjson.dumps of
            # the list writes, byte for byte), never parsed and encoded again.
            body = chunk[0].raw if size == 1 else b"[" + b",".join([item.raw for item in chunk]) + b"]"
            results.extend([await self._post(target, batch_key, body, len(chunk))] * len(chunk))
        return results

    def batch_size(self, batch_key: str) -> int:
        target = self._targets.get(batch_key)
        return target.batch_size if target is not None else 1

    async def _post(self, target: _Target, batch_key: str, body: bytes, item_count: int) -> Result:
        """One request; its answer is the result of every item in ``body``."""
        if target.mode == "dry_run":
            request = OutgoingRequest(target.method, target.url, target.headers, body, target.secret_headers)
            await self.ctx.record_dry_run(self.destination, batch_key, request, item_count)
            return Result.delivered("dry_run")
        if self._session is None:
            raise RuntimeError("http_request sender used before start()")
        if self.ctx.observe is not None:
            self.ctx.observe(OutgoingRequest(target.method, target.url, target.headers, body, target.secret_headers))
        try:
            async with self._session.request(
                target.method, target.parsed_url, headers=target.request_headers, data=body, allow_redirects=False
            ) as response:
                return await sender.http_result(response, self.ctx.now(), target.secret_headers)
        except asyncio.TimeoutError:
            return Result.retry("timeout", "no answer within delivery.request_timeout")
        except aiohttp.ClientError as exc:
            return Result.retry("connection_error", type(exc).__name__)


def _target(tag: TagConfig) -> _Target:
    config = cast(http_request.Config, tag)
    headers = dict(config.headers)
    if not any(name.lower() == "content-type" for name in headers):
        headers = {"Content-Type": "application/json", **headers}
    return _Target(config.method, config.url, headers, config.mode, config.batch_size, URL(config.url),
                   CIMultiDictProxy(CIMultiDict(headers)), tuple(config.secret_headers))
