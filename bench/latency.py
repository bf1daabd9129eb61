"""Production → acknowledgement latency at a steady, paced rate (p50 / p99 / max).

Method: a worker is started on a fresh topic and waited for until it owns its partitions; then
this process produces the benchmark's records at a fixed rate (a burst every 10 ms) for a fixed
time, and notes each record's production time (its CreateTime, set by librdkafka when `produce()`
is called) with its partition and offset from the delivery report. Meanwhile another thread reads
the group's committed offsets every 50 ms. A record counts as acknowledged at the first reading
whose committed offset for its partition is past it: the worker commits an offset only after
InMobi (the sandbox) acknowledged every change below it, so this is an upper bound of the
production → acknowledgement time, late by at most the worker's commit tick (0.1 s, commits
follow acknowledgements), one commit round trip and the 50 ms reading interval.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.e2e import Worker, worker_env
from bench.env import CommitWatcher, Env, create_topic, reached


def _paced_produce(
    bootstrap: str,
    topic: str,
    keys: list[bytes],
    values: list[bytes],
    *,
    rate: float,
    seconds: float,
) -> tuple[dict[int, list[tuple[int, int]]], float]:
    """Produce at `rate` per second; per partition [(offset, create time ms)], achieved rate."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000}
    )
    produced: dict[int, list[tuple[int, int]]] = {}

    def report(err: Any, msg: Any) -> None:
        if err is None:
            produced.setdefault(msg.partition(), []).append((msg.offset(), msg.timestamp()[1]))

    tick, i, n = 0.01, 0, len(values)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * (elapsed + tick)) - sent  # catch up if a burst ran late
        for _ in range(max(0, due)):
            producer.produce(topic, values[i], keys[i], on_delivery=report)
            i = (i + 1) % n
        sent += max(0, due)
        producer.poll(0)
        time.sleep(max(0.0, started + (sent / rate) - time.monotonic()))
    producer.flush(60)
    return produced, sent / (time.monotonic() - started)


def _latencies(
    produced: Mapping[int, list[tuple[int, int]]], seen: list[tuple[float, dict[int, int]]]
) -> list[float]:
    out: list[float] = []
    times = [t for t, _ in seen]
    for p, records in produced.items():
        committed = [c.get(p, 0) for _, c in seen]  # non-decreasing over time
        for offset, created_ms in records:
            k = bisect.bisect_right(committed, offset)  # first reading past this offset
            if k < len(times):
                out.append(times[k] - created_ms / 1000)
    return sorted(out)


def measure(
    env: Env,
    keys: list[bytes],
    values: list[bytes],
    *,
    rate: float,
    seconds: float,
    log_dir: Path,
    flush_max_age: float,
) -> dict[str, Any]:
    topic = f"latency-{uuid.uuid4().hex[:6]}"
    group = f"bench-latency-{uuid.uuid4().hex[:6]}"
    env.sandbox.reset()  # every run starts from an empty sandbox
    create_topic(env.bootstrap, topic)
    create_topic(env.bootstrap, f"{topic}.dlq", 1)
    worker = Worker(
        worker_env(env, topic, group, FLUSH_MAX_AGE_SECONDS=flush_max_age, FLUSH_MAX_IDS=100_000),
        log_dir,
    )
    watcher = CommitWatcher(env.bootstrap, group, topic, list(range(12)))
    seen: list[tuple[float, dict[int, int]]] = []
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            seen.append((time.time(), watcher.committed()))
            time.sleep(0.05)

    try:
        worker.wait_assigned()
        time.sleep(1.0)  # let it start fetching
        observer = threading.Thread(target=observe, daemon=True)
        observer.start()
        produced, achieved = _paced_produce(
            env.bootstrap, topic, keys, values, rate=rate, seconds=seconds
        )
        ends = {p: max(o for o, _ in recs) + 1 for p, recs in produced.items()}
        deadline = time.monotonic() + flush_max_age + 60
        while not (seen and reached(seen[-1][1], ends)) and time.monotonic() < deadline:
            worker.check_alive()
            time.sleep(0.1)
        stop.set()
        observer.join()
    finally:
        stop.set()
        code = worker.stop()
        watcher.close()
    lat = _latencies(produced, seen)
    count = sum(len(r) for r in produced.values())

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else float("nan")

    return {
        "target_rate": round(rate),
        "achieved_rate": round(achieved),
        "seconds": seconds,
        "events": count,
        "acknowledged": len(lat),
        "flush_max_age_seconds": flush_max_age,
        "p50_s": pct(0.50),
        "p99_s": pct(0.99),
        "max_s": round(lat[-1], 3) if lat else float("nan"),
        "bound_s": flush_max_age + 2,
        "exit_code": code,
        "log": str(worker.log_path),
    }
