"""The sandbox's upload file checks (worker.sandbox.csvfile), without HTTP."""

from __future__ import annotations

import gzip
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.sandbox.csvfile import UploadRejectedError, parse_upload

UUID_A = "6F9619FF-8B86-4011-B42D-00C04FC964FF"
UUID_B = "0c6a7a2e-3f1b-4b8e-9d4f-1a2b3c4d5e6f"


def gz(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"))


@pytest.mark.parametrize(
    ("text", "column", "ids"),
    [
        (f"ida\n{UUID_A}\n", "ida", (UUID_A.lower(),)),
        (f"gpId\n{UUID_B}\n{UUID_A}", "gpId", (UUID_B, UUID_A.lower())),
        ("ifa\nroku-123\n", "ifa", ("roku-123",)),
        (f"ida\r\n{UUID_B}\r\n", "ida", (UUID_B,)),
        ('ifa\n"a,b"\n"say ""hi"""\n', "ifa", ("a,b", 'say "hi"')),
        (f"ida\n{UUID_B}\n{UUID_B}\n", "ida", (UUID_B, UUID_B)),
        ("ifa\n" + "x" * 100 + "\n", "ifa", ("x" * 100,)),
    ],
    ids=[
        "idfa-upper",
        "gaid-no-trailing-newline",
        "device-id",
        "crlf",
        "quoted",
        "dups",
        "ifa-100",
    ],
)
def test_valid_files_give_column_and_normalised_ids(text: str, column: str, ids: tuple[str, ...]):
    parsed = parse_upload(gz(text))
    assert (parsed.column, parsed.ids, parsed.rows) == (column, ids, len(ids))


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"ida\n" + UUID_B.encode(), 400, "not valid gzip"),
        (gz(""), 400, "header '' is not one of ida, gpId, ifa"),
        (gz("idfa\n" + UUID_B), 400, "header 'idfa' is not one of"),
        (gz(" ida\n" + UUID_B), 400, "header ' ida'"),
        (gz("ida\n"), 400, "no device IDs found"),
        (gz("ida"), 400, "no device IDs found"),
        (gz(f"ida\n{UUID_B}\nnot-a-uuid\n"), 400, "row 2: not a UUID"),
        (gz(f"ida\n{UUID_B.replace('-', '')}\n"), 400, "row 1: not a UUID"),
        (gz(f"gpId\n {UUID_B}\n"), 400, "row 1: not a UUID"),
        (gz("ida\n00000000-0000-0000-0000-000000000000\n"), 400, "row 1: the all-zero UUID"),
        (gz("ifa\nok\n" + "x" * 101 + "\n"), 400, "row 2: not 1-100 printable ASCII"),
        (gz("ifa\nab\tc\n"), 400, "row 1: not 1-100 printable ASCII"),
        (gz("ifa\nçà\n"), 400, "row 1: not 1-100 printable ASCII"),
        (gz(f"ida\n{UUID_B}\n\n{UUID_B}\n"), 400, "row 2: empty row"),
        (gz(f"ida\n{UUID_B},{UUID_B}\n"), 400, "row 1: expected 1 column, found 2"),
        (gz('ifa\nok\n"unterminated\n'), 400, "row 2:"),
        (gzip.compress(b"ida\n\xff\xfe\n"), 400, "not UTF-8"),
    ],
)
def test_invalid_files_are_rejected_with_status_and_reason(data: bytes, status: int, message: str):
    with pytest.raises(UploadRejectedError) as caught:
        parse_upload(data)
    assert caught.value.status == status
    assert message in caught.value.message


def test_row_count_limit_excludes_the_header():
    rows = [str(uuid.UUID(int=i + 1, version=4)) for i in range(3)]
    assert parse_upload(gz("ida\n" + "\n".join(rows)), max_rows=3).rows == 3
    with pytest.raises(UploadRejectedError) as caught:
        parse_upload(gz("ida\n" + "\n".join([*rows, rows[0]])), max_rows=3)
    assert (caught.value.status, caught.value.message) == (413, "file has 4 rows, the limit is 3")


def test_size_is_checked_before_decompressing():
    # Not gzip at all, but too big: the 413 proves the size came first.
    with pytest.raises(UploadRejectedError) as caught:
        parse_upload(b"x" * 101, max_bytes=100)
    assert caught.value.status == 413
    assert parse_upload(gz("ifa\nz"), max_bytes=len(gz("ifa\nz"))).ids == ("z",)


def test_gzip_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b"ifa\n" + b"a\n" * 5_000_000)
    with pytest.raises(UploadRejectedError) as caught:
        parse_upload(bomb, max_rows=1000)
    assert (caught.value.status, caught.value.message) == (
        413,
        "file is too large once decompressed",
    )


def test_one_bad_row_at_the_end_rejects_the_whole_file():
    rows = [str(uuid.UUID(int=i + 1, version=4)) for i in range(999)] + ["bad"]
    with pytest.raises(UploadRejectedError, match="row 1000: not a UUID"):
        parse_upload(gz("gpId\n" + "\n".join(rows)))


def test_multi_member_gzip_is_read_whole():
    data = gzip.compress(b"ifa\na\n") + gzip.compress(b"b\n")
    assert parse_upload(data).ids == ("a", "b")


@given(
    st.lists(st.uuids(), min_size=1, max_size=50), st.booleans(), st.sampled_from(["ida", "gpId"])
)
def test_any_uuids_round_trip_lower_cased(ids: list[uuid.UUID], upper: bool, column: str):
    ids = [u for u in ids if u.int != 0]
    if not ids:
        return
    lines = [str(u).upper() if upper else str(u) for u in ids]
    parsed = parse_upload(gz(column + "\n" + "\n".join(lines) + "\n"))
    assert parsed.column == column
    assert parsed.ids == tuple(str(u) for u in ids)
