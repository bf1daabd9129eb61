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
    """Check one compressed upload and return its IDs, or raise `UploadRejectedError`."""
    if len(data) > max_bytes:
        raise UploadRejectedError(
            413, f"file is {len(data)} bytes compressed, the limit is {max_bytes}"
        )
    text = _decode(_gunzip(data, limit=(max_rows + 2) * _MAX_LINE_BYTES))
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


def _check_rows(column: str, rows: list[str]) -> list[str]:
    check = _check_uuid if column in UUID_COLUMNS else _check_device_id
    ids: list[str] = []
    reader = csv.reader(rows, strict=True)
    for number in range(1, len(rows) + 1):
        try:
            ids.append(check(_one_field(next(reader))))
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
