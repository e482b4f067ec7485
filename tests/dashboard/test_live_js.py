"""The browser's one reconnect loop (static/dashboard/js/live.js), run in Node against a fake
WebSocket: resync on every open, backoff between attempts, and a 44xx close that stops and says
why. The real browser runs the same code in tests/e2e/test_browser_board.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

LIVE_JS = Path(__file__).resolve().parents[2] / "static" / "dashboard" / "js" / "live.js"

HARNESS = r"""
const vm = require("vm"), fs = require("fs");
const sockets = [], log = [];
const status = { attrs: {}, textContent: "", setAttribute(k, v) { this.attrs[k] = v; }, append() {} };
class FakeSocket {
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; this.listeners = {}; sockets.push(this); }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  fire(type, e = {}) { (this.listeners[type] || []).forEach((fn) => fn(e)); }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { if (this.readyState === 3) return; this.readyState = 3; this.fire("close", { code: 1005, reason: "" }); }
  open() { this.readyState = 1; this.fire("open"); }
  serverClose(code, reason = "") { this.readyState = 3; this.fire("close", { code, reason }); }
  message(obj) { this.fire("message", { data: JSON.stringify(obj) }); }
}
FakeSocket.OPEN = 1;
const context = {
  window: {}, console, Promise, JSON, Math: Object.create(Math), Date, setTimeout, clearTimeout, setInterval,
  clearInterval, encodeURIComponent, WebSocket: FakeSocket,
  location: { protocol: "http:", host: "desk.test", pathname: "/", search: "" },
  document: { getElementById: (id) => (id === "conn-status" ? status : null), createElement: () => ({ setAttribute() {} }) },
  fetch: async () => ({ ok: false }),
};
context.Math.random = () => 0.5;
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[process.argv.length - 1], "utf8"), context);
const Live = context.window.TickerwireLive;
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const out = {};
  out.delays = [0, 1, 2, 6, 7, 20].map((n) => Live.backoffDelay(n, 1));
  let opens = 0, revokes = 0, ended = null;
  Live.connect({
    wsPath: "/ws/stream/",
    onOpen: async (send) => { opens++; send({ type: "watch" }); },
    onRevoked: async () => { revokes++; },
    onEnded: (why, loginUrl) => { ended = [why, loginUrl]; },
    loginUrl: "/login/",
  });
  out.first_state = status.attrs["data-state"];
  sockets[0].open(); await tick();
  out.live_state = status.attrs["data-state"];
  out.first_sent = sockets[0].sent;
  sockets[0].serverClose(1006); out.after_drop = status.attrs["data-state"];
  await tick(300);  // 0.5 * 500 ms jitter for attempt 0
  out.sockets_after_retry = sockets.length;
  sockets[1].open(); await tick();
  sockets[1].message({ type: "revoked", reason: "changed" }); await tick();
  out.opens = opens; out.revokes = revokes;
  sockets[1].message({ type: "access_ended", reason: "Your access changed: this account was deactivated." });
  sockets[1].serverClose(4403);
  out.ended_state = status.attrs["data-state"];
  await tick(1200);  // the probe (fetch says no session) then gives up
  out.ended = ended;
  await tick(600);
  out.sockets_at_end = sockets.length;
  console.log(JSON.stringify(out));
})();
"""


@pytest.fixture(scope="module")
def run():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, "-e", HARNESS, str(LIVE_JS)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_backoff_is_full_jitter_doubling_from_half_a_second_capped_at_30_s(run):
    assert run["delays"] == [500, 1000, 2000, 30000, 30000, 30000]


def test_every_open_resyncs_before_showing_live(run):
    assert run["first_state"] == "connecting" and run["live_state"] == "live"
    assert run["first_sent"] == [{"type": "watch"}]
    assert run["opens"] == 2  # after the reconnect too


def test_a_drop_shows_reconnecting_and_reconnects_after_the_backoff(run):
    assert run["after_drop"] == "reconnecting" and run["sockets_after_retry"] == 2


def test_revoked_runs_the_pages_resync(run):
    assert run["revokes"] == 1


def test_a_4403_close_stops_reconnecting_and_says_why(run):
    assert run["ended_state"] == "ended"
    assert run["ended"] == ["Your access changed: this account was deactivated.", "/login/"]
    assert run["sockets_at_end"] == 2  # no new socket after a close for an auth reason
