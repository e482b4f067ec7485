/*
 * A reconnecting WebSocket to /ws/stream/ for pages other than the board: full-jitter backoff
 * (0.5 s doubling, 30 s cap, reset after 30 s connected), a ping every 25 s, and the
 * #conn-status indicator. The page's onOpen(send) must reload its snapshot and re-send its
 * watch request: messages missed while disconnected are not replayed by the server.
 */
"use strict";
window.TickerwireLive = (() => {
  const TEXT = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

  function setState(state) {
    const el = document.getElementById("conn-status");
    if (!el) return;
    el.setAttribute("data-state", state);
    el.textContent = TEXT[state];
  }

  function connect({ wsPath, onOpen, onMessage }) {
    let attempt = 0, socket = null, ping = null, stable = null;
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
        onMessage(msg);
      });
      socket.addEventListener("close", () => {
        clearInterval(ping); clearTimeout(stable);
        setState("reconnecting");
        const delay = Math.random() * Math.min(30000, 500 * 2 ** attempt++);
        setTimeout(open, delay);
      });
    }
    setState("connecting");
    open();
  }

  return { connect };
})();
