"""Page benchmark: database queries and server time of every page and JSON endpoint, by watchlist size.

Builds a throw-away database (SQLite in a temporary directory by default; `--database-url
postgres://…` creates a fresh database on that server and drops it afterwards), seeds one user per
size whose watchlists hold N instruments with two sessions of history each (quotes, 1-minute
bars, sentiment, news, alerts, rules, acknowledgements), then requests each page in-process with a
logged-in django.test.Client. Each page is requested once to warm up, once with its queries counted,
then `--repeat` times timed. Prints a table and writes JSON to bench/results/pages-<UTC time>.json.
No network beyond the database: bounded in sizes and repeats.

    python bench/pages.py --instruments 5,50 --repeat 30
    python bench/pages.py --database-url postgres://tickerwire:tickerwire@127.0.0.1:5432/postgres

Times are the whole request in the test client (middleware, view, template, JSON encoding), with
persistent database connections as production runs them (DB_CONN_MAX_AGE=60): wall time p50/p95,
and the median CPU time of this process (PostgreSQL's own work not included), which other load on a
shared machine disturbs less. The history (see History) is about 1,700 stored rows per instrument.
Inside a process that has configured Django already (a test), `main()` uses
that database as it is and leaves it to its owner.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
MAX_INSTRUMENTS = 500
MAX_REPEAT = 1000
# (name, path); {instrument} is one of the user's instruments, {query} matches some of them.
PAGES = [
    ("board", "/"),
    ("board snapshot", "/api/board/"),
    ("instrument", "/instrument/{instrument}/"),
    ("instrument data", "/api/instrument/{instrument}/"),
    ("alerts", "/alerts/"),
    ("alerts data", "/api/alerts/"),
    ("settings", "/settings/"),
    ("rules", "/rules/"),
    ("health", "/health/"),
    ("health data", "/api/health/"),
    ("instrument search", "/api/instruments/?q={query}"),
]


@dataclass(frozen=True)
class History:
    """How much each instrument has stored. The default: two sessions of 1-minute bars and crowd
    sentiment, Knowsis every 15 minutes, a news item every 20 minutes, a few alerts."""

    bars: int = 780
    crowd_minutes: int = 780
    knowsis_samples: int = 52
    news: int = 40
    alerts: int = 4


# Enough to pass every "newest N" the board takes (60 bars, 5 news), small enough for tests.
SMALL_HISTORY = History(bars=70, crowd_minutes=3, knowsis_samples=3, news=7, alerts=2)


@dataclass
class Desk:
    user: object
    instruments: list  # feeds.models.Instrument, in watchlist order
    watchlists: list  # dashboard.models.Watchlist


def seed_market_history(*, instruments: Sequence, now: datetime, history: History = History()) -> None:
    """What the feeds would have stored for `instruments` by `now` (feeds models only)."""
    from feeds.models import Alert, Bar, NewsItem, Quote, SentimentSample

    quotes, bars, samples, news, alerts = [], [], [], [], []
    for n, inst in enumerate(instruments):
        base = 20.0 + 7 * n
        for i in range(history.bars):  # oldest first, one per minute up to `now`
            start = now - timedelta(minutes=history.bars - i)
            close = base + (i % 17) * 0.1
            bars.append(Bar(instrument=inst, provider="insightsentry", interval="1m", start=start, open=close - 0.05,
                            high=close + 0.2, low=close - 0.2, close=close, volume=1000 + i))
        quotes.append(Quote(instrument=inst, provider="insightsentry", price=base + 1, change=0.4, change_percent=1.2,
                            bid=base + 0.99, ask=base + 1.01, volume=123456, ts=now - timedelta(seconds=5)))
        quotes.append(Quote(instrument=inst, provider="knowsis", price=base + 0.5, ts=now - timedelta(minutes=15),
                            delay_seconds=900))
        for i in range(history.crowd_minutes):
            samples.append(SentimentSample(instrument=inst, provider="stocktwits", external_id=f"{inst.symbol}:{i}",
                                           ts=now - timedelta(minutes=history.crowd_minutes - i), score=((i % 9) - 4) / 5,
                                           scale="-1..1", volume=i % 13))
        for i in range(history.knowsis_samples):
            samples.append(SentimentSample(instrument=inst, provider="knowsis", external_id=f"k{i}",
                                           ts=now - timedelta(minutes=15 * (history.knowsis_samples - i)),
                                           score=(i % 7) - 3, raw_score=str((i % 7) - 3), scale="knowsis", volume=40 + i))
        for i in range(history.news):
            at = now - timedelta(minutes=20 * (history.news - i))
            news.append(NewsItem(instrument=inst, provider="stocknews", external_id=f"{inst.symbol}-n{i}",
                                 headline=f"{inst.symbol} headline number {i} about the quarter",
                                 summary="A summary of the article, as StockNews sends it. " * 6,
                                 url=f"https://news.example/{inst.symbol}/{i}", category="earnings",
                                 sentiment=(i * 37) % 200 - 100, raw_sentiment=str(i), sentiment_label="positive",
                                 confidence=80, key_factors=["revenue beat", "guidance raised", "buyback"],
                                 source="Example Wire", price=base, published_at=at, received_at=at))
        for i in range(history.alerts):
            at = now - timedelta(hours=history.alerts - i)
            alerts.append(Alert(instrument=inst, provider="knowsis", external_id=f"{inst.symbol}-a{i}",
                                level="high", headline=f"{inst.symbol} anomaly {i}", url="https://knowsis.example/a",
                                triggered_at=at, revoked_at=at + timedelta(minutes=5) if i == 0 else None))
    for model, rows in ((Bar, bars), (Quote, quotes), (SentimentSample, samples), (NewsItem, news), (Alert, alerts)):
        model.objects.bulk_create(rows, batch_size=500)


def seed_desk(*, username: str, instruments: int, now: datetime, history: History = History()) -> Desk:
    """A staff user (so the health pages answer too) in two teams (owner of one, viewer of the other)
    whose three watchlists hold `instruments` distinct instruments (one list overlaps the others),
    each with `history`; plus what the other pages read: team alerts, alert rules,
    acknowledgements, preferences, feed health."""
    from dashboard.models import AlertAcknowledgement, AlertRule, Preferences, WatchlistItem
    from feeds.models import Alert, FeedStatus, ProviderAccount, WebhookDelivery
    from tests.factories import instrument, team_with_watchlist, user

    person = user(username)
    person.is_staff = True
    person.save(update_fields=["is_staff"])
    ordered = [instrument(f"{username.upper()}-{i:03d}") for i in range(instruments)]
    symbols = [inst.symbol for inst in ordered]
    half = (instruments + 1) // 2
    core = team_with_watchlist(f"{username} desk", {person: "owner"}, symbols[:half], watchlist_name="Core")
    extra = core.team.watchlists.create(name="Extra")
    WatchlistItem.objects.bulk_create(WatchlistItem(watchlist=extra, instrument=inst, position=p)
                                      for p, inst in enumerate(ordered[half:]))
    shared = team_with_watchlist(f"{username} research", {person: "viewer"}, symbols[::3], watchlist_name="Shared")
    seed_market_history(instruments=ordered, now=now, history=history)
    for team in (core.team, shared.team):
        Alert.objects.bulk_create(Alert(provider="trendspottr", external_id=f"{team.pk}-t{i}", audience=f"team-{team.pk}",
                                        level="Elevated", headline=f"Trend {i}", triggered_at=now - timedelta(minutes=7 * i))
                                  for i in range(5))
    rules = [AlertRule(team=wl.team, watchlist=wl, kind="change_beyond", threshold=3) for wl in (core, extra, shared)]
    rules += [AlertRule(team=core.team, instrument=inst, owner=person, kind="price_above", threshold=100)
              for inst in ordered[: max(1, instruments // 5)]]
    AlertRule.objects.bulk_create(rules)
    AlertAcknowledgement.objects.bulk_create(AlertAcknowledgement(user=person, alert=a)
                                             for a in Alert.objects.filter(instrument__in=ordered[::2]))
    Preferences.objects.create(user=person, time_zone="Europe/London")
    for provider in ("stocknews", "insightsentry", "knowsis", "stocktwits", "trendspottr"):
        account, created = ProviderAccount.objects.get_or_create(provider=provider, defaults={"endpoint": "wss://feed.example/"})
        if created and provider != "trendspottr":
            FeedStatus.objects.create(account=account, state="connected", heartbeat_at=now, last_message_at=now,
                                      messages=1000, details={"cursor": "1"})
    if not WebhookDelivery.objects.exists():
        WebhookDelivery.objects.bulk_create(WebhookDelivery(provider="trendspottr", event_id=str(i), payload={},
                                                            state="processed") for i in range(20))
    return Desk(user=person, instruments=ordered, watchlists=[core, extra, shared])


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def measure(*, desk: Desk, repeat: int) -> list[dict]:
    """One row per page: status, queries, response size, server time p50/p95 over `repeat` requests."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(desk.user)
    values = {"instrument": desk.instruments[0].pk, "query": desk.instruments[0].symbol[:-2]}
    rows = []
    for name, template in PAGES:
        path = template.format(**values)
        client.get(path)  # warm-up: URL resolver, templates, connection
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        count = len(queries)  # now: the next request clears the connection's query log
        times, cpu = [], []
        for _ in range(repeat):
            started, started_cpu = time.perf_counter(), time.thread_time()
            client.get(path)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - started_cpu) * 1000)
        rows.append({"page": name, "path": path, "instruments": len(desk.instruments), "status": response.status_code,
                     "queries": count, "bytes": len(response.content),
                     "p50_ms": round(statistics.median(times), 2), "p95_ms": round(_percentile(times, 0.95), 2),
                     "cpu_p50_ms": round(statistics.median(cpu), 2)})
    return rows


