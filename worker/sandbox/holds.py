"""Requests the sandbox deliberately keeps waiting: held uploads and hanging faults.

*Hold* (``POST /_sandbox/hold``) lets a test freeze the uploads of one segment: each such request is
read off the wire and checked, then waits at the `HoldGate` until ``POST /_sandbox/release``; then
it is applied and answered as usual. A test can so prove that the worker commits nothing past an
upload InMobi has not acknowledged yet. ``waiting`` tells how many requests are parked, so a test
waits for "the upload arrived" as a condition instead of sleeping.

*Parking* (`ParkingLot`) is how waiting ends on shutdown: a handler that waits (hold or hang) runs
that wait through `ParkingLot.wait`, and `ParkingLot.cancel_all` (called from the app's
``on_shutdown``) cancels them, so stopping a sandbox never waits for a hang to time out; the client
sees its connection closed, never an answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["HANG_SECONDS", "HoldGate", "ParkingLot"]

# A hanging fault never answers; this bound only keeps a forgotten one from living forever.
HANG_SECONDS = 300.0

T = TypeVar("T")


class HoldGate:
    """Segment names whose uploads are held, and the requests waiting on them."""

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Event] = {}
        self._waiting: Counter[str] = Counter()

    def hold(self, segment_name: str) -> None:
        self._held.setdefault(segment_name, asyncio.Event())

    def release(self, segment_name: str | None = None) -> int:
        """Release one segment (or all when None); returns how many waiting requests go on."""
        names = list(self._held) if segment_name is None else [segment_name]
        released = 0
        for name in names:
            event = self._held.pop(name, None)
            if event is not None:
                event.set()
                released += self._waiting[name]
        return released

    async def pass_through(self, segment_name: str) -> None:
        """Return at once unless the segment is held; then return when it is released."""
        event = self._held.get(segment_name)
        if event is None:
            return
        self._waiting[segment_name] += 1
        try:
            await event.wait()
        finally:
            self._waiting[segment_name] -= 1

    @property
    def held_segments(self) -> list[str]:
        return sorted(self._held)

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    def reset(self) -> None:
        self.release()


class ParkingLot:
    """Handler tasks currently waiting on purpose, so that shutdown can cancel them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a handler task
            return await awaitable
        self._tasks.add(task)
        try:
            return await awaitable
        finally:
            self._tasks.discard(task)

    async def hang(self) -> None:
        """Never answer (bounded by `HANG_SECONDS`); cancelled by `cancel_all`."""
        await self.wait(asyncio.sleep(HANG_SECONDS))

    @property
    def parked(self) -> int:
        """How many requests are waiting on purpose right now."""
        return len(self._tasks)

    def cancel_all(self) -> int:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return len(tasks)
