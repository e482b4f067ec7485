"""Daphne serving project.asgi as in production (HTTPS redirects on, a site name in ALLOWED_HOSTS):
the balancer's probes over plain HTTP, and the metrics on their own loopback port only."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests import postgres

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, *, timeout: float = 30, process: subprocess.Popen) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "daphne exited"
        try:
            return httpx.get(url, timeout=2, headers={"host": "10.0.0.5"})
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"no answer from {url} within {timeout}s")


@pytest.fixture
def daphne(tmp_path):
    web_port, metrics_port = free_port(), free_port()
    postgres_used = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "0", "HTTPS": "1",
        "ALLOWED_HOSTS": "desk.example.com", "STATIC_MANIFEST": "0",
        "REDIS_URL": settings.REDIS_URL, "CHANNEL_LAYER_PREFIX": f"twtest-{uuid.uuid4().hex[:8]}",
        # /readyz only asks the database to answer: the server's maintenance database will do.
        "DATABASE_URL": postgres.server_url() if postgres_used else f"sqlite:///{tmp_path / 'ready.sqlite3'}",
        "METRICS_PORT": str(metrics_port),
    }
    log = open(tmp_path / "daphne.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                                "project.asgi:application"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        wait_for(f"http://127.0.0.1:{web_port}/healthz", process=process)
        yield web_port, metrics_port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        log.close()


def test_probes_answer_over_plain_http_and_metrics_only_on_their_loopback_port(daphne):
    web_port, metrics_port = daphne
    probe = {"host": f"10.0.0.5:{web_port}"}  # the backend's address: not in ALLOWED_HOSTS
    health = httpx.get(f"http://127.0.0.1:{web_port}/healthz", headers=probe)
    assert (health.status_code, health.text) == (200, "ok\n")
    ready = httpx.get(f"http://127.0.0.1:{web_port}/readyz", headers=probe, timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready" and ready.headers["cache-control"] == "no-store"

    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    assert scraped.status_code == 200
    assert "tickerwire_websockets_open 0.0" in scraped.text and "process_cpu_seconds_total" in scraped.text
    # The public port never serves them, whatever the Host.
    for host in ("desk.example.com", f"10.0.0.5:{web_port}"):
        public = httpx.get(f"http://127.0.0.1:{web_port}/metrics", headers={"host": host})
        assert public.status_code in (301, 400, 404) and "tickerwire_" not in public.text


def test_the_websocket_router_takes_only_parameterless_routes():
    from django.core.exceptions import ImproperlyConfigured
    from django.urls import path, re_path

    from project.asgi import ExactPathRouter

    async def consumer(scope, receive, send):
        pass

    assert ExactPathRouter([path("ws/stream/", consumer)]).routes == {"/ws/stream/": consumer}
    for route in (path("ws/stream/<int:pk>/", consumer), re_path(r"^ws/stream/$", consumer)):
        with pytest.raises(ImproperlyConfigured):
            ExactPathRouter([route])
