"""The delivery side of one container: its senders, the dispatcher over them and the vendor-request follow-up.

Built the same way wherever deliveries run: on an HTTP worker's event loop
(``gateway.app``, the in-process dispatcher that tests and ``create_app``
use) or in a dispatcher process of its own (``gateway.dispatch_process``,
what ``gateway serve`` starts by default). One builder, so the two cannot
drift apart.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Callable

from gateway.config import Container
from gateway.dispatcher import Dispatcher, dry_run_recorder
from gateway.sender import RequestRecorder, Sender, SenderContext
from gateway.storage.base import Storage
from gateway.vendor_requests import RequestFollowUp
from tags import DESTINATIONS

log = logging.getLogger("gateway.delivery")

FOLLOW_UP_SECONDS = 60.0  # how often vendor requests due for a status check are looked for


def build_senders(container: Container, storage: Storage, now: Callable[[], datetime],
                  record_request: RequestRecorder | None = None) -> dict[str, Sender]:
    """One sender per destination that has tags in the container, sharing one context."""
    ctx = SenderContext(
        record_dry_run=dry_run_recorder(storage, now),
        now=now,
        request_timeout=container.file.delivery.request_timeout.total_seconds(),
        record_request=record_request,
    )
    senders: dict[str, Sender] = {}
    for destination, module in DESTINATIONS.items():
        tags = [t.config for t in container.tags if t.destination == destination]
        if tags:
            senders[destination] = module.Sender(container.destinations.get(destination), tags, ctx)
    return senders


def build_delivery(container: Container, storage: Storage,
                   now: Callable[[], datetime]) -> tuple[Dispatcher, RequestFollowUp]:
    """The dispatcher and the follow-up of the requests vendors process later, over one set of senders."""
    senders: dict[str, Sender] = {}
    follow_up = RequestFollowUp(storage, senders, now)
    senders.update(build_senders(container, storage, now, follow_up.record))
    return Dispatcher(storage, senders, container.file.delivery, now=now), follow_up


async def follow_up_forever(follow_up: RequestFollowUp, interval: float = FOLLOW_UP_SECONDS) -> None:
    """Ask vendors about the requests they process later, every ``interval`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await follow_up.check_once()
        except Exception as exc:  # noqa: BLE001 - the follow-up must outlive any one failure
            log.error("vendor request follow-up failed", extra={"error": type(exc).__name__})
