"""Sample-event generator: deterministic, decodable as promised, and a correct oracle."""

from __future__ import annotations

import io
import json
import random
from collections import defaultdict

import pytest
from fastavro import schemaless_reader
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.avro_fast import BUNDLED_SCHEMA, BUNDLED_SCHEMA_JSON, ZERO_UUID
from worker.decoding import Decoder
from worker.generator import (
    BAD_KINDS,
    DEFAULT_SEGMENTS,
    ENCODINGS,
    ExpectedChange,
    GeneratedRecord,
    GeneratorSpec,
    _bad_value,
    encode_avro,
    encode_framed,
    encode_json,
    fold_model,
    generate,
)
from worker.model import IdType, MembershipChange, Op, Rejection, SourceMessage
from worker.naming import inmobi_segment_name

SCHEMA_ID = 5
ALL = ("avro", "framed", "json")


def records(**spec: object) -> list[GeneratedRecord]:
    return list(generate(GeneratorSpec(**spec)))  # type: ignore[arg-type]


def decoder() -> Decoder:
    d = Decoder()
    d.add_writer_schema(SCHEMA_ID, BUNDLED_SCHEMA_JSON)
    return d


def decode(d: Decoder, value: bytes, offset: int = 0) -> MembershipChange | Rejection:
    return d.decode(SourceMessage("t", 0, offset, None, value, 0))


# --- the spec ---------------------------------------------------------------------------------


def test_default_segments_are_eight_distinct_inmobi_names_including_a_lower_case_one() -> None:
    names = {inmobi_segment_name(s) for s in DEFAULT_SEGMENTS}
    assert len(DEFAULT_SEGMENTS) == len(names) == 8
    assert inmobi_segment_name("high_value users") == "HIGH_VALUE_USERS"
    assert "high_value users" in DEFAULT_SEGMENTS


@pytest.mark.parametrize(
    "bad",
    [
        {"remove_share": 1.5},
        {"bad_share": -0.1},
        {"uppercase_share": 2},
        {"encodings": ("avro", "protobuf")},
        {"encodings": ()},
        {"segments": ()},
        {"segments": ("ok", "")},
        {"devices": 0},
        {"count": -1},
        {"id_types": ((IdType.IDFA, 0.0),)},
        {"schema_id": 2**32},
    ],
)
def test_invalid_spec_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="invalid GeneratorSpec"):
        GeneratorSpec(**bad)  # type: ignore[arg-type]


def test_spec_accepts_lists_and_stays_hashable() -> None:
    spec = GeneratorSpec(segments=["a", "b"], encodings=["json"])  # type: ignore[arg-type]
    assert spec.segments == ("a", "b")
    assert hash(spec) == hash(GeneratorSpec(segments=("a", "b"), encodings=("json",)))


# --- determinism and shape ----------------------------------------------------------------------


def test_same_spec_gives_the_same_records_and_another_seed_does_not() -> None:
    assert records(count=300, encodings=ALL, bad_share=0.2) == records(
        count=300, encodings=ALL, bad_share=0.2
    )
    assert records(count=300, seed=1) != records(count=300, seed=2)


def test_count_shares_and_encodings_are_respected() -> None:
    recs = records(count=4000, encodings=("json", "framed"), remove_share=0.3, bad_share=0.1)
    assert len(recs) == 4000
    assert {r.encoding for r in recs} == {"json", "framed"}
    good = [r.change for r in recs if r.change is not None]
    assert all((r.change is None) == r.bad for r in recs)
    assert 0.07 < sum(r.bad for r in recs) / len(recs) < 0.13
    assert 0.25 < sum(c.op is Op.REMOVE for c in good) / len(good) < 0.35


@pytest.mark.parametrize(("share", "op"), [(0.0, Op.ADD), (1.0, Op.REMOVE)])
def test_remove_share_extremes(share: float, op: Op) -> None:
    assert {r.change.op for r in records(count=200, remove_share=share) if r.change} == {op}


def test_only_the_requested_id_types_appear() -> None:
    recs = records(count=500, id_types=((IdType.GAID, 1.0), (IdType.DEVICE_ID, 0.0)))
    assert {r.change.id_type for r in recs if r.change} == {IdType.GAID}


def test_key_is_the_device_id_as_written_and_fixed_per_device() -> None:
    recs = records(count=3000, devices=50, uppercase_share=0.5, encodings=("json",))
    by_key: dict[bytes, set[tuple[IdType, str]]] = defaultdict(set)
    for r in recs:
        written = json.loads(r.value)["device_id"]
        assert r.key == written.encode()
        assert r.change is not None
        by_key[r.key].add((r.change.id_type, r.change.device_id))
    assert all(len(ids) == 1 for ids in by_key.values())  # one device, one identity
    assert len(by_key) <= 50


@pytest.mark.parametrize(("share", "expect_upper"), [(0.0, False), (1.0, True)])
def test_uppercase_share_decides_how_uuid_devices_are_written(
    share: float, expect_upper: bool
) -> None:
    recs = records(count=300, uppercase_share=share, id_types=((IdType.IDFA, 1.0),))
    assert {r.key.decode().isupper() for r in recs} == {expect_upper}
    assert all(r.change and r.change.device_id == r.key.decode().lower() for r in recs)


def test_device_ids_are_never_the_all_zero_uuid() -> None:
    for seed in range(5):
        recs = records(count=2000, devices=2000, seed=seed)
        assert all(r.change and r.change.device_id != ZERO_UUID for r in recs)


