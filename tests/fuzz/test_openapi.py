"""Schemathesis against the gateway's own /openapi.json, over real HTTP: no operation answers 5xx.

Schemathesis reads the operations the client modules describe (``OPENAPI``
in each) and sends what the schema allows and what it does not (its
positive and negative modes). For the webhooks, eight requests in ten are
signed here with the client's secret after schemathesis built the body, so
the generated orders get past the signature into the parser and the ledger;
the rest go as generated and must get 401. Besides "no 5xx", every 4xx must
be a JSON error and leave the stored state as it was.
"""

from __future__ import annotations

import json
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

from gateway.app import create_app

from tests.fuzz.conftest import (
    MAX_EXAMPLES,
    STATE_TABLES,
    StateProbe,
    base64_signature,
    fuzz_container,
    fuzz_storage,
    hex_signature,
)
from tests.running import serve_in_thread

SIGNATURES = {
    "/webhooks/order-update": ("X-Signature", hex_signature),
    "/webhooks/shopify": ("X-Shopify-Hmac-Sha256", base64_signature),
    "/webhooks/woocommerce": ("X-WC-Webhook-Signature", base64_signature),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, StateProbe]]:
    with fuzz_storage(tmp_path_factory.mktemp("schemathesis"), "openapi") as url:
        with serve_in_thread(fuzz_container(url), run_dispatcher=False) as base:
            state = StateProbe(url)
            try:
                yield base, state
            finally:
                state.close()


def served_openapi() -> dict[str, object]:
    """What the app serves at /openapi.json, read at collection: the document is built with the app, no lifespan needed.

    (``schemathesis.pytest.from_fixture`` would read it from the running
    server instead, but schemathesis 4.32 sets ``request.node._nodeid``
    there, which pytest 9 nodes no longer have.)
    """
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(fuzz_container(f"sqlite:///{Path(folder) / 'unused.db'}"), run_dispatcher=False)
        response = TestClient(app).get("/openapi.json")  # no `with`: the lifespan (storage) never starts
    assert response.status_code == 200
    return response.json()


schema = schemathesis.openapi.from_dict(served_openapi())
# The coverage phase walks every boundary of every parameter whatever max_examples says (minutes for
# GA4's 26 query parameters): it belongs to the long run only.
schema.config.phases.update(phases=["examples", "fuzzing"] + (["coverage"] if MAX_EXAMPLES > 100 else []))


def _send(case: schemathesis.Case, base: str) -> requests.Response:
    """The case as schemathesis would send it, with the webhook signed over the exact body bytes when chosen."""
    kwargs = case.as_transport_kwargs(base_url=base)
    kwargs.setdefault("timeout", 30)
    signing = SIGNATURES.get(case.path)
    if signing is not None:
        header, sign = signing
        if "json" in kwargs:
            body = json.dumps(kwargs.pop("json")).encode()  # big integers too, as requests would send them
            kwargs["data"] = body
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        data = kwargs.get("data")
        body = data.encode() if isinstance(data, str) else data if isinstance(data, bytes) else None
        if body is not None and zlib.crc32(body) % 10 < 8:
            kwargs["data"] = body
            kwargs.setdefault("headers", {})[header] = sign(body).decode()
    with requests.Session() as session:
        return session.request(**kwargs)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_of_the_openapi_description_answers_5xx(case: schemathesis.Case, served: tuple[str, StateProbe]):
    base, state = served
    before = state()

    response = _send(case, base)

    case.validate_response(response, checks=[not_a_server_error])
    if 400 <= response.status_code < 500:
        assert response.headers["content-type"].startswith("application/json")
        assert set(response.json()) == {"error", "detail"}
        assert state() == before, f"a {response.status_code} left state in one of {STATE_TABLES}"


def test_every_route_of_every_client_is_described_by_its_own_module():
    from clients import CLIENTS

    missing = [f"{name}: {method} {path}" for name, module in sorted(CLIENTS.items())
               for method, path in module.ROUTES if f"{method} {path}" not in getattr(module, "OPENAPI", {})]
    served = served_openapi()

    assert missing == []
    assert {op["operationId"] for ops in served["paths"].values() for op in ops.values()} == {
        "ga4_collect_get", "ga4_collect_post", "json_beacon_collect", "json_beacon_preflight",
        "order_webhook_update", "shopify_webhook", "woocommerce_webhook",
    }
