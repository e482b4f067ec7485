"""Realistic TrendSpottr alert content for the simulator.

A TrendSpottr alert is a trending URL matching an alert's query: headline, a ~250-500 character
snippet of the page, the URL itself, an optional thumbnail and up to five related hashtags.
Company news reuses `newsgen`'s headline templates, so "AAPL OR Apple" yields Apple stories on
real-looking Reuters/CNBC/Bloomberg/... URLs. Pure functions of their arguments plus a
caller-supplied `random.Random`; no I/O, no clock. No Django here.
"""

from __future__ import annotations

import random
import re
from datetime import datetime
from typing import Any

from . import newsgen
from .newsgen import Company

LEVELS = ("Elevated", "High", "Extreme")
# Which levels each documented level_filter lets through.
ALLOWED_LEVELS: dict[str, tuple[str, ...]] = {
    "All": LEVELS, "HighAndExtreme": ("High", "Extreme"), "ExtremeOnly": ("Extreme",),
}
# Most trending URLs only just cross the bar: Elevated is common, Extreme rare.
_LEVEL_WEIGHTS = {"Elevated": 6, "High": 3, "Extreme": 1}
# `OR` is a boolean operator only as an upper-case, whitespace-delimited word (as in Twitter
# search, which TrendSpottr queries mirror); "or", "ORCL" or "NOR" are search terms.
_OR = re.compile(r"(?<!\S)OR(?!\S)")
DESCRIPTION_MIN, DESCRIPTION_MAX = 250, 500
VOLUME_STEP = 300  # analytics points every 5 minutes
_MAX_POINTS = 288  # one day of points

_SITES = [
    # (url pattern, thumbnail host): {slug}, {date}, {path_date}, {num}, {hex} are filled in.
    ("https://www.reuters.com/markets/companies/{slug}-{date}/",
     "https://www.reuters.com/resizer/v2/{hex}.jpg"),
    ("https://www.cnbc.com/{path_date}/{slug}.html", "https://image.cnbcfm.com/api/v1/image/{num}-{hex}.jpg"),
    ("https://www.bloomberg.com/news/articles/{date}/{slug}",
     "https://assets.bwbx.io/images/users/{hex}/1200x800.jpg"),
    ("https://finance.yahoo.com/news/{slug}-{num}.html", "https://s.yimg.com/ny/api/res/1.2/{hex}.jpg"),
    ("https://www.marketwatch.com/story/{slug}-{hex}", "https://images.mktw.net/im-{num}"),
    ("https://www.wsj.com/finance/stocks/{slug}-{hex}", "https://images.wsj.net/im-{num}"),
]
_THUMB_SIZES = [(144, 81), (300, 169), (640, 360), (1200, 630)]
_SECTOR_TAGS = {
    "Technology": "#tech", "Consumer Cyclical": "#retail", "Communication Services": "#media",
    "Financial Services": "#finance", "Energy": "#energy", "Healthcare": "#biotech",
    "Consumer Defensive": "#consumer", "Industrials": "#industrials",
}
_GENERIC_TAGS = ["#stocks", "#investing", "#markets", "#trading", "#wallstreet", "#news"]
_TOPIC_HEADLINES = [
    "{topic} stocks jump as investors pile into the trade",
    "Why {topic} is trending on Wall Street today",
    "{topic} sell-off deepens as traders cut risk",
    "Analysts split on {topic} outlook after a volatile week",
    "{topic}: what traders are watching this week",
    "Fund managers boost bets on {topic} as flows hit a record",
]
_TOPIC_BODIES = [
    "Investors moved quickly into names tied to {topic} on {day}, with trading volumes running well "
    "above their 30-day average across the group. Strategists said the move reflected a rotation "
    "out of crowded defensive positions rather than any single catalyst.",
    "Interest in {topic} accelerated on {day} as traders digested fresh data and a run of analyst "
    "notes. Options activity pointed to expectations of larger swings in the coming sessions, and "
    "several desks reported heavier-than-usual client flow.",
]
_SOCIAL = [
    "Social chatter about {term} picked up sharply over the past hour, with shares of the story "
    "climbing across finance accounts.",
    "The story spread quickly among traders on social media, where mentions of {term} ran well "
    "ahead of their usual pace.",
    "Market commentators were quick to weigh in, and the piece became one of the most shared "
    "links about {term} of the day.",
]


def or_clauses(query: str) -> list[str]:
    """The query's OR clauses, stripped (empty clauses kept, so callers can reject them)."""
    return [clause.strip() for clause in _OR.split(query)]


def query_key(query: str) -> frozenset[str]:
    """Identity of a query for "recent alerts for this query": clause order and case don't matter."""
    return frozenset(" ".join(c.lower().split()) for c in or_clauses(query) if c)


def pick_level(rng: random.Random, level_filter: str) -> str:
    allowed = ALLOWED_LEVELS[level_filter]
    return rng.choices(allowed, weights=[_LEVEL_WEIGHTS[level] for level in allowed])[0]