# --- decodable as promised ------------------------------------------------------------------------


def test_good_records_decode_to_their_expected_change_in_every_encoding() -> None:
    d = decoder()
    recs = records(count=3000, encodings=ALL, uppercase_share=0.3, schema_id=SCHEMA_ID)
    for offset, r in enumerate(recs):
        result = decode(d, r.value, offset)
        assert isinstance(result, MembershipChange), (r, result)
        assert ExpectedChange(result.segment, result.op, result.id_type, result.device_id) == (
            r.change
        )


def test_bad_records_are_all_rejected() -> None:
    d = decoder()
    recs = records(count=3000, encodings=ALL, bad_share=1.0, schema_id=SCHEMA_ID)
    assert all(r.bad for r in recs)
    assert all(isinstance(decode(d, r.value), Rejection) for r in recs)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("id_type", ["IDFA", "DEVICE_ID"])
def test_every_kind_of_bad_record_is_rejected_in_every_encoding(
    kind: str, encoding: str, id_type: str
) -> None:
    d, rng = decoder(), random.Random(kind + encoding)
    device_id = "6d92078a-8246-4ba4-ae5b-76104861e7dc" if id_type == "IDFA" else "device-1"
    for i in range(30):
        rec = {
            "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "segment": DEFAULT_SEGMENTS[i % len(DEFAULT_SEGMENTS)],
            "op": "ADD",
            "id_type": id_type,
            "device_id": device_id,
            "occurred_at": 1_700_000_000_000 + i,
        }
        assert isinstance(decode(d, encode_framed(SCHEMA_ID, rec)), MembershipChange)
        value = _bad_value(kind, rec, encoding, SCHEMA_ID, rng)
        assert isinstance(decode(d, value), Rejection), (kind, value)


def test_encoders_write_the_three_wire_formats() -> None:
    rec = {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "segment": "VIP",
        "op": "REMOVE",
        "id_type": "GAID",
        "device_id": "6d92078a-8246-4ba4-ae5b-76104861e7dc",
        "occurred_at": 1,
    }
    avro = encode_avro(rec)
    assert encode_framed(258, rec) == b"\x00\x00\x00\x01\x02" + avro
    assert json.loads(encode_json(rec)) == rec
    assert schemaless_reader(io.BytesIO(avro), BUNDLED_SCHEMA, None) == rec


# --- the oracle -----------------------------------------------------------------------------------


def ch(
    op: Op, device: str = "a", segment: str = "S", id_type: IdType = IdType.IDFA
) -> ExpectedChange:
    return ExpectedChange(segment, op, id_type, device)


@pytest.mark.parametrize(
    ("changes", "model"),
    [
        ([], {}),
        ([ch(Op.ADD)], {"S": {(IdType.IDFA, "a")}}),
        ([ch(Op.ADD), ch(Op.REMOVE)], {}),
        ([ch(Op.REMOVE), ch(Op.ADD)], {"S": {(IdType.IDFA, "a")}}),
        ([ch(Op.REMOVE)], {}),
        ([ch(Op.ADD), ch(Op.ADD), ch(Op.REMOVE), ch(Op.ADD)], {"S": {(IdType.IDFA, "a")}}),
        (
            [ch(Op.ADD, segment="S"), ch(Op.ADD, segment="T"), ch(Op.REMOVE, segment="S")],
            {"T": {(IdType.IDFA, "a")}},
        ),
        (
            [ch(Op.ADD, id_type=IdType.GAID), ch(Op.REMOVE, id_type=IdType.IDFA)],
            {"S": {(IdType.GAID, "a")}},
        ),
        ([ch(Op.ADD, "a"), ch(Op.ADD, "b"), ch(Op.REMOVE, "a")], {"S": {(IdType.IDFA, "b")}}),
    ],
)
def test_fold_applies_changes_in_order_and_last_one_wins(
    changes: list[ExpectedChange], model: dict[str, set[tuple[IdType, str]]]
) -> None:
    assert fold_model(changes) == model


CHANGES = st.lists(
    st.builds(
        ExpectedChange,
        st.sampled_from(["S", "T", "U"]),
        st.sampled_from(Op),
        st.sampled_from(IdType),
        st.sampled_from(["d1", "d2", "d3", "d4"]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(CHANGES, st.data())
def test_fold_is_the_same_for_any_interleaving_that_keeps_per_device_order(
    changes: list[ExpectedChange], data: st.DataObject
) -> None:
    queues: dict[str, list[ExpectedChange]] = defaultdict(list)
    for change in changes:  # the Kafka key is the device ID: one queue per key
        queues[change.device_id].append(change)
    merged: list[ExpectedChange] = []
    while any(queues.values()):
        key = data.draw(st.sampled_from(sorted(k for k, q in queues.items() if q)))
        merged.append(queues[key].pop(0))
    assert fold_model(merged) == fold_model(changes)


@settings(max_examples=200, deadline=None)
@given(CHANGES)
def test_fold_matches_applying_each_change_to_a_set(changes: list[ExpectedChange]) -> None:
    members: dict[str, set[tuple[IdType, str]]] = defaultdict(set)
    for c in changes:
        (members[c.segment].add if c.op is Op.ADD else members[c.segment].discard)(
            (c.id_type, c.device_id)
        )
    assert fold_model(changes) == {s: m for s, m in members.items() if m}
