"""Ingest benchmark: how many events per second one feed worker stores and publishes, per kind.

For each kind and each database (--kinds, --databases), one run:

1. a throw-away database: a copy of a template migrated once per database and holding
   --instruments instruments on one watchlist (so the worker subscribes to all of them) and an
   account per provider (SQLite: a file copy; PostgreSQL: CREATE DATABASE ... TEMPLATE);
2. the provider's simulator (`manage.py simulate <provider>`, automatic traffic paused) and a real
   worker (`manage.py runfeed <provider>`, METRICS_PORT set) on that database and the real Redis
   (REDIS_URL, a CHANNEL_LAYER_PREFIX of its own);
3. once the worker is subscribed, a small warm-up flood, then the measured flood: the simulator
   builds every frame first, then sends them as fast as the worker reads them
   (feeds/simulators/flood.py); the clock starts when the frames are built;
4. the worker's Prometheus metrics are read every 250 ms until it has received every frame, its
   pipeline queue is empty and its counters stopped moving; its CPU time is read every 50 ms, and
   the clock stops at the last reading where it was still busy (flooded, a worker is CPU-bound
   until it is done).

Per run: input events (what the frames hold, as the simulator counted them), events/s, stored/s and
published/s (the worker's `tickerwire_events_stored_total` / `..._published_total`: conflated quotes
and bars and per-minute crowd buckets count once), rows in the kind's table, and worker CPU per
input event (/proc/<pid>/stat, all its threads). Kinds:

    news        StockNews articles: a news item per ticker named, plus the article's price quote
    quotes      InsightSentry quote updates (upserted: the latest per instrument is stored)
    bars        InsightSentry series updates (upserted by bar start)
    crowd       StockTwits Firehose messages: a mention per symbol, per-minute sentiment buckets
    datapoints  Knowsis sentiment/volume datapoints (over Pusher)
    prices      Knowsis delayed prices (over Pusher; upserted quotes)

    python bench/ingest.py                                     # every kind, SQLite and PostgreSQL
    python bench/ingest.py --kinds news,crowd --databases postgres --events 50000

Loopback only; every process is started here, bounded in time, stopped by pid in `finally`, and
every database made here is dropped. Writes bench/results/ingest-<UTC>.json (or --out). The
figures depend on the machine and on what else runs on it (load average is recorded per run).
`python bench/ingest.py pipeline --kind news` drives feeds/pipeline.py in this process instead,
with events made up in memory and publishing replaced by a no-op (`--profile` adds cProfile of
the store thread): where storing alone spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]  # _common; the project (Django side, in subprocesses)
from _common import (copy_sqlite, create_postgres_database, drop_database, free_port,  # noqa: E402
                     postgres_server_url, proc_cpu_seconds, utc_stamp, write_json)

CONTROL_TOKEN = secrets.token_hex(8)
POLL_SECONDS = 0.05  # the worker's CPU time is read this often ...
METRICS_EVERY = 5  # ... and its metrics at every 5th poll
SETTLED_SECONDS = 0.5  # counters unchanged this long after the last frame: the worker is done
BUSY_SHARE = 0.3  # of a core: a worker using less than that over a poll is idle
WARMUP_FRAMES = 300


@dataclass(frozen=True)
class Kind:
    name: str
    provider: str
    frames_per_event: float  # frames to send for --events input events (about)
    flood: dict = field(default_factory=dict)  # extra /control/flood parameters
    rows_sql: str = ""

    def events(self, summary: dict) -> int:
        """Input events the announced frames hold (the simulator's own count)."""
        if self.name == "news":
            return summary["news"] + summary["quotes"]
        if self.name in ("quotes", "bars"):
            return summary[self.name]
        if self.name == "crowd":
            return summary["mentions"]
        return sum(summary["events"].values())


KINDS = {k.name: k for k in (
    Kind("news", "stocknews", 0.45, {}, "SELECT count(*) FROM feeds_newsitem"),
    Kind("quotes", "insightsentry", 1.0, {"kind": "quote"}, "SELECT count(*) FROM feeds_quote"),
    Kind("bars", "insightsentry", 1.0, {"kind": "series"}, "SELECT count(*) FROM feeds_bar"),
    Kind("crowd", "stocktwits", 0.75, {}, "SELECT count(*) FROM feeds_crowdmention"),
    Kind("datapoints", "knowsis", 1.0, {"events": "datapoint"},
         "SELECT count(*) FROM feeds_sentimentsample WHERE provider = 'knowsis'"),
    Kind("prices", "knowsis", 1.0, {"events": "price"}, "SELECT count(*) FROM feeds_quote WHERE provider = 'knowsis'"),
)}

# provider -> (simulate token, endpoint path, automatic traffic off)
SIMULATORS = {
    "stocknews": ("demo-token", "/ws", None),
    "insightsentry": ("demo-key", "/live", ("ticks", {"interval": "0"})),
    "stocktwits": ("demo:demo-password", "/sentiment", ("interval", {"seconds": ""})),
    "knowsis": ("demo-key:demo-secret", "", None),
}


# -- Django side (a child process) --------------------------------------------------------------
def _prepare(instruments: int) -> int:
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


# -- processes ----------------------------------------------------------------------------------
class Child:
    """A process started here, its output in a log file; stopped by pid."""

    def __init__(self, name: str, args: list[str], env: dict, log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n" + "\n".join(text.splitlines()[-lines:]) if text else ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def http_json(url: str, timeout: float = 60) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class Simulator:
    def __init__(self, provider: str, env: dict, log: Path) -> None:
        self.provider, self.port = provider, free_port()
        token = SIMULATORS[provider][0]
        self.child = Child(f"{provider} simulator", [
            sys.executable, "manage.py", "simulate", provider, "--port", str(self.port), "--token", token,
            "--news-interval", "0", "--control-token", CONTROL_TOKEN, "--seed", "1"], env, log)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.stats()
                break
            except OSError:
                if not self.child.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the {provider} simulator did not start{self.child.tail()}") from None
                time.sleep(0.1)
        quiet = SIMULATORS[provider][2]
        if quiet:
            self.control(quiet[0], **quiet[1])

    @property
    def endpoint(self) -> str:
        scheme = "http" if self.provider == "stocktwits" else "ws"
        return f"{scheme}://127.0.0.1:{self.port}{SIMULATORS[self.provider][1]}"

    def control(self, action: str, **params) -> dict:
        query = urllib.parse.urlencode({"token": CONTROL_TOKEN, **params})
        return http_json(f"http://127.0.0.1:{self.port}/control/{action}?{query}")

    def stats(self) -> dict:
        return self.control("stats")

    def subscribed(self, instruments: int) -> bool:
        stats = self.stats()
        if self.provider == "stocknews":
            return stats["openConnections"] >= 1 and stats["received"] >= 1  # connected, subscribe sent
        if self.provider == "stocktwits":
            return stats["open_streams"] >= 1
        per_connection = {"insightsentry": 2 * instruments, "knowsis": instruments}[self.provider]
        return any(len(subs) >= per_connection for subs in stats["subscriptions"].values())


METRIC_LINE = re.compile(r'^(\w+)\{provider="(\w+)"\} (\S+)$', re.M)


def worker_metrics(port: int, provider: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {name: float(value) for name, label, value in METRIC_LINE.findall(text) if label == provider}


@dataclass
class Sample:
    at: float
    received: float
    stored: float
    published: float
    depth: float
    cpu: float


def sample(port: int, provider: str, pid: int) -> Sample:
    values = worker_metrics(port, provider)
    return Sample(time.monotonic(), values.get("tickerwire_feed_messages_received_total", 0.0),
                  values.get("tickerwire_events_stored_total", 0.0), values.get("tickerwire_events_published_total", 0.0),
                  values.get("tickerwire_pipeline_queue_depth", 0.0), proc_cpu_seconds(pid))


def flood_and_wait(sim: Simulator, kind: Kind, frames: int, metrics_port: int, worker: Child,
                   timeout: float) -> dict:
    """One flood of `frames`, timed from the moment its frames are built until the worker is done.

    Done: it received every frame, its queue is empty and its counters held still for
    SETTLED_SECONDS. Its metrics are read every METRICS_EVERY polls only (serving them costs the
    worker CPU); its CPU time (/proc, free for it) every poll, and the clock stops at the last poll
    where it was still busy: a worker flooded is CPU-bound until it is done, then idles."""
    pid = worker.proc.pid
    before = sample(metrics_port, kind.provider, pid)
    summary = sim.control("flood", count=frames, **kind.flood)
    t0 = time.monotonic()
    sent = summary.get("frames", summary.get("messages"))
    cpu_trace = [(t0, proc_cpu_seconds(pid))]
    last = before
    settled_since = None
    deadline = t0 + timeout
    polls = 0
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        polls += 1
        cpu_trace.append((time.monotonic(), proc_cpu_seconds(pid)))
        if polls % METRICS_EVERY:
            continue
        if not worker.alive():
            raise RuntimeError(f"the worker exited ({worker.proc.returncode}){worker.tail()}")
        current = sample(metrics_port, kind.provider, pid)
        finished = current.received - before.received >= sent and current.depth == 0
        moved = (current.stored, current.published, current.received) != (last.stored, last.published, last.received)
        last = current
        if not finished or moved:
            settled_since = None
            continue
        settled_since = settled_since or current.at
        if current.at - settled_since >= SETTLED_SECONDS:
            return {"summary": summary, "complete": True, "before": before, "end": current, "t0": t0,
                    "busy_until": _busy_until(cpu_trace)}
    return {"summary": summary, "complete": False, "before": before, "end": last, "t0": t0,
            "busy_until": cpu_trace[-1]}


def _busy_until(trace: list[tuple[float, float]]) -> tuple[float, float]:
    """(time, CPU seconds) at the last poll after which the worker still used at least BUSY_SHARE of a
    core: the end of its work on the flood (an idle worker wakes only briefly, for its heartbeat)."""
    end = trace[min(1, len(trace) - 1)]  # never seen busy (a flood done within one poll): one poll
    for (t1, c1), (t2, c2) in zip(trace, trace[1:]):
        if c2 - c1 >= BUSY_SHARE * (t2 - t1):
            end = (t2, c2)
    return end


# -- one run ------------------------------------------------------------------------------------
def run_one(kind: Kind, database: str, dbs: Databases, env: dict, events: int, tmp: Path,
            py_spy: str | None = None, profile_dir: Path | None = None) -> dict:
    row: dict = {"kind": kind.name, "database": database, "provider": kind.provider, "error": None,
                 "loadavg_before": list(os.getloadavg())}
    url = dbs.copy(database)
    prefix = f"twingest-{secrets.token_hex(4)}"
    run_env = {**env, "DATABASE_URL": url, "CHANNEL_LAYER_PREFIX": prefix}
    sim = worker = None
    try:
        sim = Simulator(kind.provider, run_env, tmp / f"{kind.name}-{database}-simulator.log")
        sql_execute(url, "UPDATE feeds_provideraccount SET endpoint = %s, enabled = %s WHERE provider = %s",
                    (sim.endpoint, True, kind.provider))
        metrics_port = free_port()
        worker = Child(f"{kind.provider} worker", [sys.executable, "manage.py", "runfeed", kind.provider,
                                                    "--metrics-port", str(metrics_port)],
                       run_env, tmp / f"{kind.name}-{database}-worker.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                if sim.subscribed(dbs.instruments):
                    worker_metrics(metrics_port, kind.provider)
                    break
            except OSError:
                pass
            if not worker.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not connect and subscribe{worker.tail()}{sim.child.tail(10)}")
            time.sleep(0.1)
        frames = max(1, round(events * kind.frames_per_event))
        warm = flood_and_wait(sim, kind, min(WARMUP_FRAMES, frames), metrics_port, worker, timeout=60)
        if not warm["complete"]:
            raise RuntimeError(f"the warm-up flood did not finish{worker.tail()}")
        rows_before = sql_value(url, kind.rows_sql)
        spy = None
        if py_spy:  # sample the worker's stacks (all threads) while it takes the measured flood
            profile = (profile_dir or BENCH / "results") / f"ingest-{kind.name}-{database}-{utc_stamp()}.txt"
            profile.parent.mkdir(parents=True, exist_ok=True)
            spy = subprocess.Popen([py_spy, "record", "--pid", str(worker.proc.pid), "--rate", "250", "--format", "raw",
                                    "--output", str(profile), "--nonblocking", "--threads"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            row["profile"] = str(profile)
            time.sleep(1.0)  # py-spy attaches
        try:
            result = flood_and_wait(sim, kind, frames, metrics_port, worker, timeout=max(60.0, frames / 200))
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
        before, end = result["before"], result["end"]
        busy_until, cpu_at_end = result["busy_until"]
        seconds = max(busy_until - result["t0"], 1e-9)
        count = kind.events(result["summary"])
        stored, published, cpu = end.stored - before.stored, end.published - before.published, cpu_at_end - before.cpu
        row.update({
            "complete": result["complete"], "frames": int(end.received - before.received), "events": count,
            "seconds": round(seconds, 3), "events_per_s": round(count / seconds, 1),
            "stored": int(stored), "stored_per_s": round(stored / seconds, 1),
            "published": int(published), "published_per_s": round(published / seconds, 1),
            "rows": sql_value(url, kind.rows_sql) - rows_before,
            "cpu_seconds": round(cpu, 3), "cpu_us_per_event": round(cpu / count * 1e6, 1) if count else None,
            "worker_cpu_percent": round(cpu / seconds * 100, 1),
        })
        if not result["complete"]:
            row["error"] = f"the worker had not finished after {seconds:.0f}s"
    except Exception as exc:  # noqa: BLE001 - reported in the row; the other runs go on
        row["error"] = f"{type(exc).__name__}: {exc}"[:4000]
    finally:
        if worker is not None:
            code = worker.stop()
            if code not in (0, None) and row["error"] is None:
                row["error"] = f"the worker exited with {code}{worker.tail(10)}"
        if sim is not None:
            sim.child.stop()
        _forget_redis(env.get("REDIS_URL"), prefix)
        dbs.drop(url)
        row["loadavg_after"] = list(os.getloadavg())
    return row


def _forget_redis(url: str | None, prefix: str) -> None:
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


# -- the pipeline alone (in this process) -------------------------------------------------------
def _made_up_units(kind: str, count: int, tickers: list[str]) -> list[list]:
    """`count` frames' events, as the parsers would hand them over (codes the template knows)."""
    import random
    from datetime import datetime, timedelta, timezone

    from feeds import events as ev

    now, rng, n = datetime.now(timezone.utc), random.Random(1), len(tickers)

    def unit(i: int) -> list:
        t = tickers[i % n]
        if kind == "news":
            return [ev.News(provider="stocknews", code=c, received_at=now, external_id=f"n{i}", headline=f"{t} beats",
                            summary="Revenue climbs. " * 12, url=f"https://stocknews.live/news/{t}/n{i}",
                            category="earnings", sentiment=40.0, raw_sentiment="40", sentiment_label="Bullish",
                            confidence=71.0, key_factors=("earnings beat",), source="Stock News", price=101.0,
                            published_at=now) for c in (t, tickers[(i + 1) % n])[:1 + i % 2]]
        if kind in ("quotes", "prices"):
            return [ev.Quote(provider="insightsentry", code=f"NYSE:{t}", received_at=now, ts=now, price=100 + rng.random(),
                             change=1.0, change_percent=0.5, bid=99.9, ask=100.1, volume=1e6 + i)]
        if kind == "bars":
            return [ev.Bar(provider="insightsentry", code=f"NYSE:{t}", received_at=now, interval="1m",
                           start=now.replace(second=0, microsecond=0), open=100, high=101, low=99,
                           close=100 + rng.random(), volume=1000 + i)]
        if kind == "crowd":
            return [ev.CrowdPost(provider="stocktwits", code=tickers[(i + j) % n], received_at=now, external_id=str(i),
                                 cursor=f"{i:056d}", ts=now - timedelta(seconds=i % 90), score=0.3, user_id="7")
                    for j in range(1 + i % 2)]
        return [ev.Sentiment(provider="knowsis", code=t.lower(), received_at=now, external_id=f"datapoint:{i}", ts=now,
                             score=1.0, scale="knowsis", raw_score="1", volume=1.2)]

    return [unit(i) for i in range(count)]


def pipeline_driver(argv: list[str]) -> int:
    """Store made-up events through feeds/pipeline.py in this process (publishing a no-op)."""
    parser = argparse.ArgumentParser(prog="ingest.py pipeline", description=pipeline_driver.__doc__)
    parser.add_argument("--kind", default="news", choices=sorted(KINDS))
    parser.add_argument("--database", default="postgres", choices=("sqlite", "postgres"))
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--profile", action="store_true", help="cProfile the store thread, print the top 30")
    args = parser.parse_args(argv)
    import asyncio
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory(prefix="twingest-") as tmp:
        env = django_env(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
        dbs = Databases(Path(tmp), env, args.postgres_url, args.instruments)
        try:
            url = dbs.copy(args.database)
            os.environ.update({**env, "DATABASE_URL": url, "CHANNEL_LAYER_PREFIX": f"twingest-{secrets.token_hex(4)}"})
            import django

            django.setup()
            from django.db import connections

            from feeds.pipeline import Pipeline
            from feeds.store import events_store

            units = _made_up_units(args.kind, args.frames, dbs.tickers)
            profiler = cProfile.Profile()

            def store(*, events):
                if args.profile:
                    profiler.enable()
                try:
                    return events_store(events=events)
                finally:
                    profiler.disable()

            async def no_publish(events) -> int:
                return len(list(events))

            async def drive() -> tuple[float, float, int]:
                pipeline = Pipeline(store=store, publish=no_publish, provider="bench")
                runner = asyncio.create_task(pipeline.run())
                wall, cpu = time.perf_counter(), time.process_time()
                for unit in units:
                    await pipeline.submit(unit)
                await pipeline.wait_idle()
                runner.cancel()
                return time.perf_counter() - wall, time.process_time() - cpu, pipeline.stored

            wall, cpu, stored = asyncio.run(drive())
            count = sum(map(len, units))
            print(f"{args.kind} on {args.database}: {count:,} events in {wall:.2f}s = {count / wall:,.0f}/s, "
                  f"{cpu / count * 1e6:.1f} µs CPU per event (this process), {stored:,} stored (new, conflated)")
            if args.profile:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            connections.close_all()
            dbs.drop(url)
        finally:
            dbs.close()
    return 0


# -- orchestration ------------------------------------------------------------------------------
def django_env(redis_url: str) -> dict:
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CHANNEL_LAYER_PREFIX", "METRICS_PORT")
           and not k.startswith("PYTEST_")}
    return {**env, "DJANGO_SETTINGS_MODULE": "project.settings", "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DEBUG": "0", "HTTPS": "0", "STATIC_MANIFEST": "0", "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}


def _fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def print_header() -> None:
    print(f"{'kind':<11} {'database':<9} {'events':>8} {'events/s':>9} {'stored/s':>9} {'published/s':>11} "
          f"{'CPU µs/event':>12}  rows", flush=True)


def print_table(rows: list[dict]) -> None:
    for r in rows:
        if r.get("events") is None:
            print(f"{r['kind']:<11} {r['database']:<9} error: {r['error']}")
            continue
        print(f"{r['kind']:<11} {r['database']:<9} {r['events']:>8,} {_fmt(r['events_per_s']):>9} "
              f"{_fmt(r['stored_per_s']):>9} {_fmt(r['published_per_s']):>11} {_fmt(r['cpu_us_per_event'], '.1f'):>12}"
              f"  {r['rows']:,}" + (f"  ({r['error']})" if r["error"] else ""), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of: {', '.join(KINDS)}")
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--events", type=int, default=20_000, help="input events per run (about; at most "
                        "100,000 frames)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every kind (interleaved); the summary "
                        "gives the median and best")
    parser.add_argument("--instruments", type=int, default=100, help="instruments watched (at least 17: the "
                        "simulators' universe comes first)")
    parser.add_argument("--postgres-url", default=None,
                        help="a PostgreSQL server where we may create databases (any database name: it is replaced; "
                        "default TEST_POSTGRES_URL, a postgres DATABASE_URL, or the role scripts/ensure-postgres makes)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/ingest-<UTC>.json)")
    parser.add_argument("--py-spy", default=None, metavar="PATH",
                        help="a py-spy binary: record the worker's stacks during each measured flood (raw format)")
    parser.add_argument("--profile-dir", type=Path, default=None, help="where --py-spy writes (default bench/results)")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    unknown = [k for k in args.kinds if k not in KINDS] + [d for d in args.databases if d not in ("sqlite", "postgres")]
    if unknown:
        parser.error(f"unknown kinds or databases: {', '.join(unknown)}")
    if not 17 <= args.instruments <= 26 * 26 + 17 or not 1 <= args.events <= 100_000 or not 1 <= args.repeat <= 20:
        parser.error("--instruments must be 17..693, --events 1..100000 and --repeat 1..20")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_prepare"]:
        return _prepare(int(argv[1]))
    if argv[:1] == ["pipeline"]:
        return pipeline_driver(argv[1:])
    args = parse_args(argv)
    started = utc_stamp()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="twingest-") as tmp:
        env = django_env(args.redis_url)
        dbs = Databases(Path(tmp), env, args.postgres_url, args.instruments)
        print_header()
        try:
            for database in args.databases:
                for round_no in range(1, args.repeat + 1):  # interleaved: a busy spell hits every kind alike
                    for name in args.kinds:
                        row = run_one(KINDS[name], database, dbs, env, args.events, Path(tmp), args.py_spy,
                                      args.profile_dir)
                        rows.append({"round": round_no, **row})
                        print_table(rows[-1:])
        finally:
            dbs.close()
    out = args.out or BENCH / "results" / f"ingest-{started}.json"
    summary = summarize(rows)
    if args.repeat > 1:
        print("\nmedian of the rounds (best events/s):")
        for key, value in summary.items():
            print(f"{key:<22} {_fmt(value['events_per_s']['median']):>9} ({_fmt(value['events_per_s']['best'])}) events/s"
                  f"  {_fmt(value['stored_per_s']['median']):>9} stored/s  {_fmt(value['published_per_s']['median']):>9}"
                  f" published/s  {_fmt(value['cpu_us_per_event']['median'], '.1f'):>7} µs/event")
    write_json(out, {
        "benchmark": "ingest", "started": started, "finished": utc_stamp(),
        "options": {"kinds": args.kinds, "databases": args.databases, "events": args.events,
                    "instruments": args.instruments, "repeat": args.repeat},
        "environment": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "commit": _commit()},
        "rows": rows, "summary": summary,
    })
    print(f"\nwrote {out}")
    return 0 if rows and all(r["error"] is None for r in rows) else 1


def summarize(rows: list[dict]) -> dict:
    """Per kind and database, over the rounds without error: the median and best of each rate, and
    the median and least CPU per event."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["error"] is None:
            groups.setdefault(f"{row['kind']}/{row['database']}", []).append(row)

    def spread(values: list[float], best=max) -> dict:
        ordered = sorted(values)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        return {"median": round(median, 1), "best": round(best(ordered), 1), "runs": len(ordered)}

    return {key: {"events_per_s": spread([r["events_per_s"] for r in group]),
                  "stored_per_s": spread([r["stored_per_s"] for r in group]),
                  "published_per_s": spread([r["published_per_s"] for r in group]),
                  "cpu_us_per_event": spread([r["cpu_us_per_event"] for r in group], best=min)}
            for key, group in groups.items()}


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())
