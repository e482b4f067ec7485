from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED_AT = datetime(2026, 2, 6, 12, 35, 0, tzinfo=timezone.utc)


def load_fixture(vendor: str, name: str) -> str:
    """The raw text of a recorded payload, exactly as it would arrive on the wire."""
    return (FIXTURES / vendor / name).read_text()


def load_fixture_json(vendor: str, name: str):
    return json.loads(load_fixture(vendor, name))


@pytest.fixture
def received_at() -> datetime:
    return RECEIVED_AT


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """Before the first test that touches the database: on PostgreSQL, stop with one clear message
    if the server cannot be used, and drop what killed runs left behind (tests/postgres.py)."""
    from django.conf import settings

    from tests import postgres

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return
    reason = postgres.available()
    if reason:
        pytest.exit(f"{reason}\nRun scripts/ensure-postgres, or set DATABASE_URL (sqlite:///… for a smoke run).",
                    returncode=3)
    postgres.drop_stale_databases()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup) -> Iterator[None]:
    """pytest-django's test database, plus one step before it is dropped: async tests leave a
    connection open in asgiref's shared sync thread (and threaded tests in theirs), and PostgreSQL
    refuses to drop a database in use. SQLite never noticed."""
    yield
    from django.conf import settings

    from tests import postgres

    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        postgres.terminate_connections(settings.DATABASES["default"]["NAME"])


def pytest_sessionfinish(session, exitstatus) -> None:
    """Delete what this run left in the shared Redis under its own prefix (tests/settings.py): the
    streams' positions (feeds/livestore.py) never expire, and nothing else would remove them."""
    from django.conf import settings

    prefix = getattr(settings, "LIVE_PREFIX", "") if settings.configured else ""
    if not (prefix.startswith("twtest-") and settings.REDIS_URL):  # only a prefix this run made up
        return
    import redis

    try:
        with redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2) as client:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start:start + 1000])
    except redis.RedisError as exc:  # the run's result stands; the keys are only clutter
        session.config.get_terminal_writer().line(f"could not clean Redis keys {prefix}*: {exc}")
