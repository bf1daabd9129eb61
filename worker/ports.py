"""Ports: the small Protocols through which the pipeline sees its adapters.

Each has a real adapter (`kafka.py`, `inmobi.py`) and an in-repo fake used by tests
(`tests/fakes.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from worker.model import RecordBatch, Rejection, SourceMessage

__all__ = ["Clock", "DlqPort", "InMobiPort", "SegmentRegistryPort", "SourcePort"]

RebalanceCallback = Callable[[list[int]], None]


class Clock(Protocol):
    def monotonic(self) -> float: ...


class SourcePort(Protocol):
    topic: str

    def subscribe(
        self, on_assign: RebalanceCallback, on_revoke: RebalanceCallback, on_lost: RebalanceCallback
    ) -> None: ...

    def poll_batch(self, max_messages: int, timeout: float) -> RecordBatch: ...

    def commit(self, offsets: Mapping[int, int]) -> None: ...

    def pause(self, partitions: Iterable[int]) -> None: ...

    def resume(self, partitions: Iterable[int]) -> None: ...

    def high_watermarks(self, partitions: Iterable[int]) -> dict[int, int]: ...

    def close(self) -> None: ...


class DlqPort(Protocol):
    def send(
        self, msg: SourceMessage, rejection: Rejection, on_done: Callable[[str | None], None]
    ) -> None: ...

    def poll(self, timeout: float = 0.0) -> int: ...

    def flush(self, timeout: float) -> int: ...


class InMobiPort(Protocol):
    async def create_segment(self, name: str, ttl_days: int) -> str: ...

    async def upload(self, segment_id: str, action: str, payload: bytes) -> int: ...


class SegmentRegistryPort(Protocol):
    """Agreement across workers and restarts on one InMobi segment ID per name."""

    async def resolve(self, name: str, create: Callable[[], Awaitable[str]]) -> str: ...
