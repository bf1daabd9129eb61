"""What every benchmark stage shares: broker, sandbox process, data, committed offsets, CPU time.

The sandbox runs as its own process (`inmobi-sync sandbox`), not as a thread of the benchmark: its
upload parsing is CPU work that would otherwise compete with the benchmark's own measuring loop
for the GIL, and a process lets the table show its CPU time separately.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as KTopicPartition

from worker.embedded import EmbeddedBroker, free_port, wait_for_port
from worker.kafka import create_topics
from worker.localstack import http_json

PARTITIONS = 12
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_peak_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class SandboxProcess:
    """`python -m worker.cli sandbox` on a free port; stopped by its PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.gettempdir()) / f"bench-sandbox-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SandboxProcess:
        env = dict(os.environ, LOG_LEVEL="WARNING")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "sandbox", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        proc = self.proc
        if not wait_for_port(self.port, time.monotonic() + 30, lambda: proc.poll() is None):
            raise RuntimeError(f"sandbox did not start; see {self.log_path}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def state(self) -> dict[str, Any]:
        return dict(http_json(f"{self.url}/_sandbox/state"))

    def reset(self) -> None:
        http_json(f"{self.url}/_sandbox/reset", "POST", {})


@dataclass
class Env:
    broker: EmbeddedBroker
    sandbox: SandboxProcess

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def pids(self) -> dict[str, int]:
        out = {"bench": os.getpid()}
        proc = self.broker._proc  # the broker's own process: its CPU time is part of the cost
        if proc is not None:
            out["broker"] = proc.pid
        if self.sandbox.proc is not None:
            out["sandbox"] = self.sandbox.proc.pid
        return out


@contextlib.contextmanager
def environment() -> Iterator[Env]:
    with EmbeddedBroker() as broker, SandboxProcess() as sandbox:
        yield Env(broker, sandbox)


class CpuMeter:
    """CPU seconds each process spent between `start` and `stop`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.used: dict[str, float] = {}

    def add(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self._start[name] = cpu_seconds(pid)

    def sample(self) -> dict[str, float]:
        """Read now (call before a process exits to keep its figure)."""
        now = {n: cpu_seconds(p) for n, p in self.pids.items()}
        self.used.update({n: round(now[n] - self._start[n], 2) for n in now if now[n] > 0})
        return self.used


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    create_topics({"bootstrap.servers": bootstrap}, {topic: partitions})


def produce(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes]) -> dict[int, int]:
    """Publish every record once; end offsets from delivery reports (see shared BROKER.md)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 500_000,
            "compression.type": "lz4",
        }
    )
    ends: dict[int, int] = {}
    failed = 0

    def report(err: Any, msg: Any) -> None:
        nonlocal failed
        if err is not None:
            failed += 1
            return
        p, o = msg.partition(), msg.offset()
        if o + 1 > ends.get(p, 0):
            ends[p] = o + 1

    send = producer.produce
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                send(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) or failed:
        raise RuntimeError(f"publishing failed ({failed} delivery errors)")
    return ends


class CommitWatcher:
    """Reads a group's committed offsets without joining the group."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: list[int]) -> None:
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        self._tps = [KTopicPartition(topic, p) for p in partitions]

    def committed(self) -> dict[int, int]:
        result = self._consumer.committed(self._tps, timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in result}

    def close(self) -> None:
        self._consumer.close()


def reached(got: Mapping[int, int], ends: Mapping[int, int]) -> bool:
    return all(got.get(p, 0) >= o for p, o in ends.items())
