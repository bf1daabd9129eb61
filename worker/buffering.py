"""Per-segment buffers: compact storage, last write wins, flush decisions.

Each segment has one `SegmentBuffer`, split into lanes by ID type. A lane is append-only and
compact: a UUID is kept as its 16 raw bytes, with one byte of op, two of partition and eight of
offset (27 bytes an entry, against ~130 for a dict keyed by the UUID string). Last write wins is
applied when the buffer is cut: a `dict(zip(...))` over the lane keeps the last entry per ID in C,
so a batch never holds both an add and a remove of one ID.

Flush triggers (`FlushReason`):
- ``ids``: the buffer holds `max_ids` entries. Entries are counted before deduplication, so a
  buffer with repeated IDs flushes a little early; it never uploads more than `max_ids` rows.
- ``bytes``: an upper bound of its gzip CSV (the uncompressed CSV size plus gzip framing; gzip never
  grows text by more than that) would pass `max_bytes`. Checked with arithmetic on every event,
  never by compressing. The encoder still measures real sizes and splits if needed.
- ``age``: the oldest entry is `max_age` seconds old; `due()` finds these with no event needed.
- ``revoke``, ``shutdown``, ``memory``: decided by the pipeline.

Offsets travel with the data: a buffer records the first offset it holds per partition and tells the
`OffsetTracker`, whose low watermark then stays at or below it until the batch is acknowledged.
Pure: time is an argument.
"""

from __future__ import annotations

import enum
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from worker.model import IdType, MembershipChange, Op
from worker.offsets import OffsetTracker

__all__ = ["Batch", "BufferLimits", "BufferSet", "FlushReason", "Rows", "SegmentBuffer"]

_GZIP_OVERHEAD = 64  # header, trailer and stored-block framing of one gzip member, rounded up
_UUID_ROW_BYTES = 37  # 36 characters and a newline


class FlushReason(enum.StrEnum):
    IDS = "ids"
    BYTES = "bytes"
    AGE = "age"
    REVOKE = "revoke"
    SHUTDOWN = "shutdown"
    MEMORY = "memory"


@dataclass(frozen=True, slots=True)
class BufferLimits:
    max_ids: int = 100_000
    max_bytes: int = 10_485_760
    max_age_seconds: float = 60.0


def _csv_row_bytes(device_id: str) -> int:
    """Bytes of a DEVICE_ID row as the encoder writes it (quoted when it holds `,` or `"`)."""
    if "," in device_id or '"' in device_id or device_id != device_id.strip():
        return len(device_id) + device_id.count('"') + 3
    return len(device_id) + 1


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Rows:
    """Deduplicated rows of one (op, id_type) of a batch, with where each came from."""

    op: Op
    id_type: IdType
    ids: tuple[str, ...]
    partitions: tuple[int, ...]
    offsets: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> Rows:
        return Rows(
            self.op,
            self.id_type,
            self.ids[start:stop],
            self.partitions[start:stop],
            self.offsets[start:stop],
        )


@dataclass(frozen=True, slots=True)
class Batch:
    """A cut buffer: what one flush of one segment uploads, and the offsets it holds."""

    batch_id: int
    segment: str
    reason: FlushReason
    rows: tuple[Rows, ...]
    holds: tuple[tuple[int, int, int], ...]  # (partition, first offset held, tracker epoch)
    entries: int  # entries before deduplication

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows)


class _Lane:
    """Append-only entries of one ID type. UUID lanes pack IDs as 16 bytes; others keep strings."""

    __slots__ = ("keys", "offsets", "ops", "packed", "partitions", "strings")

    def __init__(self, packed: bool) -> None:
        self.packed = packed
        self.keys = bytearray()
        self.strings: list[str] = []
        self.ops = bytearray()
        self.partitions = array("H")
        self.offsets = array("q")

    def __len__(self) -> int:
        return len(self.ops)

    def append(self, device_id: str, op: int, partition: int, offset: int) -> None:
        if self.packed:
            self.keys += bytes.fromhex(device_id.replace("-", ""))
        else:
            self.strings.append(device_id)
        self.ops.append(op)
        self.partitions.append(partition)
        self.offsets.append(offset)

    def _keys(self) -> list[bytes] | list[str]:
        if not self.packed:
            return self.strings
        k = bytes(self.keys)
        return [k[i : i + 16] for i in range(0, len(k), 16)]

    def dedupe(self, id_type: IdType) -> Iterator[Rows]:
        """Keep the last entry per ID; yield one `Rows` per op present."""
        keys = self._keys()
        last = dict(zip(keys, range(len(keys)), strict=True))
        for op in (Op.REMOVE, Op.ADD):
            picked = [i for i in last.values() if self.ops[i] == op]
            if not picked:
                continue
            if self.packed:
                ids = tuple(format_uuid(keys[i]) for i in picked)  # type: ignore[arg-type]
            else:
                ids = tuple(self.strings[i] for i in picked)
            parts = tuple(self.partitions[i] for i in picked)
            yield Rows(op, id_type, ids, parts, tuple(self.offsets[i] for i in picked))


