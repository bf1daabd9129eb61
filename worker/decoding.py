"""Kafka record value → validated `MembershipChange`, or a `Rejection` for the DLQ.

Pure: no I/O, no clock, no environment. Three encodings share the topic (CONTRACT section 1) and
are told apart by their first byte:

=================  ==========================================================================
first byte         encoding
=================  ==========================================================================
``0x00``           Confluent framing: 4-byte big-endian schema ID, then Avro of that writer schema
``{`` (after       JSON object with the bundled field names; plain Avro cannot start with ``{``
optional spaces)   (0x7B is a negative string length)
anything else      plain Avro binary of the bundled schema
=================  ==========================================================================

A plain-Avro record whose ``event_id`` is empty starts with 0x00 too and is read as framed; it would
fail validation anyway, so only its stage (DECODE) differs. A JSON value with leading whitespace is
JSON (such a first byte as Avro would be an ``event_id`` of 5 or 16 bytes, never a UUID).

Framed messages need their writer schema. The decoder never fetches: the caller asks
`Decoder.missing_schema_ids` for a batch's values, fetches those IDs from the registry, hands each answer to
`Decoder.add_writer_schema` or `Decoder.mark_schema_missing`, then decodes the batch. Decoding a
framed message whose ID was never resolved that way is a caller bug and raises
`UnresolvedSchemaError` (a `FatalError`); every other input yields a result, never an exception.

Avro whose writer layout is the bundled one (plain, or framed with such a writer schema) goes
through up to three readers, fastest first: `avro_fast.read_common` (the common record, read and
validated in one step), `avro_fast.read_fields` (any record with short strings), then fastavro.
The fast readers only recognise good shapes and decline everything else, so every rejection comes
from fastavro and the validation below: the fast paths cannot change an outcome, only its cost
(the property tests check that ``fast_path=False`` gives identical results). Any other writer
schema is resolved against the bundled reader schema by fastavro.

Decoding problems are stage DECODE; rule violations (CONTRACT section 1) are stage VALIDATE; the
error class is the exception's name (`DecodeError`, `ValidationError` or a subclass below).
Rejection messages name the bad field but never contain a device ID.

Ambiguities, decided: JSON fields beyond the schema are ignored; a JSON field that is missing or
of the wrong type is a VALIDATE failure (the value *is* JSON); a registry 404 is remembered until
more than 10,000 IDs are known to be missing, then forgotten and asked again.
"""

from __future__ import annotations

import io
import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

from fastavro import schemaless_reader
from fastavro.read import SchemaResolutionError

from worker.avro_fast import (
    BUNDLED_SCHEMA,
    ZERO_UUID,
    RawFields,
    has_bundled_layout,
    parse_schema_json,
    read_common,
    read_fields,
)
from worker.errors import DecodeError, FatalError, RecordError, ValidationError
from worker.model import IdType, MembershipChange, Op, Rejection, SourceMessage, Stage
from worker.naming import inmobi_segment_name

__all__ = [
    "Decoder",
    "IncompatibleSchemaError",
    "RegistryNotConfiguredError",
    "SchemaNotFoundError",
    "UnresolvedSchemaError",
]


class SchemaNotFoundError(DecodeError):
    """The schema registry does not know the writer schema ID of a framed message (404)."""


class RegistryNotConfiguredError(DecodeError):
    """A framed message arrived but no schema registry is configured."""


class IncompatibleSchemaError(DecodeError):
    """The writer schema is not valid Avro, or cannot be resolved against the bundled schema."""


class UnresolvedSchemaError(FatalError):
    """`Decoder.decode` met a schema ID the caller never resolved: a bug in the caller."""


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LOWER_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAX_DEVICE_ID = 100
_JSON_WHITESPACE = b" \t\r\n"
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_FRAME_HEADER = 5
_FRAMED: Final = b"\x00"
_FIRST_BYTE: Final[Callable[[Any], bytes]] = operator.itemgetter(slice(0, 1))
_MAX_MISSING_IDS = 10_000
_DEVICE_ID: Final = IdType.DEVICE_ID


@dataclass(frozen=True, slots=True)
class _Unusable:
    """Cache entry: the registry returned a schema that cannot be used."""

    reason: str


@dataclass(frozen=True, slots=True)
class _WriterSchema:
    """Cache entry: a parsed writer schema, and whether the fast readers apply to it."""

    parsed: Any
    fast: bool


_T = TypeVar("_T")


