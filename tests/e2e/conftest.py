"""A production-shaped stack in separate processes: the simulators, Daphne and one feed worker per
provider, sharing a PostgreSQL database of their own (tests/postgres.py) and the real Redis channel
layer.

Every wait polls a condition with a deadline; nothing sleeps for a fixed time to synchronise.
The module using the stack fails at teardown if Daphne logged `Exception inside application` at
any point: an exception in a consumer drops a browser's socket even when every assertion held.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.postgres import fresh_database

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "tickerwire-demo"


def wait_until(predicate: Callable[[], object], *, timeout: float = 20, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    env: dict[str, str]
    tmp: Path
    database_url: str
    base_url: str = ""
    web_port: int = 0
    sim_ports: dict[str, int] = field(default_factory=dict)
    control_token: str = field(default_factory=lambda: secrets.token_hex(8))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # One client for every control call: a new one per call builds an SSL context (~30 ms of CPU),
    # 6 s of a 200-quote burst on a 2-core machine.
    control_client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5), repr=False)

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        # Appended, not truncated: a restarted process (Daphne) keeps its earlier run's lines for
        # the teardown check.
        log = open(self.tmp / f"{name}.log", "a")
        proc = subprocess.Popen(args, cwd=ROOT, env={**self.env, **(env or {})},
                                stdout=subprocess.PIPE if name.startswith("sim-") else log, stderr=log, text=True)
        self.processes[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def control(self, action: str, sim: str = "stocknews", **params: str) -> dict:
        response = self.control_client.get(f"http://127.0.0.1:{self.sim_ports[sim]}/control/{action}",
                                           params={**params, "token": self.control_token})
        response.raise_for_status()
        return response.json()

    def feed_state(self, provider: str = "stocknews") -> str | None:
        rows = self.query("SELECT s.state FROM feeds_feedstatus s JOIN feeds_provideraccount a ON a.id = s.account_id "
                          "WHERE a.provider = %s", provider)
        return rows[0][0] if rows else None

    def start_simulator(self, provider: str, *args: str) -> int:
        sim = self.start(f"sim-{provider}", sys.executable, "manage.py", "simulate", provider, "--port", "0",
                         "--control-token", self.control_token, *args)
        line = sim.stdout.readline()
        self.sim_ports[provider] = int(re.search(r":(\d+)/", line).group(1))
        return self.sim_ports[provider]

    def query(self, sql: str, *params) -> list[tuple]:
        """Rows of one statement on the stack's database (psycopg: `%s` placeholders), committed at once."""
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as db:
            cursor = db.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def news_stored(self, external_id: str) -> bool:
        return bool(self.query("SELECT 1 FROM feeds_newsitem WHERE external_id = %s", external_id))

    def application_exceptions(self) -> list[str]:
        """Every Daphne's (daphne.log, daphne-2.log, ...) `Exception inside application` lines, each
        with the traceback's last line."""
        lines = [line for path in sorted(self.tmp.glob("daphne*.log"))
                 for line in path.read_text(errors="replace").splitlines()]
        found = []
        for index, line in enumerate(lines):
            if "Exception inside application" in line:
                following = lines[index + 1:index + 40]
                last = next((f for f in following if f and not f.startswith((" ", "Traceback", "During", "The above"))),
                            "")
                found.append(f"{line}\n    -> {last}" if last else line)
        return found

    def fail_on_application_exceptions(self) -> None:
        exceptions = self.application_exceptions()
        if exceptions:
            pytest.fail(f"Daphne logged {len(exceptions)} 'Exception inside application' "
                        f"(full logs: {self.tmp}/daphne*.log):\n" + "\n".join(exceptions), pytrace=False)

    def login(self, username: str, base_url: str = "") -> httpx.Client:
        """A client logged in as `username` on the server at `base_url` (default: the stack's Daphne)."""
        base_url = base_url or self.base_url
        client = httpx.Client(base_url=base_url, timeout=10)
        page = client.get("/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = client.post("/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
                               headers={"Referer": f"{base_url}/login/"})
        assert response.status_code == 302, f"login failed for {username}: {response.status_code}"
        return client

    def start_daphne(self, name: str = "daphne", port: int = 0, *, wait: bool = True, **env: str) -> str:
        """Start a Daphne process and return its base URL. The stack's own is "daphne" on `web_port`
        (its URL becomes `base_url`); more servers on the same database and Redis prefix take their
        own name ("daphne-2": its log is part of the teardown check), port and, when the stack
        exports metrics, METRICS_PORT in `env`. `wait=False` returns at once (start several servers
        side by side, then `wait_healthy` each)."""
        port = port or self.web_port
        self.start(name, sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                   "project.asgi:application", env=env)
        base_url = f"http://127.0.0.1:{port}"
        if name == "daphne":
            self.base_url = base_url
        if wait:
            self.wait_healthy(base_url)
        return base_url

    def wait_healthy(self, base_url: str) -> None:
        def healthy() -> bool:
            try:
                return httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        # Generous: on a loaded 2-core CI machine Django's import alone has taken over 20 s.
        wait_until(healthy, timeout=60, what=f"daphne at {base_url} to answer /healthz")

    def stop_daphne(self, name: str = "daphne") -> None:
        """The server goes away. Daphne drains open sockets on SIGTERM; if that takes long, it
        is killed, which is the harder case for clients anyway."""
        daphne = self.processes.pop(name)
        daphne.send_signal(signal.SIGTERM)
        try:
            daphne.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daphne.kill()
            daphne.wait(timeout=5)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.control_client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with fresh_database("twstack", migrated=True) as database_url:
        yield from _stack(tmp_path_factory.mktemp("stack"), database_url)


