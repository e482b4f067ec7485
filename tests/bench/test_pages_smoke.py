"""bench/pages.py, one tiny step: 2 instruments, 1 timed request per page, JSON into a temporary
directory. It checks the machinery, not the speed: a row per page with its query count. Timings are
never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from bench import pages

ROOT = Path(__file__).resolve().parents[2]


def check_result(out: Path) -> dict:
    [path] = out.glob("pages-*.json")
    result = json.loads(path.read_text())
    rows = {row["page"]: row for row in result["rows"]}
    assert set(rows) == {name for name, _ in pages.PAGES}
    for name, row in rows.items():
        assert row["instruments"] == 2 and row["status"] == 200, row
        assert isinstance(row["queries"], int) and row["queries"] > 0, row
        assert row["p50_ms"] > 0 and row["p95_ms"] >= row["p50_ms"] and row["cpu_p50_ms"] >= 0, row
    return result


@pytest.mark.django_db
def test_main_measures_every_page_in_the_tests_database(tmp_path):
    """Inside a process whose Django is configured (this test's), main() uses that database."""
    code = pages.main(["--instruments", "2", "--repeat", "1", "--small-history", "--out", str(tmp_path)])

    assert code == 0
    assert check_result(tmp_path)["database"] == connection.vendor


def test_the_command_builds_its_own_sqlite_database(tmp_path):
    """As a command: a throw-away SQLite database, migrated, seeded, measured, removed."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "pages.py"), "--instruments", "2", "--repeat", "1",
                           "--small-history", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    assert check_result(tmp_path)["database"] == "sqlite"
    assert "board snapshot" in done.stdout
