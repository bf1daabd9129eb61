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

import binascii
import enum
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import compress
from typing import Final

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


def _uuid_lines(raw: bytes) -> str:
    """16-byte UUIDs, back to back, as hyphenated lower-case text, one per line (37 chars each).

    Done for a whole lane at once in C: hexlify everything, then move the 32 hex digits of every
    UUID into place with one strided slice assignment per digit position (~0.15 µs a UUID,
    against ~0.6 µs for `format_uuid` one by one).
    """
    n = len(raw) // 16
    hexed = binascii.hexlify(raw)
    out = bytearray(b"-") * (_UUID_ROW_BYTES * n)
    for src, dst in enumerate(_HEX_DIGIT_AT):
        out[dst::_UUID_ROW_BYTES] = hexed[src::32]
    out[_UUID_ROW_BYTES - 1 :: _UUID_ROW_BYTES] = b"\n" * n
    return out.decode("ascii")


# Where hex digit j of a UUID goes in its 36-character text (hyphens after digits 8, 12, 16, 20).
_HEX_DIGIT_AT: Final = tuple(j + (j >= 8) + (j >= 12) + (j >= 16) + (j >= 20) for j in range(32))
_FLIP: Final = bytes.maketrans(b"\x00\x01", b"\x01\x00")  # op byte: ADD <-> REMOVE
_PACK_EVERY: Final = 256  # UUIDs waiting as text before a lane packs them (bounds the extra memory)


