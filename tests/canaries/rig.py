"""The rig: the real app on the sample container, every vendor fake, and every place a canary could end up.

One rig serves a whole test module. The app runs under Starlette's
TestClient (its lifespan, storage and dispatcher on the client's portal
loop) over a real SQLite file; the fakes of ``tests/fakes`` run on a loop of
their own in a thread, on 127.0.0.1. The container is ``examples/container.yaml``
itself, with its environment variables pointing every destination, live,
at the fakes, the debugger on, and a few timings shortened so that one
example takes a fraction of a second; plus one ``http_request`` tag in
dry-run, so that ``gateway deliveries list`` has something to show.

``places(marks)`` returns, as bytes, everything an auditor could read
after the example: the database files (main, WAL, shared memory), the log
lines written since ``marks``, ``/metrics``, the ``/debug`` page and every
``/debug/api`` answer about the request, the output of ``gateway deliveries
list`` (and of ``dead-letters list`` and ``orders show``) against the same
file, and every request each fake received since ``marks``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, TypeVar
from urllib.parse import quote

import orjson
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.cli import main as gateway_cli
from gateway.config import load_container_text
from gateway.logs import JsonFormatter
from tests.canaries.requests import MEASUREMENT_ID, SECRET, Built
from tests.fakes.data_manager import FakeDataManager
from tests.fakes.ga4 import FakeGA4
from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.google_oauth import TokenIssuer
from tests.fakes.http_sink import HttpSink
from tests.fakes.meta_graph import MetaGraph
from tests.running import ROOT, Answer, asgi_request

T = TypeVar("T")
SAMPLE = ROOT / "examples" / "container.yaml"
META_TOKEN = "canary-meta-access-token"
GA4_API_SECRET = "canary-ga4-api-secret"
DRAIN_SECONDS = 10.0

# The sample's timings, shortened: (text in the sample, its replacement). Each must be found.
_FASTER = [
    ("  max_attempts: 10 ", "  max_attempts: 3 "),
    ("  backoff_initial: 1s", "  poll_interval: 20ms\n  backoff_initial: 10ms"),
    ("  backoff_max: 10m", "  backoff_max: 50ms"),
    ("    flush_interval: 2s", "    flush_interval: 10ms"),
]
# A dry-run copy of every event, so the CLI's list of recorded dry-run requests is not empty.
_DRY_RUN_TAG = """
  - name: audit_copy
    type: http_request
    trigger: all_events
    url: https://audit.example/events
    mode: dry_run
