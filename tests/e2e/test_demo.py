"""The embedded default: one process with server, simulators and workers on SQLite and the
in-memory layer prints the URL and logins, and every feed's data is stored within 30 s.

This is the suite's SQLite smoke run: everything else runs on PostgreSQL, so the subprocess is given
its own SQLite DATABASE_URL explicitly and never inherits PostgreSQL from the environment."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import ROOT, free_port, wait_until

pytestmark = pytest.mark.stack


def test_demo_serves_pages_and_live_data_from_every_feed_within_30_seconds(tmp_path):
    port, sim_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "HTTPS",
                                                         "STATIC_MANIFEST", "ALLOWED_HOSTS")}
    env.update(DEBUG="1", DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}", DJANGO_SETTINGS_MODULE="project.settings")
    log = open(tmp_path / "demo.log", "w+")
    demo = subprocess.Popen([sys.executable, "manage.py", "demo", "--port", str(port), "--sim-port", str(sim_port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        def page_ok() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/login/", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(page_ok, timeout=30, what="the demo server")

        def stored(query: str) -> int:
            with sqlite3.connect(tmp_path / "demo.sqlite3", timeout=5) as db:
                return db.execute(query).fetchone()[0]

        wait_until(lambda: stored("SELECT COUNT(*) FROM feeds_newsitem"), timeout=30, what="StockNews news")
        wait_until(lambda: stored("SELECT COUNT(*) FROM feeds_quote WHERE provider = 'insightsentry'"), timeout=30,
                   what="InsightSentry quotes")
        wait_until(lambda: stored("SELECT COUNT(*) FROM feeds_bar"), timeout=30, what="InsightSentry bars")
        wait_until(lambda: stored("SELECT COUNT(*) FROM feeds_sentimentsample WHERE provider = 'stocktwits'"),
                   timeout=30, what="StockTwits crowd sentiment")
        wait_until(lambda: stored("SELECT COUNT(*) FROM feeds_sentimentsample WHERE provider = 'knowsis'"),
                   timeout=30, what="Knowsis datapoints")
        wait_until(lambda: stored("SELECT COUNT(*) FROM dashboard_trendalertdefinition WHERE remote_alert_id != ''"),
                   timeout=30, what="TrendSpottr alerts created through the webhook-configured simulator")
        printed = (tmp_path / "demo.log").read_text()
        assert f"http://localhost:{port}/" in printed
        assert "alice" in printed and "carol" in printed and "tickerwire-demo" in printed
        assert "InMemoryChannelLayer" in printed
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=10)
