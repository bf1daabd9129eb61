"""`Pipeline` + `Delivery` driven through the fakes of `tests.fakes`: no broker, no HTTP.

The pipeline is built as `worker.runner` builds it, with fakes for the ports, a `FakeClock` (age
flushes happen when a test moves it) and a `sleep` injected into `Delivery` that records the
requested delay and moves the clock instead of waiting. Rebalances run inside `poll_batch` on the
pipeline's consumer thread, as librdkafka runs them. Tests wait on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import random
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog.testing

from tests.fakes import FakeClock, FakeDlq, FakeInMobi, FakeSource
from worker.buffering import BufferLimits, BufferSet
from worker.decoding import Decoder
from worker.delivery import Delivery
from worker.directory import SegmentDirectory
from worker.encoding import FileLimits
from worker.errors import TransientError
from worker.metrics import Metrics
from worker.model import CSV_COLUMN, IdType, MembershipChange, Op, Stage
from worker.naming import inmobi_segment_name
from worker.offsets import OffsetTracker
from worker.pipeline import Pipeline, PipelineConfig
from worker.segments import SegmentCatalog

AGE = 60.0  # FLUSH_MAX_AGE_SECONDS of every rig; moving the clock past it flushes every buffer
FAST = PipelineConfig(
    commit_interval_seconds=0.0,  # commit on every tick
    shutdown_timeout_seconds=5.0,
    revoke_timeout_seconds=5.0,
    poll_timeout_seconds=0.002,
    tick_seconds=0.002,
    # The fence reads the same clock: moving it past an age limit must not look like a consumer
    # that stopped polling (fencing has its own tests).
    session_timeout_seconds=1e9,
    progress_log_seconds=1e9,
)


# -- events and the model --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    segment: str  # the CDP name as the producer writes it
    device: str
    op: str = "ADD"
    id_type: str = "IDFA"

    @property
    def member(self) -> tuple[str, str]:
        """As InMobi holds it: (CSV column, ID); advertising IDs are normalised to lower case."""
        dev = self.device if self.id_type == "DEVICE_ID" else self.device.lower()
        return CSV_COLUMN[IdType[self.id_type]], dev

    def value(self) -> bytes:
        return json.dumps(
            {
                "event_id": str(uuid.uuid4()),
                "segment": self.segment,
                "op": self.op,
                "id_type": self.id_type,
                "device_id": self.device,
                "occurred_at": 0,
            }
        ).encode()


def device(n: int) -> str:
    return str(uuid.UUID(int=(n + 1) * 0x9E3779B97F4A7C15 % (1 << 128)))


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def devices_in(partition: int, partitions: int, count: int) -> list[str]:
    found = (device(n) for n in range(10_000))
    return [d for d in found if partition_of(d, partitions) == partition][:count]


def expected_membership(changes: list[Change]) -> dict[str, set[tuple[str, str]]]:
    """Last change per (segment, id type, device) wins; a member iff that change is an ADD."""
    last: dict[tuple[str, tuple[str, str]], str] = {}
    for c in changes:  # one device is in one partition, so list order is partition order
        last[(inmobi_segment_name(c.segment), c.member)] = c.op
    out: dict[str, set[tuple[str, str]]] = {}
    for (segment, member), op in last.items():
        members = out.setdefault(segment, set())
        if op == "ADD":
            members.add(member)
    return out


# -- the rig -----------------------------------------------------------------------------------------
class CommitAudit:
    """Checks every commit as it happens: each record below a committed offset took effect.

    Good records took effect when an upload InMobi applied (acknowledged or ambiguous) held their
    device for their segment, or a confirmed DLQ record carries their device (a row refused at
    upload); bad records when a confirmed DLQ record is theirs. Also: commits only move forward.
    Runs on the pipeline's consumer thread, so it records violations instead of raising.
    """

    def __init__(self, source: FakeSource, inmobi: FakeInMobi, dlq: FakeDlq) -> None:
        self.source, self.inmobi, self.dlq = source, inmobi, dlq
        self.changes: dict[tuple[int, int], Change] = {}
        self.violations: list[str] = []
        source.on_commit = self.check

    def check(self, offsets: Mapping[int, int]) -> None:
        applied = {
            (u.segment, (u.column, i))
            for u in list(self.inmobi.uploads)
            if u.outcome in ("ok", "ambiguous")
            for i in u.ids
        }
        confirmed = list(self.dlq.confirmed)
        dlq_keys = {r.msg.key for r in confirmed}
        dlq_at = {(r.msg.partition, r.msg.offset) for r in confirmed}
        for p, offset in offsets.items():
            before = self.source.committed.get(p, 0)
            if offset < before:
                self.violations.append(f"partition {p}: commit {offset} after {before}")
            for o in range(offset):
                c = self.changes.get((p, o))
                if c is None:
                    took_effect = (p, o) in dlq_at
                else:
                    key = (inmobi_segment_name(c.segment), c.member)
                    took_effect = key in applied or c.device.encode() in dlq_keys
                if not took_effect:
                    self.violations.append(f"partition {p}: commit {offset} passes offset {o}")


@dataclass
class Rig:
    source: FakeSource
    dlq: FakeDlq
    inmobi: FakeInMobi
    clock: FakeClock
    tracker: OffsetTracker
    buffers: BufferSet
    metrics: Metrics
    pipeline: Pipeline
    sleeps: list[float]
    audit: CommitAudit
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, changes: list[Change]) -> list[int]:
        """Produce keyed by device ID; return the offset of each change."""
        offsets = []
        for c in changes:
            p = partition_of(c.device, len(self.source.log))
            o = self.source.produce(p, c.device.encode(), c.value()).offset
            self.audit.changes[(p, o)] = c
            offsets.append(o)
        return offsets

    def membership(self) -> dict[str, set[tuple[str, str]]]:
        return {name: self.inmobi.membership(name) for name in self.inmobi.members}

    def commits_of(self, partition: int) -> list[int]:
        return [c[partition] for c in self.source.commits if partition in c]

    def flushed(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "inmobi_sync_flushes_total", {"reason": reason}
        )
        return value or 0.0


def make_rig(
    partitions: int = 3,
    *,
    max_ids: int = 100_000,
    config: PipelineConfig = FAST,
    auto_confirm: bool = True,
) -> Rig:
    clock = FakeClock()
    source = FakeSource(partitions)
    dlq = FakeDlq(auto_confirm=auto_confirm)
    inmobi = FakeInMobi(clock)
    tracker = OffsetTracker()
    buffers = BufferSet(BufferLimits(max_ids, 10_485_760, AGE), tracker)
    metrics = Metrics()
    catalog = SegmentCatalog.default()
    directory = SegmentDirectory(catalog, inmobi)
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        clock.advance(delay)
        await asyncio.sleep(0.001)

    def make_delivery(**hooks: Any) -> Delivery:  # as worker.runner builds it
        return Delivery(
            inmobi,
            directory,
            CSV_COLUMN,
            FileLimits(),
            metrics=metrics,
            rng=random.Random(7),
            sleep=sleep,
            **hooks,
        )

    pipeline = Pipeline(
        config,
        source=source,
        dlq=dlq,
        decoder=Decoder(registry_enabled=False),
        registry=None,
        buffers=buffers,
        tracker=tracker,
        delivery_factory=make_delivery,
        catalog=catalog,
        metrics=metrics,
        clock=clock,
    )
    audit = CommitAudit(source, inmobi, dlq)
    return Rig(source, dlq, inmobi, clock, tracker, buffers, metrics, pipeline, sleeps, audit)


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[Rig]:
    """Run the pipeline; on leaving, stop it, wait for its drain and final commit, and check
    that no commit passed a record that had not taken effect."""
    task = asyncio.create_task(rig.pipeline.run(rig.stop))
    try:
        yield rig
    except BaseException:
        rig.inmobi.release_all()  # let a failed test's pipeline drain instead of hanging
        rig.dlq.auto_confirm = True
        raise
    finally:
        rig.stop.set()
        await asyncio.wait_for(task, 20)
    assert rig.audit.violations == []


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.002)


async def processed(rig: Rig) -> None:
    """Wait until the pipeline has processed every record of the log (buffered, ignored, DLQ)."""

    def done() -> bool:
        for p, end in rig.source.end_offsets().items():
            state = rig.tracker.state(p)
            if end and (state is None or state.next_offset != end):
                return False
        return True

    await eventually(done, "every record processed")


async def flush_by_age(rig: Rig) -> None:
    """Wait until every record was processed, then move the clock so that every buffer is due."""
    await processed(rig)
    rig.clock.advance(AGE + 1)


def monotonic(values: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(values))


# -- tests -------------------------------------------------------------------------------------------
async def test_events_for_three_segments_end_in_inmobi_as_the_log_says_and_all_is_committed() -> (
    None
):
    rng = random.Random(3)
    ids = [(t, device(n)) for n in range(16) for t in ("IDFA", "GAID")]
    ids += [("DEVICE_ID", f'shelf "{n}", left ') for n in range(8)]  # quoted in the CSV
    changes = [
        Change(
            rng.choice(["high_value users", "churn-risk", "Lapsed"]),
            device_id,
            rng.choice(["ADD", "ADD", "REMOVE"]),
            id_type,
        )
        for id_type, device_id in (rng.choice(ids) for _ in range(300))
    ]
    rig = make_rig(max_ids=16)  # some buffers flush by size while consuming, the rest on stop
    rig.publish(changes)
    async with running(rig):
        await processed(rig)
    assert rig.membership() == expected_membership(changes)
    assert set(rig.membership()) == {"HIGH_VALUE_USERS", "CHURN_RISK", "LAPSED"}
    assert {column for members in rig.membership().values() for column, _ in members} == {
        "ida",
        "gpId",
        "ifa",
    }
    assert rig.source.committed == rig.source.end_offsets()
    assert all(monotonic(rig.commits_of(p)) for p in rig.source.log)
    assert rig.dlq.sent == []
    assert rig.source.closed


async def test_held_segment_pins_commits_at_its_first_offset_while_other_segments_advance() -> None:
    rig = make_rig(partitions=2)
    changes: list[Change] = []
    for p in range(2):
        a, b, c = devices_in(p, 2, 3)
        changes += [Change("B", b), Change("C", c), Change("B", a), Change("A", a)]
        changes += [Change("B", c), Change("C", b, "REMOVE"), Change("A", b)]
    offsets = rig.publish(changes)
    first_a = dict.fromkeys(range(2), 3)  # where "A" starts in each partition
    assert [o for ch, o in zip(changes, offsets, strict=True) if ch.segment == "A"] == [3, 6] * 2
    gate = rig.inmobi.hold("A")
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.source.committed == first_a, "commits up to A's first offset")
        expected = expected_membership(changes)
        await eventually(
            lambda: (
                rig.inmobi.membership("B") == expected["B"]
                and rig.inmobi.membership("C") == expected["C"]
            ),
            "B and C uploaded",
        )
        assert rig.inmobi.membership("A") == set()
        for p in range(2):
            assert max(rig.commits_of(p)) <= first_a[p]
        gate.set()
        ends = rig.source.end_offsets()
        await eventually(lambda: rig.source.committed == ends, "commits reach the end")
    assert rig.membership() == expected
    for p in range(2):
        assert monotonic(rig.commits_of(p))
        assert max(o for o in rig.commits_of(p) if o <= first_a[p]) == first_a[p]


async def test_bad_record_goes_to_the_dlq_and_its_offset_commits_only_after_the_confirm() -> None:
    rig = make_rig(partitions=1, auto_confirm=False)
    d1, d2, d3 = (device(n) for n in range(3))
    rig.publish([Change("S", d1), Change("S", d2)])
    bad = rig.source.produce(0, b"some-key", b'{"event_id": "not even json')
    rig.publish([Change("S", d3)])
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: len(rig.inmobi.membership("S")) == 3, "good records uploaded")
        await eventually(lambda: rig.source.committed.get(0) == 2, "commit up to the bad record")
        await eventually(lambda: rig.pipeline.delivery.batches_in_flight() == 0, "delivered")
        assert rig.tracker.committable(0) == 2  # everything else is done: only the DLQ holds
        assert [(r.msg, r.rejection.stage) for r in rig.dlq.sent] == [(bad, Stage.DECODE)]
        assert rig.dlq.confirmed == []
        assert max(rig.commits_of(0)) == 2
        rig.dlq.confirm_all()
        await eventually(lambda: rig.source.committed.get(0) == 4, "commit past the bad record")
    assert rig.dlq.confirmed == rig.dlq.sent


async def test_file_refused_for_one_bad_id_is_split_and_only_that_row_goes_to_the_dlq() -> None:
    rig = make_rig(partitions=1)
    ids = [device(n) for n in range(9)]
    offsets = rig.publish([Change("S", d) for d in ids])
    refused = ids[5]
    rig.inmobi.reject_ids("S", [refused])
    with structlog.testing.capture_logs() as logs:
        async with running(rig):
            await flush_by_age(rig)
            await eventually(lambda: rig.source.committed.get(0) == 9, "commit to the end")
    [uploaded] = [e for e in logs if e["event"] == "batch_uploaded"]
    assert (uploaded["rows"], uploaded["not_uploaded"]) == (8, 1)  # the refused row: DLQ
    assert rig.inmobi.membership("S") == {("ida", d) for d in ids if d != refused}
    [record] = rig.dlq.sent
    assert record.rejection.stage is Stage.UPLOAD
    assert (record.msg.partition, record.msg.offset) == (0, offsets[5])
    assert record.msg.key == refused.encode()
    accepted = [i for u in rig.inmobi.uploads if u.outcome == "ok" for i in u.ids]
    assert sorted(accepted) == sorted(d for d in ids if d != refused)  # each good ID once
    assert all(refused in u.ids for u in rig.inmobi.uploads if u.outcome != "ok")


async def test_transient_error_is_retried_no_sooner_than_its_retry_after() -> None:
    rig = make_rig(partitions=1)
    rig.inmobi.fail_next("S", TransientError("429 slow down", status=429, retry_after=7.5))
    rig.publish([Change("S", device(1))])
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.source.committed.get(0) == 1, "commit after the retry")
    first, second = rig.inmobi.uploads
    assert (first.outcome, second.outcome) == ("TransientError", "ok")
    assert rig.sleeps == [7.5]
    assert second.at - first.at >= 7.5


async def test_upload_applied_but_answered_with_an_error_is_sent_again_harmlessly() -> None:
    rig = make_rig(partitions=1)
    d = device(1)
    rig.inmobi.apply_then_fail("S", TransientError("502 after apply", status=502))
    changes = [Change("S", d), Change("S", device(2))]
    rig.publish(changes)
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.source.committed.get(0) == 2, "first batch committed")
        rig.publish([Change("S", d, "REMOVE")])
        await flush_by_age(rig)
        await eventually(lambda: rig.source.committed.get(0) == 3, "second batch committed")
    assert [u.outcome for u in rig.inmobi.uploads] == ["ambiguous", "ok", "ok"]
    assert rig.inmobi.membership("S") == {("ida", device(2))}


async def test_shutdown_flushes_every_buffer_and_commits_the_end() -> None:
    rig = make_rig()
    changes = [Change(s, device(n)) for n in range(30) for s in ("A", "B")]
    rig.publish(changes)
    async with running(rig):
        await processed(rig)
        assert rig.buffers.buffered == 60
        assert rig.inmobi.uploads == []
        assert all(o == 0 for c in rig.source.commits for o in c.values())
    assert rig.flushed("shutdown") == 2
    assert rig.membership() == expected_membership(changes)
    assert rig.source.committed == rig.source.end_offsets()
    assert rig.source.closed


async def test_revoke_flushes_the_partitions_buffers_and_commits_them_before_giving_it_up() -> None:
    rig = make_rig(partitions=2)
    in_0, in_1 = devices_in(0, 2, 5), devices_in(1, 2, 5)
    rig.publish([Change("A", d) for d in in_0] + [Change("B", d) for d in in_1])
    async with running(rig):
        await processed(rig)
        assert rig.buffers.buffered == 10
        rig.source.request_revoke([0])
        await eventually(lambda: rig.source.rebalances == 2, "revoke done")
        assert rig.source.committed[0] == 5  # committed from inside the callback
        assert rig.flushed("revoke") == 1
        assert rig.inmobi.membership("A") == {("ida", d) for d in in_0}
        assert "B" not in rig.inmobi.members  # partition 1 keeps buffering
        assert rig.source.assigned == {1}
    assert rig.source.committed == {0: 5, 1: 5}


async def test_commit_failure_commits_nothing_and_a_later_tick_commits_again() -> None:
    rig = make_rig(partitions=1)
    rig.source.fail_commits = 3
    rig.publish([Change("S", device(n)) for n in range(4)])
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.source.committed.get(0) == 4, "commit after failures")
    assert rig.source.fail_commits == 0
    assert rig.tracker.state(0) is not None
    assert rig.tracker.state(0).committed == 4  # type: ignore[union-attr]


async def test_upload_retried_after_its_partition_was_given_up_does_not_undo_a_newer_change() -> (
    None
):
    config = dataclasses.replace(FAST, revoke_timeout_seconds=0.0)
    rig = make_rig(partitions=1, config=config)
    x = device(1)
    rig.publish([Change("S", x)])
    rig.inmobi.fail_next("S", *[TransientError("503", status=503)] * 100_000)
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: len(rig.inmobi.uploads) >= 2, "the upload failing")
        rig.source.request_revoke([0])
        await eventually(lambda: rig.source.rebalances == 2, "revoke done")
        # The new owner reads ADD x, then REMOVE x, and uploads the net REMOVE.
        rig.publish([Change("S", x, "REMOVE")])
        rig.inmobi.apply("S", "remove", "ida", [x])
        rig.inmobi.recover("S")
        await eventually(lambda: rig.pipeline.delivery.batches_in_flight() == 0, "queue empty")
        assert rig.inmobi.membership("S") == set()  # today: the stale ADD x lands last


async def test_row_refused_at_upload_reaches_the_dlq_as_a_replayable_change_of_its_segment() -> (
    None
):
    rig = make_rig(partitions=1)
    ids = [device(n) for n in range(2)]
    offsets = rig.publish([Change("high_value users", d, "REMOVE") for d in ids])
    rig.inmobi.reject_ids("HIGH_VALUE_USERS", [ids[0]])
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.source.committed.get(0) == 2, "commit to the end")
    [record] = rig.dlq.sent
    replayed = Decoder(registry_enabled=False).decode(record.msg)
    assert isinstance(replayed, MembershipChange)
    assert (replayed.segment, replayed.op, replayed.device_id) == (
        "HIGH_VALUE_USERS",
        Op.REMOVE,
        ids[0],
    )
    assert (replayed.partition, replayed.offset) == (0, offsets[0])


async def test_batch_cut_before_its_partition_left_and_came_back_does_not_undo_a_newer_change() -> (
    None
):
    config = dataclasses.replace(FAST, revoke_timeout_seconds=0.0)
    rig = make_rig(partitions=2, config=config)
    [x], [z] = devices_in(0, 2, 1), devices_in(1, 2, 1)
    gate = rig.inmobi.hold("S")
    rig.publish([Change("S", z)])
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.inmobi.waiting.get("S") == 1, "z's batch at the gate")
        rig.publish([Change("S", x)])
        await flush_by_age(rig)
        await eventually(lambda: rig.pipeline.delivery.batches_in_flight() == 2, "x queued")
        rig.source.request_revoke([0])
        await eventually(lambda: rig.source.rebalances == 2, "revoke done")
        # Meanwhile another member owns partition 0: it reads ADD x, REMOVE x, uploads the net
        # REMOVE and commits the end. Then partition 0 comes back to this worker.
        rig.publish([Change("S", x, "REMOVE")])
        rig.inmobi.apply("S", "remove", "ida", [x])
        rig.source.commit_elsewhere({0: 2})
        rig.source.request_assign([0])
        await eventually(lambda: rig.source.rebalances == 3, "assigned again")
        gate.set()
        await eventually(lambda: rig.pipeline.delivery.batches_in_flight() == 0, "queue empty")
        assert rig.inmobi.membership("S") == {("ida", z)}  # today: the stale ADD x lands last


async def test_row_refused_after_its_partition_left_does_not_let_a_commit_skip_unread_records() -> (
    None
):
    config = dataclasses.replace(FAST, revoke_timeout_seconds=0.0)
    rig = make_rig(partitions=1, config=config, auto_confirm=False)
    y, x = device(1), device(2)
    rig.publish([Change("T", y), Change("S", x)])  # offsets 0 and 1
    rig.inmobi.fail_next("T", *[TransientError("503", status=503)] * 100_000)
    rig.inmobi.reject_ids("S", [x])
    gate = rig.inmobi.hold("S")
    async with running(rig):
        await flush_by_age(rig)
        await eventually(lambda: rig.inmobi.waiting.get("S") == 1, "x's upload on the wire")
        rig.source.request_revoke([0])  # T's batch still holds offset 0: the revoke commits 0
        await eventually(lambda: rig.source.rebalances == 2, "revoke done")
        rig.source.pause([0])  # when it comes back, its first fetch is slow
        gate.set()  # InMobi refuses x, but partition 0 left: its new owner re-reads x
        await eventually(lambda: rig.inmobi.waiting.get("S") == 0, "x's upload answered")
        assert rig.dlq.sent == []  # a row of a partition given up is not dead-lettered here
        rig.source.request_assign([0])
        await eventually(lambda: rig.source.rebalances == 3, "assigned again")
        ticks = rig.dlq.polls
        await eventually(lambda: rig.dlq.polls >= ticks + 3, "a few ticks, each with a commit")
        assert rig.audit.violations == []  # today: offset 1 committed, offset 0 never applied
        rig.dlq.auto_confirm = True
        rig.inmobi.recover("T")
        rig.source.resume([0])
        await flush_by_age(rig)  # what was read again is uploaded
        await eventually(lambda: rig.source.committed.get(0) == 2, "commit to the end")