class Decoder:
    """Decode and validate record values; holds the writer-schema cache for framed messages."""

    def __init__(self, registry_enabled: bool = True, *, fast_path: bool = True) -> None:
        """``fast_path=False`` always reads Avro with fastavro (tests and benchmarks compare)."""
        self._registry_enabled = registry_enabled
        self._fast_path = fast_path
        self._schemas: dict[int, _WriterSchema | _Unusable] = {}
        self._missing: set[int] = set()  # IDs the registry answered 404 for

    # --- writer-schema cache --------------------------------------------------------------

    def missing_schema_ids(self, values: Sequence[bytes | None]) -> set[int]:
        """Schema IDs of framed values that are neither known nor known to be missing."""
        if not self._registry_enabled:
            return set()
        try:
            if _FRAMED not in map(_FIRST_BYTE, values):  # the common case, decided in C
                return set()
        except TypeError:  # a tombstone (None) among them: look at each value below
            pass
        if len(self._missing) > _MAX_MISSING_IDS:
            # Garbage can name any of 2**32 IDs: bound the cache by forgetting the 404s (they
            # are asked again). Done here, before a batch is resolved, never in the middle.
            self._missing.clear()
        known, missing = self._schemas, self._missing
        ids: set[int] = set()
        for value in values:
            if value and value[0] == 0 and len(value) >= _FRAME_HEADER:
                schema_id = int.from_bytes(value[1:_FRAME_HEADER], "big")
                if schema_id not in known and schema_id not in missing:
                    ids.add(schema_id)
        return ids

    def add_writer_schema(self, schema_id: int, schema_json: str) -> None:
        """Remember the writer schema the registry returned for ``schema_id``."""
        self._missing.discard(schema_id)
        try:
            parsed = parse_schema_json(schema_json)
        except Exception as exc:  # fastavro raises many types for a bad schema
            self._schemas[schema_id] = _Unusable(f"not a valid Avro schema ({type(exc).__name__})")
            return
        self._schemas[schema_id] = _WriterSchema(parsed, has_bundled_layout(schema_json))

    def mark_schema_missing(self, schema_id: int) -> None:
        """Remember that the registry does not know ``schema_id`` (HTTP 404)."""
        self._schemas.pop(schema_id, None)
        self._missing.add(schema_id)

    # --- decoding ---------------------------------------------------------------------------

    def decode(self, msg: SourceMessage) -> MembershipChange | Rejection:
        """Decode and validate one message; every bad record becomes a `Rejection`.

        The worker's hot path does not come here: `worker.ingest` reads the common record
        straight into the buffers and hands this decoder only the others.
        """
        _topic, partition, offset, _key, value, _ts = msg
        try:
            event_id, segment, op, id_type, device_id, occurred_at = self._valid(value)
            return _new_tuple(
                MembershipChange,
                (
                    inmobi_segment_name(segment),
                    op,
                    id_type,
                    device_id,
                    event_id,
                    occurred_at,
                    partition,
                    offset,
                ),
            )
        except RecordError as exc:
            stage = Stage.VALIDATE if isinstance(exc, ValidationError) else Stage.DECODE
            return Rejection(stage, type(exc).__name__, str(exc), partition, offset)

    def _valid(self, value: bytes | None) -> RawFields:
        """Fields of any encoding, validated and normalised except for the segment name."""
        if value is None:
            raise DecodeError("value is null (a tombstone)")
        if not value:
            raise DecodeError("value is empty")
        first = value[0]
        if first == 0:
            return self._valid_framed(value)
        if first == 0x7B or (
            first in _JSON_WHITESPACE and value.lstrip(_JSON_WHITESPACE)[:1] == b"{"
        ):
            return _validated(_json_fields(value))
        return self._valid_avro(value, 0, BUNDLED_SCHEMA, None, fast=True)

    def _valid_avro(
        self, value: bytes, start: int, writer: Any, reader: Any, fast: bool
    ) -> RawFields:
        """Avro at ``start``: the fast readers when the layout is the bundled one, else fastavro."""
        if fast and self._fast_path:
            fields = read_common(value, start)
            if fields is not None:
                return fields  # already validated
            fields = read_fields(value, start)
            if fields is not None:
                return _validated(fields)
        return _validated(_fastavro_fields(value, start, writer, reader))

    def _valid_framed(self, value: bytes) -> RawFields:
        if not self._registry_enabled:
            raise RegistryNotConfiguredError("framed Avro but SCHEMA_REGISTRY_URL is not set")
        if len(value) < _FRAME_HEADER:
            raise DecodeError(f"framed value of {len(value)} bytes is shorter than its header")
        schema_id = int.from_bytes(value[1:_FRAME_HEADER], "big")
        entry = self._schemas.get(schema_id)
        if isinstance(entry, _WriterSchema):
            return self._valid_avro(value, _FRAME_HEADER, entry.parsed, BUNDLED_SCHEMA, entry.fast)
        if schema_id in self._missing:
            raise SchemaNotFoundError(f"schema ID {schema_id} is not in the schema registry")
        if isinstance(entry, _Unusable):
            raise IncompatibleSchemaError(f"writer schema ID {schema_id} is {entry.reason}")
        raise UnresolvedSchemaError(
            f"schema ID {schema_id} was not resolved before decoding (see missing_schema_ids)"
        )


# NamedTuple's generated __new__ costs twice as much as building the tuple directly.
_new_tuple = tuple.__new__


