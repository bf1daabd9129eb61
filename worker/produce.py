"""`inmobi-sync produce`: publish sample or generated events so anyone can feed the worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from worker.config import Settings
from worker.generator import GeneratorSpec, generate
from worker.kafka import EventProducer, create_topics, producer_config
from worker.registry import SchemaRegistryClient

__all__ = ["ProduceReport", "produce", "register_schema"]

SUBJECT_SUFFIX = "-value"


@dataclass(frozen=True, slots=True)
class ProduceReport:
    sent: int
    bad: int
    by_encoding: dict[str, int]
    end_offsets: dict[int, int]
    failed: int


async def _register(url: str, subject: str) -> int:
    from worker.avro_fast import BUNDLED_SCHEMA_JSON as SCHEMA_JSON

    async with aiohttp.ClientSession() as http:
        return await SchemaRegistryClient(url.rstrip("/"), http).register(subject, SCHEMA_JSON)


def register_schema(settings: Settings) -> int:
    """Register the bundled schema under `<topic>-value`; return its schema ID."""
    if not settings.schema_registry_url:
        raise ValueError("SCHEMA_REGISTRY_URL must be set to produce framed Avro")
    return asyncio.run(
        _register(settings.schema_registry_url, settings.kafka_topic + SUBJECT_SUFFIX)
    )


def produce(settings: Settings, spec: GeneratorSpec, partitions: int | None = 12) -> ProduceReport:
    conf = producer_config(settings)
    if partitions:
        create_topics(conf, {settings.kafka_topic: partitions, settings.kafka_dlq_topic: 1})
    producer = EventProducer(conf, settings.kafka_topic)
    sent = bad = 0
    by_encoding: dict[str, int] = {}
    for record in generate(spec):
        producer.send(record.key, record.value)
        sent += 1
        bad += record.bad
        by_encoding[record.encoding] = by_encoding.get(record.encoding, 0) + 1
    left = producer.flush()
    return ProduceReport(sent, bad, by_encoding, dict(producer.end_offsets), producer.failed + left)
