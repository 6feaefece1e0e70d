"""Events to deliveries: consent, then rules, then tags. Pure apart from metrics.

This is the middle of the request path, after a client has parsed the
request and before the outbox commit. Nothing here does I/O, so a request's
whole fate is decided before the single durable write that precedes its 2xx.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Callable

from gateway import metrics
from gateway.config import Container
from gateway.consent import ConsentDecision, ConsentPolicy
from gateway.delivery import Delivery
from gateway.event import CONSENT_SIGNALS, Event
from gateway.tag import Skip

_SIGNAL_STATES = attrgetter(*CONSENT_SIGNALS)  # a Consent -> its four states, in CONSENT_SIGNALS' order

log = logging.getLogger("gateway.pipeline")


@dataclass(slots=True)
class Outcome:
    deliveries: list[Delivery] = field(default_factory=list)
    decisions: list[ConsentDecision] = field(default_factory=list)
    fired: list[tuple[int, str]] = field(default_factory=list)  # (event index, tag name)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (event index, tag name, reason)


class Pipeline:
    def __init__(self, container: Container) -> None:
        self.defaults = container.consent_defaults
        # Per-client defaults, redaction settings and the pseudonym key (set at start by the gateway).
        self.consent = ConsentPolicy.for_container(container)
        # Resolved once: the loop below runs for every tag of every event.
        self._consent_counts = metrics.LabelCache(metrics.CONSENT)
        self._consent_children: dict[tuple[tuple[str | None, ...], tuple[str, ...]], tuple[Any, ...]] = {}
        self._fires = metrics.LabelCache(metrics.TAG_FIRES)
        self._redactions = metrics.LabelCache(metrics.PII_REDACTED)
        self.tags = [(t.trigger.matches, t.module.build, t.config, t.config.name) for t in container.tags]
        # The debugger's hook (gateway.debug.attach sets it): called with each run's events and outcome.
        self.observe: Callable[[list[Event], Outcome], None] | None = None

    def process(self, events: list[Event], client: str = "") -> Outcome:
        outcome = Outcome()
        for index, event in enumerate(events):
            decision = self.consent.apply(event)
            outcome.decisions.append(decision)
            self._count_consent(event, decision)
            if decision.removed:
                self._redactions.get("user_data" if "user_data" in decision.removed else "other").inc()
            for matches, build, config, name in self.tags:
                if not matches(event):
                    continue
                self._fires.get(name).inc()
                outcome.fired.append((index, name))
                try:
                    outcome.deliveries.extend(build(event, config))
                except Skip as skip:
                    metrics.TAG_SKIPPED.labels(name, skip.reason).inc()
                    outcome.skipped.append((index, name, skip.reason))
                    log.info("tag skipped event", extra={"tag": name, "reason": skip.reason, "client": client})
                except Exception as exc:  # a tag bug must not fail the request or lose the others' deliveries
                    metrics.TAG_SKIPPED.labels(name, "error").inc()
                    outcome.skipped.append((index, name, "error"))
                    # The exception's type only: its message may quote event data.
                    log.error("tag failed to build", extra={"tag": name, "client": client, "error": type(exc).__name__})
        if self.observe is not None:
            self.observe(events, outcome)
        return outcome

    def _count_consent(self, event: Event, decision: ConsentDecision) -> None:
        """One count per signal: its state, and whether the request or a default set it.

        The four counters of each (states, defaulted signals) combination are
        looked up once and kept (at most 3^4 x 2^4 combinations, and every one
        of them is a label set the metric keeps anyway).
        """
        key = (_SIGNAL_STATES(event.consent), decision.defaulted)
        counts = self._consent_children.get(key)
        if counts is None:
            states, defaulted = key
            counts = self._consent_children[key] = tuple(
                self._consent_counts.get(signal, state or "unset", "default" if signal in defaulted else "request")
                for signal, state in zip(CONSENT_SIGNALS, states))
        for count in counts:
            count.inc()
