"""bench/wire_to_browser.py end to end, one tiny step: 20 stamped articles at 20/s through the
simulator, a `runfeed` worker, Redis and Daphne (SQLite, DEBUG=0) to one logged-in socket.

It checks the machinery, not the speed: every article reached the socket once, with a latency that
is a plausible measurement (positive, ordered percentiles). Timings are never asserted beyond
that (bench/README.md)."""

from __future__ import annotations

import json

from tests.bench.test_ingest_smoke import load_bench


def test_one_tiny_step_reaches_the_socket(tmp_path):
    wire = load_bench("wire_to_browser")
    out = tmp_path / "wire.json"

    code = wire.main(["--database", "sqlite", "--rates", "20", "--events", "20", "--drain", "5", "--out", str(out)])

    result = json.loads(out.read_text())
    assert result["error"] is None, result["error"]
    [row] = result["rows"]
    assert (row["rate"], row["articles"], row["delivered"], row["lost"]) == (20, 20, 20, 0)
    latency = row["latency_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"] < 10_000
    assert row["cpu_us_per_article"]["worker"] > 0 and row["cpu_us_per_article"]["daphne"] > 0
    assert code == 0
