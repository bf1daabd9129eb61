"""The segment registry on Kafka: the second and last module that imports confluent_kafka.

`SegmentRegistry` keeps the name → InMobi segment ID mapping in a compacted, single-partition
topic, so that restarts, crashes and several workers never create one segment twice. The record
format and the claim protocol are pure and live in `worker.registry_log`; this module moves them
over Kafka.

Reading is a background tail: a consumer assigned to partition 0 from the beginning (no consumer
group is joined, nothing is committed) folds every record into one `RegistryView` for as long as
the registry runs, so IDs published by other workers are learned as they appear.

The end of the log is never taken from ListOffsets "latest" (some Kafka-protocol brokers count
record batches there). Instead the registry appends a record of its own (a `marker:<worker_id>` at
start, the claim itself in `resolve`) and reads until the tail has passed the offset the delivery
report gave for it.

Threading: one dedicated thread owns the consumer and also serves the producer's delivery reports;
the event loop produces (non-blocking), folds records and decides. `KafkaException` and
`KafkaError` are translated into `worker.errors` here and never leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from worker.errors import FatalError, SyncError, TransientError
from worker.registry_log import (
    Known,
    Mine,
    NoClaim,
    RegistryEntry,
    RegistryView,
    Retired,
    Theirs,
    claim_record,
    format_registry,
    id_record,
    marker_record,
    needs_renewal,
    parse_record,
    release_record,
    retired_record,
)

__all__ = ["RegistryEntry", "SegmentRegistry", "format_registry", "list_registry"]

log = structlog.get_logger(__name__)

Fetched = list[tuple[int, bytes | None, bytes | None]]
_CONNECTION_PREFIXES = ("bootstrap.", "client.", "security.", "sasl.", "ssl.", "socket.", "broker.")
# librdkafka's fetch.queue.backoff.ms of 1000 ms stalls consume() for ~0.5 s at a time.
_FAST_FETCH = {"fetch.wait.max.ms": 100, "fetch.queue.backoff.ms": 10}


def _error(err: KafkaError) -> SyncError:
    if err.fatal():
        return FatalError(f"kafka: {err.str()}")
    return TransientError(f"kafka: {err.str()}")


def _translate(exc: KafkaException) -> SyncError:
    err = exc.args[0] if exc.args else None
    return _error(err) if isinstance(err, KafkaError) else TransientError(f"kafka: {exc}")


def _closed() -> TransientError:
    return TransientError("segment registry is not running")


def _connection(conf: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in conf.items() if k.startswith(_CONNECTION_PREFIXES)}


def _reader_config(conf: Mapping[str, Any], topic: str) -> dict[str, Any]:
    """An assign-only reader: the group id is only needed by librdkafka, never joined."""
    out = _FAST_FETCH | {k: v for k, v in conf.items() if k != "group.instance.id"}
    out.setdefault("group.id", f"{topic}.reader")
    fixed = {"enable.auto.commit": False, "enable.auto.offset.store": False}
    return out | fixed | {"auto.offset.reset": "earliest"}


def _open_reader(conf: Mapping[str, Any], topic: str) -> Any:
    try:
        consumer = Consumer(_reader_config(conf, topic))
        consumer.assign([KTopicPartition(topic, 0, OFFSET_BEGINNING)])
    except KafkaException as exc:
        raise _translate(exc) from None
    return consumer


def _fetch(consumer: Any, timeout: float) -> Fetched:
    """One consume round: (offset, key, value) of every record, errors translated."""
    try:
        messages = consumer.consume(500, timeout)
    except KafkaException as exc:
        raise _translate(exc) from None
    out: Fetched = []
    for m in messages:
        err = m.error()
        if err is None:
            out.append((m.offset(), m.key(), m.value()))
        elif err.fatal():
            raise _error(err)
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("segment_registry_read_error", error=err.str())
    return out


def _topic_partitions(conf: Mapping[str, Any], topic: str, timeout: float) -> int | None:
    """Partition count of `topic`, None when it does not exist (never auto-creates it)."""
    try:
        found = AdminClient(_connection(conf)).list_topics(timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise _translate(exc) from None
    return None if found is None else len(found.partitions)


def _ensure_topic(conf: Mapping[str, Any], topic: str, timeout: float) -> None:
    """Create the compacted one-partition topic if missing; refuse one with more partitions."""
    partitions = _topic_partitions(conf, topic, timeout)
    if partitions is not None:
        if partitions != 1:
            raise FatalError(f"segment registry topic {topic} has {partitions} partitions, not 1")
        return
    new = NewTopic(topic, 1, -1, config={"cleanup.policy": "compact"})  # broker's replication
    try:
        admin = AdminClient(_connection(conf))  # referenced until the future is done
        admin.create_topics([new], request_timeout=timeout)[topic].result()
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise _translate(exc) from None


class SegmentRegistry:
    """Name → segment ID, shared by every worker through the registry topic."""

    def __init__(
        self,
        producer_config: Mapping[str, Any],
        consumer_config: Mapping[str, Any],
        topic: str,
        worker_id: str,
        *,
        claim_ttl_seconds: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topic = topic
        self.worker_id = worker_id
        self._producer_conf = dict(producer_config) | {"linger.ms": 5}
        self._consumer_conf = dict(consumer_config)
        self._ttl_ms = int(claim_ttl_seconds * 1000)
        self._clock = clock
        self._view = RegistryView()
        self._next_offset = 0  # first offset the tail has not read yet
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="segment-registry")
        self._locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._failure: SyncError | None = None
        self._closing = False
        self._producer: Any = None
        self._consumer: Any = None
        self._tail_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop  # set by start(); delivery reports need it

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def start(self, timeout: float = 60.0) -> None:
        """Create the topic if missing, start the tail and read the log to its end.

        On failure (TransientError after `timeout`) everything started is closed again.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._start(timeout)
        except TimeoutError:
            await self.close()
            raise TransientError(
                f"segment registry {self.topic} not read within {timeout} s"
            ) from None
        except BaseException:
            await self.close()
            raise
        log.info("segment_registry_started", topic=self.topic, segments=len(self._view.known()))

    async def _start(self, timeout: float) -> None:
        loop = self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(_ensure_topic, self._producer_conf, self.topic, timeout)
        try:
            self._producer = Producer(self._producer_conf)
        except KafkaException as exc:
            raise _translate(exc) from None
        self._consumer = await loop.run_in_executor(
            self._executor, _open_reader, self._consumer_conf, self.topic
        )
        self._tail_task = asyncio.create_task(self._tail(), name=f"registry-tail:{self.topic}")
        await self._read_to_end()

    async def _read_to_end(self) -> None:
        key, value = marker_record(self.worker_id, self._now_ms())
        await self._caught_up(await self._append(key, value))
        self._send(key, None)  # the marker served its purpose: let compaction drop it

    def known(self) -> dict[str, str]:
        return self._view.known()

    def claimants(self, name: str) -> list[str]:
        """Workers holding a claim on `name` in the log, first claim first (for diagnosis)."""
        return [claim.worker for claim in self._view.claims(name)]

    async def resolve(self, name: str, create: Callable[[], Awaitable[str]]) -> str:
        """The ID of `name`, calling `create` only if this worker wins the claim for it."""
        found = self._view.get(name)
        if found is not None:
            return found
        async with self._locks.setdefault(name, asyncio.Lock()):
            try:
                await self._claim(name)
                return await self._contend(name, create)
            finally:
                self._release(name)

    async def publish(self, name: str, segment_id: str) -> None:
        """Record an ID learned elsewhere; returns once the tail has read it back."""
        if self._view.get(name) != segment_id:
            await self._record_id(name, segment_id)

    def retire(self, name: str, segment_id: str) -> None:
        """InMobi no longer knows `segment_id` (404): forget it here and tell the other workers.

        Takes effect locally at once (retirement does not depend on log order); the record is
        queued without waiting, so the next `resolve(name)` claims and creates a new segment.
        """
        self._view.apply(Retired(name, segment_id))
        try:
            self._send(*retired_record(name, segment_id, self.worker_id, self._now_ms()))
        except SyncError as exc:  # the others find out by their own 404
            log.warning("segment_retire_failed", segment=name, error=str(exc))
        log.info("segment_retired", segment=name, segment_id=segment_id)

    async def _contend(self, name: str, create: Callable[[], Awaitable[str]]) -> str:
        holder = None
        while True:
            decision = self._view.decide(name, self.worker_id, self._now_ms())
            match decision:
                case Known(segment_id=segment_id):
                    return segment_id
                case Mine() if needs_renewal(decision, self._now_ms(), self._ttl_ms):
                    await self._claim(name)
                case Mine():
                    return await self._create(name, create)
                case Theirs(worker=worker):
                    if worker != holder:
                        log.info("segment_claim_waiting", segment=name, holder=worker)
                        holder = worker
                    await self._await_other(decision)
                case NoClaim():
                    await self._claim(name)

    async def _claim(self, name: str) -> None:
        record = claim_record(name, self.worker_id, self._now_ms(), self._ttl_ms)
        await self._caught_up(await self._append(*record))

    async def _create(self, name: str, create: Callable[[], Awaitable[str]]) -> str:
        log.info("segment_claim_won", segment=name, worker=self.worker_id)
        segment_id = await create()
        await self._record_id(name, segment_id)
        log.info("segment_registered", segment=name, segment_id=segment_id)
        return segment_id

    async def _record_id(self, name: str, segment_id: str) -> None:
        record = id_record(name, segment_id, self.worker_id, self._now_ms())
        await self._caught_up(await self._append(*record))

    async def _await_other(self, theirs: Theirs) -> None:
        """Until the log moves on, or the winning claim expires (at most 1 s, then re-check)."""
        seen = self._next_offset
        left = max(theirs.expires_at_ms - self._now_ms(), 10) / 1000
        await self._wait_for(lambda: self._next_offset > seen, timeout=min(left, 1.0))

    def _release(self, name: str) -> None:
        try:
            self._send(*release_record(name, self.worker_id))
        except SyncError as exc:  # the claim then simply expires
            log.warning("segment_claim_release_failed", segment=name, error=str(exc))

    # -- producing -------------------------------------------------------------------------

    def _send(
        self, key: bytes, value: bytes | None, future: asyncio.Future[int] | None = None
    ) -> None:
        if self._producer is None or self._closing:
            raise _closed()
        report = partial(self._delivered, future)
        try:
            self._producer.produce(
                self.topic, key=key, value=value, partition=0, on_delivery=report
            )
        except KafkaException as exc:
            raise _translate(exc) from None
        except BufferError as exc:  # librdkafka's local queue is full
            raise TransientError(f"kafka: {exc}") from None

    async def _append(self, key: bytes, value: bytes | None) -> int:
        """Produce one record and return its offset once the broker confirmed it."""
        future: asyncio.Future[int] = self._loop.create_future()
        self._send(key, value, future)
        return await future

    def _delivered(
        self, future: asyncio.Future[int] | None, err: KafkaError | None, msg: Any
    ) -> None:
        """Delivery report, on the registry thread: hand the outcome to the event loop."""
        if future is None:
            if err is not None:
                log.warning("segment_registry_write_failed", error=err.str())
            return
        outcome: SyncError | int = _error(err) if err is not None else int(msg.offset())
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            self._loop.call_soon_threadsafe(_settle, future, outcome)

    # -- the tail --------------------------------------------------------------------------

    def _poll_once(self) -> Fetched:
        self._producer.poll(0)
        return _fetch(self._consumer, 0.1)

    async def _tail(self) -> None:
        try:
            while not self._closing:
                await self._fold(await self._next_batch())
        except SyncError as exc:
            await self._fail(exc)
        except Exception as exc:
            await self._fail(FatalError(f"segment registry tail failed: {exc!r}"))

    async def _next_batch(self) -> Fetched:
        try:
            return await self._loop.run_in_executor(self._executor, self._poll_once)
        except TransientError as exc:
            log.warning("segment_registry_read_failed", error=str(exc))
            await asyncio.sleep(0.5)
            return []

    async def _fold(self, batch: Fetched) -> None:
        for offset, key, value in batch:
            record = parse_record(key, value)
            if record is None:
                log.warning("segment_registry_record_ignored", offset=offset, key=repr(key))
            else:
                self._view.apply(record)
            self._next_offset = max(self._next_offset, offset + 1)
        if batch:
            async with self._changed:
                self._changed.notify_all()

    async def _fail(self, exc: SyncError) -> None:
        self._failure = self._failure or exc
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Until `predicate` holds (or `timeout` passes); raise if the tail has stopped."""

        def ready() -> bool:
            if self._failure is not None:
                raise self._failure
            return predicate()

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._changed.wait_for(ready)

    async def _caught_up(self, offset: int) -> None:
        await self._wait_for(lambda: self._next_offset > offset)

    async def close(self) -> None:
        """Stop the tail, deliver queued records (claim releases) and close the clients."""
        if self._closing:
            return
        self._closing = True
        if self._tail_task is not None:
            await self._tail_task
        await self._fail(_closed())
        loop = asyncio.get_running_loop()
        if self._producer is not None:
            left = await loop.run_in_executor(self._executor, self._producer.flush, 10.0)
            if left:
                log.warning("segment_registry_unflushed", records=left)
        if self._consumer is not None:
            await loop.run_in_executor(self._executor, self._consumer.close)
        self._executor.shutdown(wait=False)


def _settle(future: asyncio.Future[int], outcome: SyncError | int) -> None:
    if future.done():
        return
    if isinstance(outcome, SyncError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


# -- `inmobi-sync segments list` ---------------------------------------------------------------


def _produce_confirmed(
    conf: Mapping[str, Any], topic: str, records: list[tuple[bytes, bytes | None]], timeout: float
) -> int:
    """Append records to partition 0 (acks=all) and return the first one's offset once confirmed."""
    delivered: list[tuple[KafkaError | None, int | None]] = []
    producer = Producer(_connection(conf) | {"acks": "all"})
    for n, (key, value) in enumerate(records):
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=0,
            on_delivery=(lambda err, msg: delivered.append((err, msg.offset())))
            if n == 0
            else None,
        )
    producer.flush(timeout)
    if not delivered:
        raise TransientError(f"kafka: write to {topic} not confirmed within {timeout} s")
    err, offset = delivered[0]
    if err is not None or offset is None:
        raise _error(err) if err is not None else TransientError("kafka: write has no offset")
    return offset


