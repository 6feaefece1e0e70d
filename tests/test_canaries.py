"""Canaries: nothing personal leaves when consent is denied, and it arrives where vendors expect it when granted.

Issue 14, "What it must show", first bullet. Each example sends one purchase
request of one client (GA4 GET or POST, the JSON beacon, the signed generic
order webhook, Shopify, WooCommerce) with a unique email, phone and name
(``tests.canaries.canary``) put into slots of the request
(``tests.canaries.slots``), to the real app on the sample container with
every destination live against the fakes; the dispatcher then delivers
everything queued, and every place an auditor could read is searched
(``tests.canaries.rig``): the SQLite files, the logs, ``/metrics``, the
debugger's page and API, the CLI's lists, every body the fakes received.

- With every consent signal denied, no canary may be found anywhere, in any
  form (raw, lower case, percent-encoded, or hashed as the vendors hash it).
- With every signal granted and the canaries in each client's identity
  fields, they must arrive hashed where Meta (``user_data.em``/``ph``/``fn``/``ln``)
  and the Data Manager API (``userData.userIdentifiers``) take them, and the
  same search must find them there: the test cannot pass by dropping
  everything, nor by a search that finds nothing.

Settings: ``CANARY_EXAMPLES`` (default 25 per test, about 15 s for the module), ``CANARY_COLLECT=1`` to
go on after a leak and fail once at the end with all of them,
``CANARY_REPORT=path`` to write the leak report (placement -> where found)
as JSON. The leak table of the current main, for example::

    CANARY_EXAMPLES=300 CANARY_COLLECT=1 CANARY_REPORT=/tmp/canaries.json \\
        python -m pytest -q -p no:cacheprovider tests/test_canaries.py
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings

from tests.canaries.plan import Plan, denied_plans, granted_plans
from tests.canaries.rig import Rig
from tests.canaries.search import Leaks, find

EXAMPLES = int(os.environ.get("CANARY_EXAMPLES", "25"))
COLLECT = os.environ.get("CANARY_COLLECT", "") == "1"
REPORT = os.environ.get("CANARY_REPORT", "")

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # every canary is new: a saved example would not replay the same bytes anyway
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each example costs a request and its deliveries
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    report_multiple_bugs=False,
)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    running = Rig(tmp_path_factory.mktemp("canaries"))
    try:
        yield running
    finally:
        running.close()


def deliver(rig: Rig, plan: Plan) -> tuple[Any, Any]:
    """Send the example's request (and its order's refund or cancellation), wait for every delivery.

    Returns the marks from before, and the gateway's answers (their headers and bodies are searched too).
    """
    note(repr(plan))
    marks = rig.marks()
    answers = []
    for request in (plan.request, plan.followup):
        if request is None:
            continue
        answer = rig.send(request)
        assert answer.status in (200, 204), f"{request.path}: {answer.status} {answer.body[:300]!r}"
        answers.append(answer)
        rig.drain()
    return marks, answers


def test_with_every_signal_denied_no_canary_is_found_anywhere(rig: Rig) -> None:
    leaks = Leaks()

    @SETTINGS
    @given(plan=denied_plans())
    def example(plan: Plan) -> None:
        marks, answers = deliver(rig, plan)
        # The pipeline ran: forward_everything sends every event on, so an empty sink means the event was dropped.
        assert rig.new_records(marks, "fake:http_sink"), f"nothing delivered; the answer: {answers[0].status} {answers[0].body!r}"
        places = rig.places(marks, answers, plan.order_ids)
        leaks.examples += 1
        found = [leak for p in plan.placements
                 if (leak := leaks.add(p, plan.canaries[p.kind], find(plan.canaries[p.kind], places))) is not None]
        if found and not COLLECT:
            raise AssertionError("canaries found with every signal denied:\n" + "\n".join(leak.line() for leak in found))

    try:
        example()
    finally:
        if REPORT:
            leaks.write(REPORT)
    assert not leaks.leaks, (f"{len(leaks.leaks)} of {leaks.placements} placements leaked; "
                             f"by place: {leaks.summary()['by_place']}\n" + "\n".join(l.line() for l in leaks.leaks[:50]))


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def test_with_every_signal_granted_the_canaries_arrive_hashed_where_the_vendors_expect_them(rig: Rig) -> None:
    @SETTINGS
    @given(plan=granted_plans())
    def example(plan: Plan) -> None:
        marks, answers = deliver(rig, plan)
        email, phone, name = plan.canaries["email"], plan.canaries["phone"], plan.canaries["name"]

        # Meta: em is the trimmed lower-case email, ph the phone's digits with the country code and no +,
        # fn/ln the lower-case name, each SHA-256 hex; GA4's em pieces arrive hashed already, the phone
        # in Google's form (E.164 with the +), and pass through as they are.
        events = [e for r in rig.new_records(marks, "fake:meta") for e in r.events if e["event_name"] == "Purchase"]
        assert len(events) == 1, f"{plan.client}: Meta got {len(events)} purchases"
        user = events[0]["user_data"]
        meta_phone = phone.sha256_hex(0) if plan.client.startswith("ga4") else phone.sha256_hex(1)
        assert _listed(user.get("em")) == [email.sha256_hex()]
        assert _listed(user.get("ph")) == [meta_phone]
        assert name.sha256_hex() in _listed(user.get("fn")) + _listed(user.get("ln"))

        # The Data Manager API: userIdentifiers, email and phone (E.164 with the +) as SHA-256 hex.
        ingested = [e for r in rig.new_records(marks, "fake:data_manager") if r.path.endswith("events:ingest")
                    for e in r.body["events"]]
        assert len(ingested) == 1, f"{plan.client}: the Data Manager API got {len(ingested)} events"
        assert ingested[0]["userData"]["userIdentifiers"] == [
            {"emailAddress": email.sha256_hex()}, {"phoneNumber": phone.sha256_hex(0)}]

        # The search the denied test trusts finds them there too.
        places = rig.places(marks, answers, plan.order_ids)
        for canary, where in ((email, ("fake:meta", "fake:data_manager")), (phone, ("fake:meta", "fake:data_manager")),
                              (name, ("fake:meta",))):
            found = find(canary, places)
            assert set(where) <= set(found), f"{canary.kind}: found only in {sorted(found)}"

    example()


def test_the_search_finds_every_form_a_canary_can_take() -> None:
    """Each needle of a canary is found in a place made of that form alone, and in no place without it."""
    from tests.canaries.canary import email_canary, name_canary, phone_canary

    phone = phone_canary(415, 555, 132)
    assert phone is not None
    for canary in (email_canary("abcdef"), phone, name_canary("ghijkl")):
        for needle in canary.needles():
            place = b"prefix " + (needle.text if needle.case_sensitive else needle.text.upper()) + b" suffix"
            assert needle.form in find(canary, {"place": place}).get("place", []), needle.form
        assert find(canary, {"place": b"nothing of it here", "empty": b""}) == {}
