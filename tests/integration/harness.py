"""Integration harness: a real broker, the sandbox over HTTP, and worker processes.

Broker differences we write around (Tansu, see shared BROKER.md): JoinGroup is held for
session.timeout.ms / 2, so workers here use a 6 s session timeout; a fresh group id per test; end
offsets come from delivery reports, not ListOffsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.generator import GeneratedRecord, GeneratorSpec, fold_model, generate
from worker.kafka import EventProducer, create_topics, group_committed
from worker.localstack import WorkerProcess, http_json, local_env
from worker.model import CSV_COLUMN

__all__ = [
    "Names",
    "Stream",
    "WorkerProcess",
    "committed_reaches",
    "expected_membership",
    "generated",
    "http_json",
    "publish",
    "sandbox_membership",
    "wait_until",
    "worker_env",
]


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


def sandbox_membership(sandbox_url: str) -> dict[str, set[tuple[str, str]]]:
    """Members per segment name as (column, id), read over HTTP; one name may not repeat."""
    state = http_json(f"{sandbox_url}/_sandbox/state")
    out: dict[str, set[tuple[str, str]]] = {}
    for seg in state["segments"]:
        assert seg["name"] not in out, f"segment {seg['name']} exists twice in the sandbox"
        members = http_json(f"{sandbox_url}/_sandbox/segments/{seg['id']}/members")["members"]
        out[seg["name"]] = {(col, i) for col, ids in members.items() for i in ids}
    return out


@dataclass
class Stream:
    """What a test published: records in order and end offsets per partition."""

    topic: str
    records: list[GeneratedRecord] = field(default_factory=list)
    end_offsets: dict[int, int] = field(default_factory=dict)


def publish(
    bootstrap: str,
    topic: str,
    records: Iterable[GeneratedRecord],
    partitions: int = 12,
    dlq_topic: str | None = None,
) -> Stream:
    conf = {"bootstrap.servers": bootstrap}
    topics = {topic: partitions} | ({dlq_topic: 1} if dlq_topic else {})
    create_topics(conf, topics)
    producer = EventProducer(conf | {"enable.idempotence": True, "acks": "all"}, topic)
    stream = Stream(topic)
    for r in records:
        producer.send(r.key, r.value)
        stream.records.append(r)
    assert producer.flush(60) == 0
    assert producer.failed == 0
    stream.end_offsets = dict(producer.end_offsets)
    return stream


def generated(**spec: Any) -> list[GeneratedRecord]:
    return list(generate(GeneratorSpec(**spec)))


def expected_membership(
    records: Iterable[GeneratedRecord], refused: Collection[str] = ()
) -> dict[str, set[tuple[str, str]]]:
    """Sandbox membership the event log implies: (CSV column, ID) per segment, empty ones left
    out, minus device IDs the sandbox refuses."""
    model = fold_model(r.change for r in records if r.change is not None)
    out = {s: {(CSV_COLUMN[t], i) for t, i in m if i not in refused} for s, m in model.items()}
    return {s: m for s, m in out.items() if m}


def committed_reaches(bootstrap: str, group: str, topic: str, ends: Mapping[int, int]) -> bool:
    got = group_committed({"bootstrap.servers": bootstrap}, group, topic, ends)
    return all((got.get(p) or 0) >= o for p, o in ends.items())


class Names:
    """Fresh topic and group names per test (the broker keeps everything in memory)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.topic = f"changes-{tag}"
        self.dlq = f"changes-{tag}.dlq"
        self.group = f"group-{tag}"
        self.registry_topic = f"registry-{tag}"


def worker_env(bootstrap: str, sandbox_url: str, names: Names, **extra: Any) -> dict[str, str]:
    return local_env(
        bootstrap,
        sandbox_url,
        names.topic,
        names.dlq,
        names.group,
        SEGMENT_REGISTRY_TOPIC=names.registry_topic,
        FLUSH_MAX_AGE_SECONDS=1,
        LOG_FORMAT="json",
        **extra,
    )
