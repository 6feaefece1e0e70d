"""The README stays what a newcomer finishes in ten minutes, and CI runs what it says.

Everything beyond the first steps lives under docs/ (tests/test_docs.py
keeps those pages true); here: the README's length, its table of contents,
its test command being CI's, and CI running its commands from a fresh clone.
"""

from __future__ import annotations

import re

from tests.running import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
MAX_LINES = 300


def test_readme_is_at_most_300_lines():
    assert len(README.splitlines()) <= MAX_LINES


def test_ci_runs_the_readme_test_command_verbatim():
    commands = re.findall(r"```sh\n(python3 -m venv .*?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)

    assert test_command in CI.splitlines()


def test_ci_runs_the_readmes_commands_from_a_fresh_clone_after_the_test_command():
    lines = CI.splitlines()
    test_command = next(i for i, line in enumerate(lines) if "-m pytest" in line and not line.startswith("#"))
    readme_runs = [i for i, line in enumerate(lines) if line.strip() == "bash .ci/readme"]

    assert (ROOT / ".ci" / "readme").is_file()
    assert len(readme_runs) == 1 and readme_runs[0] > test_command


def test_the_table_of_contents_links_every_section_of_the_readme():
    sections = re.findall(r"^## (.+)$", README, re.MULTILINE)
    contents = README.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    linked = re.findall(r"^- \[([^\]]+)\]\(#", contents, re.MULTILINE)

    assert linked == [s for s in sections if s != "Contents"]


def test_every_page_under_docs_is_linked_from_the_readme():
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", README))

    assert pages and [p for p in pages if p not in linked] == []
