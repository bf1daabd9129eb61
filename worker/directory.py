"""Segment name → InMobi segment ID, created at most once per name across workers and restarts.

InMobi has no lookup by name, so a created ID must be remembered or the next run creates a
duplicate. IDs given in SEGMENTS_FILE always win. Other names are resolved through the segment
registry (a compacted Kafka topic, `worker.kafka_registry`): every worker and every restart reads
the same log, and the first claim in it decides which worker creates a new segment. Without a
registry (tests of the pure pipeline), creation is once per process. Within a process, resolution
of one name is serialised by a per-name lock.
"""

from __future__ import annotations

import asyncio

import structlog

from worker.ports import InMobiPort, SegmentRegistryPort
from worker.segments import SegmentCatalog

__all__ = ["SegmentDirectory"]

log = structlog.get_logger(__name__)


class SegmentDirectory:
    def __init__(
        self,
        catalog: SegmentCatalog,
        client: InMobiPort,
        registry: SegmentRegistryPort | None = None,
    ) -> None:
        self._catalog = catalog
        self._client = client
        self._registry = registry
        self._ids: dict[str, str] = {
            name: cfg.inmobi_segment_id
            for name, cfg in catalog.segments.items()
            if cfg.inmobi_segment_id
        }
        self._locks: dict[str, asyncio.Lock] = {}

    def known(self) -> dict[str, str]:
        return dict(self._ids)

    def cached(self, name: str) -> str | None:
        """The segment's InMobi ID if this process already knows it (no I/O)."""
        return self._ids.get(name)

    async def resolve(self, name: str) -> str:
        """The segment's InMobi ID, creating the segment on first use."""
        found = self._ids.get(name)
        if found is not None:
            return found
        async with self._locks.setdefault(name, asyncio.Lock()):
            found = self._ids.get(name)
            if found is None:
                found = self._ids[name] = await self._create(name)
            return found

    async def _create(self, name: str) -> str:
        ttl = self._catalog.get(name).membership_ttl_days

        async def create() -> str:
            segment_id = await self._client.create_segment(name, ttl)
            log.info("segment_created", segment=name, segment_id=segment_id, ttl_days=ttl)
            return segment_id

        if self._registry is None:
            return await create()
        return await self._registry.resolve(name, create)
