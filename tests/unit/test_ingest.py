"""The batch ingest: the common-record path gives exactly what the general path gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_decoding import ENCODERS, decoder
from tests.unit.test_decoding_properties import valid_records
from worker import ingest as ingest_module
from worker.buffering import Batch, BufferLimits, BufferSet, FlushReason
from worker.generator import encode_avro
from worker.ingest import Ingest, Ingested
from worker.model import RecordBatch, SourceMessage, Stage
from worker.offsets import OffsetTracker
from worker.segments import Mode, SegmentCatalog, SegmentConfig

PARTITIONS = 3


@dataclass
class Run:
    """One ingest with its own buffers and tracker; flushes cut at once, like the pipeline."""

    fast_path: bool
    limits: BufferLimits
    catalog: SegmentCatalog = field(default_factory=SegmentCatalog)
    owned: frozenset[int] = frozenset(range(PARTITIONS))

    def __post_init__(self) -> None:
        self.tracker = OffsetTracker()
        for p in range(PARTITIONS):
            self.tracker.assign(p)
        self.buffers = BufferSet(self.limits, self.tracker)
        self.ingest = Ingest(decoder(), self.buffers, self.catalog, fast_path=self.fast_path)
        self.batches: list[Batch] = []

    def flush(self, segment: str, reason: FlushReason) -> None:
        batch = self.buffers.cut(segment, reason)
        if batch is not None:
            self.batches.append(batch)

    def take(self, batch: RecordBatch, now: float = 0.0) -> Ingested:
        return self.ingest.take(batch, self.owned, now, self.flush)

    def finish(self) -> list[Batch]:
        for segment in self.buffers.segments():
            self.flush(segment, FlushReason.SHUTDOWN)
        return self.batches


def records_batch(values: list[bytes | None], partitions: list[int]) -> RecordBatch:
    offsets: dict[int, int] = {}
    msgs = []
    for value, p in zip(values, partitions, strict=True):
        offsets[p] = offsets.get(p, -1) + 1
        msgs.append(SourceMessage("topic", p, offsets[p], b"key", value, 7))
    return RecordBatch.of("topic", msgs)


def shape(batches: list[Batch]) -> list[tuple[Any, ...]]:
    """Everything a batch uploads and holds (its ID aside: both runs number alike anyway)."""
    return [(b.segment, b.reason, b.rows, b.holds, b.entries) for b in batches]


def record(segment: str, op: str, id_type: str, device_id: str) -> dict[str, Any]:
    return {
        "event_id": "5bc8fbbc-bde5-4099-8164-000000000001",
        "segment": segment,
        "op": op,
        "id_type": id_type,
        "device_id": device_id,
        "occurred_at": 1_700_000_000_000,
    }


BAD_VALUES = st.one_of(
    st.none(),
    st.binary(max_size=120),
    st.builds(lambda v, cut: v[:cut], st.just(encode_avro(record("s", "ADD", "IDFA", "x"))), st.integers(0, 80)),
)  # fmt: skip


@st.composite
def values(draw: st.DrawFn) -> bytes | None:
    """A record value: mostly valid (plain Avro, framed, JSON; few segments, so IDs collide)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(BAD_VALUES)
    rec = draw(valid_records())
    if draw(st.booleans()):
        rec["segment"] = draw(st.sampled_from(["alpha", "beta", "Alpha"]))
    if draw(st.booleans()) and rec["id_type"] != "DEVICE_ID":
        rec["device_id"] = draw(st.sampled_from([str(u) for u in _FEW_UUIDS]))
    encoding = draw(st.sampled_from(["avro", "avro", "avro", *ENCODERS]))
    return ENCODERS[encoding](rec)


