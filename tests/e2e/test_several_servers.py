"""Several servers, one deployment (issue 12): two Daphne processes on their own ports, sharing one
PostgreSQL database and one Redis prefix, the StockNews worker against its simulator, and logged-in
sockets split across the servers.

- A team's sockets on either server receive every event of their streams exactly once, in seq
  order, with the same numbers on both: events are numbered in Redis, not by a server.
- Team isolation holds across servers: another team's sockets, on a server whose hub carries the
  first team's streams, receive none of them, and a watch request for the first team's watchlist
  is refused and logged by whichever server gets it.
- One TrendSpottr event POSTed to both servers at the same moment is stored once, makes one alert,
  and reaches each of the team's sockets, on either server, once.
- A real board in Chromium on each server shows the same news live.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from feeds.crypto import decrypt
from tests.e2e.browser import chromium
from tests.e2e.conftest import PASSWORD, Stack, free_port, stack_env, wait_until
from tests.postgres import fresh_database

pytestmark = [pytest.mark.stack, pytest.mark.timeout(120)]

ALPHA = ("AAPL", "MSFT", "NVDA", "TSLA")  # alice (owner) and bob (viewer): Alpha Desk
BETA = ("JPM", "XOM")  # carol: Beta Fund

# One Django start instead of five (each costs over a second of CPU on a 2-core machine). The
# TrendSpottr part registers our webhook with the simulator (its secret signs every delivery) and
# one alert query per team, as an admin does.
SETUP = """
from django.core.management import call_command
from dashboard.trendspottr import trendspottr_demo_setup
call_command("seed_demo", verbosity=0)
call_command("provider", "set", "stocknews", "--endpoint", "ws://127.0.0.1:{news}/ws", "--token", "multi-token",
             "--enable")
call_command("provider", "set", "trendspottr", "--endpoint", "http://127.0.0.1:{trends}", "--api-key",
             "multi-ts-key", "--enable")
trendspottr_demo_setup(public_base_url="{base_url}")
"""


@dataclass
class Deployment:
    stack: Stack  # its base_url is server 1
    servers: tuple[str, str]  # the base URLs of server 1 and server 2
    _sessions: dict[tuple[str, int], str]

    def cookie(self, username: str, server: int) -> str:
        """A session cookie from logging in on `server` (0 or 1); logins are slow (password hashing)."""
        key = (username, server)
        if key not in self._sessions:
            client = self.stack.login(username, self.servers[server])
            self._sessions[key] = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        return self._sessions[key]

    def id_of(self, sql: str, *params) -> int:
        return self.stack.query(sql, *params)[0][0]

    def watchlist(self, team: str) -> int:
        return self.id_of("SELECT w.id FROM dashboard_watchlist w JOIN dashboard_team t ON t.id = w.team_id "
                          "WHERE t.name = %s", team)

    def instrument(self, symbol: str) -> int:
        return self.id_of("SELECT id FROM feeds_instrument WHERE symbol = %s", symbol)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    with fresh_database("twmulti", migrated=True) as database_url:
        stack = Stack(env=stack_env(database_url, "twmulti"), tmp=tmp_path_factory.mktemp("multi"),
                      database_url=database_url)
        try:
            stack.web_port = free_port()
            # The servers boot while the database is set up (Django's import is most of a start).
            servers = (stack.start_daphne("daphne", wait=False),
                       stack.start_daphne("daphne-2", free_port(), wait=False))
            news = stack.start_simulator("stocknews", "--token", "multi-token", "--news-interval", "0")
            trends = stack.start_simulator("trendspottr", "--token", "multi-ts-key", "--news-interval", "3600")
            stack.manage("shell", "-c", SETUP.format(news=news, trends=trends, base_url=stack.base_url))
            stack.start("worker", sys.executable, "manage.py", "runfeed", "stocknews")
            for server in servers:
                stack.wait_healthy(server)
            wait_until(lambda: stack.feed_state("stocknews") == "connected", what="the StockNews worker to connect")
            wait_until(lambda: stack.control("stats")["received"] >= 1, what="the worker's subscribe")
            yield Deployment(stack, servers, {})
        finally:
            stack.stop()
    stack.fail_on_application_exceptions()  # either server's


class Socket:
    """A logged-in browser's socket on one server; every frame it receives is kept, in order."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name, self.ws = name, ws
        self.frames: list[dict] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.frames.append(json.loads(message))
                self._changed.set()
        finally:
            self._changed.set()  # a waiter sees the close instead of its timeout

    async def until(self, predicate: Callable[[list[dict]], object], what: str, timeout: float = 20) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.frames):
                    assert not self._reader.done(), f"{self.name} closed ({self.ws.close_code}) waiting for {what}"
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {what} within {timeout}s; frames: {self.frames}") from None

    async def watch(self, **request) -> tuple[dict, list[dict]]:
        """Send a watch request; its answer, and the frames before it (an `error` for refused ids)."""
        start = len(self.frames)
        await self.ws.send(json.dumps({"type": "watch", **request}))
        await self.until(lambda frames: any(f["type"] == "watching" for f in frames[start:]), "the watch answer")
        before = []
        for frame in self.frames[start:]:
            if frame["type"] == "watching":
                return frame, before
            before.append(frame)
        raise AssertionError("unreachable")

    def events(self, kind: str | None = None) -> list[dict]:
        return [f for f in self.frames if f["type"] == "event" and kind in (None, f["event"]["kind"])]

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


