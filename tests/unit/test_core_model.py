"""A model of the pure core (buffers, offset tracker, mode rule, last-write-wins cut) run as a worker
against a simulated InMobi, with crashes, rebalances and ambiguous upload outcomes.

The Kafka log is a list per partition and survives crashes, as do the group's committed offsets
and InMobi's membership. Everything else (buffers, batches in flight, pending DLQ writes, the
tracker) is the worker's memory and is lost on a crash; the consumer then re-reads every partition
from its committed offset. The worker side mirrors `worker.pipeline`: a change is buffered (or
ignored by its segment's mode, or held by a pending DLQ write), a flush cuts a batch that keeps the
buffer's holds until InMobi acknowledged it, and a commit takes `OffsetTracker.to_commit`.

What must hold, whatever the interleaving:
- a commit never passes an offset whose change was not applied to InMobi (or DLQ-confirmed, or
  ignored) since the worker last read it, and commits only move forward;
- a batch never holds both an add and a remove of one ID, and holds exactly the last change per ID;
- once everything is drained, InMobi's membership is the log folded by last write wins, and the
  committed offsets are the log ends.

As `Delivery` does, rows of partitions that left the assignment their batch was cut in are dropped
at upload time, and a row InMobi refuses from such a batch is left to whoever owns the partition
now (it reads it again). The two scenario tests at the end pin the tracker rules that make this
safe: a revoked partition takes no holds until it is assigned again, and nothing is committable
before something was read in the current assignment.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from worker.buffering import Batch, BufferLimits, BufferSet, FlushReason
from worker.model import IdType, MembershipChange, Op
from worker.offsets import OffsetTracker
from worker.segments import Mode, SegmentCatalog, SegmentConfig

PARTITIONS = 2
SEGMENTS = ("MIRROR", "ADDS_ONLY", "REMOVES_ONLY")
CATALOG = SegmentCatalog(
    segments={"ADDS_ONLY": SegmentConfig(Mode.ADD), "REMOVES_ONLY": SegmentConfig(Mode.REMOVE)}
)
# The mode rule spelled out independently of `Mode.accepts`, for the fold.
ACCEPTED = {
    "MIRROR": {Op.ADD, Op.REMOVE},
    "ADDS_ONLY": {Op.ADD},
    "REMOVES_ONLY": {Op.REMOVE},
}
# InMobi refuses every file holding one of these IDs (HTTP 400); the worker splits each off to
# the DLQ, as `worker.delivery` does.
POISON = {(IdType.GAID, str(uuid.UUID(int=0x1000 + 4))), (IdType.DEVICE_ID, "device-1")}
LIMITS = BufferLimits(max_ids=5, max_bytes=10_000_000, max_age_seconds=10.0)
DEVICES = 5  # device i lives in partition i % PARTITIONS (the key is the device ID)

Key = tuple[str, IdType, str]  # (segment, id_type, device ID)


def device_id(index: int, id_type: IdType) -> str:
    if id_type is IdType.DEVICE_ID:
        return f"device-{index}"
    return str(uuid.UUID(int=0x1000 + index))


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record of the log; `bad` ones do not decode and go to the DLQ."""

    segment: str
    op: Op
    id_type: IdType
    device: str
    bad: bool

    @property
    def key(self) -> Key:
        return (self.segment, self.id_type, self.device)


@dataclass(slots=True)
class InFlight:
    batch: Batch
    entries: list[tuple[int, int, Record]]  # every change cut into the batch, in buffer order


def owned_rows(flight: InFlight, owned: set[int]) -> list[tuple[Op, IdType, str, int, int]]:
    """The rows delivery sends: those of partitions the worker owns at that moment (the others
    are dropped, as `Delivery` does; their changes are read again by whoever owns them)."""
    return [
        (rows.op, rows.id_type, i, p, o)
        for rows in flight.batch.rows
        for i, p, o in zip(rows.ids, rows.partitions, rows.offsets, strict=True)
        if p in owned
    ]


