"""Issue 3 acceptance: with each sandbox fault switched on, nothing is lost and nothing is early.

Every scenario publishes the same kind of stream, switches one fault on in the sandbox, runs a
real worker until its commits reach the end offsets, and checks the sandbox against the model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from worker.generator import GeneratedRecord
from worker.kafka import read_all
from worker.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration

SEGMENTS = ("alpha", "beta users", "GAMMA")


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: dict[str, Any]
    env: dict[str, Any] = field(default_factory=dict)


SCENARIOS = [
    Scenario("5xx", {"rules": [{"match": {"route": "upload"}, "status": 503, "rate": 0.4}]}),
    Scenario(
        "429 with Retry-After",
        {"rules": [{"match": {"route": "upload"}, "status": 429, "retry_after": 2, "count": 3}]},
    ),
    Scenario(
        "hang past the client timeout",
        {"rules": [{"match": {"route": "upload"}, "hang": True, "count": 2}]},
        {"INMOBI_REQUEST_TIMEOUT_SECONDS": 2},
    ),
    # rate-limited small flushes spread the uploads over several revocation periods
    Scenario(
        "session revoked every 2 s",
        {"revoke_sessions_every_seconds": 2},
        {"INMOBI_REQUESTS_PER_SECOND": 5, "FLUSH_MAX_IDS": 500},
    ),
    Scenario("files over the sandbox limits", {"max_rows": 300}),
]


def run_to_end(
    broker: EmbeddedBroker,
    sandbox: SandboxThread,
    names: Names,
    log_dir: Path,
    records: list[GeneratedRecord],
    **env: Any,
) -> tuple[WorkerProcess, dict[int, int]]:
    stream = publish(broker.bootstrap, names.topic, records, partitions=4, dlq_topic=names.dlq)
    worker = WorkerProcess(worker_env(broker.bootstrap, sandbox.url, names, **env), log_dir)
    try:
        wait_until(
            lambda: committed_reaches(
                broker.bootstrap, names.group, names.topic, stream.end_offsets
            ),
            timeout=120,
            what="commits reach the end offsets",
        )
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text()[-3000:]
    return worker, stream.end_offsets


def stream_records(seed: int) -> list[GeneratedRecord]:
    return generated(
        count=6000,
        segments=SEGMENTS,
        devices=2000,
        remove_share=0.3,
        bad_share=0.0,
        encodings=("avro", "json"),
        uppercase_share=0.2,
        seed=seed,
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_fault_ends_with_membership_equal_to_model(
    scenario: Scenario,
    broker: EmbeddedBroker,
    sandbox: SandboxThread,
    names: Names,
    log_dir: Path,
) -> None:
    http_json(f"{sandbox.url}/_sandbox/faults", "PUT", scenario.faults)
    records = stream_records(seed=11)
    worker, _ = run_to_end(broker, sandbox, names, log_dir, records, **scenario.env)
    got = {s: m for s, m in sandbox_membership(sandbox.url).items() if m}
    assert got == expected_membership(records)
    state = http_json(f"{sandbox.url}/_sandbox/state")
    if "revoke_sessions_every_seconds" in scenario.faults:
        assert state["sessions_generated"] >= 2, "no session was ever revoked"
    else:
        failed = [e for e in worker.events() if e.get("event") == "upload_failed"]
        assert failed, "the fault never fired"
    if "max_rows" in scenario.faults:
        ok = [u for u in state["uploads"] if u["status"] == 200]
        assert ok and all(u["rows"] <= scenario.faults["max_rows"] for u in ok)


def test_requests_wait_for_retry_after(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    http_json(
        f"{sandbox.url}/_sandbox/faults",
        "PUT",
        {"rules": [{"match": {"route": "upload"}, "status": 429, "retry_after": 3, "count": 1}]},
    )
    records = stream_records(seed=12)
    run_to_end(broker, sandbox, names, log_dir, records)
    uploads = sorted(http_json(f"{sandbox.url}/_sandbox/state")["uploads"], key=lambda u: u["time"])
    limited = [u for u in uploads if u["status"] == 429]
    assert len(limited) == 1, uploads[:5]
    after = [
        u
        for u in uploads
        if u["time"] > limited[0]["time"] and u["segment_name"] == limited[0]["segment_name"]
    ]
    assert after, "the limited segment was never retried"
    # the retry of that segment waits at least Retry-After (small slack for clock granularity)
    assert after[0]["time"] - limited[0]["time"] >= 3 - 0.05


def test_sessions_stay_bounded_when_they_are_revoked_every_second(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    """At most one new session per revocation period: never one per request, never a storm."""
    http_json(f"{sandbox.url}/_sandbox/faults", "PUT", {"revoke_sessions_every_seconds": 1})
    records = stream_records(seed=13)
    started = time.monotonic()
    run_to_end(
        broker, sandbox, names, log_dir, records, INMOBI_REQUESTS_PER_SECOND=5, FLUSH_MAX_IDS=500
    )
    elapsed = time.monotonic() - started
    state = http_json(f"{sandbox.url}/_sandbox/state")
    uploads = sum(state["requests"].get("upload", {}).values())
    assert 2 <= state["sessions_generated"] <= math.ceil(elapsed) + 2
    assert state["sessions_generated"] < uploads
    assert {s: m for s, m in sandbox_membership(sandbox.url).items() if m} == expected_membership(
        records
    )


def test_a_row_the_sandbox_rejects_goes_to_the_dlq_and_the_rest_lands(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    records = stream_records(seed=14)
    model = expected_membership(records)
    victim = sorted(i for m in model.values() for _, i in m)[0]
    http_json(f"{sandbox.url}/_sandbox/faults", "PUT", {"reject_ids": [victim]})
    run_to_end(broker, sandbox, names, log_dir, records)
    assert {s: m for s, m in sandbox_membership(sandbox.url).items() if m} == expected_membership(
        records, refused={victim}
    )
    state = http_json(f"{sandbox.url}/_sandbox/state")
    dlq_count = sum(1 for u in state["uploads"] if u["status"] == 400)
    assert dlq_count >= 1
    dlq = read_all({"bootstrap.servers": broker.bootstrap}, names.dlq, {0: 1})
    headers = dict(dlq[0].headers)
    assert headers["__connect.errors.stage"] == b"UPLOAD"
    assert dlq[0].key == victim.encode()
    assert b"refused" in headers["__connect.errors.exception.message"]
