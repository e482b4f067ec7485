"""Wire-to-browser latency at light load: from the simulator writing a frame to a logged-in browser
socket receiving the event it became.

The whole production path, every part its own process on loopback:

    StockNews simulator (`manage.py simulate stocknews`)
      -> feed worker (`manage.py runfeed stocknews`: parse, store in PostgreSQL or SQLite, publish)
      -> Redis (the live path of feeds/livestore.py, a key prefix of its own)
      -> Daphne (`python -m daphne project.asgi:application`, DEBUG=0)
      -> one WebSocket client (the `websockets` library, not a browser: no page, no JavaScript),
         logged in as the demo user alice with a session cookie and the Origin header, watching
         her team's watchlist ({"type": "watch", "watchlists": [id]}).

For each rate (--rates, events/s) the simulator sends --events articles about the watchlist's
tickers on an absolute schedule (feeds/simulators/flood.py). Each article's slug, which becomes
the delivered news event's `external_id`, is `bench:<n>:<ns>`: the CLOCK_MONOTONIC time the
simulator wrote the frame at. CLOCK_MONOTONIC is one clock for every process on the machine, so
latency = arrival - stamp, taken when the client has read the frame. One sample per article (its
first delivery: an article naming two watched tickers reaches the socket twice).

The database is fresh: migrated and seeded with `manage.py seed_demo` (--database, default
postgres; a throw-away database on the test server). Prints p50/p90/p99/max per rate and writes
bench/results/wire-to-browser-<UTC>.json (or --out). Loopback only; every process is started
here, bounded in time and stopped by pid in `finally`.

    python bench/wire_to_browser.py                      # 5 and 20 events/s, 200 articles each
    python bench/wire_to_browser.py --rates 10 --events 500 --database sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]
from _common import (create_postgres_database, drop_database, free_port, percentile,  # noqa: E402
                     login_session, postgres_server_url, proc_cpu_seconds, utc_stamp, wait_healthy, write_json)
from ingest_kinds import Child, Simulator  # noqa: E402
from ingest_setup import django_env, forget_redis, sql_execute, sql_rows  # noqa: E402

P99_TARGET_MS = 50.0
WARMUP_ARTICLES = 10


def _prepare() -> int:
    """Migrate, seed the demo, log alice in; print her session, watchlist and its tickers."""
    import django

    django.setup()
    from django.core.management import call_command

    from dashboard.models import Watchlist
    from feeds.models import ProviderAccount

    call_command("migrate", "--noinput", verbosity=0)
    call_command("seed_demo", stdout=open(os.devnull, "w"))
    session_key, user = login_session("alice")
    watchlist = Watchlist.objects.filter(team__memberships__user=user).order_by("id").first()
    tickers = [item.instrument.stocknews_ticker for item in watchlist.items.select_related("instrument")
               if item.instrument.stocknews_ticker]
    ProviderAccount.objects.update_or_create(provider="stocknews", defaults={
        "endpoint": "ws://127.0.0.1:9/ws", "token": "demo-token", "enabled": True})
    print(json.dumps({"type": "prepared", "session_key": session_key, "watchlist": watchlist.id,
                      "tickers": tickers}), flush=True)
    return 0


class Socket:
    """One logged-in browser socket; records the first arrival of each stamped article."""

    def __init__(self, port: int, session_key: str, watchlist: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws/stream/"
        self.headers = {"Cookie": f"sessionid={session_key}"}
        self.origin = f"http://127.0.0.1:{port}"
        self.watchlist = watchlist
        self.arrivals: dict[int, float] = {}  # article number -> latency in ms
        self.stamps: dict[int, int] = {}  # article number -> the simulator's stamp (ns)
        self.frames = 0

    async def run(self, ready: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        async with connect(self.url, additional_headers=self.headers, origin=self.origin, max_queue=None,
                           open_timeout=20) as ws:
            await ws.send(json.dumps({"type": "watch", "watchlists": [self.watchlist]}))
            async for text in ws:
                arrived = time.monotonic_ns()
                message = json.loads(text)
                if message.get("type") == "watching":
                    ready.set()
                elif message.get("type") == "event":
                    self.frames += 1
                    external_id = str(message.get("event", {}).get("external_id", ""))
                    if external_id.startswith("bench:"):
                        _, number, stamp = external_id.split(":")
                        self.arrivals.setdefault(int(number), (arrived - int(stamp)) / 1e6)
                        self.stamps.setdefault(int(number), int(stamp))
                elif message.get("type") in ("error", "access_ended"):
                    raise RuntimeError(f"the server answered {message}")

    def take(self) -> tuple[dict[int, float], dict[int, int]]:
        arrivals, stamps, self.arrivals, self.stamps = self.arrivals, self.stamps, {}, {}
        return arrivals, stamps


def to_worker_ms(url: str, stamps: dict[int, int]) -> list[float]:
    """Simulator write -> worker receipt, per article: the stored news item's `received_at` (the
    worker's wall clock when the frame arrived) on the monotonic clock of the stamp."""
    import datetime as dt

    offset = time.time() - time.monotonic()  # one wall/monotonic offset for every process (no NTP step meanwhile)
    out = []
    for external_id, received_at in sql_rows(url, "SELECT external_id, received_at FROM feeds_newsitem "
                                                  "WHERE external_id LIKE 'bench:%%'"):
        number = int(external_id.split(":")[1])
        if external_id != f"bench:{number}:{stamps.get(number)}":  # an earlier step's article
            continue
        if isinstance(received_at, str):  # SQLite: naive UTC text
            received_at = dt.datetime.fromisoformat(received_at).replace(tzinfo=dt.timezone.utc)
        out.append((received_at.timestamp() - offset) * 1e3 - stamps.pop(number) / 1e6)
    return sorted(out)


