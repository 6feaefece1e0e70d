"""The GA4 destination: gtag.js hits to ``{collect_base}/g/collect``, refunds to ``{collect_base}/mp/collect``.

Two kinds of batch, told apart by their key:

- ``collect:<measurement id>``: hits built by the ``ga4`` tag. Events that
  share their page-level parameters and user agent (one page's batch) go in
  one POST, up to 25, as gtag.js batches them: the shared parameters in the
  query string, one event per body line. A single event is a POST with all
  its parameters in the query and no body, as gtag.js sends one. The
  visitor's user agent is the request's ``User-Agent``.
- ``mp:<measurement id>``: Measurement Protocol events built by
  ``ga4_refund``, one JSON request each, with the tag's ``api_secret`` in the
  query. ``validate_only`` sends them to Google's validation server
  (``/debug/mp/collect``) instead, which records nothing and says what is
  wrong: a message there fails the item for good with its validation code.

Google answers 2xx to anything it received, even what it then drops
(https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference:
"If you don't get a 2xx status code, correct any errors in your HTTP request.
Don't retry the same request"). So 2xx is delivered; 408, 425, 429 and 5xx
(Google's servers, not the request) are retried no sooner than Retry-After;
any other status fails the request's items for good. No answer in time, or
no connection: retried.

The requests of one batch go out concurrently (at most 16 at a time). The
ones still unfinished at 90% of ``delivery.request_timeout`` (the
dispatcher's limit for a batch) are cancelled and retried, and only they:
GA4 de-duplicates nothing, so a hit that arrived must not be sent again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any, Coroutine, Literal, cast
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import sender
from gateway.delivery import Result
from gateway.durations import Duration
from gateway.sender import OutgoingRequest, PendingItem, SenderContext
from gateway.tag import TagConfig
from tags import _ga4, ga4_refund

log = logging.getLogger("gateway.ga4")

_CONCURRENT_REQUESTS = 16
_COLLECT_HEADERS = {"Content-Type": "text/plain;charset=UTF-8"}
_MP_HEADERS = {"Content-Type": "application/json"}
_MESSAGE_CHARS = 300


class Config(BaseModel):
    """The ``destinations.ga4`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["live", "dry_run"] = Field(
        "live", description="live sends; dry_run records each request it would send (API secrets masked) instead."
    )
    collect_base: str = Field(
        _ga4.DEFAULT_COLLECT_BASE,
        description="Where hits (/g/collect) and Measurement Protocol events (/mp/collect) go; "
                    "https://www.google-analytics.com outside the EU, ${GA4_COLLECT_BASE} for a test server.",
    )
    validate_only: bool = Field(
        False, description="Send Measurement Protocol events to Google's validation server (/debug/mp/collect) "
                           "instead: nothing is recorded, and an event Google finds wrong is dead-lettered with its "
                           "validation code.",
    )
    flush_interval: Duration = Field(
        timedelta(0), description="How long hits may wait for others of their page before they are sent.",
    )
    max_batch_size: int = Field(100, ge=1, le=1000, description="Items claimed at once per measurement id; their "
                                "requests go 16 at a time and must finish within delivery.request_timeout.")

    @field_validator("collect_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return sender.base_url(value)


class Sender(sender.Sender):
    destination = _ga4.DESTINATION

    def __init__(self, config: Config, tags: list[TagConfig], ctx: SenderContext) -> None:
        super().__init__(config, tags, ctx)
        self.max_batch_size = config.max_batch_size
        self.flush_interval = config.flush_interval.total_seconds()
        self._secrets = {t.name: cast(ga4_refund.Config, t).api_secret for t in tags if t.type == "ga4_refund"}
        self._mp_path = _ga4.MP_DEBUG_PATH if config.validate_only else _ga4.MP_PATH
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(_CONCURRENT_REQUESTS)

    async def start(self) -> None:
        if self._session is None:
            # No User-Agent of our own: each hit carries the visitor's, or none.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.ctx.request_timeout),
                                                  skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        if batch_key.startswith("mp:"):
            groups = [([index], self._send_mp(batch_key, pending)) for index, pending in enumerate(items)]
        else:
            groups = [(indexes, self._post(batch_key, request, request, len(indexes)))
                      for indexes, request in _collect_requests(self.config.collect_base, items)]
        return await self._within_deadline(groups, len(items))

    async def _within_deadline(self, groups: list[tuple[list[int], Coroutine[Any, Any, Result]]], count: int) -> list[Result]:
        """Each request's result for its items; what has not finished by 90% of the batch's time is retried.

        The dispatcher gives a whole batch ``delivery.request_timeout``; a batch it
        times out is retried whole, and GA4 would count the hits that did arrive
        twice (it de-duplicates nothing). So the requests that finished keep their
        results, and only the unfinished are cancelled and retried.
        """
        results: list[Result] = [Result.retry("unfinished", "no answer before the batch's deadline; sent again later")] * count
        tasks = {asyncio.ensure_future(request): indexes for indexes, request in groups}
        if not tasks:
            return results
        done, pending = await asyncio.wait(tasks, timeout=0.9 * self.ctx.request_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("ga4 requests unfinished at the batch's deadline", extra={"requests": len(pending)})
        for task in done:
            for index in tasks[task]:
                results[index] = task.result()
        return results

    async def _send_mp(self, batch_key: str, pending: PendingItem) -> Result:
        secret = self._secrets.get(pending.tag)
        if not secret:
            return Result.permanent("unknown_tag", "no ga4_refund tag with this name (and its api_secret) in the config")
        body = dict(pending.item.get("body") or {})
        oldest = self.ctx.now() - _ga4.MP_MAX_BACKDATE + timedelta(minutes=5)
        if isinstance(body.get("timestamp_micros"), int) and body["timestamp_micros"] < oldest.timestamp() * 1_000_000:
            del body["timestamp_micros"]  # GA4 drops events backdated further; without it the refund counts today
        measurement_id = quote(str(pending.item.get("measurement_id", "")), safe="")
        url = f"{self.config.collect_base}{self._mp_path}?measurement_id={measurement_id}&api_secret="
        payload = orjson.dumps(body)
        request = OutgoingRequest("POST", url + quote(secret, safe=""), dict(_MP_HEADERS), payload)
        shown = OutgoingRequest("POST", url + "***", dict(_MP_HEADERS), payload)
        return await self._post(batch_key, request, shown, 1, validation=self.config.validate_only)

    async def _post(self, batch_key: str, request: OutgoingRequest, shown: OutgoingRequest, item_count: int,
                    validation: bool = False) -> Result:
        """One request; ``shown`` is what dry-run records and the debugger see (secrets masked)."""
        if self.config.mode == "dry_run":
            await self.ctx.record_dry_run(self.destination, batch_key, shown, item_count)
            return Result.delivered("dry_run")
        if self._session is None:
            raise RuntimeError("ga4 sender used before start()")
        if self.ctx.observe is not None:
            self.ctx.observe(shown)
        async with self._limit:
            try:
                async with self._session.post(request.url, data=request.body, headers=request.headers,
                                              allow_redirects=False) as response:
                    if validation:
                        return await _validation_result(response, self.ctx.now())
                    return await sender.http_result(response, self.ctx.now())
            except asyncio.TimeoutError:
                return Result.retry("timeout", "no answer within delivery.request_timeout")
            except aiohttp.ClientError as exc:
                return Result.retry("connection_error", type(exc).__name__)


def _collect_requests(base: str, items: list[PendingItem]) -> list[tuple[list[int], OutgoingRequest]]:
    """The POSTs for a batch of hits: one per page (same query and user agent), 25 events at most each."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, pending in enumerate(items):
        item = pending.item
        groups.setdefault((str(item.get("query", "")), str(item.get("user_agent", ""))), []).append(index)
    requests = []
    for (query, agent), indexes in groups.items():
        headers = dict(_COLLECT_HEADERS)
        if agent:
            headers["User-Agent"] = agent
        for start in range(0, len(indexes), _ga4.MAX_LINES_PER_REQUEST):
            chunk = indexes[start : start + _ga4.MAX_LINES_PER_REQUEST]
            lines = [str(items[i].item.get("line", "")) for i in chunk]
            if len(lines) == 1:
                url, body = f"{base}{_ga4.COLLECT_PATH}?{query}&{lines[0]}", b""
            else:
                url, body = f"{base}{_ga4.COLLECT_PATH}?{query}", "\r\n".join(lines).encode("utf-8")
            requests.append((chunk, OutgoingRequest("POST", url, headers, body)))
    return requests


async def _validation_result(response: aiohttp.ClientResponse, now: datetime) -> Result:
    """The validation server's answer: ``{"validationMessages": [{fieldPath, description, validationCode}]}``."""
    if not 200 <= response.status < 300:
        return await sender.http_result(response, now)
    try:
        answer: Any = orjson.loads(await response.read())
    except orjson.JSONDecodeError:
        return Result.retry("validation_unreadable", "the validation server's answer is not JSON")
    messages = answer.get("validationMessages") if isinstance(answer, dict) else None
    if not messages:
        return Result.delivered("validated")
    first = messages[0] if isinstance(messages[0], dict) else {}
    code = str(first.get("validationCode") or "VALIDATION")
    text = "; ".join(f"{m.get('fieldPath', '')}: {m.get('description', '')}" for m in messages if isinstance(m, dict))
    return Result.permanent(code, " ".join(text.split())[:_MESSAGE_CHARS])
