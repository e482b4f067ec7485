/*
 * Tickerwire live board. The socket, its reconnect policy, heartbeat, status indicator, "access ended"
 * handling and exact resync (subscribe, then snapshot only what the server could not recover) are the
 * shared live.js and streams.js (window.TickerwireLive). The page loads its snapshot
 * once to learn its watchlists, watches them, and merges every later snapshot into the in-memory model
 * (DOM rebuilt only if the watchlist structure changed). Events dispatch via EVENT_HANDLERS (by event
 * kind), other messages via MESSAGE_HANDLERS (by type); handlers update the model and mark rows dirty;
 * one requestAnimationFrame renders the dirty rows. When access ended for good (44xx close), the board
 * says why in #access-note, with a link to log in.
 * Security: provider strings reach the DOM only via textContent / setAttribute (safe attributes).
 */
"use strict";
(() => {
  const board = document.getElementById("board");
  if (!board) return;
  const $ = (id) => document.getElementById(id);
  const listsEl = $("watchlists"), emptyEl = $("empty-state"), noteEl = $("board-note");
  const accessEl = $("access-note");
  const { snapshotUrl, wsPath } = board.dataset;
  const loginUrl = board.dataset.loginUrl || "/login/";
  const MAX_NEWS = 5, FLASH_MS = 600;

  const model = new Map(); // instrument id -> {quote, news[]}
  const rows = new Map(); // instrument id -> [row parts]; an instrument may sit in several watchlists
  const dirty = new Set();
  let watchlistIds = [], structureKey = null, frameScheduled = false;
  let live = null, stopped = false; // the TickerwireLive connection; stopped: leaving for the login page

  /* ---------- DOM helpers ---------- */
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const flashTimers = new WeakMap();
  function flash(node, dir) {
    clearTimeout(flashTimers.get(node));
    node.classList.remove("flash", "flash-up", "flash-down");
    void node.offsetWidth; // restart the CSS animation
    node.classList.add("flash", ...(dir ? ["flash-" + dir] : []));
    flashTimers.set(node, setTimeout(() => node.classList.remove("flash", "flash-up", "flash-down"), FLASH_MS));
  }

  function setText(node, text, dir) {
    if (node.textContent === text) return;
    const hadValue = node.textContent !== "";
    node.textContent = text;
    if (hadValue) flash(node, dir);
  }

  /* ---------- formatting ---------- */
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const toTime = (iso) => (typeof iso === "string" ? Date.parse(iso) : NaN);
  const signed = (v, text) => (v > 0 ? "+" : "") + text;
  const fmtPercent = (p) => (isNum(p) ? signed(p, p.toFixed(2)) + "%" : "—");
  const fmtPrice = (p) => (isNum(p)
    ? p.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: Math.abs(p) < 1 ? 4 : 2 })
    : "—");

  function fmtAgo(iso) {
    const t = toTime(iso);
    if (Number.isNaN(t)) return "";
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return "now";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h";
    if (s < 7 * 86400) return Math.floor(s / 86400) + "d";
    return new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric" });
  }

  function tone(score) {
    if (!isNum(score)) return "none";
    if (Math.abs(score) < 15) return "neutral";
    return (Math.abs(score) >= 50 ? "strong-" : "") + (score > 0 ? "pos" : "neg");
  }

  function safeUrl(raw) { // absolute http(s) URLs only (no base URL given)
    let url;
    try { url = new URL(raw); } catch (_) { return null; }
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  }

  /* ---------- model ---------- */
  function mergeQuote(id, q) {
    const entry = model.get(id);
    if (!entry || !q) return false;
    const cur = entry.quote;
    if (cur && toTime(q.ts) < toTime(cur.ts)) return false; // older than what is shown: drop
    const next = Object.assign({}, cur, q);
    // A null field means "not in this update": keep the last known value (delay is never inherited).
    for (const k of Object.keys(q)) if (q[k] === null && cur && k !== "delay_seconds") next[k] = cur[k];
    entry.quote = next;
    return true;
  }

  const SPARK_POINTS = 60;
  function mergeBar(id, bar) { // the latest bar by start time; its close moves until it ends
    const entry = model.get(id);
    if (!entry || !bar || (entry.bar && toTime(bar.start) < toTime(entry.bar.start))) return false;
    const sameBar = entry.bar && entry.bar.start === bar.start;
    if (sameBar && entry.spark.length) entry.spark[entry.spark.length - 1] = bar.close;
    else entry.spark = [...entry.spark, bar.close].slice(-SPARK_POINTS);
    const sameDay = entry.bar && entry.bar.start.slice(0, 10) === bar.start.slice(0, 10);
    entry.range = sameDay && entry.range ? [Math.min(entry.range[0], bar.low), Math.max(entry.range[1], bar.high)] : [bar.low, bar.high];
    entry.bar = bar;
    return true;
  }

  function mergeSentiment(id, s) { // one latest sample per provider: each keeps its own scale
    const entry = model.get(id);
    if (!entry || !s) return false;
    const cur = entry.sentiment[s.provider];
    if (cur && toTime(s.ts) < toTime(cur.ts)) return false;
    entry.sentiment[s.provider] = s;
    return true;
  }

  const newsTime = (n) => toTime(n.published_at) || toTime(n.received_at) || 0;
  function mergeNews(id, items) {
    const entry = model.get(id);
    if (!entry) return false;
    const byId = new Map(entry.news.map((n) => [n.external_id, n]));
    for (const n of items) if (n && n.external_id) byId.set(n.external_id, n);
    entry.news = [...byId.values()].sort((a, b) => newsTime(b) - newsTime(a)).slice(0, MAX_NEWS);
    return true;
  }

  // A row renders at most every ROW_MIN_MS: a busy instrument cannot freeze the page. The
  // model always holds the latest values, so a deferred render shows the newest state.
  const ROW_MIN_MS = 250, lastRender = new Map();
  function markDirty(id) {
    dirty.add(id);
    if (frameScheduled) return;
    frameScheduled = true;
    requestAnimationFrame(() => {
      frameScheduled = false;
      const now = performance.now();
      let wait = Infinity;
      for (const rowId of dirty) {
        const since = now - (lastRender.get(rowId) || -Infinity);
        if (since < ROW_MIN_MS) { wait = Math.min(wait, ROW_MIN_MS - since); continue; }
        renderRow(rowId);
        lastRender.set(rowId, now);
        dirty.delete(rowId);
      }
      if (dirty.size) setTimeout(() => markDirty(dirty.values().next().value), wait);
    });
  }

  /* ---------- building the board ---------- */
  function buildRow(inst) {
    const root = el("article", "instrument");
    root.setAttribute("data-instrument-id", String(inst.id));
    root.setAttribute("data-symbol", String(inst.symbol || ""));
    const ident = el("div", "inst-ident");
    const symbol = el("a", "inst-symbol", inst.symbol);
    symbol.setAttribute("href", "/instrument/" + encodeURIComponent(String(inst.id)) + "/");
    ident.append(symbol, el("span", "inst-name", inst.name));
    if (inst.exchange) ident.append(el("span", "inst-exchange", inst.exchange));
    const parts = { root, price: el("span", "quote-price"), change: el("span", "quote-change"),
      delayed: el("span", "quote-delayed", "delayed"), news: el("ul", "news-list"),
      bar: el("span", "bar-ohlc"), crowd: el("span", "crowd-sentiment"), knowsis: el("span", "knowsis-sentiment"),
      spark: document.createElementNS("http://www.w3.org/2000/svg", "svg"), book: el("span", "quote-book") };
    parts.spark.setAttribute("class", "sparkline");
    parts.spark.setAttribute("viewBox", "0 0 100 24");
    parts.spark.setAttribute("preserveAspectRatio", "none");
    parts.spark.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "polyline"));
    parts.delayed.hidden = true;
    const quote = el("div", "inst-quote");
    quote.append(parts.price, parts.change, parts.delayed, parts.book, parts.spark, parts.bar, parts.crowd, parts.knowsis);
    root.append(ident, quote, parts.news);
    return parts;
  }

  function buildSection(wl) {
    const section = el("section", "watchlist");
    section.setAttribute("data-watchlist-id", String(wl.id));
    const head = el("h2", "watchlist-head");
    head.append(el("span", "watchlist-name", wl.name), el("span", "watchlist-team", wl.team && wl.team.name));
    const body = el("div", "watchlist-rows");
    for (const inst of wl.instruments || []) {
      const parts = buildRow(inst);
      rows.set(inst.id, [...(rows.get(inst.id) || []), parts]);
      window.TickerwireEdit.decorateRow(parts.root, wl, inst);
      body.append(parts.root);
    }
    section.append(head, body);
    window.TickerwireEdit.decorateSection(section, wl);
    return section;
  }

  /* ---------- rendering rows ---------- */
  function buildNewsItem(n, isNew) {
    const li = el("li", "news-item");
    li.setAttribute("data-external-id", String(n.external_id));
    const meta = el("span", "news-meta");
    const score = isNum(n.sentiment) ? signed(n.sentiment, Math.round(n.sentiment)) : "";
    const badge = meta.appendChild(el("span", "sentiment", [n.sentiment_label, score].filter(Boolean).join(" ") || "n/a"));
    badge.setAttribute("data-tone", tone(n.sentiment));
    if (isNum(n.confidence)) badge.setAttribute("title", "Confidence " + Math.round(n.confidence) + "%");
    const time = meta.appendChild(el("time", "news-time", fmtAgo(n.published_at)));
    if (typeof n.published_at === "string") time.setAttribute("datetime", n.published_at);
    const href = safeUrl(n.url);
    if (href) {
      const a = meta.appendChild(el("a", "news-source", "source"));
      a.setAttribute("href", href);
      a.setAttribute("target", "_blank");
      a.setAttribute("rel", "noopener noreferrer");
      if (n.source) a.setAttribute("title", String(n.source));
    }
    const headline = el("span", "news-headline", n.headline);
    headline.setAttribute("title", String(n.headline || ""));
    li.append(headline, meta);
    if (isNew) flash(li);
    return li;
  }

  const newsSignatures = new WeakMap();
  function renderNews(list, news) {
    const sig = JSON.stringify(news.map((n) => [n.external_id, n.headline, n.sentiment, n.sentiment_label,
      n.confidence, n.url, n.source, fmtAgo(n.published_at)]));
    if (newsSignatures.get(list) === sig) return; // unchanged: keep the nodes
    const seen = new Set(Array.from(list.children, (li) => li.getAttribute("data-external-id")));
    const firstRender = !newsSignatures.has(list);
    newsSignatures.set(list, sig);
    const items = news.map((n) => buildNewsItem(n, !firstRender && !seen.has(String(n.external_id))));
    list.replaceChildren(...(items.length ? items : [el("li", "news-empty", "No news yet")]));
  }

  // InsightSentry delay_seconds: 0 real-time, 900 = 15-min delayed, -1 = end of day.
  const delayLabel = (s) => (s < 0 ? "end of day" : "delayed " + (s >= 60 ? Math.round(s / 60) + " min" : s + " s"));

  function renderSpark(svg, values) { // recent bar closes, scaled to the box
    svg.toggleAttribute("hidden", values.length < 2); // an SVG element has no .hidden property
    if (values.length < 2) return;
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const points = values.map((v, i) => `${((i / (values.length - 1)) * 100).toFixed(1)},${(22 - ((v - lo) / span) * 20).toFixed(1)}`);
    svg.firstChild.setAttribute("points", points.join(" "));
    svg.setAttribute("data-points", String(values.length));
    svg.setAttribute("data-trend", values[values.length - 1] >= values[0] ? "up" : "down");
  }

  function renderBar(node, b) {
    node.hidden = !b;
    if (b) setText(node, `${b.interval} O ${fmtPrice(b.open)} H ${fmtPrice(b.high)} L ${fmtPrice(b.low)} C ${fmtPrice(b.close)}`);
  }

  function renderCrowd(node, s) { // StockTwits: mean score (-1..1) and messages in the minute
    node.hidden = !s;
    if (!s) return;
    setText(node, `Crowd ${isNum(s.score) ? signed(s.score, s.score.toFixed(2)) : "n/a"} · ${s.volume || 0} msgs/min`);
    node.setAttribute("data-tone", tone(isNum(s.score) ? s.score * 100 : null));
  }

  function renderKnowsis(node, s) { // Knowsis' own (undocumented) scale: shown as given, never blended
    node.hidden = !s;
    if (!s) return;
    setText(node, `Knowsis ${isNum(s.score) ? signed(s.score, String(s.score)) : "n/a"} · vol ${isNum(s.volume) ? s.volume : "n/a"}`);
  }

  function renderRow(id) {
    const entry = model.get(id);
    if (!entry) return;
    const q = entry.quote || {};
    const cp = q.change_percent;
    const delayed = isNum(q.delay_seconds) && q.delay_seconds !== 0;
    for (const parts of rows.get(id) || []) {
      const old = parseFloat(parts.price.getAttribute("data-value"));
      const dir = isNum(q.price) && isNum(old) && q.price !== old ? (q.price > old ? "up" : "down") : "";
      setText(parts.price, fmtPrice(q.price), dir);
      if (isNum(q.price)) parts.price.setAttribute("data-value", String(q.price));
      setText(parts.change, fmtPercent(cp), dir);
      parts.change.classList.toggle("up", isNum(cp) && cp > 0);
      parts.change.classList.toggle("down", isNum(cp) && cp < 0);
      parts.delayed.hidden = !delayed;
      if (isNum(cp)) parts.root.setAttribute("data-change", String(cp));
      const latest = Math.max(toTime(q.ts) || 0, toTime(entry.bar && entry.bar.start) || 0,
        ...Object.values(entry.sentiment).map((x) => toTime(x.ts) || 0));
      if (latest > 0) parts.root.setAttribute("data-updated", String(latest));
      if (delayed) setText(parts.delayed, delayLabel(q.delay_seconds));
      renderBar(parts.bar, entry.bar);
      renderSpark(parts.spark, entry.spark);
      const book = [isNum(q.bid) && isNum(q.ask) ? `bid ${fmtPrice(q.bid)} / ask ${fmtPrice(q.ask)}` : "",
        entry.range ? `day ${fmtPrice(entry.range[0])}–${fmtPrice(entry.range[1])}` : ""].filter(Boolean).join(" · ");
      parts.book.hidden = !book;
      if (book) setText(parts.book, book);
      renderCrowd(parts.crowd, entry.sentiment.stocktwits);
      renderKnowsis(parts.knowsis, entry.sentiment.knowsis);
      renderNews(parts.news, entry.news);
    }
  }

  /* ---------- snapshot ---------- */
  function goToLogin() {
    stopped = true;
    if (live) live.stop();
    location.assign(loginUrl + "?next=" + encodeURIComponent(location.pathname + location.search));
  }

  async function fetchSnapshot(signal) {
    const res = await fetch(snapshotUrl, { credentials: "same-origin", headers: { Accept: "application/json" }, signal });
    const loginPath = new URL(loginUrl, location.href).pathname;
    if (res.status === 401 || res.status === 403 || (res.redirected && new URL(res.url).pathname === loginPath)) {
      goToLogin();
      throw new Error("not authenticated");
    }
    if (!res.ok) throw new Error("snapshot HTTP " + res.status);
    return res.json();
  }

  function applySnapshot(data) {
    const watchlists = Array.isArray(data && data.watchlists) ? data.watchlists : [];
    const ids = new Set();
    for (const inst of watchlists.flatMap((w) => w.instruments || [])) {
      ids.add(inst.id);
      if (!model.has(inst.id)) model.set(inst.id, { quote: null, news: [], bar: null, spark: [], sentiment: {} });
      mergeQuote(inst.id, inst.quote);
      model.get(inst.id).spark = (inst.spark || []).slice(-SPARK_POINTS);
      model.get(inst.id).bar = inst.bar || null;
      model.get(inst.id).range = inst.day_range || null;
      for (const sample of Object.values(inst.sentiment || {})) mergeSentiment(inst.id, sample);
      mergeNews(inst.id, inst.news || []);
    }
    for (const id of [...model.keys()]) if (!ids.has(id)) model.delete(id);
    document.dispatchEvent(new CustomEvent("tickerwire:snapshot"));
    const key = JSON.stringify(watchlists.map((w) => [w.id, w.name, w.team && w.team.name,
      w.role, (w.instruments || []).map((i) => [i.id, i.symbol, i.name, i.exchange])]));
    if (key !== structureKey) {
      structureKey = key;
      rows.clear();
      listsEl.replaceChildren(...watchlists.map(buildSection));
    }
    watchlistIds = watchlists.map((w) => w.id);
    window.TickerwireAlerts.apply(data.alerts);
    emptyEl.hidden = watchlists.length > 0;
    noteEl.hidden = true;
    ids.forEach(markDirty);
  }

  // reuse=true joins a fetch already in flight; responses are applied in request order only.
  let pendingSnapshot = null, fetchSeq = 0, appliedSeq = 0, loaded = false;
  function refreshSnapshot(reuse, signal) {
    if (reuse && pendingSnapshot) return pendingSnapshot;
    const seq = ++fetchSeq;
    const p = fetchSnapshot(signal).then((data) => {
      if (seq > appliedSeq) { appliedSeq = seq; applySnapshot(data); loaded = true; }
    });
    const clear = () => { if (pendingSnapshot === p) pendingSnapshot = null; };
    p.then(clear, clear);
    return (pendingSnapshot = p);
  }

  /* ---------- server messages ---------- */
  const EVENT_HANDLERS = { // return true when the row needs re-rendering
    quote: (ev) => mergeQuote(ev.instrument_id, ev),
    news: (ev) => mergeNews(ev.instrument_id, [ev]),
    bar: (ev) => mergeBar(ev.instrument_id, ev),
    sentiment: (ev) => mergeSentiment(ev.instrument_id, ev),
    alert: (ev) => window.TickerwireAlerts.add(ev),
    alert_revoked: (ev) => window.TickerwireAlerts.revoke(ev),
  };

  function onEvent(msg) { // once each, in order (live.js)
    const ev = msg.event, handler = ev && EVENT_HANDLERS[ev.kind];
    if (handler && handler(ev)) markDirty(ev.instrument_id);
  }

  const MESSAGE_HANDLERS = {
    watching: (msg) => console.debug("watching", msg.watchlists, msg.instruments),
    error: (msg) => console.warn("server error:", msg.error, msg.detail),
    revoked: (msg) => { if (msg.reason) showAccess(String(msg.reason)); }, // live.js then resyncs
    watchlist_changed: () => live.resync(), // a teammate added or removed an instrument: the structure changed
    access_ended: () => {}, // live.js keeps the reason for the close that follows
    pong: () => {},
  };

  function onMessage(msg) {
    const handler = MESSAGE_HANDLERS[msg.type];
    if (handler) handler(msg);
  }

  /* ---------- connection ---------- */
  // The watch request needs the watchlist ids, which only a snapshot gives: the first one joins the
  // page load's fetch. Snapshots taken for live.js are fresh (never one started before the subscription);
  // if one shows other watchlists than were requested, the page watches again. A failure rejects:
  // live.js closes the socket and reconnects with its backoff.
  let requested = "";
  async function watchRequest() {
    if (!loaded) await refreshSnapshot(true);
    requested = JSON.stringify(watchlistIds);
    return { watchlists: watchlistIds };
  }

  async function loadSnapshot(streams, signal) {
    await refreshSnapshot(false, signal);
    if (JSON.stringify(watchlistIds) !== requested) live.rewatch();
  }

  /* ---------- access changes ---------- */
  function showAccess(text, withLogin) {
    const parts = [el("span", "access-reason", text)];
    if (withLogin) {
      const link = el("a", "access-login", "Log in again");
      link.setAttribute("href", loginUrl + "?next=" + encodeURIComponent(location.pathname + location.search));
      parts.push(" ", link);
    }
    accessEl.replaceChildren(...parts);
    accessEl.hidden = false;
  }

  // Relative news times age: re-check every row twice a minute (batched; unchanged lists are kept).
  setInterval(() => model.forEach((_, id) => markDirty(id)), 30000);

  refreshSnapshot(false).catch((err) => {
    if (!stopped) noteEl.textContent = "Could not load the board yet; retrying…";
    console.warn("snapshot failed:", err);
  });
  live = window.TickerwireLive.connect({
    wsPath,
    loginUrl,
    watchRequest,
    loadSnapshot,
    onEvent,
    onMessage,
    onEnded: (why) => showAccess(why, true),
    onClose: (opened) => { if (!opened) refreshSnapshot(true).catch(() => {}); }, // refused: session expired? (-> login)
  });
})();
