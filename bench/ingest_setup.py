"""What every bench/ingest.py run starts from and leaves behind: the Django environment of its
processes, a template database (migrated and seeded in a child process: `python bench/ingest.py
_prepare N`), a fresh copy per run, plain SQL on it, and the run's Redis keys to forget."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

from _common import copy_sqlite, create_postgres_database, drop_database, postgres_server_url

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def django_env(redis_url: str) -> dict:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CHANNEL_LAYER_PREFIX", "METRICS_PORT")
           and not k.startswith("PYTEST_")}
    return {**env, "DJANGO_SETTINGS_MODULE": "project.settings", "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DEBUG": "0", "HTTPS": "0", "STATIC_MANIFEST": "0", "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}


# -- Django side (a child process) --------------------------------------------------------------
def prepare(instruments: int) -> int:
    """Migrate, add the instruments (the simulators' universe first) on one watchlist, and an
    account per provider; print the tickers."""
    import django

    django.setup()
    from django.core.management import call_command

    from dashboard.models import Team, Watchlist, WatchlistItem
    from feeds.models import Instrument, ProviderAccount
    from feeds.simulators.marketgen import EXCHANGES
    from feeds.simulators.newsgen import UNIVERSE

    call_command("migrate", "--noinput", verbosity=0)
    tickers = list(UNIVERSE)[:instruments]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    tickers += [f"Q{letters[i // 26 % 26]}{letters[i % 26]}" for i in range(instruments - len(tickers))]
    rows = []
    for ticker in tickers:
        company = UNIVERSE.get(ticker)
        exchange = EXCHANGES.get(ticker, "NYSE")
        rows.append(Instrument(symbol=ticker, name=company.name if company else "", exchange=exchange,
                               insightsentry_code=f"{exchange}:{ticker}", knowsis_channel=ticker.lower(),
                               stocktwits_symbol=ticker, stocknews_ticker=ticker))
    Instrument.objects.bulk_create(rows)
    watchlist = Watchlist.objects.create(team=Team.objects.create(name="Ingest bench"), name="Everything")
    WatchlistItem.objects.bulk_create([WatchlistItem(watchlist=watchlist, instrument=instrument, position=n)
                                       for n, instrument in enumerate(Instrument.objects.order_by("id"))])
    placeholder = "ws://127.0.0.1:9/"  # each run writes its simulator's address
    ProviderAccount.objects.create(provider="stocknews", endpoint=placeholder, token="demo-token")
    ProviderAccount.objects.create(provider="insightsentry", endpoint=placeholder, api_key="demo-key")
    ProviderAccount.objects.create(provider="stocktwits", endpoint=placeholder, username="demo",
                                   password="demo-password")
    ProviderAccount.objects.create(provider="knowsis", endpoint=placeholder, api_key="demo-key", secret="demo-secret")
    print(json.dumps({"type": "prepared", "tickers": tickers}), flush=True)
    return 0


# -- databases ----------------------------------------------------------------------------------
class Databases:
    """Templates made once per database kind, a fresh copy per run, everything dropped at the end."""

    def __init__(self, tmp: Path, env: dict, postgres_url: str, instruments: int) -> None:
        self.tmp, self.env, self.instruments = tmp, env, instruments
        self.postgres_server = postgres_server_url(postgres_url)
        self.templates: dict[str, str] = {}
        self.tickers: list[str] = []
        self._made: set[str] = set()

    def template(self, kind: str) -> str:
        if kind not in self.templates:
            url = f"sqlite:///{self.tmp / 'template.sqlite3'}" if kind == "sqlite" else self._postgres()
            done = subprocess.run([sys.executable, str(BENCH / "ingest.py"), "_prepare", str(self.instruments)],
                                  cwd=ROOT, env={**self.env, "DATABASE_URL": url}, capture_output=True, text=True,
                                  timeout=300)
            if done.returncode:
                raise RuntimeError(f"preparing the {kind} template failed:\n{done.stdout}\n{done.stderr[-3000:]}")
            self.tickers = json.loads(done.stdout.strip().splitlines()[-1])["tickers"]
            self.templates[kind] = url
        return self.templates[kind]

    def copy(self, kind: str) -> str:
        template = self.template(kind)
        if kind == "sqlite":
            path = self.tmp / f"run-{uuid.uuid4().hex[:8]}.sqlite3"
            copy_sqlite(Path(template.removeprefix("sqlite:///")), path)
            return f"sqlite:///{path}"
        return self._postgres(template=urllib.parse.urlsplit(template).path.lstrip("/"))

    def _postgres(self, template: str | None = None) -> str:
        url = create_postgres_database(self.postgres_server, "twingest", template=template)
        self._made.add(url)
        return url

    def drop(self, url: str) -> None:
        drop_database(url, self.postgres_server)
        self._made.discard(url)

    def close(self) -> None:
        for url in [*self.templates.values(), *self._made]:
            self.drop(url)


def sql_value(url: str, statement: str, params: tuple = ()):
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=20) as conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchone()[0]
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(statement, params).fetchone()[0]


def sql_rows(url: str, statement: str, params: tuple = ()) -> list[tuple]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=20) as conn:
            return conn.execute(statement.replace("%%", "%").replace("%s", "?"), params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(statement, params).fetchall()


def sql_execute(url: str, statement: str, params: tuple = ()) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=20) as conn:
            conn.execute(statement.replace("%s", "?"), params)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement, params)


# -- after a run --------------------------------------------------------------------------------
def forget_redis(url: str | None, prefix: str) -> None:
    """Delete what the run left in Redis (live history and positions under its prefix)."""
    try:
        import redis

        client = redis.Redis.from_url(url or "redis://127.0.0.1:6379/0", socket_timeout=5)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception:  # noqa: BLE001 - hygiene only; the keys expire anyway
        pass
