"""Realistic StockNews.live-style news content for the simulator.

Everything here is a pure function of its arguments plus a caller-supplied `random.Random`,
so a seeded simulator produces the same stream run after run (handy for demos and for
reproducing a failing test). No I/O, no clock: the caller passes `now`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class Company:
    ticker: str
    name: str  # legal-ish name used in article bodies
    short: str  # how headlines refer to it
    sector: str
    shares: float  # shares outstanding, for the market-cap string
    avg_volume: int  # average daily volume, to make `volume` plausible
    base_price: float  # where the random walk starts


@dataclass(frozen=True)
class Quote:
    price: float
    prev_close: float  # baseline for `priceChange` (a daily change, as on a quote screen)
    volume: int  # cumulative session volume


def _c(ticker: str, name: str, short: str, sector: str, shares_bn: float, vol_m: float, price: float) -> Company:
    return Company(ticker, name, short, sector, shares_bn * 1e9, int(vol_m * 1e6), price)


# Ballpark 2025/26 figures: good enough that market caps and volumes look right at a glance.
UNIVERSE: dict[str, Company] = {
    c.ticker: c
    for c in (
        _c("AAPL", "Apple Inc.", "Apple", "Technology", 14.9, 52, 228.0),
        _c("MSFT", "Microsoft Corporation", "Microsoft", "Technology", 7.43, 21, 425.0),
        _c("NVDA", "NVIDIA Corporation", "Nvidia", "Technology", 24.4, 210, 138.0),
        _c("AMD", "Advanced Micro Devices, Inc.", "AMD", "Technology", 1.62, 45, 142.0),
        _c("TSLA", "Tesla, Inc.", "Tesla", "Consumer Cyclical", 3.22, 95, 345.0),
        _c("AMZN", "Amazon.com, Inc.", "Amazon", "Consumer Cyclical", 10.5, 42, 218.0),
        _c("GOOGL", "Alphabet Inc.", "Alphabet", "Communication Services", 12.2, 26, 182.0),
        _c("META", "Meta Platforms, Inc.", "Meta", "Communication Services", 2.52, 13, 598.0),
        _c("DIS", "The Walt Disney Company", "Disney", "Communication Services", 1.81, 9, 112.0),
        _c("JPM", "JPMorgan Chase & Co.", "JPMorgan", "Financial Services", 2.81, 9, 247.0),
        _c("V", "Visa Inc.", "Visa", "Financial Services", 1.95, 6, 318.0),
        _c("XOM", "Exxon Mobil Corporation", "Exxon", "Energy", 4.35, 15, 111.0),
        _c("CVX", "Chevron Corporation", "Chevron", "Energy", 1.78, 8, 152.0),
        _c("JNJ", "Johnson & Johnson", "Johnson & Johnson", "Healthcare", 2.41, 7, 156.0),
        _c("PFE", "Pfizer Inc.", "Pfizer", "Healthcare", 5.67, 36, 26.0),
        _c("WMT", "Walmart Inc.", "Walmart", "Consumer Defensive", 8.03, 18, 94.0),
        _c("BA", "The Boeing Company", "Boeing", "Industrials", 0.76, 8, 178.0),
    )
}

SECTORS = sorted({c.sector for c in UNIVERSE.values()})

# What headlines can talk about, per company (falls back to the sector list for unknown tickers).
_PRODUCTS: dict[str, list[str]] = {
    "AAPL": ["iPhone lineup", "Vision Pro headset", "Apple Intelligence features", "services bundle"],
    "MSFT": ["Azure AI services", "Copilot suite", "Xbox cloud gaming"],
    "NVDA": ["Blackwell GPU platform", "data-center networking line", "AI inference chips"],
    "AMD": ["MI-series AI accelerators", "EPYC server chips", "Ryzen AI processors"],
    "TSLA": ["robotaxi service", "Model Y refresh", "Megapack storage units"],
    "AMZN": ["AWS AI services", "Prime delivery network", "Kuiper satellite service"],
    "GOOGL": ["Gemini AI models", "YouTube subscription tier", "Waymo robotaxi"],
    "META": ["Llama AI models", "smart glasses", "Reels ad tools"],
    "DIS": ["streaming bundle", "theme park expansion", "ESPN streaming service"],
    "JPM": ["real-time payments platform", "digital wealth app"],
    "V": ["tap-to-pay network", "cross-border payments service"],
    "XOM": ["Permian expansion", "Guyana oil project", "carbon-capture hub"],
    "CVX": ["Permian expansion", "LNG export project"],
    "JNJ": ["oncology therapy", "surgical robotics system"],
    "PFE": ["obesity drug candidate", "RSV vaccine"],
    "WMT": ["drone delivery pilot", "membership program", "private-label grocery line"],
    "BA": ["737 MAX production", "777X program", "defense contract"],
    "Technology": ["AI platform", "cloud software suite"],
    "Consumer Cyclical": ["new vehicle line", "subscription service"],
    "Communication Services": ["AI assistant", "streaming service"],
    "Financial Services": ["payments platform", "lending business"],
    "Energy": ["shale expansion", "LNG project"],
    "Healthcare": ["drug candidate", "medical device"],
    "Consumer Defensive": ["private-label line", "delivery service"],
    "Industrials": ["aircraft program", "defense contract"],
}

_FIRMS = ["Morgan Stanley", "Goldman Sachs", "Bank of America", "Wedbush", "Bernstein",
          "Evercore ISI", "UBS", "Barclays", "Jefferies", "Citi"]

_CHANNELS = ["Stock News", "breaking-news", "earnings-alerts", "market-movers"]
_GUILDS = ["Trading Community", "Market Movers Hub", "Options Flow Club"]

# Relative frequencies of categories, roughly what a news tape looks like.
_CATEGORY_WEIGHTS = {"earnings": 22, "analyst": 22, "product": 18, "macro": 12,
                     "regulatory": 10, "merger": 8, "management": 8}

# One headline template per line: "category polarity | template | key factors; ...".
# Placeholders are filled by `_fill`; the key factors are the ones that headline implies.
_TEMPLATE_TABLE = """
earnings pos | {short} beats {quarter} estimates as revenue climbs {pct}% | earnings beat; revenue growth
earnings pos | {short} posts record {quarter} profit, raises full-year guidance | record profit; raised guidance
earnings pos | {short} tops EPS forecasts by ${eps}; margins expand | earnings beat; margin expansion
earnings neg | {short} misses {quarter} estimates as revenue falls {pct}% | earnings miss; revenue decline
earnings neg | {short} cuts full-year outlook after weak {quarter} results | lowered guidance; weak demand
earnings neg | {short} {quarter} margins shrink; EPS short by ${eps} | earnings miss; margin pressure
earnings neu | {short} {quarter} results in line with expectations | in-line results
earnings neu | {short} reaffirms guidance after mixed {quarter} report | guidance reaffirmed; mixed results
analyst pos | {firm} upgrades {short} to Buy, sets ${target} price target | analyst upgrade; price target raised
analyst pos | {firm} raises {short} target to ${target} on {product} demand | price target raised; product demand
analyst neg | {firm} downgrades {short} to Sell, cuts target to ${target} | analyst downgrade; price target cut
analyst neg | {firm} warns on {short} valuation, lowers target to ${target} | valuation concerns; price target cut
analyst neu | {firm} initiates {short} at Neutral with ${target} target | coverage initiated; balanced risk/reward
analyst neu | {firm} keeps {short} at Hold ahead of {quarter} results | rating maintained; earnings ahead
product pos | {short} unveils {product}; early orders beat expectations | product launch; strong demand
product pos | {short} {product} launch draws strong demand | product launch; market share gains
product neg | {short} delays {product} launch amid supply issues | launch delay; supply constraints
product neg | {short} recalls units tied to {product} defect | product recall; quality concerns
product neu | {short} previews {product} at investor event | product roadmap; investor event
product neu | {short} details roadmap for {product} | product roadmap
regulatory pos | Regulators clear {short} {product}, removing key overhang | regulatory approval; overhang removed
regulatory pos | {short} settles probe for less than feared | settlement; legal risk reduced
regulatory neg | Regulators open antitrust probe into {short} | antitrust probe; legal risk
regulatory neg | {short} faces ${amount}B fine over {product} practices | regulatory fine; legal risk
regulatory neu | {short} responds to regulator questions on {product} | regulatory inquiry
merger pos | {short} agrees to buy {peer_short} assets for ${amount}B | acquisition; synergies
merger pos | {short} and {peer_short} announce strategic partnership | strategic partnership
merger neg | {short} deal for {peer_short} unit collapses | deal terminated; deal uncertainty
merger neg | {short} bid for {peer_short} assets faces regulatory block | regulatory block; deal uncertainty
merger neu | {short} said to explore options with {peer_short} | strategic review; deal speculation
macro pos | {sector} stocks rally as Treasury yields ease; {short} gains | falling yields; sector rotation
macro pos | Soft CPI print lifts {sector} names including {short} | cooling inflation; rate-cut hopes
macro neg | {sector} shares slide on hot jobs data; {short} lower | hot labor market; rising yields
macro neg | Tariff worries weigh on {sector}; {short} under pressure | tariff risk; margin pressure
macro neu | Markets await Fed decision; {short} trades flat | Fed decision; macro uncertainty
management pos | {short} announces ${amount}B buyback and dividend hike | share buyback; dividend increase
management pos | {short} names veteran operator as new CFO | leadership hire
management neg | {short} CFO departs unexpectedly | executive departure; leadership uncertainty
management neg | {short} cuts workforce as restructuring widens | layoffs; restructuring
management neu | {short} reshuffles leadership of {product} unit | leadership change; reorganization
"""


def _parse_templates(table: str) -> dict[tuple[str, str], list[tuple[str, list[str]]]]:
    templates: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
    for line in filter(None, (raw.strip() for raw in table.splitlines())):
        key, template, factors = (part.strip() for part in line.split("|"))
        category, pol = key.split()
        templates.setdefault((category, pol), []).append((template, [f.strip() for f in factors.split(";")]))
    return templates


_HEADLINES = _parse_templates(_TEMPLATE_TABLE)

_CLOSERS = {
    "pos": "Traders on the desk called the update a clear positive for the near-term narrative.",
    "neg": "Several traders flagged the headline as a risk to near-term estimates.",
    "neu": "Most traders saw little change to the investment thesis.",
}


def iso_ms(dt: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, the way JavaScript's toISOString() prints."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def sentiment_label(score: int) -> str:
    # The doc's sample pairs 75 with "Bullish"; we follow the thresholds from our brief
    # (|score| >= 60 is "Very ..."), so a client must not assume a fixed mapping either way.
    if score <= -60:
        return "Very Bearish"
    if score <= -20:
        return "Bearish"
    if score >= 60:
        return "Very Bullish"
    if score >= 20:
        return "Bullish"
    return "Neutral"


def polarity(score: int) -> str:
    return "pos" if score >= 20 else "neg" if score <= -20 else "neu"


def format_market_cap(value: float) -> str:
    for divisor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if value >= divisor:
            return f"{value / divisor:.1f}{suffix}"
    return f"{value:.0f}"


def format_price(price: float, change_pct: float) -> str:
    # "$175.50 (+2.5%)": the doc prints the change with its natural precision.
    sign = "+" if change_pct >= 0 else "-"
    return f"${price:,.2f} ({sign}{abs(change_pct):g}%)"


def slugify(text: str, max_words: int = 8) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words[:max_words])


def make_company(rng: random.Random, ticker: str) -> Company:
    """A plausible stand-in for a ticker outside the universe (clients may subscribe to anything)."""
    price = round(rng.uniform(12, 320), 2)
    return Company(ticker, f"{ticker} Holdings Inc.", ticker, rng.choice(SECTORS),
                   rng.uniform(0.1, 2.0) * 1e9, int(rng.uniform(1, 20) * 1e6), price)


def initial_quote(rng: random.Random, company: Company) -> Quote:
    prev_close = round(company.base_price * rng.uniform(0.97, 1.03), 2)
    price = round(prev_close * (1 + rng.gauss(0, 0.008)), 2)
    return Quote(price, prev_close, int(company.avg_volume * rng.uniform(0.2, 0.5)))


def next_quote(rng: random.Random, company: Company, quote: Quote, score: int) -> Quote:
    """One random-walk step, nudged by the news' sentiment (good news tends to lift the stock)."""
    drift = score / 100 * 0.004
    price = max(0.5, round(quote.price * (1 + drift + rng.gauss(0, 0.003)), 2))
    volume = quote.volume + int(company.avg_volume * rng.uniform(0.002, 0.02))
    return replace(quote, price=price, volume=volume)


