"""Hypothesis strategies: one example is one request of one client carrying the three canaries.

``denied_plans`` puts each canary (email, phone, name) into a random slot of
a random client's request, written a random way, with every consent signal
denied. ``granted_plans`` puts each one into the client's identity field,
with every signal granted, so the test can see it arrive where the vendors
expect it.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass

from hypothesis import assume
from hypothesis import strategies as st

from tests.canaries.canary import KINDS, Canary, Kind, email_canary, name_canary, phone_canary, AREA_CODES
from tests.canaries.placements import Placement, render
from tests.canaries.requests import CLIENTS, Built, JsonDraft, build, draft, followup
from tests.canaries.slots import SLOTS

_EXAMPLES = itertools.count(1)


@dataclass
class Plan:
    client: str
    token: str  # unique: the order, event and transaction ids of the baseline request carry it
    canaries: dict[Kind, Canary]
    placements: list[Placement]
    request: Built
    order_ids: list[str]  # where the ledger may have filed the order
    followup: Built | None = None  # the order refunded or cancelled afterwards (order systems only)
    ending: str | None = None  # refund | cancellation

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={c.value}" for k, c in self.canaries.items())
        then = f"; then the order's {self.ending}" if self.ending else ""
        return f"Plan({self.client}: {'; '.join(p.label for p in self.placements)}; {values}{then})"


@st.composite
def canaries(draw: st.DrawFn) -> dict[Kind, Canary]:
    letters = st.text(string.ascii_lowercase, min_size=6, max_size=6)
    phone = draw(st.builds(phone_canary, st.sampled_from(AREA_CODES), st.integers(200, 999), st.integers(0, 9999)))
    assume(phone is not None)
    assert phone is not None
    return {"email": email_canary(draw(letters)), "phone": phone, "name": name_canary(draw(letters))}


def _plan(draw: st.DrawFn, granted: bool) -> Plan:
    client = draw(st.sampled_from(CLIENTS))
    serial = next(_EXAMPLES)
    token = f"{draw(st.text(string.ascii_lowercase, min_size=4, max_size=4))}{serial}"
    found = draw(canaries())
    d = draft(client, token, serial, granted)
    placements = []
    for kind in KINDS:
        if granted:
            choices = [s for s in SLOTS[client] if s.category == "identity"]
        else:
            choices = [s for s in SLOTS[client] if s.variants_for(kind)]
        slot = draw(st.sampled_from(choices))
        variant = draw(st.sampled_from(slot.variants_for(kind)))
        value = render(found[kind], variant)
        slot.put(d, kind, value, draw)
        placements.append(Placement(kind, client, slot.name, slot.category, variant))
    built = build(d)
    end, ending = None, None
    if not granted and isinstance(d, JsonDraft) and d.client != "json_beacon":
        ending = draw(st.sampled_from([None, "refund", "cancellation"]))
        end = build(followup(d, ending)) if ending else None
    order_ids = {"ga4_get": f"T-{token}", "ga4_post": f"T-{token}", "json_beacon": f"T-{token}",
                 "order_webhook": f"ORD-{token}", "shopify": str(7100000000000 + serial),
                 "woocommerce": str(900000 + serial)}
    return Plan(client, token, found, placements, built, [order_ids[client]], end, ending if end else None)


@st.composite
def denied_plans(draw: st.DrawFn) -> Plan:
    return _plan(draw, granted=False)


@st.composite
def granted_plans(draw: st.DrawFn) -> Plan:
    return _plan(draw, granted=True)
