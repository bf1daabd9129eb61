"""Request budgets: a token bucket for requests per second, a sliding window for sessions per hour.

Pure: the caller passes `now` (monotonic seconds) and sleeps for the returned wait itself.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindow", "TokenBucket"]


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; each request takes one."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._last: float | None = None

    def reserve(self, now: float) -> float:
        """Take a token; return how long to wait before using it (0 when one was available)."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class SlidingWindow:
    """At most `limit` events in any `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more event is allowed (0: allowed now)."""
        while self._events and self._events[0] <= now - self.window:
            self._events.popleft()
        if len(self._events) < self.limit:
            return 0.0
        return self._events[0] + self.window - now

    def record(self, now: float) -> None:
        self._events.append(now)

    def __len__(self) -> int:
        return len(self._events)
