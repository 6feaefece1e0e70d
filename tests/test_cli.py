"""The ``gateway`` command as an operator meets it: one line per problem, exit status 1, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.postgres import url_of
from tests.running import ROOT

SECRET = "cli-test-secret-0123456789"  # 26 bytes: long enough

GOOD = """
clients:
  - type: ga4
"""


def gateway(*args: str, cwd: Path = ROOT, env: dict[str, str | None] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m gateway.cli ARGS`` with the environment given (None removes a variable)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "ORDER_WEBHOOK", "SHOPIFY", "WOOCOMMERCE"))}
    full["PYTHONPATH"] = str(ROOT)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def problems(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines of a refused file (after its "N error(s)" heading), stripped."""
    return [line.strip() for line in done.stderr.splitlines()[1:]]


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout
    assert "Error:" not in done.stderr.split(":", 1)[0]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(GOOD + "storage: {url: 'mysql://gw:pw@db/gw'}\n",
                 ["storage.url: expected sqlite:///relative/path, sqlite:////absolute/path or postgresql://..."],
                 id="storage_url_scheme"),
    pytest.param(GOOD + "storage: {url: 'postgresql://gw:p#ss@db:5432/gw'}\n",
                 ["storage.url: a postgresql:// URL has no #fragment (is a '#' in the password unescaped? write it as %23)"],
                 id="hash_in_the_password"),
    pytest.param(GOOD + "storage: {url: 'postgresql://gw:pw@db:54x2/gw'}\n",
                 ["storage.url: not a valid postgresql:// URL (check the host and port)"],
                 id="port_not_a_number"),
    pytest.param(GOOD + "orders: {retention: 180}\n",
                 ["orders.retention: a duration needs a unit: 180s, 180m, 180h or 180d (ms, s, m, h, d)"],
                 id="duration_without_a_unit"),
    pytest.param(GOOD + "delivery: {lease: '60'}\n",
                 ["delivery.lease: a duration needs a unit: 60s, 60m, 60h or 60d (ms, s, m, h, d)"],
                 id="duration_text_without_a_unit"),
    pytest.param("", ["clients: no clients configured: the gateway would answer 404 to every request"],
                 id="empty_file"),
    pytest.param("consent: {default: {ad_storage: granted}}\n",
                 ["clients: no clients configured: the gateway would answer 404 to every request"],
                 id="container_without_clients"),
    pytest.param("clients:\n  - type: shopify\n    secret: ${SHOPIFY_NOT_SET_ANYWHERE}\n",
                 ["clients[0].secret: environment variable SHOPIFY_NOT_SET_ANYWHERE is not set "
                  "(write ${SHOPIFY_NOT_SET_ANYWHERE:-default} to give it a default)"],
                 id="unknown_env_variable_without_default"),
    pytest.param(GOOD + "storage: {url: '${GATEWAY_DB:sqlite:///x.db}'}\n",
                 ["storage.url: ${GATEWAY_DB:...} is not a valid reference: write ${NAME} or ${NAME:-default}"],
                 id="malformed_env_reference"),
])
def test_validate_reports_what_serve_would_fail_on_one_line_each(tmp_path, text, expected):
    path = tmp_path / "container.yaml"
    path.write_text(text)

    done = gateway("validate", "--config", str(path))

    assert (done.returncode, problems(done)) == (1, expected), done.stderr
    no_traceback(done)


@pytest.mark.parametrize(("variable", "value", "expected"), [
    pytest.param("ORDER_WEBHOOK_SECRET", None,
                 "clients[0] (order_webhook).secret: change-me is a placeholder, not a secret; "
                 "set ORDER_WEBHOOK_SECRET to the secret the sender signs with (16 bytes or more)",
                 id="placeholder_default"),
    pytest.param("ORDER_WEBHOOK_SECRET", "short-secret",
                 "clients[0] (order_webhook).secret: shorter than 16 bytes; "
                 "set ORDER_WEBHOOK_SECRET to the secret the sender signs with (16 bytes or more)",
                 id="too_short"),
    pytest.param("ORDER_WEBHOOK_SECRET", "changeme-changeme-changeme",
                 "clients[0] (order_webhook).secret: changeme-... is a placeholder, not a secret; "
                 "set ORDER_WEBHOOK_SECRET to the secret the sender signs with (16 bytes or more)",
                 id="long_placeholder"),
])
def test_a_webhook_secret_with_a_public_or_short_value_is_refused_naming_the_variable(tmp_path, variable, value, expected):
    path = tmp_path / "container.yaml"
    path.write_text("clients:\n  - type: order_webhook\n    secret: ${ORDER_WEBHOOK_SECRET:-change-me}\n")

    validated = gateway("validate", "--config", str(path), env={variable: value})
    served = gateway("serve", "--config", str(path), "--port", "9", env={variable: value})

    assert (validated.returncode, problems(validated)) == (1, [expected])
    assert (served.returncode, problems(served)) == (1, [expected])
    no_traceback(validated)
    no_traceback(served)


def test_a_webhook_secret_written_into_the_file_is_refused_with_the_variable_to_use(tmp_path):
    path = tmp_path / "container.yaml"
    path.write_text("clients:\n  - type: shopify\n    secret: abc\n")

    done = gateway("validate", "--config", str(path))

    assert problems(done) == ["clients[0] (shopify).secret: shorter than 16 bytes; write ${SHOPIFY_WEBHOOK_SECRET} "
                              "here and set SHOPIFY_WEBHOOK_SECRET to the secret the sender signs with (16 bytes or more)"]


