/*
 * The one reconnecting WebSocket every page uses (board, instrument, inbox, health): the browser's
 * half of the reconnect policy (the workers' half is feeds/transports/reconnect.py).
 *
 * - Backoff: full jitter, 0.5 s doubling, 30 s cap; reset only after 30 s connected, never at a
 *   handshake (a server that accepts then closes sees growing delays, not a storm).
 * - Heartbeat: a ping every 25 s; a socket silent for over 2 pings + 10 s is recycled (browsers
 *   expose no WebSocket ping, so a half-open link is only seen this way).
 * - Exact resync (streams.js): after every open the page's watch request goes out with the position
 *   of every stream it holds; the server replays what was missed from its history, and only a stream
 *   it cannot recover makes the page take its HTTP snapshot (after subscribing, never before). Events
 *   reach onEvent once each, in order, never while a snapshot loads. "live" is shown once the first
 *   answer (and snapshot) after an open is applied; a failure closes the socket (the backoff applies).
 *   A "revoked" message (the user's access changed) forgets every position: watch again, snapshot.
 * - Access ended: a close for an auth reason (44xx, dashboard/consumers.py ACCESS_ENDED) is never
 *   retried blindly. After a second (so a response carrying a rotated session cookie can land) the
 *   page is probed: if this browser still logs in it reconnects, else it stops and says why, via
 *   onEnded(why, loginUrl) or, by default, in #conn-status with a link to log in.
 * - #conn-status[data-state]: connecting, live, reconnecting, ended.
 *
 * connect({wsPath, watchRequest, loadSnapshot, onEvent, onMessage, onEnded, onClose, loginUrl}):
 *   watchRequest()  -> {watchlists, instruments} (or a promise of it), asked before every watch; a page
 *                      without one watches nothing and snapshots after every open (health).
 *   loadSnapshot(streams, signal) -> promise: fetch and apply the HTTP snapshot; `streams` names those not
 *                      recovered (informational), `signal` aborts when the socket closes. Always run once
 *                      after the first open.
 *   onEvent(msg)    -> each {"type": "event"} frame, exactly once, in stream order.
 *   onMessage(msg)  -> every other frame (feed_status, watchlist_changed, revoked, error, watching...).
 * returns {stop, send, rewatch (the watch request changed), resync (forget positions: watch, snapshot)}.
 */
