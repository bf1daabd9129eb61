"""Issue 2 acceptance: a real broker, the sandbox over HTTP, the worker as a process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import (
    Names,
    WorkerProcess,
    committed_reaches,
    expected_membership,
    generated,
    http_json,
    publish,
    sandbox_membership,
    wait_until,
    worker_env,
)
from worker.embedded import EmbeddedBroker
from worker.kafka import group_committed, read_all
from worker.produce import SUBJECT_SUFFIX
from worker.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration

SEGMENTS = (
    "high_value users",
    "CHURN_RISK",
    "cart-abandoners",
    "Gamers",
    "sports fans",
    "NEW_USERS",
    "lapsed.payers",
    "vip",
)


def register(sandbox: SandboxThread, topic: str) -> int:
    from worker.avro_fast import BUNDLED_SCHEMA_JSON as SCHEMA_JSON

    body = http_json(
        f"{sandbox.url}/registry/subjects/{topic}{SUBJECT_SUFFIX}/versions",
        "POST",
        {"schema": SCHEMA_JSON},
    )
    return int(body["id"])


def test_200k_events_end_with_sandbox_equal_to_model_dlq_complete_offsets_at_end(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    schema_id = register(sandbox, names.topic)
    records = generated(
        count=200_000,
        segments=SEGMENTS,
        devices=20_000,
        remove_share=0.3,
        bad_share=0.001,
        encodings=("avro", "framed", "json"),
        uppercase_share=0.3,
        seed=7,
        schema_id=schema_id,
    )
    stream = publish(broker.bootstrap, names.topic, records, partitions=12, dlq_topic=names.dlq)
    assert len(stream.end_offsets) == 12
    worker = WorkerProcess(
        worker_env(broker.bootstrap, sandbox.url, names, FLUSH_MAX_IDS=20000), log_dir
    )
    try:
        wait_until(
            lambda: committed_reaches(
                broker.bootstrap, names.group, names.topic, stream.end_offsets
            ),
            timeout=240,
            what="committed offsets reach the end offsets",
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text()[-3000:]

    got = sandbox_membership(sandbox.url)
    want = expected_membership(stream.records)
    assert {s: g for s, g in got.items() if g} == want

    bad = [r for r in stream.records if r.bad]
    assert bad, "the stream must contain bad records"
    dlq = read_all({"bootstrap.servers": broker.bootstrap}, names.dlq, {0: len(bad)})
    assert sorted((m.key, m.value) for m in dlq) == sorted((r.key, r.value) for r in bad)
    positions = {
        (m.partition, m.offset)
        for m in read_all({"bootstrap.servers": broker.bootstrap}, names.topic, stream.end_offsets)
        if (m.key, m.value) in {(r.key, r.value) for r in bad}
    }
    for m in dlq:
        headers = dict(m.headers)
        assert headers["__connect.errors.topic"] == names.topic.encode()
        assert headers["__connect.errors.stage"] in (b"DECODE", b"VALIDATE")
        assert headers["__connect.errors.exception.class.name"]
        assert headers["__connect.errors.exception.message"]
        where = (
            int(headers["__connect.errors.partition"]),
            int(headers["__connect.errors.offset"]),
        )
        assert where in positions
    final = group_committed(
        {"bootstrap.servers": broker.bootstrap}, names.group, names.topic, stream.end_offsets
    )
    assert final == stream.end_offsets


def test_no_offset_is_committed_past_an_unacknowledged_upload(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    held, free = "HELD_SEGMENT", "FREE_SEGMENT"
    http_json(f"{sandbox.url}/_sandbox/hold", "POST", {"segment_name": held})
    records = generated(
        count=4000,
        segments=(held, free),
        devices=1000,
        remove_share=0.2,
        bad_share=0.0,
        encodings=("avro", "json"),
        uppercase_share=0.0,
        seed=3,
    )
    stream = publish(broker.bootstrap, names.topic, records, partitions=4, dlq_topic=names.dlq)
    consumed = read_all({"bootstrap.servers": broker.bootstrap}, names.topic, stream.end_offsets)
    by_value = {r.value: r for r in stream.records}
    first_held: dict[int, int] = {}
    for m in consumed:
        change = by_value[m.value].change
        if change is not None and change.segment == held:
            first_held.setdefault(m.partition, m.offset)
    worker = WorkerProcess(worker_env(broker.bootstrap, sandbox.url, names), log_dir)
    try:

        def free_synced() -> bool:
            state = http_json(f"{sandbox.url}/_sandbox/state")
            names_ = {s["name"]: s for s in state["segments"]}
            return free in names_ and names_[free]["uploads"] > 0 and state["held"] > 0

        wait_until(
            free_synced, timeout=60, what="the free segment uploaded while the other is held"
        )
        # Commits converge to exactly the first held offset of each partition that has one (the
        # free segment's changes before it are acknowledged) and to the end elsewhere; at no
        # sample may a commit pass a held offset.
        stalled = {p: first_held.get(p, end) for p, end in stream.end_offsets.items()}

        def converged_without_passing() -> bool:
            got = group_committed(
                {"bootstrap.servers": broker.bootstrap},
                names.group,
                names.topic,
                stream.end_offsets,
            )
            for p, first in first_held.items():
                assert got[p] is None or got[p] <= first, (p, got[p], first)
            return got == stalled

        wait_until(converged_without_passing, timeout=60, what="commits stall at the held offsets")
        http_json(f"{sandbox.url}/_sandbox/release", "POST", {})
        wait_until(
            lambda: committed_reaches(
                broker.bootstrap, names.group, names.topic, stream.end_offsets
            ),
            timeout=60,
            what="commits reach the end after release",
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text()[-3000:]
    got = {s: m for s, m in sandbox_membership(sandbox.url).items() if m}
    assert got == expected_membership(stream.records)
