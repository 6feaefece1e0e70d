"""PostgreSQL restarted under load: the gateway answers 503 while it cannot commit, and recovers by itself.

The test runs a PostgreSQL server of its own (initdb in a temporary folder,
its own port and socket folder, started and stopped with ``pg_ctl``), so
the machine's server is left alone. Its binaries: ``PG_BIN``, else the
newest ``/usr/lib/postgresql/<version>/bin``, else ``initdb`` on the PATH. As root, initdb and pg_ctl run as the
``postgres`` OS user (PostgreSQL refuses to run as root) in a folder that
user owns.

Under load the server is stopped (``pg_ctl stop -m fast``: sessions are
ended, open transactions rolled back) and started again a moment later.
Meanwhile every request that needs a commit gets 503 with Retry-After,
/readyz says 503, and a malformed request still gets its 400. Nobody
restarts the gateway: once PostgreSQL is back, the same process takes
requests again, its dispatcher resumes, and every request sent again
(as its Retry-After told the sender) is delivered exactly once.

A request whose COMMIT was in flight when the server went away may have
been committed although its sender got a 503; sending it again is then a
no-op (idempotency and request keys), which the exact count checks.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.google_ads import FakeGoogleAds
from tests.faults.harness import (
    LoadGenerator,
    Tally,
    container_yaml,
    google_ads_arrivals,
    postgres_backend_missing,
    sink_arrivals,
    sink_on,
)
from tests.running import GatewayProcess, free_port, wait_until

pytestmark = pytest.mark.skipif(postgres_backend_missing() is not None, reason="PostgreSQL backend not available")

def _pg_bin() -> Path:
    """PG_BIN, else the newest /usr/lib/postgresql/<version>/bin, else the folder of initdb on the PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    installed = [p for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parts[-3].isdigit()]
    if installed:
        return max(installed, key=lambda p: int(p.parts[-3])).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


class PostgresServer:
    """A throwaway PostgreSQL cluster: its own data folder, port and socket folder; stopped and removed by the test."""

    def __init__(self, port: int) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (set PG_BIN)")
        self.port = port
        self.as_user: list[str] = []
        owner = None
        if os.geteuid() == 0:  # postgres refuses root: run its tools as the postgres OS user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres OS user to run PostgreSQL as")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.folder = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        if owner is not None:
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *command: str, timeout: float = 60) -> None:
        done = subprocess.run([*self.as_user, *command], capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{command[0]} failed: {done.stderr.strip() or done.stdout.strip()}"

    def init(self) -> None:
        self._pg(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                 "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "30",
                 "start")

    def stop(self) -> None:
        self._pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                            "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


async def _ready(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/readyz") as response:
        return response.status


async def test_a_postgresql_restart_under_load_gets_503s_then_the_same_process_recovers_and_loses_nothing(tmp_path):
    tally = Tally()
    server = PostgresServer(free_port())
    sink_port = free_port()
    try:
        server.init()
        server.start()
        async with FakeGoogleAds() as fake:
            sink = await sink_on(sink_port)
            config = tmp_path / "container.yaml"
            config.write_text(container_yaml(storage_url=server.url, sink_port=sink_port, fake=fake))
            gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
            try:
                await gateway.start()
                async with LoadGenerator(gateway.url, tally, patient=False) as load, aiohttp.ClientSession() as probe:
                    numbers = iter(range(100_000))
                    stop = asyncio.Event()
                    refused: list[int] = []  # request numbers answered 503: sent again later

                    async def sender() -> None:
                        while not stop.is_set():
                            n = next(numbers)
                            if await load.mixed(n) == 503:
                                refused.append(n)

                    senders = [asyncio.create_task(sender()) for _ in range(3)]
                    try:
                        await asyncio.sleep(1.0)
                        stopped_at = time.monotonic()
                        await asyncio.to_thread(server.stop)
                        await wait_until(lambda: len(refused) >= 10, timeout=15)
                        assert await _ready(probe, gateway.url) == 503
                        assert load.last_503 is not None and load.last_503["retry-after"] == "5"
                        await asyncio.sleep(1.5)  # down for a while: the pool's reconnects fail too
                        await asyncio.to_thread(server.start)
                        back_at = time.monotonic()
                        pid_before = gateway.pid

                        async def ready_again() -> bool:
                            return await _ready(probe, gateway.url) == 200

                        await wait_until(ready_again, timeout=20, interval=0.05)
                        ready_at = time.monotonic()
                        await asyncio.sleep(1.0)  # served normally again, under load
                    finally:
                        stop.set()
                        await asyncio.gather(*senders)
                    assert gateway.running() and pid_before == gateway.pid, "the gateway had to be restarted"

                    load.patient = True  # the senders come back, as Retry-After told them
                    for n in refused:
                        assert await load.mixed(n) in (200, 204)

                await wait_until(lambda: tally.expected["http_request"] <= set(sink_arrivals(sink))
                                 and tally.expected["google_ads"] <= {r.get("orderId") for r in fake.accepted["click"]},
                                 timeout=30, interval=0.1)
                await asyncio.sleep(1.5)  # a lease more: late duplicates are counted too
            finally:
                gateway.kill()
                await sink.close()
            counts = tally.settle({"http_request": sink_arrivals(sink), "google_ads": google_ads_arrivals(fake)},
                                  title="PostgreSQL restarted under load")
            print(f"  answered 503 while PostgreSQL was down ({back_at - stopped_at:.1f}s): {len(refused)} requests, "
                  f"all sent again and accepted; /readyz 200 again {ready_at - back_at:.2f}s after it was back")
    finally:
        await asyncio.to_thread(server.remove)
    assert tally.undecided == {}
    assert (counts.lost, counts.unexpected) == (0, 0)
    assert counts.delivered == counts.accepted > 50
