"""Buffers: last write wins, flush triggers, holds registered and carried by the batch."""

from __future__ import annotations

import random
import uuid

from hypothesis import given
from hypothesis import strategies as st

from worker.buffering import BufferLimits, BufferSet, FlushReason, format_uuid
from worker.model import IdType, MembershipChange, Op
from worker.offsets import OffsetTracker


def change(
    dev: str,
    op: Op = Op.ADD,
    seg: str = "S",
    p: int = 0,
    off: int = 0,
    id_type: IdType = IdType.IDFA,
) -> MembershipChange:
    return MembershipChange(seg, op, id_type, dev, "e", 0, p, off)


def uid(n: int) -> str:
    return str(uuid.UUID(int=n + 1))


def buffers(**limits: float) -> tuple[BufferSet, OffsetTracker]:
    t = OffsetTracker()
    return BufferSet(BufferLimits(**limits), t), t  # type: ignore[arg-type]


def test_last_change_per_id_wins_and_no_id_is_both_added_and_removed() -> None:
    b, _ = buffers()
    b.add(change(uid(1), Op.ADD, off=0), 0)
    b.add(change(uid(1), Op.REMOVE, off=1), 0)
    b.add(change(uid(2), Op.REMOVE, off=2), 0)
    b.add(change(uid(2), Op.ADD, off=3), 0)
    batch = b.cut("S", FlushReason.AGE)
    assert batch is not None
    by_op = {r.op: set(r.ids) for r in batch.rows}
    assert by_op == {Op.REMOVE: {uid(1)}, Op.ADD: {uid(2)}}


def test_same_uuid_of_two_id_types_are_two_ids() -> None:
    b, _ = buffers()
    b.add(change(uid(1), id_type=IdType.IDFA), 0)
    b.add(change(uid(1), Op.REMOVE, id_type=IdType.GAID), 0)
    batch = b.cut("S", FlushReason.AGE)
    assert batch is not None
    assert {(r.id_type, r.op) for r in batch.rows} == {
        (IdType.IDFA, Op.ADD),
        (IdType.GAID, Op.REMOVE),
    }


def test_device_id_lane_keeps_strings_as_given() -> None:
    b, _ = buffers()
    b.add(change("Device-ABC", id_type=IdType.DEVICE_ID), 0)
    batch = b.cut("S", FlushReason.AGE)
    assert batch is not None and batch.rows[0].ids == ("Device-ABC",)


def test_flushes_at_max_ids() -> None:
    b, _ = buffers(max_ids=3)
    assert b.add(change(uid(1)), 0) is None
    assert b.add(change(uid(2)), 0) is None
    assert b.add(change(uid(3)), 0) is FlushReason.IDS


def test_flushes_before_gzip_bound_passes_max_bytes() -> None:
    b, _ = buffers(max_bytes=2048)
    reasons = [b.add(change(uid(i)), 0) for i in range(60)]
    first = reasons.index(FlushReason.BYTES)
    assert 40 <= first < 60  # 37 bytes a UUID row: the bound passes 2048 after ~53 rows


def test_age_trigger_fires_without_new_events() -> None:
    b, _ = buffers(max_age_seconds=5)
    b.add(change(uid(1)), now=100.0)
    assert b.due(104.9) == []
    assert b.due(105.0) == [("S", FlushReason.AGE)]


def test_age_spread_draws_each_buffers_limit_between_the_spread_and_max_age() -> None:
    limits = BufferLimits(max_age_seconds=10, age_spread=0.5)
    b = BufferSet(limits, OffsetTracker(), random.Random(7))
    segments = [f"S{i}" for i in range(40)]
    for i, seg in enumerate(segments):
        b.add(change(uid(i), seg=seg), now=100.0)
    assert b.due(104.99) == []
    fired_at: dict[str, float] = {}
    for tenth in range(50, 101):
        now = 100 + tenth / 10
        for seg, reason in b.due(now):
            assert reason is FlushReason.AGE
            fired_at.setdefault(seg, now)
            b.cut(seg, reason)
    assert sorted(fired_at) == sorted(segments)  # every buffer flushed by max_age at the latest
    assert len(set(fired_at.values())) > 10  # and they did not all flush together


def test_holds_first_offset_per_partition_until_batch_released() -> None:
    b, t = buffers()
    b.add(change(uid(1), p=0, off=10), 0)
    b.add(change(uid(2), p=0, off=11), 0)
    b.add(change(uid(3), p=1, off=5), 0)
    t.consumed(0, 11)
    t.consumed(1, 5)
    assert t.to_commit() == {0: 10, 1: 5}
    batch = b.cut("S", FlushReason.IDS)
    assert batch is not None
    assert [(p, o) for p, o, _ in batch.holds] == [(0, 10), (1, 5)]
    assert t.to_commit() == {0: 10, 1: 5}  # cutting moves the hold, it does not drop it
    for p, o, e in batch.holds:
        t.release(p, o, e)
    assert t.to_commit() == {0: 12, 1: 6}


def test_rows_remember_their_partition_and_offset() -> None:
    b, _ = buffers()
    b.add(change(uid(1), p=2, off=7), 0)
    b.add(change(uid(1), Op.REMOVE, p=2, off=9), 0)
    batch = b.cut("S", FlushReason.AGE)
    assert batch is not None
    (rows,) = batch.rows
    assert (rows.partitions, rows.offsets) == ((2,), (9,))


def test_format_uuid_round_trips() -> None:
    u = uuid.uuid4()
    assert format_uuid(u.bytes) == str(u)


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(list(Op))), max_size=300))
def test_cut_equals_last_write_per_id(changes: list[tuple[int, Op]]) -> None:
    b, _ = buffers()
    expected: dict[str, Op] = {}
    for i, (n, op) in enumerate(changes):
        b.add(change(uid(n), op, off=i), 0)
        expected[uid(n)] = op
    batch = b.cut("S", FlushReason.AGE)
    got: dict[str, Op] = {}
    for rows in batch.rows if batch else ():
        for ident in rows.ids:
            assert ident not in got
            got[ident] = rows.op
    assert got == expected
