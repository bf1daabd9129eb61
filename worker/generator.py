"""Deterministic sample events: for `inmobi-sync produce`, the demo, integration tests, benchmarks.

`generate` turns a `GeneratorSpec` into Kafka records (key, value) together with what the worker
should make of each: the `ExpectedChange` of a good record, or ``bad=True`` for one the decoder must
reject. Same spec, same records: all randomness comes from ``spec.seed``.

Devices come from a pool of ``spec.devices``; device *j* is derived from a hash of (seed, *j*), so
its ID type, its ID and whether it is written in upper case never change, whatever ``count`` is.
IDFA and GAID are random version-4 UUIDs (never the all-zero UUID); DEVICE_ID values look like
``device-<hex>``. The Kafka key is the device ID exactly as written, so one device's changes share a
partition and keep their order.

Bad records (share ``bad_share``) are one of `BAD_KINDS`, written in (or imitating) the record's
encoding: garbage bytes, a truncated value, a device ID that breaks its type's rule, the all-zero
IDFA, an empty segment name, an unknown op (a JSON string, or an Avro enum index out of range).

Values are encoded with fastavro's `schemaless_writer` (~3 µs, most of the ~5 µs per record), so
the fast readers of the decoder are tested against an independent writer.

`fold_model` is the oracle: the membership InMobi should end with once every change is applied.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from fastavro import parse_schema, schemaless_writer

from worker.avro_fast import BUNDLED_SCHEMA, BUNDLED_SCHEMA_JSON, ZERO_UUID
from worker.errors import ValidationError
from worker.model import IdType, Op
from worker.naming import inmobi_segment_name

__all__ = [
    "BAD_KINDS",
    "DEFAULT_ID_TYPES",
    "DEFAULT_SEGMENTS",
    "ENCODINGS",
    "ExpectedChange",
    "GeneratedRecord",
    "GeneratorSpec",
    "encode_avro",
    "encode_framed",
    "encode_json",
    "fold_model",
    "generate",
]

ENCODINGS: Final = ("avro", "framed", "json")
# What a bad record is made of; each kind can be written in each encoding.
BAD_KINDS: Final = ("garbage", "truncated", "bad_uuid", "zero_idfa", "empty_segment", "unknown_op")
DEFAULT_SEGMENTS: Final = (
    "high_value users",  # → HIGH_VALUE_USERS
    "cart_abandoners",
    "Lapsed Buyers",
    "newsletter-subscribers",
    "VIP",
    "sports.fans",
    "gamers_2024",
    "lookalike 1%",  # → LOOKALIKE_1_
)
DEFAULT_ID_TYPES: Final = ((IdType.IDFA, 0.45), (IdType.GAID, 0.45), (IdType.DEVICE_ID, 0.10))


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate. Shares are probabilities per record (per device for upper case)."""

    count: int = 1_000
    segments: tuple[str, ...] = DEFAULT_SEGMENTS
    devices: int = 1_000
    remove_share: float = 0.25
    bad_share: float = 0.0
    encodings: tuple[str, ...] = ("avro",)
    uppercase_share: float = 0.1
    id_types: tuple[tuple[IdType, float], ...] = DEFAULT_ID_TYPES
    seed: int = 0
    schema_id: int = 1
    start_ms: int = 1_700_000_000_000

    def __post_init__(self) -> None:
        # Accept lists from callers, keep tuples: the spec stays immutable and hashable.
        object.__setattr__(self, "segments", tuple(self.segments))
        object.__setattr__(self, "encodings", tuple(self.encodings))
        object.__setattr__(self, "id_types", tuple((IdType(t), w) for t, w in self.id_types))
        problems = _spec_problems(self)
        if problems:
            raise ValueError("invalid GeneratorSpec: " + "; ".join(problems))


def _spec_problems(spec: GeneratorSpec) -> list[str]:
    problems = [
        f"{name} must be between 0 and 1"
        for name in ("remove_share", "bad_share", "uppercase_share")
        if not 0 <= getattr(spec, name) <= 1
    ]
    if spec.count < 0 or spec.devices < 1:
        problems.append("count must be >= 0 and devices >= 1")
    if not spec.encodings or not set(spec.encodings) <= set(ENCODINGS):
        problems.append(f"encodings must be a non-empty subset of {', '.join(ENCODINGS)}")
    if not spec.id_types or any(w < 0 for _, w in spec.id_types) or _total(spec) <= 0:
        problems.append("id_types needs non-negative weights with a positive sum")
    if not 0 <= spec.schema_id < 1 << 32:
        problems.append("schema_id must fit in 4 bytes")
    if not spec.segments:
        problems.append("segments must not be empty")
    for name in spec.segments:
        try:
            inmobi_segment_name(name)
        except ValidationError as exc:
            problems.append(f"segment {name!r}: {exc}")
    return problems


