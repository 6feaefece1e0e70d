"""The ``gateway`` command never prints a credential: listings of stored records, and errors in container files."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from tests.test_cli import gateway, no_traceback, problems

SECRET = "s3cr3t-value-that-must-not-print"
PASSWORD = "db-password-must-not-print"


def _container(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"storage: {{url: 'sqlite:///{tmp_path / 'g.db'}'}}\nclients:\n  - type: ga4\n", encoding="utf-8")
    return path


def _stored_by_an_older_version(tmp_path: Path) -> Path:
    """A database whose rows were written before credentials were masked on the way in."""
    config = _container(tmp_path)
    done = gateway("db", "migrate", "--config", str(config))
    assert done.returncode == 0, done.stderr
    request = {
        "method": "POST",
        "url": f"https://hook-user:{PASSWORD}@hooks.example/in?api_key={SECRET}-q&keep=visible",
        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}-auth",
                    "X-Api-Key": f"{SECRET}-key", "X-Shop-Token": f"{SECRET}-shop"},
        "body": {"event_name": "page_view", "access_token": f"{SECRET}-body"},
    }
    now = time.time()
    with sqlite3.connect(tmp_path / "g.db") as db:
        db.execute("INSERT INTO dry_runs (destination, batch_key, item_count, request, recorded_at) VALUES (?,?,?,?,?)",
                   ("http_request", "forward", 1, orjson.dumps(request).decode(), now))
        db.execute(
            "INSERT INTO dead_letters (destination, batch_key, idempotency_key, tag, item, attempts, code, message,"
            " created_at, failed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ("http_request", "forward", "http_request:forward:ev-1", "forward", b"{}", 3, "http_400",
             f'HTTP 400: {{"authorization": "Bearer {SECRET}-echo", "url": "/in?token={SECRET}-t"}}', now, now))
    return config


def test_deliveries_list_masks_credentials_even_in_records_stored_unmasked(tmp_path: Path) -> None:
    config = _stored_by_an_older_version(tmp_path)

    done = gateway("deliveries", "list", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout and PASSWORD not in done.stdout
    (record,) = orjson.loads(done.stdout)
    assert record["request"]["url"] == "https://***@hooks.example/in?api_key=***&keep=visible"
    assert record["request"]["headers"] == {"Content-Type": "application/json", "Authorization": "***",
                                            "X-Api-Key": "***", "X-Shop-Token": "***"}
    assert record["request"]["body"] == {"event_name": "page_view", "access_token": "***"}


def test_dead_letters_list_masks_credentials_a_vendor_echoed(tmp_path: Path) -> None:
    config = _stored_by_an_older_version(tmp_path)

    done = gateway("dead-letters", "list", "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    (letter,) = orjson.loads(done.stdout)
    assert letter["code"] == "http_400" and letter["idempotency_key"] == "http_request:forward:ev-1"
    assert letter["message"].startswith("HTTP 400: ") and "***" in letter["message"]


# -- container files: an error names file, line, column and kind, never the line's value -------------------


@pytest.mark.parametrize(("text", "line", "column"), [
    pytest.param(f"clients:\n  - type: ga4\ntags:\n  - name: forward\n    headers: {{Authorization: Bearer {SECRET}\n",
                 6, 1, id="unclosed_flow_mapping"),
    pytest.param(f"clients:\n  - type: ga4\n    api_secret: \"{SECRET}\n", 4, 1, id="unclosed_quote"),
    pytest.param(f"clients:\n  - type: ga4\ntoken: {SECRET}: more\n", 3, 40, id="colon_in_a_plain_value"),
    pytest.param(f"clients:\n  - type: ga4\n\tkey: {SECRET}\n", 3, 1, id="tab_indent"),
    pytest.param(f"a: &x 1\nb: *{SECRET}\n", 2, 4, id="undefined_alias_named_like_the_secret"),
])
def test_a_yaml_syntax_error_prints_file_line_column_and_kind_only(tmp_path: Path, text: str, line: int,
                                                                    column: int) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")

    done = gateway("validate", str(path))

    assert done.returncode == 1
    no_traceback(done)
    assert SECRET not in done.stderr + done.stdout
    (problem,) = problems(done)
    assert re.fullmatch(rf"\(file\): not valid YAML at line {line}, column {column}: [a-z][a-z ,]+", problem), problem
    assert done.stderr.startswith(f"{path}: 1 error(s)")


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(f"clients:\n  - type: ga4\n    measurement_ids: {SECRET}\n",
                 "clients[0] (ga4).measurement_ids: Input should be a valid list", id="wrong_type"),
    pytest.param(f"clients:\n  - type: ga4\n    api_secret: {SECRET}\n",
                 "clients[0] (ga4).api_secret: Extra inputs are not permitted", id="unknown_key"),
    pytest.param("clients:\n  - type: ga4\ntags:\n  - {name: t, type: http_request, trigger: x, "
                 f"url: 'ftp://{SECRET}@h/'}}\n", None, id="bad_url"),
    pytest.param("clients:\n  - type: ga4\ntags:\n  - {name: t, type: http_request, trigger: x, "
                 f"url: 'https://h/', headers: {{X-Key: \"{SECRET}\\nX\"}}}}\n", None, id="bad_header_value"),
])
def test_a_validation_error_names_the_field_never_the_value(tmp_path: Path, text: str, expected: str | None) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")

    done = gateway("validate", str(path))

    assert done.returncode == 1
    no_traceback(done)
    assert SECRET not in done.stderr + done.stdout
    if expected is not None:
        assert expected in problems(done)
