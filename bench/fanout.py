"""Fan-out benchmark: Tickerwire's live path against a raw `websockets` broadcast, same run, same event.

For each N (--clients), each stepped publish rate (--rates, events/s) and each round (--rounds,
interleaved raw, tickerwire, raw, ...), one step:

1. a fresh server: raw (bench/raw_server.py: `websockets` fed by one Redis pub/sub channel) or
   Tickerwire (`python -m daphne ... project.asgi:application`, DEBUG=0, a throw-away copy of a
   migrated and seeded SQLite database, the real Redis with a key prefix of its own);
2. a client process (bench/wsclient.py) opens N logged-in sockets on /ws/stream/ and sends
   `{"type":"watch","watchlists":[id]}`; connect time runs until every "watching" reply is in;
3. 1 s settle, then a publisher process sends rate x --duration events on an absolute schedule,
   through `feeds.broadcast.publish_events([event])` (Tickerwire) or Redis PUBLISH of the very text
   Tickerwire would send (raw); each event carries the publisher's CLOCK_MONOTONIC stamp;
4. drain (all N x M arrived, or nothing for 2 s), read the figures, stop every process.

Per step: offered and delivered rates, loss, latency p50/p90/p99/max, server CPU per delivered
message (/proc utime+stime over the loaded window), RSS at start / with N idle sockets (KiB per
connection), connect time, publisher lag, and the verdict of notes/performance.md section 3:
  ok    >= 99.9 % delivered, publisher within 5 % of its rate, no growing backlog (median latency of
        the last 20 % of events < 250 ms above the first 20 %), p99 < 1 s, and p99 <= 100 ms;
  slow  keeps up (all of the above but the last), p99 > 100 ms;
  over  anything else.
The notes group the backlog check by arrival; with few events per step that compares one event's
fastest sockets with another's slowest (the fan-out spread, ~0.5 s at N=5000), so it goes by event here.
A configuration stops stepping at an N after two steps whose rounds were mostly "over".

    python bench/fanout.py                                   # N=100,1000; rates 1,5,20,50,100,200,...
    python bench/fanout.py --clients 1000 --rates 1,5,20 --duration 5 --rounds 2
    python bench/fanout.py --clients 1000 --processes 2      # also Tickerwire on 2 Daphne processes
    python bench/fanout.py --clients 1000 --processes 2 --cpu-cap 0.4 --rates 10,20,30,40,50,60,80,100
                                                             # 1 vs 2 processes, each capped at 0.4 CPU

Loopback only; every process is started here, bounded in time, and stopped by pid in `finally`.
Writes bench/results/fanout-<UTC>.json (or --out). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]  # _common and fanout_*; the project (Django side, in subprocesses)
from _common import raise_nofile_limit, utc_stamp, write_json  # noqa: E402
import cpucap  # noqa: E402
from fanout_django import prepare, publish  # noqa: E402
from fanout_report import ROW_HEADER, format_row, print_summary, print_targets, summarize, targets  # noqa: E402
from fanout_step import Config, Run, run_step  # noqa: E402

DEFAULT_RATES = [1, 5, 20, 50, 100, 200, 500, 1000, 2000, 5000]


# -- main ---------------------------------------------------------------------------------------
def _numbers(text: str, cast=float) -> list:
    return [cast(part) for part in text.split(",") if part.strip()]


def _environment(root: Path) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("django", "channels", "channels-redis", "daphne", "twisted", "websockets", "redis"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    read = lambda *cmd: subprocess.run(cmd, cwd=root, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {"python": sys.version.split()[0], "packages": versions, "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(), "git_commit": read("git", "rev-parse", "HEAD"),
            "git_dirty_files": len(read("git", "status", "--porcelain").splitlines())}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["_prepare"], ["_publish"]):  # the Django side imports the measured checkout
        sys.path.insert(0, os.environ.get("TWBENCH_ROOT", str(ROOT)))
    if argv[:1] == ["_prepare"]:
        return prepare()
    if argv[:1] == ["_publish"]:
        parser = argparse.ArgumentParser(prog="fanout.py _publish")
        for option in ("--mode", "--redis-url", "--channel", "--symbol"):
            parser.add_argument(option, required=True)
        parser.add_argument("--instrument-id", type=int, required=True)
        parser.add_argument("--warmup-instrument-id", type=int, default=0)
        asyncio.run(publish(parser.parse_args(argv[1:])))
        return 0

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="100,1000", help="comma-separated N (default 100,1000; 5000 works)")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="events/s steps")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of publishing per step")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per step, interleaved raw/tickerwire")
    parser.add_argument("--processes", type=int, default=1,
                        help="also run Tickerwire on this many Daphne processes (clients split between them)")
    parser.add_argument("--cpu-cap", type=float, default=None,
                        help="give every server process (raw too) this many CPUs of its own, in a cgroup "
                             "(bench/cpucap.py): how --processes 2 compares with 1 on a machine too small to "
                             "give each its own core")
    parser.add_argument("--servers", default="raw,tickerwire",
                        help="which to run: raw, tickerwire or both (the ratios need both)")
    parser.add_argument("--max-minutes", type=float, default=90, help="stop stepping after this long")
    parser.add_argument("--out", default=str(BENCH / "results"), help="a .json file, or a directory for "
                                                                      "fanout-<UTC>.json (default bench/results)")
    parser.add_argument("--root", default=str(ROOT),
                        help="the checkout whose server is measured (default: this one), e.g. an exported commit")
    parser.add_argument("--keep-logs", action="store_true", help="keep the per-step logs and databases")
    args = parser.parse_args(argv)
    clients, rates = _numbers(args.clients, int), _numbers(args.rates)
    servers = {part.strip() for part in args.servers.split(",")}
    cap = args.cpu_cap
    if cap is not None and not cpucap.available():
        print("--cpu-cap needs a writable cgroup cpu controller (root, /sys/fs/cgroup)", file=sys.stderr)
        return 2
    configs = ([Config("raw", "raw", cpu_cap=cap)] if "raw" in servers else []) + (
        [Config("tickerwire", "tickerwire", cpu_cap=cap)] if "tickerwire" in servers else [])
    if args.processes > 1 and "tickerwire" in servers:
        configs.append(Config(f"tickerwire-{args.processes}p", "tickerwire", args.processes, cpu_cap=cap))
    limit = raise_nofile_limit()
    if max(clients) + 256 > limit:
        print(f"open-files limit {limit} is too low for {max(clients)} sockets (ulimit -n)", file=sys.stderr)
        return 2
    out = Path(args.out)
    started = utc_stamp()
    out = out if out.suffix == ".json" else out / f"fanout-{started}.json"
    tmp = Path(tempfile.mkdtemp(prefix="twbench-"))
    result = {"benchmark": "fanout", "started": started, "args": vars(args), "environment": _environment(Path(args.root)),
              "rows": [], "summary": {}, "targets": {}}
    rows: list[dict] = result["rows"]
    failed = False
    try:
        run = Run(tmp, Path(args.root).resolve())
        result["prepared"] = {k: v for k, v in run.prepare().items() if k != "session_key"}
        print(f"event text {run.info['event_bytes']} bytes; steps of {args.duration:g} s; results -> {out}")
        if cap is not None:
            print(f"every server process capped at {cap:g} CPU: read the scaling ratio; absolute rates are "
                  "the cap's, not this machine's")
        print(ROW_HEADER)
        deadline = time.monotonic() + 60 * args.max_minutes
        for n in clients:
            overs = {c.name: 0 for c in configs}
            for rate in rates:
                active = [c for c in configs if overs[c.name] < 2]
                if not active or time.monotonic() > deadline:
                    break
                step_rows = []
                for round_no in range(1, args.rounds + 1):
                    for cfg in active:
                        row = run_step(run, cfg, n, rate, args.duration, round_no)
                        failed |= bool(row["error"])
                        rows.append(row)
                        step_rows.append(row)
                        print(format_row(row), flush=True)
                        write_json(out, result)
                for cfg in active:
                    verdicts = [r["verdict"] for r in step_rows if r["config"] == cfg.name]
                    if 2 * verdicts.count("over") >= len(verdicts):
                        overs[cfg.name] += 1
    except KeyboardInterrupt:
        print("interrupted: writing what was measured", file=sys.stderr)
        failed = True
    finally:
        result["finished"] = utc_stamp()
        result["summary"] = summarize(rows, configs)
        result["targets"] = targets(result["summary"], capped=cap is not None)
        write_json(out, result)
        if args.keep_logs or failed:
            print(f"step logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_summary(result["summary"])
    print_targets(result["targets"])
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
