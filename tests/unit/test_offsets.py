"""The offset tracker commits the low watermark: never past a held offset, only forward."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.offsets import OffsetTracker


def test_commits_next_offset_when_nothing_is_held() -> None:
    t = OffsetTracker()
    t.assign(0)
    t.consumed(0, 41)
    assert t.to_commit() == {0: 42}


def test_commit_stays_at_lowest_held_offset_until_released() -> None:
    t = OffsetTracker()
    e5 = t.hold(0, 5)
    e9 = t.hold(0, 9)
    t.consumed(0, 20)
    assert t.to_commit() == {0: 5}
    t.release(0, 9, e9)
    assert t.to_commit() == {0: 5}
    t.release(0, 5, e5)
    assert t.to_commit() == {0: 21}


def test_two_holders_of_one_offset_must_both_release() -> None:
    t = OffsetTracker()
    a = t.hold(3, 7)
    b = t.hold(3, 7)
    t.consumed(3, 7)
    t.release(3, 7, a)
    assert t.committable(3) == 7
    t.release(3, 7, b)
    assert t.committable(3) == 8


def test_release_from_an_old_assignment_does_not_free_a_new_hold() -> None:
    t = OffsetTracker()
    old = t.hold(1, 10)
    t.revoke(1)
    t.assign(1)
    new = t.hold(1, 10)
    t.consumed(1, 12)
    t.release(1, 10, old)
    assert t.committable(1) == 10
    t.release(1, 10, new)
    assert t.committable(1) == 13


def test_to_commit_only_reports_offsets_that_moved() -> None:
    t = OffsetTracker()
    t.consumed(0, 9)
    t.mark_committed({0: 10})
    assert t.to_commit() == {}
    t.consumed(0, 10)
    assert t.to_commit() == {0: 11}


def test_lag_counts_consumed_but_not_committable() -> None:
    t = OffsetTracker()
    t.hold(0, 100)
    t.consumed(0, 149)
    assert t.lag() == {0: 50}


@given(
    st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=200),
    st.randoms(use_true_random=False),
)
def test_commit_never_passes_an_unreleased_offset_and_is_monotonic(
    ops: list[tuple[int, bool]], rnd: object
) -> None:
    """Random consume/hold/release interleavings: the invariant of the commit protocol."""
    import random

    assert isinstance(rnd, random.Random)
    t = OffsetTracker()
    next_offset = {0: 0, 1: 0, 2: 0}
    open_holds: list[tuple[int, int, int]] = []
    last_commit: dict[int, int] = {}
    for partition, held in ops:
        offset = next_offset[partition]
        next_offset[partition] += 1
        if held:
            open_holds.append((partition, offset, t.hold(partition, offset)))
        t.consumed(partition, offset)
        if open_holds and rnd.random() < 0.4:
            p, o, e = open_holds.pop(rnd.randrange(len(open_holds)))
            t.release(p, o, e)
        commits = t.to_commit()
        for p, o in commits.items():
            unreleased = [ho for hp, ho, _ in open_holds if hp == p]
            assert not unreleased or o <= min(unreleased)
            assert o > last_commit.get(p, -1)
            last_commit[p] = o
        t.mark_committed(commits)
    for p, o, e in open_holds:
        t.release(p, o, e)
    final = t.to_commit()
    t.mark_committed(final)
    for p, n in next_offset.items():
        if n:
            assert t.state(p) is not None
            assert t.state(p).committed == n  # type: ignore[union-attr]