def pick_related(rng: random.Random, company: Company, category: str) -> Company | None:
    """A second ticker for `stockTickers`: always for mergers, sometimes otherwise."""
    if category != "merger" and rng.random() > 0.3:
        return None
    peers = [c for c in UNIVERSE.values() if c.sector == company.sector and c.ticker != company.ticker]
    peers = peers or [c for c in UNIVERSE.values() if c.ticker != company.ticker]
    return rng.choice(peers)


def random_score(rng: random.Random) -> int:
    return max(-100, min(100, round(rng.gauss(0, 45))))


def random_category(rng: random.Random) -> str:
    return rng.choices(list(_CATEGORY_WEIGHTS), weights=list(_CATEGORY_WEIGHTS.values()))[0]


def _last_quarter(now: datetime) -> str:
    return f"Q{(now.month - 1) // 3 or 4}"


def _products(company: Company) -> list[str]:
    return _PRODUCTS.get(company.ticker) or _PRODUCTS.get(company.sector) or ["new product line"]


def _fill(rng: random.Random, template: str, company: Company, peer: Company | None,
          quote: Quote, now: datetime) -> str:
    return template.format(
        short=company.short, ticker=company.ticker, sector=company.sector,
        peer_short=peer.short if peer else "a rival",
        quarter=_last_quarter(now), pct=f"{rng.uniform(1.5, 14):.1f}", eps=f"{rng.uniform(0.03, 0.4):.2f}",
        firm=rng.choice(_FIRMS), target=f"{quote.price * rng.uniform(0.75, 1.35):.0f}",
        amount=f"{rng.uniform(1, 40):.0f}", product=rng.choice(_PRODUCTS.get(company.ticker) or _PRODUCTS.get(company.sector, ["new product"])),
    )


