"""Request budgets: token bucket and sliding window, with time passed in."""

from __future__ import annotations

import pytest

from worker.ratelimit import SlidingWindow, TokenBucket


def test_bucket_allows_a_burst_then_spaces_requests_at_the_rate() -> None:
    b = TokenBucket(rate=2.0, burst=2.0)
    assert [b.reserve(0.0) for _ in range(2)] == [0.0, 0.0]
    assert b.reserve(0.0) == pytest.approx(0.5)
    assert b.reserve(0.0) == pytest.approx(1.0)


def test_bucket_refills_with_time_but_never_past_burst() -> None:
    b = TokenBucket(rate=1.0, burst=1.0)
    assert b.reserve(0.0) == 0.0
    assert b.reserve(100.0) == 0.0
    assert b.reserve(100.0) == pytest.approx(1.0)


def test_window_limits_events_and_frees_them_as_time_passes() -> None:
    w = SlidingWindow(limit=2, window=10.0)
    for t in (0.0, 1.0):
        assert w.wait(t) == 0.0
        w.record(t)
    assert w.wait(5.0) == pytest.approx(5.0)
    assert w.wait(10.0) == 0.0
