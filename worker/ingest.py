"""A poll's records into the segment buffers: the hot path.

Most records have the common shape (`avro_fast.RECORD_LAYOUTS`): plain Avro of the bundled schema
with a UUID device ID, or a DEVICE_ID of up to 63 printable ASCII characters. For those, one
compiled pattern checks the whole record and captures two byte strings: the segment name with the
op and id_type bytes behind it, and the device ID. The first is the key of a *route*, cached per
key, that holds the segment's buffer and the bound ``append`` methods of its lane, so a common
record costs one regex match, one dictionary lookup and four appends; it never becomes an object
(~0.8 µs against ~2.2 µs through `Decoder.decode` and `BufferSet.add`).

Every other record (framed Avro, JSON, other shapes, anything bad) takes the general path in its
place in the batch: `Decoder.decode`, then `BufferSet.add` or a rejection for the DLQ. Order is
kept record by record, so last write wins exactly as if every record had taken the general path;
the property tests compare both paths on the same batches.

Routes know the segment's InMobi name and its mode: a key whose op the segment's mode ignores is
remembered as ignored. Routes of a segment are dropped whenever its buffer is cut (their lanes go
with the batch), and all of them when more than `_MAX_ROUTES` keys are known (keys come from the
data). Pure: no I/O; time is an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

from worker.avro_fast import (
    RECORD_LAYOUTS,
    RECORD_OVERHEAD,
    RECORD_SEGMENT_LENGTH_AT,
    match_device_record,
)
from worker.buffering import BufferSet, FlushReason, SegmentBuffer
from worker.decoding import Decoder
from worker.errors import ValidationError
from worker.model import IdType, MembershipChange, Op, RecordBatch, Rejection, SourceMessage
from worker.naming import inmobi_segment_name
from worker.segments import SegmentCatalog

__all__ = ["Ingest", "Ingested"]

_MAX_ROUTES: Final = 65_536
_PACK_AFTER: Final = 65_536  # changes buffered as text before the lanes pack them (~5 MB at most)
_IGNORED: Final = "ignored"  # a route whose op the segment's mode ignores
# Key suffix (op byte, id_type byte) -> (op, id_type); anything else is not a route.
_KINDS: Final = {bytes([op << 1, t << 1]): (Op(op), IdType(t)) for op in Op for t in IdType}

Flush = Callable[[str, FlushReason], None]
# (buffer, its first offsets, id append, op append, partition append, offset append, op)
Route = tuple[SegmentBuffer, dict[int, int], Callable[[bytes], None], Any, Any, Any, int]


@dataclass(slots=True)
class Ingested:
    """What one batch did: counts, the rejections to dead-letter, the last offset per partition."""

    accepted: int = 0
    ignored: int = 0
    rejected: list[tuple[SourceMessage, Rejection]] = field(default_factory=list)
    last_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.accepted + self.ignored + len(self.rejected)


class Ingest:
    def __init__(
        self,
        decoder: Decoder,
        buffers: BufferSet,
        catalog: SegmentCatalog,
        *,
        fast_path: bool = True,
    ) -> None:
        """``fast_path=False`` sends every record through the general path (tests compare)."""
        self._decoder = decoder
        self._buffers = buffers
        self._catalog = catalog
        self._all_mirror = catalog.all_mirror()
        self._fast_path = fast_path
        self._routes: dict[bytes, Route | str] = {}
        self._route_keys: dict[str, list[bytes]] = {}  # segment -> its route keys
        self._unpacked = 0
        buffers.watch_cuts(self._forget_routes)

    def take(self, batch: RecordBatch, owned: frozenset[int], now: float, flush: Flush) -> Ingested:
        """Buffer (or reject, or ignore) every record of ``batch`` from an owned partition.

        ``flush(segment, reason)`` is called as soon as a buffer reaches a size limit; it is
        expected to cut that buffer (`BufferSet.cut`).
        """
        if not owned.issuperset(batch.partitions):  # fetched before a revoke: the new owner reads
            batch = batch.select([i for i, p in enumerate(batch.partitions) if p in owned])
        out = Ingested(last_offsets=dict(zip(batch.partitions, batch.offsets, strict=True)))
        if self._fast_path:
            self._take_common(batch, now, flush, out)
        else:
            for i in range(len(batch)):
                self._take_one(batch.message(i), now, flush, out)
        self._unpacked += out.accepted
        if self._unpacked >= _PACK_AFTER:
            self._buffers.pack()
            self._unpacked = 0
        return out

    def _take_common(self, batch: RecordBatch, now: float, flush: Flush, out: Ingested) -> None:
        """Buffer the batch: common records here, every other one through `_take_one` in its place
        (order matters: last write wins)."""
        values = cast("list[bytes]", batch.values)
        if None in values:  # tombstones: the general path rejects them
            values = [b"" if v is None else v for v in values]
        routes: dict[bytes, Any] = self._routes
        layouts, hold = RECORD_LAYOUTS, self._buffers.tracker.hold
        fast = ignored = 0
        for i, value, p, o in zip(  # noqa: B905 (equal lengths; strict= costs per record)
            range(len(values)), values, batch.partitions, batch.offsets
        ):
            n = len(value) - RECORD_OVERHEAD
            m = (
                layouts[n](value)
                if 0 < n < 64 and value[RECORD_SEGMENT_LENGTH_AT] == n << 1
                else None
            ) or match_device_record(value)
            route: Any = None
            if m is not None:
                key, device = m.groups()
                route = routes.get(key) or self._open_route(key, now)
            if route is None:
                self._take_one(batch.message(i), now, flush, out)
                continue
            if route is _IGNORED:
                ignored += 1
                continue
            buf, first, add_id, add_op, add_partition, add_offset, op = route
            add_id(device)
            add_op(op)
            add_partition(p)
            add_offset(o)
            if p not in first:
                first[p] = o
                buf.epochs[p] = hold(p, o)
            buf.entries += 1
            fast += 1
            if buf.entries >= buf.check_at:
                reason = buf.recheck()
                if reason is not None:
                    flush(buf.segment, reason)
        self._buffers.buffered += fast
        out.accepted += fast
        out.ignored += ignored

    def _take_one(self, msg: SourceMessage, now: float, flush: Flush, out: Ingested) -> None:
        """The general path for one record."""
        result = self._decoder.decode(msg)
        if type(result) is not MembershipChange:
            out.rejected.append((msg, result))  # type: ignore[arg-type]
            return
        if not self._all_mirror and not self._catalog.get(result.segment).mode.accepts(result.op):
            out.ignored += 1
            return
        out.accepted += 1
        reason = self._buffers.add(result, now)
        if reason is not None:
            flush(result.segment, reason)

    def _open_route(self, key: bytes, now: float) -> Route | str | None:
        """The route of a key the cache does not know; None sends the record to the general path."""
        kind = _KINDS.get(key[-2:])
        if kind is None:
            return None
        try:
            name = inmobi_segment_name(key[:-2].decode("utf-8"))
        except (UnicodeDecodeError, ValidationError):
            return None  # the general path rejects the record with the reason
        op, id_type = kind
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
            self._route_keys.clear()
        if not self._all_mirror and not self._catalog.get(name).mode.accepts(op):
            self._routes[key] = _IGNORED
            return _IGNORED
        buf, lane = self._buffers.open(name, id_type, now)
        add_id: Callable[[bytes], None]
        if lane.packed:
            add_id = lane.pending.append
        else:
            strings = lane.strings.append

            def add_id(device: bytes) -> None:
                strings(device)
                # Its row is the ID and a newline (the pattern leaves out IDs that need quotes).
                extra = len(device) - 36
                if extra:
                    buf.extra_bytes += extra
                    if extra > 0:
                        buf.recount()

        route: Route = (
            buf,
            buf.first_offsets,
            add_id,
            lane.ops.append,
            lane.partitions.append,
            lane.offsets.append,
            int(op),
        )
        self._routes[key] = route
        self._route_keys.setdefault(name, []).append(key)
        return route

    def _forget_routes(self, segment: str) -> None:
        for key in self._route_keys.pop(segment, ()):
            self._routes.pop(key, None)
