"""``python -m bench.parts``: every part it counts runs on its scenario's requests (the counting needs valgrind,
these checks do not), and a part a scenario does not have is refused by name."""

from __future__ import annotations

import pytest

from bench import parts


@pytest.mark.parametrize("scenario,names", [("get", parts.PARTS), ("webhook", parts.WEBHOOK_PARTS)])
def test_each_part_runs_on_its_scenarios_requests(scenario: str, names: tuple[str, ...]) -> None:
    found, requests, events = parts._setup(scenario, 2)
    assert sorted(found) == sorted(names)
    for name, (fn, takes_request) in found.items():
        fn(requests[0] if takes_request else events(requests[1]))


def test_the_webhooks_ledger_step_records_the_order_and_fires_the_sample_containers_tags() -> None:
    found, requests, events = parts._setup("webhook", 1)
    ledger, _ = found["ledger"]
    write = ledger(events(requests[0]))
    assert [note.what for note in write.notes] == ["order_recorded"]
    assert {d.destination for d in write.deliveries} >= {"google_ads", "meta", "http_request"}


def test_a_part_the_scenario_does_not_have_is_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit):
        parts.main(["--scenario", "webhook", "--parts", "ga4_tag"])
    assert "ga4_tag not among parse, ledger" in capsys.readouterr().err
