"""bench/ingest.py end to end, one tiny step: the news kind on SQLite, a few hundred events through a
real simulator and a real `runfeed` worker process, the real Redis.

It checks the machinery, not the speed: the row is there, the worker took every frame, stored and
published what the frames held, and its CPU was read. Timings are never asserted (bench/README.md)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_bench(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_one_tiny_run_of_news_on_sqlite(tmp_path):
    ingest = load_bench("ingest")
    out = tmp_path / "ingest.json"

    code = ingest.main(["--kinds", "news", "--databases", "sqlite", "--events", "300", "--instruments", "20",
                        "--out", str(out)])

    result = json.loads(out.read_text())
    [row] = result["rows"]
    assert row["error"] is None, row["error"]
    assert (row["kind"], row["database"], row["provider"], row["complete"]) == ("news", "sqlite", "stocknews", True)
    assert row["frames"] == round(300 * ingest.KINDS["news"].frames_per_event)  # every article received
    # Each article is a news item per ticker it names (all 20 instruments are known) plus one quote.
    assert row["events"] == row["rows"] + row["frames"]
    assert row["frames"] <= row["stored"] <= row["events"]  # quotes conflate per instrument and batch
    assert row["published"] == row["stored"]
    assert row["events_per_s"] > 0 and row["cpu_us_per_event"] > 0 and row["seconds"] > 0
    assert row["round"] == 1 and result["summary"]["news/sqlite"]["events_per_s"]["median"] == row["events_per_s"]
    assert result["options"]["events"] == 300 and code == 0
