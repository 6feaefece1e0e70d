"""Looking for canaries in places, and the leak report.

``find`` answers, for one canary, which places hold which of its forms.
``Leaks`` gathers what the examples found (placement -> where, in which
forms) and writes the report ``CANARY_REPORT`` asks for: a JSON document
with a count per place, per slot and per form, and every leak.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.canaries.canary import Canary
from tests.canaries.placements import Placement


def find(canary: Canary, places: dict[str, bytes]) -> dict[str, list[str]]:
    """place -> the forms of ``canary`` found there (empty when none is anywhere)."""
    needles = canary.needles()
    found: dict[str, list[str]] = {}
    for place, data in places.items():
        if not data:
            continue
        lowered = data.lower()
        forms = [n.form for n in needles if n.text in (data if n.case_sensitive else lowered)]
        if forms:
            found[place] = forms
    return found


def _slot(p: Placement) -> str:
    return f"{p.client} {p.slot} ({p.kind})"


def family(form: str) -> str:
    """``quote:+1 415 ...`` -> ``quote``; ``sha256_hex:+14155550132`` -> ``sha256_hex``."""
    return form.split(":", 1)[0]


@dataclass
class Leak:
    placement: Placement
    canary: str
    found: dict[str, list[str]]

    def line(self) -> str:
        where = "; ".join(f"{place}: {', '.join(sorted({family(f) for f in forms}))}" for place, forms in self.found.items())
        return f"{self.placement.label} -> {where}"


@dataclass
class Leaks:
    examples: int = 0
    placements: int = 0
    leaks: list[Leak] = field(default_factory=list)
    tried: Counter[str] = field(default_factory=Counter)  # placements per slot, leaked or not

    def add(self, placement: Placement, canary: Canary, found: dict[str, list[str]]) -> Leak | None:
        self.placements += 1
        self.tried[_slot(placement)] += 1
        if not found:
            return None
        leak = Leak(placement, canary.value, found)
        self.leaks.append(leak)
        return leak

    def summary(self) -> dict[str, Any]:
        by_place: Counter[str] = Counter()
        by_slot: Counter[str] = Counter()
        by_form: Counter[str] = Counter()
        by_kind: Counter[str] = Counter()
        for leak in self.leaks:
            p = leak.placement
            by_slot[_slot(p)] += 1
            by_kind[p.kind] += 1
            for place, forms in leak.found.items():
                by_place[place] += 1
                by_form.update({family(f) for f in forms})
        return {"examples": self.examples, "placements": self.placements, "placements_leaked": len(self.leaks),
                "by_place": dict(by_place.most_common()), "by_kind": dict(by_kind.most_common()),
                "by_form": dict(by_form.most_common()),
                "by_slot": {slot: f"{by_slot[slot]} of {tried}" for slot, tried in sorted(self.tried.items())}}

    def write(self, path: str | Path) -> None:
        report = {"summary": self.summary(), "leaks": [
            {"placement": leak.placement.label, "canary": leak.canary,
             "found": {place: sorted({family(f) for f in forms}) for place, forms in leak.found.items()}}
            for leak in self.leaks]}
        Path(path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
