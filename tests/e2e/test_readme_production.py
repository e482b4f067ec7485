"""README → Production, run verbatim.

The lines under `<!-- production:setup -->` run in order in a fresh copy of the project (its own venv
with the runtime lock only, `npm ci`, PostgreSQL, Redis, DEBUG off, hashed static files, every check
--deploy warning an error); the lines under `<!-- production:processes -->` start as long-running
processes against the five simulators. Then headless Chromium opens every page as a user who may
see it and expects 200, no console error and no failed request; finally every process stops on
SIGTERM. Only the environment and the test data (the demo teams, the TrendSpottr webhook the admin
would register) come from the test.

The TLS proxy's part is played by the browser sending `X-Forwarded-Proto: https`, as the proxy would:
the processes run with the production security settings (HTTPS on, secure cookies, HSTS).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from packaging.utils import canonicalize_name

from tests.e2e.browser import chromium
from tests.e2e.conftest import PASSWORD, ROOT, Stack, free_port, wait_until
from tests.postgres import fresh_database
from tests.project.test_dependencies import locked

# The module's fixture installs a venv and the npm package: on a fresh, loaded CI machine that alone can
# take minutes, beyond the suite's 120 s per-test default.
pytestmark = [pytest.mark.stack, pytest.mark.browser, pytest.mark.timeout(900)]

README = ROOT / "README.md"
PROVIDERS = ("stocknews", "insightsentry", "stocktwits", "knowsis")
# Live data on the pages, but no webhook storm: seconds between each simulator's automatic events.
INTERVALS = {"stocknews": "2", "insightsentry": "0.5", "stocktwits": "0.5", "knowsis": "2", "trendspottr": "3600"}
# What the README's configuration table lets an operator set: never inherited from the test run.
PROJECT_VARIABLES = {"DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV", "PYTHONPATH", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS",
                     "DEBUG", "ALLOWED_HOSTS",
                     "CSRF_TRUSTED_ORIGINS", "DATABASE_URL", "REDIS_URL", "CHANNEL_LAYER_PREFIX", "HTTPS",
                     "STATIC_MANIFEST", "STATIC_ROOT", "SECURE_PROXY_SSL_HEADER_NAME", "LOG_FORMAT", "PORT"}


def readme_commands(marker: str) -> list[str]:
    """The shell commands of the fenced block after `<!-- production:<marker> -->`: continuation
    lines joined, comment lines dropped."""
    text = README.read_text()
    match = re.search(rf"<!-- production:{marker} -->\s*```sh\n(.*?)```", text, re.S)
    assert match, f"README.md has no <!-- production:{marker} --> block"
    commands, current = [], ""
    for line in match[1].splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def release_copy(dest: Path) -> Path:
    """The project as a release checkout: the files git knows (committed or not), nothing built."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / name.decode()
        if source.is_file() and not name.startswith((b"node_modules/", b".venv")):
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return dest