def _and(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    """Byte-wise AND of two equal-length 0/1 masks, in C (through one big integer)."""
    return (int.from_bytes(a, "big") & int.from_bytes(b, "big")).to_bytes(len(a), "big")


class _Lane:
    """Append-only entries of one ID type. UUID lanes pack IDs as 16 bytes; others keep strings.

    A UUID lane takes device IDs as text and packs them `_PACK_EVERY` at a time with one
    ``bytes.fromhex`` (the decoder hands over canonical UUIDs; anything else raises ValueError
    when the lane packs). Entries are stored column-wise: ``ops`` (0 ADD, 1 REMOVE), ``partitions``
    and ``offsets`` (27 bytes an entry with the 16-byte key).
    """

    __slots__ = ("keys", "offsets", "ops", "packed", "partitions", "pending", "strings")

    def __init__(self, packed: bool) -> None:
        self.packed = packed
        self.keys = bytearray()
        self.pending: list[str] = []  # UUID text not yet packed into `keys`
        self.strings: list[str] = []
        self.ops = bytearray()
        self.partitions = array("H")
        self.offsets = array("q")

    def __len__(self) -> int:
        return len(self.ops)

    def append(self, device_id: str, op: int, partition: int, offset: int) -> None:
        if self.packed:
            self.pending.append(device_id)
            if len(self.pending) >= _PACK_EVERY:
                self.pack()
        else:
            self.strings.append(device_id)
        self.ops.append(op)
        self.partitions.append(partition)
        self.offsets.append(offset)

    def pack(self) -> None:
        """Move pending UUID text into `keys` as 16-byte values."""
        if self.pending:
            self.keys += bytes.fromhex("".join(self.pending).replace("-", ""))
            self.pending.clear()

    def _ids(self) -> list[str]:
        """Every entry's device ID as text, in entry order."""
        if not self.packed:
            return self.strings
        self.pack()
        return _uuid_lines(bytes(self.keys)).split("\n")[:-1]

    def dedupe(self, id_type: IdType) -> Iterator[Rows]:
        """Keep the last entry per ID; yield one `Rows` per op present (REMOVE, then ADD).

        Rows keep entry order (of each ID's last entry). Selection runs in C: a 0/1 mask per op
        (the op bytes themselves select REMOVE) filters the columns with `itertools.compress`.
        """
        ids = self._ids()
        n = len(ids)
        last = dict(zip(ids, range(n), strict=True))
        removes: bytes | bytearray = self.ops
        adds: bytes | bytearray = self.ops.translate(_FLIP)
        if len(last) != n:  # repeated IDs: only each one's last entry survives
            keep = bytearray(n)
            for i in last.values():
                keep[i] = 1
            removes, adds = _and(removes, keep), _and(adds, keep)
        for op, mask in ((Op.REMOVE, removes), (Op.ADD, adds)):
            picked = tuple(compress(ids, mask))
            if picked:
                yield Rows(
                    op,
                    id_type,
                    picked,
                    tuple(compress(self.partitions, mask)),
                    tuple(compress(self.offsets, mask)),
                )


_LANE_BYTES_BOUND: Final = 2 * (_GZIP_OVERHEAD + 8)  # gzip framing and header row, per lane


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

    def lane(self, id_type: IdType) -> _Lane:
        lane = self.lanes.get(id_type)
        if lane is None:
            lane = self.lanes[id_type] = _Lane(id_type is not IdType.DEVICE_ID)
            self.csv_bytes += _LANE_BYTES_BOUND
        return lane

    def add(self, change: MembershipChange, now: float) -> bool:
        """Append a change; True when this partition is new to the buffer (a hold to register)."""
        _segment, op, id_type, device_id, _event, _at, partition, offset = change
        lane = self.lanes.get(id_type)
        if lane is None:
            lane = self.lane(id_type)
        lane.append(device_id, op, partition, offset)
        if self.opened_at is None:
            self.opened_at = now
        self.entries += 1
        self.csv_bytes += _UUID_ROW_BYTES if lane.packed else _csv_row_bytes(device_id)
        if partition in self.first_offsets:
            return False
        self.first_offsets[partition] = offset
        return True

    def gzip_bound(self) -> int:
        """An upper bound of the compressed size of this buffer's files (headers included)."""
        return self.csv_bytes  # the per-lane framing is added when a lane opens

    def trigger(self, limits: BufferLimits, now: float) -> FlushReason | None:
        if self.entries >= limits.max_ids:
            return FlushReason.IDS
        if self.csv_bytes >= limits.max_bytes:
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


_IDS: Final = FlushReason.IDS  # globals: cheaper than enum attribute lookups on the hot path
_BYTES: Final = FlushReason.BYTES


class BufferSet:
    """All segment buffers of one worker, registering holds with the offset tracker."""

    def __init__(self, limits: BufferLimits, tracker: OffsetTracker) -> None:
        self.limits = limits
        self._max_ids = limits.max_ids
        self._max_bytes = limits.max_bytes
        self._tracker = tracker
        self._buffers: dict[str, SegmentBuffer] = {}
        self._next_batch_id = 1
        self.buffered = 0  # entries across every buffer

    def add(self, change: MembershipChange, now: float) -> FlushReason | None:
        """Buffer a change; return a reason when its segment must flush now (ids or bytes).

        The hot path: `SegmentBuffer.add` and `_Lane.append` written out inline (a call per
        event and per field access costs more than the work itself).
        """
        segment, op, id_type, device_id, _event, _at, partition, offset = change
        buf = self._buffers.get(segment)
        if buf is None:
            buf = self._buffers[segment] = SegmentBuffer(segment)
            buf.opened_at = now
        lane = buf.lanes.get(id_type)
        if lane is None:
            lane = buf.lane(id_type)
        if lane.packed:
            pending = lane.pending
            pending.append(device_id)
            if len(pending) >= _PACK_EVERY:
                lane.pack()
            buf.csv_bytes += _UUID_ROW_BYTES
        else:
            lane.strings.append(device_id)
            buf.csv_bytes += _csv_row_bytes(device_id)
        lane.ops.append(op)
        lane.partitions.append(partition)
        lane.offsets.append(offset)
        if partition not in buf.first_offsets:
            buf.first_offsets[partition] = offset
            buf.epochs[partition] = self._tracker.hold(partition, offset)
        buf.entries += 1
        self.buffered += 1
        if buf.entries >= self._max_ids:
            return _IDS
        if buf.csv_bytes >= self._max_bytes:
            return _BYTES
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
