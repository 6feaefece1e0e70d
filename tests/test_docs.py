"""The documentation stays true: the generated reference, the tables of variables and metrics, and every link.

docs/configuration.md's reference is printed from the config models, so it
is compared with what `gateway config-reference` prints now. The
environment and metric tables are written by hand, so they are compared with
what the code, the image and the sample container actually use. Every
relative link in the README and under docs/ must name a file that exists and,
with a `#fragment`, a heading of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import load_container_text
from gateway.reference import BEGIN, END, config_reference, splice
from tests.running import ROOT

DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text(encoding="utf-8")
OPERATIONS = (DOCS / "operations.md").read_text(encoding="utf-8")
ENV_DOC = (DOCS / "configuration-env.md").read_text(encoding="utf-8")
SAMPLE = (ROOT / "examples" / "container.yaml").read_text(encoding="utf-8")
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SOURCE_FOLDERS = ("gateway", "clients", "tags", "rules")


def section(text: str, heading: str) -> str:
    """The text under ``## heading``, up to the next ``## ``."""
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def table_of(text: str, heading: str) -> set[str]:
    """The variables in the first column of the table under ``heading``."""
    return set(re.findall(r"^\| `([A-Z_][A-Z0-9_]*)` \|", section(text, heading), re.MULTILINE))


def sources() -> list[str]:
    return [p.read_text(encoding="utf-8") for folder in SOURCE_FOLDERS for p in (ROOT / folder).rglob("*.py")]


def test_the_configuration_reference_is_the_one_the_models_generate():
    start, end = CONFIGURATION.index(BEGIN), CONFIGURATION.index(END) + len(END)

    assert CONFIGURATION[start:end] == config_reference(), (
        "docs/configuration.md is stale: regenerate it with `python -m gateway.reference docs/configuration.md`"
    )


def test_splice_replaces_only_the_generated_part():
    page = f"# Configuration\n\n{BEGIN}\nold tables\n{END}\n\nafter\n"

    assert splice(page) == f"# Configuration\n\n{config_reference()}\n\nafter\n"


def test_every_gateway_variable_the_code_the_image_and_the_sample_use_is_in_the_one_table():
    used = {name for text in sources() + [SAMPLE, DOCKERFILE] for name in re.findall(r"\bGATEWAY_[A-Z_]+\b", text)}

    assert used and used - table_of(OPERATIONS, "Environment variables") == set()


def test_every_variable_the_sample_container_reads_is_documented():
    read = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", SAMPLE))
    documented = table_of(OPERATIONS, "Environment variables") | table_of(
        ENV_DOC, "Read by the sample container (`examples/container.yaml`)"
    )

    assert read and read - documented == set()


def test_the_images_environment_puts_a_container_without_storage_in_the_data_volume():
    env = dict(re.findall(r"^\s+(GATEWAY_[A-Z_]+)=(\S+?)\s*\\?$", DOCKERFILE, re.MULTILINE))

    container = load_container_text("clients:\n  - type: ga4\n", env)

    assert (env["GATEWAY_CONFIG"], container.file.storage.url) == ("/config/container.yaml", "sqlite:////data/gateway.db")


def test_every_metric_the_gateway_exports_is_in_the_metrics_table():
    definitions = [m for text in sources() for m in re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"(gateway_[a-z_]+)"', text)]
    table = section(OPERATIONS, "Metrics")
    rows = set(re.findall(r"^\| `(gateway_[a-z_]+)` \|", table, re.MULTILINE))

    names = {f"{name}_total" if kind == "Counter" else name for kind, name in definitions}
    assert len(definitions) > 20 and names - rows == set()


# --- links ----------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without fenced blocks and inline code, where a bracket is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a markdown text (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", text), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_anchors_are_made_as_github_makes_them():
    text = "# Tags\n## Trust boundary: only the order system moves money\n### tag `ga4` (plus `name`)\n## Tags\n```\n# a comment\n```\n"

    assert anchors(text) == {"tags", "trust-boundary-only-the-order-system-moves-money", "tag-ga4-plus-name", "tags-1"}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: ...


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif fragment and (file.suffix != ".md" or fragment not in anchors(file.read_text(encoding="utf-8"))):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path):
    assert broken_links(page) == []


def test_a_missing_file_or_heading_is_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n## Going live\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\nSee [a](other.md), [b](other.md#going-live), [c](#page), [d](https://example.com/x),\n"
        "[e](missing.md), [f](other.md#gone), [g](#nowhere), ![h](missing.png) and `[i](in-code.md)`.\n"
        "```\n[j](in-a-block.md)\n```\n",
        encoding="utf-8",
    )

    assert broken_links(page) == ["missing.md", "other.md#gone", "#nowhere", "missing.png"]


def test_the_link_check_sees_the_links_it_checks():
    links = relative_links(ROOT / "README.md")

    assert "docs/configuration.md" in links and "#set-up" in links