async def open_socket(deployment: Deployment, username: str, server: int, *, session_from: int | None = None) -> Socket:
    """`username`'s socket on `server`, with the session of a login on `session_from` (default: the same)."""
    base_url = deployment.servers[server]
    cookie = deployment.cookie(username, server if session_from is None else session_from)
    ws = await connect(base_url.replace("http", "ws") + "/ws/stream/", additional_headers={"Cookie": cookie},
                       origin=base_url, open_timeout=20)
    return Socket(f"{username}@server{server + 1}", ws)


def sequenced(socket: Socket, answer: dict, stream: str) -> list[dict]:
    """The stream's events on the socket, asserting what a browser relies on: the answer's epoch, and
    seqs that go on from the answer's position one by one (no gap, no repeat)."""
    frames = [f for f in socket.frames if f["type"] == "event" and f["stream"] == stream]
    start = answer["streams"][stream]
    assert {f["epoch"] for f in frames} <= {start["epoch"]}, f"{socket.name}: {stream} changed epoch"
    assert [f["seq"] for f in frames] == list(range(start["seq"] + 1, start["seq"] + 1 + len(frames))), \
        f"{socket.name}: {stream} seqs {[f['seq'] for f in frames]} after {start['seq']}"
    return frames


def emit_news(stack: Stack, symbol: str, summary: str) -> str:
    """One article about `symbol` only, from the simulator to the worker; returns its slug (the
    news event's external_id)."""
    return stack.control("emit", ticker=symbol, stockTickers=symbol, summary=summary)["data"]["articleSlug"]


def news_ids(socket: Socket) -> list[str]:
    return [f["event"]["external_id"] for f in socket.events("news")]


def test_a_teams_sockets_on_either_server_get_every_event_once_in_stream_order(deployment: Deployment):
    stack, alpha = deployment.stack, deployment.watchlist("Alpha Desk")
    streams = [f"instrument.{deployment.instrument(symbol)}" for symbol in ALPHA]

    async def scenario():
        sockets = [await open_socket(deployment, "alice", 0), await open_socket(deployment, "bob", 1),
                   # The session of a login on server 1, used on server 2: sessions live in PostgreSQL.
                   await open_socket(deployment, "alice", 1, session_from=0)]
        answers = [(await socket.watch(watchlists=[alpha]))[0] for socket in sockets]
        try:
            sent = {symbol: [] for symbol in ALPHA}
            for n in range(3):
                for symbol in ALPHA:
                    sent[symbol].append(emit_news(stack, symbol, f"round {n} for {symbol}"))
            everything = {slug for slugs in sent.values() for slug in slugs}
            await asyncio.gather(*(socket.until(lambda _, s=socket: everything <= set(news_ids(s)),
                                                "every emitted article") for socket in sockets))
        finally:
            for socket in sockets:
                await socket.close()
        return sockets, answers, sent

    sockets, answers, sent = asyncio.run(scenario())
    seen = {}
    for socket, answer in zip(sockets, answers):
        assert set(answer["streams"]) >= set(streams)
        assert not [f for f in socket.frames if f["type"] in ("gap", "skip", "error")], socket.name
        for symbol, stream in zip(ALPHA, streams):
            frames = sequenced(socket, answer, stream)
            # Every article of the instrument, once, in the order the simulator sent them.
            assert [f["event"]["external_id"] for f in frames if f["event"]["kind"] == "news"] == sent[symbol]
            seen.setdefault(stream, []).append([(f["epoch"], f["seq"], f["event"]) for f in frames])
    # Identical on both servers: the same events under the same numbers.
    for stream, per_socket in seen.items():
        assert all(frames == per_socket[0] for frames in per_socket), f"{stream} differs between sockets"


