"""bench/fanout.py end to end, one tiny step: 5 sockets, 5 events/s for 1 s, one round of the raw
baseline and one of Tickerwire (Daphne on a throw-away SQLite database, the real Redis layer).

It checks the machinery, not the speed: both rows are there, every socket connected, deliveries were
counted against what was expected. Timings are never asserted (bench/README.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_fanout():
    spec = importlib.util.spec_from_file_location("bench_fanout", ROOT / "bench" / "fanout.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_one_tiny_step_of_raw_and_tickerwire(tmp_path):
    fanout = load_fanout()
    out = tmp_path / "fanout.json"

    code = fanout.main(["--clients", "5", "--rates", "5", "--duration", "1", "--rounds", "1", "--out", str(out)])

    result = json.loads(out.read_text())
    rows = {row["config"]: row for row in result["rows"]}
    assert set(rows) == {"raw", "tickerwire"}, result["rows"]
    for name, row in rows.items():
        assert row["error"] is None, f"{name}: {row['error']}"
        assert row["connected"] == 5, row
        assert row["expected"] == 5 * 5
        assert 0 < row["deliveries"] <= row["expected"], row
        assert row["lost"] == row["expected"] - row["deliveries"]
        assert row["latency_ms"]["p50"] is not None and row["cpu_us_per_msg"] is not None
        assert row["verdict"] in ("ok", "slow", "over")
    assert set(result["summary"]["5"]["configs"]) == {"raw", "tickerwire"}
    assert code == 0
