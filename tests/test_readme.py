"""The README stays true: its config reference is the models', its test command is CI's."""

from __future__ import annotations

import re

from gateway.reference import BEGIN, END, config_reference
from tests.running import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_config_reference_is_generated_from_the_models():
    start, end = README.index(BEGIN), README.index(END) + len(END)

    assert README[start:end] == config_reference()


def test_ci_runs_the_readme_test_command_verbatim():
    commands = re.findall(r"```sh\n(python3 -m venv .*?)\n```", README)
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    assert test_command in ci.splitlines()


def test_readme_documents_every_metric_the_gateway_exports():
    source = (ROOT / "gateway" / "metrics.py").read_text(encoding="utf-8")
    names = re.findall(r'(?:Counter|Gauge|Histogram)\(\s*"(gateway_[a-z_]+)"', source)
    counters = set(re.findall(r'Counter\(\s*"(gateway_[a-z_]+)"', source))

    missing = [n for n in names if (f"`{n}_total`" if n in counters else f"`{n}`") not in README]
    assert names and missing == []
