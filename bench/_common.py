"""Small helpers the benchmarks share: loopback ports, /proc readings, percentiles, JSON output.

Linux only (/proc). Nothing here imports Django: the orchestrators run beside a pytest process
whose Django is configured for the tests, and start every Django-side step in a subprocess.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port free right now (the usual small race: the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile_limit() -> int:
    """Raise this process' soft open-files limit to the hard limit (children inherit it). Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of the man page


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS: resident now, VmHWM: peak resident)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def proc_rss_kib(pid: int) -> int:
    return proc_status_kib(pid, "VmRSS")


def proc_peak_rss_kib(pid: int) -> int:
    return proc_status_kib(pid, "VmHWM")


def percentile(sorted_values, p: float):
    """Nearest-rank percentile (p in 0..100) of an ascending sequence; None when empty."""
    n = len(sorted_values)
    if not n:
        return None
    rank = max(1, -(-p * n // 100))  # ceil(p/100 * n), at least the first
    return sorted_values[min(n, int(rank)) - 1]


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def utc_stamp() -> str:
    """e.g. 20261201T101500Z: sortable, safe in file names."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_json(path: Path, data) -> Path:
    """Write `data` as indented JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, all cores, since boot (/proc/stat). Over a window,
    busy minus what the benchmark's own processes used is what other work took (a shared machine)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


# -- throw-away databases (bench/ingest.py, bench/wire_to_browser.py) ----------------------------
DEFAULT_POSTGRES_SERVER = "postgres://tickerwire:tickerwire@127.0.0.1:5432/postgres"


def postgres_server_url(explicit: str | None = None) -> str:
    """A URL of the PostgreSQL server benchmarks may create databases on (its maintenance database):
    `explicit`, else TEST_POSTGRES_URL or a postgres:// DATABASE_URL, else the role
    scripts/ensure-postgres makes. Any database name in the URL is replaced."""
    from urllib.parse import urlsplit

    url = explicit or ""
    for name in ("TEST_POSTGRES_URL", "DATABASE_URL"):
        if not url and urlsplit(os.environ.get(name, "")).scheme in ("postgres", "postgresql"):
            url = os.environ[name]
    return database_url(url or DEFAULT_POSTGRES_SERVER, "postgres")


def database_url(url: str, name: str) -> str:
    """`url` naming database `name` instead."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def create_postgres_database(server_url: str, prefix: str, template: str | None = None) -> str:
    """CREATE DATABASE <prefix>_<pid>_<hex> (optionally as a copy of `template`, which nobody may be
    connected to); returns its URL. The name's shape lets tests/postgres.py drop_stale_databases()
    remove what a killed run left."""
    import uuid

    import psycopg
    from psycopg import sql

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(statement)
    return database_url(server_url, name)


def drop_database(url: str, server_url: str | None = None) -> None:
    """Drop a database made by create_postgres_database (its sessions are ended first), or delete a
    sqlite:/// file and its WAL."""
    from urllib.parse import urlsplit

    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server_url or database_url(url, "postgres"), autocommit=True, connect_timeout=5) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (the backup API: WAL content included)."""
    import sqlite3

    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def wait_healthy(port: int, child, timeout: float = 60) -> None:
    """Until Daphne on `port` answers /healthz; `child` (a bench Child: .name, .proc, .tail()) must not exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited ({child.proc.returncode}){child.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{child.name} did not answer /healthz within {timeout:.0f}s{child.tail()}")


def login_session(username: str):
    """(session key, the user) for `username`, as a login makes it (inside a set-up Django)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user_model().objects.get(username=username)
    store = SessionStore()
    store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key, user
