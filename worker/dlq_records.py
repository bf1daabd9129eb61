"""What a dead-lettered record says about itself: its stage, its segment, its replay headers.

Pure: no Kafka, no network. A DLQ record carries the original key and value and the Kafka Connect
headers (`__connect.errors.*`). Its stage is the `__connect.errors.stage` header. Its segment is
read from the value when that is possible:

- JSON: the `segment` field, if it is a string;
- plain Avro of the bundled schema: the second field, read structurally (every field must be
  well formed and the record must end exactly at the end of the value, but enum indexes are not
  checked, so a record rejected for an unknown `op` still names its segment);
- Confluent-framed Avro: the same when the writer schema (from `lookup`) has the bundled layout,
  else resolved against the bundled schema by fastavro.

The name is then mapped to its InMobi form (`worker.naming`), so `high_value users` and
`HIGH_VALUE_USERS` are one segment. A record whose segment cannot be read never matches a segment
filter. Stage `UPLOAD` records carry a change without its segment, so they never do either.
"""

from __future__ import annotations

import enum
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_reader

from worker.avro_fast import BUNDLED_SCHEMA, has_bundled_layout, parse_schema_json
from worker.errors import ConfigError, ValidationError
from worker.kafka import StoredRecord
from worker.model import Stage
from worker.naming import inmobi_segment_name

__all__ = [
    "CONNECT_HEADER_PREFIX",
    "REPLAYED_FROM",
    "ReplayFilter",
    "SchemaLookup",
    "Verdict",
    "record_segment",
    "record_stage",
    "replay_headers",
]

CONNECT_HEADER_PREFIX = "__connect.errors."
STAGE_HEADER = "__connect.errors.stage"
REPLAYED_FROM = "inmobi_sync.replayed_from"
_FRAME_HEADER = 5
_MAX_VARINT_BYTES = 10

SchemaLookup = Callable[[int], str | None]  # schema ID -> writer schema text, None if unknown


class Verdict(enum.StrEnum):
    REPLAY = "replay"
    OTHER_STAGE = "other stage"
    OTHER_SEGMENT = "other segment"
    UNREADABLE = "segment unreadable"


def record_stage(headers: Iterable[tuple[str, bytes | None]]) -> str | None:
    for key, value in headers:
        if key == STAGE_HEADER and value is not None:
            return value.decode("utf-8", "replace")
    return None


def record_segment(value: bytes | None, lookup: SchemaLookup = lambda _id: None) -> str | None:
    """The InMobi segment name a record value names, or None when it cannot be read."""
    if not value:
        return None
    if value.lstrip(b" \t\r\n")[:1] == b"{":
        name = _json_segment(value)
    elif value[0] == 0:
        name = _framed_segment(value, lookup)
    else:
        name = _avro_segment(value, 0)
    if name is None:
        return None
    try:
        return inmobi_segment_name(name)
    except ValidationError:
        return None


def _json_segment(value: bytes) -> str | None:
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError):
        return None
    name = obj.get("segment") if isinstance(obj, dict) else None
    return name if isinstance(name, str) else None


def _framed_segment(value: bytes, lookup: SchemaLookup) -> str | None:
    if len(value) < _FRAME_HEADER:
        return None
    text = lookup(int.from_bytes(value[1:_FRAME_HEADER], "big"))
    if text is None:
        return None
    try:
        if has_bundled_layout(text):
            return _avro_segment(value, _FRAME_HEADER)
        stream = io.BytesIO(value)
        stream.seek(_FRAME_HEADER)
        record: Any = schemaless_reader(stream, parse_schema_json(text), BUNDLED_SCHEMA)
    except Exception:  # fastavro raises many types for bad bytes or schemas
        return None
    name = record.get("segment") if isinstance(record, dict) else None
    return name if isinstance(name, str) else None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at `pos` and the position after it; IndexError/ValueError when malformed."""
    shift = raw = 0
    for i in range(_MAX_VARINT_BYTES):
        byte = buf[pos + i]
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos + i + 1
        shift += 7
    raise ValueError("varint too long")


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    length, pos = _varint(buf, pos)
    if length < 0 or pos + length > len(buf):
        raise ValueError("bad string length")
    return buf[pos : pos + length].decode(), pos + length


def _avro_segment(buf: bytes, pos: int) -> str | None:
    """The segment of a bundled-layout record at `pos`, if the record is well formed."""
    try:
        _event_id, pos = _string(buf, pos)
        segment, pos = _string(buf, pos)
        _op, pos = _varint(buf, pos)
        _id_type, pos = _varint(buf, pos)
        _device_id, pos = _string(buf, pos)
        _occurred_at, pos = _varint(buf, pos)
    except (IndexError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return segment if pos == len(buf) else None


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which DLQ records to replay: by stage, by (InMobi) segment name, or both; None: any."""

    stage: Stage | None = None
    segment: str | None = None

    @classmethod
    def parse(cls, stage: str | None, segment: str | None) -> ReplayFilter:
        """From command-line values; ConfigError names each bad one."""
        problems = []
        wanted_stage = None
        if stage is not None:
            try:
                wanted_stage = Stage(stage.upper())
            except ValueError:
                problems.append(f"--stage: {stage!r} is not one of {', '.join(Stage)}")
        wanted_segment = None
        if segment is not None:
            try:
                wanted_segment = inmobi_segment_name(segment)
            except ValidationError as exc:
                problems.append(f"--segment: {exc}")
        if problems:
            raise ConfigError(problems)
        return cls(wanted_stage, wanted_segment)

    def verdict(
        self,
        headers: Iterable[tuple[str, bytes | None]],
        value: bytes | None,
        lookup: SchemaLookup = lambda _id: None,
    ) -> Verdict:
        if self.stage is not None and record_stage(headers) != self.stage.value:
            return Verdict.OTHER_STAGE
        if self.segment is None:
            return Verdict.REPLAY
        found = record_segment(value, lookup)
        if found is None:
            return Verdict.UNREADABLE
        return Verdict.REPLAY if found == self.segment else Verdict.OTHER_SEGMENT


def replay_headers(record: StoredRecord, dlq_topic: str) -> list[tuple[str, str | bytes | None]]:
    """The record's headers without the Connect error headers, plus where it was replayed from."""
    kept: list[tuple[str, str | bytes | None]] = [
        (k, v)
        for k, v in record.headers
        if not k.startswith(CONNECT_HEADER_PREFIX) and k != REPLAYED_FROM
    ]
    origin = f"{dlq_topic}:{record.partition}:{record.offset}"
    return [*kept, (REPLAYED_FROM, origin.encode())]
