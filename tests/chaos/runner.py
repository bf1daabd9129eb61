"""Drives one chaos scenario from an empty topic to a verdict.

1. Create the topics; the churn kind prepares the sandbox (a hold, for the pause scenario).
2. Start the workers and publish the stream at a steady pace in the background.
3. Once every segment exists in the sandbox (so no worker dies inside a segment creation, a
   window the registry documents as unprotected), run the churn schedule.
4. Heal: faults off, holds released, at least one worker running; wait for the stream to be
   published. The lag after heal runs from the later of the last fault and the end of publishing.
5. Wait, with a deadline, for the group's commits to reach the end offsets; stop every worker
   with SIGTERM (each must exit 0) and run the checker.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.chaos.checker import Verdict, check, expected_membership
from tests.chaos.churn import CHURNS, ChaosContext
from tests.chaos.fleet import Fleet
from tests.chaos.publisher import PacedPublisher
from tests.chaos.report import Result, faults_text
from tests.chaos.scenarios import SEGMENTS, Scenario
from tests.integration.harness import (
    Names,
    committed_reaches,
    generated,
    http_json,
    worker_env,
)
from worker.avro_fast import BUNDLED_SCHEMA_JSON as SCHEMA_JSON
from worker.generator import GeneratedRecord
from worker.kafka import create_topics
from worker.naming import inmobi_segment_name

__all__ = ["Result", "run_scenario"]

SETUP_TIMEOUT_SECONDS = 90.0


def register_schema(sandbox_url: str, topic: str) -> int:
    """The bundled schema in the sandbox's registry, so framed records decode."""
    body = http_json(
        f"{sandbox_url}/registry/subjects/{topic}-value/versions", "POST", {"schema": SCHEMA_JSON}
    )
    return int(body["id"])


def stream(scenario: Scenario, schema_id: int) -> list[GeneratedRecord]:
    w = scenario.workload
    return generated(
        schema_id=schema_id,
        count=w.events,
        segments=SEGMENTS,
        devices=w.devices,
        remove_share=0.3,
        bad_share=w.bad_share,
        encodings=("avro", "framed", "json"),
        uppercase_share=0.2,
        seed=w.seed,
    )


def refused_ids(records: list[GeneratedRecord], n: int) -> set[str]:
    members = sorted(i for m in expected_membership(records, set()).values() for _, i in m)
    return set(members[:: max(1, len(members) // n)][:n]) if n else set()


def run_scenario(
    scenario: Scenario, bootstrap: str, sandbox_url: str, log_dir: Path, deadline: float = 180.0
) -> Result:
    started = time.monotonic()
    names = Names()
    records = stream(scenario, register_schema(sandbox_url, names.topic))
    refused = refused_ids(records, scenario.rejected_ids)
    result = Result(scenario, len(records), log_dir=log_dir)
    env = worker_env(
        bootstrap,
        sandbox_url,
        names,
        PROGRESS_LOG_SECONDS=1,
        KAFKA_SESSION_TIMEOUT_MS=6000,
        SEGMENT_CLAIM_TTL_SECONDS=10,
        **scenario.env,
    )
    fleet = Fleet(env, log_dir)
    baseline: dict[str, Any] = {"reject_ids": sorted(refused)} if refused else {}
    ctx = ChaosContext(
        scenario,
        fleet,
        sandbox_url,
        scenario.workload.partitions,
        baseline,
        records,
        bootstrap=bootstrap,
        topic=names.topic,
    )
    try:
        verdict = _drive(ctx, names, refused, result, deadline)
        result.duplicates = verdict.duplicates_text()
        result.problems += verdict.problems
        result.evidence.append(
            f"DLQ: {verdict.dlq_records} records, {verdict.dlq_duplicates} duplicates"
        )
    except AssertionError as exc:
        result.problems.append(str(exc))
    finally:
        fleet.kill_all()
        result.events = len(ctx.records)
        result.faults = faults_text(ctx, ctx.records, refused)
        result.evidence += ctx.evidence
        result.problems += ctx.problems
        result.seconds = time.monotonic() - started
    return result


def _drive(
    ctx: ChaosContext, names: Names, refused: set[str], result: Result, deadline: float
) -> Verdict:
    scenario, fleet, bootstrap = ctx.scenario, ctx.fleet, ctx.bootstrap
    create_topics(
        {"bootstrap.servers": bootstrap}, {names.topic: scenario.workload.partitions, names.dlq: 1}
    )
    if ctx.baseline_faults:
        ctx.sandbox("faults", "PUT", ctx.baseline_faults)
    churn = CHURNS[scenario.churn]
    churn.prepare(ctx)
    for _ in range(scenario.workers):
        fleet.start()
    publisher = PacedPublisher(
        bootstrap, names.topic, list(ctx.records), scenario.workload.publish_seconds
    )
    publisher.start()
    _wait(ctx, _segments_exist, SETUP_TIMEOUT_SECONDS, "every segment exists in the sandbox")
    fleet.churning = True
    churn.run(ctx)
    _heal(ctx)
    ends = publisher.join(scenario.workload.publish_seconds + SETUP_TIMEOUT_SECONDS)
    for p, end in ctx.extra_end_offsets.items():
        ends[p] = max(end, ends.get(p, 0))
    healed_at = max(ctx.last_fault_at, publisher.finished_at or 0.0)
    _wait(
        ctx,
        lambda c: committed_reaches(bootstrap, names.group, names.topic, ends),
        deadline,
        "commits reach the end offsets",
        interval=0.25,
    )
    result.lag_seconds = time.monotonic() - healed_at
    fleet.stop_all()
    unclean = [
        f"{m.name}: {m.exit_code}"
        for m in fleet.members
        if m.state == "stopped" and m.exit_code != 0
    ]
    assert not unclean, f"workers stopped with SIGTERM exited non-zero: {unclean}"
    for late_check in ctx.after_stop:
        late_check()
    timeouts = _drain_timeouts(fleet)
    if timeouts:
        ctx.evidence.append(f"drain deadlines passed: {timeouts}")
    return check(
        bootstrap=bootstrap,
        sandbox_url=ctx.sandbox_url,
        topic=names.topic,
        group=names.group,
        dlq=names.dlq,
        records=ctx.records,
        end_offsets=ends,
        refused=refused,
        consumed=[m.consumed() for m in fleet.members],
        exact=not fleet.killed_any(),
        require_zero=scenario.clean and not timeouts,
    )


def _segments_exist(ctx: ChaosContext) -> bool:
    names = {s["name"] for s in ctx.sandbox("state")["segments"]}
    return names >= {inmobi_segment_name(s) for s in SEGMENTS}


def _wait(
    ctx: ChaosContext, condition: Any, timeout: float, what: str, interval: float = 0.5
) -> None:
    """Like harness.wait_until, but fails at once when a worker crashed or none is left."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ctx.fleet.assert_none_crashed()
        if condition(ctx):
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


def _heal(ctx: ChaosContext) -> None:
    ctx.sandbox("faults", "PUT", ctx.baseline_faults)
    ctx.sandbox("release", "POST", {})
    if ctx.scenario.faults:
        ctx.mark()  # the sandbox faults lasted until now
    if not ctx.fleet.live():
        ctx.fleet.start()
        ctx.mark()


def _drain_timeouts(fleet: Fleet) -> list[str]:
    out = []
    for m in fleet.members:
        for e in m.events():
            if e.get("event") == "shutdown_finished" and not e.get("drained", True):
                out.append(f"{m.name} shutdown")
            if e.get("event") == "partitions_revoked" and e.get("unacknowledged"):
                out.append(f"{m.name} revoke")
    return out