def match_subjects(rng: random.Random, query: str) -> list[Company | str]:
    """What the query is about: known companies (by ticker, name or sector), stand-ins for
    unknown ticker-like terms, or the bare term as a market topic."""
    subjects: list[Company | str] = []
    for clause in or_clauses(query):
        term = clause.strip("\"'").lstrip("$#").strip()
        if term:
            subjects.extend(_subjects_for(rng, term))
    return subjects or ["the market"]


def _subjects_for(rng: random.Random, term: str) -> list[Company | str]:
    lowered = term.lower()
    if term.upper() in newsgen.UNIVERSE:
        return [newsgen.UNIVERSE[term.upper()]]
    named = [c for c in newsgen.UNIVERSE.values()
             if lowered == c.short.lower() or (len(lowered) >= 3 and lowered in c.name.lower())]
    if named:
        return named
    sector = [c for c in newsgen.UNIVERSE.values() if c.sector.lower() == lowered]
    if sector:
        return sector
    if re.fullmatch(r"[A-Z]{1,5}", term):
        return [newsgen.make_company(rng, term)]
    return [term]


def generate_alert(rng: random.Random, query: str, *, now: datetime, seq: int) -> dict[str, Any]:
    """The content fields of a webhook `data` object, in the doc's order: url, headline,
    description, optional thumbnail_url/width/height, related_hashtags."""
    subject = rng.choice(match_subjects(rng, query))
    if isinstance(subject, Company):
        headline, body, tags = _company_story(rng, subject, now, seq)
        term = subject.short
    else:
        headline, body, tags = _topic_story(rng, subject, now)
        term = subject
    pattern, thumb = rng.choice(_SITES)
    fields = {"slug": newsgen.slugify(headline, 10), "date": now.strftime("%Y-%m-%d"),
              "path_date": now.strftime("%Y/%m/%d"), "num": f"{rng.randrange(10**8, 10**9)}",
              "hex": f"{rng.getrandbits(32) ^ seq:08x}"}
    content: dict[str, Any] = {
        "url": pattern.format(**fields),
        "headline": headline,
        "description": describe(rng, body, term),
    }
    if rng.random() < 0.6:  # optional in the doc: all three fields or none
        width, height = rng.choice(_THUMB_SIZES)
        content.update(thumbnail_url=thumb.format(**fields), thumbnail_width=width, thumbnail_height=height)
    content["related_hashtags"] = tags[: rng.randint(3, 5)]
    return content


def _company_story(rng: random.Random, company: Company, now: datetime, seq: int) -> tuple[str, str, list[str]]:
    category = newsgen.random_category(rng)
    article = newsgen.generate_article(
        rng, company, newsgen.initial_quote(rng, company), now=now, seq=seq,
        related=newsgen.pick_related(rng, company, category), score=newsgen.random_score(rng),
        category=category)
    tags = _dedupe([f"#{company.ticker}", "#" + re.sub(r"\W", "", company.short),
                    _SECTOR_TAGS.get(company.sector, "#business"), f"#{category}", *_GENERIC_TAGS])
    return article["summary"], article["content"], tags


def _topic_story(rng: random.Random, topic: str, now: datetime) -> tuple[str, str, list[str]]:
    headline = rng.choice(_TOPIC_HEADLINES).format(topic=topic)
    headline = headline[0].upper() + headline[1:]
    body = rng.choice(_TOPIC_BODIES).format(topic=topic, day=now.strftime("%A"))
    tag = "#" + re.sub(r"\W", "", topic.title())
    return headline, body, _dedupe([tag, *_GENERIC_TAGS])


def describe(rng: random.Random, body: str, term: str) -> str:
    """A page snippet of DESCRIPTION_MIN..DESCRIPTION_MAX characters ("usually just over 250
    and almost always less than 512"), cut on a word boundary."""
    extras = rng.sample(_SOCIAL, len(_SOCIAL))
    while len(body) < DESCRIPTION_MIN and extras:
        body = f"{body} {extras.pop().format(term=term)}"
    if len(body) > DESCRIPTION_MAX:
        body = body[: DESCRIPTION_MAX - 1].rsplit(" ", 1)[0] + "…"
    return body


def _dedupe(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for tag in tags:
        if len(tag) > 1 and tag.lower() not in seen:
            seen.add(tag.lower())
            out.append(tag)
    return out[:5]


def volume_series(notification_id: int, level: str, sent_time: int, now: int) -> list[dict[str, int]]:
    """Cumulative tweet counts for an alert's URL, every VOLUME_STEP s from 30 min before it was
    sent up to `now`. Seeded by the notification id, so later calls extend the same series."""
    rng = random.Random(notification_id)
    base = {"Elevated": 60, "High": 250, "Extreme": 900}[level]
    count = rng.randint(base // 2, base)
    points = []
    timestamp = sent_time - 6 * VOLUME_STEP
    while timestamp <= max(now, sent_time) and len(points) < _MAX_POINTS:
        points.append({"timestamp": timestamp, "count": count})
        count += rng.randint(1, base // 3)  # strictly increasing: the doc promises monotonic
        timestamp += VOLUME_STEP
    return points