def _content(summary: str, company: Company, quote: Quote, change: float, pol: str) -> str:
    direction = "up" if change >= 0 else "down"
    return (
        f"{summary}. {company.name} ({company.ticker}), part of the {company.sector} sector, "
        f"was last trading at ${quote.price:,.2f}, {direction} {abs(change):.1f}% on the session "
        f"on volume of {quote.volume / 1e6:.1f} million shares. {_CLOSERS[pol]}"
    )


def generate_article(rng: random.Random, company: Company, quote: Quote, *, now: datetime, seq: int,
                     related: Company | None, score: int, category: str) -> dict[str, Any]:
    """The `data` object of a news message, in the field order of the provider doc.

    `seq` makes the slug unique for the simulator's lifetime: the random tail alone could collide.
    """
    pol = polarity(score)
    template, factors = rng.choice(_HEADLINES[(category, pol)])
    headline = _fill(rng, template, company, related, quote, now)
    change = round((quote.price - quote.prev_close) / quote.prev_close * 100, 2)
    slug = f"{slugify(headline)}-{seq:x}{rng.randrange(16**4):04x}"
    confidence = max(30, min(99, round(55 + abs(score) * 0.35 + rng.gauss(0, 6))))
    stamp = iso_ms(now)
    return {
        "ticker": company.ticker,
        "sentimentScore": score,
        "sentimentLabel": sentiment_label(score),
        "confidence": confidence,
        "summary": headline,
        "content": _content(headline, company, quote, change, pol),
        "category": category,
        "stockTickers": [company.ticker] + ([related.ticker] if related else []),
        "keyFactors": list(factors),
        # Macro pieces are sometimes market colour rather than company news.
        "isStockRelated": category != "macro" or rng.random() > 0.3,
        "articleUrl": f"https://stocknews.live/news/{company.ticker}/{slug}",
        "articleSlug": slug,
        "channel": rng.choice(_CHANNELS),
        "guild": rng.choice(_GUILDS),
        "timestamp": stamp,
        "price": quote.price,
        "priceChange": change,
        "priceCurrency": "USD",
        "priceFormatted": format_price(quote.price, change),
        "volume": quote.volume,
        "marketCap": format_market_cap(quote.price * company.shares),
        "sector": company.sector,
    }


def news_message(data: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"type": "news", "timestamp": iso_ms(now), "data": data}
