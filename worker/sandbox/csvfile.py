"""Parse and check one upload file, as the sandbox's InMobi batch endpoint does.

An upload (CONTRACT section 5) is a gzip-compressed CSV with one column: a header row naming the
ID column (``ida`` for IDFA, ``gpId`` for GAID, ``ifa`` for DEVICE_ID), then one ID per line. The
checks run cheapest first and the first failure rejects the whole file, so nothing is applied:

1. compressed size <= ``max_bytes``                     else 413 (checked before decompressing)
2. the bytes are gzip                                   else 400
3. the decompressed text stays within a bound derived from ``max_rows`` (a gzip bomb guard) else 413
4. UTF-8 text whose header is exactly one known column  else 400
5. 1 <= data rows <= ``max_rows`` (header not counted)  else 400 "no device IDs found" / 413
6. every row is one valid ID of the column's kind       else 400 ``row N: reason``

Rows are numbered from 1 at the first data row (the header is not a row). Lines may end in ``\\n``
or ``\\r\\n`` and one empty trailing line is tolerated. Rows are read with the ``csv`` module, so a
DEVICE_ID holding a comma or a quote must be quoted the CSV way. UUIDs are accepted in any case and
returned in lower case. Pure code: no I/O, no clock.

The sandbox shares the benchmark's CPU with the worker it measures, so a fast path checks the
common case in bulk, a few C-level passes over the whole text, and the row-by-row reference
(`_parse_reference`, the definition of every outcome) only decides what the fast path cannot vouch
for:

- gzip: each member is inflated by one ``zlib`` call (GzipFile inflates with the same zlib, so
  both read the same bytes); anything unusual (an error, a truncated member, trailing junk, output
  past the bound, more than a few members, a header flag zlib refuses) goes back to GzipFile,
  which then gives the answer it always gave;
- rows: an ASCII file whose rows are all well-formed UUIDs (none all-zero) or all 1-100 printable
  characters without ``"`` or ``,`` is accepted by one bulk check over the whole body; any other
  file, valid or not, is parsed again by the reference, which finds the first bad row and its
  reason. The fast path only ever accepts, so every rejection and every message is the
  reference's.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass

from worker.model import CSV_COLUMN, IdType

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ROWS",
    "UPLOAD_COLUMNS",
    "ParsedUpload",
    "UploadRejectedError",
    "parse_upload",
]

DEFAULT_MAX_ROWS = 100_000
DEFAULT_MAX_BYTES = 10_485_760
# The header names of CONTRACT section 5, in IdType order.
UPLOAD_COLUMNS: tuple[str, ...] = tuple(CSV_COLUMN[t] for t in IdType)
UUID_COLUMNS = frozenset({CSV_COLUMN[IdType.IDFA], CSV_COLUMN[IdType.GAID]})

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_PRINTABLE_RE = re.compile(r"[\x20-\x7e]{1,100}")
_ZERO_UUID = "00000000-0000-0000-0000-000000000000"
# Longest legal line: a quoted 100-char DEVICE_ID with every char a doubled quote, plus CRLF.
_MAX_LINE_BYTES = 2 * 100 + 2 + 2

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib reads the gzip header and trailer itself
# Past this many gzip members the reader gives up and hands over to GzipFile: each member copies
# the rest of the input (zlib's unused_data), which many tiny members would make quadratic.
_FAST_GZIP_MEMBERS = 8
# A UUID row after `_HEX_SHAPE`, which turns each hex digit (either case) into "x", keeps "-" and
# LF, and turns any other byte into "?".
_UUID_ROW_SHAPE = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\n"
_HEX_SHAPE = bytes(
    ord("x") if chr(c) in "0123456789abcdefABCDEF" else c if c in b"-\n" else ord("?")
    for c in range(256)
)
_ZERO_UUID_BYTES = _ZERO_UUID.encode("ascii")
# Rows of 1-100 printable ASCII characters, each ending in LF. Without `"` and `,` such a row is
# one literal field for `csv.reader`, so this single match stands for the reader and
# `_PRINTABLE_RE` row by row. Possessive, so a 100k-row match keeps no backtracking state.
_PLAIN_DEVICE_ID_ROWS = re.compile(rb"(?:[\x20\x21\x23-\x2b\x2d-\x7e]{1,100}\n)*+")


class UploadRejectedError(Exception):
    """The file is refused; ``status`` is the HTTP status the endpoint answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ParsedUpload:
    """A checked file: its column and its normalised IDs (duplicates kept, file order)."""

    column: str
    ids: tuple[str, ...]

    @property
    def rows(self) -> int:
        return len(self.ids)


