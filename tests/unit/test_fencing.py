"""Fencing decisions from poll timing and rebalance callbacks (time passed in)."""

from __future__ import annotations

from worker.fencing import Fence


def test_regular_polls_never_fence() -> None:
    f = Fence(session_timeout_seconds=6)
    for t in range(100):
        f.polled(t * 0.1)
        assert f.may_act(t * 0.1)


def test_a_stalled_poll_fences_at_once() -> None:
    f = Fence(6)
    f.polled(0.0)
    assert f.may_act(2.9)
    assert not f.may_act(3.1)


def test_after_a_gap_it_stays_fenced_until_the_group_answers() -> None:
    f = Fence(6)
    f.polled(0.0)
    f.polled(10.0)  # resumed after a pause longer than half the session timeout
    assert not f.may_act(10.1)
    f.callback_started()
    f.callback_finished()  # e.g. on_lost, then a new assignment
    assert f.may_act(10.2)


def test_after_a_gap_with_no_loss_it_unfences_after_the_session_timeout() -> None:
    f = Fence(6, settle_seconds=3)
    f.polled(0.0)
    f.polled(10.0)
    t = 10.0
    while t < 18.9:
        t += 0.1
        f.polled(t)
        assert not f.may_act(t)
    f.polled(19.1)
    assert f.may_act(19.1)


def test_a_long_rebalance_callback_is_not_a_stall() -> None:
    f = Fence(6)
    f.polled(0.0)
    f.callback_started()
    assert f.may_act(5.0)  # the revoke callback blocks the poll while it drains: expected
    f.callback_finished()
    f.polled(5.5)
    assert f.may_act(5.6)
