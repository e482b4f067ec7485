"""What the database keeps, and for how long: the retention policy, its plan, and the roll-up maths.

Pure: no ORM, no clock (the caller passes `now`), so every rule here is tested without a database.
feeds/retention.py applies a plan to the database in bounded batches.

The defaults, and why (each is a setting, `RETENTION_*`, see project/settings.py):

- **Raw StockTwits mentions: deleted after 7 days.** The store already folds them into per-minute crowd
  sentiment buckets (feeds/store.py) in the same transaction, so nothing is lost by dropping them. They
  are kept a week only so a bucket can still be recomputed: the firehose resumes within 24 h, and a week
  leaves room to look into a bad day. The firehose carries every symbol, watched or not, which makes
  this the largest table by far: it is the first thing to bound.
- **Sentiment samples (crowd minute buckets, Knowsis datapoints): hourly after 30 days, daily after a
  year, daily kept.** A month of full resolution covers what the instrument page shows (its newest 500
  samples per provider) and any intraday look back a desk makes; older sentiment is read as a trend.
- **Bars: 1-second bars to 1-minute after 7 days; minute bars (1m … 30m) to 1-hour after 30 days;
  hour bars (1h … 12h) to daily after a year; daily and longer kept.** The usual intraday-chart
  horizon (a month of minutes), then hourly for a year of swing charts, then daily for ever (about
  250 rows per instrument a year). Other sizes (45m, 90m) do not divide an hour or a day and are kept.
- **News and alerts: 2 years.** Few rows, and what a desk goes back to ("what did we know then?");
  two years covers year-on-year comparisons and audits.
- **Processed webhook deliveries: 90 days.** The alerts they carried are stored as alerts; the raw
  delivery is for debugging a provider's retries, which happen within a day.

`0` keeps a kind for ever. A roll-up that feeds a later one (1m→1h, then 1h→1D) must not come later
than it, or the later step would have run already and the new rows would find their period taken.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = ["DeleteStep", "PolicyError", "RetentionPolicy", "RollupStep", "Step", "bar_rollup", "bucket_start",
           "interval_seconds", "policy_from_settings", "retention_plan", "rolled_scale", "sentiment_rollup"]

ROLLUP_PREFIX = "rollup:"  # external_id of a rolled-up sentiment sample: rollup:<target>:<bucket start>
# Sentiment providers whose `volume` counts messages in the sample's period (so an hour's volume is
# the sum of its minutes', and its score the message-weighted mean); for the others `volume` is a
# level (Knowsis' normalised volume), averaged over time like the score.
COUNTED_VOLUME_PROVIDERS = frozenset({"stocktwits"})
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "D": 86400, "d": 86400}
SECOND_BARS = ("1s",)  # InsightSentry allows only 1 second
MINUTE_BARS = ("1m", "2m", "3m", "5m", "10m", "15m", "30m")
HOUR_BARS = ("1h", "2h", "3h", "4h", "6h", "12h")
DAY = 86400


class PolicyError(ValueError):
    pass


def interval_seconds(interval: str) -> int | None:
    """Seconds in a bar size such as 1m, 15m, 1h, 1D (None for weeks, months and the unknown)."""
    match = re.fullmatch(r"(\d+)([smhDd])", interval)
    return int(match[1]) * UNIT_SECONDS[match[2]] if match and int(match[1]) > 0 else None


@dataclass(frozen=True)
class DeleteStep:
    kind: str  # crowd_mentions, news, alerts, webhook_deliveries
    after: timedelta
    cutoff: datetime | None = None  # rows older than this go (set by the plan)
    setting: str = ""

    @property
    def label(self) -> str:
        return f"delete after {_days(self.after)}"

    def at(self, now: datetime) -> DeleteStep:
        return DeleteStep(self.kind, self.after, now - self.after, self.setting)


@dataclass(frozen=True)
class RollupStep:
    kind: str  # bars, sentiment
    sources: tuple[str, ...]  # bar sizes; for sentiment "raw" or a roll-up size
    target: str  # 1m, 1h, 1D
    after: timedelta
    cutoff: datetime | None = None  # whole target periods before this are rolled up (set by the plan)
    setting: str = ""

    @property
    def span(self) -> int:
        return interval_seconds(self.target)

    @property
    def label(self) -> str:
        sources = self.sources[0] if len(self.sources) == 1 else f"{self.sources[0]}…{self.sources[-1]}"
        return f"{sources} → {self.target} after {_days(self.after)}"

    def at(self, now: datetime) -> RollupStep:
        # Aligned down to a period boundary: only whole periods are rolled up, so a period is
        # never split between two runs (which would make two rows for it, or lose one part).
        return RollupStep(self.kind, self.sources, self.target, self.after,
                          bucket_start(now - self.after, self.span), self.setting)


Step = DeleteStep | RollupStep


@dataclass(frozen=True)
class RetentionPolicy:
    deletes: tuple[DeleteStep, ...]
    rollups: tuple[RollupStep, ...]
    batch_rows: int = 10_000
    worker_interval: float = 3600.0

    def __post_init__(self) -> None:
        if self.batch_rows < 100:
            raise PolicyError("RETENTION_BATCH_ROWS must be at least 100")
        for step in self.rollups:
            span = interval_seconds(step.target)
            if span is None or DAY % span:
                raise PolicyError(f"roll-up target {step.target} must divide a day")
            for source in step.sources:
                size = interval_seconds(source) if step.kind == "bars" else (0 if source == "raw" else
                                                                              interval_seconds(source))
                if size is None or (size and (size >= span or span % size)):
                    raise PolicyError(f"{step.kind}: {source} does not divide {step.target}")
        for earlier in self.rollups:
            for later in self.rollups:
                if later.kind == earlier.kind and earlier.target in later.sources and later.after < earlier.after:
                    raise PolicyError(f"{later.kind}: {later.label} comes before {earlier.label} (it feeds on it)")

    def steps(self) -> list[Step]:
        """In the order they run: deletes, then roll-ups finest first (a step's output may feed the next)."""
        return [*self.deletes, *sorted(self.rollups, key=lambda s: (s.kind, s.span))]

    def describe(self) -> list[dict]:
        """The policy as rows for the admin page and the command."""
        return [{"kind": step.kind, "what": KIND_TITLES[step.kind], "rule": step.label, "setting": step.setting}
                for step in self.steps()]


KIND_TITLES = {
    "crowd_mentions": "Raw StockTwits mentions (already aggregated into crowd sentiment per minute)",
    "sentiment": "Sentiment samples (StockTwits crowd minutes, Knowsis datapoints)",
    "bars": "OHLC bars",
    "news": "News items",
    "alerts": "Alerts (provider and rule alerts)",
    "webhook_deliveries": "Webhook deliveries, processed or ignored",
}


def _days(after: timedelta) -> str:
    days = after / timedelta(days=1)
    return f"{days:g} day{'s' if days != 1 else ''}"


def _age(value, setting: str) -> timedelta | None:
    """A number of days; 0 (or empty) keeps for ever."""
    try:
        days = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise PolicyError(f"{setting} must be a number of days, not {value!r}") from None
    if days < 0 or not math.isfinite(days):
        raise PolicyError(f"{setting} must be a number of days ≥ 0, not {value!r}")
    return timedelta(days=days) if days else None


DEFAULT_DAYS = {
    "RETENTION_CROWD_MENTION_DAYS": 7,
    "RETENTION_SENTIMENT_HOURLY_AFTER_DAYS": 30,
    "RETENTION_SENTIMENT_DAILY_AFTER_DAYS": 365,
    "RETENTION_SECOND_BARS_DAYS": 7,
    "RETENTION_MINUTE_BARS_DAYS": 30,
    "RETENTION_HOUR_BARS_DAYS": 365,
    "RETENTION_NEWS_DAYS": 730,
    "RETENTION_ALERT_DAYS": 730,
    "RETENTION_WEBHOOK_DELIVERY_DAYS": 90,
}


def policy_from_settings(values) -> RetentionPolicy:
    """Build the policy from a settings object or a dict of RETENTION_* values."""
    get = values.get if isinstance(values, dict) else lambda name, default=None: getattr(values, name, default)
    age = {name: _age(get(name, DEFAULT_DAYS[name]), name) for name in DEFAULT_DAYS}
    deletes = tuple(DeleteStep(kind, age[name], setting=name) for kind, name in (
        ("crowd_mentions", "RETENTION_CROWD_MENTION_DAYS"), ("news", "RETENTION_NEWS_DAYS"),
        ("alerts", "RETENTION_ALERT_DAYS"), ("webhook_deliveries", "RETENTION_WEBHOOK_DELIVERY_DAYS"))
        if age[name] is not None)
    rollups = tuple(RollupStep(kind, sources, target, age[name], setting=name) for kind, sources, target, name in (
        ("sentiment", ("raw",), "1h", "RETENTION_SENTIMENT_HOURLY_AFTER_DAYS"),
        ("sentiment", ("1h",), "1D", "RETENTION_SENTIMENT_DAILY_AFTER_DAYS"),
        ("bars", SECOND_BARS, "1m", "RETENTION_SECOND_BARS_DAYS"),
        ("bars", MINUTE_BARS, "1h", "RETENTION_MINUTE_BARS_DAYS"),
        ("bars", HOUR_BARS, "1D", "RETENTION_HOUR_BARS_DAYS")) if age[name] is not None)
    return RetentionPolicy(deletes=deletes, rollups=rollups, batch_rows=int(get("RETENTION_BATCH_ROWS", 10_000)),
                           worker_interval=float(get("RETENTION_WORKER_INTERVAL_SECONDS", 3600.0)))


def retention_plan(policy: RetentionPolicy, *, now: datetime) -> list[Step]:
    """Every step of `policy` with its cutoff at `now`, in the order to apply them."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    return [step.at(now.astimezone(timezone.utc)) for step in policy.steps()]


# -- roll-up maths ---------------------------------------------------------------------------------

def bucket_start(moment: datetime, span: int) -> datetime:
    """The start of the `span`-second period holding `moment`, aligned to UTC multiples (days at
    midnight UTC), as InsightSentry aligns bars."""
    seconds = math.floor(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % span, timezone.utc)


def bar_rollup(rows: Sequence[tuple]) -> tuple:
    """(open, high, low, close, volume) of one period from its bars' (start, open, high, low, close,
    volume), in any order: the first bar's open, the highest high, the lowest low, the last bar's
    close, the summed volume (None when no bar has one). Sums run in start order, so a re-run adds
    the same floats in the same order."""
    rows = sorted(rows, key=lambda r: r[0])
    volumes = [r[5] for r in rows if r[5] is not None]
    return (rows[0][1], max(r[2] for r in rows), min(r[3] for r in rows), rows[-1][4],
            math.fsum(volumes) if volumes else None)


def sentiment_rollup(rows: Sequence[tuple], *, counted: bool, end: datetime) -> tuple[float | None, float | None]:
    """(score, volume) of one period from its samples' (ts, score, volume), ending at `end`.

    Counted volume (StockTwits: a sample is a minute's mean score over `volume` messages): the
    volume is the sum, and the score the message-weighted mean, which is the mean of the period's
    messages themselves (exact when every message carried a score; the minute kept only its mean).
    Otherwise (Knowsis: a datapoint is sent when the asset's sentiment or volume *changes*, so a value
    holds until the next one): each of score and volume is its time-weighted mean over the period,
    from each sample to the next one carrying that field (the last to `end`). A plain mean would
    weight a burst of small changes over a calm hour. The part of the period before its first
    sample is left out: its value belongs to an earlier period.
    """
    rows = sorted(rows, key=lambda r: r[0])
    if counted:
        volumes = [r[2] for r in rows if r[2] is not None]
        weighted = [(r[1], r[2]) for r in rows if r[1] is not None and r[2]]
        if weighted:
            score = math.fsum(s * v for s, v in weighted) / math.fsum(v for _, v in weighted)
        else:
            scores = [r[1] for r in rows if r[1] is not None]
            score = math.fsum(scores) / len(scores) if scores else None
        return score, (math.fsum(volumes) if volumes else None)
    return _time_weighted(rows, 1, end), _time_weighted(rows, 2, end)


def _time_weighted(rows: Sequence[tuple], column: int, end: datetime) -> float | None:
    points = [(r[0], r[column]) for r in rows if r[column] is not None]
    if not points:
        return None
    weights = [((points[i + 1][0] if i + 1 < len(points) else end) - ts).total_seconds()
               for i, (ts, _) in enumerate(points)]
    total = math.fsum(weights)
    if total <= 0:  # every sample at the period's very end: nothing to weight by
        return math.fsum(v for _, v in points) / len(points)
    return math.fsum(v * w for (_, v), w in zip(points, weights)) / total


def rolled_scale(scale: str, target: str) -> str:
    """The scale text of a roll-up: a period named in it ("-1..1 mean per minute") becomes the target's."""
    period = {"1m": "minute", "1h": "hour", "1D": "day"}.get(target, target)
    return re.sub(r" per (second|minute|hour|day)$", f" per {period}", scale)[:32]


def sentiment_external_id(target: str, start: datetime) -> str:
    return f"{ROLLUP_PREFIX}{target}:{start.isoformat()}"

