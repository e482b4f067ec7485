"""bench/storage.py, one tiny step: 2 instruments on a scratch PostgreSQL database, dropped afterwards.

It checks the machinery, not the figures: every table measured, the retention runs succeeded, the
projection holds every table and shrinks what the policy bounds. Timings are never asserted."""

from __future__ import annotations

import json

import psycopg

from bench import storage
from bench._common import postgres_server_url


def test_one_tiny_measurement_and_projection(tmp_path):
    assert storage.main(["--instruments", "2", "--min-rows", "20", "--out", str(tmp_path)]) == 0

    [path] = tmp_path.glob("storage-*.json")
    result = json.loads(path.read_text())
    measured, projection = result["measured"], result["projection"]
    for table in storage.TABLES:
        assert measured["tables"][table]["rows"] > 0 and measured["tables"][table]["bytes_per_row"] > 0, table
        assert projection["year_1"]["tables"][table]["bytes"] > 0, table
    assert all(run["ok"] for run in measured["retention"].values())
    assert projection["instruments"] == 500
    # Bounded kinds stop growing; news and alerts keep two years.
    one, two, none = (projection[k]["tables"] for k in ("year_1", "year_2", "year_1_without_retention"))
    assert two["feeds_crowdmention"]["rows"] == one["feeds_crowdmention"]["rows"] < none["feeds_crowdmention"]["rows"]
    assert one["feeds_bar"]["rows"] < none["feeds_bar"]["rows"]
    assert abs(two["feeds_newsitem"]["rows"] - 2 * one["feeds_newsitem"]["rows"]) <= 1
    with psycopg.connect(postgres_server_url(), autocommit=True) as admin:  # the scratch database is gone
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                             (result["database"],)).fetchone()[0] == 0
