"""The only module that imports confluent_kafka: the event source and the dead-letter sink.

Threading: every `KafkaSource` call runs on one dedicated thread (the pipeline's consumer thread);
rebalance callbacks therefore also run there, inside `poll_batch`. `DlqSink` delivery callbacks run
in whichever thread calls `DlqSink.poll`, which the pipeline does from its event loop.
`KafkaException` and `KafkaError` are translated into `worker.errors` here and never leave.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

import confluent_kafka
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition

from worker.errors import FatalError, TransientError
from worker.model import RecordBatch, Rejection, SourceMessage

__all__ = ["DlqSink", "KafkaSource", "consumer_config", "dlq_headers", "producer_config"]

log = structlog.get_logger(__name__)

RebalanceCallback = Callable[[list[int]], None]
# Unbound accessors of confluent_kafka.Message, for `map` over a consume() result.
_VALUE, _PARTITION, _OFFSET, _ERROR = cast(
    "tuple[Any, Any, Any, Any]",
    (
        confluent_kafka.Message.value,
        confluent_kafka.Message.partition,
        confluent_kafka.Message.offset,
        confluent_kafka.Message.error,
    ),
)


def _common(settings: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        conf["sasl.password"] = password.get_secret_value() if password else None
    return conf


def consumer_config(settings: Any) -> dict[str, Any]:
    """librdkafka consumer properties: manual commits, cooperative-sticky, fast fetch defaults.

    `fetch.queue.backoff.ms` is lowered from librdkafka's 1000 ms, which stalls `consume()` for
    about half a second at a time. KAFKA_CONSUMER_OVERRIDES is applied last and wins.
    """
    conf = _common(settings) | {
        "group.id": settings.kafka_group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "fetch.wait.max.ms": 100,
        "fetch.queue.backoff.ms": 10,
        "queued.max.messages.kbytes": 65536,
    }
    if settings.kafka_group_instance_id:
        conf["group.instance.id"] = settings.kafka_group_instance_id
    return conf | dict(settings.kafka_consumer_overrides)


def producer_config(settings: Any) -> dict[str, Any]:
    """Producer for the DLQ and the registry topic: idempotent, acks=all, durable first."""
    conf = _common(settings) | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "compression.type": "lz4",
    }
    return conf | dict(settings.kafka_producer_overrides)


def _translate(exc: KafkaException) -> Exception:
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    if err is not None and err.fatal():
        return FatalError(f"kafka: {err.str()}")
    return TransientError(f"kafka: {err.str() if err else exc}")


class KafkaSource:
    """A subscribed consumer that hands over each poll as a `RecordBatch`."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self._consumer = Consumer(dict(config))

    def subscribe(
        self, on_assign: RebalanceCallback, on_revoke: RebalanceCallback, on_lost: RebalanceCallback
    ) -> None:
        def wrap(cb: RebalanceCallback) -> Callable[[Any, list[KTopicPartition]], None]:
            return lambda _c, parts: cb(sorted(tp.partition for tp in parts))

        self._consumer.subscribe(
            [self.topic],
            on_assign=wrap(on_assign),
            on_revoke=wrap(on_revoke),
            on_lost=wrap(on_lost),
        )

    def poll_batch(self, max_messages: int, timeout: float) -> RecordBatch:
        try:
            raw = self._consumer.consume(max_messages, timeout)
        except KafkaException as exc:
            raise _translate(exc) from None
        if any(map(_ERROR, raw)):  # rare: error events among the records
            raw = self._records_only(raw)
        # Hot path: three columns built by `map` in C, no object per record (see RecordBatch).
        return RecordBatch(
            self.topic,
            list(map(_VALUE, raw)),
            list(map(_PARTITION, raw)),
            list(map(_OFFSET, raw)),
            lambda i: (raw[i].key(), raw[i].timestamp()[1]),
        )

    @staticmethod
    def _records_only(raw: list[Any]) -> list[Any]:
        """The records of a consume() result; log its error events, raise on a fatal one."""
        records = []
        for m in raw:
            err = m.error()
            if err is None:
                records.append(m)
            elif err.fatal():
                raise FatalError(f"kafka: {err.str()}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("kafka_consume_error", error=err.str(), code=err.code())
        return records

    def _tps(self, offsets: Mapping[int, int]) -> list[KTopicPartition]:
        return [KTopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())]

    def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit synchronously; raise TransientError when the broker did not take all of it."""
        if not offsets:
            return
        try:
            result = self._consumer.commit(offsets=self._tps(offsets), asynchronous=False)
        except KafkaException as exc:
            raise _translate(exc) from None
        failed = [tp for tp in result or [] if tp.error is not None]
        if failed:
            raise TransientError(
                f"kafka: commit failed for partitions {[t.partition for t in failed]}"
            )

    def committed(self, partitions: Iterable[int], timeout: float = 10.0) -> dict[int, int | None]:
        tps = [KTopicPartition(self.topic, p) for p in partitions]
        try:
            result = self._consumer.committed(tps, timeout=timeout)
        except KafkaException as exc:
            raise _translate(exc) from None
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result}

    def pause(self, partitions: Iterable[int]) -> None:
        self._consumer.pause([KTopicPartition(self.topic, p) for p in partitions])

    def resume(self, partitions: Iterable[int]) -> None:
        self._consumer.resume([KTopicPartition(self.topic, p) for p in partitions])

    def high_watermarks(self, partitions: Iterable[int]) -> dict[int, int]:
        """End offsets as last seen by fetches (cached: no broker round trip)."""
        out = {}
        for p in partitions:
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    KTopicPartition(self.topic, p), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                out[p] = high
        return out

    def close(self) -> None:
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("kafka_close_failed", error=str(exc))


def dlq_headers(msg: SourceMessage, rejection: Rejection) -> list[tuple[str, str | bytes | None]]:
    """The Kafka Connect DLQ headers, so existing DLQ tooling reads our records."""
    return [
        ("__connect.errors.topic", msg.topic.encode()),
        ("__connect.errors.partition", str(msg.partition).encode()),
        ("__connect.errors.offset", str(msg.offset).encode()),
        ("__connect.errors.stage", rejection.stage.value.encode()),
        ("__connect.errors.exception.class.name", rejection.error_class.encode()),
        ("__connect.errors.exception.message", rejection.message.encode("utf-8", "replace")),
    ]


class DlqSink:
    """Writes rejected records to the dead-letter topic and reports each delivery."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self._producer = Producer(dict(config))

    def send(
        self, msg: SourceMessage, rejection: Rejection, on_done: Callable[[str | None], None]
    ) -> None:
        """Queue one DLQ record; `on_done(None)` once the broker confirmed it, else the error."""

        def report(err: KafkaError | None, _m: Any) -> None:
            on_done(None if err is None else err.str())

        headers = dlq_headers(msg, rejection)
        while True:
            try:
                self._producer.produce(
                    self.topic, key=msg.key, value=msg.value, headers=headers, on_delivery=report
                )
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: serve callbacks, then try again
            except KafkaException as exc:
                raise _translate(exc) from None

    def poll(self, timeout: float = 0.0) -> int:
        return int(self._producer.poll(timeout))

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries; return how many are still not confirmed."""
        return int(self._producer.flush(timeout))

    def pending(self) -> int:
        return len(self._producer)


def kafka_version() -> str:
    return str(confluent_kafka.libversion()[0])


def create_topics(
    config: Mapping[str, Any], topics: Mapping[str, int], compacted: Iterable[str] = ()
) -> None:
    """Create topics that do not exist yet (partition counts as given); existing ones are kept."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(dict(config))
    existing = set(admin.list_topics(timeout=15).topics)
    compact = set(compacted)
    new = [
        NewTopic(name, n, 1, config={"cleanup.policy": "compact"} if name in compact else {})
        for name, n in topics.items()
        if name not in existing
    ]
    if not new:
        return
    for name, future in admin.create_topics(new, operation_timeout=15).items():
        try:
            future.result()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise TransientError(f"kafka: cannot create topic {name}: {exc}") from None


