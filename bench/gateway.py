"""One gateway under test: ``gateway serve`` on a fresh SQLite outbox, and the fakes it delivers to.

Each scenario gets its own temp dir with a container file, a SQLite database
(``synchronous: full``: an acknowledged request survives power loss, the
setting whose cost we want to see), the gateway's log and the fakes' logs.
The gateway runs pinned to the server core; the fakes run on the load core so
the gateway's core does the gateway's work only.
"""

from __future__ import annotations

import re
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import orjson
import yaml

from bench import hits, procs

ROOT = procs.ROOT
SINK_PATH = "/events"


@dataclass(frozen=True, slots=True)
class Settings:
    duration: float  # seconds of each load phase (closed loop, open loop)
    warmup: float  # seconds of warm-up load before measuring; 0 skips it
    memory_duration: float  # seconds of each memory phase (steady, outage)
    memory_rate: float | None  # requests/s of the memory phases; None: derived from the GET scenario
    connections: int
    drain_timeout: float  # seconds to wait for the outbox to empty between phases
    open_fraction: float  # open-loop rate as a fraction of the closed-loop maximum
    use_wrk: bool
    cores: procs.Cores
    workdir: Path
    smoke: bool
    dispatcher: str = "inline"  # gateway serve --dispatcher: inline (what auto picks on one pinned core) or process
    dispatcher_nice: int | None = None  # gateway serve --dispatcher-nice; None: serve's default
    synchronous: str = "full"  # SQLite's storage.synchronous: full (a 2xx survives power loss) or normal
    open_rate: float | None = None  # requests/s of the open loop, overriding open_fraction
    db_dir: Path | None = None  # where the SQLite files go (a tmpfs takes the disk out); None: the scenario's dir


# -- what the repository has today -----------------------------------------------

def order_webhook_missing() -> str | None:
    """Why the order webhook scenario cannot run yet, or None when it can."""
    if not (ROOT / "clients/order_webhook.py").exists():
        return "clients/order_webhook.py does not exist yet"
    try:
        from clients import CLIENTS
    except Exception as exc:  # noqa: BLE001 - a half-written module elsewhere must not stop the bench
        return f"clients does not import: {type(exc).__name__}: {exc}"
    return None if "order_webhook" in CLIENTS else "order_webhook is not registered in clients.CLIENTS yet"


def google_ads_missing() -> str | None:
    """Why the Google Ads scenario cannot run yet, or None when it can."""
    if not (ROOT / "tests/fakes/data_manager.py").exists():
        return "tests/fakes/data_manager.py (the fake Data Manager API) does not exist yet"
    try:
        from tags import DESTINATIONS, TAGS
    except Exception as exc:  # noqa: BLE001
        return f"tags does not import: {type(exc).__name__}: {exc}"
    if "google_ads_click_conversion" not in TAGS or "google_ads" not in DESTINATIONS:
        return "google_ads_click_conversion / google_ads are not registered in tags/__init__.py yet"
    return None


# Events per request to the sink. A collector of page views takes batches (Segment's webhook batching,
# GA4's and Meta's own APIs); one HTTP request per event would cost the gateway more than the hit itself.
SINK_BATCH_SIZE = 100


def http_sink_tag(batch_size: int = SINK_BATCH_SIZE) -> dict[str, Any]:
    """An http_request tag on every event; its url is filled in with the sink's."""
    return {"name": "forward_to_sink", "type": "http_request", "trigger": "all_events", "mode": "live",
            "batch_size": batch_size}


def standard_clients(webhook: bool) -> list[dict[str, Any]]:
    clients: list[dict[str, Any]] = [{"type": "ga4"}, {"type": "json_beacon", "allowed_origins": [hits.ORIGIN]}]
    if webhook:
        clients.append({"type": "order_webhook", "secret": hits.WEBHOOK_SECRET})
    return clients


# -- the processes -----------------------------------------------------------------