@dataclass
class Release:
    folder: Path
    env: dict[str, str]
    base_url: str
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def shell(self, command: str, *, timeout: float = 300) -> str:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=self.folder, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"README step failed ({result.returncode}): {command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def start(self, command: str) -> None:
        name = re.sub(r"\W+", "-", command.split(" -")[0].split("/")[-1]).strip("-")
        log = open(self.logs / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=self.folder, env=self.env,
                                                stdout=log, stderr=subprocess.STDOUT)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def query(self, sql: str, *params):
        with psycopg.connect(self.env["DATABASE_URL"], connect_timeout=5) as db:
            return db.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Iterator[Release]:
    tmp = tmp_path_factory.mktemp("release")
    folder = release_copy(tmp / "tickerwire")
    port = free_port()
    with fresh_database("twreadme") as database_url:
        simulators = Stack(env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"},
                           tmp=tmp, database_url=database_url)
        env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES and not k.startswith("PYTEST")}
        env.update({
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": database_url,
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "CHANNEL_LAYER_PREFIX": f"twreadme-{uuid.uuid4().hex[:8]}",
            "ALLOWED_HOSTS": "127.0.0.1",
            "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
            "SECURE_PROXY_SSL_HEADER_NAME": "HTTP_X_FORWARDED_PROTO",
            "PORT": str(port),
            "FEEDS_WATCH_POLL_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
            "ADMIN_USERNAME": "ops", "ADMIN_EMAIL": "ops@example.com", "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        })
        release = Release(folder=folder, env=env, base_url=f"http://127.0.0.1:{port}", logs=tmp)
        try:
            credentials = {"stocknews": "readme-token", "insightsentry": "readme-key", "stocktwits": "readme:crowd",
                           "knowsis": "readme-app:readme-secret", "trendspottr": "readme-ts-key"}
            paths = {"stocknews": "/ws", "insightsentry": "/live", "stocktwits": "/sentiment"}
            for provider, token in credentials.items():
                sim_port = simulators.start_simulator(provider, "--token", token, "--news-interval", INTERVALS[provider])
                scheme = "http" if provider in ("stocktwits", "trendspottr") else "ws"
                env[f"{provider.upper()}_ENDPOINT"] = f"{scheme}://127.0.0.1:{sim_port}{paths.get(provider, '')}"
            env.update({"STOCKNEWS_TOKEN": "readme-token", "INSIGHTSENTRY_KEY": "readme-key",
                        "STOCKTWITS_USER": "readme", "STOCKTWITS_PASSWORD": "crowd", "KNOWSIS_APP_KEY": "readme-app",
                        "KNOWSIS_APP_SECRET": "readme-secret", "TRENDSPOTTR_KEY": "readme-ts-key"})
            for command in readme_commands("setup"):
                release.shell(command)
            # Test data an admin would create: the demo teams and watchlists, the TrendSpottr webhook.
            release.shell("venv/bin/python manage.py seed_demo")
            release.shell("venv/bin/python manage.py shell -c 'from dashboard.trendspottr import trendspottr_demo_setup;"
                          f" trendspottr_demo_setup(public_base_url=\"{release.base_url}\")'")
            for command in readme_commands("processes"):
                release.start(command)
            yield release
        finally:
            for proc in release.processes.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            simulators.stop()


def test_the_setup_installs_exactly_the_runtime_lock(release: Release):
    frozen = {}
    for line in release.shell("venv/bin/pip freeze --all").splitlines():
        name, _, version = line.partition("==")
        if canonicalize_name(name) not in {"pip", "setuptools", "wheel"}:
            frozen[canonicalize_name(name)] = version
    assert frozen == locked(ROOT / "requirements.txt")  # no test tool, nothing unpinned, nothing missing
    manifest = release.folder / "staticfiles" / "staticfiles.json"
    assert "vendor/lightweight-charts/lightweight-charts.standalone.production.js" in manifest.read_text()


def test_every_process_comes_up_and_every_feed_connects(release: Release):
    def ready() -> bool:
        try:  # as a load balancer probes: plain HTTP, the database and Redis must answer
            return httpx.get(f"{release.base_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout=30, what="Daphne to answer /readyz")

    def connected() -> set[str]:
        rows = release.query("SELECT a.provider FROM feeds_feedstatus s JOIN feeds_provideraccount a "
                             "ON a.id = s.account_id WHERE s.state = 'connected'")
        return {provider for (provider,) in rows}

    wait_until(lambda: connected() >= set(PROVIDERS), timeout=60, what=f"every worker to connect ({PROVIDERS})")
    assert all(proc.poll() is None for proc in release.processes.values())


PAGES_FOR_A_MEMBER = ["/", "/instrument/{aapl}/", "/alerts/", "/rules/", "/settings/"]
PAGES_FOR_STAFF = ["/health/", "/admin/", "/admin/dashboard/trendalertdefinition/",
                   "/admin/dashboard/trendalertdefinition/add/", "/admin/dashboard/trendalertdefinition/webhook/",
                   "/admin/dashboard/trendalertdefinition/{alert}/change/",
                   "/admin/dashboard/trendalertdefinition/{alert}/recent/", "/admin/feeds/feedstatus/",
                   "/admin/feeds/provideraccount/"]


def visit_every_page(browser, release: Release, username: str, pages: list[str]) -> list[str]:
    """Log in, open each page; return the problems seen (status, console errors, failed requests)."""
    context = browser.new_context(extra_http_headers={"X-Forwarded-Proto": "https"})  # the TLS proxy's header
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console error on {page.url}: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"script error on {page.url}: {e}"))
    # ERR_ABORTED is the browser cancelling a request because we navigate on (the board refetches
    # its snapshot on reconnect); any other failure is a problem.
    page.on("requestfailed", lambda r: "ERR_ABORTED" not in (r.failure or "") and problems.append(
        f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} for {r.url}"))
    page.goto(f"{release.base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    [(aapl,)] = release.query("SELECT id FROM feeds_instrument WHERE symbol = 'AAPL'")
    [(alert,)] = release.query("SELECT MIN(id) FROM dashboard_trendalertdefinition")
    for path in pages:
        response = page.goto(release.base_url + path.format(aapl=aapl, alert=alert))
        assert response.status == 200, f"{path} answered {response.status} for {username}"
        page.wait_for_load_state("networkidle")
        if path == "/":
            page.wait_for_selector('#conn-status[data-state="live"]', timeout=15_000)
        if path.startswith("/instrument/"):
            page.wait_for_selector("#chart canvas, .chart canvas, canvas", timeout=15_000)
            scripts = page.eval_on_selector_all("script[src]", "nodes => nodes.map(n => n.src)")
            assert any(re.search(r"lightweight-charts\.standalone\.production\.[0-9a-f]{12}\.js$", s) for s in scripts), (
                f"the chart library is not served as a hashed static file: {scripts}")
    context.close()
    return problems


def test_every_page_answers_200_in_chromium_with_no_console_error_or_failed_request(release: Release):
    wait_until(lambda: httpx.get(f"{release.base_url}/healthz", timeout=1).status_code == 200, timeout=30,
               what="Daphne")
    with chromium() as browser:
        problems = visit_every_page(browser, release, "alice", PAGES_FOR_A_MEMBER)
        problems += visit_every_page(browser, release, "ops", PAGES_FOR_STAFF)
    assert problems == []


def test_every_process_stops_cleanly_on_sigterm_and_daphne_never_failed(release: Release):
    """Runs last: a graceful stop, as systemd does it (SIGTERM, then a deadline)."""
    for proc in release.processes.values():
        proc.send_signal(signal.SIGTERM)
    codes = {name: proc.wait(timeout=15) for name, proc in release.processes.items()}
    assert all(code == 0 for name, code in codes.items() if name.startswith("python")), codes
    daphne_log = next(release.log(name) for name in release.processes if name.startswith("daphne"))
    assert "Exception inside application" not in daphne_log
    states = {provider for (provider,) in release.query(
        "SELECT a.provider FROM feeds_feedstatus s JOIN feeds_provideraccount a ON a.id = s.account_id "
        "WHERE s.state = 'stopped'")}
    assert states >= set(PROVIDERS)
