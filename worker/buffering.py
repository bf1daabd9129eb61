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
  With ``age_spread`` s > 0, each buffer's age limit is drawn once, when it opens, uniformly from
  ``[max_age * (1 - s), max_age]``: never later than `max_age`, and buffers of many segments
  that opened together (at start, or after one tick flushed them all) drift apart instead of
  flushing, uploading and being acknowledged in lockstep, which would queue a whole cycle's files
  behind each other.
- ``revoke``, ``shutdown``, ``memory``: decided by the pipeline.

Offsets travel with the data: a buffer records the first offset it holds per partition and tells the
`OffsetTracker`, whose low watermark then stays at or below it until the batch is acknowledged.
Pure: time is an argument.
"""

from __future__ import annotations

import binascii
import enum
import random
import re
from array import array
from collections.abc import Callable, Iterator
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
    age_spread: float = 0.0  # fraction of max_age by which a buffer may flush early (see above)


def _csv_row_bytes(device_id: str | bytes) -> int:
    """Bytes of a DEVICE_ID row as the encoder writes it (`_csv_field`, then a newline)."""
    text = device_id if isinstance(device_id, str) else device_id.decode()
    return len(_csv_field(text).encode()) + 1


def format_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Rows:
    """Deduplicated rows of one (op, id_type) of a batch, with where each came from.

    IDFA and GAID rows keep their UUIDs packed (16 bytes each, as the lanes hold them) until
    they are read: the CSV text is made for the whole set at once (`lines`), and `ids` (the
    hyphenated lower-case strings) only when something needs single IDs. DEVICE_ID rows hold
    their strings. ``ids`` given as ``bytes`` means packed UUIDs.
    """

    __slots__ = ("_ids", "_packed", "id_type", "offsets", "op", "partitions")

    def __init__(
        self,
        op: Op,
        id_type: IdType,
        ids: tuple[str, ...] | bytes,
        partitions: tuple[int, ...],
        offsets: tuple[int, ...],
    ) -> None:
        self.op = op
        self.id_type = id_type
        self.partitions = partitions
        self.offsets = offsets
        if isinstance(ids, bytes):
            self._packed: bytes | None = ids
            self._ids: tuple[str, ...] | None = None
        else:
            self._packed, self._ids = None, ids

    @property
    def ids(self) -> tuple[str, ...]:
        if self._ids is None:
            assert self._packed is not None
            self._ids = tuple(_uuid_lines(self._packed).decode("ascii").split("\n")[:-1])
        return self._ids

    def lines(self) -> bytes:
        """The rows as CSV lines, each ending in a newline (DEVICE_IDs quoted when needed)."""
        if self._packed is not None:
            return _uuid_lines(self._packed)
        if not self._ids:
            return b""
        fields = map(_csv_field, self._ids) if self.id_type is IdType.DEVICE_ID else self._ids
        return ("\n".join(fields) + "\n").encode("ascii", "backslashreplace")

    def __len__(self) -> int:
        return len(self.partitions)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rows):
            return NotImplemented
        return (self.op, self.id_type, self.ids, self.partitions, self.offsets) == (
            other.op,
            other.id_type,
            other.ids,
            other.partitions,
            other.offsets,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Rows({self.op.name}, {self.id_type.name}, {len(self)} rows)"

    def slice(self, start: int, stop: int) -> Rows:
        ids = (
            self._packed[start * 16 : stop * 16]
            if self._packed is not None
            else self.ids[start:stop]
        )
        return Rows(
            self.op, self.id_type, ids, self.partitions[start:stop], self.offsets[start:stop]
        )

    def select(self, keep: list[int]) -> Rows:
        """The rows at the indexes ``keep`` (ascending)."""
        packed = self._packed
        ids: tuple[str, ...] | bytes = (
            b"".join([packed[i * 16 : i * 16 + 16] for i in keep])
            if packed is not None
            else tuple(self.ids[i] for i in keep)
        )
        return Rows(
            self.op,
            self.id_type,
            ids,
            tuple(self.partitions[i] for i in keep),
            tuple(self.offsets[i] for i in keep),
        )


def _csv_field(value: str) -> str:
    """Quote a DEVICE_ID the way CSV readers expect (only when it holds a comma or a quote)."""
    if "," in value or '"' in value or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


class Batch:
    """A cut buffer: what one flush of one segment uploads, and the offsets it holds.

    Cutting is cheap (the buffer's lanes move into the batch); last write wins is applied when
    `rows` is first read, which delivery does in its encoding thread together with the compression,
    so that a flush of many segments never stalls the event loop. Read `rows` from one thread.
    """

    __slots__ = ("_lanes", "_rows", "batch_id", "entries", "holds", "reason", "segment")

    def __init__(
        self,
        batch_id: int,
        segment: str,
        reason: FlushReason,
        lanes: tuple[tuple[IdType, _Lane], ...],
        *,
        holds: tuple[tuple[int, int, int], ...],  # (partition, first offset held, tracker epoch)
        entries: int,  # entries before deduplication
    ) -> None:
        self.batch_id = batch_id
        self.segment = segment
        self.reason = reason
        self.holds = holds
        self.entries = entries
        self._lanes = lanes
        self._rows: tuple[Rows, ...] | None = None

    @property
    def rows(self) -> tuple[Rows, ...]:
        """Deduplicated rows, one `Rows` per (ID type, op) present: computed once."""
        if self._rows is None:
            self._rows = tuple(r for t, lane in self._lanes for r in lane.dedupe(t))
            self._lanes = ()
        return self._rows

    @property
    def row_count(self) -> int:
        return sum(len(r) for r in self.rows)


def _uuid_lines(raw: bytes) -> bytes:
    """16-byte UUIDs, back to back, as hyphenated lower-case text, one per line (37 bytes each).

    Done for a whole lane at once in C: ``bytes.hex`` with a hyphen every two bytes writes 40
    characters a UUID (its eight groups of four digits, each followed by a hyphen); the hyphens
    inside the first and last UUID groups are then marked with strided assignments and deleted
    in one ``translate``, and the eighth becomes the newline (~60 ns a UUID, against ~0.6 µs for
    `format_uuid` one by one).
    """
    n = len(raw) // 16
    if not n:
        return b""
    out = bytearray(raw.hex("-", -2), "ascii")
    out += b"-"
    for at in _DROPPED_HYPHENS:
        out[at::40] = b"!" * n
    out[39::40] = b"\n" * n
    return bytes(out.translate(None, b"!"))


# In the 40 characters `bytes.hex` writes for a UUID (xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-),
# the hyphens that do not belong to 8-4-4-4-12.
_DROPPED_HYPHENS: Final = (4, 29, 34)
_FLIP: Final = bytes.maketrans(b"\x00\x01", b"\x01\x00")  # op byte: ADD <-> REMOVE
_PACK_EVERY: Final = 256  # UUIDs waiting as text before a lane packs them (bounds the extra memory)


def _and(a: bytes | bytearray, b: bytes | bytearray) -> bytes:
    """Byte-wise AND of two equal-length 0/1 masks, in C (through one big integer)."""
    return (int.from_bytes(a, "big") & int.from_bytes(b, "big")).to_bytes(len(a), "big")


class _Lane:
    """Append-only entries of one ID type. UUID lanes pack IDs as 16 bytes; others keep strings.

    Device IDs arrive as ASCII bytes. A UUID lane gathers them (any case: the batch ingest does not
    lower-case) and packs them in bulk with one ``binascii.unhexlify`` (`pack`): every `_PACK_EVERY`
    appends on the per-record path, every 65536 changes on the batch ingest's path. Anything but a
    canonical UUID raises ValueError when the lane packs, so callers hand over checked IDs only.
    A DEVICE_ID lane keeps its IDs as bytes (printable ASCII, case kept). Entries are stored
    column-wise: ``ops`` (0 ADD, 1 REMOVE), ``partitions`` and ``offsets`` (27 bytes an entry with
    the 16-byte key).
    """

    __slots__ = ("keys", "offsets", "ops", "packed", "partitions", "pending", "strings")

    def __init__(self, packed: bool) -> None:
        self.packed = packed
        self.keys = bytearray()
        self.pending: list[bytes] = []  # UUID text not yet packed into `keys`
        self.strings: list[bytes] = []
        self.ops = bytearray()
        self.partitions = array("H")
        self.offsets = array("q")

    def __len__(self) -> int:
        return len(self.ops)

    def append(self, device_id: bytes, op: int, partition: int, offset: int) -> None:
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
            self.keys += binascii.unhexlify(b"".join(self.pending).replace(b"-", b""))
            self.pending.clear()

    def dedupe(self, id_type: IdType) -> Iterator[Rows]:
        """Keep the last entry per ID; yield one `Rows` per op present (REMOVE, then ADD).

        Rows keep entry order (of each ID's last entry). Everything runs in C but one loop over
        the surviving entries when an ID repeats: a UUID lane's keys are cut into 16-byte
        values (one ``findall``) and stay packed in the rows; ``dict(zip(...))`` finds each ID's
        last entry; a 0/1 mask per op (the op bytes themselves select REMOVE) filters the
        columns with `itertools.compress`.
        """
        keys: list[bytes]
        if self.packed:
            self.pack()
            keys = _SIXTEEN_BYTES(self.keys)
        else:
            keys = self.strings
        n = len(keys)
        last = dict(zip(keys, range(n), strict=True))
        removes: bytes | bytearray = self.ops
        adds: bytes | bytearray = self.ops.translate(_FLIP)
        if len(last) != n:  # repeated IDs: only each one's last entry survives
            keep = bytearray(n)
            for i in last.values():
                keep[i] = 1
            removes, adds = _and(removes, keep), _and(adds, keep)
        for op, mask in ((Op.REMOVE, removes), (Op.ADD, adds)):
            picked = list(compress(keys, mask))
            if picked:
                yield Rows(
                    op,
                    id_type,
                    b"".join(picked) if self.packed else _texts(picked),
                    tuple(compress(self.partitions, mask)),
                    tuple(compress(self.offsets, mask)),
                )


def _texts(device_ids: list[bytes]) -> tuple[str, ...]:
    """DEVICE_IDs (printable ASCII, never a newline) as strings: one join and one split, in C."""
    return tuple(b"\n".join(device_ids).decode("ascii").split("\n"))


_SIXTEEN_BYTES: Final = re.compile(b".{16}", re.DOTALL).findall  # packed UUIDs, one by one


_LANE_BYTES_BOUND: Final = 2 * (_GZIP_OVERHEAD + 8)  # gzip framing and header row, per lane


class SegmentBuffer:
    """Changes of one segment since its last flush.

    The size bound of its files is kept as ``37 * entries + extra_bytes`` (plus the framing of
    each lane): every UUID row is 37 bytes, and only DEVICE_IDs of another length add to
    ``extra_bytes``. ``check_at`` is the entry count at which a size trigger could fire next if
    every row until then were 37 bytes, so the batch ingest compares one counter per record and
    looks closer (`recheck`) only there.
    """

    __slots__ = (
        "age_limit",
        "check_at",
        "entries",
        "epochs",
        "extra_bytes",
        "first_offsets",
        "framing_bytes",
        "lanes",
        "limits",
        "opened_at",
        "segment",
    )

    def __init__(self, segment: str, limits: BufferLimits) -> None:
        self.segment = segment
        self.limits = limits
        self.lanes: dict[IdType, _Lane] = {}
        self.first_offsets: dict[int, int] = {}
        self.epochs: dict[int, int] = {}  # partition -> tracker epoch of its hold
        self.opened_at: float | None = None
        self.age_limit = self.limits.max_age_seconds
        self.framing_bytes = 0
        self.extra_bytes = 0
        self.entries = 0
        self.check_at = 0
        self.recount()

    @property
    def csv_bytes(self) -> int:
        """An upper bound of the compressed size of this buffer's files (headers included)."""
        return self.framing_bytes + _UUID_ROW_BYTES * self.entries + self.extra_bytes

    def recount(self) -> None:
        """Set `check_at`: the first entry count at which a row of 37 bytes could pass a limit."""
        room = self.limits.max_bytes - self.csv_bytes
        by_bytes = self.entries + max(0, -(-room // _UUID_ROW_BYTES))
        self.check_at = min(self.limits.max_ids, by_bytes)

    def lane(self, id_type: IdType) -> _Lane:
        lane = self.lanes.get(id_type)
        if lane is None:
            lane = self.lanes[id_type] = _Lane(id_type is not IdType.DEVICE_ID)
            self.framing_bytes += _LANE_BYTES_BOUND
            self.recount()
        return lane

    def count_device_row(self, device_id: str | bytes) -> None:
        """Account a DEVICE_ID row whose CSV line may differ from 37 bytes."""
        extra = _csv_row_bytes(device_id) - _UUID_ROW_BYTES
        if extra:
            self.extra_bytes += extra
            if extra > 0:  # a shorter row only leaves `check_at` early, which is safe
                self.recount()

    def trigger(self, now: float) -> FlushReason | None:
        if self.entries >= self.limits.max_ids:
            return FlushReason.IDS
        if self.csv_bytes >= self.limits.max_bytes:
            return FlushReason.BYTES
        if self.opened_at is not None and now - self.opened_at >= self.age_limit:
            return FlushReason.AGE
        return None

    def recheck(self) -> FlushReason | None:
        """At `check_at`: the size trigger that fires now, if any (else move `check_at` on)."""
        if self.entries >= self.limits.max_ids:
            return _IDS
        if self.csv_bytes >= self.limits.max_bytes:
            return _BYTES
        self.recount()
        return None

    def holds_partition(self, partitions: set[int]) -> bool:
        return not partitions.isdisjoint(self.first_offsets)

    def pack(self) -> None:
        for lane in self.lanes.values():
            if lane.pending:
                lane.pack()

    def cut(self, batch_id: int, reason: FlushReason) -> Batch:
        holds = tuple((p, o, self.epochs.get(p, 0)) for p, o in sorted(self.first_offsets.items()))
        lanes = tuple(sorted(self.lanes.items()))
        return Batch(batch_id, self.segment, reason, lanes, holds=holds, entries=self.entries)


_IDS: Final = FlushReason.IDS  # globals: cheaper than enum attribute lookups on the hot path
_BYTES: Final = FlushReason.BYTES


class BufferSet:
    """All segment buffers of one worker, registering holds with the offset tracker.

    Two ways in: `add`, a change at a time (the general path), and the batch ingest
    (`worker.ingest`), which appends to the lanes `open` hands out and must be told when a
    segment's buffer is cut (`watch_cuts`), since a cut buffer's lanes are gone.
    """

    def __init__(
        self, limits: BufferLimits, tracker: OffsetTracker, rng: random.Random | None = None
    ) -> None:
        self.limits = limits
        self.tracker = tracker
        self._random = rng or random.Random()
        self._buffers: dict[str, SegmentBuffer] = {}
        self._next_batch_id = 1
        self._cut_watchers: list[Callable[[str], None]] = []
        self._open_watchers: list[Callable[[str], None]] = []
        self.buffered = 0  # entries across every buffer

    def watch_cuts(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(segment)`` whenever a segment's buffer is cut."""
        self._cut_watchers.append(watcher)

    def watch_opens(self, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(segment)`` whenever a segment gets a new buffer."""
        self._open_watchers.append(watcher)

    def open(self, segment: str, id_type: IdType, now: float) -> tuple[SegmentBuffer, _Lane]:
        """The segment's buffer (opened at ``now`` if it has none) and its lane for an ID type."""
        buf = self._buffers.get(segment)
        if buf is None:
            buf = self._buffers[segment] = SegmentBuffer(segment, self.limits)
            buf.opened_at = now
            if self.limits.age_spread:
                early = self.limits.age_spread * self._random.random()
                buf.age_limit = self.limits.max_age_seconds * (1 - early)
            for watcher in self._open_watchers:
                watcher(segment)
        return buf, buf.lane(id_type)

    def add(self, change: MembershipChange, now: float) -> FlushReason | None:
        """Buffer a change; return a reason when its segment must flush now (ids or bytes)."""
        segment, op, id_type, device_id, _event, _at, partition, offset = change
        buf, lane = self.open(segment, id_type, now)
        lane.append(device_id.encode(), op, partition, offset)
        if partition not in buf.first_offsets:
            buf.first_offsets[partition] = offset
            buf.epochs[partition] = self.tracker.hold(partition, offset)
        buf.entries += 1
        self.buffered += 1
        if not lane.packed:
            buf.count_device_row(device_id)
        return buf.recheck() if buf.entries >= buf.check_at else None

    def pack(self) -> None:
        """Pack every lane's pending UUIDs (the batch ingest calls this every few thousand)."""
        for buf in self._buffers.values():
            buf.pack()

    def due(self, now: float) -> list[tuple[str, FlushReason]]:
        """Segments that must flush by their own limits (age included) at time `now`."""
        found = []
        for name, buf in self._buffers.items():
            reason = buf.trigger(now)
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
        for watcher in self._cut_watchers:
            watcher(segment)
        if buf is None or buf.entries == 0:
            return None
        self.buffered -= buf.entries
        batch = buf.cut(self._next_batch_id, reason)
        self._next_batch_id += 1
        return batch
