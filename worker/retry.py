"""The retry schedule: exponential backoff with full jitter, a cap, and Retry-After honoured.

`delay(attempt, jitter)` is pure: the caller draws `jitter` in [0, 1) from its own random source, so
tests pass fixed values. With full jitter the n-th retry waits a uniform time in
[0, min(cap, base * 2**n)); a server's Retry-After is a floor, never shortened by jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import AuthError, SyncError, TransientError

__all__ = ["RetryPolicy", "is_retryable"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    multiplier: float = 2.0

    def ceiling(self, attempt: int) -> float:
        """The largest wait before retry number `attempt` (0 for the first retry)."""
        return min(self.cap_seconds, self.base_seconds * self.multiplier ** min(attempt, 64))

    def delay(self, attempt: int, jitter: float, retry_after: float | None = None) -> float:
        wait = self.ceiling(attempt) * min(max(jitter, 0.0), 1.0)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


def is_retryable(exc: SyncError) -> bool:
    """Errors that a later identical request may get past."""
    return isinstance(exc, TransientError | AuthError)
