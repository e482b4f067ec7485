"""Provider registry: `runfeed <name>` looks the feed class up here (dotted paths keep
imports lazy, so a worker loads only its own provider's code)."""

FEEDS: dict[str, str] = {
    "stocknews": "feeds.providers.stocknews.feed.StockNewsFeed",
    "insightsentry": "feeds.providers.insightsentry.feed.InsightSentryFeed",
    "stocktwits": "feeds.providers.stocktwits.feed.StockTwitsFeed",
    "knowsis": "feeds.providers.knowsis.feed.KnowsisFeed",
}
