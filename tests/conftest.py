"""Shared test helpers: containers written to tmp_path, the real app, fixture loading."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Container, load_container_text

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(*parts: str) -> Any:
    return json.loads((FIXTURES.joinpath(*parts)).read_text(encoding="utf-8"))


def container_from(yaml_text: str, db_path: Path, env: dict[str, str] | None = None) -> Container:
    """A container from YAML text, its SQLite file placed in the test's own folder."""
    text = textwrap.dedent(yaml_text)
    if not re.search(r"^storage:", text, re.MULTILINE):  # a top-level section, not "ad_storage:"
        text += f"\nstorage:\n  url: sqlite:///{db_path}\n"
    return load_container_text(text, env or {})


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def make_client(db_path: Path) -> Iterator[Any]:
    """Start the real app (lifespan, storage, dispatcher) over a container given as YAML."""
    opened: list[TestClient] = []

    def make(yaml_text: str, *, run_dispatcher: bool = True, env: dict[str, str] | None = None) -> TestClient:
        app = create_app(container_from(yaml_text, db_path, env), run_dispatcher=run_dispatcher)
        client = TestClient(app, raise_server_exceptions=True, client=("127.0.0.1", 50000))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)
