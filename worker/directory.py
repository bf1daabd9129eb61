"""Segment name → InMobi segment ID, created at most once per name by this worker.

InMobi has no lookup by name, so a created ID must be remembered or the next run creates a
duplicate. IDs given in SEGMENTS_FILE always win. Creation for one name is serialised by a
per-name lock: concurrent flushes of a new segment wait for the one creation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from worker.ports import InMobiPort
from worker.segments import SegmentCatalog

__all__ = ["SegmentDirectory"]

log = structlog.get_logger(__name__)


class SegmentDirectory:
    def __init__(
        self,
        catalog: SegmentCatalog,
        client: InMobiPort,
        on_created: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self._catalog = catalog
        self._client = client
        self._on_created = on_created
        self._ids: dict[str, str] = {
            name: cfg.inmobi_segment_id
            for name, cfg in catalog.segments.items()
            if cfg.inmobi_segment_id
        }
        self._locks: dict[str, asyncio.Lock] = {}

    def known(self) -> dict[str, str]:
        return dict(self._ids)

    def remember(self, name: str, segment_id: str) -> None:
        """Learn an ID from elsewhere (the registry topic); SEGMENTS_FILE IDs are never replaced."""
        configured = self._catalog.get(name).inmobi_segment_id
        self._ids[name] = configured or segment_id

    def forget(self, name: str) -> None:
        if not self._catalog.get(name).inmobi_segment_id:
            self._ids.pop(name, None)

    async def resolve(self, name: str) -> str:
        """The segment's InMobi ID, creating the segment on first use."""
        found = self._ids.get(name)
        if found is not None:
            return found
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            found = self._ids.get(name)
            if found is not None:
                return found
            ttl = self._catalog.get(name).membership_ttl_days
            segment_id = await self._client.create_segment(name, ttl)
            self._ids[name] = segment_id
            log.info("segment_created", segment=name, segment_id=segment_id, ttl_days=ttl)
            if self._on_created is not None:
                await self._on_created(name, segment_id)
            return segment_id
