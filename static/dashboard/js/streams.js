/*
 * Exact resync (issue 11): where the page stands in every stream its socket receives, and the order in
 * which it sees their events. No I/O here: live.js hands over the open socket's `send` and its frames;
 * the page gives watchRequest, loadSnapshot and onEvent (see live.js).
 *
 * The protocol (dashboard/consumers.py): an event frame names its stream, the stream's epoch and a seq
 * growing by 1 per event. The answer to a watch request, "watching", lists every stream the socket now
 * receives with its position (epoch, seq) when the subscription took effect, and per stream:
 *   recovered=true   the events after our `since` follow the answer, in order, before any live event;
 *   recovered=false  the page snapshots now (after subscribing): events up to the position are in the
 *                    snapshot and dropped here; later ones may be too, so pages apply idempotently.
 * "skip" names seqs left out on purpose (a newer quote or bar superseded them): applied, not a gap.
 * "gap" says a slow socket's queue dropped events up to a seq: recovered like a seq jump.
 *
 * Frames wait in `queue` while a watch request is unanswered or the snapshot loads, then apply in
 * order. An event past applied + 1 not covered by a skip (a gap), an epoch change (the server's history
 * was reset) or a stream no answer listed sends the watch request again, with `since`; what is queued
 * meanwhile and covered by the answer's position is dropped (recovery or the snapshot brings it).
 */