def stack_env(database_url: str, prefix: str = "twstack") -> dict[str, str]:
    """The environment every process of one stack shares: production settings on loopback, the
    stack's database, and a Redis key prefix of its own."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "CHANNEL_LAYER_PREFIX": f"{prefix}-{uuid.uuid4().hex[:8]}",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "HTTPS": "0",  # loopback without TLS; production terminates TLS in front of Daphne
        "STATIC_MANIFEST": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "FEEDS_WATCH_POLL_SECONDS": "0.5",
        "PYTHONUNBUFFERED": "1",
    }


def _stack(tmp: Path, database_url: str) -> Iterator[Stack]:
    web_port = free_port()
    stack = Stack(env=stack_env(database_url), tmp=tmp, database_url=database_url)
    try:
        stack.manage("seed_demo")
        news = stack.start_simulator("stocknews", "--token", "stack-token", "--news-interval", "0")
        stack.manage("provider", "set", "stocknews", "--endpoint", f"ws://127.0.0.1:{news}/ws",
                     "--token", "stack-token", "--enable")
        quotes = stack.start_simulator("insightsentry", "--token", "stack-key", "--news-interval", "0.5")
        stack.manage("provider", "set", "insightsentry", "--endpoint", f"ws://127.0.0.1:{quotes}/live",
                     "--api-key", "stack-key", "--enable")
        stack.web_port = web_port
        stack.start_daphne()
        crowd = stack.start_simulator("stocktwits", "--token", "stack:crowd-pass", "--news-interval", "0.5")
        stack.manage("provider", "set", "stocktwits", "--endpoint", f"http://127.0.0.1:{crowd}/sentiment",
                     "--username", "stack", "--password", "crowd-pass", "--enable")
        pusher = stack.start_simulator("knowsis", "--token", "stack-app:stack-secret", "--news-interval", "0")
        stack.manage("provider", "set", "knowsis", "--endpoint", f"ws://127.0.0.1:{pusher}", "--api-key", "stack-app",
                     "--secret", "stack-secret", "--enable")
        trends = stack.start_simulator("trendspottr", "--token", "stack-ts-key", "--news-interval", "3600")
        stack.manage("provider", "set", "trendspottr", "--endpoint", f"http://127.0.0.1:{trends}",
                     "--api-key", "stack-ts-key", "--enable")
        # The team lead's setup, as the admin does it: our webhook and one alert query per team.
        stack.manage("shell", "-c", "from dashboard.trendspottr import trendspottr_demo_setup; "
                     f"trendspottr_demo_setup(public_base_url='{stack.base_url}')")
        stack.start("worker", sys.executable, "manage.py", "runfeed", "stocknews")
        stack.start("worker-knowsis", sys.executable, "manage.py", "runfeed", "knowsis")
        stack.start("worker-insightsentry", sys.executable, "manage.py", "runfeed", "insightsentry")
        stack.start("worker-stocktwits", sys.executable, "manage.py", "runfeed", "stocktwits")
        for provider in ("stocknews", "insightsentry", "stocktwits", "knowsis"):
            wait_until(lambda: stack.feed_state(provider) == "connected", what=f"the {provider} worker to connect")
        # The worker subscribes to the watched tickers once it has read the watchlists.
        wait_until(lambda: stack.control("stats")["received"] >= 1, what="the worker's subscribe")
        wait_until(lambda: "apple-inc" in str(stack.control("stats", sim="knowsis")["subscriptions"]),
                   what="the Knowsis worker's channel subscriptions")
        yield stack
    finally:
        stack.stop()
    # After the processes stopped, so the log is complete; not when set-up failed (its error says more).
    stack.fail_on_application_exceptions()
