"""The identity vectors of our peers (tests/fixtures/identity_peer_vectors.json), by kind.

Each test compares every vector of one kind at once, so that a failure shows
all the values that differ. Where we differ from the peer on purpose, the
vector's note says why; ``peer_normalized`` is kept to show the difference,
and checked only against the peer's own hashes where its test gives one.
"""

from __future__ import annotations

from typing import Any

from gateway.identity import google, meta, sha256_hex
from tests.conftest import load_fixture

VECTORS: list[dict[str, Any]] = load_fixture("identity_peer_vectors.json")["vectors"]

# Digests the peers' tests give for a vector, to show that peer_normalized is what they hash.
PEER_DIGESTS = {
    ("9000000000", "ph"): "593a6d58f34eb5c3de4f47e38d1faaa7d389fafe332a85400b1e54498391c579",  # RudderStack
    ("Test", "ln"): "532eaabd9574880dbf76b9b8cc00832c20a6ec113d682299550d7a6e0f345e25",  # RudderStack
    ("Rudder", "fn"): "2c2ccf28d806f6f9a34b67aa874d2113b7ac1444f1a4092541b8b75b84771747",  # RudderStack
    ("510 555 0011", "ph"): "cf9b0227ee02d8f8f9dbb6060fa2941bb667efc71f6ee2e6ee17b40121a5f4a6",  # Segment
}


def _ours(vector: dict[str, Any]) -> str | None:
    """What we send for the vector: Meta's digest, or Google's normalised value."""
    field, raw, region = vector["field"], vector["raw"], vector.get("region")
    if vector["vendor"] == "meta":
        return meta.hashed(field, raw, region=region)
    if field == "phone":
        return google.normalize_phone(raw, region)
    if field == "country":
        return google.normalize_country(raw)
    return google.normalize_name(raw)


def _expected(vector: dict[str, Any]) -> str | None:
    expected = vector["expected"]
    if expected is None or vector["vendor"] == "google":
        return expected
    return sha256_hex(expected)


def _kind(field: str) -> str:
    return {"ph": "phone", "fn": "name", "ln": "name", "first_name": "name"}.get(field, field)


def _compare(kind: str) -> None:
    vectors = [v for v in VECTORS if _kind(v["field"]) == kind]
    assert vectors
    got = [(v["vendor"], v["raw"], v.get("region"), _ours(v)) for v in vectors]
    want = [(v["vendor"], v["raw"], v.get("region"), _expected(v)) for v in vectors]
    assert got == want


def test_every_vector_names_its_source_and_what_the_peer_expects() -> None:
    for vector in VECTORS:
        assert vector["source"].startswith("https://"), vector["raw"]
        assert "peer_normalized" in vector and "expected" in vector
        differs = vector["peer_normalized"] != vector["expected"]
        assert not differs or vector.get("note"), f"{vector['raw']!r}: a difference from the peer needs a note"


def test_the_peer_digests_are_the_peer_normalized_values_hashed() -> None:
    by_raw = {(v["raw"], v["field"]): v["peer_normalized"] for v in VECTORS}
    assert {key: sha256_hex(by_raw[key]) for key in PEER_DIGESTS} == PEER_DIGESTS


def test_phones_of_the_peers_are_kept_as_typed_or_dropped_never_rewritten() -> None:
    _compare("phone")


def test_names_of_the_peers_are_kept_even_when_they_read_test() -> None:
    _compare("name")


def test_country_names_of_the_peers_become_iso_codes_or_are_dropped() -> None:
    _compare("country")
