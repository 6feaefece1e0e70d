"""A GA4 hit's CPU instructions may not grow more than 10% above the committed baseline.

The small version of ``python -m bench --instructions``: ``gateway serve`` with
the sample container and the dispatcher off answers GET /g/collect under
callgrind, ``n1`` and then ``n2`` requests (``bench/instructions_baseline.json``),
and the difference of the two counts is one hit. Instructions, unlike time,
do not depend on what else the machine is doing, so this can fail the build
on a regression without flaking; the figure moved by well under 1% between
runs here. After a change that makes a hit cheaper, write the lower figure
with ``python -m bench --instructions --baseline`` so that the guard stays tight.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench import callgrind, instructions, procs

NO_VALGRIND = callgrind.missing()
pytestmark = pytest.mark.skipif(
    NO_VALGRIND is not None, reason=f"instructions are counted with valgrind's callgrind: {NO_VALGRIND}"
)


def changed_environment(recorded: dict, now: dict) -> list[str]:
    """What differs from the machine the baseline was measured on (another Python or library moves the figure)."""
    changes = [f"{key}: {recorded.get(key)} -> {now[key]}" for key in ("python", "machine", "valgrind")
               if recorded.get(key) != now[key]]
    recorded_packages = recorded.get("packages", {})
    changes += [f"{name}: {recorded_packages.get(name)} -> {version}" for name, version in now["packages"].items()
                if recorded_packages.get(name) != version]
    return changes


def test_a_ga4_hit_costs_at_most_ten_percent_more_instructions_than_the_baseline(tmp_path: Path) -> None:
    baseline = orjson.loads(instructions.BASELINE.read_bytes())
    settings = instructions.workspace(tmp_path, procs.Cores(None, None))
    try:
        figure = instructions.measure("gateway", "get", baseline["n1"], baseline["n2"], settings)
    finally:
        procs.stop_all()

    assert figure.checks == []
    limit = baseline["instructions_per_request"] * (1 + baseline["tolerance"])
    changes = changed_environment(baseline["environment"], instructions.environment())
    assert figure.per_request <= limit, (
        f"a GA4 hit costs {figure.per_request:,.0f} instructions, more than {limit:,.0f}"
        f" (baseline {baseline['instructions_per_request']:,} + {baseline['tolerance']:.0%});"
        f" by thread: {figure.per_request_by_thread()}."
        + (f" The environment differs from the baseline's: {'; '.join(changes)}." if changes else "")
    )
