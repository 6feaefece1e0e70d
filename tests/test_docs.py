"""The documentation that is not generated stays true: the environment table, and the image's environment."""

from __future__ import annotations

import re

from gateway.config import load_container_text
from tests.running import ROOT

ENV_DOC = (ROOT / "docs" / "configuration-env.md").read_text(encoding="utf-8")
SAMPLE = (ROOT / "examples" / "container.yaml").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def table_of(heading: str) -> set[str]:
    """The variables in the first column of the table under ``heading``."""
    section = ENV_DOC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", section, re.MULTILINE))


def test_every_gateway_variable_the_code_the_image_and_the_sample_use_is_documented():
    sources = [p.read_text(encoding="utf-8") for folder in ("gateway", "clients", "tags", "rules")
               for p in (ROOT / folder).rglob("*.py")] + [SAMPLE, DOCKERFILE]
    used = {name for text in sources for name in re.findall(r"\bGATEWAY_[A-Z_]+\b", text)}

    assert used and used - table_of("Read by the gateway") == set()


def test_every_variable_the_sample_container_reads_is_documented():
    read = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", SAMPLE))
    documented = table_of("Read by the gateway") | table_of("Read by the sample container (`examples/container.yaml`)")

    assert read and read - documented == set()


def test_the_images_environment_puts_a_container_without_storage_in_the_data_volume():
    env = dict(re.findall(r"^\s+(GATEWAY_[A-Z_]+)=(\S+?)\s*\\?$", DOCKERFILE, re.MULTILINE))

    container = load_container_text("clients:\n  - type: ga4\n", env)

    assert (env["GATEWAY_CONFIG"], container.file.storage.url) == ("/config/container.yaml", "sqlite:////data/gateway.db")
