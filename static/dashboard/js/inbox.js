/*
 * Alerts inbox: every alert for the user's teams across providers, live, with filters
 * (credible only, level at least High, provider, instrument, unacknowledged) and acknowledge.
 * Revoked alerts stay, struck through. Provider text only through textContent.
 */
"use strict";
(() => {
  const root = document.getElementById("inbox");
  if (!root) return;
  const alerts = new Map(); // "provider:external_id" -> alert
  const filters = document.getElementById("inbox-filters");
  const key = (a) => a.provider + ":" + a.external_id;
  const CREDIBLE = new Set(["high"]);
  const AT_LEAST_HIGH = new Set(["high", "High", "Extreme"]);
  const csrf = () => (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";

  async function acknowledge(a) {
    const res = await fetch("/api/alerts/ack/", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ provider: a.provider, external_id: a.external_id }),
    });
    if (res.ok) { a.acknowledged = true; render(); }
  }

  function item(a) {
    const li = document.createElement("li");
    li.className = "alert-item" + (a.revoked ? " revoked" : "") + (a.acknowledged ? " acknowledged" : "");
    li.setAttribute("data-alert-id", key(a));
    const what = document.createElement("span");
    what.className = "alert-headline";
    what.textContent = (a.symbol ? a.symbol + " · " : "") + (a.headline || "Alert");
    const meta = document.createElement("span");
    meta.className = "alert-meta";
    meta.textContent = [window.TickerwirePrefs.formatTime(a.triggered_at), a.provider, a.level, a.revoked ? "revoked" : "",
      a.acknowledged ? "acknowledged" : ""].filter(Boolean).join(" · ");
    li.append(what, meta);
    if (!a.acknowledged) {
      const ack = document.createElement("button");
      ack.type = "button";
      ack.className = "ack";
      ack.textContent = "Acknowledge";
      ack.addEventListener("click", () => acknowledge(a));
      li.append(ack);
    }
    return li;
  }

  function render() {
    const f = Object.fromEntries(new FormData(filters));
    const symbols = new Set([...alerts.values()].map((a) => a.symbol).filter(Boolean));
    const select = filters.elements.symbol, current = select.value;
    select.replaceChildren(new Option("all", ""), ...[...symbols].sort().map((s) => new Option(s, s)));
    select.value = current;
    const shown = [...alerts.values()]
      .filter((a) => (!f.credible || a.provider !== "knowsis" || CREDIBLE.has(a.level))
        && (!f.high || AT_LEAST_HIGH.has(a.level)) && (!f.provider || a.provider === f.provider)
        && (!f.symbol || a.symbol === f.symbol) && (!f.unacked || !a.acknowledged))
      .sort((a, b) => Date.parse(b.triggered_at) - Date.parse(a.triggered_at));
    document.getElementById("inbox-list").replaceChildren(...shown.map(item));
    document.getElementById("inbox-empty").hidden = shown.length > 0;
  }
  filters.addEventListener("input", render);

  // The watch request needs the watchlist ids, which only the inbox data gives: the first request
  // loads it once; live.js then loads it again after subscribing (and after a reconnect the server
  // could not fully replay). If the ids changed meanwhile, the page watches again.
  let watchlists = null, requested = "", live = null;
  async function load(signal) {
    const res = await fetch(root.dataset.dataUrl, { credentials: "same-origin", signal });
    if (!res.ok) throw new Error("inbox HTTP " + res.status);
    const data = await res.json();
    alerts.clear();
    for (const a of data.alerts) alerts.set(key(a), a);
    render();
    watchlists = data.watchlists;
  }

  live = window.TickerwireLive.connect({
    wsPath: root.dataset.wsPath,
    watchRequest: async () => {
      if (!watchlists) await load();
      requested = JSON.stringify(watchlists);
      return { watchlists };
    },
    loadSnapshot: async (streams, signal) => {
      await load(signal);
      if (JSON.stringify(watchlists) !== requested) live.rewatch();
    },
    onEvent: (msg) => {
      const ev = msg.event;
      if (!ev) return;
      if (ev.kind === "alert") { alerts.set(key(ev), Object.assign({ revoked: false, acknowledged: false }, alerts.get(key(ev)), ev)); render(); }
      if (ev.kind === "alert_revoked" && alerts.has(key(ev))) { alerts.get(key(ev)).revoked = true; render(); }
    },
  });
})();
