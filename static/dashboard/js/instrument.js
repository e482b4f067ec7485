/*
 * Instrument page: a candlestick chart with volume (lightweight-charts, served from our static
 * files), one pane per sentiment provider on its own scale, news markers, a filterable news
 * list and the alert timeline (revoked alerts struck through). Live events for this one instrument
 * through live.js, which loads the snapshot from the detail API after subscribing, and after a
 * reconnect only if the server could not replay what was missed.
 * History: 1m/5m/1h/1d views rolled up by the server (feeds/history.py); scrolling near the left
 * edge loads the page before the oldest bar; news and alert markers follow; "Export CSV" is the
 * visible window. Live bars (minutes) update the 1m view only.
 * Provider text reaches the DOM only through textContent; links only if http(s).
 */
"use strict";
(() => {
  const root = document.getElementById("instrument");
  if (!root || !window.LightweightCharts) return;
  const LC = window.LightweightCharts;
  const id = Number(root.dataset.instrumentId);
  const state = { news: new Map(), alerts: new Map(), sentiment: {} };
  const toSec = (iso) => Math.floor(Date.parse(iso) / 1000);

  /* ---------- chart ---------- */
  const chartEl = document.getElementById("chart");
  const chart = LC.createChart(chartEl, {
    autoSize: true, layout: { background: { color: "transparent" }, textColor: "#c9d1d9" },
    grid: { vertLines: { color: "#21262d" }, horzLines: { color: "#21262d" } },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  const candles = chart.addSeries(LC.CandlestickSeries, {});
  const volume = chart.addSeries(LC.HistogramSeries, { priceScaleId: "vol", priceFormat: { type: "volume" } });
  chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  const panes = { knowsis: 1, stocktwits: 2, stocknews: 3 };
  const lines = {};
  for (const [provider, pane] of Object.entries(panes)) {
    lines[provider] = chart.addSeries(LC.LineSeries, { lineWidth: 2, title: provider }, pane);
  }
  const markers = LC.createSeriesMarkers(candles, []);

  /* ---------- history: views, older pages on scroll, export ---------- */
  // Bars by time (seconds): the snapshot's, live updates and older pages merge here, each once.
  const SPANS = { "1m": 60, "5m": 300, "1h": 3600, "1d": 86400 };
  const view = { interval: "1m", bars: new Map(), nextBefore: null, loading: false, pages: 0,
    news: new Map(), alerts: new Map(), sentiment: {}, generation: 0 };
  const exportLink = document.getElementById("export-csv");

  function drawBars() {
    const bars = [...view.bars.values()].sort((a, b) => a.time - b.time);
    candles.setData(bars.map(({ time, open, high, low, close }) => ({ time, open, high, low, close })));
    volume.setData(bars.map((b) => ({ time: b.time, value: b.volume || 0 })));
    chartEl.setAttribute("data-bars", String(bars.length));
  }
  function keepBar(b) {
    view.bars.set(toSec(b.start), { time: toSec(b.start), open: b.open, high: b.high, low: b.low, close: b.close, volume: b.volume });
  }

  async function loadOlder(before) {
    if (view.loading || (before === undefined && !view.nextBefore)) return;
    view.loading = true;
    const generation = view.generation; // a view switch meanwhile makes this page stale
    const params = new URLSearchParams({ interval: view.interval, limit: "300" });
    const from = before === undefined ? view.nextBefore : before;
    if (from) params.set("before", from);
    try {
      const res = await fetch(root.dataset.historyUrl + "?" + params, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!res.ok) throw new Error("history HTTP " + res.status);
      const page = await res.json();
      if (generation !== view.generation) return;
      const range = chart.timeScale().getVisibleLogicalRange();
      const added = page.bars.filter((b) => !view.bars.has(toSec(b.start))).length;
      page.bars.forEach(keepBar);
      for (const [provider, points] of Object.entries(page.sentiment)) (view.sentiment[provider] ||= []).push(...points);
      page.news.forEach((n) => view.news.set(n.external_id, n));
      page.alerts.forEach((a) => view.alerts.set(a.provider + ":" + a.external_id, a));
      view.nextBefore = page.next_before;
      view.pages += 1;
      drawBars(); setSentimentSeries();
      // Keep what the user looks at in place: the older bars went in on the left.
      if (range && added) chart.timeScale().setVisibleLogicalRange({ from: range.from + added, to: range.to + added });
      chartEl.setAttribute("data-history-pages", String(view.pages));
      chartEl.setAttribute("data-oldest", page.bars.length ? page.bars[0].start : "");
    } catch (err) {
      console.warn("history page failed:", err);
    } finally {
      if (generation === view.generation) view.loading = false;
    }
  }

  function switchView(interval) {
    view.generation += 1;
    Object.assign(view, { interval, bars: new Map(), nextBefore: null, loading: false, pages: 0,
      news: new Map(), alerts: new Map(), sentiment: {} });
    document.querySelectorAll("#history-intervals button").forEach((b) =>
      b.setAttribute("aria-pressed", String(b.dataset.interval === interval)));
    chartEl.setAttribute("data-history-pages", "0");
    if (interval === "1m") { loadSnapshotAgain(); return; }
    drawBars(); setSentimentSeries();
    loadOlder(null);
  }
  document.querySelectorAll("#history-intervals button").forEach((b) =>
    b.addEventListener("click", () => switchView(b.dataset.interval)));

  // Near the left edge (fewer than 20 bars of margin), ask for the page before the oldest bar.
  chart.timeScale().subscribeVisibleLogicalRangeChange((range) => {
    if (range && range.from < 20) loadOlder();
    updateExport(range);
  });
  function updateExport(range) {
    const bars = candles.data();
    if (!range || !bars.length || !exportLink) return;
    const first = Math.max(0, Math.ceil(range.from)), last = Math.min(bars.length - 1, Math.floor(range.to));
    if (last < first) return;
    const end = new Date((bars[last].time + SPANS[view.interval]) * 1000).toISOString();
    const params = new URLSearchParams({ interval: view.interval, before: end, limit: String(last - first + 1), format: "csv" });
    exportLink.setAttribute("href", root.dataset.historyUrl + "?" + params);
  }

  function setBar(b) {
    if (b.interval !== view.interval) return; // live bars are minutes: the other views are history
    keepBar(b);
    const t = toSec(b.start);
    candles.update({ time: t, open: b.open, high: b.high, low: b.low, close: b.close });
    volume.update({ time: t, value: b.volume || 0 });
    chartEl.setAttribute("data-bars", String(view.bars.size));
  }

  // A marker's time must be a bar's: the start of the bar holding it in the current view.
  const barTime = (iso) => { const span = SPANS[view.interval]; return Math.floor(toSec(iso) / span) * span; };
  function setSentimentSeries() {
    const live = view.interval === "1m" ? state.sentiment : {};
    for (const provider of Object.keys(lines)) {
      if (provider === "stocknews") continue;
      const samples = [...(view.sentiment[provider] || []), ...(live[provider] || [])];
      const byTime = new Map(samples.filter((s) => s.score !== null).map((s) => [toSec(s.ts), s.score]));
      lines[provider].setData([...byTime].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time, value })));
    }
    const allNews = new Map([...view.news, ...(view.interval === "1m" ? state.news : [])]);
    const news = [...allNews.values()].filter((n) => n.sentiment !== null)
      .map((n) => ({ time: toSec(n.published_at), value: n.sentiment })).sort((a, b) => a.time - b.time);
    lines.stocknews.setData(news.filter((p, i) => i === 0 || p.time !== news[i - 1].time));
    const allAlerts = new Map([...view.alerts, ...(view.interval === "1m" ? state.alerts : [])]);
    const shown = [
      ...news.map((p) => ({ time: Math.floor(p.time / SPANS[view.interval]) * SPANS[view.interval], position: "aboveBar",
        shape: "circle", color: p.value >= 0 ? "#3fb950" : "#f85149" })),
      ...[...allAlerts.values()].map((a) => ({ time: barTime(a.triggered_at), position: "belowBar", shape: "arrowUp",
        color: a.revoked ? "#8b949e" : "#d29922" })),
    ].sort((a, b) => a.time - b.time);
    markers.setMarkers(shown);
  }

  /* ---------- news list with filters ---------- */
  const filters = document.getElementById("news-filters");
  function tone(s) { return s === null || s === undefined ? "" : s > 15 ? "pos" : s < -15 ? "neg" : "neutral"; }
  function safeUrl(raw) {
    try { const u = new URL(raw); return u.protocol === "http:" || u.protocol === "https:" ? u.href : null; } catch (_) { return null; }
  }
  function refillSelect(name, values) {
    const select = filters.elements[name], current = select.value;
    select.replaceChildren(new Option("all", ""), ...[...values].sort().map((v) => new Option(v, v)));
    select.value = current;
  }
  function renderNews() {
    const f = Object.fromEntries(new FormData(filters));
    const items = [...state.news.values()].sort((a, b) => Date.parse(b.published_at) - Date.parse(a.published_at))
      .filter((n) => (!f.provider || n.provider === f.provider) && (!f.category || n.category === f.category)
        && (!f.tone || tone(n.sentiment) === f.tone) && (n.confidence ?? 0) >= Number(f.confidence || 0));
    refillSelect("provider", new Set([...state.news.values()].map((n) => n.provider)));
    refillSelect("category", new Set([...state.news.values()].map((n) => n.category).filter(Boolean)));
    document.getElementById("news").replaceChildren(...items.map((n) => {
      const li = document.createElement("li");
      li.className = "news-item";
      li.setAttribute("data-external-id", n.external_id);
      const headline = document.createElement("span");
      headline.className = "news-headline";
      headline.textContent = n.headline;
      const meta = document.createElement("span");
      meta.className = "news-meta";
      meta.textContent = [n.provider, n.category, n.sentiment_label, n.confidence !== null ? `conf ${Math.round(n.confidence)}` : ""]
        .filter(Boolean).join(" · ");
      li.append(headline, meta);
      const href = safeUrl(n.url);
      if (href) {
        const a = document.createElement("a");
        a.textContent = "source"; a.setAttribute("href", href);
        a.setAttribute("target", "_blank"); a.setAttribute("rel", "noopener noreferrer");
        li.append(a);
      }
      return li;
    }));
  }
  filters.addEventListener("input", renderNews);

  /* ---------- alert timeline ---------- */
  function renderAlerts() {
    const items = [...state.alerts.values()].sort((a, b) => Date.parse(b.triggered_at) - Date.parse(a.triggered_at));
    document.getElementById("timeline").replaceChildren(...items.map((a) => {
      const li = document.createElement("li");
      li.className = "alert-item" + (a.revoked ? " revoked" : "");
      li.setAttribute("data-alert-id", a.provider + ":" + a.external_id);
      const what = document.createElement("span");
      what.className = "alert-headline";
      what.textContent = a.headline || "Alert";
      const meta = document.createElement("span");
      meta.className = "alert-meta";
      meta.textContent = [window.TickerwirePrefs.formatTime(a.triggered_at), a.provider, a.level, a.revoked ? "revoked" : ""]
        .filter(Boolean).join(" · ");
      li.append(what, meta);
      return li;
    }));
  }

  /* ---------- snapshot and live events ---------- */
  async function loadSnapshot(streams, signal) {
    const res = await fetch(root.dataset.detailUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, signal });
    if (res.status === 401) { location.assign(root.dataset.loginUrl + "?next=" + encodeURIComponent(location.pathname)); return; }
    if (!res.ok) throw new Error("detail HTTP " + res.status);
    const data = await res.json();
    state.sentiment = data.sentiment;
    state.news = new Map(data.news.map((n) => [n.external_id, n]));
    state.alerts = new Map(data.alerts.map((a) => [a.provider + ":" + a.external_id, a]));
    if (view.interval === "1m") {
      // The snapshot's bars are the newest minutes; older pages go on from the oldest of them.
      data.bars.filter((b) => b.interval === "1m").forEach(keepBar);
      const minutes = data.bars.filter((b) => b.interval === "1m");
      if (!view.pages && minutes.length) view.nextBefore = minutes[0].start;
      drawBars();
      if (!view.pages && !minutes.length) loadOlder(null); // newest stored bars are coarser: ask the history
    }
    setSentimentSeries(); renderNews(); renderAlerts();
  }
  function loadSnapshotAgain() {
    loadSnapshot([], undefined).catch((err) => console.warn("snapshot failed:", err));
  }

  const HANDLERS = {
    bar: (e) => setBar(e),
    sentiment: (e) => { (state.sentiment[e.provider] ||= []).push(e); setSentimentSeries(); },
    news: (e) => { state.news.set(e.external_id, e); setSentimentSeries(); renderNews(); },
    alert: (e) => { state.alerts.set(e.provider + ":" + e.external_id, Object.assign({ revoked: false }, e)); renderAlerts(); },
    alert_revoked: (e) => { const a = state.alerts.get(e.provider + ":" + e.external_id); if (a) { a.revoked = true; renderAlerts(); } },
  };

  window.TickerwireLive.connect({
    wsPath: root.dataset.wsPath,
    watchRequest: () => ({ instruments: [id] }),
    loadSnapshot,
    onEvent: (msg) => {
      const ev = msg.event;
      if (ev && ev.instrument_id === id && HANDLERS[ev.kind]) HANDLERS[ev.kind](ev);
    },
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") location.assign(document.querySelector(".back-link").href); });
})();
