/*
 * Feed health (staff): one row per provider account, updated live from the workers' status
 * messages. Messages per minute are derived from the message counter over the last minute.
 * A live state turns "stale" when its worker's heartbeat stops: the server says when
 * (`stale_after`), and the page applies it on its own timer, on the server's clock, since a
 * dead worker pushes nothing.
 */
"use strict";
(() => {
  const root = document.getElementById("health");
  if (!root) return;
  const feeds = new Map(); // provider -> status
  const history = new Map(); // provider -> [[time, messages], ...] over the last minute
  let clockOffset = 0; // server time minus browser time, from the last snapshot

  function shownState(f) {
    return f.stale_after && Date.now() + clockOffset >= Date.parse(f.stale_after) ? "stale" : f.state;
  }

  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    return s < 60 ? s + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }

  function rate(provider) {
    const points = history.get(provider) || [];
    if (points.length < 2) return "—";
    const [t0, m0] = points[0], [t1, m1] = points[points.length - 1];
    // Over at least 5 s of observation, or the first two reports would give a meaningless spike.
    return t1 - t0 >= 5000 ? String(Math.round(((m1 - m0) * 60000) / (t1 - t0))) : "—";
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  // Which process holds the lease and which stand by (feeds/lease.py): one line each.
  function workersCell(workers) {
    const td = cell(workers.length ? "" : "—", "feed-workers");
    for (const w of workers) {
      const line = document.createElement("div");
      line.className = "feed-worker";
      line.setAttribute("data-role", w.role);
      line.textContent = w.identity + " · " + w.role;
      td.append(line);
    }
    return td;
  }

  function render() {
    document.getElementById("feeds").replaceChildren(...[...feeds.values()].map((f) => {
      const tr = document.createElement("tr");
      const state = shownState(f);
      tr.setAttribute("data-provider", f.provider);
      tr.setAttribute("data-state", state);
      const where = [f.cursor ? "cursor " + f.cursor : "", f.subscription_expires_at ? "expires " + f.subscription_expires_at : "",
        Object.keys(f.invalid_codes || {}).length ? "invalid: " + Object.keys(f.invalid_codes).join(", ") : ""].filter(Boolean).join(" · ");
      tr.append(cell(f.provider), cell(state.replace("_", " "), "feed-state"), cell(ago(f.last_message_at)),
        cell(rate(f.provider), "feed-rate"), cell(String(f.messages), "feed-messages"), cell(String(f.reconnects)),
        cell(String(f.parse_errors)), cell(where || "—"), workersCell(f.workers || []),
        cell(f.last_error || "—", "feed-error"));
      return tr;
    }));
  }

  function apply(status) {
    feeds.set(status.provider, status);
    const points = (history.get(status.provider) || []).filter(([t]) => Date.now() - t < 60000);
    points.push([Date.now(), status.messages]);
    history.set(status.provider, points);
  }

  // No watch request: feed_status frames are not sequenced, so live.js loads the snapshot after every open.
  window.TickerwireLive.connect({
    wsPath: root.dataset.wsPath,
    loadSnapshot: async (streams, signal) => {
      const res = await fetch(root.dataset.dataUrl, { credentials: "same-origin", signal });
      if (!res.ok) throw new Error("health HTTP " + res.status);
      const data = await res.json();
      if (data.server_time) clockOffset = Date.parse(data.server_time) - Date.now();
      for (const status of data.feeds) apply(status);
      render();
    },
    onMessage: (msg) => { if (msg.type === "feed_status") { apply(msg.status); render(); } },
  });
  setInterval(render, 5000); // "last message" ages, and silent workers turn stale, with no push
})();
