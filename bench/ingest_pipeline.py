"""`python bench/ingest.py pipeline`: feeds/pipeline.py alone, in this process, on events made up in
memory, publishing a no-op: where storing alone spends its time."""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path

from ingest_kinds import KINDS
from ingest_setup import Databases, django_env


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