"use strict";
window.TickerwireLive = (() => {
  const TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", ended: "Disconnected" };
  const BASE_MS = 500, MAX_BACKOFF_MS = 30000, STABLE_MS = 30000, PING_MS = 25000;
  const AUTH_PROBE_DELAY_MS = 1000, MAX_AUTH_CLOSES = 3;

  function loginHref(loginUrl) {
    return loginUrl + "?next=" + encodeURIComponent(location.pathname + location.search);
  }

  function setState(state, reason, loginUrl) {
    const el = document.getElementById("conn-status");
    if (!el) return;
    el.setAttribute("data-state", state);
    el.textContent = reason || TEXT[state];
    if (loginUrl) {
      const link = document.createElement("a");
      link.textContent = "Log in again";
      link.setAttribute("href", loginHref(loginUrl));
      el.append(link);
    }
  }

  // Pure: the delay before reconnect attempt `attempt` (0-based), given a uniform random in [0, 1).
  const backoffDelay = (attempt, random) => random * Math.min(MAX_BACKOFF_MS, BASE_MS * 2 ** attempt);

  function connect({ wsPath, watchRequest = null, loadSnapshot = async () => {}, onEvent = () => {},
    onMessage = () => {}, onEnded = null, onClose = null, loginUrl = "/login/" }) {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + wsPath;
    let socket = null, attempt = 0, stopped = false, retryTimer = null, endedReason = "", authCloses = 0;
    let current = null; // {send} bound to the open socket

    const sync = window.TickerwireStreams.createSync({
      watchRequest, loadSnapshot, onEvent,
      onSynced: () => { if (current) setState("live"); },
      onFailed: (err) => {
        if (stopped) return;
        console.warn("resync failed:", err);
        if (socket) socket.close(); // reconnect through the backoff
      },
    });

    function open() {
      const sock = new WebSocket(url);
      let opened = false, lastSeen = Date.now(), pingTimer = null, stableTimer = null;
      socket = sock;
      // Only the current socket's events count (an old one may still be closing).
      const mine = (fn) => (e) => { if (sock === socket) fn(e); };
      const send = (msg) => sock === socket && sock.readyState === WebSocket.OPEN && sock.send(JSON.stringify(msg));

      sock.addEventListener("open", mine(() => {
        opened = true;
        current = { send };
        lastSeen = Date.now();
        stableTimer = setTimeout(() => { attempt = 0; }, STABLE_MS);
        pingTimer = setInterval(() => {
          if (Date.now() - lastSeen > 2 * PING_MS + 10000) sock.close(); // silent socket: recycle it
          else send({ type: "ping" });
        }, PING_MS);
        sync.open(send);
      }));
      sock.addEventListener("message", mine((e) => {
        lastSeen = Date.now();
        let msg;
        try { msg = JSON.parse(e.data); } catch (_) { console.warn("unparseable message", e.data); return; }
        if (!msg || typeof msg !== "object") return;
        if (msg.type === "access_ended") endedReason = String(msg.reason || ""); // the close follows
        if (msg.type === "revoked") sync.resync(); // what this user may watch changed
        sync.receive(msg);
        if (msg.type !== "event") onMessage(msg);
      }));
      sock.addEventListener("error", mine(() => { if (!stopped) setState("reconnecting"); }));
      sock.addEventListener("close", mine((e) => {
        socket = null;
        current = null;
        sync.close();
        clearInterval(pingTimer);
        clearTimeout(stableTimer);
        if (stopped) return;
        if (e.code >= 4400 && e.code < 4500) { accessEnded(e.code, endedReason || e.reason); return; }
        setState("reconnecting");
        if (onClose) onClose(opened);
        scheduleRetry();
      }));
    }

    function scheduleRetry() {
      if (retryTimer) return;
      const delay = backoffDelay(attempt++, Math.random());
      retryTimer = setTimeout(() => { retryTimer = null; if (!stopped) open(); }, delay);
    }

    // The session this socket was opened with no longer logs in: probe the page (this browser may
    // have a new session, e.g. after changing its own password: Django rotates the key).
    function accessEnded(code, reason) {
      const why = reason || (code === 4403 ? "Your access changed: this account was deactivated." : "Signed out.");
      const giveUp = () => { stopped = true; if (onEnded) onEnded(why, loginUrl); else setState("ended", why, loginUrl); };
      endedReason = "";
      stopped = true; // until the probe says otherwise: nothing reconnects meanwhile
      setState("ended");
      if (++authCloses > MAX_AUTH_CLOSES) return giveUp();
      setTimeout(() => fetch(location.pathname + location.search,
        { credentials: "same-origin", redirect: "manual", cache: "no-store" })
        .then((res) => {
          if (!res.ok) return giveUp();
          stopped = false;
          setState("reconnecting");
          open();
        }, giveUp),
      AUTH_PROBE_DELAY_MS);
    }

    function stop() { // the page is leaving (e.g. to the login page): no reconnect
      stopped = true;
      clearTimeout(retryTimer);
      sync.close();
      if (socket) socket.close();
    }

    setState("connecting");
    open();
    return {
      stop,
      send: (msg) => current && current.send(msg),
      rewatch: () => sync.rewatch(), // the page's watch request changed: send it again (positions kept)
      resync: () => sync.resync(), // e.g. a teammate changed a watchlist: watch again and snapshot
      positions: () => sync.positions(),
    };
  }

  return { connect, backoffDelay, loginHref };
})();