def settle() -> None:
    """What autovacuum would have done by the time a desk holds this much history: PostgreSQL's
    statistics and visibility map (index-only scans need it) brought up to date. Not inside a
    transaction (a test's), where VACUUM cannot run. SQLite is left as the embedded demo runs it."""
    from django.db import connection

    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def run(*, sizes: list[int], repeat: int, history: History) -> list[dict]:
    """Seed one user per size in the configured database and measure every page for each."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    desks = [seed_desk(username=f"bench{size}", instruments=size, now=now, history=history) for size in sizes]
    settle()
    return [row for desk in desks for row in measure(desk=desk, repeat=repeat)]


@contextmanager
def throwaway_django(database_url: str | None) -> Iterator[None]:
    """Configure Django from the environment, as bench/fanout.py does, on a database made for this
    run: a SQLite file in a temporary directory, or a fresh PostgreSQL database on the server of
    `database_url` (created and dropped by tests/postgres.py)."""
    import django

    with tempfile.TemporaryDirectory(prefix="twbench-") as tmp, _database(database_url, Path(tmp)) as url:
        from cryptography.fernet import Fernet

        os.environ.update({
            "DJANGO_SETTINGS_MODULE": "project.settings", "DATABASE_URL": url, "DB_CONN_MAX_AGE": "60",
            "REDIS_URL": "", "SECRET_KEY": secrets.token_urlsafe(50), "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DEBUG": "0", "HTTPS": "0", "STATIC_MANIFEST": "0", "ALLOWED_HOSTS": "testserver", "LOG_LEVEL": "WARNING",
        })
        django.setup()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", verbosity=0, interactive=False)
        try:
            yield
        finally:
            connections.close_all()  # before the database is dropped


@contextmanager
def _database(database_url: str | None, tmp: Path) -> Iterator[str]:
    if not database_url or database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp / 'bench.sqlite3'}"
        return
    from tests import postgres

    if not postgres.is_postgres_url(database_url):
        raise SystemExit(f"--database-url: sqlite:// or postgres:// only, not {database_url.split(':', 1)[0]}")
    os.environ["TEST_POSTGRES_URL"] = database_url  # the server tests/postgres.py creates databases on
    with postgres.fresh_database("twbench") as url:
        yield url


def report(rows: list[dict], *, vendor: str, repeat: int, history: History, out: Path) -> Path:
    header = (f"{'page':<18} {'instruments':>11} {'queries':>7} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} "
              f"{'bytes':>9}  status")
    print(f"{vendor}, {repeat} timed requests per page (cpu: this process only, so without PostgreSQL's share;"
          " steadier than the wall time on a shared machine)")
    print(header)
    print("-" * len(header))
    for r in sorted(rows, key=lambda r: ([p for p, _ in PAGES].index(r["page"]), r["instruments"])):
        print(f"{r['page']:<18} {r['instruments']:>11} {r['queries']:>7} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
              f"{r['cpu_p50_ms']:>8.2f} {r['bytes']:>9}  {r['status']}")
    import django

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pages-{stamp}.json"
    path.write_text(json.dumps({"created": stamp, "database": vendor, "repeat": repeat, "history": asdict(history),
                                "python": sys.version.split()[0], "django": django.get_version(), "rows": rows},
                               indent=2) + "\n")
    print(f"wrote {path}")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instruments", default="5,50", help="watchlist sizes to measure, comma-separated")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page and size")
    parser.add_argument("--database-url", default="", help="postgres://…: a fresh PostgreSQL database on that "
                                                           "server, dropped afterwards (default: a temporary SQLite file)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--small-history", action="store_true", help="seed the tests' small history instead")
    args = parser.parse_args(argv)
    try:
        args.sizes = sorted({int(part) for part in args.instruments.split(",") if part.strip()})
    except ValueError:
        parser.error("--instruments: comma-separated whole numbers")
    if not args.sizes or not all(1 <= s <= MAX_INSTRUMENTS for s in args.sizes):
        parser.error(f"--instruments: between 1 and {MAX_INSTRUMENTS}")
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat: between 1 and {MAX_REPEAT}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    history = SMALL_HISTORY if args.small_history else History()
    from django.conf import settings

    # Inside a process that has configured Django (a test): its database, in its transaction.
    with nullcontext() if settings.configured else throwaway_django(args.database_url or None):
        from django.db import connection

        rows = run(sizes=args.sizes, repeat=args.repeat, history=history)
        report(rows, vendor=connection.vendor, repeat=args.repeat, history=history, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