def _total(spec: GeneratorSpec) -> float:
    return sum(w for _, w in spec.id_types)


class ExpectedChange(NamedTuple):
    """What the worker should derive from a good record."""

    segment: str  # InMobi name
    op: Op
    id_type: IdType
    device_id: str  # normalised


class GeneratedRecord(NamedTuple):
    key: bytes  # the device ID as written, UTF-8
    value: bytes
    encoding: str  # one of ENCODINGS
    bad: bool
    change: ExpectedChange | None  # None exactly when bad


# --- encoders -----------------------------------------------------------------------------------
# A record is a mapping with the Avro field names; op and id_type are symbol names ("ADD", "IDFA").


def encode_avro(record: Mapping[str, Any]) -> bytes:
    """Plain Avro binary of the bundled schema."""
    return _write(BUNDLED_SCHEMA, record)


def encode_framed(schema_id: int, record: Mapping[str, Any]) -> bytes:
    """Confluent framing: 0x00, the 4-byte big-endian schema ID, then Avro binary."""
    return b"\x00" + schema_id.to_bytes(4, "big") + encode_avro(record)


def encode_json(record: Mapping[str, Any]) -> bytes:
    """A compact JSON object with the same field names."""
    return _compact_json(record).encode()


_compact_json: Final = json.JSONEncoder(separators=(",", ":")).encode


def _write(schema: Any, record: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, record)
    return out.getvalue()


# The bundled schema with a third Op symbol: writes an enum index the reader does not have.
def _wide_op_schema() -> Any:
    raw = json.loads(BUNDLED_SCHEMA_JSON)
    for fld in raw["fields"]:
        if fld["name"] == "op":
            fld["type"]["symbols"] = [*fld["type"]["symbols"], "DELETE"]
    return parse_schema(raw, named_schemas={})


_WIDE_OP_SCHEMA: Final = _wide_op_schema()


# --- devices ------------------------------------------------------------------------------------


class _Device(NamedTuple):
    id_type: IdType
    id_type_name: str
    written: str  # as it appears in the record and the key
    normalised: str  # as the worker keeps it
    key: bytes


def _hyphenated(hex32: str) -> str:
    return f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"


def _uuid4(bits: int) -> str:
    """A version-4 UUID string from 128 random bits; the version nibble keeps it non-zero."""
    bits = (bits & ~(0xF << 76) | 4 << 76) & ~(0x3 << 62) | 0x2 << 62
    return _hyphenated(f"{bits:032x}")


@dataclass
class _DevicePool:
    spec: GeneratorSpec
    cache: dict[int, _Device] = field(default_factory=dict)

    def __getitem__(self, index: int) -> _Device:
        device = self.cache.get(index)
        if device is None:
            device = self.cache[index] = self._derive(index)
        return device

    def _derive(self, index: int) -> _Device:
        digest = hashlib.blake2b(f"{self.spec.seed}:{index}".encode(), digest_size=24).digest()
        id_type = self._id_type(int.from_bytes(digest[16:20], "big") / 2**32)
        upper = int.from_bytes(digest[20:24], "big") / 2**32 < self.spec.uppercase_share
        if id_type is IdType.DEVICE_ID:
            written = f"device-{digest[:12].hex()}"
            written = written.upper() if upper else written
            normalised = written  # a DEVICE_ID is kept as written
        else:
            normalised = _uuid4(int.from_bytes(digest[:16], "big"))
            written = normalised.upper() if upper else normalised
        return _Device(id_type, id_type.name, written, normalised, written.encode())

    def _id_type(self, draw: float) -> IdType:
        threshold = draw * _total(self.spec)
        for id_type, weight in self.spec.id_types:
            threshold -= weight
            if threshold < 0:
                return id_type
        return next(t for t, w in reversed(self.spec.id_types) if w > 0)


# --- generation ---------------------------------------------------------------------------------