async def measure(args: argparse.Namespace, info: dict, sim: Simulator, daphne: Child, worker: Child) -> list[dict]:
    socket = Socket(args.port, info["session_key"], info["watchlist"])
    ready = asyncio.Event()
    client = asyncio.create_task(socket.run(ready))
    rows = []
    try:
        await asyncio.wait_for(asyncio.shield(ready.wait()), 30)
        tickers = ",".join(info["tickers"])
        steps = [("warm-up", float(args.rates[0]), WARMUP_ARTICLES)] + [(None, r, args.events) for r in args.rates]
        for label, rate, count in steps:
            socket.take()
            cpu = {name: proc_cpu_seconds(child.proc.pid) for name, child in (("worker", worker), ("daphne", daphne))}
            started = time.monotonic()
            await asyncio.to_thread(sim.control, "flood", count=count, rate=rate, stamp=1, tickers=tickers)
            deadline = started + count / rate + args.drain
            while len(socket.arrivals) < count and time.monotonic() < deadline and not client.done():
                await asyncio.sleep(0.05)
            if client.done():
                client.result()  # raises what ended the socket
            elapsed = time.monotonic() - started
            arrivals, stamps = socket.take()
            latencies = sorted(arrivals.values())
            if label:
                continue
            pct = {f"p{p}": _round(percentile(latencies, p)) for p in (50, 90, 99)}
            to_worker = await asyncio.to_thread(to_worker_ms, args.database_url, stamps)
            rows.append({
                "rate": rate, "articles": count, "delivered": len(latencies), "lost": count - len(latencies),
                "latency_ms": {**pct, "max": _round(latencies[-1] if latencies else None),
                               "min": _round(latencies[0] if latencies else None)},
                "p99_ok": pct["p99"] is not None and pct["p99"] <= P99_TARGET_MS,
                # the first leg alone: simulator -> worker (received, about to parse); the rest is
                # parse, store, publish, Redis, Daphne and the client
                "to_worker_ms": {f"p{p}": _round(percentile(to_worker, p)) for p in (50, 99)},
                "cpu_us_per_article": {name: _round((proc_cpu_seconds(child.proc.pid) - cpu[name]) / max(1, count) * 1e6)
                                       for name, child in (("worker", worker), ("daphne", daphne))},
                "seconds": round(elapsed, 2), "loadavg": list(os.getloadavg()),
            })
            print(f"{rate:>6g}/s  {len(latencies):>5}/{count:<5}  p50 {_fmt(pct['p50'])}  p90 {_fmt(pct['p90'])}  "
                  f"p99 {_fmt(pct['p99'])}  max {_fmt(rows[-1]['latency_ms']['max'])} ms   (to the worker: p50 "
                  f"{_fmt(rows[-1]['to_worker_ms']['p50'])}, p99 {_fmt(rows[-1]['to_worker_ms']['p99'])} ms)", flush=True)
    finally:
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)
    return rows