def test_team_isolation_holds_across_servers_and_a_foreign_watch_is_refused_and_logged_by_either(
        deployment: Deployment):
    stack = deployment.stack
    alpha, beta = deployment.watchlist("Alpha Desk"), deployment.watchlist("Beta Fund")
    aapl, carol = deployment.instrument("AAPL"), deployment.id_of("SELECT id FROM auth_user WHERE username = 'carol'")
    alpha_streams = {f"instrument.{deployment.instrument(symbol)}" for symbol in ALPHA}
    beta_streams = {f"instrument.{deployment.instrument(symbol)}" for symbol in BETA}

    async def scenario():
        # Alpha sockets on both servers, so each server's hub carries Alpha's streams beside carol's sockets.
        alphas = [await open_socket(deployment, "alice", 0), await open_socket(deployment, "bob", 1)]
        carols = [await open_socket(deployment, "carol", 0), await open_socket(deployment, "carol", 1)]
        for socket in alphas:
            await socket.watch(watchlists=[alpha])
        probes = [await socket.watch(watchlists=[beta, alpha], instruments=[aapl]) for socket in carols]
        try:
            slugs = [emit_news(stack, symbol, f"Alpha only: {symbol}") for symbol in ALPHA]
            sentinel = emit_news(stack, "XOM", "Beta sentinel, sent after Alpha's news")
            await asyncio.gather(*(socket.until(lambda _, s=socket: set(slugs) <= set(news_ids(s)), "Alpha's news")
                                   for socket in alphas))
            await asyncio.gather(*(socket.until(lambda _, s=socket: sentinel in news_ids(s), "the Beta sentinel")
                                   for socket in carols))
        finally:
            for socket in alphas + carols:
                await socket.close()
        return carols, probes

    carols, probes = asyncio.run(scenario())
    for socket, (answer, before) in zip(carols, probes):
        assert [(f["type"], f.get("error")) for f in before] == [("error", "forbidden")], socket.name
        assert answer["watchlists"] == [beta] and answer["instruments"] == sorted(
            deployment.instrument(symbol) for symbol in BETA)
        assert beta_streams <= set(answer["streams"]) and not alpha_streams & set(answer["streams"])
        events = socket.events()
        assert all(f["stream"] in answer["streams"] for f in events), f"{socket.name} got a stream it never had"
        assert not [f for f in events if f["event"].get("symbol") in ALPHA], f"{socket.name}: Alpha leaked"
    # Each server logged the refusal it answered.
    refusal = f"websocket user {carol}: watch refused for watchlists [{alpha}] instruments [{aapl}]"
    for log in ("daphne", "daphne-2"):
        wait_until(lambda log=log: refusal in stack.log(log), timeout=5, what=f"the refusal in {log}.log")


class TableLockGate:
    """Holds `LOCK TABLE ... IN SHARE MODE` on the deployment's database: readers pass, the servers'
    INSERTs queue behind it, so both copies are provably inside the insert when it opens (as
    tests/concurrency.LockGate does for the test database; on 2 cores, without it, the two
    requests seldom overlap at all)."""

    def __init__(self, database_url: str, table: str) -> None:
        self.database_url, self.table = database_url, table

    def __enter__(self) -> TableLockGate:
        self._holder = psycopg.connect(self.database_url, connect_timeout=10)
        self._holder.execute(f"LOCK TABLE {self.table} IN SHARE MODE")  # psycopg opened a transaction
        return self

    def waiters(self) -> int:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=10) as db:
            return db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND wait_event_type = 'Lock'").fetchone()[0]

    def __exit__(self, *exc_info) -> None:
        try:
            self._holder.commit()  # the gate opens
        finally:
            self._holder.close()


def post_to_both_at_once(deployment: Deployment, path: str, body: dict) -> list[httpx.Response]:
    replies: list = [None, None]

    def post(index: int) -> None:
        try:
            replies[index] = httpx.post(deployment.servers[index] + path, json={**body, "attempts": index}, timeout=30)
        except httpx.HTTPError as exc:
            replies[index] = exc

    with TableLockGate(deployment.stack.database_url, "feeds_webhookdelivery") as gate:
        threads = [threading.Thread(target=post, args=(index,), daemon=True) for index in (0, 1)]
        for thread in threads:
            thread.start()
        wait_until(lambda: gate.waiters() >= 2 or not all(t.is_alive() for t in threads), timeout=15,
                   what="both servers' inserts to wait on the lock")
        assert gate.waiters() >= 2, f"a copy did not reach the insert: {replies}"
    for thread in threads:
        thread.join(30)
    assert all(isinstance(reply, httpx.Response) for reply in replies), replies
    return replies


