"""Throw-away PostgreSQL databases on the test server, one per user, never shared.

    from tests.postgres import fresh_database

    with fresh_database("twstack") as url:      # postgres://tickerwire:tickerwire@127.0.0.1:5432/twstack_<pid>_<hex>
        subprocess.run([..., "manage.py", "migrate"], env={**os.environ, "DATABASE_URL": url})

    with fresh_database("twstack", migrated=True) as url:   # already migrated: a copy of a template

`migrated=True` copies a template database that `manage.py migrate` built once in this test process
(production settings, in a subprocess, as the stacks run it): CREATE DATABASE … TEMPLATE takes a
fraction of a second, where each migrate took five to ten.

The server comes from TEST_POSTGRES_URL (any database on it; the name is replaced), else from
DATABASE_URL when that is a PostgreSQL URL, else `postgres://tickerwire:tickerwire@127.0.0.1:5432/postgres`
(the role `scripts/ensure-postgres` creates). Database names carry the creating process id, so
several test runs on one machine (CI jobs, engineers sharing a checkout) never meet, and a run that
was killed leaves databases that `drop_stale_databases()` recognises and removes.

Only psycopg and the standard library are imported: `tests/settings.py` uses this module before
Django is configured.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_SERVER_URL = "postgres://tickerwire:tickerwire@127.0.0.1:5432/postgres"
# <prefix>_<pid>_<8 hex>; PostgreSQL truncates identifiers at 63 bytes, so prefixes stay short.
_NAME = re.compile(r"^(?:test_)?(?P<prefix>[a-z][a-z0-9]*)_(?P<pid>\d+)_[0-9a-f]{8}$")


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme in {"postgres", "postgresql", "pgsql", "postgis"}


def server_url() -> str:
    """A URL for the test server's maintenance database (`postgres`)."""
    url = os.environ.get("TEST_POSTGRES_URL") or ""
    if not url and is_postgres_url(os.environ.get("DATABASE_URL", "")):
        url = os.environ["DATABASE_URL"]
    return database_url("postgres", base=url or DEFAULT_SERVER_URL)


def database_url(name: str, *, base: str | None = None) -> str:
    """The URL of database `name` on the test server (or on the server of `base`)."""
    parts = urlsplit(base or server_url())
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def unique_name(prefix: str = "tw") -> str:
    """A database name no other process will choose: prefix, our pid, random hex."""
    if not re.fullmatch(r"[a-z][a-z0-9]{0,29}", prefix):
        raise ValueError(f"database prefix must be lower-case letters/digits, ≤ 30 chars: {prefix!r}")
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def _admin() -> psycopg.Connection:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    return psycopg.connect(server_url(), autocommit=True, connect_timeout=5)


def available() -> str | None:
    """None when the test server accepts us and we may create databases, else the reason why not."""
    try:
        with _admin() as conn:
            row = conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    except psycopg.Error as exc:
        return f"PostgreSQL at {_safe(server_url())} does not answer: {exc}".strip()
    if not (row and row[0]):
        return f"the role of {_safe(server_url())} may not create databases (needs CREATEDB)"
    return None


def create_database(name: str, *, template: str | None = None) -> str:
    with _admin() as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(query)
    return database_url(name)


_template: list[str] = []  # this process' migrated template, made on first use


def migrated_template() -> str:
    """The name of a database `manage.py migrate` built (once per test process); dropped at exit."""
    if not _template:
        name = unique_name("twtemplate")
        url = create_database(name)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": url, "DEBUG": "0",
               "SECRET_KEY": secrets.token_urlsafe(50), "HTTPS": "0", "STATIC_MANIFEST": "0"}
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=300)
        if result.returncode:
            drop_database(name)
            raise RuntimeError(f"migrating the template database failed:\n{result.stdout}\n{result.stderr}")
        _template.append(name)
        atexit.register(drop_database, name)
    return _template[0]


def terminate_connections(name: str) -> None:
    """Close every session on database `name` (left open by a thread or a killed process)."""
    with _admin() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def drop_database(name: str) -> None:
    """Drop `name`, first closing whatever connections are still open on it (a killed worker's)."""
    terminate_connections(name)
    with _admin() as conn:
        # WITH (FORCE) (PostgreSQL ≥ 13) also terminates sessions that connected meanwhile.
        force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)) + force)


@contextmanager
def fresh_database(prefix: str = "tw", *, migrated: bool = False) -> Iterator[str]:
    """Create a database with a unique name, empty or (`migrated`) with every migration applied,
    yield its postgres:// URL, drop it afterwards."""
    name = unique_name(prefix)
    url = create_database(name, template=migrated_template() if migrated else None)
    try:
        yield url
    finally:
        drop_database(name)


def drop_stale_databases() -> list[str]:
    """Drop databases this module (or pytest-django, `test_` + it) named for a process that no longer
    runs on this machine and that nobody is connected to: leftovers of killed test runs.
    Live processes' databases are never touched; a database still in use is left alone."""
    dropped = []
    with _admin() as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')"
                            " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = pg_database.datname)"
                            ).fetchall()
        for (name,) in rows:
            match = _NAME.match(name)
            if not match or _process_alive(int(match["pid"])):
                continue
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            except psycopg.Error:
                continue  # someone connected meanwhile, or not ours to drop: leave it
            dropped.append(name)
    return dropped


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}@{netloc}" if user else netloc, parts.path, "", ""))