def parse_upload(
    data: bytes, *, max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES
) -> ParsedUpload:
    """Check one compressed upload and return its IDs, or raise `UploadRejectedError`.

    Same outcome as `_parse_reference` for every input; the bulk checks only save time.
    """
    _check_size(data, max_bytes)
    limit = _inflated_limit(max_rows)
    raw = _gunzip_fast(data, limit=limit)
    if raw is None:
        raw = _gunzip(data, limit=limit)  # GzipFile decides what the fast reader would not
    parsed = _parse_fast(raw, max_rows=max_rows)
    if parsed is not None:
        return parsed
    return _parse_text(_decode(raw), max_rows=max_rows)


def _parse_reference(
    data: bytes, *, max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES
) -> ParsedUpload:
    """The row-by-row checker that defines every outcome; `parse_upload` must agree with it."""
    _check_size(data, max_bytes)
    raw = _gunzip(data, limit=_inflated_limit(max_rows))
    return _parse_text(_decode(raw), max_rows=max_rows)


def _check_size(data: bytes, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise UploadRejectedError(
            413, f"file is {len(data)} bytes compressed, the limit is {max_bytes}"
        )


def _inflated_limit(max_rows: int) -> int:
    """The gzip bomb guard: no legal file of `max_rows` rows inflates past this many bytes."""
    return (max_rows + 2) * _MAX_LINE_BYTES


def _parse_text(text: str, *, max_rows: int) -> ParsedUpload:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last row
    lines = [line.removesuffix("\r") for line in lines]
    column = _header(lines[0] if lines else "")
    rows = lines[1:]
    if not rows:
        raise UploadRejectedError(400, "no device IDs found")
    if len(rows) > max_rows:
        raise UploadRejectedError(413, f"file has {len(rows)} rows, the limit is {max_rows}")
    return ParsedUpload(column=column, ids=tuple(_check_rows(column, rows)))


def _gunzip(data: bytes, *, limit: int) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as archive:
            raw = archive.read(limit + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise UploadRejectedError(400, "file is not valid gzip") from exc
    if len(raw) > limit:
        raise UploadRejectedError(413, "file is too large once decompressed")
    return raw


def _gunzip_fast(data: bytes, *, limit: int) -> bytes | None:
    """All members inflated, or None to let `_gunzip` decide (an error, or anything unusual).

    Returns bytes only where GzipFile reads the very same bytes without error: GzipFile inflates
    with zlib too, checks the same CRC-32 and length, and skips zero padding between members just
    like the `lstrip` below. zlib is stricter about the header (reserved flags, the header CRC),
    which only sends such files to GzipFile. Output past `limit` also goes back, because GzipFile
    may meet an error before it reaches the bound, and then answers 400 rather than 413. ISA-L
    inflates faster but accepts some deflate streams zlib refuses, so it is not used here.
    """
    parts: list[bytes] = []
    produced = 0
    rest = data
    for _ in range(_FAST_GZIP_MEMBERS):
        member = zlib.decompressobj(_GZIP_WBITS)
        try:
            part = member.decompress(rest, limit + 1 - produced)  # a bound of 0 would mean none
        except zlib.error:
            return None
        produced += len(part)
        if produced > limit or not member.eof:
            return None
        parts.append(part)
        rest = member.unused_data.lstrip(b"\0")
        if not rest:
            return b"".join(parts)
    return None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UploadRejectedError(400, "file is not UTF-8 text") from exc


def _header(line: str) -> str:
    if line not in UPLOAD_COLUMNS:
        shown = line[:40]
        expected = ", ".join(UPLOAD_COLUMNS)
        raise UploadRejectedError(400, f"header {shown!r} is not one of {expected}")
    return line


def _parse_fast(raw: bytes, *, max_rows: int) -> ParsedUpload | None:
    """The accepted file in a few passes over the whole body, or None if a row needs a closer look.

    Never rejects: None sends the file to the reference, which then finds the reason.
    """
    if not raw.isascii():  # ASCII, so the UTF-8 check cannot fail either
        return None
    header_end = raw.find(b"\n")
    if header_end < 0:  # no rows at all
        return None
    column = raw[:header_end].removesuffix(b"\r").decode("ascii")
    if column not in UPLOAD_COLUMNS:
        return None
    body = _lf_rows(raw[header_end + 1 :])
    if body is None or body.count(b"\n") > max_rows:
        return None
    ids = _uuid_ids(body) if column in UUID_COLUMNS else _device_ids(body)
    return None if ids is None else ParsedUpload(column=column, ids=ids)


def _lf_rows(body: bytes) -> bytes | None:
    """The rows, each ending in one LF (the last one too), or None for a CR the fast path skips.

    The reference drops one CR before each LF, and a CR at the very end of the text. A CR left
    over here (say ``\\r\\r\\n``) fails the row checks, as no ID may hold one. A CR at the end
    is refused outright: after an LF it is an empty row, and it is rare anyway.
    """
    if not body or body.endswith(b"\r"):
        return None
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n")
    return body if body.endswith(b"\n") else body + b"\n"


def _uuid_ids(body: bytes) -> tuple[str, ...] | None:
    """Lower-cased UUIDs if every LF-ended row is one, none of them all zero.

    Comparing the body's shape with the expected one checks every character in C. The all-zero
    UUID holds no LF, so once the rows have the right shape, finding it means one whole row.
    """
    rows = body.count(b"\n")
    if body.translate(_HEX_SHAPE) != _UUID_ROW_SHAPE * rows or _ZERO_UUID_BYTES in body:
        return None
    return _split_rows(body.lower())


def _device_ids(body: bytes) -> tuple[str, ...] | None:
    """The DEVICE_IDs if every LF-ended row is a plain one (no quoting needed), else None."""
    if _PLAIN_DEVICE_ID_ROWS.fullmatch(body) is None:
        return None
    return _split_rows(body)


def _split_rows(body: bytes) -> tuple[str, ...]:
    ids = body.decode("ascii").split("\n")
    ids.pop()  # after the LF that ends the last row
    return tuple(ids)


def _check_rows(column: str, rows: list[str]) -> list[str]:
    check = _check_uuid if column in UUID_COLUMNS else _check_device_id
    ids: list[str] = []
    for number, row in enumerate(rows, start=1):
        try:
            # A reader per row: one shared reader would join a quoted field across two lines
            # (a file is one ID per line) and run out of rows before the row count does.
            ids.append(check(_one_field(next(csv.reader([row], strict=True)))))
        except (_RowError, csv.Error) as exc:
            raise UploadRejectedError(400, f"row {number}: {exc}") from exc
    return ids


class _RowError(ValueError):
    """Why one row is invalid; the caller prefixes the row number."""


def _one_field(fields: list[str]) -> str:
    if len(fields) != 1:
        raise _RowError("empty row" if not fields else f"expected 1 column, found {len(fields)}")
    return fields[0]


def _check_uuid(value: str) -> str:
    if not _UUID_RE.fullmatch(value):
        raise _RowError("not a UUID")
    lowered = value.lower()
    if lowered == _ZERO_UUID:
        raise _RowError("the all-zero UUID is not an advertising ID")
    return lowered


def _check_device_id(value: str) -> str:
    if not _PRINTABLE_RE.fullmatch(value):
        raise _RowError("not 1-100 printable ASCII characters")
    return value
