/*
 * Alerts panel: Knowsis anomaly alerts for watched instruments and TrendSpottr alerts for the
 * user's teams, newest first. Revoked alerts stay in the list, struck through and labelled.
 * board.js feeds it: apply(snapshotAlerts) after every snapshot, add(event) / revoke(event) live.
 * Provider text only ever goes in through textContent; links only if http(s).
 */
"use strict";
window.TickerwireAlerts = (() => {
  const MAX = 30;
  const byKey = new Map(); // "provider:external_id" -> alert message
  const listEl = () => document.getElementById("alerts-list");
  const key = (a) => a.provider + ":" + a.external_id;

  function safeUrl(raw) {
    try { const u = new URL(raw); return u.protocol === "http:" || u.protocol === "https:" ? u.href : null; }
    catch (_) { return null; }
  }

  function item(a) {
    const li = document.createElement("li");
    li.className = "alert-item" + (a.revoked ? " revoked" : "");
    li.setAttribute("data-alert-id", key(a));
    li.setAttribute("data-level", String(a.level || ""));
    const what = document.createElement("span");
    what.className = "alert-headline";
    what.textContent = (a.symbol ? a.symbol + " · " : "") + (a.headline || "Alert");
    const meta = document.createElement("span");
    meta.className = "alert-meta";
    meta.textContent = [a.provider, a.level, a.revoked ? "revoked" : ""].filter(Boolean).join(" · ");
    li.append(what, meta);
    const href = safeUrl(a.url);
    if (href) {
      const link = document.createElement("a");
      link.textContent = "open";
      link.setAttribute("href", href);
      link.setAttribute("target", "_blank");
      link.setAttribute("rel", "noopener noreferrer");
      li.append(link);
    }
    return li;
  }

  function render() {
    const el = listEl();
    if (!el) return;
    const alerts = [...byKey.values()].sort((a, b) => Date.parse(b.triggered_at) - Date.parse(a.triggered_at)).slice(0, MAX);
    el.replaceChildren(...alerts.map(item));
    el.hidden = alerts.length === 0;
    document.getElementById("alerts-empty").hidden = alerts.length > 0;
    badges();
  }

  function badges() { // on each board row: how many of its alerts are live (not revoked)
    const counts = new Map();
    for (const a of byKey.values()) if (!a.revoked && a.instrument_id) counts.set(a.instrument_id, (counts.get(a.instrument_id) || 0) + 1);
    for (const row of document.querySelectorAll(".instrument[data-instrument-id]")) {
      const n = counts.get(Number(row.getAttribute("data-instrument-id"))) || 0;
      let badge = row.querySelector(".alert-badge");
      if (!badge) {
        badge = document.createElement("span");
        badge.className = "alert-badge";
        row.querySelector(".inst-ident").append(badge);
      }
      badge.hidden = n === 0;
      badge.textContent = n ? "⚑ " + n : "";
      badge.setAttribute("title", n + " live alert" + (n === 1 ? "" : "s"));
    }
  }

  return {
    apply(alerts) { byKey.clear(); for (const a of alerts || []) byKey.set(key(a), a); render(); },
    add(ev) {
      if (!byKey.has(key(ev))) window.TickerwirePrefs.notify(ev); // new and live: maybe a desktop notification
      byKey.set(key(ev), Object.assign({ revoked: false }, byKey.get(key(ev)), ev));
      render();
      return false;
    },
    revoke(ev) { const a = byKey.get(key(ev)); if (a) { a.revoked = true; render(); } return false; },
  };
})();
