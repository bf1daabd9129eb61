"""Issue 3 acceptance: two workers and a restart mid-stream never create a segment twice."""

from __future__ import annotations

import subprocess
import sys
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
from worker.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration

SEGMENTS = tuple(f"segment {i}" for i in range(10))


def test_two_workers_and_a_restart_create_every_segment_exactly_once(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    records = generated(
        count=20_000,
        segments=SEGMENTS,
        devices=3000,
        remove_share=0.3,
        encodings=("avro",),
        seed=21,
    )
    stream = publish(broker.bootstrap, names.topic, records, partitions=6, dlq_topic=names.dlq)
    # small rate-limited flushes keep the stream going for a while, so the restart is mid-stream
    env = worker_env(
        broker.bootstrap,
        sandbox.url,
        names,
        FLUSH_MAX_IDS=200,
        INMOBI_REQUESTS_PER_SECOND=8,
        SEGMENT_CLAIM_TTL_SECONDS=10,
    )
    first, second = WorkerProcess(env, log_dir, "a"), WorkerProcess(env, log_dir, "b")
    try:

        def some_segments_created() -> bool:
            return len(http_json(f"{sandbox.url}/_sandbox/state")["segments"]) >= 3

        wait_until(some_segments_created, timeout=60, what="the first segments are created")
        assert not committed_reaches(
            broker.bootstrap, names.group, names.topic, stream.end_offsets
        ), "the stream ended before the restart"
        assert first.stop() == 0  # a restart mid-stream
        third = WorkerProcess(env, log_dir, "c")
        try:
            wait_until(
                lambda: committed_reaches(
                    broker.bootstrap, names.group, names.topic, stream.end_offsets
                ),
                timeout=180,
                what="commits reach the end offsets",
            )
        finally:
            assert third.stop() == 0
    finally:
        assert second.stop() == 0
        first.kill()
    state = http_json(f"{sandbox.url}/_sandbox/state")
    created = sorted(s["name"] for s in state["segments"])
    assert created == sorted(set(created)), "a segment name was created twice"
    want = expected_membership(records)
    assert {s: m for s, m in sandbox_membership(sandbox.url).items() if m} == want
    listing = subprocess.run(
        [sys.executable, "-m", "worker.cli", "segments", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for seg in state["segments"]:
        assert seg["id"] in listing and seg["name"] in listing
