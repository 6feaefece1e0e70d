"""``gateway serve``'s app reads the country names' tables before it answers anything.

Reading them takes about a second (pycountry's names and their translations).
Read on the first webhook that names a country (``"country": "Germany"``),
that second would be spent inside the SQLite writer's transaction, where the
order ledger's step runs, and every request's commit would wait with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
from gateway.app import app_from_env
from gateway.identity import countries
app_from_env()
print(countries._by_translated_name.cache_info().currsize, countries._by_name.cache_info().currsize)
"""


def test_the_served_app_has_read_the_country_tables_before_its_first_request(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_CONFIG": str(ROOT / "examples/container.yaml"),
           "GATEWAY_STORAGE_URL": f"sqlite:///{tmp_path / 'g.db'}"}
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]
