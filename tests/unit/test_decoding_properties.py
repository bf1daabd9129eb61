"""Decoder properties: every path agrees on valid records; no input ever raises."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_decoding import BUNDLED_ID, ENCODERS, MISSING_ID, decoder, msg
from worker.decoding import Decoder
from worker.errors import ValidationError
from worker.generator import encode_avro, encode_framed
from worker.model import IdType, MembershipChange, Op, Rejection
from worker.naming import inmobi_segment_name

LONG = st.integers(-(2**63), 2**63 - 1)
FAST_MILLIS = st.integers(2**34, 2**41 - 1)  # the 6-byte varints the fast readers handle


@st.composite
def uuid_text(draw: st.DrawFn, *, nonzero: bool = True) -> str:
    """A hyphenated UUID with each letter in a random case."""
    value = draw(st.uuids().filter(lambda u: u.int != 0) if nonzero else st.uuids())
    text = str(value)
    upper = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))


def _valid_segment(name: str) -> bool:
    try:
        inmobi_segment_name(name)
    except ValidationError:
        return False
    return True


SEGMENTS = st.one_of(
    st.sampled_from(["high_value users", "VIP", "lookalike 1%"]),
    st.text(min_size=1, max_size=80),
).filter(_valid_segment)
DEVICE_IDS = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=100
)


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    id_type = draw(st.sampled_from(IdType))
    device_id = draw(DEVICE_IDS if id_type is IdType.DEVICE_ID else uuid_text())
    return {
        "event_id": draw(uuid_text(nonzero=False)),
        "segment": draw(SEGMENTS),
        "op": draw(st.sampled_from(Op)).name,
        "id_type": id_type.name,
        "device_id": device_id,
        "occurred_at": draw(st.one_of(FAST_MILLIS, LONG)),
    }


def expected_change(rec: dict[str, Any]) -> MembershipChange:
    id_type = IdType[rec["id_type"]]
    device_id = rec["device_id"] if id_type is IdType.DEVICE_ID else rec["device_id"].lower()
    return MembershipChange(
        inmobi_segment_name(rec["segment"]),
        Op[rec["op"]],
        id_type,
        device_id,
        rec["event_id"],
        rec["occurred_at"],
        3,
        42,
    )


FAST, SLOW = decoder(), decoder(fast_path=False)


@settings(max_examples=300, deadline=None)
@given(valid_records())
def test_every_encoding_and_path_yields_the_same_change(rec: dict[str, Any]) -> None:
    expected = expected_change(rec)
    for encode in ENCODERS.values():
        value = encode(rec)
        assert FAST.decode(msg(value)) == expected
        assert SLOW.decode(msg(value)) == expected


@settings(max_examples=200, deadline=None)
@given(uuid_text(), st.sampled_from([IdType.IDFA, IdType.GAID]))
def test_upper_case_advertising_ids_are_normalised_to_lower_case(
    ad_id: str, id_type: IdType
) -> None:
    base = {
        "event_id": str(uuid.uuid4()),
        "segment": "S",
        "op": "ADD",
        "id_type": id_type.name,
        "occurred_at": 1_700_000_000_000,
    }
    for text in (ad_id, ad_id.upper(), ad_id.lower()):
        result = FAST.decode(msg(encode_avro(base | {"device_id": text})))
        assert isinstance(result, MembershipChange)
        assert result.device_id == ad_id.lower()


def _decode_safely(d: Decoder, value: bytes) -> MembershipChange | Rejection:
    # Resolve schema IDs first, as the pipeline does: unknown ones are "not in the registry".
    for schema_id in d.missing_schema_ids([value]):
        d.mark_schema_missing(schema_id)
    result = d.decode(msg(value))
    assert isinstance(result, MembershipChange | Rejection)
    return result


ARBITRARY_VALUES = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=120).map(lambda b: b"H" + b),  # looks like plain Avro of a UUID event_id
    st.binary(max_size=120).map(lambda b: b"{" + b),
    st.binary(max_size=120).map(lambda b: b"\x00" + BUNDLED_ID.to_bytes(4, "big") + b),
    st.binary(max_size=120).map(lambda b: b"\x00" + MISSING_ID.to_bytes(4, "big") + b),
)


@settings(max_examples=500, deadline=None)
@given(ARBITRARY_VALUES)
def test_arbitrary_bytes_never_raise_and_both_paths_agree(value: bytes) -> None:
    assert _decode_safely(decoder(), value) == _decode_safely(decoder(fast_path=False), value)


@settings(max_examples=400, deadline=None)
@given(valid_records(), st.sampled_from(["avro", "framed"]), st.data())
def test_corrupted_avro_never_raises_and_both_paths_agree(
    rec: dict[str, Any], encoding: str, data: st.DataObject
) -> None:
    value = bytearray(encode_avro(rec) if encoding == "avro" else encode_framed(BUNDLED_ID, rec))
    position = data.draw(st.integers(0, len(value) - 1))
    action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if action == "flip":
        value[position] ^= data.draw(st.integers(1, 255))
    elif action == "cut":
        del value[position:]
    else:
        value.insert(position, data.draw(st.integers(0, 255)))
    corrupted = bytes(value)
    assert _decode_safely(decoder(), corrupted) == _decode_safely(
        decoder(fast_path=False), corrupted
    )
