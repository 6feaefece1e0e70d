"""Every event the pipeline runs adds exactly one count per consent signal: its state and who set it.

``gateway_consent_decisions_total{signal, state, source}`` is what an
operator reads to see how much traffic arrives denied, granted or without a
signal. The pipeline keeps the four counters of each combination it has seen
(``Pipeline._count_consent``); the counts must be the ones each event's own
consent and defaults make, whatever combinations came before it.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from itertools import product

from gateway import metrics
from gateway.config import load_container_text
from gateway.event import CONSENT_SIGNALS, Event
from gateway.pipeline import Pipeline

AT = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
CONTAINER = """
consent:
  default: {ad_storage: denied, ad_user_data: granted}
triggers:
  nothing: {any: [{field: event_name, op: equals, value: never}]}
tags:
  - {name: forward, type: http_request, trigger: nothing, url: "http://127.0.0.1:9/x", mode: dry_run}
"""
# The container's default; a signal it does not name defaults to denied.
DEFAULTS = {"ad_storage": "denied", "analytics_storage": "denied", "ad_user_data": "granted",
            "ad_personalization": "denied"}


def counted() -> dict[tuple[str, str, str], float]:
    metrics.flush()
    return {(s.labels["signal"], s.labels["state"], s.labels["source"]): s.value
            for family in metrics.CONSENT.collect() for s in family.samples if s.name.endswith("_total")}


def test_each_event_counts_its_own_states_and_sources() -> None:
    pipeline = Pipeline(load_container_text(CONTAINER, {}))
    # Every combination of granted, denied and absent for the four signals, then the same again in another order.
    combinations = [dict(zip(CONSENT_SIGNALS, states)) for states in product(("granted", "denied", None), repeat=4)]
    consents = [{s: v for s, v in combo.items() if v is not None} for combo in combinations + combinations[::-1]]
    events = [Event.from_data({"event_name": "page_view", "timestamp": AT, "consent": consent}) for consent in consents]
    expected: Counter[tuple[str, str, str]] = Counter()
    for combo in combinations + combinations[::-1]:
        for signal, state in combo.items():
            if state is not None:
                expected[(signal, state, "request")] += 1
            else:
                expected[(signal, DEFAULTS[signal], "default")] += 1
    before = counted()
    pipeline.process(events[:81], "json_beacon")
    pipeline.process(events[81:], "json_beacon")
    after = counted()
    added = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
    assert added == {key: float(n) for key, n in expected.items()}