class EventProducer:
    """Publishes keyed records and remembers the end offset per partition from delivery reports.

    End offsets come from delivery reports on purpose: some Kafka-protocol brokers answer
    ListOffsets "latest" in record batches rather than records.
    """

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self._producer = Producer(dict(config) | {"linger.ms": 20, "batch.num.messages": 10000})
        self.end_offsets: dict[int, int] = {}
        self.failed = 0

    def _report(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            return
        p, o = msg.partition(), msg.offset()
        if o + 1 > self.end_offsets.get(p, 0):
            self.end_offsets[p] = o + 1

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=self._report
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self, timeout: float = 60.0) -> int:
        return int(self._producer.flush(timeout))


def group_committed(
    config: Mapping[str, Any], group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int | None]:
    """Committed offsets of a consumer group, read without joining it."""
    consumer = Consumer(dict(config) | {"group.id": group, "enable.auto.commit": False})
    try:
        tps = [KTopicPartition(topic, p) for p in partitions]
        result = consumer.committed(tps, timeout=10)
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in result}
    except KafkaException as exc:
        raise _translate(exc) from None
    finally:
        consumer.close()


class StoredRecord(NamedTuple):
    """A record read back by tools and tests, headers included."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def read_all(
    config: Mapping[str, Any], topic: str, end_offsets: Mapping[int, int], timeout: float = 30.0
) -> list[StoredRecord]:
    """Every record of `topic` below the given end offsets (for tools and tests)."""
    consumer = Consumer(
        dict(config)
        | {
            "group.id": "inmobi-sync-reader",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
            "fetch.wait.max.ms": 100,
        }
    )
    wanted = {p: o for p, o in end_offsets.items() if o > 0}
    consumer.assign([KTopicPartition(topic, p, 0) for p in wanted])
    out: list[StoredRecord] = []
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    try:
        while any(seen.get(p, 0) < o for p, o in wanted.items()):
            if time.monotonic() > deadline:
                raise TransientError(f"kafka: timed out reading {topic}")
            m: Any
            for m in consumer.consume(10000, 0.2):
                if m.error() is None and m.offset() < wanted.get(m.partition(), 0):
                    out.append(
                        StoredRecord(
                            m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or [])
                        )
                    )
                    seen[m.partition()] = m.offset() + 1
    finally:
        consumer.close()
    return out


# --- operations helpers (`worker.ops`): topics, watermarks, streaming reads ----------------------


def _tool_consumer(config: Mapping[str, Any], group: str) -> Any:
    """A consumer that never joins its group and never commits: it only assigns and reads."""
    conf = {k: v for k, v in config.items() if k != "group.instance.id"}
    return Consumer(
        conf
        | {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
            "fetch.queue.backoff.ms": 10,
        }
    )


def list_topic_partitions(config: Mapping[str, Any], timeout: float = 10.0) -> dict[str, list[int]]:
    """Every topic of the cluster with its partition IDs, from one metadata request.

    Asks for all topics on purpose: a metadata request that names a topic creates it on a broker
    with topic auto-creation (the embedded test broker always does). Raises TransientError when
    the cluster cannot be reached within `timeout`.
    """
    consumer = _tool_consumer(config, "inmobi-sync-ops")
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise _translate(exc) from None
    finally:
        consumer.close()
    return {name: sorted(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def watermark_offsets(
    config: Mapping[str, Any], topic: str, partitions: Iterable[int], timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """(first, end) offset per partition, asked of the broker (ListOffsets earliest and latest).

    Right on Apache Kafka. Caveat: the embedded test broker (Tansu) answers "latest" in record
    batches rather than records once a producer batched, so there the end offset can be too low;
    its tests compare against end offsets from delivery reports of unbatched produce only.
    """
    consumer = _tool_consumer(config, "inmobi-sync-ops")
    out: dict[int, tuple[int, int]] = {}
    try:
        for p in partitions:
            low, high = consumer.get_watermark_offsets(
                KTopicPartition(topic, p), timeout=timeout, cached=False
            )
            out[p] = (int(low), int(high))
    except KafkaException as exc:
        raise _translate(exc) from None
    finally:
        consumer.close()
    return out


def _fetched_end(consumer: Any, topic: str, partition: int) -> int:
    """The high watermark the last fetch of a partition reported (-1 when none did yet)."""
    try:
        _low, high = consumer.get_watermark_offsets(KTopicPartition(topic, partition), cached=True)
    except KafkaException:
        return -1
    return int(high)


def iter_records(
    config: Mapping[str, Any],
    topic: str,
    end_offsets: Mapping[int, int],
    idle_timeout: float = 30.0,
) -> Iterable[StoredRecord]:
    """Stream every record of `topic` from the start of each partition up to its end: a snapshot.

    The end of a partition is the larger of `end_offsets` (ListOffsets, taken by the caller) and
    the high watermark its first fetch reported. Both are right on Apache Kafka; the second also
    on the embedded test broker, whose ListOffsets counts record batches after batched produce.
    Records written after that are not returned, so a reader never chases its own effects.
    A partition is done at its first record at or past its end, or when the consumer reaches the
    log end at or past it (gaps such as transaction markers never hold it open). Raises
    TransientError when `idle_timeout` passes without progress.
    """
    wanted = {p: o for p, o in end_offsets.items() if o > 0}
    if not wanted:
        return
    settled: set[int] = set()  # partitions whose end was compared with a fetched high watermark
    consumer = _tool_consumer(config, "inmobi-sync-ops")
    consumer.assign([KTopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in wanted])
    deadline = time.monotonic() + idle_timeout
    try:
        while wanted:
            if time.monotonic() > deadline:
                raise TransientError(f"kafka: no progress reading {topic} for {idle_timeout:.0f} s")
            m: Any
            for m in consumer.consume(10000, 0.2):
                p = m.partition()
                if p not in wanted:
                    continue
                err = m.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    log.warning("kafka_consume_error", error=err.str(), code=err.code())
                    continue
                deadline = time.monotonic() + idle_timeout
                if p not in settled:
                    settled.add(p)
                    wanted[p] = max(wanted[p], _fetched_end(consumer, topic, p))
                end = wanted[p]
                if err is None and m.offset() < end:
                    headers = list(m.headers() or [])
                    yield StoredRecord(p, m.offset(), m.key(), m.value(), headers)
                if m.offset() + (1 if err is None else 0) >= end:
                    del wanted[p]
                    consumer.pause([KTopicPartition(topic, p)])
    finally:
        consumer.close()
