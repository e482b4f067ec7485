"""Storage benchmark: bytes per stored row of each table, and the database size after a year under the
default retention policy (feeds/retention_policy.py).

Creates a scratch PostgreSQL database (`twstorage_<pid>_<hex>`, dropped at the end), migrates it and
stores a slice of realistic data for K instruments through the real store (`feeds.store.events_store`,
as a feed worker does), the payloads made by the simulators' own generators and read by the real
parsers: one trading day of 1-minute bars, Knowsis datapoints, StockTwits firehose mentions (and the
per-minute crowd buckets the store derives from them), and as many days of news and alerts as give
each at least `--min-rows` rows. Then VACUUM ANALYZE and `pg_total_relation_size` per table (heap,
indexes and TOAST) less the empty table's size: bytes per row. Then the retention service itself runs
on the slice as if 31 and 400 days had passed, which measures how many hourly and daily rows the
roll-ups make of it and how long they take.

The year at `--target-instruments` (500) is rows kept x bytes per row. Rows kept are what the policy
holds after one year: mentions for 7 days, raw sentiment and 1-minute bars for 30, their hourly roll-ups
for the rest of the year, news and alerts for the whole year (they go after two). The rates are
assumptions (RATES below, printed with the result), not measurements: providers publish none.

    python bench/storage.py                          # K=50, about a minute
    python bench/storage.py --instruments 100 --database-url postgres://…/postgres

Prints a table and writes JSON to bench/results/storage-<UTC time>.json. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]  # _common; and the project, for the Django side

from _common import create_postgres_database, drop_database, postgres_server_url, utc_stamp, write_json  # noqa: E402

TABLES = ("feeds_bar", "feeds_sentimentsample", "feeds_crowdmention", "feeds_newsitem", "feeds_alert")
TRADING_DAYS = 252  # a US exchange year: bars only come on trading days
# Per instrument and day unless said otherwise. None is published by the providers; each is a
# deliberately round, middle-of-the-road figure, overridable on the command line.
RATES = {
    "bar_minutes": 390,  # 1-minute bars per trading day: the regular US session, 09:30-16:00 ET
    "datapoints": 288,  # Knowsis datapoints: sent on every change of sentiment or volume; one per 5 min, all day
    "mentions": 200,  # StockTwits mentions of a watched symbol (mean; skewed: leaders get thousands)
    "unwatched_share": 0.5,  # of all firehose mentions, those of symbols nobody lists (stored too)
    "news": 10,  # StockNews rows (an article is a row per ticker it names)
    "alerts": 1,  # Knowsis anomaly alerts and team alerts together
}


# -- the Django side (a child process on the scratch database) ------------------------------------

def measure(k: int, min_rows: int, rates: dict) -> dict:
    import django

    django.setup()
    from datetime import timedelta

    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", "--noinput", verbosity=0)
    empty = _sizes(connection)
    started = time.monotonic()
    fill = _fill(k, min_rows, rates)
    fill_seconds = time.monotonic() - started
    sizes = _sizes(connection, vacuum=True)
    result = {"fill": fill, "fill_seconds": round(fill_seconds, 1), "tables": {}}
    for table in TABLES:
        rows, total, heap, indexes = sizes[table]
        grown = total - empty[table][1]
        with connection.cursor() as cursor:  # each index's share: which ones cost what
            cursor.execute("SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
                           "WHERE indrelid = %s::regclass ORDER BY 1", [table])
            per_index = {name: round(size / rows, 1) for name, size in cursor.fetchall()}
        result["tables"][table] = {"rows": rows, "bytes": total, "heap": heap, "indexes": indexes,
                                   "toast": total - heap - indexes, "bytes_per_row": round(grown / rows, 1),
                                   "index_bytes_per_row": per_index}
    from feeds.models import SentimentSample
    from feeds.retention import apply_retention
    from feeds.retention_policy import policy_from_settings

    policy = policy_from_settings({})  # the defaults, whatever this environment says

    before = _counts(SentimentSample)
    runs = {}
    for days in (31, 400):  # hourly roll-ups, then daily ones (and the mentions' deletes)
        clock = time.monotonic()
        report = apply_retention(now=fill["day_end"] + timedelta(days=days), origin="bench", policy=policy)
        runs[str(days)] = {"seconds": round(time.monotonic() - clock, 2), "ok": report.ok,
                      "steps": {f"{s.kind} {s.rule}": [s.deleted, s.created, s.batches] for s in report.steps
                                if s.deleted}}
        if days == 31:
            hourly = _counts(SentimentSample)
    result["retention"] = runs
    result["sentiment_raw"], result["sentiment_hourly"] = before, hourly
    result["fill"]["day_end"] = fill["day_end"].isoformat()
    return result


def _sizes(connection, vacuum: bool = False) -> dict:
    with connection.cursor() as cursor:
        if vacuum:
            for table in TABLES:
                cursor.execute(f"VACUUM ANALYZE {table}")
        out = {}
        for table in TABLES:
            cursor.execute(f"SELECT count(*), pg_total_relation_size('{table}'), pg_relation_size('{table}'), "
                           f"pg_indexes_size('{table}') FROM {table}")
            out[table] = cursor.fetchone()
        return out


def _counts(model) -> dict:
    from django.db.models import Count

    return dict(model.objects.values_list("provider").annotate(n=Count("id")))


def _fill(k: int, min_rows: int, rates: dict) -> dict:
    import random
    from datetime import datetime, timedelta, timezone

    from feeds import events as ev
    from feeds.models import Instrument
    from feeds.providers.knowsis.parse import parse_event
    from feeds.providers.stocknews.parse import parse_message as parse_news
    from feeds.providers.stocktwits.parse import parse_message as parse_crowd
    from feeds.providers.trendspottr.webhook import parse_alert_event
    from feeds.simulators import knowsisgen, newsgen, trendgen
    from feeds.simulators.marketgen import EXCHANGES
    from feeds.store import events_store

    rng = random.Random(12)
    day = datetime(2026, 6, 1, tzinfo=timezone.utc)  # a Monday; the session is 13:30-20:00 UTC in June
    session = day + timedelta(hours=13, minutes=30)
    tickers = list(newsgen.UNIVERSE)[:k]
    tickers += [f"Q{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in range(k - len(tickers))]
    Instrument.objects.bulk_create([Instrument(
        symbol=t, name=f"{t} Corporation", exchange=EXCHANGES.get(t, "NYSE"), insightsentry_code=f"NYSE:{t}",
        knowsis_channel=t.lower(), stocktwits_symbol=t, stocknews_ticker=t) for t in tickers])
    companies = {t: newsgen.UNIVERSE.get(t) or newsgen.make_company(rng, t) for t in tickers}
    events: list = []

    def flush(force: bool = False) -> None:
        if len(events) >= 2000 or (force and events):
            events_store(events=events)
            events.clear()

    for n, t in enumerate(tickers):  # bars: a random walk through the session
        price = 20 + 400 * rng.random()
        for minute in range(rates["bar_minutes"]):
            o = price
            price = max(1.0, price * (1 + rng.gauss(0, 0.0008)))
            events.append(ev.Bar(provider="insightsentry", code=f"NYSE:{t}", received_at=session, interval="1m",
                                 start=session + timedelta(minutes=minute), open=round(o, 2),
                                 high=round(max(o, price) * (1 + rng.random() / 2000), 2),
                                 low=round(min(o, price) * (1 - rng.random() / 2000), 2), close=round(price, 2),
                                 volume=float(rng.randrange(100, 200_000))))
            flush()
    for t in tickers:  # Knowsis datapoints
        state = knowsisgen.new_channel(rng, t.lower(), day)
        for i in range(rates["datapoints"]):
            at = day + timedelta(seconds=i * 86400 / rates["datapoints"] + rng.uniform(0, 30))
            payload, state = knowsisgen.generate(rng, state, "datapoint", at)
            events.extend(parse_event("datapoint", json.dumps(payload), channel=t.lower(), received_at=at))
            flush()
    flush(force=True)
    mentions = _firehose(rng, tickers, companies, day, rates)
    for message in mentions:  # whole messages per batch: the store commits the cursor with them
        events.extend(parse_crowd(json.dumps(message), received_at=day))
        flush()
    flush(force=True)
    news_days = math.ceil(min_rows / (rates["news"] * k))
    for i in range(int(rates["news"] * k * news_days)):
        company = companies[tickers[i % k]]
        at = day - timedelta(seconds=rng.uniform(0, news_days * 86400))
        article = newsgen.generate_article(rng, company, newsgen.initial_quote(rng, company), now=at, seq=i,
                                           related=newsgen.pick_related(rng, company, "earnings"),
                                           score=newsgen.random_score(rng), category=newsgen.random_category(rng))
        events.extend(e for e in parse_news(json.dumps(newsgen.news_message(article, at)), received_at=at)
                      if isinstance(e, ev.News))
        flush()
    alert_days = math.ceil(min_rows / (rates["alerts"] * k))
    for i in range(int(rates["alerts"] * k * alert_days)):
        t, at = tickers[i % k], day - timedelta(seconds=rng.uniform(0, alert_days * 86400))
        if i % 2:  # half Knowsis anomaly alerts, half TrendSpottr team alerts (the larger rows)
            kind = "anomaly_alert_triggered"
            payload, _ = knowsisgen.generate(rng, knowsisgen.new_channel(rng, t.lower(), at), kind, at)
            events.extend(parse_event(kind, json.dumps(payload), channel=t.lower(), received_at=at))
        else:
            data = {**trendgen.generate_alert(rng, f"{t} OR {companies[t].short}", now=at, seq=i),
                    "notification_id": 10**9 + i, "alert_id": 77, "level": "High", "userid": "team-1"}
            events.extend(parse_alert_event({"type": "alert", "created": int(at.timestamp()), "data": data},
                                            received_at=at))
        flush()
    flush(force=True)
    return {"instruments": k, "day_end": day + timedelta(days=1), "news_days": news_days, "alert_days": alert_days,
            "messages": len(mentions), "mentions": sum(len(m["symbols"]) for m in mentions)}


def _firehose(rng, tickers: list[str], companies: dict, day, rates: dict) -> list[dict]:
    """One day of firehose messages: watched symbols by a skewed share (rank r draws 1/r), 70 % of
    messages in the session; 1-3 symbols a message; the unwatched share names symbols we do not list."""
    from datetime import timedelta

    weights = [1 / (rank + 1) for rank in range(len(tickers))]
    watched = rates["mentions"] * len(tickers)
    total = watched / (1 - rates["unwatched_share"])
    messages, named, seq = [], 0, 0
    while named < total:
        count = rng.choices((1, 2, 3), weights=(80, 15, 5))[0]
        symbols = []
        for _ in range(count):
            if rng.random() < rates["unwatched_share"]:
                symbols.append({"id": rng.randrange(10**6), "symbol": f"Z{rng.randrange(5000):04d}",
                                "title": "Other Holdings Inc", "exchange": "NASDAQ", "sector": "Misc",
                                "industry": "Misc"})
            else:
                c = companies[rng.choices(tickers, weights=weights)[0]]
                symbols.append({"id": seq, "symbol": c.ticker, "title": c.name, "exchange": "NYSE",
                                "sector": c.sector, "industry": c.sector})
        symbols = list({s["symbol"]: s for s in symbols}.values())
        in_session = rng.random() < 0.7
        at = day + timedelta(seconds=13.5 * 3600 + rng.uniform(0, 6.5 * 3600) if in_session else rng.uniform(0, 86400))
        seq += rng.randint(1, 9999)
        messages.append({"message_id": 4 * 10**8 + len(messages), "seq_id": f"4956{seq:052d}",
                         "created_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "user_id": rng.randrange(10**7),
                         "sentiment_score": round(rng.uniform(-1, 1), 3), "symbols": symbols})
        named += len(symbols)
    return sorted(messages, key=lambda m: m["created_at"])


# -- the projection -------------------------------------------------------------------------------

def daily_rows(measured: dict) -> dict:
    """Rows a day per instrument, from the slice (bars: a calendar-day average over trading days)."""
    fill, t = measured["fill"], measured["tables"]
    k = fill["instruments"]
    steps = measured["retention"]["31"]["steps"]
    [(minutes, hours, _)] = [v for key, v in steps.items() if key.startswith("bars 1m")]
    raw, hourly = measured["sentiment_raw"], measured["sentiment_hourly"]
    return {
        "bars_1m": t["feeds_bar"]["rows"] / k * TRADING_DAYS / 365, "bars_1h_per_1m": hours / minutes,
        "bars_1d": TRADING_DAYS / 365,
        "sentiment_raw": sum(raw.values()) / k, "sentiment_1h": sum(hourly.values()) / k,
        "sentiment_1d": len(raw),  # a day's row per provider
        "mentions": t["feeds_crowdmention"]["rows"] / k,
        "news": t["feeds_newsitem"]["rows"] / (k * fill["news_days"]),
        "alerts": t["feeds_alert"]["rows"] / (k * fill["alert_days"]),
    }


def kept_rows(rates: dict, *, days: int, n: int, policy: dict | None = None) -> dict:
    """Rows each table holds `days` into a steady feed of `n` instruments under `policy` (ages in days,
    feeds.retention_policy.DEFAULT_DAYS; None: nothing ever deleted)."""
    if policy is None:
        return {"feeds_bar": rates["bars_1m"] * days * n, "feeds_sentimentsample": rates["sentiment_raw"] * days * n,
                "feeds_crowdmention": rates["mentions"] * days * n, "feeds_newsitem": rates["news"] * days * n,
                "feeds_alert": rates["alerts"] * days * n}

    def ages(*bounds: float) -> list[float]:  # days of the feed spent in each age band, newest first
        edges = [0, *[min(days, b) for b in bounds], days]
        return [max(0.0, b - a) for a, b in zip(edges, edges[1:])]

    minute, hour, day = ages(float(policy["RETENTION_MINUTE_BARS_DAYS"]), float(policy["RETENTION_HOUR_BARS_DAYS"]))
    raw, hourly, daily = ages(float(policy["RETENTION_SENTIMENT_HOURLY_AFTER_DAYS"]),
                              float(policy["RETENTION_SENTIMENT_DAILY_AFTER_DAYS"]))
    return {
        "feeds_bar": n * rates["bars_1m"] * (minute + hour * rates["bars_1h_per_1m"]) + n * rates["bars_1d"] * day,
        "feeds_sentimentsample": n * (rates["sentiment_raw"] * raw + rates["sentiment_1h"] * hourly
                                      + rates["sentiment_1d"] * daily),
        "feeds_crowdmention": n * rates["mentions"] * min(days, float(policy["RETENTION_CROWD_MENTION_DAYS"])),
        "feeds_newsitem": n * rates["news"] * min(days, float(policy["RETENTION_NEWS_DAYS"])),
        "feeds_alert": n * rates["alerts"] * min(days, float(policy["RETENTION_ALERT_DAYS"])),
    }


def project(measured: dict, n: int) -> dict:
    """Size per table after one and two years at `n` instruments under the default policy, and after
    one year without retention."""
    from feeds.retention_policy import DEFAULT_DAYS  # pure: no Django

    rates = daily_rows(measured)
    per_row = {table: measured["tables"][table]["bytes_per_row"] for table in TABLES}

    def sized(rows: dict) -> dict:
        tables = {t: {"rows": round(rows[t]), "bytes": round(rows[t] * per_row[t])} for t in TABLES}
        return {"tables": tables, "bytes": sum(v["bytes"] for v in tables.values())}

    return {"instruments": n, "rows_per_instrument_day": {k: round(v, 3) for k, v in rates.items()},
            "bytes_per_row": per_row, "policy": DEFAULT_DAYS,
            "year_1": sized(kept_rows(rates, days=365, n=n, policy=DEFAULT_DAYS)),
            "year_2": sized(kept_rows(rates, days=730, n=n, policy=DEFAULT_DAYS)),
            "year_1_without_retention": sized(kept_rows(rates, days=365, n=n))}


def report(measured: dict, projection: dict) -> str:
    gib, n = 1024 ** 3, projection["instruments"]
    one, two, none = projection["year_1"], projection["year_2"], projection["year_1_without_retention"]
    lines = [f"{'table':<22} {'rows (slice)':>12} {'B/row':>6} {f'rows, 1 y x {n}':>16} {'1 y':>9} {'2 y':>9} "
             f"{'1 y, no policy':>15}"]
    for table in TABLES:
        m = measured["tables"][table]
        lines.append(f"{table:<22} {m['rows']:>12,} {m['bytes_per_row']:>6.0f} {one['tables'][table]['rows']:>16,} "
                     + " ".join(f"{x['tables'][table]['bytes'] / gib:>7.2f} G" for x in (one, two))
                     + f" {none['tables'][table]['bytes'] / gib:>13.1f} G")
    lines.append(f"{'total':<22} {'':>12} {'':>6} {'':>16} "
                 + " ".join(f"{x['bytes'] / gib:>7.2f} G" for x in (one, two)) + f" {none['bytes'] / gib:>13.1f} G")
    runs = measured["retention"]
    lines.append(f"retention on the slice ({measured['fill']['instruments']} instruments, one day): "
                 + "; ".join(f"+{d} days {r['seconds']} s" for d, r in runs.items()))
    return "\n".join(lines)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=50, help="K instruments in the slice (1..500)")
    parser.add_argument("--target-instruments", type=int, default=500)
    parser.add_argument("--min-rows", type=int, default=3000, help="news and alerts: days enough for this many")
    parser.add_argument("--database-url", default="", help="PostgreSQL server to create the scratch database on")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    for name, value in RATES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, dest=name)
    args = parser.parse_args(argv)
    if not 1 <= args.instruments <= 500 or not 10 <= args.min_rows <= 100_000:
        parser.error("--instruments must be 1..500 and --min-rows 10..100000")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rates = {name: getattr(args, name) for name in RATES}
    server = postgres_server_url(args.database_url or None)
    url = create_postgres_database(server, "twstorage")
    try:
        from ingest_setup import django_env

        env = {**django_env("redis://127.0.0.1:6379/0"), "DATABASE_URL": url}
        done = subprocess.run([sys.executable, str(BENCH / "storage.py"), "_measure", json.dumps(
            {"k": args.instruments, "min_rows": args.min_rows, "rates": rates})], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"measuring failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        drop_database(url, server)
    projection = project(measured, args.target_instruments)
    print(report(measured, projection))
    path = write_json(args.out / f"storage-{utc_stamp()}.json", {
        "database": url.rsplit("/", 1)[-1], "rates": rates, "trading_days": TRADING_DAYS, "measured": measured,
        "projection": projection})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_measure"]:
        options = json.loads(sys.argv[2])
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
        print(json.dumps(measure(options["k"], options["min_rows"], options["rates"]), default=str))
        sys.exit(0)
    sys.exit(main())
