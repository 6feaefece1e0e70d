"""The gateway running for real: uvicorn in the test's event loop, or a `gateway serve` process.

In-process runs share the event loop with the aiohttp fakes, so a test can
script a fake and watch the gateway deliver to it. ``serve_in_thread`` runs
uvicorn on a loop of its own, for synchronous callers (schemathesis).
Subprocess runs are for what only a separate process can show: SIGKILL,
SIGTERM, restart, a resource limit. Every child is stopped by its own PID,
never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence

import aiohttp
import anyio
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Container

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def asgi_request(
    client: TestClient,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    chunks: list[bytes] | None = None,
    disconnect: bool = False,
) -> Answer:
    """One request straight into the app of a started TestClient, bytes as given.

    No HTTP client in between: the query, header values and body reach the
    app exactly as passed (an HTTP client would re-encode them), and nothing
    is allocated on a client's side (for memory measurements). ``chunks``
    sends the body in pieces; ``disconnect`` makes the client go away after
    them, as a truncated upload does.
    """
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver")] + [(k.lower(), v) for k, v in (headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    pieces = list(chunks) if chunks is not None else [body]

    async def call() -> Answer:
        messages: list[dict[str, Any]] = []
        sent = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent < len(pieces):
                sent += 1
                more = sent < len(pieces) or disconnect
                return {"type": "http.request", "body": pieces[sent - 1], "more_body": more}
            if disconnect:
                return {"type": "http.disconnect"}
            await anyio.sleep_forever()  # after the response, as a server's receive does
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            messages.append(message)

        with anyio.fail_after(30):
            await client.app(scope, receive, send)
        start = next(m for m in messages if m["type"] == "http.response.start")
        body_out = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        response_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
        return Answer(start["status"], response_headers, body_out)

    assert client.portal is not None, "use the TestClient as a context manager (its lifespan must run)"
    return client.portal.call(call)


@contextlib.asynccontextmanager
async def serve_in_loop(container: Container, **app_options: Any) -> AsyncIterator[str]:
    """Run the real app under uvicorn on 127.0.0.1; yields its base URL."""
    async with serve_app_in_loop(create_app(container, **app_options)) as base:
        yield base


@contextlib.asynccontextmanager
async def serve_app_in_loop(app: Starlette, port: int | None = None) -> AsyncIterator[str]:
    """Run an app the test built (``app.state.gateway`` stays reachable) under uvicorn on 127.0.0.1."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port or free_port(), log_config=None, access_log=False, proxy_headers=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.contextmanager
def serve_in_thread(container: Container, wrap: Callable[[Starlette], Any] | None = None, **app_options: Any) -> Iterator[str]:
    """Run the real app under uvicorn on 127.0.0.1, in a thread with its own event loop; yields its base URL.

    ``wrap`` puts an ASGI app of the test's around the gateway's (a page served from the same origin, say).
    """
    app = create_app(container, **app_options)
    config = uvicorn.Config(app if wrap is None else wrap(app), host="127.0.0.1", port=free_port(), log_config=None, access_log=False, lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError(f"uvicorn did not start: {failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(15)


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll until ``predicate`` holds; fail the test when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class GatewayProcess:
    """`gateway serve` in a child process, stopped by its PID.

    ``env`` adds to (or, with a None value, removes from) the environment;
    ``file_size_limit`` sets the child's RLIMIT_FSIZE right after it starts
    (prlimit), so every file the gateway writes, SQLite's included, stops
    growing at that many bytes (EFBIG), for that process only; raise it
    again with ``set_file_size_limit``.
    """

    def __init__(
        self,
        config_path: Path,
        port: int,
        log_path: Path,
        *,
        env: Mapping[str, str | None] | None = None,
        file_size_limit: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.args = list(args)  # more options for `gateway serve` (--dispatcher inline, say)
        self.port = port
        self.log_path = log_path
        self.env = dict(env or {})
        self.file_size_limit = file_size_limit
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name, value in self.env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(self.config_path), "--port", str(self.port),
                 *self.args],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            log.close()
        if self.file_size_limit is not None:
            self.set_file_size_limit(self.file_size_limit)

    def set_file_size_limit(self, limit: int | None) -> None:
        """Set the running child's RLIMIT_FSIZE soft limit (None: unlimited); the hard limit stays as it is."""
        assert self.proc is not None
        _, hard = resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE)
        soft = resource.RLIM_INFINITY if limit is None else limit
        resource.prlimit(self.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))

    async def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.02)
        self.kill()
        raise RuntimeError("gateway did not become ready")

    async def start(self, timeout: float = 20.0) -> None:
        self.spawn()
        await self.wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL to serve, then wait until it and its children (the dispatcher process) are gone.

        The dispatcher child dies with its parent, but a moment later: a test
        that goes on at once (unmounting the disk under the outbox, say) must
        not find it still holding the files.
        """
        if self.proc is not None and self.proc.poll() is None:
            children = child_pids(self.proc.pid)
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            deadline = time.monotonic() + 10
            while any(process_exists(pid) for pid in children) and time.monotonic() < deadline:
                time.sleep(0.02)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)


def child_pids(pid: int) -> list[int]:
    """The PIDs of the live (not zombie) processes whose parent is ``pid``, read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if int(fields[1]) == pid and fields[0] != "Z":
            children.append(int(entry))
    return children


def process_exists(pid: int) -> bool:
    """``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class SQLiteWriteLock:
    """Another process holding a SQLite file's write lock (``BEGIN IMMEDIATE``) for the ``with`` block.

    The child takes the lock, says so on stdout, and holds it until its stdin
    closes; it is then stopped by its PID if it has not ended by itself.
    """

    _HOLD = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "SQLiteWriteLock":
        self.proc = subprocess.Popen([sys.executable, "-c", self._HOLD, str(self.path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"locked":
            self.release()
            raise RuntimeError(f"could not lock {self.path}")
        return self

    def release(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self.release()
