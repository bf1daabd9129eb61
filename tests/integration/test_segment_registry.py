"""The segment registry against a real Kafka-protocol broker (embedded Tansu).

Broker differences written around (shared BROKER.md): the end of the log comes from our own
marker and claim records, never from ListOffsets; no consumer group is used (assign only).
Every wait has a deadline (`asyncio.timeout`); nothing sleeps blindly.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from worker.embedded import EmbeddedBroker, free_port
from worker.errors import FatalError, TransientError
from worker.kafka_registry import (
    SegmentRegistry,
    _translate,
    format_registry,
    list_registry,
    retire_registered,
)
from worker.registry_log import claim_record

pytestmark = pytest.mark.integration

DEADLINE = 30.0


def connection(broker: EmbeddedBroker) -> dict[str, Any]:
    return {"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 30000}


def consumer_conf(broker: EmbeddedBroker) -> dict[str, Any]:
    return connection(broker) | {"fetch.wait.max.ms": 100, "fetch.queue.backoff.ms": 10}


def producer_conf(broker: EmbeddedBroker) -> dict[str, Any]:
    return connection(broker) | {"enable.idempotence": True, "acks": "all"}


class Creator:
    """A fake InMobi `create_segment`: counts calls, can be held open or made to fail."""

    ids = itertools.count(1)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.times: list[float] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    def for_name(self, name: str) -> Callable[[], Awaitable[str]]:
        async def create() -> str:
            self.calls.append(name)
            self.times.append(time.time())
            self.entered.set()
            await self.release.wait()
            if self.fail:
                raise TransientError("inmobi: 503")
            return f"seg-{name}-{next(self.ids)}"

        return create


@pytest.fixture
def topic() -> str:
    return f"registry-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def open_registry(
    broker: EmbeddedBroker, topic: str
) -> AsyncIterator[Callable[..., Awaitable[SegmentRegistry]]]:
    async with AsyncExitStack() as stack:

        async def make(worker: str, ttl: float = 300) -> SegmentRegistry:
            registry = SegmentRegistry(
                producer_conf(broker), consumer_conf(broker), topic, worker, claim_ttl_seconds=ttl
            )
            stack.push_async_callback(registry.close)
            await registry.start()
            return registry

        yield make


async def test_two_workers_meeting_new_segments_create_each_exactly_once(
    open_registry: Callable[..., Awaitable[SegmentRegistry]],
) -> None:
    a, b = await open_registry("worker-a"), await open_registry("worker-b")
    creator = Creator()
    names = ["HIGH_VALUE", "CHURN_RISK", "NEW_USERS"]
    async with asyncio.timeout(DEADLINE):
        results = await asyncio.gather(
            *(r.resolve(n, creator.for_name(n)) for n in names for r in (a, b))
        )
    assert sorted(creator.calls) == sorted(names)
    by_name = dict(zip(names, results[::2], strict=True))
    assert results[1::2] == results[::2]
    assert a.known() == b.known() == by_name


async def test_a_restarted_worker_knows_the_segment_without_creating_it(
    open_registry: Callable[..., Awaitable[SegmentRegistry]],
) -> None:
    creator = Creator()
    first = await open_registry("worker-a")
    async with asyncio.timeout(DEADLINE):
        segment_id = await first.resolve("HIGH_VALUE", creator.for_name("HIGH_VALUE"))
    await first.close()
    restarted = await open_registry("worker-a2")
    assert restarted.known() == {"HIGH_VALUE": segment_id}
    assert await restarted.resolve("HIGH_VALUE", creator.for_name("HIGH_VALUE")) == segment_id
    assert creator.calls == ["HIGH_VALUE"]


async def test_a_dead_claimant_is_taken_over_after_its_claim_expires(
    broker: EmbeddedBroker, topic: str, open_registry: Callable[..., Awaitable[SegmentRegistry]]
) -> None:
    ttl_ms = 1500
    survivor = await open_registry("worker-b", ttl=1.5)
    dead_claim_at = time.time()
    key, value = claim_record("SEG", "worker-dead", int(dead_claim_at * 1000), ttl_ms)
    ghost = Producer(connection(broker))
    ghost.produce(topic, key=key, value=value, partition=0)
    assert ghost.flush(10) == 0  # the ghost never writes an ID or releases its claim
    creator = Creator()
    async with asyncio.timeout(DEADLINE):
        segment_id = await survivor.resolve("SEG", creator.for_name("SEG"))
    assert creator.calls == ["SEG"]
    assert creator.times[0] >= dead_claim_at + ttl_ms / 1000
    assert survivor.known() == {"SEG": segment_id}


async def test_a_claimant_whose_creation_fails_hands_over_without_waiting_for_the_ttl(
    open_registry: Callable[..., Awaitable[SegmentRegistry]],
) -> None:
    a, b = await open_registry("worker-a"), await open_registry("worker-b")  # TTL 300 s
    failing, working = Creator(), Creator()
    failing.release.clear()
    failing.fail = True
    async with asyncio.timeout(DEADLINE):
        first = asyncio.create_task(a.resolve("SEG", failing.for_name("SEG")))
        await failing.entered.wait()  # a won the claim and is creating
        second = asyncio.create_task(b.resolve("SEG", working.for_name("SEG")))
        await wait_for_claims(b, "SEG", 2)
        failing.release.set()
        with pytest.raises(TransientError):
            await first
        segment_id = await second
    assert working.calls == ["SEG"]
    assert b.known() == {"SEG": segment_id}


async def wait_for_claims(registry: SegmentRegistry, name: str, n: int) -> None:
    while len(registry.claimants(name)) < n:
        await asyncio.sleep(0.02)


async def test_ids_published_by_one_worker_reach_the_other(
    open_registry: Callable[..., Awaitable[SegmentRegistry]],
) -> None:
    a, b = await open_registry("worker-a"), await open_registry("worker-b")
    await a.publish("FROM_FILE", "seg-42")
    async with asyncio.timeout(DEADLINE):
        while b.known().get("FROM_FILE") != "seg-42":
            await asyncio.sleep(0.02)


async def test_a_retired_id_is_replaced_once_by_workers_that_both_saw_the_404(
    open_registry: Callable[..., Awaitable[SegmentRegistry]],
) -> None:
    a, b = await open_registry("worker-a"), await open_registry("worker-b")
    await a.publish("SEG", "seg-gone")
    creator = Creator()
    async with asyncio.timeout(DEADLINE):
        while b.known().get("SEG") != "seg-gone":
            await asyncio.sleep(0.02)
        a.retire("SEG", "seg-gone")
        b.retire("SEG", "seg-gone")
        new_a, new_b = await asyncio.gather(
            a.resolve("SEG", creator.for_name("SEG")), b.resolve("SEG", creator.for_name("SEG"))
        )
    assert creator.calls == ["SEG"]
    assert new_a == new_b != "seg-gone"


async def test_list_registry_shows_every_segment(
    broker: EmbeddedBroker, topic: str, open_registry: Callable[..., Awaitable[SegmentRegistry]]
) -> None:
    registry = await open_registry("worker-a")
    creator = Creator()
    async with asyncio.timeout(DEADLINE):
        for name in ("B_SEG", "A_SEG"):
            await registry.resolve(name, creator.for_name(name))
    entries = await asyncio.to_thread(list_registry, connection(broker), topic)
    assert [(e.name, e.worker) for e in entries] == [("A_SEG", "worker-a"), ("B_SEG", "worker-a")]
    assert {e.name: e.segment_id for e in entries} == registry.known()
    assert "A_SEG" in format_registry(entries)


def test_list_registry_of_a_missing_topic_is_empty_and_creates_nothing(
    broker: EmbeddedBroker, topic: str
) -> None:
    assert list_registry(connection(broker), topic) == []
    assert list_registry(connection(broker), topic) == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (KafkaError(KafkaError._TRANSPORT, "down"), TransientError),
        (KafkaError(KafkaError._FATAL, "fenced", fatal=True), FatalError),
        ("not a KafkaError", TransientError),
    ],
)
def test_kafka_exceptions_become_worker_errors(error: object, expected: type) -> None:
    assert type(_translate(KafkaException(error))) is expected


async def test_start_against_no_broker_fails_within_its_timeout() -> None:
    nowhere = {"bootstrap.servers": f"127.0.0.1:{free_port()}", "socket.timeout.ms": 30000}
    registry = SegmentRegistry(nowhere, nowhere, "registry-unreachable", "worker-a")
    started = time.monotonic()
    with pytest.raises(TransientError):
        await registry.start(timeout=1.0)
    assert time.monotonic() - started < 5


async def test_a_segment_retired_from_the_cli_is_recreated_by_the_next_worker(
    broker: EmbeddedBroker, topic: str, open_registry: Callable[..., Awaitable[SegmentRegistry]]
) -> None:
    first = await open_registry("worker-a")
    creator = Creator()
    async with asyncio.timeout(DEADLINE):
        old = await first.resolve("SEG", creator.for_name("SEG"))
    retired = await asyncio.to_thread(retire_registered, connection(broker), topic, "SEG")
    assert retired == old
    assert await asyncio.to_thread(retire_registered, connection(broker), topic, "NONE") is None
    later = await open_registry("worker-b")  # a restarted worker reads the retirement
    async with asyncio.timeout(DEADLINE):
        new = await later.resolve("SEG", creator.for_name("SEG"))
    assert new != old
    assert creator.calls == ["SEG", "SEG"]
    entries = await asyncio.to_thread(list_registry, connection(broker), topic)
    assert [(e.name, e.segment_id) for e in entries] == [("SEG", new)]
