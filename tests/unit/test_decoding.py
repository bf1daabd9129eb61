"""Decoder: every rule of CONTRACT section 1, in every encoding, table-driven."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from worker.avro_fast import BUNDLED_SCHEMA_JSON, has_bundled_layout
from worker.decoding import Decoder, UnresolvedSchemaError
from worker.generator import encode_avro, encode_framed, encode_json
from worker.model import IdType, MembershipChange, Op, Rejection, SourceMessage, Stage

EVENT_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
ZERO = "00000000-0000-0000-0000-000000000000"
BUNDLED_ID, EVOLVED_ID, INCOMPATIBLE_ID, MISSING_ID, INVALID_ID = 7, 8, 9, 10, 11
NAMESPACED_ID = 13  # the bundled layout under another namespace: still the fast path

# A writer schema that differs from the bundled one but resolves to it: an extra field first,
# fields in another order, enum symbols in another order, `segment` as a nullable union.
EVOLVED_SCHEMA_JSON = json.dumps(
    {
        "type": "record",
        "name": "SegmentMembershipChange",
        "namespace": "audience.v1",
        "fields": [
            {"name": "source", "type": "string"},
            {"name": "device_id", "type": "string"},
            {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": ["REMOVE", "ADD"]}},
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {
                "name": "id_type",
                "type": {
                    "type": "enum",
                    "name": "IdType",
                    "symbols": ["IDFA", "GAID", "DEVICE_ID"],
                },
            },
            {"name": "segment", "type": ["null", "string"]},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ],
    }
)
INCOMPATIBLE_SCHEMA_JSON = json.dumps(
    {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
)
_EVOLVED = parse_schema(json.loads(EVOLVED_SCHEMA_JSON), named_schemas={})
NAMESPACED_SCHEMA_JSON = json.dumps(json.loads(BUNDLED_SCHEMA_JSON) | {"namespace": "com.cdp"})


def record(**changes: Any) -> dict[str, Any]:
    base = {
        "event_id": EVENT_ID,
        "segment": "high_value users",
        "op": "ADD",
        "id_type": "IDFA",
        "device_id": IDFA,
        "occurred_at": 1_700_000_000_000,
    }
    return base | changes


def encode_evolved(rec: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, _EVOLVED, {"source": "cdp", **rec})
    return b"\x00" + EVOLVED_ID.to_bytes(4, "big") + out.getvalue()


def encode_indented_json(rec: dict[str, Any]) -> bytes:
    return b" \n\t" + json.dumps(rec, indent=2).encode()


ENCODERS: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "avro": encode_avro,
    "framed": lambda rec: encode_framed(BUNDLED_ID, rec),
    "framed-evolved": encode_evolved,
    "framed-namespaced": lambda rec: encode_framed(NAMESPACED_ID, rec),
    "json": encode_json,
    "json-indented": encode_indented_json,
}


def decoder(*, fast_path: bool = True) -> Decoder:
    d = Decoder(registry_enabled=True, fast_path=fast_path)
    d.add_writer_schema(BUNDLED_ID, BUNDLED_SCHEMA_JSON)
    d.add_writer_schema(EVOLVED_ID, EVOLVED_SCHEMA_JSON)
    d.add_writer_schema(NAMESPACED_ID, NAMESPACED_SCHEMA_JSON)
    d.add_writer_schema(INCOMPATIBLE_ID, INCOMPATIBLE_SCHEMA_JSON)
    d.add_writer_schema(INVALID_ID, '{"type": "no-such-type"}')
    d.mark_schema_missing(MISSING_ID)
    return d


def msg(value: bytes | None, partition: int = 3, offset: int = 42) -> SourceMessage:
    return SourceMessage("topic", partition, offset, b"key", value, 0)


def decode_all(value: bytes | None) -> MembershipChange | Rejection:
    """Decode with and without the fast readers; both must agree."""
    fast, slow = decoder().decode(msg(value)), decoder(fast_path=False).decode(msg(value))
    assert fast == slow
    return fast


def rejection(value: bytes | None) -> Rejection:
    result = decode_all(value)
    assert isinstance(result, Rejection), result
    return result


# --- valid records ------------------------------------------------------------------------------

VALID_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (record changes, expected MembershipChange fields)
    "idfa": ({}, {"device_id": IDFA, "id_type": IdType.IDFA}),
    "upper-case idfa is normalised": ({"device_id": IDFA.upper()}, {"device_id": IDFA}),
    "mixed-case gaid is normalised": (
        {"id_type": "GAID", "device_id": "6D92078a-8246-4BA4-ae5b-76104861E7DC"},
        {"device_id": IDFA, "id_type": IdType.GAID},
    ),
    "device_id kept as written": (
        {"id_type": "DEVICE_ID", "device_id": "Roku ABC-123"},
        {"device_id": "Roku ABC-123", "id_type": IdType.DEVICE_ID},
    ),
    "device_id uuid-shaped kept upper case": (
        {"id_type": "DEVICE_ID", "device_id": IDFA.upper()},
        {"device_id": IDFA.upper(), "id_type": IdType.DEVICE_ID},
    ),
    "device_id of 100 chars": (
        {"id_type": "DEVICE_ID", "device_id": "~" * 100},
        {"device_id": "~" * 100, "id_type": IdType.DEVICE_ID},
    ),
    "device_id of 1 char": ({"id_type": "DEVICE_ID", "device_id": " "}, {"device_id": " "}),
    "remove": ({"op": "REMOVE"}, {"op": Op.REMOVE}),
    "upper-case event_id kept": ({"event_id": EVENT_ID.upper()}, {"event_id": EVENT_ID.upper()}),
    "segment mapped": ({"segment": "Lapsed Buyers 2%"}, {"segment": "LAPSED_BUYERS_2_"}),
    "long segment": ({"segment": "s" * 200}, {"segment": "S" * 200}),
    "non-ascii segment": ({"segment": "café"}, {"segment": "CAF_"}),
    "epoch zero": ({"occurred_at": 0}, {"occurred_at": 0}),
    "negative time": ({"occurred_at": -1}, {"occurred_at": -1}),
    "max long": ({"occurred_at": 2**63 - 1}, {"occurred_at": 2**63 - 1}),
    "year 2100": ({"occurred_at": 4_102_444_800_000}, {"occurred_at": 4_102_444_800_000}),
    # the first and the last value whose varint has the 6 bytes the fast readers decode
    "fast varint low edge": ({"occurred_at": 2**34}, {"occurred_at": 2**34}),
    "fast varint high edge": ({"occurred_at": 2**41 - 1}, {"occurred_at": 2**41 - 1}),
    "just below the edge": ({"occurred_at": 2**34 - 1}, {"occurred_at": 2**34 - 1}),
}


@pytest.mark.parametrize("encoding", ENCODERS)
@pytest.mark.parametrize("case", VALID_CASES)
def test_valid_record_decodes_to_a_normalised_change(encoding: str, case: str) -> None:
    changes, expected = VALID_CASES[case]
    result = decode_all(ENCODERS[encoding](record(**changes)))
    defaults = {
        "segment": "HIGH_VALUE_USERS",
        "op": Op.ADD,
        "id_type": IdType.IDFA if "id_type" not in changes else IdType[changes["id_type"]],
        "device_id": IDFA,
        "event_id": EVENT_ID,
        "occurred_at": 1_700_000_000_000,
        "partition": 3,
        "offset": 42,
    }
    assert result == MembershipChange(**(defaults | expected))
    assert type(result) is MembershipChange


def test_change_carries_partition_and_offset_of_its_message() -> None:
    result = decoder().decode(msg(encode_avro(record()), partition=5, offset=123_456))
    assert isinstance(result, MembershipChange)
    assert (result.partition, result.offset) == (5, 123_456)


def test_json_fields_beyond_the_schema_are_ignored() -> None:
    assert isinstance(decode_all(encode_json(record(extra=[1, 2]))), MembershipChange)


# --- validation failures, in every encoding -----------------------------------------------------

INVALID_CASES: dict[str, tuple[dict[str, Any], str]] = {
    # name: (record changes, expected words in the message)
    "event_id not a uuid": ({"event_id": "not-a-uuid"}, "event_id"),
    "event_id without hyphens": ({"event_id": EVENT_ID.replace("-", "")}, "event_id"),
    "event_id in braces": ({"event_id": "{" + EVENT_ID + "}"}, "event_id"),
    "idfa not hex": ({"device_id": IDFA[:-1] + "g"}, "IDFA"),
    "idfa without hyphens": ({"device_id": IDFA.replace("-", "")}, "UUID"),
    "idfa hyphens misplaced": ({"device_id": IDFA[:7] + "-" + IDFA[7] + IDFA[9:]}, "UUID"),
    "idfa with whitespace": ({"device_id": " " + IDFA}, "UUID"),
    "idfa empty": ({"device_id": ""}, "UUID"),
    "gaid not a uuid": ({"id_type": "GAID", "device_id": "abc"}, "GAID"),
    "zero idfa": ({"device_id": ZERO}, "all-zero IDFA"),
    "zero gaid": ({"id_type": "GAID", "device_id": ZERO}, "all-zero GAID"),
    "device_id empty": ({"id_type": "DEVICE_ID", "device_id": ""}, "0 characters"),
    "device_id of 101 chars": ({"id_type": "DEVICE_ID", "device_id": "d" * 101}, "101"),
    "device_id with control char": ({"id_type": "DEVICE_ID", "device_id": "dev\x07"}, "ASCII"),
    "device_id with tab": ({"id_type": "DEVICE_ID", "device_id": "a\tb"}, "printable"),
    "device_id with DEL": ({"id_type": "DEVICE_ID", "device_id": "a\x7f"}, "printable"),
    "device_id not ascii": ({"id_type": "DEVICE_ID", "device_id": "gerät"}, "ASCII"),
    "segment empty": ({"segment": ""}, "empty"),
    "segment too long": ({"segment": "s" * 201}, "201"),
}


@pytest.mark.parametrize("encoding", ENCODERS)
@pytest.mark.parametrize("case", INVALID_CASES)
def test_rule_violation_is_rejected_at_validate(encoding: str, case: str) -> None:
    changes, words = INVALID_CASES[case]
    result = rejection(ENCODERS[encoding](record(**changes)))
    assert (result.stage, result.error_class) == (Stage.VALIDATE, "ValidationError")
    assert words in result.message
    assert (result.partition, result.offset) == (3, 42)


@pytest.mark.parametrize("encoding", ENCODERS)
@pytest.mark.parametrize(
    "device_id", [IDFA[:-1] + "g", IDFA.replace("-", ""), "x" + IDFA, IDFA.upper() + "0"]
)
def test_rejection_message_never_contains_the_device_id(encoding: str, device_id: str) -> None:
    result = rejection(ENCODERS[encoding](record(device_id=device_id)))
    assert device_id not in result.message
    assert device_id.lower() not in result.message
    assert IDFA[:8] not in result.message.lower()


JSON_ONLY_CASES: dict[str, tuple[bytes, str]] = {
    "unknown op": (encode_json(record(op="DELETE")), "'op' is 'DELETE'"),
    "lower-case op": (encode_json(record(op="add")), "'op'"),
    "unknown id_type": (encode_json(record(id_type="EMAIL")), "'id_type'"),
    "op not a string": (encode_json(record(op=1)), "'op' must be a string"),
    "missing segment": (
        json.dumps({k: v for k, v in record().items() if k != "segment"}).encode(),
        "'segment'",
    ),
    "device_id null": (encode_json(record(device_id=None)), "'device_id'"),
    "occurred_at a string": (encode_json(record(occurred_at="1700000000000")), "integer"),
    "occurred_at a float": (encode_json(record(occurred_at=1.5)), "integer"),
    "occurred_at a bool": (encode_json(record(occurred_at=True)), "integer"),
    "occurred_at beyond long": (encode_json(record(occurred_at=2**63)), "long range"),
}


@pytest.mark.parametrize("case", JSON_ONLY_CASES)
def test_json_with_wrong_field_types_or_symbols_is_rejected_at_validate(case: str) -> None:
    value, words = JSON_ONLY_CASES[case]
    result = rejection(value)
    assert (result.stage, result.error_class) == (Stage.VALIDATE, "ValidationError")
    assert words in result.message


# --- decoding failures ----------------------------------------------------------------------------


def _wide_enum_avro(field: str, symbol: str) -> bytes:
    """Plain Avro whose enum index for ``field`` is beyond the bundled symbols."""
    raw = json.loads(BUNDLED_SCHEMA_JSON)
    for f in raw["fields"]:
        if f["name"] == field:
            f["type"]["symbols"] = [*f["type"]["symbols"], symbol]
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(raw, named_schemas={}), record(**{field: symbol}))
    return out.getvalue()


AVRO = encode_avro(record())
FRAMED = encode_framed(BUNDLED_ID, record())

DECODE_CASES: dict[str, tuple[bytes | None, str, str]] = {
    # name: (value, error class, words in the message)
    "tombstone": (None, "DecodeError", "tombstone"),
    "empty": (b"", "DecodeError", "empty"),
    "garbage": (b"\xff\xfe\xfd" * 10, "DecodeError", "Avro"),
    "truncated avro": (AVRO[:-1], "DecodeError", "truncated"),
    "avro cut in a string": (AVRO[:20], "DecodeError", "truncated"),
    "trailing byte": (AVRO + b"\x00", "DecodeError", "1 trailing bytes"),
    "op index out of range": (_wide_enum_avro("op", "DELETE"), "DecodeError", "enum"),
    "id_type index out of range": (_wide_enum_avro("id_type", "EMAIL"), "DecodeError", "enum"),
    "invalid utf-8 in avro": (AVRO[:5] + b"\xff" + AVRO[6:], "DecodeError", "UnicodeDecodeError"),
    "invalid json": (b'{"event_id": ', "DecodeError", "JSON"),
    "json with trailing data": (encode_json(record()) + b" x", "DecodeError", "JSON"),
    "json not utf-8": (b'{"\xff": 1}', "DecodeError", "JSON"),
    "json nested too deep": (b'{"a":' + b"[" * 100_000, "DecodeError", "JSON"),
    "json array": (b"[" + encode_json(record()) + b"]", "DecodeError", "Avro"),
    "framed too short": (b"\x00\x00\x00", "DecodeError", "shorter than its header"),
    "framed truncated": (FRAMED[:-2], "DecodeError", "truncated"),
    "framed trailing": (FRAMED + b"\x01", "DecodeError", "trailing"),
    "schema not in registry": (
        b"\x00" + MISSING_ID.to_bytes(4, "big") + AVRO,
        "SchemaNotFoundError",
        f"schema ID {MISSING_ID}",
    ),
    "incompatible writer schema": (
        b"\x00" + INCOMPATIBLE_ID.to_bytes(4, "big") + b"\x02",
        "IncompatibleSchemaError",
        "resolved",
    ),
    "invalid writer schema": (
        b"\x00" + INVALID_ID.to_bytes(4, "big") + AVRO,
        "IncompatibleSchemaError",
        f"ID {INVALID_ID} is not a valid Avro schema",
    ),
}


@pytest.mark.parametrize("case", DECODE_CASES)
def test_undecodable_value_is_rejected_at_decode(case: str) -> None:
    value, error_class, words = DECODE_CASES[case]
    result = rejection(value)
    assert (result.stage, result.error_class) == (Stage.DECODE, error_class)
    assert words in result.message
    assert len(result.message) < 200


def test_framed_value_without_a_registry_is_rejected_naming_the_setting() -> None:
    result = Decoder(registry_enabled=False).decode(msg(FRAMED))
    assert result == Rejection(
        Stage.DECODE,
        "RegistryNotConfiguredError",
        "framed Avro but SCHEMA_REGISTRY_URL is not set",
        3,
        42,
    )


def test_plain_avro_and_json_decode_without_a_registry() -> None:
    d = Decoder(registry_enabled=False)
    assert isinstance(d.decode(msg(AVRO)), MembershipChange)
    assert isinstance(d.decode(msg(encode_json(record()))), MembershipChange)


def test_framed_value_with_an_unresolved_schema_id_is_a_caller_bug() -> None:
    with pytest.raises(UnresolvedSchemaError, match="schema ID 99"):
        Decoder().decode(msg(encode_framed(99, record())))


# --- the writer-schema cache ----------------------------------------------------------------------


def test_missing_schema_ids_lists_framed_ids_not_yet_resolved() -> None:
    d = decoder()
    values = [
        encode_framed(BUNDLED_ID, record()),  # known
        encode_framed(MISSING_ID, record()),  # known to be missing
        encode_framed(12, record()),
        encode_framed(12, record()),
        encode_framed(2**32 - 1, record()),
        AVRO,
        encode_json(record()),
        b"\x00\x00",  # too short to name an ID
        None,
    ]
    assert d.missing_schema_ids(values) == {12, 2**32 - 1}


def test_missing_schema_ids_is_empty_without_a_registry() -> None:
    assert Decoder(registry_enabled=False).missing_schema_ids([FRAMED]) == set()


def test_schema_added_after_being_marked_missing_is_used() -> None:
    d = Decoder()
    d.mark_schema_missing(BUNDLED_ID)
    assert isinstance(d.decode(msg(FRAMED)), Rejection)
    d.add_writer_schema(BUNDLED_ID, BUNDLED_SCHEMA_JSON)
    assert d.missing_schema_ids([FRAMED]) == set()
    assert isinstance(d.decode(msg(FRAMED)), MembershipChange)


def test_many_missing_ids_are_forgotten_and_asked_again() -> None:
    d = Decoder()
    for schema_id in range(10_001):
        d.mark_schema_missing(schema_id)
    assert d.missing_schema_ids([encode_framed(5, record())]) == {5}


@pytest.mark.parametrize(
    ("schema_json", "fast"),
    [
        (BUNDLED_SCHEMA_JSON, True),
        (NAMESPACED_SCHEMA_JSON, True),
        (json.dumps(json.loads(BUNDLED_SCHEMA_JSON) | {"doc": "other", "aliases": ["X"]}), True),
        (EVOLVED_SCHEMA_JSON, False),
        (INCOMPATIBLE_SCHEMA_JSON, False),
        ('"string"', False),
        ("{not json", False),
    ],
)
def test_only_writer_schemas_with_the_bundled_layout_take_the_fast_readers(
    schema_json: str, fast: bool
) -> None:
    assert has_bundled_layout(schema_json) is fast