def _produce_marker(conf: Mapping[str, Any], topic: str, worker: str, timeout: float) -> int:
    """Append a marker and return its offset: the end of the log as of now."""
    key, value = marker_record(worker, int(time.time() * 1000))
    # The tombstone after it lets compaction drop both.
    return _produce_confirmed(conf, topic, [(key, value), (key, None)], timeout)


def _read_until(conf: Mapping[str, Any], topic: str, offset: int, timeout: float) -> RegistryView:
    view = RegistryView()
    consumer = _open_reader(_connection(conf), topic)
    deadline = time.monotonic() + timeout
    seen = -1
    try:
        while seen < offset:
            if time.monotonic() > deadline:
                raise TransientError(f"kafka: timed out reading {topic}")
            for at, key, value in _fetch(consumer, 0.2):
                record = parse_record(key, value)
                if record is not None:
                    view.apply(record)
                seen = max(seen, at)
    finally:
        consumer.close()
    return view


def list_registry(
    bootstrap_conf: Mapping[str, Any], topic: str, timeout: float = 30.0
) -> list[RegistryEntry]:
    """Every registered segment, read from the whole registry topic (blocking; for the CLI)."""
    if _topic_partitions(bootstrap_conf, topic, timeout) is None:
        return []
    worker = f"cli-{socket.gethostname()}-{os.getpid()}"
    try:
        end = _produce_marker(bootstrap_conf, topic, worker, timeout)
    except KafkaException as exc:
        raise _translate(exc) from None
    view = _read_until(bootstrap_conf, topic, end, timeout)
    return [RegistryEntry.from_record(record) for record in view.entries()]


def retire_registered(
    bootstrap_conf: Mapping[str, Any], topic: str, name: str, timeout: float = 30.0
) -> str | None:
    """Mark a registered segment's ID dead (for the CLI, after InMobi answered 404 for it).

    Returns the retired ID, or None when the registry holds no ID for `name`. Workers that
    start afterwards see the retirement and create a new segment at its next upload; running
    workers keep the ID they resolved until they restart (the CLI says so).
    """
    current = {e.name: e.segment_id for e in list_registry(bootstrap_conf, topic, timeout)}
    segment_id = current.get(name)
    if segment_id is None:
        return None
    worker = f"cli-{socket.gethostname()}-{os.getpid()}"
    record = retired_record(name, segment_id, worker, int(time.time() * 1000))
    try:
        _produce_confirmed(bootstrap_conf, topic, [record], timeout)
    except KafkaException as exc:
        raise _translate(exc) from None
    return segment_id