class GatewayUnderTest:
    """``gateway serve`` on a fresh SQLite outbox, with a sink standing in for the http_request destination."""

    def __init__(self, settings: Settings, name: str, tags: list[dict[str, Any]], clients: list[dict[str, Any]],
                 destinations: dict[str, Any] | None = None, *, container_file: Path | None = None) -> None:
        """A container written from ``tags``, ``clients`` and ``destinations``, or ``container_file`` as it is.

        A container file of one's own (``examples/container.yaml``) must take its storage url from
        ``${GATEWAY_STORAGE_URL}``, which is set to this gateway's fresh SQLite file, and its order
        webhook secret from ``${ORDER_WEBHOOK_SECRET}``, set to the one the bench signs with.
        """
        self.settings = settings
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.dir = Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=settings.workdir))
        db_dir = Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=settings.db_dir)) if settings.db_dir else self.dir
        self.db = db_dir / "gateway.db"
        self.port = procs.free_port()
        self.sink_port = procs.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sink_url = f"http://127.0.0.1:{self.sink_port}"
        self.env = {"GATEWAY_LOG_LEVEL": "info"}
        self.gateway: procs.Proc | None = None
        self.sink: procs.Proc | None = None
        if container_file is not None:
            self.config = container_file
            self.env |= {"GATEWAY_STORAGE_URL": f"sqlite:///{self.db}", "ORDER_WEBHOOK_SECRET": hits.WEBHOOK_SECRET}
            return
        container: dict[str, Any] = {
            "consent": {"default": dict.fromkeys(
                ("ad_storage", "analytics_storage", "ad_user_data", "ad_personalization"), "denied")},
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "storage": {"url": f"sqlite:///{self.db}", "synchronous": settings.synchronous},
            "clients": clients,
            "triggers": {"all_events": {"all": []},
                         "purchase": {"all": [{"field": "event_name", "op": "equals", "value": "purchase"}]}},
            "tags": [{**tag, "url": self.sink_url + SINK_PATH} if tag.get("type") == "http_request" else tag
                     for tag in tags],
        }
        if destinations:
            container["destinations"] = destinations
        self.config = self.dir / "container.yaml"
        self.config.write_text(yaml.safe_dump(container, sort_keys=False))

    def start_sink(self) -> None:
        self.sink = procs.Proc("sink", [sys.executable, "-m", "bench.sink", "--port", str(self.sink_port)],
                               self.settings.cores.load, self.dir / "sink.log", nice=procs.NICE_FAKE)
        self.sink.wait_http(self.sink_url + "/_stats")

    def stop_sink(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink = None

    def sink_received(self) -> int:
        if self.sink is None:
            return 0
        with urllib.request.urlopen(self.sink_url + "/_stats", timeout=5) as response:
            return int(orjson.loads(response.read())["items"])

    def start(self, *, dispatcher: bool = True, wrapper: Sequence[str] = (), env: dict[str, str] | None = None,
              timeout: float = 30.0, serve_args: Sequence[str] = ()) -> None:
        """``gateway serve`` (``bench.serve`` without the dispatcher), its argv after ``wrapper`` (e.g. valgrind).

        ``serve_args`` go to ``bench.serve`` (``--until STAGE``).
        """
        gateway = Path(sys.executable).with_name("gateway")
        if not dispatcher:
            argv = [sys.executable, "-m", "bench.serve", *serve_args]
        elif gateway.exists() and not wrapper:
            argv = [str(gateway), "serve"]
        else:
            argv = [sys.executable, "-m", "gateway.cli", "serve"]
        argv += ["--config", str(self.config), "--port", str(self.port)]
        if dispatcher:
            # Under a wrapper (callgrind) one process must do all the work it counts: the dispatcher runs inline.
            argv += ["--dispatcher", "inline" if wrapper else self.settings.dispatcher]
            if self.settings.dispatcher_nice is not None and not wrapper:
                argv += ["--dispatcher-nice", str(self.settings.dispatcher_nice)]
        self.gateway = procs.Proc("gateway", [*wrapper, *argv], self.settings.cores.server, self.dir / "gateway.log",
                                  env={**self.env, **(env or {})}, nice=procs.NICE_SERVER)
        self.gateway.wait_http(self.url + "/readyz", timeout)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return response.read().decode()

    def server_2xx(self) -> int:
        """2xx answers by the gateway's own count (gateway_requests_total)."""
        return int(metric_sum(self.metrics(), "gateway_requests_total", r'status="2\d\d"'))

    def stop(self) -> bool:
        """SIGTERM; True when the gateway shut down gracefully (outbox closed, "gateway stopped" logged).

        uvicorn re-raises SIGTERM once its shutdown is complete, so -15 is a clean exit too.
        """
        clean = False
        if self.gateway is not None:
            code = self.gateway.stop(timeout=60)
            clean = code in (0, -15) and '"gateway stopped"' in self.gateway.log_tail(20_000)
        self.stop_sink()
        return clean


def metric_sum(text: str, name: str, labels: str) -> float:
    """The sum of a metric's samples whose label set matches the regular expression ``labels``."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} ([0-9.e+-]+)$", text, re.MULTILINE):
        if re.search(labels, match.group(1)):
            total += float(match.group(2))
    return total
