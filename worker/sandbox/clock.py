"""A clock that moves only when told to, for tests and demos of session expiry and revocation.

The sandbox reads time only through the ``clock`` callable given to `create_app` (default
``time.time``). Pass a `ManualClock` instead and advance it to expire or revoke sessions on
demand. Reads and writes of one float are atomic, so a test thread may advance it while the
sandbox's thread reads it.
"""

from __future__ import annotations

__all__ = ["ManualClock"]


class ManualClock:
    """A callable returning epoch seconds, starting at ``start`` and moved by `advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._now += seconds
        return self._now