_FEW_UUIDS = [f"0000000{i}-aaaa-4bbb-8ccc-dddddddddddd" for i in range(1, 4)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(values(), st.integers(0, PARTITIONS - 1)), max_size=60),
    st.integers(1, 12),
    st.sampled_from([10_485_760, 400, 1_000]),
    st.sampled_from([None, Mode.ADD, Mode.REMOVE]),
    st.integers(1, 3),
)
def test_common_path_equals_general_path(
    items: list[tuple[bytes | None, int]],
    max_ids: int,
    max_bytes: int,
    alpha_mode: Mode | None,
    batches: int,
) -> None:
    limits = BufferLimits(max_ids=max_ids, max_bytes=max_bytes, max_age_seconds=60)
    catalog = SegmentCatalog(
        segments={} if alpha_mode is None else {"ALPHA": SegmentConfig(mode=alpha_mode)}
    )
    fast, general = Run(True, limits, catalog), Run(False, limits, catalog)
    whole = records_batch([v for v, _ in items], [p for _, p in items])
    step = max(1, -(-len(whole) // batches))
    for start in range(0, len(whole), step):
        part = whole.select(range(start, min(len(whole), start + step)))
        a, b = fast.take(part), general.take(part)
        assert (a.accepted, a.ignored, a.last_offsets) == (b.accepted, b.ignored, b.last_offsets)
        assert a.rejected == b.rejected
        assert fast.buffers.buffered == general.buffers.buffered
    assert shape(fast.finish()) == shape(general.finish())
    for p in range(PARTITIONS):
        assert fast.tracker.state(p) == general.tracker.state(p)


def test_common_records_are_normalised_and_deduplicated() -> None:
    run = Run(True, BufferLimits())
    upper = "ABCDEF01-2345-4789-ABCD-EF0123456789"
    device = "Device-Case,Kept"
    values: list[bytes | None] = [
        encode_avro(record("high_value users", "ADD", "IDFA", upper)),
        encode_avro(record("high_value users", "REMOVE", "IDFA", upper.lower())),
        encode_avro(record("high_value users", "ADD", "DEVICE_ID", device)),
    ]
    out = run.take(records_batch(values, [0, 0, 1]))
    assert (out.accepted, out.ignored, out.rejected) == (3, 0, [])
    assert out.last_offsets == {0: 1, 1: 0}
    [batch] = run.finish()
    assert batch.segment == "HIGH_VALUE_USERS"
    assert [(r.op.name, r.id_type.name, r.ids) for r in batch.rows] == [
        ("REMOVE", "IDFA", (upper.lower(),)),
        ("ADD", "DEVICE_ID", (device,)),
    ]
    assert [(p, o) for p, o, _epoch in batch.holds] == [(0, 0), (1, 0)]


def test_bad_common_shapes_go_to_the_dlq_with_the_general_reason() -> None:
    run = Run(True, BufferLimits())
    zero = "00000000-0000-0000-0000-000000000000"
    values: list[bytes | None] = [
        encode_avro(record("s", "ADD", "GAID", zero)),
        None,
        encode_avro(record("s", "ADD", "DEVICE_ID", "tab\tinside")),
    ]
    out = run.take(records_batch(values, [0, 0, 0]))
    assert out.accepted == 0
    assert [(m.offset, r.stage) for m, r in out.rejected] == [
        (0, Stage.VALIDATE),
        (1, Stage.DECODE),
        (2, Stage.VALIDATE),
    ]
    assert out.rejected[0][0].key == b"key"  # the whole record goes to the DLQ


def test_records_of_partitions_not_owned_are_skipped() -> None:
    run = Run(True, BufferLimits(), owned=frozenset({1}))
    value = encode_avro(record("s", "ADD", "IDFA", _FEW_UUIDS[0]))
    out = run.take(records_batch([value, value, value], [0, 1, 2]))
    assert (out.accepted, out.last_offsets) == (1, {1: 0})


def test_a_size_limit_flushes_in_the_middle_of_a_batch() -> None:
    run = Run(True, BufferLimits(max_ids=2))
    values: list[bytes | None] = [
        encode_avro(record("s", "ADD", "IDFA", u)) for u in [*_FEW_UUIDS, _FEW_UUIDS[0]]
    ]
    run.take(records_batch(values, [0, 0, 0, 0]))
    assert [(b.reason, b.entries) for b in run.batches] == [
        (FlushReason.IDS, 2),
        (FlushReason.IDS, 2),
    ]
    assert [[p_o[:2] for p_o in b.holds] for b in run.batches] == [[(0, 0)], [(0, 2)]]


def test_routes_are_forgotten_past_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "_MAX_ROUTES", 2)
    run = Run(True, BufferLimits())
    values: list[bytes | None] = [
        encode_avro(record(f"segment {i % 3}", "ADD", "IDFA", _FEW_UUIDS[i // 3])) for i in range(9)
    ]
    out = run.take(records_batch(values, [0] * 9))
    assert out.accepted == 9
    assert sorted(b.segment for b in run.finish()) == ["SEGMENT_0", "SEGMENT_1", "SEGMENT_2"]


def test_long_device_ids_count_their_real_size_toward_max_bytes() -> None:
    # framing of one lane (144) + three 60-character rows (61 bytes each) = 327 bytes
    run = Run(True, BufferLimits(max_bytes=327))
    values: list[bytes | None] = [
        encode_avro(record("s", "ADD", "DEVICE_ID", f"{i}" * 60)) for i in range(1, 5)
    ]
    run.take(records_batch(values, [0, 0, 0, 0]))
    assert [(b.reason, b.entries) for b in run.batches] == [(FlushReason.BYTES, 3)]