def generate(spec: GeneratorSpec) -> Iterator[GeneratedRecord]:
    """The records of ``spec``, in production order."""
    rng = random.Random(spec.seed)
    draw = rng.random  # int(draw() * n) is a third of the cost of randrange(n)
    devices = _DevicePool(spec)
    encoders = [_encoder(name, spec.schema_id) for name in spec.encodings]
    # Event IDs: a random UUID prefix per run and the record number: unique and cheap.
    event_prefix = _uuid4(rng.getrandbits(128))[:24]
    for i in range(spec.count):
        device = devices[int(draw() * spec.devices)]
        segment = spec.segments[int(draw() * len(spec.segments))]
        op = _REMOVE if draw() < spec.remove_share else _ADD
        pick = int(draw() * len(spec.encodings))
        record = {
            "event_id": f"{event_prefix}{i:012x}",
            "segment": segment,
            "op": _OP_NAMES[op],
            "id_type": device.id_type_name,
            "device_id": device.written,
            "occurred_at": spec.start_ms + i,
        }
        if spec.bad_share and draw() < spec.bad_share:
            kind = BAD_KINDS[int(draw() * len(BAD_KINDS))]
            value = _bad_value(kind, record, spec.encodings[pick], spec.schema_id, rng)
            yield GeneratedRecord(device.key, value, spec.encodings[pick], True, None)
        else:
            change = _new_tuple(
                ExpectedChange, (_mapped(segment), op, device.id_type, device.normalised)
            )
            value = encoders[pick](record)
            yield _new_tuple(
                GeneratedRecord, (device.key, value, spec.encodings[pick], False, change)
            )


# Hot-loop shortcuts: globals instead of enum attributes, tuple.__new__ instead of NamedTuple's.
_ADD: Final = Op.ADD
_REMOVE: Final = Op.REMOVE
_new_tuple: Final = tuple.__new__
_OP_NAMES: Final = {op: op.name for op in Op}
_mapped: Final = inmobi_segment_name


def _encoder(encoding: str, schema_id: int) -> Callable[[Mapping[str, Any]], bytes]:
    if encoding == "framed":
        return lambda record: encode_framed(schema_id, record)
    return encode_json if encoding == "json" else encode_avro


def _bad_value(
    kind: str, record: dict[str, Any], encoding: str, schema_id: int, rng: random.Random
) -> bytes:
    """A value the decoder must reject, written in (or imitating) ``encoding``."""
    if kind == "garbage":
        # 0xFF is a negative Avro length; after '{' it is invalid UTF-8.
        junk = b"\xff" + rng.randbytes(rng.randrange(0, 64))
        prefix = {"avro": b"", "framed": b"\x00" + schema_id.to_bytes(4, "big"), "json": b"{"}
        return prefix[encoding] + junk
    if kind == "truncated":  # Avro and JSON objects are prefix-free: a proper prefix is invalid
        whole = _encoder(encoding, schema_id)(record)
        return whole[: rng.randrange(1, len(whole))]
    bad = dict(record)
    if kind == "bad_uuid":
        bad["device_id"] = _broken_device_id(record)
    elif kind == "zero_idfa":
        bad.update(id_type="IDFA", device_id=ZERO_UUID)
    elif kind == "empty_segment":
        bad["segment"] = ""
    elif kind == "unknown_op":
        return _unknown_op(bad, encoding, schema_id)
    return _encoder(encoding, schema_id)(bad)


def _broken_device_id(record: Mapping[str, Any]) -> str:
    device_id: str = record["device_id"]
    if record["id_type"] == "DEVICE_ID":
        return device_id + "\x07"  # a control character: not printable ASCII
    return device_id[:-1] + "g"  # not hex


def _unknown_op(record: dict[str, Any], encoding: str, schema_id: int) -> bytes:
    record["op"] = "DELETE"
    if encoding == "json":
        return encode_json(record)
    avro = _write(_WIDE_OP_SCHEMA, record)  # enum index 2: out of the reader's range
    return b"\x00" + schema_id.to_bytes(4, "big") + avro if encoding == "framed" else avro


# --- the oracle ---------------------------------------------------------------------------------


def fold_model(changes: Iterable[ExpectedChange]) -> dict[str, set[tuple[IdType, str]]]:
    """Final membership per InMobi segment after applying ``changes`` in order, from empty.

    The last change per (segment, id_type, device_id) wins: ADD makes a member, REMOVE does not.
    Segments left without members are omitted.

    The result depends only on the order of changes *per device*, so it is valid for any
    interleaving that keeps per-key order - which is all Kafka promises across partitions, and
    all it needs to promise here, since the key is the device ID.
    """
    last: dict[tuple[str, IdType, str], Op] = {}
    for change in changes:
        last[change.segment, change.id_type, change.device_id] = change.op
    model: dict[str, set[tuple[IdType, str]]] = {}
    for (segment, id_type, device_id), op in last.items():
        if op is Op.ADD:
            model.setdefault(segment, set()).add((id_type, device_id))
    return model