def _round(value):
    return None if value is None else round(value, 2)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:7.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="5,20", help="articles per second, comma-separated (light load: <= 50)")
    parser.add_argument("--events", type=int, default=200, help="articles per rate")
    parser.add_argument("--database", default="postgres", choices=("postgres", "sqlite"))
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL server where we may create databases")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for stragglers after each step")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if not args.rates or any(not 0 < r <= 1000 for r in args.rates) or not 1 <= args.events <= 10_000:
        parser.error("--rates must be in (0, 1000] and --events 1..10000")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_prepare"]:
        return _prepare()
    args = parse_args(argv)
    started = utc_stamp()
    env = django_env(args.redis_url)
    prefix = f"twwire-{secrets.token_hex(4)}"
    server = postgres_server_url(args.postgres_url)
    rows, error = [], None
    with tempfile.TemporaryDirectory(prefix="twwire-") as tmp:
        tmp = Path(tmp)
        url = (f"sqlite:///{tmp / 'db.sqlite3'}" if args.database == "sqlite"
               else create_postgres_database(server, "twwire"))
        run_env = {**env, "DATABASE_URL": url, "CHANNEL_LAYER_PREFIX": prefix, "ALLOWED_HOSTS": "127.0.0.1,localhost"}
        children: list[Child] = []
        try:
            done = subprocess.run([sys.executable, str(BENCH / "wire_to_browser.py"), "_prepare"], cwd=ROOT,
                                  env=run_env, capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise RuntimeError(f"preparing the database failed:\n{done.stdout}\n{done.stderr[-3000:]}")
            info = json.loads(done.stdout.strip().splitlines()[-1])
            sim = Simulator("stocknews", run_env, tmp / "simulator.log")
            children.append(sim.child)
            sql_execute(url, "UPDATE feeds_provideraccount SET endpoint = %s WHERE provider = %s",
                        (sim.endpoint, "stocknews"))
            args.database_url = url
            args.port = free_port()
            daphne = Child("daphne", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(args.port),
                                      "project.asgi:application"], run_env, tmp / "daphne.log")
            children.append(daphne)
            worker = Child("worker", [sys.executable, "manage.py", "runfeed", "stocknews"], run_env, tmp / "worker.log")
            children.append(worker)
            wait_healthy(args.port, daphne)
            deadline = time.monotonic() + 60
            while not sim.subscribed(0):  # connected, and its subscribe received
                if not worker.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not connect{worker.tail()}")
                time.sleep(0.1)
            print(f"{'rate':>8}  {'delivered':>11}  latency from the simulator's write to the socket's read", flush=True)
            rows = asyncio.run(measure(args, info, sim, daphne, worker))
        except Exception as exc:  # noqa: BLE001 - reported in the JSON and the exit code
            error = f"{type(exc).__name__}: {exc}"[:4000]
            print(error, file=sys.stderr)
        finally:
            for child in reversed(children):
                child.stop()
            forget_redis(args.redis_url, prefix)
            drop_database(url, server)
    out = args.out or BENCH / "results" / f"wire-to-browser-{started}.json"
    write_json(out, {
        "benchmark": "wire_to_browser", "started": started, "finished": utc_stamp(),
        "client": "websockets (Python), one socket; not a browser",
        "options": {"rates": args.rates, "events": args.events, "database": args.database},
        "p99_target_ms": P99_TARGET_MS, "error": error, "rows": rows,
    })
    print(f"wrote {out}")
    return 0 if error is None and rows and all(r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
