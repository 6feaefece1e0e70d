"""Prometheus metrics, prefixed ``gateway_``.

Works with several uvicorn workers: ``gateway serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports this module, and
``/metrics`` then aggregates every worker's files (prometheus-client's
multiprocess mode). Labels never carry personal data; event names, which
senders choose, are bounded in number so a hostile client cannot explode the
label space.
"""

from __future__ import annotations

import os
import re
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("gateway_requests", "HTTP requests by client and response status.", ["client", "status"])
EVENTS = Counter("gateway_events", "Events built by clients.", ["client", "event_name"])
WEBHOOKS_IGNORED = Counter(
    "gateway_webhooks_ignored", "Webhooks acknowledged without acting on them (an event or topic not handled), by reason.",
    ["client", "reason"],
)
CONSENT = Counter(
    "gateway_consent_decisions", "Consent state applied to events, per signal and source.", ["signal", "state", "source"]
)
PII_REDACTED = Counter("gateway_consent_redactions", "Events whose personal data consent removed.", ["kind"])
TAG_FIRES = Counter("gateway_tag_fires", "Tags fired, by tag name.", ["tag"])
TAG_SKIPPED = Counter("gateway_tag_skipped", "Events a fired tag could not turn into a delivery, by reason.", ["tag", "reason"])
DELIVERIES = Counter(
    "gateway_deliveries", "Delivery results per item, by destination, outcome and vendor code.", ["destination", "outcome", "code"]
)
DEAD_LETTERS = Counter("gateway_dead_letters", "Items moved to the dead-letter table.", ["destination", "code"])
RETRIES = Counter("gateway_delivery_retries", "Items scheduled for another attempt.", ["destination"])
SEND_LATENCY = Histogram(
    "gateway_delivery_request_seconds",
    "Duration of one outgoing vendor request.",
    ["destination"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_LAG = Histogram(
    "gateway_delivery_lag_seconds",
    "Time from the item's commit to its delivery.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400),
)
BATCH_SIZE = Histogram(
    "gateway_delivery_batch_size",
    "Items per outgoing vendor request.",
    ["destination"],
    buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000, 2000),
)
OUTBOX_DEPTH = Gauge("gateway_outbox_depth", "Items waiting in the outbox.", ["destination"], multiprocess_mode="max")
OUTBOX_OLDEST = Gauge(
    "gateway_outbox_oldest_age_seconds", "Age of the oldest waiting item.", ["destination"], multiprocess_mode="max"
)
DESTINATION_PAUSED = Gauge(
    "gateway_destination_paused",
    "1 while a destination key is stopped for bad credentials.",
    ["destination", "reason"],
    multiprocess_mode="max",
)
TOKEN_REFRESHES = Counter("gateway_token_refreshes", "OAuth access-token refreshes by outcome.", ["destination", "outcome"])
STORAGE_ERRORS = Counter("gateway_storage_errors", "Commits that failed; the request got 503.", ["operation"])

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_MAX_EVENT_NAMES = 200
_seen_event_names: set[str] = set()


class BufferedCount:
    """Increments of one counter child, held in a plain number until ``flush``.

    ``inc`` on a prometheus_client counter takes a lock (and in multiprocess
    mode writes to a memory-mapped file); the request path counts several
    things per hit, so it adds to a Python number instead, and ``flush``
    (every second, and before each /metrics answer) hands the sums over.
    Only the event loop's thread may call ``inc``.
    """

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending: float = 0

    def inc(self, amount: float = 1) -> None:
        self.pending += amount


_buffered: list[BufferedCount] = []


def flush() -> None:
    """Add every buffered increment to its counter."""
    for count in _buffered:
        if count.pending:
            amount, count.pending = count.pending, 0
            count.child.inc(amount)


class LabelCache:
    """The children of one labelled metric, each looked up once; a counter's buffered by default (``BufferedCount``).

    ``Metric.labels()`` takes a lock and validates its arguments on every
    call. Only use this for label values that are bounded already (status
    codes, client and tag names, ``event_name_label``, capped vendor codes):
    every combination is kept for the life of the process. ``buffered=False``
    hands out the children themselves, for metrics that must be current at
    once or are not counters.
    """

    __slots__ = ("metric", "buffered", "children")

    def __init__(self, metric: Any, buffered: bool = True) -> None:
        self.metric = metric
        self.buffered = buffered
        self.children: dict[tuple[Any, ...], Any] = {}

    def get(self, *labels: Any) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.metric.labels(*(str(label) for label in labels))
            if self.buffered:
                child = BufferedCount(child)
                _buffered.append(child)
            self.children[labels] = child
        return child


def event_name_label(name: str) -> str:
    """A bounded label for an event name: a client could send millions of names."""
    if name in _seen_event_names:
        return name
    if not _EVENT_NAME.match(name) or len(_seen_event_names) >= _MAX_EVENT_NAMES:
        return "(other)"
    _seen_event_names.add(name)
    return name


def render() -> tuple[bytes, str]:
    """The exposition for /metrics, aggregated across workers when there are several.

    This worker's buffered counts are flushed first; other workers flush theirs
    every second, so with several workers a scrape can be up to a second behind.
    """
    flush()
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
