"""The collection routes answer from their own ASGI front, with Starlette's conventions kept."""

from __future__ import annotations

import contextlib
import sqlite3

import orjson
import pytest
from prometheus_client import REGISTRY

from gateway import metrics
from tests.gateway.test_app_bad_input import CONTAINER  # ga4 and json_beacon, a dry-run sink
from tests.running import asgi_request

HIT = "/g/collect?v=2&tid=G-ABC123XYZ&cid=555.1&en=page_view&dl=https%3A%2F%2Fshop.example%2F"


def test_an_accepted_hit_is_204_without_body_or_length_and_carries_a_trace_id(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    first, second = client.get(HIT), client.get(HIT.replace("555.1", "556.1"))

    assert first.status_code == 204 and first.content == b""
    assert "content-length" not in first.headers and "content-type" not in first.headers
    assert len(first.headers["x-gateway-trace"]) == 16
    assert first.headers["x-gateway-trace"] != second.headers["x-gateway-trace"]


def test_an_error_is_json_with_its_length_and_the_trace_id(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.get("/g/collect?v=2&cid=1.1")

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["error"] == "missing event name"
    assert "x-gateway-trace" in response.headers


def test_a_method_the_route_does_not_take_is_405_with_allow(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.put("/g/collect", content=b"en=x")

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["detail"] == {"allowed": ["GET", "POST"]}


def test_preflight_headers_from_the_client_reach_the_browser(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.options("/collect", headers={"Origin": "https://shop.example",
                                                  "Access-Control-Request-Method": "POST"})

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert response.headers["access-control-allow-methods"] == "POST, OPTIONS"


def test_a_post_body_sent_in_several_chunks_is_read_whole(make_client, db_path):
    client = make_client(CONTAINER, run_dispatcher=False)

    def chunks():
        yield b"en=view_item&_s=2\n"
        yield b"en=scroll&_s=3"

    response = client.post("/g/collect?v=2&tid=G-ABC123XYZ&cid=7.1", content=chunks())

    assert response.status_code == 204
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        stored = [orjson.loads(item)["event_name"] for (item,) in conn.execute("SELECT item FROM outbox ORDER BY id")]
    assert stored == ["view_item", "scroll"]


@pytest.mark.parametrize("path", ["/healthz", "/nowhere"])
def test_other_paths_still_go_to_starlette(make_client, path):
    client = make_client(CONTAINER, run_dispatcher=False)

    response = client.get(path)

    assert response.status_code == (200 if path == "/healthz" else 404)
    assert "x-gateway-trace" not in response.headers


def test_buffered_counts_reach_the_registry_on_flush_only():
    counts = metrics.LabelCache(metrics.TAG_FIRES)
    before = REGISTRY.get_sample_value("gateway_tag_fires_total", {"tag": "buffer_probe"}) or 0.0

    counts.get("buffer_probe").inc()
    counts.get("buffer_probe").inc(2)
    held = REGISTRY.get_sample_value("gateway_tag_fires_total", {"tag": "buffer_probe"}) or 0.0
    metrics.flush()

    assert held == before
    assert REGISTRY.get_sample_value("gateway_tag_fires_total", {"tag": "buffer_probe"}) == before + 3


BEHIND_A_PROXY = CONTAINER + """
server:
  trusted_proxies: ["127.0.0.1/32"]
"""


def stored_addresses(db_path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return [orjson.loads(item)["ip_override"] for (item,) in conn.execute("SELECT item FROM outbox ORDER BY id")]


def test_x_forwarded_for_in_two_lines_is_one_list_so_the_client_cannot_choose_its_address(make_client, db_path):
    client = make_client(BEHIND_A_PROXY, run_dispatcher=False)

    # The client wrote the first line itself; our proxy (127.0.0.1, trusted) appended what it saw as a line of its own.
    answer = asgi_request(client, "GET", "/g/collect", query=b"v=2&tid=G-ABC123XYZ&en=page_view",
                          headers=[(b"x-forwarded-for", b"203.0.113.66"), (b"x-forwarded-for", b"198.51.100.7")])

    assert answer.status == 204
    assert stored_addresses(db_path) == ["198.51.100.7"]


def test_refusals_no_client_took_are_counted_too(make_client):
    client = make_client(CONTAINER, run_dispatcher=False)

    def count(client_label: str, status: str) -> float:
        metrics.flush()
        return REGISTRY.get_sample_value("gateway_requests_total", {"client": client_label, "status": status}) or 0.0

    before = (count("ga4", "405"), count("(none)", "404"))
    client.put("/g/collect", content=b"en=x")
    client.get("/nowhere")

    assert (count("ga4", "405"), count("(none)", "404")) == (before[0] + 1, before[1] + 1)
