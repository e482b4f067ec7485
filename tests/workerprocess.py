"""A feed worker as its own process (`manage.py runfeed`), on a database of its own, in the
environment production gives it (tests/e2e/conftest.py builds the same for the whole stack).

    with fresh_database("twkill") as url:
        worker = WorkerProcess(url, log=tmp_path / "worker.log")
        worker.manage("migrate", "--noinput")
        proc = worker.start("stocktwits")
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]


class WorkerProcess:
    def __init__(self, database_url: str, *, log: Path, **extra_env: str) -> None:
        self.log = log
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "CHANNEL_LAYER_PREFIX": f"twworker-{uuid.uuid4().hex[:8]}",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "0",
            "HTTPS": "0",
            "STATIC_MANIFEST": "0",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            **extra_env,
        }
        self.env.pop("METRICS_PORT", None)

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, provider: str) -> subprocess.Popen:
        """`manage.py runfeed <provider>`, its output appended to the log (restarts included)."""
        with open(self.log, "a") as log:
            return subprocess.Popen([sys.executable, "manage.py", "runfeed", provider], cwd=ROOT, env=self.env,
                                    stdout=log, stderr=log)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Sql:
    """The test's own autocommit connection to the worker's database."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)

    def value(self, sql: str, *params):
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None

    def rows(self, sql: str, *params) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()
