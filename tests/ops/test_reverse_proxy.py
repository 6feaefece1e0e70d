"""docs/reverse-proxy.md's nginx block, run as written in front of a real ``gateway serve``.

nginx (Debian's ``nginx`` package) listens with TLS on 127.0.0.1; the test
client connects from 127.0.0.2, so the address nginx passes on differs from
nginx's own, which is the only one the gateway trusts. nginx and the gateway
are stopped by their PIDs.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import aiohttp
import orjson
import pytest

from tests.running import ROOT, GatewayProcess, free_port

DOC = ROOT / "docs" / "reverse-proxy.md"
SECRET = "proxy-test-secret-0123456789"
CLIENT_ADDRESS = "127.0.0.2"

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="nginx or openssl not on PATH: apt-get install nginx openssl",
)


def nginx_block() -> str:
    [block] = re.findall(r"```nginx\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return block


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"the documented block no longer says {old!r}"
    return text.replace(old, new)


@contextlib.contextmanager
def nginx_in_front(tmp_path: Path, gateway_port: int) -> Iterator[int]:
    """The documented block with its ports and certificate paths pointed at this test; yields nginx's port."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=collect.shop.example", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    port = free_port()
    block = nginx_block()
    block = replaced(block, "server 127.0.0.1:8080;", f"server 127.0.0.1:{gateway_port};")
    block = replaced(block, "listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
    block = replaced(block, "/etc/ssl/collect.shop.example/fullchain.pem", str(tmp_path / "cert.pem"))
    block = replaced(block, "/etc/ssl/collect.shop.example/privkey.pem", str(tmp_path / "key.pem"))
    (tmp_path / "gateway.conf").write_text(block)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    # The harness around the block: what /etc/nginx/nginx.conf provides on a real host.
    (tmp_path / "nginx.conf").write_text(f"""
user root root;
worker_processes 1;
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {tmp_path}/gateway.conf;
}}
""")
    proc = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
                                   f"{(tmp_path / 'error.log').read_text() if (tmp_path / 'error.log').exists() else ''}")
            time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def stored_addresses(db: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        items = [orjson.loads(item) for (item,) in conn.execute("SELECT item FROM outbox")]
    return {item["event_id"]: item.get("ip_override") for item in items if item.get("event_id")}


async def test_the_documented_nginx_block_serves_hits_and_webhooks_over_tls_and_cannot_be_spoofed(tmp_path):
    db = tmp_path / "g.db"
    config = tmp_path / "container.yaml"
    config.write_text(f"""
storage: {{url: "sqlite:///{db}"}}
server:
  trusted_proxies: ["127.0.0.1/32"]
clients:
  - type: ga4
  - type: json_beacon
  - type: order_webhook
    secret: {SECRET}
triggers:
  everything: {{all: []}}
tags:
  - {{name: forward, type: http_request, trigger: everything, url: "https://hooks.example/e", mode: dry_run}}
""")
    (tmp_path / "nginx").mkdir()
    gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
    await gateway.start()
    try:
        with nginx_in_front(tmp_path / "nginx", gateway.port) as port:
            base = f"https://127.0.0.1:{port}"
            connector = aiohttp.TCPConnector(ssl=False, local_addr=(CLIENT_ADDRESS, 0))
            async with aiohttp.ClientSession(connector=connector, headers={"Host": "collect.shop.example"}) as session:
                async with session.get(f"{base}/g/collect?v=2&tid=G-PROXY&en=page_view&ep.event_id=forged",
                                       headers={"X-Forwarded-For": "203.0.113.66"}) as response:
                    hit = (response.status, response.headers.get("X-Gateway-Trace") is not None)
                body = orjson.dumps({"order_id": "ORD-PROXY", "event": "order_paid", "order_value": 5.0, "currency": "EUR",
                                     "event_id": "order-via-proxy"})
                signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                async with session.post(f"{base}/webhooks/order-update", data=body,
                                        headers={"X-Signature": signature, "Content-Type": "application/json"}) as response:
                    webhook = response.status
                async with session.post(f"{base}/collect", data=b"x" * 70_000,
                                        headers={"Content-Type": "text/plain"}) as response:
                    oversized = response.status
    finally:
        gateway.kill()

    assert (hit, webhook, oversized) == ((204, True), 200, 413)
    assert stored_addresses(db)["forged"] == CLIENT_ADDRESS  # not the 203.0.113.66 the client wrote
