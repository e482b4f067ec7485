"""The browser's one reconnect loop (static/dashboard/js/live.js) and its exact resync
(static/dashboard/js/streams.js), run in Node against a fake WebSocket: backoff between attempts, a
44xx close that stops and says why, and the stream protocol of issue 11 (subscribe, then snapshot only
what the server could not recover; dedupe, skips, gaps, epochs; events buffered while a snapshot
loads). The real browser runs the same code in tests/e2e/test_browser_board.py and
tests/e2e/test_browser_resync.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "static" / "dashboard" / "js"

PRELUDE = r"""
const vm = require("vm"), fs = require("fs");
const sockets = [];
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
  watches() { return this.sent.filter((m) => m.type === "watch"); }
}
FakeSocket.OPEN = 1;
const context = {
  window: {}, console, Promise, JSON, Math: Object.create(Math), Date, setTimeout, clearTimeout, setInterval,
  clearInterval, encodeURIComponent, WebSocket: FakeSocket, AbortController,
  location: { protocol: "http:", host: "desk.test", pathname: "/", search: "" },
  document: { getElementById: (id) => (id === "conn-status" ? status : null), createElement: () => ({ setAttribute() {} }) },
  fetch: async () => ({ ok: false }),
};
context.Math.random = () => 0.5;
vm.createContext(context);
for (const name of ["streams.js", "live.js"]) vm.runInContext(fs.readFileSync(process.argv[process.argv.length - 1] + "/" + name, "utf8"), context);
const Live = context.window.TickerwireLive;
const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
const state = () => status.attrs["data-state"];

// A page: records what it applies and each snapshot; a snapshot resolves when the test says so
// (page.finish()), unless `instant`.
function makePage({ instant = false, request = { instruments: [7] }, watch = true } = {}) {
  const page = { applied: [], snapshots: [], pending: [] };
  page.finish = async () => { page.pending.shift()(); await tick(); };
  page.live = Live.connect({
    wsPath: "/ws/stream/",
    watchRequest: watch ? () => request : null,
    loadSnapshot: (streams) => {
      page.snapshots.push(streams);
      if (instant) return Promise.resolve();
      return new Promise((resolve) => page.pending.push(resolve));
    },
    onEvent: (msg) => page.applied.push(msg.stream + ":" + msg.seq),
  });
  return page;
}
const ev = (stream, seq, epoch = "e1") => ({ type: "event", stream, epoch, seq, event: { kind: "news", external_id: String(seq) } });
const watching = (streams) => ({ type: "watching", watchlists: [], instruments: [7], streams });
const at = (seq, recovered, epoch = "e1") => ({ epoch, seq, recovered });

