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
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]  # _common and ingest_*; the project (Django side, in subprocesses)
from _common import free_port, utc_stamp, write_json  # noqa: E402
from ingest_kinds import KINDS, Child, Kind, Simulator, flood_and_wait, worker_metrics  # noqa: E402
from ingest_pipeline import pipeline_driver  # noqa: E402
from ingest_setup import Databases, django_env, forget_redis, prepare, sql_execute, sql_value  # noqa: E402

WARMUP_FRAMES = 300


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
        forget_redis(env.get("REDIS_URL"), prefix)
        dbs.drop(url)
        row["loadavg_after"] = list(os.getloadavg())
    return row


# -- orchestration ------------------------------------------------------------------------------
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
        return prepare(int(argv[1]))
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
