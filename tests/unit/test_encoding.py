"""Encoding: one ID type and action per file, header row, within the row and byte limits."""

from __future__ import annotations

import gzip
import os
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.buffering import Rows
from worker.encoding import FileLimits, encode_rows
from worker.model import CSV_COLUMN, IdType, Op


def rows_of(ids: list[str], id_type: IdType = IdType.IDFA) -> Rows:
    n = len(ids)
    return Rows(Op.ADD, id_type, tuple(ids), (0,) * n, tuple(range(n)))


def lines(payload: bytes) -> list[str]:
    return gzip.decompress(payload).decode().splitlines()


def test_file_has_header_then_one_id_per_line() -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    (f,) = encode_rows(rows_of(ids, IdType.GAID), CSV_COLUMN, FileLimits())
    assert lines(f.payload) == ["gpId", *ids]


def test_splits_by_row_limit() -> None:
    ids = [str(uuid.uuid4()) for _ in range(25)]
    files = encode_rows(rows_of(ids), CSV_COLUMN, FileLimits(max_rows=10))
    assert [len(f.rows) for f in files] == [10, 10, 5]
    assert [x for f in files for x in lines(f.payload)[1:]] == ids


def test_splits_until_every_file_fits_the_byte_limit() -> None:
    # incompressible device IDs force the byte limit to bind before the row limit
    ids = [os.urandom(30).hex() for _ in range(400)]
    limits = FileLimits(max_rows=100_000, max_bytes=4096)
    files = encode_rows(rows_of(ids, IdType.DEVICE_ID), CSV_COLUMN, limits)
    assert len(files) > 1
    assert all(f.size <= 4096 for f in files)
    assert [x for f in files for x in lines(f.payload)[1:]] == ids


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 50))
def test_any_rows_fit_limits_and_keep_every_id(n: int, max_rows: int) -> None:
    ids = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    files = encode_rows(rows_of(ids), CSV_COLUMN, FileLimits(max_rows=max_rows, max_bytes=2048))
    assert all(len(f.rows) <= max_rows and f.size <= 2048 for f in files)
    assert [x for f in files for x in lines(f.payload)[1:]] == ids


def test_device_ids_with_commas_or_quotes_are_csv_quoted() -> None:
    import csv
    import io

    ids = ["plain", "a,b", 'say "hi"']
    (f,) = encode_rows(rows_of(ids, IdType.DEVICE_ID), CSV_COLUMN, FileLimits())
    parsed = list(csv.reader(io.StringIO(gzip.decompress(f.payload).decode())))
    assert parsed == [["ifa"], ["plain"], ["a,b"], ['say "hi"']]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.uuids(), max_size=60), st.integers(0, 60), st.integers(0, 60))
def test_packed_rows_read_encode_and_cut_like_their_strings(
    uuids: list[uuid.UUID], start: int, stop: int
) -> None:
    """IDFA/GAID rows stay packed (16 bytes a UUID) until read; every view equals the strings'."""
    n = len(uuids)
    text = [str(u) for u in uuids]
    packed = Rows(
        Op.REMOVE, IdType.GAID, b"".join(u.bytes for u in uuids), (1,) * n, tuple(range(n))
    )
    plain = Rows(Op.REMOVE, IdType.GAID, tuple(text), (1,) * n, tuple(range(n)))
    assert packed == plain and packed.ids == tuple(text) and len(packed) == n
    assert packed.lines() == plain.lines() == "".join(t + "\n" for t in text).encode()
    assert packed.slice(start, stop) == plain.slice(start, stop)
    keep = list(range(0, n, 3))
    assert packed.select(keep).ids == tuple(text[i] for i in keep)
    assert packed.select(keep).offsets == tuple(keep)
    limits = FileLimits(max_rows=7)
    assert [lines(f.payload) for f in encode_rows(packed, CSV_COLUMN, limits)] == [
        lines(f.payload) for f in encode_rows(plain, CSV_COLUMN, limits)
    ]
