"""The worker end to end: `python -m worker.cli run` as a real process, until it has caught up.

Caught up means: the group's committed offsets reached the end offsets of every partition, and the
worker commits an offset only once InMobi (the sandbox) acknowledged every change below it, so the
time covers consume, decode, buffer, gzip, upload and commit. The clock starts when the process is
started; the time to its first assignment (the embedded broker holds JoinGroup for about half the
6 s session timeout) is read from its ``partitions_assigned`` log event and reported separately.

Committed offsets are polled every 0.02 s, so the end is known to within that (plus the worker's
own commit tick).

The time at which the worker had consumed every event is read from its /metrics
(``inmobi_sync_events_total`` over all results) and reported as ``consumed_per_s``.

Two runs, both on the same topic (the worker is a new process in a new group each time):

- *backfill* (``drain=True``, the headline): production flush settings (FLUSH_MAX_IDS 100000,
  FLUSH_MAX_AGE_SECONDS 60), as when a CDP backfill lands on the topic. Buffers flush by size
  while the backlog is read; once every event is consumed (read from /metrics, polled every
  0.2 s, then every 0.02 s from 90% on: a scrape costs the worker ~1 ms) the worker gets SIGTERM, which flushes every buffer, uploads, commits and exits
  (protocol step 7). The clock stops when the committed offsets reach the end offsets, so the
  time covers every upload and commit; only the trigger of the last flush differs from a
  running worker (SIGTERM instead of the 60 s age).
- *streaming* (``drain=False``): FLUSH_MAX_AGE_SECONDS 2 and the worker keeps running; buffers
  flush by age all along (30 times as many files as at 60 s), and the end-to-end time includes
  up to 2 s of waiting for the last age trigger after the last event was consumed.
"""

from __future__ import annotations

import signal
import statistics
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.env import (
    CommitWatcher,
    CpuMeter,
    Env,
    children_cpu,
    create_topic,
    reached,
    rss_peak_bytes,
)
from worker.localstack import WorkerProcess, local_env

WORKER_CMD: tuple[str, ...] = (sys.executable, "-m", "worker.cli", "run")


def worker_env(env: Env, topic: str, group: str, **extra: object) -> dict[str, str]:
    settings: dict[str, object] = {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "FLUSH_MAX_AGE_SECONDS": 1,
        "COMMIT_INTERVAL_SECONDS": 0.5,
        "INMOBI_REQUESTS_PER_SECOND": 1000,  # the sandbox is local: no need to pace requests
        "SEGMENT_REGISTRY_TOPIC": f"{topic}.registry-{group}",
    }
    settings.update(extra)
    return local_env(env.bootstrap, env.sandbox.url, topic, f"{topic}.dlq", group, **settings)


Worker = WorkerProcess  # the shared worker process wrapper


def metrics_port(worker: Worker, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.check_alive()
        started = worker.events("worker_started")
        if started:
            return int(started[0]["http_port"])
        time.sleep(0.05)
    raise RuntimeError(f"no worker_started event; see {worker.log_path}")


def events_counted(port: int) -> int:
    """Sum of the worker's inmobi_sync_events_total over every result."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("inmobi_sync_events_total{")
        )
    )


def wait_processed(worker: Worker, events: int, timeout: float = 600) -> float:
    """Epoch seconds at which the worker had consumed (and buffered, ignored or rejected) all."""
    port = metrics_port(worker)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.check_alive()
        counted = events_counted(port)
        if counted >= events:
            return time.time()
        # Every scrape costs the worker ~1 ms of its event loop: look closely only near the end.
        time.sleep(0.02 if counted >= 0.9 * events else 0.2)
    raise RuntimeError(f"worker did not consume every event in {timeout} s; see {worker.log_path}")


def wait_caught_up(
    watcher: CommitWatcher, ends: Mapping[int, int], worker: Worker, timeout: float = 600
) -> float:
    """Epoch seconds at which the committed offsets were first seen at the end offsets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reached(watcher.committed(), ends):
            return time.time()
        if worker.proc.poll() is not None and not reached(watcher.committed(), ends):
            raise RuntimeError(f"worker exited before catching up; see {worker.log_path}")
        time.sleep(0.02)
    raise RuntimeError(f"worker did not catch up in {timeout} s; see {worker.log_path}")


def upload_stats(uploads: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """Sizes of the accepted uploads after `since` (the sandbox keeps the last 1000)."""
    ok = [u for u in uploads if u["time"] >= since and u["status"] == 200]
    if not ok:
        return {"files": 0}
    rows = [u["rows"] for u in ok]
    sizes = [u["compressed_bytes"] for u in ok]
    return {
        "files": len(ok),
        "rows_mean": round(statistics.fmean(rows)),
        "rows_max": max(rows),
        "bytes_mean": round(statistics.fmean(sizes)),
        "bytes_max": max(sizes),
        "bytes_per_row": round(sum(sizes) / sum(rows), 2),
    }


def run_worker(
    env: Env,
    topic: str,
    ends: Mapping[int, int],
    log_dir: Path,
    *,
    cmd: Sequence[str] = WORKER_CMD,
    on_start: Callable[[int], None] | None = None,
    drain: bool = False,
    **settings: object,
) -> dict[str, Any]:
    group = f"bench-worker-{uuid.uuid4().hex[:8]}"
    env.sandbox.reset()  # every run starts from an empty sandbox (its sets grow with each run)
    create_topic(env.bootstrap, f"{topic}.dlq", 1)
    watcher = CommitWatcher(env.bootstrap, group, topic, sorted(ends))
    meter = CpuMeter(env.pids())
    # Production flush settings, but a short age when the last buffers flush by age.
    defaults = {"FLUSH_MAX_IDS": 100_000, "FLUSH_MAX_AGE_SECONDS": 60 if drain else 2}
    settings = defaults | settings
    children_before = children_cpu()
    worker = Worker(worker_env(env, topic, group, **settings), log_dir, cmd=cmd)
    meter.add("worker", worker.proc.pid)
    if on_start is not None:
        on_start(worker.proc.pid)
    events = sum(ends.values())
    try:
        processed_at = wait_processed(worker, events)
        cpu = meter.sample()
        peak = rss_peak_bytes(worker.proc.pid)
        if drain:
            worker.proc.send_signal(signal.SIGTERM)  # flush everything, upload, commit, exit
        done_at = wait_caught_up(watcher, ends, worker)
        cpu = meter.sample() if worker.proc.poll() is None else cpu
    finally:
        code = worker.stop()
        watcher.close()
    cpu["worker"] = round(children_cpu() - children_before, 2)  # all of it, the drain included
    assigned = worker.assigned_at() or worker.started
    after = done_at - assigned
    return {
        "events": events,
        "mode": "backfill (production flush settings, SIGTERM once consumed)"
        if drain
        else "streaming (FLUSH_MAX_AGE_SECONDS 2)",
        "consumed_per_s": round(events / (processed_at - assigned)),
        "seconds_total": round(done_at - worker.started, 3),
        "seconds_to_assignment": round(assigned - worker.started, 3),
        "seconds_after_assignment": round(after, 3),
        "events_per_s": round(events / after),
        "events_per_s_total": round(events / (done_at - worker.started)),
        "cpu_seconds": cpu,
        "worker_peak_rss_mb": round(peak / 2**20, 1),
        "uploads": upload_stats(env.sandbox.state()["uploads"], worker.started),
        "exit_code": code,
        "log": str(worker.log_path),
        "settings": {k: str(v) for k, v in settings.items()},
    }