# --- validation (CONTRACT section 1) ------------------------------------------------------------


def _validated(fields: RawFields) -> RawFields:
    """Check raw fields; the device ID comes back normalised, the segment name is mapped later."""
    event_id, segment, op, id_type, device_id, occurred_at = fields
    if _UUID.fullmatch(event_id) is None:
        raise ValidationError("event_id is not a hyphenated UUID")
    if id_type is _DEVICE_ID:
        _check_device_id(device_id)
    else:
        device_id = _normalised_ad_id(device_id, id_type)
    return event_id, segment, op, id_type, device_id, occurred_at


def _normalised_ad_id(device_id: str, id_type: IdType) -> str:
    """An IDFA or GAID in lower case; raise `ValidationError` unless it is a non-zero UUID."""
    lowered = device_id.lower()
    if _LOWER_UUID.fullmatch(lowered) is None:
        raise ValidationError(f"device_id is not a hyphenated UUID, as {id_type.name} requires")
    if lowered == ZERO_UUID:
        raise ValidationError(f"device_id is the all-zero {id_type.name} (tracking denied)")
    return lowered


def _check_device_id(device_id: str) -> None:
    if not 1 <= len(device_id) <= _MAX_DEVICE_ID:
        raise ValidationError(
            f"DEVICE_ID device_id has {len(device_id)} characters; 1 to {_MAX_DEVICE_ID} allowed"
        )
    if not (device_id.isascii() and device_id.isprintable()):
        raise ValidationError("DEVICE_ID device_id has characters outside printable ASCII")


# --- fastavro fallback --------------------------------------------------------------------------


def _fastavro_fields(value: bytes, start: int, writer: Any, reader: Any) -> RawFields:
    """Read Avro with fastavro; ``reader`` set means: resolve ``writer`` against it."""
    stream = io.BytesIO(value)
    stream.seek(start)
    try:
        # The reader (or, unresolved, the writer) is the bundled record schema: a dict comes back.
        record = cast("dict[str, Any]", schemaless_reader(stream, writer, reader))
    except Exception as exc:  # fastavro signals bad bytes with many exception types
        raise _avro_error(exc, resolving=reader is not None) from None
    if stream.tell() != len(value):
        raise DecodeError(f"Avro record leaves {len(value) - stream.tell()} trailing bytes")
    return (
        record["event_id"],
        record["segment"],
        Op[record["op"]],
        IdType[record["id_type"]],
        record["device_id"],
        record["occurred_at"],
    )


def _avro_error(exc: Exception, *, resolving: bool) -> DecodeError:
    if resolving and isinstance(exc, SchemaResolutionError):
        # fastavro's message embeds both schemas in full: too long for a DLQ header.
        return IncompatibleSchemaError("writer schema cannot be resolved against the bundled one")
    if isinstance(exc, EOFError | IndexError):
        return DecodeError("not Avro of the schema: truncated, bad length or enum out of range")
    # Only the type: an exception text might quote bytes of the record, device IDs included.
    return DecodeError(f"not Avro of the schema ({type(exc).__name__})")


# --- JSON -----------------------------------------------------------------------------------

_OPS: Final = {op.name: op for op in Op}
_ID_TYPES: Final = {id_type.name: id_type for id_type in IdType}


def _json_fields(value: bytes) -> RawFields:
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise DecodeError(f"not valid JSON: {_excerpt(str(exc), 80)}") from None
    if not isinstance(obj, dict):
        raise DecodeError("JSON value is not an object")
    return (
        _json_str(obj, "event_id"),
        _json_str(obj, "segment"),
        _json_symbol(obj, "op", _OPS),
        _json_symbol(obj, "id_type", _ID_TYPES),
        _json_str(obj, "device_id"),
        _json_millis(obj),
    )


def _json_str(obj: dict[str, Any], field: str) -> str:
    text = obj.get(field)
    if not isinstance(text, str):
        raise ValidationError(f"field {field!r} must be a string")
    return text


def _json_symbol(obj: dict[str, Any], field: str, symbols: dict[str, _T]) -> _T:
    name = _json_str(obj, field)
    if name not in symbols:
        raise ValidationError(
            f"field {field!r} is {_excerpt(name)!r}, not one of {', '.join(symbols)}"
        )
    return symbols[name]


def _json_millis(obj: dict[str, Any]) -> int:
    millis = obj.get("occurred_at")
    if type(millis) is not int:  # bool is an int subclass, and not a timestamp
        raise ValidationError("field 'occurred_at' must be an integer (epoch milliseconds)")
    if not _LONG_MIN <= millis <= _LONG_MAX:
        raise ValidationError("field 'occurred_at' is outside the Avro long range")
    return millis


def _excerpt(text: str, limit: int = 40) -> str:
    """The start of a text, for an error message."""
    return text if len(text) <= limit else text[:limit] + "…"
