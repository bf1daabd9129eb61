"""The benchmark suite, one command: ``python -m bench.run [--events N] [--quick]``.

Generates the events once, starts the embedded broker and the sandbox (a process of its own),
publishes the events, then measures on that same topic: raw consume (the ceiling), the worker end
to end as a real process, the same job on quixstreams (when its environment exists), the cost of
each stage in this process, RSS per buffered ID (a separate process) and production →
acknowledgement latency at half the measured worker rate. Prints figures and a markdown table,
and saves everything as JSON under bench/results/. It asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import latency, quix, raw, stages
from bench.data import SEGMENTS, dataset
from bench.e2e import run_worker
from bench.env import Env, create_topic, environment, produce
from bench.table import markdown

RESULTS = Path(__file__).parent / "results"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events to publish (default 1M)")
    p.add_argument("--quick", action="store_true", help="small sizes: 200k events, 1M IDs, 8 s")
    p.add_argument("--memory-ids", type=int, default=10_000_000)
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument("--latency-age", type=float, default=5.0, help="FLUSH_MAX_AGE_SECONDS there")
    p.add_argument(
        "--mode",
        choices=["both", "backfill", "streaming"],
        default="both",
        help="worker end-to-end runs (see bench.e2e); default both, backfill is the headline",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="raw consume and backfill runs, in turns; the medians are reported (default 3)",
    )
    p.add_argument("--skip", action="append", default=[], choices=["quix", "memory", "latency"])
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.memory_ids, args.latency_seconds = 200_000, 1_000_000, 8.0
        args.repeat = 1
    return args


def _step(name: str) -> None:
    print(f"\n== {name}", flush=True)


def _memory(ids: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.memory", "--ids", str(ids), "--segments", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate, with every run's rate (``runs_per_s``, in run order)."""
    middle = sorted(runs, key=lambda r: float(r["events_per_s"]))[(len(runs) - 1) // 2]
    return {**middle, "runs_per_s": [r["events_per_s"] for r in runs]}


def _end_to_end(
    args: argparse.Namespace,
    env: Env,
    topic: str,
    ends: dict[int, int],
    *,
    log_dir: Path,
    results: dict[str, Any],
) -> None:
    """Raw consume and the backfill run in turns (`--repeat` times, medians kept), then the
    streaming run once."""
    backfill = args.mode in ("backfill", "both")
    raws, workers = [], []
    for i in range(args.repeat):
        _step(f"raw consume (Consumer.consume, the ceiling), run {i + 1} of {args.repeat}")
        raws.append(raw.raw_consume(env.bootstrap, topic, ends))
        print(raws[-1])
        if backfill:
            _step(f"worker end to end, backfill, run {i + 1} of {args.repeat}")
            workers.append(run_worker(env, topic, ends, log_dir, drain=True))
            print(workers[-1])
    results["raw_consume"] = _median(raws)
    results["adapter_consume"] = raw.adapter_consume(env.bootstrap, topic, ends)
    print(results["adapter_consume"])
    if backfill:
        results["worker"] = _median(workers)
        results["ratios"] = [
            round(w["events_per_s"] / r["events_per_s"], 3)
            for r, w in zip(raws, workers, strict=True)
        ]
    if args.mode in ("streaming", "both"):
        _step("worker end to end, streaming (python -m worker.cli run) until committed = end")
        key = "worker" if args.mode == "streaming" else "worker_streaming"
        results[key] = run_worker(env, topic, ends, log_dir, drain=False)
        print(results[key])


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    results: dict[str, Any] = {
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "logs": str(log_dir),
    }
    _step(f"generating {args.events} events over {len(SEGMENTS)} segments")
    data = dataset(args.events)
    results["data"] = {
        "events": len(data),
        "bad": data.bad,
        "mean_value_bytes": round(data.mean_bytes, 1),
    }
    print(results["data"])
    with environment() as env:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        create_topic(env.bootstrap, topic)
        _step(f"publishing to {topic} (broker {env.bootstrap}, sandbox {env.sandbox.url})")
        ends = produce(env.bootstrap, topic, data.keys, data.values)
        _end_to_end(args, env, topic, ends, log_dir=log_dir, results=results)
        _step("quixstreams equivalent")
        why = "skipped (--skip quix)" if "quix" in args.skip else quix.available()
        results["quix"] = {"skipped": why} if why else quix.run(env, topic, ends, log_dir)
        print(results["quix"])
        _step("per-stage cost in this process")
        n = min(len(data), 200_000)
        results["stages"] = stages.measure(data.keys[:n], data.values[:n])
        print(results["stages"])
        if "memory" not in args.skip:
            _step(f"RSS per buffered ID: {args.memory_ids} IDs over 100 segments (own process)")
            results["memory"] = _memory(args.memory_ids)
            print(results["memory"])
        if "latency" not in args.skip:
            rate = results["worker"]["events_per_s"] / 2
            _step(
                f"latency at {rate:.0f} events/s (half the worker's rate) for {args.latency_seconds} s"
            )
            results["latency"] = latency.measure(
                env,
                data.keys,
                data.values,
                rate=rate,
                seconds=args.latency_seconds,
                log_dir=log_dir,
                flush_max_age=args.latency_age,
            )
            print(results["latency"])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    _step(f"results saved to {path}")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
