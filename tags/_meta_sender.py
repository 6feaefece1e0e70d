"""The Meta destination: batches of server events to ``POST {api_base}/{api_version}/{pixel_id}/events``.

Ref - https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api

One request carries up to 1000 events of one pixel, as JSON:
``{"data": [...], "access_token": ..., "test_event_code": ...}``. The token
travels in the body (Meta takes it as a body field or a query parameter),
where no proxy's access log sees it; dry-run records hold ``***`` instead.

Meta answers a request as a whole: one bad event fails all of them. So:

- An event older than 7 days (62 for ``physical_store``) or more than a
  minute in the future is never sent: it fails at once, permanently, with
  code ``event_time_out_of_range``, and the rest of the batch goes.
- When Meta refuses a batch for its data (code 100, invalid parameter), the
  batch is split in halves and each half sent again, down to single events,
  so the valid events still go and the bad ones fail with Meta's code and
  message. The two halves go in parallel: one bad event in 1000 costs 21
  requests in 11 rounds. A batch may make at most ``1 + 4 * ceil(log2(n))``
  requests and must finish within ``delivery.request_timeout`` (the
  dispatcher's limit for one batch); what is still unresolved then is retried
  later, and split again.
- Rate limits (codes 4, 17, 32, 341, 613, 80000-80014, HTTP 429) are retried
  after the time Meta's ``X-Business-Use-Case-Usage`` header names, else a
  minute; transient errors (codes 1, 2, ``is_transient``, HTTP 5xx, no
  answer) are retried with the dispatcher's backoff.
- An invalid or expired token (code 190, or 102) pauses the pixel: its
  items stay pending, ``gateway_destination_paused{destination="meta",
  reason="invalid_token"}`` is 1 and one error line is logged, until the token
  is replaced and the gateway restarted.
- A permission error, or a pixel the token cannot see (code 10, 200-299, 100
  with subcode 33), fails the batch permanently without splitting: it is the
  pixel, not an event. Dead letters can be replayed once it is fixed.
- Anything else fails permanently with Meta's code and message (the token
  masked, should Meta ever echo it).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway import metrics, sender
from gateway.delivery import Result
from gateway.durations import Duration
from gateway.sender import OutgoingRequest, PendingItem, SenderContext
from gateway.tag import TagConfig
from tags import _meta

log = logging.getLogger("gateway.meta")

_HEADERS = {"Content-Type": "application/json"}


class Config(BaseModel):
    """The ``destinations.meta`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["live", "dry_run"] = Field(
        "live", description="live sends; dry_run records each request it would send (token masked) instead."
    )
    api_base: str = Field(
        _meta.DEFAULT_API_BASE, description="Graph API base URL; override with ${META_API_BASE} to point at a test server."
    )
    api_version: str = Field(
        _meta.DEFAULT_API_VERSION, pattern=r"^v\d+\.\d+$",
        description="Graph API version, pinned (e.g. v27.0); Meta retires each Marketing API version about a year "
                    "after its release, so move to the newest when one comes out.",
    )
    access_token: str = Field(
        "", description="Conversions API access token (Events Manager > pixel > Settings); required in live mode. "
                        "Use ${META_ACCESS_TOKEN}: it is a secret.",
    )
    test_event_code: str | None = Field(
        None, description="Sends every event to Events Manager's Test Events tab under this code. Remove in production: "
                          "test events still count.",
    )
    flush_interval: Duration = Field(
        timedelta(seconds=1), description="How long a pixel's incomplete batch may wait to fill before it is sent."
    )
    max_batch_size: int = Field(
        _meta.MAX_EVENTS_PER_REQUEST, ge=1, le=_meta.MAX_EVENTS_PER_REQUEST,
        description="Events per request, at most 1000 (Meta's limit).",
    )

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return sender.base_url(value)

    @model_validator(mode="after")
    def _token_when_live(self) -> "Config":
        if self.mode == "live" and not self.access_token.strip():
            raise ValueError("access_token is required in live mode")
        return self


class Sender(sender.Sender):
    destination = _meta.DESTINATION

    def __init__(self, config: Config, tags: list[TagConfig], ctx: SenderContext) -> None:
        super().__init__(config, tags, ctx)
        self.max_batch_size = config.max_batch_size
        self.flush_interval = config.flush_interval.total_seconds()
        self._token = config.access_token.strip()
        self._paused: set[str] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.ctx.request_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def paused(self, batch_key: str) -> bool:
        return batch_key in self._paused

    async def send(self, batch_key: str, items: list[PendingItem]) -> list[Result]:
        results: list[Result | None] = [None] * len(items)
        now = self.ctx.now()
        sendable: list[int] = []
        for index, pending in enumerate(items):
            problem = _meta.event_time_problem(pending.item.get("event_time"), pending.item.get("action_source"), now)
            if problem is None:
                sendable.append(index)
            else:
                results[index] = Result.permanent("event_time_out_of_range", problem)
        if sendable and self.config.mode == "dry_run":
            request = self._request(batch_key, [items[i].item for i in sendable], "***")
            await self.ctx.record_dry_run(self.destination, batch_key, request, len(sendable))
            for index in sendable:
                results[index] = Result.delivered("dry_run")
        elif sendable:
            await self._send_splitting(batch_key, items, sendable, results)
        return [r if r is not None else Result.retry("unsent", "not sent") for r in results]

    def _request(self, pixel_id: str, events: list[dict[str, Any]], token: str) -> OutgoingRequest:
        url = _meta.EVENTS_PATH.format(
            api_base=self.config.api_base, api_version=self.config.api_version, pixel_id=quote(pixel_id, safe="")
        )
        body: dict[str, Any] = {"data": events, "access_token": token}
        if self.config.test_event_code:
            body["test_event_code"] = self.config.test_event_code
        return OutgoingRequest("POST", url, dict(_HEADERS), orjson.dumps(body))

    async def _send_splitting(
        self, pixel_id: str, items: list[PendingItem], sendable: list[int], results: list[Result | None]
    ) -> None:
        """Send, halving a batch Meta refuses for its data until the bad events stand alone.

        Depth first, the two halves of a split in parallel: one bad event in n
        costs ``1 + 2 * ceil(log2(n))`` requests in ``1 + ceil(log2(n))`` rounds.
        The whole send must end within ``request_timeout`` (the dispatcher's
        limit for one batch), so splitting stops at the request budget or at
        90% of that time, whichever comes first, and what is left unresolved
        is retried later.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.9 * self.ctx.request_timeout
        budget = 1 + 4 * math.ceil(math.log2(len(sendable))) if len(sendable) > 1 else 1
        queue: deque[list[int]] = deque([sendable])
        while queue:
            remaining = deadline - loop.time()
            if budget <= 0 or remaining <= 0:
                unfinished = Result.retry("split_unfinished", "batch split left unresolved; sent again later")
                self._settle(results, [i for chunk in queue for i in chunk], unfinished)
                return
            step = [queue.popleft() for _ in range(min(2, budget, len(queue)))]
            budget -= len(step)
            outcomes = await asyncio.gather(
                *(self._post(pixel_id, [items[i].item for i in chunk], remaining) for chunk in step)
            )
            halves: list[list[int]] = []
            stop: Result | None = None  # a request-level answer: it holds for everything not yet sent too
            for chunk, outcome in zip(step, outcomes):
                result = self._read(pixel_id, chunk, outcome)
                if result is None:
                    half = len(chunk) // 2
                    halves += [chunk[:half], chunk[half:]]
                    continue
                self._settle(results, chunk, result)
                if result.outcome == "retry" or _outcome_is_pixel_wide(outcome):
                    stop = stop or result
            if stop is not None:
                self._settle(results, [i for chunk in (*halves, *queue) for i in chunk], stop)
                return
            queue.extendleft(reversed(halves))

    def _read(
        self, pixel_id: str, chunk: list[int], outcome: Result | tuple[_meta.GraphError, float | None]
    ) -> Result | None:
        """The result for one request's events, or None when the chunk is to be split."""
        if isinstance(outcome, Result):
            return outcome  # delivered, or no answer (retried)
        error, wait = outcome
        kind = error.kind
        if kind == "data" and len(chunk) > 1:
            return None
        message = error.describe(self._token)
        if kind == "token":
            self._pause(pixel_id, error)
            return Result.retry(error.result_code, message)
        if kind == "rate_limit":
            retry_after = wait if wait is not None else _meta.RATE_LIMIT_RETRY_AFTER
            log.warning("meta rate limit", extra={"pixel_id": pixel_id, "code": error.result_code,
                                                  "retry_after": retry_after, "fbtrace_id": error.fbtrace_id})
            return Result.retry(error.result_code, message, retry_after)
        if kind == "transient":
            return Result.retry(error.result_code, message, wait)
        if kind == "pixel":
            log.error("meta refused the pixel", extra={"pixel_id": pixel_id, "code": error.result_code,
                                                       "fbtrace_id": error.fbtrace_id})
        else:  # one event Meta refuses for its data, or an error we cannot place: this chunk only
            log.info("meta refused events", extra={"pixel_id": pixel_id, "events": len(chunk),
                                                   "code": error.result_code, "fbtrace_id": error.fbtrace_id})
        return Result.permanent(error.result_code, message)

    async def _post(
        self, pixel_id: str, events: list[dict[str, Any]], timeout: float
    ) -> Result | tuple[_meta.GraphError, float | None]:
        """Delivered, a retry for no answer, or Meta's error with how long it asked us to wait."""
        if self._session is None:
            raise RuntimeError("meta sender used before start()")
        request = self._request(pixel_id, events, self._token)
        try:
            async with self._session.post(request.url, data=request.body, headers=request.headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                body = await response.read()
                if 200 <= response.status < 300:
                    _check_received(pixel_id, body, len(events))
                    return Result.delivered(f"http_{response.status}")
                return _meta.parse_error(response.status, body), _meta.rate_limit_wait(response.headers)
        except asyncio.TimeoutError:
            return Result.retry("timeout", "no answer within delivery.request_timeout")
        except aiohttp.ClientError as exc:
            return Result.retry("connection_error", type(exc).__name__)

    def _pause(self, pixel_id: str, error: _meta.GraphError) -> None:
        if pixel_id in self._paused:
            return
        self._paused.add(pixel_id)
        metrics.DESTINATION_PAUSED.labels(self.destination, "invalid_token").set(1)
        log.error(
            "meta rejected the access token (code %s); sending to pixel %s is paused, its events stay pending: "
            "replace destinations.meta.access_token and restart the gateway",
            error.result_code, pixel_id,
            extra={"destination": self.destination, "pixel_id": pixel_id, "code": error.result_code,
                   "fbtrace_id": error.fbtrace_id},
        )

    @staticmethod
    def _settle(results: list[Result | None], indexes: list[int], result: Result) -> None:
        for index in indexes:
            results[index] = result


def _outcome_is_pixel_wide(outcome: Result | tuple[_meta.GraphError, float | None]) -> bool:
    """A refusal of the pixel itself, which every other chunk would get too."""
    return not isinstance(outcome, Result) and outcome[0].kind == "pixel"


def _check_received(pixel_id: str, body: bytes, sent: int) -> None:
    """Meta says how many events it took; fewer than sent is worth a line, not a retry (it accepted the request)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    received = answer.get("events_received") if isinstance(answer, dict) else None
    if isinstance(received, int) and received != sent:
        log.warning("meta received fewer events than sent",
                    extra={"pixel_id": pixel_id, "sent": sent, "received": received,
                           "fbtrace_id": answer.get("fbtrace_id")})
