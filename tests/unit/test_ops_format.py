"""Operator commands without a broker: status table, DLQ filters, replay headers and loop."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from worker.avro_fast import BUNDLED_SCHEMA_JSON
from worker.dlq_records import (
    REPLAYED_FROM,
    ReplayFilter,
    Verdict,
    record_segment,
    record_stage,
    replay_headers,
)
from worker.errors import ConfigError
from worker.generator import encode_avro, encode_framed, encode_json
from worker.kafka import StoredRecord
from worker.model import Stage
from worker.ops import (
    PartitionStatus,
    ReplayReport,
    StatusReport,
    format_replay,
    format_status,
    replay_records,
)

GOOD = {
    "event_id": "6f1c2a52-58a4-4d8e-9a0e-6c1f1d2b7e11",
    "segment": "high_value users",
    "op": "ADD",
    "id_type": "IDFA",
    "device_id": "AB5E2C7A-3C4B-4F0E-9E44-0F9B1C2D3E4F",
    "occurred_at": 1_700_000_000_000,
}


def zigzag(n: int) -> bytes:
    raw, out = (n << 1) ^ (n >> 63), bytearray()
    while True:
        byte = raw & 0x7F
        raw >>= 7
        if raw:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def avro_layout(segment: str, op_index: int = 0, *, trailing: bytes = b"") -> bytes:
    """The bundled layout written by hand, so enum indexes outside the schema can be written."""

    def text(s: str) -> bytes:
        data = s.encode()
        return zigzag(len(data)) + data

    body = text(GOOD["event_id"]) + text(segment) + zigzag(op_index) + zigzag(0)
    return body + text(GOOD["device_id"]) + zigzag(GOOD["occurred_at"]) + trailing


def dlq_record(value: bytes | None, stage: str | None = "VALIDATE", **extra: bytes) -> StoredRecord:
    headers = [("__connect.errors.topic", b"changes"), ("__connect.errors.offset", b"7")]
    if stage is not None:
        headers.append(("__connect.errors.stage", stage.encode()))
    headers += list(extra.items())
    return StoredRecord(3, 41, b"device-key", value, headers)


# --- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "start", "end", "lag"),
    [
        (120, 0, 120, 0),
        (100, 0, 120, 20),
        (None, 0, 10, 10),  # never committed: the group starts at the first offset in the log
        (None, 5, 10, 5),
        (130, 0, 120, -10),  # committed past the end: shown, not hidden
    ],
)
def test_partition_lag_is_end_minus_committed_or_start(
    committed: int | None, start: int, end: int, lag: int
) -> None:
    assert PartitionStatus(0, committed, start, end).lag == lag


def test_status_table_has_a_row_per_partition_and_totals() -> None:
    report = StatusReport(
        "changes",
        "sync",
        (PartitionStatus(0, 120, 0, 120), PartitionStatus(1, None, 0, 10)),
    )
    lines = format_status(report).splitlines()
    assert lines[0] == "group sync on topic changes (2 partitions)"
    assert lines[1].split() == ["partition", "committed", "end", "lag"]
    assert lines[2].split() == ["0", "120", "120", "0"]
    assert lines[3].split() == ["1", "-", "10", "10"]
    assert lines[4].split() == ["total", "120", "130", "10"]
    assert "1 partition(s) without a committed offset" in lines[5]
    assert report.total_lag == 10


def test_status_table_of_a_caught_up_group_has_no_note() -> None:
    report = StatusReport("t", "g", (PartitionStatus(0, 3, 0, 3),))
    assert format_status(report).splitlines()[-1].split() == ["total", "3", "3", "0"]


# --- reading a DLQ record -----------------------------------------------------------------------


def bundled_lookup(schema_id: int) -> str | None:
    return BUNDLED_SCHEMA_JSON if schema_id == 7 else None


EXTENDED_SCHEMA = json.loads(BUNDLED_SCHEMA_JSON)
EXTENDED_SCHEMA["fields"].insert(0, {"name": "source", "type": "string"})


def extended_framed(record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(EXTENDED_SCHEMA), {"source": "cdp", **record})
    return b"\x00" + (9).to_bytes(4, "big") + out.getvalue()


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        (encode_json(GOOD), "HIGH_VALUE_USERS"),
        (b"  \n" + encode_json(GOOD), "HIGH_VALUE_USERS"),
        (encode_json({**GOOD, "device_id": "not-a-uuid"}), "HIGH_VALUE_USERS"),
        (json.dumps({"segment": 5}).encode(), None),
        (b"[1, 2]", None),
        (b"{not json", None),
        (encode_json({**GOOD, "segment": ""}), None),  # an invalid name names no segment
        (encode_avro(GOOD), "HIGH_VALUE_USERS"),
        (
            encode_avro({**GOOD, "device_id": "00000000-0000-0000-0000-000000000000"}),
            "HIGH_VALUE_USERS",
        ),
        (avro_layout("Gamers", op_index=2), "GAMERS"),  # op outside the enum: segment still read
        (avro_layout("Gamers", trailing=b"\x00"), None),  # trailing bytes: not this layout
        (encode_avro(GOOD)[:-3], None),
        (b"\x90\x91\x92", None),
        (encode_framed(7, GOOD), "HIGH_VALUE_USERS"),
        (encode_framed(8, GOOD), None),  # writer schema unknown
        (b"\x00\x00\x00", None),  # shorter than the frame header
        (b"", None),
        (None, None),
    ],
)
def test_record_segment_reads_json_plain_and_framed_avro(
    value: bytes | None, segment: str | None
) -> None:
    assert record_segment(value, bundled_lookup) == segment


def test_avro_layout_helper_matches_the_bundled_writer() -> None:
    assert avro_layout(GOOD["segment"]) == encode_avro(GOOD)


def test_framed_segment_with_another_writer_schema_is_resolved() -> None:
    def lookup(schema_id: int) -> str | None:
        return json.dumps(EXTENDED_SCHEMA) if schema_id == 9 else None

    assert record_segment(extended_framed(GOOD), lookup) == "HIGH_VALUE_USERS"
    assert record_segment(extended_framed(GOOD)) is None  # no lookup: unreadable


def test_record_stage_reads_the_connect_header() -> None:
    assert record_stage(dlq_record(b"x", "DECODE").headers) == "DECODE"
    assert record_stage(dlq_record(b"x", None).headers) is None


# --- the filter -----------------------------------------------------------------------------------


def test_filter_parses_stage_case_insensitively_and_maps_the_segment() -> None:
    wanted = ReplayFilter.parse("validate", "high_value users")
    assert wanted == ReplayFilter(Stage.VALIDATE, "HIGH_VALUE_USERS")
    assert ReplayFilter.parse(None, None) == ReplayFilter()


def test_filter_names_every_bad_option() -> None:
    with pytest.raises(ConfigError) as info:
        ReplayFilter.parse("VALIDATION", "")
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith("--stage: 'VALIDATION' is not one of DECODE")
    assert info.value.problems[1].startswith("--segment:")


@pytest.mark.parametrize(
    ("stage", "segment", "record", "verdict"),
    [
        (None, None, dlq_record(b"garbage", None), Verdict.REPLAY),
        ("VALIDATE", None, dlq_record(b"garbage"), Verdict.REPLAY),
        ("DECODE", None, dlq_record(b"garbage"), Verdict.OTHER_STAGE),
        ("DECODE", None, dlq_record(b"garbage", None), Verdict.OTHER_STAGE),
        (None, "HIGH_VALUE_USERS", dlq_record(encode_json(GOOD)), Verdict.REPLAY),
        (None, "high_value users", dlq_record(encode_avro(GOOD)), Verdict.REPLAY),
        (None, "GAMERS", dlq_record(encode_json(GOOD)), Verdict.OTHER_SEGMENT),
        (None, "GAMERS", dlq_record(b"garbage"), Verdict.UNREADABLE),
        ("VALIDATE", "GAMERS", dlq_record(avro_layout("gamers", 9)), Verdict.REPLAY),
        ("UPLOAD", "GAMERS", dlq_record(avro_layout("gamers")), Verdict.OTHER_STAGE),
    ],
)
def test_filter_verdict_by_stage_then_segment(
    stage: str | None, segment: str | None, record: StoredRecord, verdict: Verdict
) -> None:
    wanted = ReplayFilter.parse(stage, segment)
    assert wanted.verdict(record.headers, record.value) is verdict


# --- replay headers and loop --------------------------------------------------------------------


def test_replay_headers_drop_connect_headers_keep_others_and_name_the_origin() -> None:
    record = dlq_record(b"v", trace=b"abc", **{REPLAYED_FROM: b"old:0:1"})
    assert replay_headers(record, "changes.dlq") == [
        ("trace", b"abc"),
        (REPLAYED_FROM, b"changes.dlq:3:41"),
    ]


def test_replay_records_sends_matches_and_reports_progress_every_n() -> None:
    records = [dlq_record(b"a", "VALIDATE"), dlq_record(b"b", "DECODE")] * 5
    sent: list[tuple[bytes | None, bytes | None, Any]] = []
    progress: list[tuple[int, int]] = []
    counts = replay_records(
        records,
        ReplayFilter.parse("VALIDATE", None),
        dlq_topic="d",
        send=lambda k, v, h: sent.append((k, v, h)),
        progress=lambda scanned, matched: progress.append((scanned, matched)),
        progress_every=4,
    )
    assert counts == {
        Verdict.REPLAY: 5,
        Verdict.OTHER_STAGE: 5,
        Verdict.OTHER_SEGMENT: 0,
        Verdict.UNREADABLE: 0,
    }
    assert [(k, v) for k, v, _h in sent] == [(b"device-key", b"a")] * 5
    assert all(h == [(REPLAYED_FROM, b"d:3:41")] for _k, _v, h in sent)
    assert progress == [(4, 2), (8, 4)]


def test_replay_records_dry_run_sends_nothing() -> None:
    counts = replay_records(
        [dlq_record(b"a")], ReplayFilter(), dlq_topic="d", send=None, progress=lambda s, m: None
    )
    assert counts[Verdict.REPLAY] == 1


def report(**overrides: Any) -> ReplayReport:
    base: dict[str, Any] = {
        "dlq_topic": "changes.dlq",
        "target_topic": "changes",
        "dry_run": False,
        "counts": {Verdict.REPLAY: 3, Verdict.OTHER_STAGE: 2, Verdict.UNREADABLE: 0},
        "written": 3,
        "failed": 0,
        "target_end_offsets": {0: 10},
    }
    return ReplayReport(**(base | overrides))


def test_format_replay_says_what_was_replayed_and_skipped() -> None:
    assert format_replay(report()).splitlines() == [
        "replayed 3 of 5 DLQ records from changes.dlq to changes",
        "skipped: other stage 2",
    ]


def test_format_replay_of_a_dry_run_and_of_unconfirmed_records() -> None:
    assert format_replay(report(dry_run=True, written=0)).startswith("would replay 3 of 5")
    lines = format_replay(report(written=2, failed=1)).splitlines()
    assert lines[0].startswith("replayed 2 of 5")
    assert lines[-1] == "NOT CONFIRMED: 1 records (run again to replay them)"
