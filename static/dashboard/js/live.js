/*
 * The one reconnecting WebSocket every page uses (board, instrument, inbox, health): the browser's
 * half of the reconnect policy (the workers' half is feeds/transports/reconnect.py).
 *
 * - Backoff: full jitter, 0.5 s doubling, 30 s cap; reset only after 30 s connected, never at a
 *   handshake (a server that accepts then closes sees growing delays, not a storm).
 * - Heartbeat: a ping every 25 s; a socket silent for over 2 pings + 10 s is recycled (browsers
 *   expose no WebSocket ping, so a half-open link is only seen this way).
 * - Resync: after every open, the page's onOpen(send) reloads its snapshot and re-sends its watch
 *   request (messages missed while disconnected are not replayed); "live" is shown once it resolved,
 *   a failure closes the socket (and the backoff applies). A "revoked" message (the user's access
 *   changed) runs onRevoked(send, msg), by default onOpen again.
 * - Access ended: a close for an auth reason (44xx, dashboard/consumers.py ACCESS_ENDED) is never
 *   retried blindly. After a second (so a response carrying a rotated session cookie can land) the
 *   page is probed: if this browser still logs in it reconnects, else it stops and says why, via
 *   onEnded(why, loginUrl) or, by default, in #conn-status with a link to log in.
 * - #conn-status[data-state]: connecting, live, reconnecting, ended.
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

  function connect({ wsPath, onOpen, onMessage = () => {}, onRevoked = null, onEnded = null, onClose = null,
    loginUrl = "/login/" }) {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + wsPath;
    let socket = null, attempt = 0, stopped = false, retryTimer = null, endedReason = "", authCloses = 0;
    let current = null; // {send, resync} bound to the open socket

    function open() {
      const sock = new WebSocket(url);
      let opened = false, lastSeen = Date.now(), pingTimer = null, stableTimer = null;
      socket = sock;
      // Only the current socket's events count (an old one may still be closing).
      const mine = (fn) => (e) => { if (sock === socket) fn(e); };
      const send = (msg) => sock === socket && sock.readyState === WebSocket.OPEN && sock.send(JSON.stringify(msg));
      const resync = (run) => Promise.resolve().then(run).catch((err) => {
        if (stopped) return;
        console.warn("resync failed:", err);
        sock.close(); // reconnect through the backoff
      });

      sock.addEventListener("open", mine(() => {
        opened = true;
        current = { send, resync: (run) => resync(() => run(send)) };
        lastSeen = Date.now();
        stableTimer = setTimeout(() => { attempt = 0; }, STABLE_MS);
        pingTimer = setInterval(() => {
          if (Date.now() - lastSeen > 2 * PING_MS + 10000) sock.close(); // silent socket: recycle it
          else send({ type: "ping" });
        }, PING_MS);
        resync(() => onOpen(send)).then(() => { if (sock === socket && sock.readyState === WebSocket.OPEN) setState("live"); });
      }));
      sock.addEventListener("message", mine((e) => {
        lastSeen = Date.now();
        let msg;
        try { msg = JSON.parse(e.data); } catch (_) { console.warn("unparseable message", e.data); return; }
        if (msg.type === "access_ended") endedReason = String(msg.reason || ""); // the close follows
        if (msg.type === "revoked") resync(() => (onRevoked || ((s) => onOpen(s)))(send, msg));
        onMessage(msg);
      }));
      sock.addEventListener("error", mine(() => { if (!stopped) setState("reconnecting"); }));
      sock.addEventListener("close", mine((e) => {
        socket = null;
        current = null;
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
      if (socket) socket.close();
    }

    setState("connecting");
    open();
    return {
      stop,
      send: (msg) => current && current.send(msg),
      // Run run(send) on the open socket now (e.g. a fresh snapshot and watch); a failure reconnects.
      resync: (run) => (current ? current.resync(run) : Promise.resolve()),
    };
  }

  return { connect, backoffDelay, loginHref };
})();