(async () => {
  const out = {};
  try {
    await scenario(out);
  } catch (err) {
    out.error = String(err && err.stack || err);
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})();
"""


def run_js(scenario: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = PRELUDE + "\nasync function scenario(out) {\n" + scenario + "\n}\n"
    result = subprocess.run([node, "-e", script, str(JS)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" not in out, out["error"]
    return out


# -- the reconnect loop ------------------------------------------------------------------------------

RECONNECT = r"""
  out.delays = [0, 1, 2, 6, 7, 20].map((n) => Live.backoffDelay(n, 1));
  let snapshots = 0, ended = null;
  Live.connect({
    wsPath: "/ws/stream/",
    watchRequest: () => ({ watchlists: [3] }),
    loadSnapshot: async () => { snapshots++; },
    onEnded: (why, loginUrl) => { ended = [why, loginUrl]; },
    loginUrl: "/login/",
  });
  out.first_state = state();
  sockets[0].open(); await tick();
  out.first_sent = sockets[0].sent;
  out.before_answer = state();
  sockets[0].message(watching({}));
  await tick();
  out.live_state = state();
  sockets[0].serverClose(1006); out.after_drop = state();
  await tick(300);  // 0.5 * 500 ms jitter for attempt 0
  out.sockets_after_retry = sockets.length;
  sockets[1].open(); await tick();
  sockets[1].message(watching({}));
  await tick();
  out.snapshots_after_reconnect = snapshots;
  sockets[1].message({ type: "revoked", reason: "changed" }); await tick();
  sockets[1].message(watching({}));
  await tick();
  out.snapshots_after_revoke = snapshots;
  sockets[1].message({ type: "access_ended", reason: "Your access changed: this account was deactivated." });
  sockets[1].serverClose(4403);
  out.ended_state = state();
  await tick(1200);  // the probe (fetch says no session) then gives up
  out.ended = ended;
  await tick(600);
  out.sockets_at_end = sockets.length;
"""


@pytest.fixture(scope="module")
def run():
    return run_js(RECONNECT)


def test_backoff_is_full_jitter_doubling_from_half_a_second_capped_at_30_s(run):
    assert run["delays"] == [500, 1000, 2000, 30000, 30000, 30000]


def test_every_open_watches_then_shows_live_once_answered(run):
    assert run["first_state"] == "connecting" and run["before_answer"] == "connecting"
    assert run["first_sent"] == [{"type": "watch", "watchlists": [3]}]  # no position yet: no since
    assert run["live_state"] == "live"


def test_a_drop_shows_reconnecting_and_reconnects_after_the_backoff(run):
    assert run["after_drop"] == "reconnecting" and run["sockets_after_retry"] == 2


def test_the_first_answer_snapshots_and_a_reconnect_with_no_stream_lost_does_not(run):
    assert run["snapshots_after_reconnect"] == 1


def test_revoked_forgets_the_positions_and_snapshots_again(run):
    assert run["snapshots_after_revoke"] == 2


def test_a_4403_close_stops_reconnecting_and_says_why(run):
    assert run["ended_state"] == "ended"
    assert run["ended"] == ["Your access changed: this account was deactivated.", "/login/"]
    assert run["sockets_at_end"] == 2  # no new socket after a close for an auth reason


# -- the stream protocol -----------------------------------------------------------------------------

def test_subscribe_then_snapshot_buffering_what_arrives_meanwhile():
    out = run_js(r"""
  const page = makePage();
  sockets[0].open(); await tick();
  out.watch = sockets[0].watches();
  out.snapshots_before_answer = page.snapshots.length;
  sockets[0].message(ev("instrument.7", 5));  // before the answer: queued (and <= its position: dropped)
  sockets[0].message(watching({ "instrument.7": at(5, false), "audience.team-3": at(0, false) }));
  await tick();
  out.snapshot_streams = page.snapshots;
  sockets[0].message(ev("instrument.7", 5));  // in the snapshot already
  sockets[0].message(ev("instrument.7", 6));
  sockets[0].message(ev("audience.team-3", 1));
  sockets[0].message(ev("instrument.7", 7));
  await tick();
  out.applied_while_loading = page.applied.slice();
  out.state_while_loading = state();
  await page.finish();
  out.applied = page.applied.slice();
  out.state = state();
  out.positions = page.live.positions();
  sockets[0].message(ev("instrument.7", 8));
  out.applied_live = page.applied.slice(-1);
""")
    assert out["watch"] == [{"type": "watch", "instruments": [7]}]
    assert out["snapshots_before_answer"] == 0  # subscribe first, then snapshot
    assert out["snapshot_streams"] == [["instrument.7", "audience.team-3"]]
    assert out["applied_while_loading"] == [] and out["state_while_loading"] == "connecting"
    assert out["applied"] == ["instrument.7:6", "audience.team-3:1", "instrument.7:7"]
    assert out["state"] == "live"
    assert out["positions"] == {"instrument.7": {"epoch": "e1", "seq": 7}, "audience.team-3": {"epoch": "e1", "seq": 1}}
    assert out["applied_live"] == ["instrument.7:8"]


LIVE_AT_10 = r"""
  const page = makePage({ instant: true });
  sockets[0].open(); await tick();
  sockets[0].message(watching({ "instrument.7": at(10, false) }));
  await tick();
"""


def test_a_duplicate_is_dropped():
    out = run_js(LIVE_AT_10 + r"""
  for (const seq of [11, 11, 10, 12, 12]) sockets[0].message(ev("instrument.7", seq));
  out.applied = page.applied;
  out.watches = sockets[0].watches().length;
""")
    assert out["applied"] == ["instrument.7:11", "instrument.7:12"]
    assert out["watches"] == 1  # no re-watch for a duplicate


def test_skipped_seqs_count_as_applied_not_as_a_gap():
    out = run_js(LIVE_AT_10 + r"""
  sockets[0].message({ type: "skip", stream: "instrument.7", seqs: [11, 12] });
  sockets[0].message(ev("instrument.7", 13));
  sockets[0].message({ type: "skip", stream: "instrument.7", seqs: [15] });  // ahead of 14: held
  sockets[0].message(ev("instrument.7", 14));
  sockets[0].message(ev("instrument.7", 16));
  out.applied = page.applied;
  out.watches = sockets[0].watches().length;
  out.positions = page.live.positions();
""")
    assert out["applied"] == ["instrument.7:13", "instrument.7:14", "instrument.7:16"]
    assert out["watches"] == 1
    assert out["positions"]["instrument.7"]["seq"] == 16


def test_a_gap_rewatches_with_since_and_recovers_without_a_snapshot():
    out = run_js(LIVE_AT_10 + r"""
  sockets[0].message(ev("instrument.7", 11));
  sockets[0].message(ev("instrument.7", 14));  // 12 and 13 lost
  sockets[0].message(ev("instrument.7", 15));  // queued behind the re-watch
  await tick();
  out.rewatch = sockets[0].watches().slice(1);
  out.applied_before_answer = page.applied.slice();
  sockets[0].message(watching({ "instrument.7": at(15, true) }));
  for (const seq of [12, 13, 14, 15]) sockets[0].message(ev("instrument.7", seq));  // recovered from history
  sockets[0].message(ev("instrument.7", 16));  // live
  await tick();
  out.applied = page.applied;
  out.snapshots = page.snapshots.length;
""")
    assert out["rewatch"] == [{"type": "watch", "instruments": [7], "since": {"instrument.7": {"epoch": "e1", "seq": 11}}}]
    assert out["applied_before_answer"] == ["instrument.7:11"]
    assert out["applied"] == [f"instrument.7:{n}" for n in range(11, 17)]  # each once, in order
    assert out["snapshots"] == 1  # only the first


def test_a_gap_frame_after_the_last_event_recovers_what_a_slow_socket_dropped():
    out = run_js(LIVE_AT_10 + r"""
  sockets[0].message(ev("instrument.7", 11));
  sockets[0].message({ type: "gap", stream: "instrument.7", seq: 11 });  // already applied: nothing to do
  out.watches_after_old_gap = sockets[0].watches().length;
  sockets[0].message({ type: "gap", stream: "instrument.7", seq: 13 });  // 12, 13 dropped, nothing follows
  await tick();
  out.rewatch = sockets[0].watches().slice(1);
  sockets[0].message(watching({ "instrument.7": at(13, true) }));
  for (const seq of [12, 13]) sockets[0].message(ev("instrument.7", seq));
  await tick();
  out.applied = page.applied;
""")
    assert out["watches_after_old_gap"] == 1
    assert out["rewatch"] == [{"type": "watch", "instruments": [7], "since": {"instrument.7": {"epoch": "e1", "seq": 11}}}]
    assert out["applied"] == ["instrument.7:11", "instrument.7:12", "instrument.7:13"]


def test_a_gap_the_server_cannot_recover_snapshots_and_drops_what_the_snapshot_holds():
    out = run_js(r"""
  const page = makePage();
  sockets[0].open(); await tick();
  sockets[0].message(watching({ "instrument.7": at(10, false) }));
  await tick(); await page.finish();
  sockets[0].message(ev("instrument.7", 14));  // a gap
  await tick();
  out.since = sockets[0].watches()[1].since;
  sockets[0].message(watching({ "instrument.7": at(20, false) }));  // history no longer reaches 11
  await tick();
  out.snapshots = page.snapshots;
  for (const seq of [19, 20, 21]) sockets[0].message(ev("instrument.7", seq));
  await page.finish();
  out.applied = page.applied;
""")
    assert out["since"] == {"instrument.7": {"epoch": "e1", "seq": 10}}
    assert out["snapshots"] == [["instrument.7"], ["instrument.7"]]
    assert out["applied"] == ["instrument.7:21"]  # up to 20 in the snapshot


def test_a_reconnect_sends_since_for_every_stream_and_snapshots_only_if_one_is_not_recovered():
    out = run_js(r"""
  const page = makePage({ instant: true });
  sockets[0].open(); await tick();
  sockets[0].message(watching({ "instrument.7": at(10, false), "audience.team-3": at(4, false) }));
  await tick();
  sockets[0].message(ev("instrument.7", 11));
  sockets[0].serverClose(1006);
  await tick(300);
  sockets[1].open(); await tick();
  out.since = sockets[1].watches()[0].since;
  out.state_before_answer = state();
  sockets[1].message(watching({ "instrument.7": at(13, true), "audience.team-3": at(4, true) }));
  for (const seq of [12, 13]) sockets[1].message(ev("instrument.7", seq));
  await tick();
  out.snapshots_after_recovery = page.snapshots.length;
  out.state = state();
  out.applied = page.applied.slice();
  sockets[1].serverClose(1006);
  await tick(600);
  sockets[2].open(); await tick();
  sockets[2].message(watching({ "instrument.7": at(20, true), "audience.team-3": at(9, false) }));
  for (const seq of [14, 15]) sockets[2].message(ev("instrument.7", seq));
  sockets[2].message(ev("audience.team-3", 9));  // in the snapshot
  sockets[2].message(ev("audience.team-3", 10));
  await tick();
  out.second_snapshot = page.snapshots.slice(1);
  out.applied_after = page.applied.slice(out.applied.length);
""")
    assert out["since"] == {"instrument.7": {"epoch": "e1", "seq": 11}, "audience.team-3": {"epoch": "e1", "seq": 4}}
    assert out["state_before_answer"] == "reconnecting"
    assert out["snapshots_after_recovery"] == 1 and out["state"] == "live"
    assert out["applied"] == ["instrument.7:11", "instrument.7:12", "instrument.7:13"]
    assert out["second_snapshot"] == [["audience.team-3"]]
    assert out["applied_after"] == ["instrument.7:14", "instrument.7:15", "audience.team-3:10"]


def test_an_epoch_change_rewatches_without_since_for_that_stream_and_snapshots():
    out = run_js(LIVE_AT_10 + r"""
  sockets[0].message(ev("audience.team-3", 1));  // not listed: asks once
  await tick();
  sockets[0].message(watching({ "instrument.7": at(10, true), "audience.team-3": at(1, false) }));
  await tick();
  sockets[0].message(ev("instrument.7", 11));
  sockets[0].message(ev("instrument.7", 1, "e2"));  // the server's history was reset
  await tick();
  out.rewatch = sockets[0].watches().slice(-1)[0];
  sockets[0].message(watching({ "instrument.7": at(1, false, "e2"), "audience.team-3": at(1, true) }));
  sockets[0].message(ev("instrument.7", 2, "e2"));
  await tick();
  out.snapshots = page.snapshots;
  out.applied = page.applied;
  out.positions = page.live.positions();
""")
    assert out["rewatch"]["since"] == {"audience.team-3": {"epoch": "e1", "seq": 1}}
    assert out["snapshots"] == [["instrument.7"], ["audience.team-3"], ["instrument.7"]]
    assert out["applied"] == ["instrument.7:11", "instrument.7:2"]
    assert out["positions"]["instrument.7"] == {"epoch": "e2", "seq": 2}


def test_a_failed_snapshot_reconnects_and_the_stream_is_not_claimed_recovered():
    out = run_js(r"""
  let fail = true, snapshots = 0;
  Live.connect({
    wsPath: "/ws/stream/", watchRequest: () => ({ instruments: [7] }),
    loadSnapshot: async () => { snapshots++; if (fail) throw new Error("HTTP 502"); },
  });
  sockets[0].open(); await tick();
  sockets[0].message(watching({ "instrument.7": at(10, false) }));
  await tick();
  out.closed = sockets[0].readyState === 3;
  fail = false;
  await tick(300);
  sockets[1].open(); await tick();
  out.since = sockets[1].watches()[0].since || null;
  sockets[1].message(watching({ "instrument.7": at(12, false) }));
  await tick();
  out.snapshots = snapshots;
  out.state = state();
""")
    assert out["closed"] is True
    assert out["since"] is None  # its snapshot never loaded: nothing to recover from
    assert out["snapshots"] == 2 and out["state"] == "live"


def test_a_page_that_watches_nothing_snapshots_after_every_open():
    out = run_js(r"""
  const page = makePage({ instant: true, watch: false });
  sockets[0].open(); await tick();
  out.state = state();
  sockets[0].message(ev("audience.team-3", 1));  // not the page's: ignored
  sockets[0].serverClose(1006);
  await tick(300);
  sockets[1].open(); await tick();
  out.sent = sockets[0].sent.concat(sockets[1].sent);
  out.snapshots = page.snapshots.length;
  out.applied = page.applied;
""")
    assert out["state"] == "live" and out["sent"] == []
    assert out["snapshots"] == 2 and out["applied"] == []


def test_the_page_rewatching_during_a_snapshot_waits_for_the_answer_then_snapshots_new_streams():
    out = run_js(r"""
  const page = makePage();
  sockets[0].open(); await tick();
  sockets[0].message(watching({ "instrument.7": at(3, false) }));
  await tick();
  page.live.rewatch();  // e.g. the snapshot showed another watchlist
  await tick();
  await page.finish();
  out.since = sockets[0].watches()[1].since || null;
  sockets[0].message(ev("instrument.7", 4));
  sockets[0].message(watching({ "instrument.7": at(4, false), "instrument.8": at(0, false) }));
  sockets[0].message(ev("instrument.7", 4));  // in the snapshot
  sockets[0].message(ev("instrument.7", 5));
  await tick();
  out.snapshots = page.snapshots;
  await page.finish();
  out.applied = page.applied;
  out.state = state();
""")
    assert out["since"] is None  # asked while instrument.7's snapshot was loading: not claimed
    assert out["snapshots"] == [["instrument.7"], ["instrument.7", "instrument.8"]]
    assert out["applied"] == ["instrument.7:5"] and out["state"] == "live"


def test_a_watch_request_left_unanswered_recycles_the_socket():
    out = run_js(r"""
  context.setTimeout = (fn, ms) => setTimeout(fn, ms === 30000 ? 20 : ms);  // the answer deadline, shortened
  const page = makePage({ instant: true });
  sockets[0].open(); await tick(50);
  out.closed = sockets[0].readyState === 3;
  out.state = state();
""")
    assert out["closed"] is True and out["state"] == "reconnecting"
