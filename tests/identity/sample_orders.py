"""Signed order webhooks through the real app with the sample container: what the per-request memory tests send."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Iterator

import orjson
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import load_container_file
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
ORDER: dict[str, Any] = orjson.loads((FIXTURES / "webhooks" / "order_created.json").read_bytes())


def post_orders(tmp_path: Path, secret: str, order_ids: tuple[str, ...]) -> Iterator[str]:
    """``ORDER`` under each id in turn, signed, to ``examples/container.yaml`` on SQLite in ``tmp_path``.

    Yields each order id once its webhook was answered 200, so that the caller
    checks what that request did before the next one is sent.
    """
    env = {"ORDER_WEBHOOK_SECRET": secret, "GATEWAY_STORAGE_URL": f"sqlite:///{tmp_path / 'g.db'}"}
    container = load_container_file(ROOT / "examples/container.yaml", env=env)
    with TestClient(create_app(container, run_dispatcher=False)) as client:
        for order_id in order_ids:
            body = orjson.dumps(ORDER | {"order_id": order_id})
            signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            answer = client.post("/webhooks/order-update", content=body,
                                 headers={"Content-Type": "application/json", "X-Signature": signature})
            assert answer.status_code == 200, answer.text
            yield order_id
