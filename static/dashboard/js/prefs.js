/*
 * The viewer's settings, read from <body data-*>: times in their chosen time zone (or the
 * browser's), and desktop notifications for the alerts they chose (opt-in: the browser asks
 * for permission from the Settings page's test button). Clicking a notification opens the
 * instrument page, or the alerts inbox for team alerts.
 */
"use strict";
window.TickerwirePrefs = (() => {
  const data = document.body.dataset;
  const zone = data.timeZone || undefined;
  const LEVELS = ["Elevated", "High", "Extreme"];

  function formatTime(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    try { return new Date(t).toLocaleString(undefined, { timeZone: zone, dateStyle: "medium", timeStyle: "short" }); }
    catch (_) { return new Date(t).toLocaleString(); }
  }

  function wanted(alert) {
    if (alert.provider === "knowsis") return data.notifyKnowsis === "1" && alert.level === "high";
    if (alert.provider === "trendspottr") {
      const min = LEVELS.indexOf(data.notifyTrendspottr);
      return min >= 0 && LEVELS.indexOf(alert.level) >= min;
    }
    return alert.provider === "rules";
  }

  function beep() {
    try {
      const ctx = new AudioContext(), osc = ctx.createOscillator();
      osc.connect(ctx.destination); osc.frequency.value = 880; osc.start(); osc.stop(ctx.currentTime + 0.15);
    } catch (_) { /* no audio: the notification itself is enough */ }
  }

  function show(title, body, href) {
    if (!("Notification" in window) || Notification.permission !== "granted") return null;
    const n = new Notification(title, { body, tag: href });
    n.onclick = () => { window.focus(); location.assign(href); };
    if (data.notifySound === "1") beep();
    return n;
  }

  function notify(alert) {
    if (!wanted(alert)) return null;
    const href = alert.instrument_id ? `/instrument/${alert.instrument_id}/` : "/alerts/";
    return show(`${alert.symbol || alert.provider}: ${alert.level || "alert"}`, alert.headline || "", href);
  }

  async function test() {
    if (!("Notification" in window)) return "This browser has no desktop notifications.";
    if (Notification.permission !== "granted" && (await Notification.requestPermission()) !== "granted") {
      return "Notifications are blocked for this site: allow them in the browser's site settings.";
    }
    show("Tickerwire", "Notifications are on.", "/alerts/");
    return "A test notification was sent.";
  }

  return { formatTime, notify, test, wanted };
})();
