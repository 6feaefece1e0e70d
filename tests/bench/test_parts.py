"""``python -m bench.parts``: every part it counts runs on its scenario's requests (the counting needs valgrind,
these checks do not), and a part a scenario does not have is refused by name."""

from __future__ import annotations

import pytest

from bench import parts


@pytest.mark.parametrize("scenario,names", [
    ("get", parts.PARTS), ("webhook", tuple(p for p in parts.WEBHOOK_PARTS if p not in parts.PHONE_PARTS)),
])
def test_each_part_runs_on_its_scenarios_requests(scenario: str, names: tuple[str, ...]) -> None:
    found, requests, events = parts._setup(scenario, 2)
    assert sorted(found) == sorted(names)
    for name, (fn, takes_request) in found.items():
        fn(requests[0] if takes_request else events(requests[1]))


@pytest.mark.parametrize("part,answer", [("order_id", None), ("phone", "+49170"), ("national_phone", "+49170")])
def test_the_phone_parts_read_distinct_numbers_the_way_they_say(part: str, answer: str | None) -> None:
    """Each call gets a number of its own (nothing remembered is counted), and the phone reads take the path of
    a valid number, the order ids that of digits that are no phone number."""
    from gateway import identity
    from gateway.identity import phones

    fn, inputs = parts._phone_setup(part, 5)
    assert len(set(inputs)) == len(inputs) == parts.WARMUP + 5
    for text in inputs[:3]:
        assert fn(text) is (False if part == "order_id" else None)
        if answer is not None:
            region = "DE" if part == "national_phone" else None
            written = phones.e164_of(text, region, bare_digits_have_country_code=False)
            identity.forget()
            assert written is not None and written.startswith(answer) and written[6:] == text.split()[-1]


def test_the_webhooks_ledger_step_records_the_order_and_fires_the_sample_containers_tags() -> None:
    found, requests, events = parts._setup("webhook", 1)
    ledger, _ = found["ledger"]
    write = ledger(events(requests[0]))
    assert [note.what for note in write.notes] == ["order_recorded"]
    assert {d.destination for d in write.deliveries} >= {"google_ads", "meta", "http_request"}


def test_a_part_the_scenario_does_not_have_is_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit):
        parts.main(["--scenario", "webhook", "--parts", "ga4_tag"])
    assert "ga4_tag not among parse, ledger, order_id, phone, national_phone" in capsys.readouterr().err
