"""`manage.py instruments import FILE [--dry-run]`: the catalogue import from the command line."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from feeds.catalogue import COLUMNS
from feeds.models import Instrument

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def write_csv(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "listings.csv"
    path.write_text("\n".join([",".join(COLUMNS), *lines, ""]), encoding="utf-8")
    return path


def run(*args: str) -> str:
    out = StringIO()
    call_command("instruments", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_import_then_again_reports_nothing_to_do(tmp_path):
    path = write_csv(tmp_path, "AAPL,Apple Inc.,NASDAQ,NASDAQ:AAPL,apple-inc,AAPL,AAPL", "JPM,JPMorgan,NYSE,,,,")
    out = run("import", str(path))
    assert "created AAPL" in out and "2 created, 0 updated, 0 unchanged" in out
    assert run("import", str(path)).strip() == "0 created, 0 updated, 2 unchanged"
    assert Instrument.objects.get(symbol="AAPL").insightsentry_code == "NASDAQ:AAPL"


def test_dry_run_lists_the_changes_and_writes_nothing(tmp_path):
    Instrument.objects.create(symbol="AAPL", name="Apple", exchange="NASDAQ")
    out = run("import", str(write_csv(tmp_path, "AAPL,Apple Inc.,NASDAQ,,,,", "JPM,JPMorgan,NYSE,,,,")), "--dry-run")
    assert "would create JPM" in out and "would update AAPL: name" in out
    assert "dry run: would be 1 created, 1 updated, 0 unchanged; nothing written" in out
    assert list(Instrument.objects.values_list("symbol", "name")) == [("AAPL", "Apple")]


def test_bad_lines_are_printed_and_the_command_fails_with_nothing_written(tmp_path):
    path = write_csv(tmp_path, "AAPL,Apple Inc.,NASDAQ,,,,", "AAPL,Again,NASDAQ,,,,", "X Y,Bad,NYSE,,,,")
    errors = StringIO()
    with pytest.raises(CommandError, match=r"2 error\(s\): nothing imported"):
        call_command("instruments", "import", str(path), stdout=StringIO(), stderr=errors)
    assert errors.getvalue().splitlines() == [f"{path}: line 3: symbol AAPL already on line 2",
                                              f"{path}: line 4: symbol 'X Y' is not a ticker (letters, digits, '.' and '-')"]
    assert not Instrument.objects.exists()


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read .*nope.csv: No such file or directory"):
        run("import", str(tmp_path / "nope.csv"))


def test_the_exit_code_is_non_zero_on_bad_input(tmp_path):
    """As an operator runs it: a real process, whose exit code a script can test."""
    path = write_csv(tmp_path, "AAPL,Apple,NASDAQ,NASDAQ AAPL,,,")
    done = subprocess.run([sys.executable, "manage.py", "instruments", "import", str(path), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "line 2: insightsentry_code 'NASDAQ AAPL' is not EXCHANGE:SYMBOL" in done.stderr
