/*
 * Instrument page: a candlestick chart with volume (lightweight-charts, served from our static
 * files), one pane per sentiment provider on its own scale, news markers, a filterable news
 * list and the alert timeline (revoked alerts struck through). Live events for this one instrument
 * through live.js, which loads the snapshot from the detail API after subscribing, and after a
 * reconnect only if the server could not replay what was missed.
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

  function setBar(b) {
    const t = toSec(b.start);
    candles.update({ time: t, open: b.open, high: b.high, low: b.low, close: b.close });
    volume.update({ time: t, value: b.volume || 0 });
    chartEl.setAttribute("data-bars", String(candles.data().length));
  }

  function setSentimentSeries() {
    for (const [provider, samples] of Object.entries(state.sentiment)) {
      const byTime = new Map(samples.filter((s) => s.score !== null).map((s) => [toSec(s.ts), s.score]));
      lines[provider] && lines[provider].setData([...byTime].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time, value })));
    }
    const news = [...state.news.values()].filter((n) => n.sentiment !== null)
      .map((n) => ({ time: toSec(n.published_at), value: n.sentiment })).sort((a, b) => a.time - b.time);
    lines.stocknews.setData(news.filter((p, i) => i === 0 || p.time !== news[i - 1].time));
    markers.setMarkers(news.map((p) => ({ time: p.time, position: "aboveBar", shape: "circle",
      color: p.value >= 0 ? "#3fb950" : "#f85149" })));
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
    candles.setData(data.bars.map((b) => ({ time: toSec(b.start), open: b.open, high: b.high, low: b.low, close: b.close })));
    volume.setData(data.bars.map((b) => ({ time: toSec(b.start), value: b.volume || 0 })));
    chartEl.setAttribute("data-bars", String(data.bars.length));
    state.sentiment = data.sentiment;
    state.news = new Map(data.news.map((n) => [n.external_id, n]));
    state.alerts = new Map(data.alerts.map((a) => [a.provider + ":" + a.external_id, a]));
    setSentimentSeries(); renderNews(); renderAlerts();
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