def test_a_webhook_client_without_its_secret_is_switched_off_with_one_warning(tmp_path):
    path = tmp_path / "container.yaml"
    path.write_text("clients:\n  - type: ga4\n  - type: shopify\n    secret: ${SHOPIFY_WEBHOOK_SECRET:-}\n")

    done = gateway("validate", "--config", str(path))

    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: clients[1] (shopify) is switched off: SHOPIFY_WEBHOOK_SECRET is not set; "
        "POST /webhooks/shopify answers 503 until it is"
    ]
    assert done.stdout.startswith(f"{path}: ok (1 client, 1 switched off,")


@pytest.mark.parametrize("how", ["flag", "environment", "positional"])
def test_validate_takes_the_file_like_every_subcommand(tmp_path, how):
    path = tmp_path / "container.yaml"
    path.write_text(GOOD)
    args = {"flag": ["--config", str(path)], "environment": [], "positional": [str(path)]}[how]

    done = gateway("validate", *args, env={"GATEWAY_CONFIG": str(path)} if how == "environment" else None)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{path}: ok")


def test_validate_without_a_file_says_how_to_give_one():
    done = gateway("validate")

    assert (done.returncode, done.stderr.strip()) == (1, "gateway: no container file: pass --config FILE or set GATEWAY_CONFIG")


def test_files_that_cannot_be_read_as_text_give_one_line(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"clients:\n  - type: ga4 \xff\xfe\n")
    directory = tmp_path / "folder.yaml"
    directory.mkdir()

    results = {name: gateway("validate", "--config", str(path))
               for name, path in [("binary", binary), ("directory", directory), ("missing", tmp_path / "nope.yaml")]}

    assert {name: (done.returncode, done.stderr.strip()) for name, done in results.items()} == {
        "binary": (1, f"gateway: {binary}: not UTF-8 text (byte 0xff on line 2)"),
        "directory": (1, f"gateway: {directory}: is a directory, not a container file"),
        "missing": (1, f"gateway: {tmp_path / 'nope.yaml'}: no such file"),
    }


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_gives_one_line(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text(GOOD)
    path.chmod(0)

    done = gateway("validate", "--config", str(path))

    assert (done.returncode, done.stderr.strip()) == (1, f"gateway: {path}: cannot read it (permission denied)")


def test_a_relative_sqlite_path_is_relative_to_the_container_file(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "container.yaml").write_text(GOOD + "storage: {url: 'sqlite:///data/gateway.db'}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    migrated = gateway("db", "migrate", "--config", "conf/container.yaml", cwd=tmp_path)
    listed = gateway("deliveries", "list", "--config", str(conf / "container.yaml"), cwd=elsewhere)

    assert migrated.returncode == 0, migrated.stderr
    assert (conf / "data" / "gateway.db").is_file()
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    assert not (tmp_path / "data").exists() and not (elsewhere / "data").exists()


def test_gateway_storage_url_is_the_storage_of_a_container_that_names_none(tmp_path):
    path = tmp_path / "container.yaml"
    path.write_text(GOOD)
    database = tmp_path / "volume" / "gateway.db"

    done = gateway("db", "migrate", "--config", str(path), env={"GATEWAY_STORAGE_URL": f"sqlite:///{database}"})

    assert done.returncode == 0, done.stderr
    assert database.is_file()


def test_serve_on_a_storage_it_cannot_create_says_so_in_one_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be")
    path = tmp_path / "container.yaml"
    path.write_text(GOOD + f"storage: {{url: 'sqlite:///{blocker}/data/gateway.db'}}\n")

    done = gateway("serve", "--config", str(path), "--port", "9")

    assert done.returncode == 1
    assert done.stderr.strip() == f"gateway: storage.url: cannot create the directory {blocker}/data: Not a directory"
    no_traceback(done)


def test_storage_commands_on_a_postgresql_that_is_not_there_name_host_port_and_database(tmp_path):
    path = tmp_path / "container.yaml"
    path.write_text(GOOD + "storage: {url: 'postgresql://gw:hunter2-password@127.0.0.1:1/orders'}\n")

    done = gateway("dead-letters", "list", "--config", str(path))

    assert done.returncode == 1
    assert done.stderr.strip() == (
        'gateway: cannot open the storage: postgresql: cannot connect to 127.0.0.1:1 (database "orders", user "gw"): '
        "connection refused; is PostgreSQL running and listening there?"
    )
    assert "hunter2" not in done.stderr
    no_traceback(done)


def test_a_postgresql_database_that_does_not_exist_is_named_with_what_to_do(tmp_path):
    name = f"gw_test_missing_{os.getpid()}"
    path = tmp_path / "container.yaml"
    path.write_text(GOOD + f"storage: {{url: '{url_of(name)}'}}\n")
    server = urlsplit(url_of(name))

    done = gateway("db", "migrate", "--config", str(path))

    assert done.returncode == 1
    assert done.stderr.strip() == (
        f'gateway: cannot open the storage: postgresql: database "{name}" does not exist on '
        f'{server.hostname}:{server.port or 5432} (user "{server.username}"); create it first: '
        f'createdb -h {server.hostname} -p {server.port or 5432} -U {server.username} {name}'
    )
    no_traceback(done)
