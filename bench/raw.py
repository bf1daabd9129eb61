"""The ceiling: how fast this process can take the topic out of librdkafka, doing nothing else.

Two passes over the same topic, each with a fresh consumer assigned to every partition at offset 0
(no group join, so no JoinGroup wait) and the worker's own librdkafka settings
(`worker.kafka.consumer_config`):

- ``Consumer.consume()`` alone: the ceiling the issue compares against;
- `KafkaSource.poll_batch`: the same plus the adapter's conversion to `SourceMessage`.

The clock runs from the first non-empty batch to the last message below the end offsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sized
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KTopicPartition

from worker.config import Settings
from worker.kafka import KafkaSource, consumer_config


def worker_consumer_config(bootstrap: str) -> dict[str, Any]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, kafka_bootstrap_servers=bootstrap, kafka_group_id=f"raw-{uuid.uuid4().hex}"
    )
    return consumer_config(settings)


def _drain(fetch: Callable[[], Sized], total: int) -> tuple[int, float]:
    """Fetch until `total` messages came (the topic holds exactly those); (count, seconds).

    No per-message work at all: the topic was written once by the benchmark, so counting is
    enough to know the end was reached.
    """
    count, started = 0, 0.0
    deadline = time.monotonic() + 300
    while count < total and time.monotonic() < deadline:
        batch = fetch()
        if not batch:
            continue
        if not started:
            started = time.perf_counter()
        count += len(batch)
    return count, time.perf_counter() - started


def raw_consume(
    bootstrap: str, topic: str, ends: Mapping[int, int], batch: int = 10_000
) -> dict[str, Any]:
    consumer = Consumer(worker_consumer_config(bootstrap))
    consumer.assign([KTopicPartition(topic, p, 0) for p in ends])
    try:
        count, seconds = _drain(lambda: consumer.consume(batch, 0.5), sum(ends.values()))
    finally:
        consumer.close()
    return {"messages": count, "seconds": round(seconds, 3), "events_per_s": round(count / seconds)}


def adapter_consume(
    bootstrap: str, topic: str, ends: Mapping[int, int], batch: int = 10_000
) -> dict[str, Any]:
    source = KafkaSource(worker_consumer_config(bootstrap), topic)
    source._consumer.assign([KTopicPartition(topic, p, 0) for p in ends])  # no group: no join wait
    try:
        count, seconds = _drain(lambda: source.poll_batch(batch, 0.5), sum(ends.values()))
    finally:
        source.close()
    return {"messages": count, "seconds": round(seconds, 3), "events_per_s": round(count / seconds)}
