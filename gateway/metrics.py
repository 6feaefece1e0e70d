"""Prometheus metrics, prefixed ``gateway_``.

Works with several uvicorn workers: ``gateway serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports this module, and
``/metrics`` then aggregates every worker's files (prometheus-client's
multiprocess mode). Labels never carry personal data; event names, which
senders choose, are bounded in number so a hostile client cannot explode the
label space.

Every label set the container makes known (its clients, tags and
destinations) is exported at zero from the start (``declare``): a panel over
a counter that has not moved yet shows 0, not "No data", and ``increase()``
sees the first increment. The ``*_created`` series are not exported: they
double every counter's series for a value no dashboard here reads.
"""

from __future__ import annotations

import os
import re
from typing import Any

from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:
    from gateway.config import Container

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()

REQUESTS = Counter(
    "gateway_requests",
    "HTTP requests by client and response status; client (none) for requests no client took (404, 405, 408, 431).",
    ["client", "status"],
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from a collection request's headers to its answer, per client (the body's upload included).",
    ["client"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
COMMIT_WAIT = Histogram(
    "gateway_outbox_commit_seconds",
    "Time a collection request waited for its durable outbox commit before its answer, per client: the writer's "
    "queue, the commit group and its fsync (with synchronous full, the disk's sync latency is on every request).",
    ["client"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
IN_FLIGHT = Gauge(
    "gateway_requests_in_flight",
    "Requests of a client past their body and not yet answered (each client's budget: limits.max_inflight_per_client).",
    ["client"],
    multiprocess_mode="livesum",
)
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
DISPATCHER_HEARTBEAT = Gauge(
    "gateway_dispatcher_heartbeat_timestamp_seconds",
    "Unix time of the dispatcher's last pass; with several workers, the oldest of them.",
    multiprocess_mode="livemin",
)

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
    """Add every buffered increment to its counter, and every buffered observation to its histogram."""
    for count in _buffered:
        if count.pending:
            amount, count.pending = count.pending, 0
            count.child.inc(amount)
    for histogram in _buffered_histograms:
        if histogram.pending:
            histogram.flush()


class BufferedHistogram:
    """Observations of one histogram child, held as plain bucket counts until ``flush``.

    ``Histogram.observe`` takes a lock and walks the buckets (about a
    microsecond, on every hit); this finds the bucket by bisection and adds
    to a list. ``flush`` adds the counts to the child's own bucket and sum
    values, the ones ``observe`` would have added to.
    """

    __slots__ = ("child", "bounds", "counts", "total", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.pending = False

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount
        self.pending = True

    def inc(self, amount: float = 1) -> None:  # so that flush() treats every buffered child alike
        raise TypeError("a histogram is observed, not incremented")

    def flush(self) -> None:
        counts, self.counts = self.counts, [0] * len(self.bounds)
        total, self.total = self.total, 0.0
        self.pending = False
        for value, count in zip(self.child._buckets, counts):
            if count:
                value.inc(count)
        self.child._sum.inc(total)


_buffered_histograms: list[BufferedHistogram] = []


class LabelCache:
    """The children of one labelled metric, each looked up once; buffered by default (``BufferedCount``, ``BufferedHistogram``).

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
            if self.buffered and isinstance(self.metric, Histogram):
                child = BufferedHistogram(child)
                _buffered_histograms.append(child)
            elif self.buffered:
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


# What each kind of label value can be, as far as the container says in advance.
DELIVERY_OUTCOMES = ("delivered", "retry", "permanent")
CONSENT_STATES = ("granted", "denied")
CONSENT_SOURCES = ("request", "default")
STORAGE_OPERATIONS = ("enqueue", "ready_groups", "claim", "settle", "release", "stats", "prune", "sweep_held")


def declare(container: Container) -> None:
    """Create, at zero, every series whose labels the container makes known.

    Requests per client for the statuses any client can give (its success,
    400, 503; 401 for a signed client), consent decisions for every signal,
    state and source, tag fires per tag, and per destination its deliveries,
    retries, dead letters, latency histograms and outbox gauges. Series with
    labels that only requests reveal (event names, vendor error codes) still
    appear when they first happen.
    """
    from gateway.event import CONSENT_SIGNALS
    from gateway.webhook_secrets import has_secret

    for entry in container.clients:
        name = entry.config.type
        statuses = {*_success_statuses(entry.module), "400", "503"} | ({"401"} if has_secret(entry.module) else set())
        for status in statuses:
            REQUESTS.labels(name, status)
        REQUEST_DURATION.labels(name)
        COMMIT_WAIT.labels(name)
        IN_FLIGHT.labels(name)
    for off in container.switched_off:
        REQUESTS.labels(off.type, "503")
    for status in ("404", "405"):
        REQUESTS.labels("(none)", status)
    for signal in CONSENT_SIGNALS:
        for state in CONSENT_STATES:
            for source in CONSENT_SOURCES:
                CONSENT.labels(signal, state, source)
    for operation in STORAGE_OPERATIONS:
        STORAGE_ERRORS.labels(operation)
    destinations = sorted({tag.destination for tag in container.tags})
    for tag in container.tags:
        TAG_FIRES.labels(tag.config.name)
    for destination in destinations:
        for outcome in DELIVERY_OUTCOMES:
            DELIVERIES.labels(destination, outcome, "")
        RETRIES.labels(destination)
        DEAD_LETTERS.labels(destination, "")
        for histogram in (SEND_LATENCY, DELIVERY_LAG, BATCH_SIZE):
            histogram.labels(destination)
        OUTBOX_DEPTH.labels(destination)
        OUTBOX_OLDEST.labels(destination)


def _success_statuses(module: Any) -> set[str]:
    """The 2xx statuses a client's OpenAPI operations document."""
    return {status for operation in getattr(module, "OPENAPI", {}).values()
            for status in operation.get("responses", {}) if status.startswith("2")}


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
