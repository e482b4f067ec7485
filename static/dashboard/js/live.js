/*
 * A reconnecting WebSocket to /ws/stream/ for pages other than the board: full-jitter backoff
 * (0.5 s doubling, 30 s cap, reset after 30 s connected), a ping every 25 s, and the
 * #conn-status indicator. The page's onOpen(send) must reload its snapshot and re-send its
 * watch request: messages missed while disconnected are not replayed by the server; it runs again
 * on "revoked" (the user's access changed). A close for an auth reason (44xx) is not retried blindly:
 * if the page still loads (this browser has a session) it reconnects, else it says why, with a link to
 * log in (dashboard/consumers.py ACCESS_ENDED).
 */
"use strict";
window.TickerwireLive = (() => {
  const TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", ended: "Disconnected" };
  const AUTH_PROBE_DELAY_MS = 1000, MAX_AUTH_CLOSES = 3;

  function setState(state, reason, loginUrl) {
    const el = document.getElementById("conn-status");
    if (!el) return;
    el.setAttribute("data-state", state);
    el.textContent = reason || TEXT[state];
    if (loginUrl) {
      const link = document.createElement("a");
      link.textContent = "Log in again";
      link.setAttribute("href", loginUrl + "?next=" + encodeURIComponent(location.pathname + location.search));
      el.append(link);
    }
  }

  function connect({ wsPath, onOpen, onMessage, loginUrl = "/login/" }) {
    let attempt = 0, socket = null, ping = null, stable = null, endedReason = "", authCloses = 0;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + wsPath;
    const send = (msg) => socket && socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify(msg));

    function open() {
      socket = new WebSocket(url);
      socket.addEventListener("open", async () => {
        stable = setTimeout(() => { attempt = 0; }, 30000);
        ping = setInterval(() => send({ type: "ping" }), 25000);
        try { await onOpen(send); setState("live"); } catch (err) { console.warn(err); socket.close(); }
      });
      socket.addEventListener("message", (e) => {
        let msg;
        try { msg = JSON.parse(e.data); } catch (_) { return; }
        if (msg.type === "access_ended") endedReason = String(msg.reason || ""); // the close follows
        if (msg.type === "revoked") Promise.resolve(onOpen(send)).catch((err) => console.warn(err));
        onMessage(msg);
      });
      socket.addEventListener("close", (e) => {
        clearInterval(ping); clearTimeout(stable);
        if (e.code >= 4400 && e.code < 4500) { accessEnded(e.code, endedReason || e.reason); return; }
        setState("reconnecting");
        const delay = Math.random() * Math.min(30000, 500 * 2 ** attempt++);
        setTimeout(open, delay);
      });
    }
    // The session this socket was opened with no longer logs in: probe the page (this browser may
    // have a new session, e.g. after changing its own password: Django rotates the key), after a second
    // so the response carrying the new cookie can land first.
    function accessEnded(code, reason) {
      const why = reason || (code === 4403 ? "Your access changed: this account was deactivated." : "Signed out.");
      const giveUp = () => setState("ended", why, loginUrl);
      endedReason = "";
      setState("ended");
      if (++authCloses > MAX_AUTH_CLOSES) return giveUp();
      setTimeout(() => fetch(location.pathname + location.search,
        { credentials: "same-origin", redirect: "manual", cache: "no-store" })
        .then((res) => { if (!res.ok) return giveUp(); setState("reconnecting"); open(); }, giveUp),
      AUTH_PROBE_DELAY_MS);
    }

    setState("connecting");
    open();
  }

  return { connect };
})();