"use strict";
window.TickerwireStreams = (() => {
  const MAX_QUEUED = 5000; // a snapshot this far behind is cheaper to retake than to catch up with
  const ANSWER_MS = 30000; // a watch request unanswered this long: the socket is recycled, never left queueing
  const idle = async () => {};

  function createSync({ watchRequest = null, loadSnapshot = idle, onEvent = () => {}, onSynced = () => {},
    onFailed = () => {} } = {}) {
    const positions = new Map(); // stream -> {epoch, seq: last seq applied or accounted for, skipped: Set}
    const needSnapshot = new Set(); // streams answered recovered=false, until a snapshot has loaded
    const strays = new Set(); // streams no answer listed whose events already asked for a re-watch
    let forceSnapshot = true; // the page has no snapshot taken under a subscription yet
    let link = null; // {send, abort} of the open socket, null while disconnected
    let awaiting = 0, asked = 0, answered = 0, loading = false, synced = false, queue = [];
    let snapshots = Promise.resolve(); // loads run one after another: an old one never lands last

    function since() {
      const out = {};
      for (const [name, pos] of positions) if (!needSnapshot.has(name)) out[name] = { epoch: pos.epoch, seq: pos.seq };
      return out;
    }

    // Send the page's watch request with `since` for every stream whose position holds.
    async function watch() {
      const current = link;
      if (!current || !watchRequest) return;
      awaiting++; // from now on frames queue until the answer
      try {
        const request = await watchRequest();
        if (link !== current) return; // that socket closed meanwhile
        const from = since(), n = ++asked;
        current.send({ type: "watch", ...request, ...(Object.keys(from).length ? { since: from } : {}) });
        setTimeout(() => { if (link === current && answered < n) onFailed(new Error("no answer to watch")); }, ANSWER_MS);
      } catch (err) {
        if (link === current) onFailed(err);
      }
    }

    function watching(msg) {
      awaiting = Math.max(0, awaiting - 1);
      answered++;
      const listed = msg.streams && typeof msg.streams === "object" ? msg.streams : null;
      if (!listed) forceSnapshot = true; // a server that gives no positions: snapshot every time
      else {
        for (const name of [...positions.keys()]) if (!(name in listed)) { positions.delete(name); needSnapshot.delete(name); }
        for (const [name, at] of Object.entries(listed)) {
          strays.delete(name);
          const pos = positions.get(name);
          if (at.recovered && pos && pos.epoch === at.epoch && !needSnapshot.has(name)) continue; // the missed events follow
          positions.set(name, { epoch: at.epoch, seq: at.seq, skipped: new Set() });
          needSnapshot.add(name);
        }
        // Queued before this answer, so sent before it: up to its position, recovery or the snapshot has it.
        queue = queue.filter((m) => {
          if (typeof m.stream !== "string") return true;
          const at = listed[m.stream];
          if (!at) return false;
          if (m.type === "skip") return (m.seqs || []).some((s) => s > at.seq);
          return m.epoch === at.epoch && m.seq > at.seq;
        });
      }
      settle();
    }

    // Once nothing is outstanding: the snapshot if one is due, else apply what queued.
    function settle() {
      if (awaiting || loading || !link) return;
      if (forceSnapshot || needSnapshot.size) { snapshot(); return; }
      drain();
      if (!awaiting && !loading && !synced) { synced = true; onSynced(); }
    }

    function snapshot() {
      const current = link, streams = [...needSnapshot], forced = forceSnapshot;
      loading = true;
      forceSnapshot = false;
      snapshots = snapshots.then(() => (link === current ? loadSnapshot(streams, current.abort.signal) : undefined))
        .then(() => {
          if (link !== current) { forceSnapshot ||= forced; return; } // closed meanwhile: the next open redoes it
          loading = false;
          streams.forEach((name) => needSnapshot.delete(name));
          settle();
        }, (err) => {
          forceSnapshot ||= forced;
          if (link === current) { loading = false; onFailed(err); }
        });
    }

    function drain() {
      let done = 0;
      while (done < queue.length && !awaiting && !loading && link) {
        if (!step(queue[done])) break; // a re-watch went out: the rest waits for its answer
        done++;
      }
      queue = queue.slice(done);
    }

    // Apply one frame in order; false if it cannot be yet (a re-watch was sent).
    function step(msg) {
      if (typeof msg.stream !== "string") { onEvent(msg); return true; } // unsequenced: from an older server
      const pos = positions.get(msg.stream);
      if (!pos) { // no answer listed it: ask once, then drop its frames until one does
        if (strays.has(msg.stream)) return true;
        strays.add(msg.stream);
        watch();
        return false;
      }
      if (msg.type === "gap") { // a slow socket's queue dropped events up to msg.seq: recover them
        if (msg.seq <= pos.seq) return true;
        watch();
        return false;
      }
      if (msg.type === "skip") {
        for (const s of msg.seqs || []) if (s > pos.seq) pos.skipped.add(s);
        while (pos.skipped.delete(pos.seq + 1)) pos.seq++;
        return true;
      }
      if (msg.epoch !== pos.epoch) { positions.delete(msg.stream); watch(); return false; } // history reset: snapshot
      if (msg.seq <= pos.seq) return true; // a duplicate
      while (pos.skipped.delete(pos.seq + 1)) pos.seq++;
      if (msg.seq !== pos.seq + 1) { watch(); return false; } // a gap: recover from the server's history
      pos.seq = msg.seq;
      onEvent(msg);
      return true;
    }

    function receive(msg) { // true if the frame was the sync's to handle
      if (msg.type !== "event" && msg.type !== "skip" && msg.type !== "gap" && msg.type !== "watching") return false;
      if (!watchRequest || !link) return true; // a page that watches nothing (or a closed socket)
      if (msg.type === "watching") { watching(msg); return true; }
      queue.push(msg);
      if (queue.length > MAX_QUEUED) { queue = []; resync(); return true; }
      if (!awaiting && !loading) drain();
      return true;
    }

    function open(send) { // a socket opened: subscribe again (with since), or just snapshot
      close();
      link = { send, abort: new AbortController() };
      if (watchRequest) watch();
      else { forceSnapshot = true; settle(); }
    }

    function close() { // the socket went: what was queued comes back through recovery
      if (link) link.abort.abort();
      link = null;
      queue = [];
      awaiting = asked = answered = 0;
      loading = synced = false;
    }

    function resync() { // forget every position: the next answer recovers nothing, the page snapshots
      positions.clear();
      needSnapshot.clear();
      forceSnapshot = true;
      if (link && !watchRequest) settle();
      else watch();
    }

    return {
      open, close, receive, resync,
      rewatch: watch, // the page's watch request changed (positions are kept)
      positions: () => Object.fromEntries([...positions].map(([n, p]) => [n, { epoch: p.epoch, seq: p.seq }])),
    };
  }

  return { createSync };
})();
