"""Issue 7 acceptance: CDP event → Kafka → worker → InMobi segment → a bid for that device."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.integration.harness import (
    Names,
    WorkerProcess,
    committed_reaches,
    publish,
    wait_until,
    worker_env,
)
from worker.embedded import EmbeddedBroker
from worker.generator import GeneratedRecord
from worker.openrtb.verify import VerifyResult, verify
from worker.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration


def change(device: str, op: str, segment: str = "ios gamers") -> GeneratedRecord:
    value = json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "segment": segment,
            "op": op,
            "id_type": "IDFA",
            "device_id": device,
            "occurred_at": 0,
        }
    ).encode()
    return GeneratedRecord(device.encode(), value, "json", False, None)


def ask(sandbox: SandboxThread, device: str) -> VerifyResult:
    async def go() -> VerifyResult:
        async with aiohttp.ClientSession() as http:
            return await verify(f"{sandbox.url}/openrtb2/bid", device, "IDFA", http)

    return asyncio.run(go())


def test_a_synced_device_gets_a_bid_and_a_removed_one_does_not(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    device = str(uuid.uuid4()).upper()  # the CDP writes upper case; InMobi matches lower case
    other = str(uuid.uuid4())
    assert not ask(sandbox, device).targeted  # nobody knows the device yet
    first = publish(
        broker.bootstrap,
        names.topic,
        [change(device, "ADD"), change(other, "ADD")],
        partitions=2,
        dlq_topic=names.dlq,
    )
    worker = WorkerProcess(worker_env(broker.bootstrap, sandbox.url, names), log_dir)
    try:
        wait_until(
            lambda: committed_reaches(
                broker.bootstrap, names.group, names.topic, first.end_offsets
            ),
            60,
            "the ADD is synced",
        )
        added = ask(sandbox, device)
        assert added.targeted
        assert added.segment == "IOS_GAMERS"
        assert added.price is not None and added.price > 0

        second = publish(broker.bootstrap, names.topic, [change(device, "REMOVE")], partitions=2)
        ends = {p: max(o, first.end_offsets.get(p, 0)) for p, o in second.end_offsets.items()}
        wait_until(
            lambda: committed_reaches(broker.bootstrap, names.group, names.topic, ends),
            60,
            "the REMOVE is synced",
        )
        removed = ask(sandbox, device)
        assert not removed.targeted
        assert removed.nbr == 8  # unmatched user
        assert ask(sandbox, other).targeted  # the other member is untouched
    finally:
        assert worker.stop() == 0