def fold(log: dict[int, list[Record]]) -> set[Key]:
    """Membership by last write wins over the changes each segment's mode accepts."""
    last: dict[Key, Op] = {}
    for records in log.values():
        for r in records:
            if not r.bad and r.op in ACCEPTED[r.segment]:
                last[r.key] = r.op
    return {k for k, op in last.items() if op is Op.ADD and k[1:] not in POISON}


def check_cut(batch: Batch, entries: list[tuple[int, int, Record]], tracker: OffsetTracker) -> None:
    """The batch is the last-write-wins cut of its entries and holds each partition's first one."""
    adds = {(r.id_type, i) for r in batch.rows if r.op is Op.ADD for i in r.ids}
    removes = {(r.id_type, i) for r in batch.rows if r.op is Op.REMOVE for i in r.ids}
    assert not adds & removes, "a batch holds both an add and a remove of one ID"
    last: dict[tuple[IdType, str], tuple[Op, int, int]] = {}
    for p, o, rec in entries:
        last[(rec.id_type, rec.device)] = (rec.op, p, o)
    got = {
        (rows.id_type, i): (rows.op, p, o)
        for rows in batch.rows
        for i, p, o in zip(rows.ids, rows.partitions, rows.offsets, strict=True)
    }
    assert batch.row_count == len(got) == len(last), "an ID is uploaded twice in one batch"
    assert got == last
    firsts: dict[int, int] = {}
    for p, o, _ in entries:
        firsts.setdefault(p, o)
    expected = {(p, o, tracker.state(p).epoch) for p, o in firsts.items()}  # type: ignore[union-attr]
    assert set(batch.holds) == expected
    assert batch.entries == len(entries)


@st.composite
def _records(draw: st.DrawFn) -> tuple[int, Record]:
    device = draw(st.integers(0, DEVICES - 1))
    id_type = draw(st.sampled_from(IdType))
    record = Record(
        draw(st.sampled_from(SEGMENTS)),
        draw(st.sampled_from(Op)),
        id_type,
        device_id(device, id_type),
        bad=draw(st.integers(0, 9)) == 0,
    )
    return device, record


RECORDS = _records()


class CoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # Durable: the log, the group's committed offsets, InMobi.
        self.log: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
        self.committed: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)
        self.inmobi: set[Key] = set()
        # Offsets whose change took effect (applied, DLQ-confirmed, ignored) since last read.
        self.done: set[tuple[int, int]] = set()
        self.now = 0.0
        self._start_worker(range(PARTITIONS))

    # -- the worker's memory -------------------------------------------------------------------
    def _start_worker(self, partitions: range) -> None:
        self.tracker = OffsetTracker()
        self.buffers = BufferSet(LIMITS, self.tracker)
        self.buffered: dict[str, list[tuple[int, int, Record]]] = {}
        self.queues: dict[str, deque[InFlight]] = {s: deque() for s in SEGMENTS}
        self.dlq_pending: list[tuple[int, int, int]] = []  # (partition, offset, epoch)
        self.owned: set[int] = set()
        self.position: dict[int, int] = {}
        for p in partitions:
            self._assign(p)

    def _assign(self, p: int) -> None:
        """The consumer (re)starts at the committed offset: what follows must take effect anew."""
        self.tracker.assign(p)
        self.owned.add(p)
        self.position[p] = self.committed[p]
        self.done = {(q, o) for q, o in self.done if q != p or o < self.committed[p]}

    def _read(self, p: int) -> None:
        o = self.position[p]
        rec = self.log[p][o]
        self.position[p] = o + 1
        if rec.bad:
            self.dlq_pending.append((p, o, self.tracker.hold(p, o)))
        elif not CATALOG.get(rec.segment).mode.accepts(rec.op):
            self.done.add((p, o))
        else:
            change = MembershipChange(rec.segment, rec.op, rec.id_type, rec.device, "e", 0, p, o)
            self.buffered.setdefault(rec.segment, []).append((p, o, rec))
            reason = self.buffers.add(change, self.now)
            if reason is not None:
                self._flush(rec.segment, reason)
        self.tracker.consumed(p, o)

    def _flush(self, segment: str, reason: FlushReason) -> None:
        batch = self.buffers.cut(segment, reason)
        entries = self.buffered.pop(segment, [])
        if batch is None:
            assert not entries
            return
        check_cut(batch, entries, self.tracker)
        self.queues[segment].append(InFlight(batch, entries))

    def _apply(self, flight: InFlight) -> set[tuple[int, int]]:
        """InMobi applies the owned rows of a batch: add is a union, remove a difference. It
        refuses poison IDs; return where those rows came from."""
        refused = set()
        for op, id_type, i, p, o in owned_rows(flight, self.owned):
            key = (flight.batch.segment, id_type, i)
            if (id_type, i) in POISON:
                refused.add((p, o))
            elif op is Op.ADD:
                self.inmobi.add(key)
            else:
                self.inmobi.discard(key)
        self.done.update(
            (p, o) for p, o, _ in flight.entries if p in self.owned and (p, o) not in refused
        )
        return refused

    def _succeed(self, segment: str) -> None:
        """Acknowledged: a refused row (split down to itself) is held by its DLQ write first, if
        its partition is still in the assignment the batch was cut in (see the module notes)."""
        flight = self.queues[segment].popleft()
        refused = self._apply(flight)
        epochs = {p: e for p, _, e in flight.batch.holds}
        for p, o in sorted(refused):
            state = self.tracker.state(p)
            current = state is not None and state.epoch == epochs[p]
            self.dlq_pending.append((p, o, self.tracker.hold(p, o) if current else -1))
        for p, o, epoch in flight.batch.holds:
            self.tracker.release(p, o, epoch)

    def _confirm(self, index: int) -> None:
        p, o, epoch = self.dlq_pending.pop(index)
        self.done.add((p, o))
        self.tracker.release(p, o, epoch)

    def _commit(self, partitions: set[int]) -> None:
        offsets = self.tracker.to_commit(partitions)
        for p, offset in offsets.items():
            assert offset >= self.committed[p], f"commit of partition {p} moved backwards"
            undone = [o for o in range(self.committed[p], offset) if (p, o) not in self.done]
            assert not undone, f"commit {offset} of partition {p} passes unapplied {undone}"
            self.committed[p] = offset
        self.tracker.mark_committed(offsets)

    def _drain(self) -> None:
        for p in range(PARTITIONS):
            if p not in self.owned:
                self._assign(p)
            while self.position[p] < len(self.log[p]):
                self._read(p)
        for segment in self.buffers.segments():
            self._flush(segment, FlushReason.SHUTDOWN)
        for segment, queue in self.queues.items():
            while queue:
                self._succeed(segment)
        while self.dlq_pending:
            self._confirm(0)
        self._commit(self.owned)

    def _poll(self, p: int, count: int) -> None:
        for _ in range(min(count, len(self.log[p]) - self.position[p])):
            self._read(p)

    def _upload(self, segment: str, outcome: str) -> None:
        if outcome == "acknowledged":
            self._succeed(segment)
        elif outcome == "ambiguous":
            self._apply(self.queues[segment][0])
        else:
            assert self.queues[segment][0].batch.holds

    def _revoke(self, p: int, *, completes: bool, comes_back: bool) -> None:
        for segment in self.buffers.holding({p}):
            self._flush(segment, FlushReason.REVOKE)
        if completes:
            for segment, queue in self.queues.items():
                last = max(
                    (i for i, f in enumerate(queue) if any(h[0] == p for h in f.batch.holds)),
                    default=-1,
                )
                for _ in range(last + 1):
                    self._succeed(segment)
            for i in reversed(range(len(self.dlq_pending))):
                if self.dlq_pending[i][0] == p:
                    self._confirm(i)
            assert self.tracker.outstanding({p}) == 0
        self._commit({p})
        if completes:
            assert self.committed[p] == self.position[p]
        self.tracker.revoke(p)
        self.owned.discard(p)
        del self.position[p]
        if comes_back:
            self._assign(p)

    def _unread(self) -> list[int]:
        return [p for p in sorted(self.owned) if self.position[p] < len(self.log[p])]

    def _busy(self) -> list[str]:
        return [s for s, q in self.queues.items() if q]

    # -- rules ---------------------------------------------------------------------------------
    @initialize(records=st.lists(RECORDS, min_size=4, max_size=24))
    def backlog(self, records: list[tuple[int, Record]]) -> None:
        self.produce(records)

    @rule(records=st.lists(RECORDS, min_size=1, max_size=6))
    def produce(self, records: list[tuple[int, Record]]) -> None:
        """Changes arrive at the next offsets of their device's partition."""
        for device, record in records:
            self.log[device % PARTITIONS].append(record)

    @precondition(lambda self: self._unread())
    @rule(data=st.data(), count=st.integers(1, 6))
    def poll(self, data: st.DataObject, count: int) -> None:
        self._poll(data.draw(st.sampled_from(self._unread())), count)

    @precondition(lambda self: self.buffers.segments())
    @rule(data=st.data())
    def flush(self, data: st.DataObject) -> None:
        self._flush(data.draw(st.sampled_from(self.buffers.segments())), FlushReason.AGE)

    @rule(seconds=st.sampled_from([0.5, 4.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for segment, reason in self.buffers.due(self.now):
            self._flush(segment, reason)

    @precondition(lambda self: self._busy())
    @rule(data=st.data(), outcome=st.sampled_from(["acknowledged", "failed", "ambiguous"]))
    def upload(self, data: st.DataObject, outcome: str) -> None:
        """The first batch of a segment is sent. Acknowledged: applied, holds released. Failed:
        nothing reached InMobi; the batch stays first with its holds, to be retried. Ambiguous:
        InMobi applied it but the answer was lost; it stays first and will be applied again."""
        self._upload(data.draw(st.sampled_from(self._busy())), outcome)

    @precondition(lambda self: self.dlq_pending)
    @rule(data=st.data())
    def dlq_confirms(self, data: st.DataObject) -> None:
        self._confirm(data.draw(st.integers(0, len(self.dlq_pending) - 1)))

    @precondition(lambda self: self.owned)
    @rule(data=st.data(), completes=st.booleans(), comes_back=st.booleans())
    def revoke(self, data: st.DataObject, completes: bool, comes_back: bool) -> None:
        """Flush the buffers holding the partition; then its batches complete, or the revoke
        times out and they keep going after the partition is forgotten. It may come back."""
        p = data.draw(st.sampled_from(sorted(self.owned)))
        self._revoke(p, completes=completes, comes_back=comes_back)

    @precondition(lambda self: len(self.owned) < PARTITIONS)
    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        free = sorted(set(range(PARTITIONS)) - self.owned)
        self._assign(data.draw(st.sampled_from(free)))

    @rule(dice=st.integers(0, 3))
    def crash_and_restart(self, dice: int) -> None:
        """All memory is lost; the consumer re-reads from the committed offsets (1 time in 4)."""
        if dice == 0:
            self._start_worker(range(PARTITIONS))

    @rule()
    def commit(self) -> None:
        self._commit(self.owned)

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def committable_never_passes_an_unapplied_change(self) -> None:
        for p in self.owned:
            target = self.tracker.committable(p)
            if target is None:
                continue
            undone = [o for o in range(self.committed[p], target) if (p, o) not in self.done]
            assert not undone, f"partition {p} committable at {target} past unapplied {undone}"

    @invariant()
    def buffered_entries_match_buffer_sizes(self) -> None:
        sizes = self.buffers.sizes()
        assert sizes == {s: len(e) for s, e in self.buffered.items() if e}

    def teardown(self) -> None:
        self._drain()
        assert self.inmobi == fold(self.log), "drained membership differs from the folded log"
        ends = {p: len(records) for p, records in self.log.items()}
        assert self.committed == ends, "drained commits are not the log ends"


CoreModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWorkerCoreAgainstSimulatedInMobi = CoreModel.TestCase


# -- interleavings the machine reaches only rarely, run step by step --------------------------------
def change(
    device: int,
    op: Op = Op.ADD,
    id_type: IdType = IdType.IDFA,
    segment: str = "MIRROR",
    bad: bool = False,
) -> tuple[int, Record]:
    return device, Record(segment, op, id_type, device_id(device, id_type), bad)


def test_batch_finishing_after_its_partition_came_back_does_not_release_the_new_hold() -> None:
    m = CoreModel()
    m.backlog([change(0), change(2)])  # partition 0, offsets 0 and 1
    m._poll(0, 1)
    m._revoke(0, completes=False, comes_back=True)  # the batch of offset 0 outlives the revoke
    m._poll(0, 2)  # re-read: offsets 0 and 1 in a new buffer, holding offset 0 in a new epoch
    m._upload("MIRROR", "acknowledged")  # the old batch: its release names the old epoch
    assert m.tracker.committable(0) == 0
    m.committable_never_passes_an_unapplied_change()
    m.teardown()


def test_row_refused_by_inmobi_keeps_its_offset_held_until_the_dlq_confirms() -> None:
    m = CoreModel()
    m.backlog([change(4, id_type=IdType.GAID), change(0)])  # offset 0 is a poison ID
    m._poll(0, 2)
    m._flush("MIRROR", FlushReason.AGE)
    m._upload("MIRROR", "acknowledged")  # offset 0 is held twice: the batch and the DLQ write
    assert m.tracker.committable(0) == 0
    m._confirm(0)
    assert m.tracker.committable(0) == 2
    m.teardown()


def test_batch_applied_twice_around_a_crash_leaves_the_last_write() -> None:
    m = CoreModel()
    m.backlog([change(0), change(0, Op.REMOVE)])
    m._poll(0, 1)
    m._flush("MIRROR", FlushReason.AGE)
    m._upload("MIRROR", "ambiguous")  # ADD applied, answer lost
    m._poll(0, 1)
    m._flush("MIRROR", FlushReason.AGE)
    m._upload("MIRROR", "ambiguous")  # applied a second time: harmless
    m._upload("MIRROR", "acknowledged")
    m._upload("MIRROR", "acknowledged")  # REMOVE
    m.crash_and_restart(0)  # before any commit: both are read and applied again
    m.teardown()
    assert m.inmobi == set()


def test_ignored_changes_and_dlq_confirms_let_commits_pass() -> None:
    m = CoreModel()
    m.backlog([change(0, Op.REMOVE, segment="ADDS_ONLY"), change(2, bad=True), change(0)])
    m._poll(0, 3)
    m.commit()
    assert m.committed[0] == 1  # the ignored remove is done; the bad record waits for the DLQ
    m._confirm(0)
    m.commit()
    assert m.committed[0] == 2  # the buffered add still holds offset 2
    m.teardown()


def test_late_hold_after_revoke_does_not_survive_reassignment() -> None:
    """A DLQ hold taken for a revoked partition (a row InMobi refused from a batch that outlived
    the revoke: `Pipeline._row_rejected`) must not pin the next assignment's commits, which
    start wherever the group committed meanwhile."""
    t = OffsetTracker()
    t.assign(0)
    t.hold(0, 5)
    t.revoke(0)
    late_epoch = t.hold(0, 7)  # late: partition 0 is no longer assigned
    t.assign(0)  # assigned again; another owner had committed 100 meanwhile
    t.consumed(0, 120)  # read 100..120, nothing held
    assert t.to_commit() == {0: 121}  # today: {0: 7}, a commit back from 100 to 7
    assert t.state(0).epoch != late_epoch  # type: ignore[union-attr]


def test_row_refused_from_a_batch_of_an_earlier_assignment_does_not_let_commits_skip() -> None:
    """The pipeline's calls, in order: offset 0 waits for its DLQ write, offset 4 is in a batch
    whose upload outlives the revoke; the revoke commits 0. The partition comes back and the
    consumer starts again at 0; before it has read anything, InMobi refuses the old batch's row
    at offset 4 and `_row_rejected` holds 4 in the new assignment. Committing 4 now skips 0-3:
    a crash before they are re-read loses them."""
    t = OffsetTracker()
    t.assign(0)
    t.hold(0, 0)
    t.hold(0, 4)
    t.consumed(0, 4)
    assert t.to_commit({0}) == {0: 0}
    t.mark_committed({0: 0})
    t.revoke(0)
    t.assign(0)
    t.hold(0, 4)  # the late DLQ hold
    assert t.to_commit({0}) == {}  # today: {0: 4}