"""


def sample_container_text() -> str:
    text = SAMPLE.read_text(encoding="utf-8")
    for old, new in _FASTER:
        if old not in text:
            raise AssertionError(f"examples/container.yaml no longer has {old.strip()!r}: update tests/canaries/rig.py")
        text = text.replace(old, new)
    return text.rstrip("\n") + "\n" + _DRY_RUN_TAG


class LogLines(logging.Handler):
    """Every log line, as ``gateway serve`` would write it (``gateway.logs.JsonFormatter``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a line that cannot be formatted is kept as its message
            self.lines.append(str(record.msg))


@dataclass(frozen=True)
class Marks:
    """How much each record held before an example: what came after is the example's."""

    logs: int
    fakes: dict[str, int]


class _LoopThread:
    """An event loop in a thread, for the fakes (they must answer while the test thread waits)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="canary-fakes", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Rig:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db = folder / "gateway.db"
        self.config_path = folder / "container.yaml"
        self.debug_token = "canary-debug-" + secrets.token_hex(16)
        self.fakes_loop = _LoopThread()
        self.issuer = TokenIssuer()
        self.data_manager = FakeDataManager(issuer=self.issuer)
        self.google_ads = FakeGoogleAds(issuer=self.issuer)
        self.meta = MetaGraph(token=META_TOKEN)
        self.ga4 = FakeGA4(api_secrets={MEASUREMENT_ID: GA4_API_SECRET})
        self.sink = HttpSink()
        self._shared = 0  # Data Manager ingests already known to the Google Ads fake
        for fake in self._fakes():
            self.fakes_loop.run(fake.start())
        self.env = {
            "GATEWAY_STORAGE_URL": f"sqlite:///{self.db}",
            "GATEWAY_DEBUG": "true", "GATEWAY_DEBUG_TOKEN": self.debug_token,
            "ORDER_WEBHOOK_SECRET": SECRET, "SHOPIFY_WEBHOOK_SECRET": SECRET, "WOOCOMMERCE_WEBHOOK_SECRET": SECRET,
            "GOOGLE_ADS_MODE": "live", "GOOGLE_DATA_MANAGER_API_BASE": self.data_manager.url,
            "GOOGLE_ADS_API_BASE": self.google_ads.url, "GOOGLE_OAUTH_TOKEN_URL": self.data_manager.token_url,
            **{f"GOOGLE_ADS_{k.upper()}": v for k, v in self.issuer.credentials.items()},
            "GA4_MODE": "live", "GA4_COLLECT_BASE": self.ga4.url,
            "GA4_MEASUREMENT_ID": MEASUREMENT_ID, "GA4_API_SECRET": GA4_API_SECRET,
            "META_MODE": "live", "META_API_BASE": self.meta.url, "META_ACCESS_TOKEN": META_TOKEN,
            "FORWARD_MODE": "live", "FORWARD_URL": f"{self.sink.url}/hook", "FORWARD_TOKEN": "canary-forward-token",
            "GADS_ADJUSTMENT_DELAY": "0s",
        }
        text = sample_container_text()
        self.config_path.write_text(text, encoding="utf-8")
        self.logs = LogLines()
        self._levels = self._capture_logs()
        try:
            container = load_container_text(text, self.env, base_dir=SAMPLE.parent)
            self.client = TestClient(create_app(container, run_dispatcher=True), client=("127.0.0.1", 50000))
            self.client.__enter__()
        except BaseException:
            self._stop_fakes()
            raise

    def _fakes(self) -> list[Any]:
        return [self.data_manager, self.google_ads, self.meta, self.ga4, self.sink]

    def _capture_logs(self) -> dict[str, int]:
        """Our handler on the root logger; the gateway's loggers at DEBUG, the rest at INFO as in production."""
        root = logging.getLogger()
        root.addHandler(self.logs)
        levels = {"": root.level}
        root.setLevel(logging.INFO)
        for name in ("gateway", "clients", "tags", "rules"):
            levels[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.DEBUG)
        return levels

    def close(self) -> None:
        try:
            self.client.__exit__(None, None, None)
        finally:
            self._stop_fakes()

    def _stop_fakes(self) -> None:
        logging.getLogger().removeHandler(self.logs)
        for name, level in self._levels.items():
            logging.getLogger(name or None).setLevel(level)
        for fake in self._fakes():
            self.fakes_loop.run(fake.close())
        self.fakes_loop.stop()

    # -- one example ----------------------------------------------------------------------------------

    def marks(self) -> Marks:
        return Marks(len(self.logs.lines), {name: len(records) for name, records in self._records().items()})

    def send(self, request: Built) -> Answer:
        return asgi_request(self.client, request.method, request.path, query=request.query,
                            headers=request.headers, body=request.body)

    def drain(self) -> None:
        """Wait until the dispatcher has settled everything queued (delivered, or dead-lettered).

        Between two waits, what the Data Manager fake accepted becomes a conversion the Google Ads
        fake knows: one Google behind two APIs, so a retraction finds the conversion it retracts.
        """
        self._wait_for_outbox()
        self.fakes_loop.run(self._share_conversions())

    async def _share_conversions(self) -> None:
        for received in self.data_manager.ingests[self._shared:]:
            body = received.body if isinstance(received.body, dict) else {}
            for destination in body.get("destinations", []):
                for event in body.get("events", []):
                    if event.get("transactionId"):
                        self.google_ads.add_conversion(destination["productDestinationId"],
                                                       order_id=event["transactionId"])
        self._shared = len(self.data_manager.ingests)

    def _wait_for_outbox(self) -> None:
        storage = self.client.app.state.gateway.storage  # type: ignore[attr-defined]
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.client.portal.call(storage.pending_count):  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise AssertionError(f"the outbox did not drain within {DRAIN_SECONDS}s")
            time.sleep(0.01)

    def _records(self) -> dict[str, list[Any]]:
        return {
            "fake:meta": self.meta.requests, "fake:data_manager": self.data_manager.received,
            "fake:google_ads": self.google_ads.uploads, "fake:google_oauth": self.issuer.requests,
            "fake:ga4": self.ga4.hits, "fake:ga4_measurement_protocol": self.ga4.mp_requests,
            "fake:http_sink": self.sink.requests,
        }

    def new_records(self, marks: Marks, name: str) -> list[Any]:
        return list(self._records()[name][marks.fakes[name]:])

    # -- every place to search --------------------------------------------------------------------------

    def places(self, marks: Marks, answers: list[Answer], order_ids: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{self.db}{suffix}")
            out[f"database{suffix or ' (main file)'}"] = path.read_bytes() if path.exists() else b""
        out["logs"] = "\n".join(self.logs.lines[marks.logs:]).encode()
        out["/metrics"] = self._get("/metrics")
        out["gateway response"] = b"\n".join(orjson.dumps(a.headers) + a.body for a in answers)
        out.update(self._debug([a.headers.get("x-gateway-trace") for a in answers], order_ids))
        out["gateway deliveries list"] = self._cli("deliveries", "list", "--last", "20")
        out["gateway dead-letters list"] = self._cli("dead-letters", "list", "--limit", "20")
        out["gateway orders show"] = b"\n".join(self._cli("orders", "show", order_id) for order_id in order_ids)
        for name in self._records():
            out[name] = b"\n".join(_dump(r) for r in self.new_records(marks, name))
        return out

    def _get(self, path: str, query: str = "") -> bytes:
        auth = [(b"authorization", f"Bearer {self.debug_token}".encode())]
        answer = asgi_request(self.client, "GET", path, query=query.encode(), headers=auth)
        return answer.body

    def _debug(self, trace_ids: list[str | None], order_ids: list[str]) -> dict[str, bytes]:
        """The page, and every API answer that can show the requests' traces, the outbox or the ledger."""
        auth = [(b"authorization", f"Bearer {self.debug_token}".encode()), (b"content-type", b"application/json")]
        traces, explained = [], []
        for trace_id in filter(None, trace_ids):
            traces.append(self._get(f"/debug/api/traces/{trace_id}"))
            explained.append(asgi_request(self.client, "POST", "/debug/api/explain", headers=auth,
                                          body=orjson.dumps({"trace_id": trace_id})).body)
        return {
            "/debug page": self._get("/debug"),
            "/debug/api/traces": self._get("/debug/api/traces", "limit=20"),
            "/debug/api/traces/{id}": b"\n".join(traces),
            "/debug/api/explain": b"\n".join(explained),
            "/debug/api/dead-letters": self._get("/debug/api/dead-letters", "limit=20"),
            "/debug/api/dry-runs": self._get("/debug/api/dry-runs", "last=20"),
            "/debug/api/requests": self._get("/debug/api/requests", "last=20"),
            "/debug/api/orders/{id}": b"\n".join(
                self._get(f"/debug/api/orders/{quote(order_id, safe='')}") for order_id in order_ids),
        }

    def _cli(self, *args: str) -> bytes:
        """``gateway <args> --config <the same file>``, run in this process with the rig's environment."""
        out, err = io.StringIO(), io.StringIO()
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                gateway_cli([*args[:2], "--config", str(self.config_path), *args[2:]])
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return (out.getvalue() + err.getvalue()).encode()


def _dump(record: Any) -> bytes:
    """A fake's record (a dataclass, dict or bytes) as JSON, with bytes kept as text."""
    return orjson.dumps(record, default=lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
                        option=orjson.OPT_NON_STR_KEYS)
