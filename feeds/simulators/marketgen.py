"""Plausible US-equity market data for the InsightSentry simulator.

Pure: every function works on its arguments plus a caller-supplied `random.Random` and `now`
(unix seconds), so a seeded simulator replays the same tape. No I/O, no clock, no protocol
shapes (the simulator turns `Quote` and `Bar` into InsightSentry messages).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from .newsgen import UNIVERSE, Company, make_company

__all__ = ["EXCHANGES", "UNIVERSE_CODES", "Instrument", "Quote", "Market", "make_instrument", "book",
           "Interval", "Bar", "BarAggregator", "UNIT_CODES", "UNIT_SECONDS"]

# Primary listings of the shared news universe (Walmart moved from NYSE to Nasdaq in Dec 2025).
EXCHANGES: dict[str, str] = {
    **dict.fromkeys(["AAPL", "MSFT", "NVDA", "AMD", "TSLA", "AMZN", "GOOGL", "META", "WMT"], "NASDAQ"),
    **dict.fromkeys(["DIS", "JPM", "V", "XOM", "CVX", "JNJ", "PFE", "BA"], "NYSE"),
}
UNIVERSE_CODES: list[str] = [f"{EXCHANGES.get(t, 'NYSE')}:{t}" for t in UNIVERSE]

SESSION_SECONDS = 6.5 * 3600  # a regular US session: volatility and volume are quoted per day


@dataclass(frozen=True)
class Instrument:
    code: str  # "EXCHANGE:SYMBOL"
    company: Company
    spread_bps: float  # quoted spread: ~1 bp for mega caps, wider for smaller names
    daily_vol: float  # standard deviation of a day's return


@dataclass(frozen=True)
class Quote:
    """One tick: a trade of `size` shares at `last_price`, with the book and session totals."""

    code: str
    time: float  # unix seconds, exact
    last_price: float
    size: int  # shares in this trade (what bars add up)
    bid: float
    ask: float
    bid_size: int
    ask_size: int
    volume: int  # session volume so far, as quote screens show it
    prev_close_price: float
    open_price: float
    high_price: float
    low_price: float
    market_cap: int

    @property
    def change(self) -> float:
        return round(self.last_price - self.prev_close_price, 2)

    @property
    def change_percent(self) -> float:
        return round((self.last_price / self.prev_close_price - 1) * 100, 2)


@dataclass
class _Session:
    mid: float
    prev_close: float
    open: float
    high: float
    low: float
    volume: int
    last_time: float | None = None


def _spread_bps(company: Company) -> float:
    cap = company.shares * company.base_price
    return 1.0 if cap >= 1e12 else 2.0 if cap >= 2e11 else 4.0 if cap >= 5e10 else 8.0


def make_instrument(rng: random.Random, code: str) -> Instrument:
    """Known tickers get their real profile whatever the exchange prefix; others a stand-in."""
    ticker = code.split(":", 1)[-1]
    company = UNIVERSE.get(ticker) or make_company(rng, ticker)
    return Instrument(code, company, _spread_bps(company), rng.uniform(0.012, 0.03))


def book(mid: float, spread_bps: float) -> tuple[float, float]:
    """Bid and ask on a one-cent grid around `mid`, at least one cent apart."""
    spread_cents = max(1, round(mid * spread_bps / 100))  # bps of dollars, in cents
    bid_cents = math.floor(mid * 100 - spread_cents / 2 + 1e-9)
    return bid_cents / 100, (bid_cents + spread_cents) / 100


class Market:
    """Random-walk sessions for any number of instruments, created on first use."""

    def __init__(self, rng: random.Random, *, default_dt: float = 0.25) -> None:
        self._rng = rng
        self._default_dt = default_dt  # assumed gap before an instrument's first tick
        self._instruments: dict[str, Instrument] = {}
        self._sessions: dict[str, _Session] = {}

    def instrument(self, code: str) -> Instrument:
        if code not in self._instruments:
            self._instruments[code] = make_instrument(self._rng, code)
        return self._instruments[code]

    def _session(self, inst: Instrument) -> _Session:
        if inst.code not in self._sessions:
            rng, base = self._rng, inst.company.base_price
            prev_close = round(base * rng.uniform(0.97, 1.03), 2)
            open_ = round(prev_close * (1 + rng.gauss(0, 0.006)), 2)
            mid = open_ * (1 + rng.gauss(0, 0.004))
            self._sessions[inst.code] = _Session(
                mid, prev_close, open_, max(open_, mid), min(open_, mid),
                int(inst.company.avg_volume * rng.uniform(0.2, 0.5)))  # joined mid-session
        return self._sessions[inst.code]

    def tick(self, code: str, now: float, price: float | None = None) -> Quote:
        """The next trade for `code` at `now`; `price` forces the trade (and mid) to that price."""
        rng, inst = self._rng, self.instrument(code)
        s = self._session(inst)
        dt = min(60.0, max(0.01, now - s.last_time)) if s.last_time is not None else self._default_dt
        s.last_time = now
        if price is None:
            # Volatility scales with sqrt(time): a day's sigma spread over the session's seconds.
            s.mid = max(0.05, s.mid * math.exp(rng.gauss(0, inst.daily_vol * math.sqrt(dt / SESSION_SECONDS))))
        else:
            s.mid = price
        bid, ask = book(s.mid, inst.spread_bps)
        # Trades print at the touch: buyers lift the ask, sellers hit the bid.
        last = price if price is not None else (ask if rng.random() < 0.5 else bid)
        mean_size = inst.company.avg_volume / SESSION_SECONDS * dt
        size = max(1, int(rng.lognormvariate(math.log(max(mean_size, 1.0)), 0.7)))
        s.volume += size
        s.high, s.low = max(s.high, last), min(s.low, last)
        return Quote(code, now, last, size, bid, ask, _lots(rng), _lots(rng), s.volume, s.prev_close,
                     s.open, s.high, s.low, int(inst.company.shares * last))


def _lots(rng: random.Random) -> int:
    return 100 * rng.randint(1, 20)  # displayed size at the touch, in round lots


# -- bars -------------------------------------------------------------------------------------

UNIT_CODES = {"second": "s", "minute": "m", "hour": "h", "day": "D", "week": "W", "month": "M"}
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_FIRST_MONDAY = 4 * 86400  # 1970-01-05: weekly bars start on Mondays, the epoch was a Thursday


@dataclass(frozen=True)
class Interval:
    """A bar size. Bars align to UTC multiples of the size (days at midnight UTC, weeks on
    Mondays, months on calendar months counted from year 0, so 3M bars are quarters)."""

    unit: str
    length: int = 1

    @property
    def bar_type(self) -> str:
        return f"{self.length}{UNIT_CODES[self.unit]}"

    def start_of(self, t: float) -> int:
        if self.unit == "month":
            dt = datetime.fromtimestamp(t, timezone.utc)
            return _month_start((dt.year * 12 + dt.month - 1) // self.length * self.length)
        span = UNIT_SECONDS[self.unit] * self.length
        offset = _FIRST_MONDAY if self.unit == "week" else 0
        return int((t - offset) // span * span + offset)

    def end_of(self, start: int) -> int:
        """Where the bar starting at `start` ends (the next bar's start)."""
        if self.unit == "month":
            dt = datetime.fromtimestamp(start, timezone.utc)
            return _month_start(dt.year * 12 + dt.month - 1 + self.length)
        return start + UNIT_SECONDS[self.unit] * self.length


def _month_start(index: int) -> int:
    year, month0 = divmod(index, 12)
    return int(datetime(year, month0 + 1, 1, tzinfo=timezone.utc).timestamp())


@dataclass
class Bar:
    time: int  # bar start, unix seconds
    open: float
    high: float
    low: float
    close: float  # the latest price until the bar ends
    volume: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class BarAggregator:
    """Folds ticks into OHLCV bars of one interval, keyed by bar start (the last `keep`)."""

    def __init__(self, interval: Interval, keep: int = 15) -> None:
        self.interval = interval
        self.keep = keep
        self.bars: dict[int, Bar] = {}

    @property
    def current(self) -> Bar | None:
        return self.bars[max(self.bars)] if self.bars else None

    def add(self, t: float, price: float, volume: int = 0) -> Bar | None:
        """Fold one trade in; return the bar it changed, or None if nothing changed."""
        start = self.interval.start_of(t)
        bar = self.bars.get(start)
        if bar is None:
            if len(self.bars) >= self.keep and start < min(self.bars):
                return None  # older than anything kept: too late to matter
            bar = self.bars[start] = Bar(start, price, price, price, price, volume)
            while len(self.bars) > self.keep:
                del self.bars[min(self.bars)]
            return bar
        before = (bar.high, bar.low, bar.close, bar.volume)
        bar.high, bar.low, bar.close = max(bar.high, price), min(bar.low, price), price
        bar.volume += volume
        return bar if (bar.high, bar.low, bar.close, bar.volume) != before else None
