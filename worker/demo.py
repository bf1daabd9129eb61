"""`inmobi-sync demo`: the whole path on this machine, with a visible result.

Starts the embedded broker and the sandbox, publishes a sample stream (three encodings, adds and
removes, a few bad records), runs `inmobi-sync run` as a real process until its committed offsets
reach the end of the topic, stops it with SIGTERM, then prints one row per segment and verifies a
synced and a removed device with an OpenRTB bid request. Everything it started is stopped again.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import aiohttp

from worker.avro_fast import BUNDLED_SCHEMA_JSON as SCHEMA_JSON
from worker.embedded import EmbeddedBroker
from worker.generator import ExpectedChange, GeneratedRecord, GeneratorSpec, fold_model, generate
from worker.kafka import EventProducer, create_topics, group_committed, read_all
from worker.localstack import WorkerProcess, http_json, local_env
from worker.model import IdType, Op
from worker.openrtb.verify import VerifyResult, format_result, verify

__all__ = ["main"]

DEMO_SEGMENTS = ("high_value users", "CHURN_RISK", "cart-abandoners", "Gamers", "sports fans")


def _publish(
    bootstrap: str, topic: str, dlq: str, records: list[GeneratedRecord]
) -> dict[int, int]:
    conf = {"bootstrap.servers": bootstrap}
    create_topics(conf, {topic: 12, dlq: 1})
    producer = EventProducer(conf, topic)
    for r in records:
        producer.send(r.key, r.value)
    if producer.flush(60) or producer.failed:
        raise RuntimeError("could not publish the sample stream")
    return producer.end_offsets


def _wait_caught_up(
    bootstrap: str,
    *,
    group: str,
    topic: str,
    ends: Mapping[int, int],
    worker: WorkerProcess,
    timeout: float = 180,
) -> None:
    deadline = time.monotonic() + timeout
    total = sum(ends.values())
    while time.monotonic() < deadline:
        worker.check_alive()
        got = group_committed({"bootstrap.servers": bootstrap}, group, topic, ends)
        done = sum(min(got.get(p) or 0, o) for p, o in ends.items())
        print(f"\r  committed {done}/{total} offsets", end="", flush=True)
        if done >= total:
            print()
            return
        time.sleep(0.5)
    raise RuntimeError("the worker did not catch up in time")


def _dlq_by_segment(bootstrap: str, dlq: str, count: int) -> Counter[str]:
    from worker.naming import inmobi_segment_name

    out: Counter[str] = Counter()
    for rec in read_all({"bootstrap.servers": bootstrap}, dlq, {0: count}):
        try:
            out[inmobi_segment_name(json.loads(rec.value or b"")["segment"])] += 1
        except Exception:
            out["(unreadable)"] += 1
    return out


def _table(state: dict[str, Any], dlq: Counter[str]) -> str:
    head = ("segment", "InMobi segment ID", "members", "adds", "removes", "uploads", "DLQ")
    rows = [head] + [
        (
            s["name"],
            s["id"],
            str(s["members"]),
            str(s["adds"]),
            str(s["removes"]),
            str(s["uploads"]),
            str(dlq.get(s["name"], 0)),
        )
        for s in sorted(state["segments"], key=lambda s: s["name"])
    ]
    rows += [
        (name, "-", "-", "-", "-", "-", str(n))
        for name, n in sorted(dlq.items())
        if name not in {s["name"] for s in state["segments"]}
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def main() -> int:
    from worker.observability import configure_logging
    from worker.sandbox.server import SandboxThread

    configure_logging("WARNING", "console")  # the sandbox runs in this process: keep it quiet
    tag = uuid.uuid4().hex[:6]
    topic, dlq, group = (
        f"segment-membership-changes-{tag}",
        f"segment-membership-changes-{tag}.dlq",
        f"demo-{tag}",
    )
    print("starting the embedded Kafka-protocol broker and the InMobi sandbox ...")
    with EmbeddedBroker() as broker, SandboxThread() as sandbox:
        print(f"  broker {broker.bootstrap}, sandbox {sandbox.url}")
        schema_id = http_json(
            f"{sandbox.url}/registry/subjects/{topic}-value/versions",
            "POST",
            {"schema": SCHEMA_JSON},
        )["id"]
        spec = GeneratorSpec(
            count=5000,
            segments=DEMO_SEGMENTS,
            devices=1500,
            remove_share=0.25,
            bad_share=0.004,
            encodings=("avro", "framed", "json"),
            uppercase_share=0.2,
            seed=42,
            schema_id=schema_id,
        )
        records = list(generate(spec))
        ends = _publish(broker.bootstrap, topic, dlq, records)
        bad = sum(r.bad for r in records)
        print(f"published {len(records)} events ({bad} bad) to {topic} over {len(ends)} partitions")
        env = local_env(broker.bootstrap, sandbox.url, topic, dlq, group, LOG_FORMAT="json")
        worker = WorkerProcess(env, Path(tempfile.gettempdir()), f"inmobi-sync-demo-{tag}")
        try:
            print(f"worker running (log: {worker.log_path}); waiting until it has caught up ...")
            _wait_caught_up(broker.bootstrap, group=group, topic=topic, ends=ends, worker=worker)
        finally:
            code = worker.stop()
        print(f"worker stopped with exit code {code}")
        state = http_json(f"{sandbox.url}/_sandbox/state")
        print()
        print(_table(state, _dlq_by_segment(broker.bootstrap, dlq, bad)))
        model = fold_model(r.change for r in records if r.change is not None)
        expected = sum(len(m) for m in model.values())
        synced = sum(s["members"] for s in state["segments"])
        print(f"\nmembers in the sandbox: {synced}; expected from the event log: {expected}")
        ok = code == 0 and synced == expected
        ok = _verify_devices(sandbox.url, records) and ok
        print("demo OK" if ok else "demo FAILED")
        return 0 if ok else 1


def _pick_devices(records: list[GeneratedRecord]) -> tuple[ExpectedChange, ExpectedChange]:
    """A device that ends as a member of some segment, and one that was added, then removed."""
    model = fold_model(r.change for r in records if r.change is not None)
    members = {d for m in model.values() for _, d in m}
    mobile = [
        r.change
        for r in records
        if r.change is not None and r.change.id_type in (IdType.IDFA, IdType.GAID)
    ]
    synced = next(c for c in mobile if c.device_id in members)
    removed = next(c for c in reversed(mobile) if c.op is Op.ADD and c.device_id not in members)
    return synced, removed


def _verify_devices(sandbox_url: str, records: list[GeneratedRecord]) -> bool:
    """Close the loop: a bid request for a synced device gets a bid, a removed one does not."""
    synced, removed = _pick_devices(records)

    async def check() -> list[tuple[bool, VerifyResult]]:
        async with aiohttp.ClientSession() as http:
            out = []
            for change, want in ((synced, True), (removed, False)):
                id_type: Literal["IDFA", "GAID"] = (
                    "IDFA" if change.id_type is IdType.IDFA else "GAID"
                )
                result = await verify(
                    f"{sandbox_url}/openrtb2/bid", change.device_id, id_type, http
                )
                out.append((want, result))
            return out

    print("\nOpenRTB check against the sandbox bidder:")
    ok = True
    for want, result in asyncio.run(check()):
        print(f"  {'synced ' if want else 'removed'}  {format_result(result)}")
        ok = ok and result.targeted is want
    return ok