def test_one_webhook_event_posted_to_both_servers_at_once_is_stored_once_and_pushed_once_everywhere(
        deployment: Deployment):
    stack = deployment.stack
    alert_of = {team: deployment.id_of("SELECT a.remote_alert_id FROM dashboard_trendalertdefinition a "
                                       "JOIN dashboard_team t ON t.id = a.team_id WHERE t.name = %s", team)
                for team in ("Alpha Desk", "Beta Fund")}
    # Stored encrypted; the deployment's processes share this process's FIELD_ENCRYPTION_KEYS.
    path = httpx.URL(decrypt(stack.query("SELECT public_url FROM feeds_webhookconfig")[0][0])).path

    def alert_ids(socket: Socket) -> list[str]:
        return [f["event"]["notification_id"] for f in socket.events("alert")]

    async def scenario():
        alphas = [await open_socket(deployment, "alice", 0), await open_socket(deployment, "bob", 1),
                  await open_socket(deployment, "alice", 1)]
        carols = [await open_socket(deployment, "carol", 0), await open_socket(deployment, "carol", 1)]
        answers = {socket: (await socket.watch(watchlists=[]))[0] for socket in alphas + carols}
        try:
            # A delivery from the simulator (to server 1) gives us an event signed with our secret.
            event = stack.control("deliver", sim="trendspottr", alert_id=alert_of["Alpha Desk"])
            first = str(event["data"]["notification_id"])
            await asyncio.gather(*(s.until(lambda _, s=s: first in alert_ids(s), "the first alert") for s in alphas))
            # A new event, as a provider retrying on a timeout sends it: to both servers at once.
            fresh = {**event, "event_id": event["event_id"] + 1_000_000,
                     "data": {**event["data"], "notification_id": event["data"]["notification_id"] + 1_000_000}}
            replies = await asyncio.to_thread(post_to_both_at_once, deployment, path, fresh)
            racing = str(fresh["data"]["notification_id"])
            await asyncio.gather(*(s.until(lambda _, s=s: racing in alert_ids(s), "the racing alert") for s in alphas))
            # Sentinels, sent after every Alpha socket had the racing alert: a second push of it would
            # have to come before them.
            again = str(stack.control("deliver", sim="trendspottr", alert_id=alert_of["Alpha Desk"])
                        ["data"]["notification_id"])
            beta = str(stack.control("deliver", sim="trendspottr", alert_id=alert_of["Beta Fund"])
                       ["data"]["notification_id"])
            await asyncio.gather(*(s.until(lambda _, s=s: again in alert_ids(s), "the Alpha sentinel") for s in alphas),
                                 *(s.until(lambda _, s=s: beta in alert_ids(s), "the Beta sentinel") for s in carols))
        finally:
            for socket in alphas + carols:
                await socket.close()
        return alphas, carols, answers, fresh, replies, [first, racing, again], beta

    alphas, carols, answers, fresh, replies, alpha_alerts, beta = asyncio.run(scenario())
    assert [r.status_code for r in replies] == [200, 200]
    assert sorted(r.json()["status"] for r in replies) == ["duplicate", "ok"]
    assert stack.query("SELECT state FROM feeds_webhookdelivery WHERE event_id = %s", str(fresh["event_id"])) \
        == [("processed",)]
    assert stack.query("SELECT COUNT(*) FROM feeds_alert WHERE notification_id = %s", alpha_alerts[1]) == [(1,)]
    for socket in alphas:
        assert alert_ids(socket) == alpha_alerts, socket.name  # the racing one once, between the others
        audience = {f["stream"] for f in socket.events("alert")}
        assert len(audience) == 1  # the team's audience stream, numbered one by one: nothing else was pushed
        sequenced(socket, answers[socket], audience.pop())
    for socket in carols:
        assert alert_ids(socket) == [beta], f"{socket.name}: Alpha's alerts leaked"


@pytest.mark.browser
def test_a_board_on_each_server_shows_its_teams_news_live(deployment: Deployment):
    expect = pytest.importorskip("playwright.sync_api").expect
    headline = "One headline, two servers"
    with chromium() as browser:
        pages = []
        for username, server in (("alice", 0), ("bob", 1)):
            page = browser.new_context().new_page()
            page.goto(f"{deployment.servers[server]}/login/?next=/")
            page.fill("#id_username", username)
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector('#conn-status[data-state="live"]', timeout=15_000)
            pages.append(page)
        emit_news(deployment.stack, "MSFT", headline)
        for page in pages:
            row = page.locator('[data-symbol="MSFT"]').first
            expect(row.locator(".news-headline", has_text=headline)).to_have_text(headline, timeout=15_000)
