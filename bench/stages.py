"""Per-stage cost in this process, on the benchmark's own records: µs per event (best of runs).

- decode: `Decoder.decode` with the fast path, and with ``fast_path=False`` (fastavro for every
  record); plus plain ``fastavro.schemaless_reader`` with the schema's logical types, for scale;
- buffer add: `BufferSet.add` of every decoded change (limits so high that nothing flushes);
- cut + dedupe: `BufferSet.cut` of every segment, per buffered entry;
- encode: gzip CSV of the cut rows (`encode_rows`, ISA-L level 1), per 100k rows, against stdlib
  gzip level 6 of the same text.

Inputs are built before timing; each timed run starts from a collected heap (``gc.collect``).
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import json
import time
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_reader

from worker.avro_fast import BUNDLED_SCHEMA_JSON
from worker.buffering import BufferLimits, BufferSet, FlushReason
from worker.decoding import Decoder
from worker.encoding import FileLimits, encode_rows
from worker.ingest import Ingest
from worker.model import CSV_COLUMN, MembershipChange, RecordBatch, SourceMessage
from worker.offsets import OffsetTracker
from worker.segments import SegmentCatalog

HUGE = BufferLimits(max_ids=1 << 40, max_bytes=1 << 50, max_age_seconds=1e12)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _messages(keys: list[bytes], values: list[bytes]) -> list[SourceMessage]:
    return [
        SourceMessage("bench", i % 12, i // 12, k, v, 0)
        for i, (k, v) in enumerate(zip(keys, values, strict=True))
    ]


def _fill(changes: list[MembershipChange]) -> BufferSet:
    tracker = OffsetTracker()
    for p in range(12):
        tracker.assign(p)
    buffers = BufferSet(HUGE, tracker)
    add = buffers.add
    for c in changes:
        add(c, 0.0)
    return buffers


def measure(keys: list[bytes], values: list[bytes], repeat: int = 3) -> dict[str, Any]:
    msgs = _messages(keys, values)
    n = len(msgs)
    fast, slow = Decoder(registry_enabled=False), Decoder(registry_enabled=False, fast_path=False)
    out: dict[str, Any] = {"events": n}

    def decode_all(decoder: Decoder) -> Callable[[], None]:
        decode = decoder.decode

        def run() -> None:
            for m in msgs:
                decode(m)

        return run

    out["decode_fast_us"] = _best(decode_all(fast), repeat) / n * 1e6
    out["decode_fastavro_us"] = _best(decode_all(slow), repeat) / n * 1e6
    logical = parse_schema(json.loads(BUNDLED_SCHEMA_JSON), named_schemas={})

    def raw_fastavro() -> None:
        for v in values:
            with contextlib.suppress(Exception):  # the few bad records
                schemaless_reader(io.BytesIO(v), logical, None)

    out["fastavro_logical_types_us"] = _best(raw_fastavro, repeat) / n * 1e6
    batch = RecordBatch.of("bench", msgs)

    def ingest_all() -> None:  # the worker's path: 1000-record slices through the batch ingest
        tracker = OffsetTracker()
        for p in range(12):
            tracker.assign(p)
        ingest = Ingest(Decoder(registry_enabled=False), BufferSet(HUGE, tracker), SegmentCatalog())
        owned = frozenset(range(12))
        for start in range(0, n, 1000):
            ingest.take(batch.slice(start, start + 1000), owned, 0.0, lambda _s, _r: None)

    out["ingest_batch_us"] = _best(ingest_all, repeat) / n * 1e6
    changes = [c for c in map(fast.decode, msgs) if type(c) is MembershipChange]
    out["buffer_add_us"] = _best(lambda: _fill(changes), repeat) / len(changes) * 1e6

    cut_times, batches = [], []
    for _ in range(repeat):
        buffers = _fill(changes)
        gc.collect()
        started = time.perf_counter()
        batches = [buffers.cut(s, FlushReason.IDS) for s in buffers.segments()]
        for b in batches:  # the cut is lazy: last write wins is applied when rows are read
            if b is not None:
                b.rows  # noqa: B018
        cut_times.append(time.perf_counter() - started)
    out["cut_dedupe_us"] = min(cut_times) / len(changes) * 1e6
    rows = [r for b in batches if b is not None for r in b.rows]
    row_count = sum(len(r) for r in rows)
    out["rows_after_dedupe"] = row_count
    limits = FileLimits()

    def encode_all() -> None:
        for r in rows:
            encode_rows(r, CSV_COLUMN, limits)

    out["encode_isal_ms_per_100k"] = _best(encode_all, repeat) / row_count * 1e8
    texts = ["\n".join((CSV_COLUMN[r.id_type], *r.ids)).encode() + b"\n" for r in rows]

    def stdlib_gzip() -> None:
        for t in texts:
            gzip.compress(t, 6)

    out["encode_stdlib6_ms_per_100k"] = _best(stdlib_gzip, 1) / row_count * 1e8
    sizes = [len(f.payload) for r in rows for f in encode_rows(r, CSV_COLUMN, limits)]
    out["gzip_bytes_per_row"] = round(sum(sizes) / row_count, 2)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