class SegmentBuffer:
    """Changes of one segment since its last flush."""

    __slots__ = ("csv_bytes", "entries", "epochs", "first_offsets", "lanes", "opened_at", "segment")

    def __init__(self, segment: str) -> None:
        self.segment = segment
        self.lanes: dict[IdType, _Lane] = {}
        self.first_offsets: dict[int, int] = {}
        self.epochs: dict[int, int] = {}  # partition -> tracker epoch of its hold
        self.opened_at: float | None = None
        self.csv_bytes = 0
        self.entries = 0

    def add(self, change: MembershipChange, now: float) -> bool:
        """Append a change; True when this partition is new to the buffer (a hold to register)."""
        lane = self.lanes.get(change.id_type)
        if lane is None:
            lane = self.lanes[change.id_type] = _Lane(change.id_type is not IdType.DEVICE_ID)
        lane.append(change.device_id, change.op, change.partition, change.offset)
        if self.opened_at is None:
            self.opened_at = now
        self.entries += 1
        self.csv_bytes += _UUID_ROW_BYTES if lane.packed else _csv_row_bytes(change.device_id)
        if change.partition in self.first_offsets:
            return False
        self.first_offsets[change.partition] = change.offset
        return True

    def gzip_bound(self) -> int:
        """An upper bound of the compressed size of this buffer's files (headers included)."""
        return self.csv_bytes + len(self.lanes) * 2 * (_GZIP_OVERHEAD + 8)

    def trigger(self, limits: BufferLimits, now: float) -> FlushReason | None:
        if self.entries >= limits.max_ids:
            return FlushReason.IDS
        if self.gzip_bound() >= limits.max_bytes:
            return FlushReason.BYTES
        if self.opened_at is not None and now - self.opened_at >= limits.max_age_seconds:
            return FlushReason.AGE
        return None

    def holds_partition(self, partitions: set[int]) -> bool:
        return not partitions.isdisjoint(self.first_offsets)

    def cut(self, batch_id: int, reason: FlushReason) -> Batch:
        rows = tuple(r for t, lane in sorted(self.lanes.items()) for r in lane.dedupe(t))
        holds = tuple((p, o, self.epochs.get(p, 0)) for p, o in sorted(self.first_offsets.items()))
        return Batch(batch_id, self.segment, reason, rows, holds, self.entries)


class BufferSet:
    """All segment buffers of one worker, registering holds with the offset tracker."""

    def __init__(self, limits: BufferLimits, tracker: OffsetTracker) -> None:
        self.limits = limits
        self._tracker = tracker
        self._buffers: dict[str, SegmentBuffer] = {}
        self._next_batch_id = 1
        self.buffered = 0  # entries across every buffer

    def add(self, change: MembershipChange, now: float) -> FlushReason | None:
        """Buffer a change; return a reason when its segment must flush now (ids or bytes)."""
        buf = self._buffers.get(change.segment)
        if buf is None:
            buf = self._buffers[change.segment] = SegmentBuffer(change.segment)
        if buf.add(change, now):
            buf.epochs[change.partition] = self._tracker.hold(change.partition, change.offset)
        self.buffered += 1
        if buf.entries >= self.limits.max_ids:
            return FlushReason.IDS
        if buf.gzip_bound() >= self.limits.max_bytes:
            return FlushReason.BYTES
        return None

    def due(self, now: float) -> list[tuple[str, FlushReason]]:
        """Segments that must flush by their own limits (age included) at time `now`."""
        found = []
        for name, buf in self._buffers.items():
            reason = buf.trigger(self.limits, now)
            if reason is not None:
                found.append((name, reason))
        return found

    def segments(self) -> list[str]:
        return list(self._buffers)

    def holding(self, partitions: set[int]) -> list[str]:
        return [n for n, b in self._buffers.items() if b.holds_partition(partitions)]

    def sizes(self) -> dict[str, int]:
        return {n: b.entries for n, b in self._buffers.items()}

    def oldest(self) -> float | None:
        opened = [b.opened_at for b in self._buffers.values() if b.opened_at is not None]
        return min(opened, default=None)

    def largest(self) -> list[str]:
        return sorted(self._buffers, key=lambda n: self._buffers[n].entries, reverse=True)

    def cut(self, segment: str, reason: FlushReason) -> Batch | None:
        """Take a segment's buffer out as a batch; its holds move with the batch."""
        buf = self._buffers.pop(segment, None)
        if buf is None or buf.entries == 0:
            return None
        self.buffered -= buf.entries
        batch = buf.cut(self._next_batch_id, reason)
        self._next_batch_id += 1
        return batch
