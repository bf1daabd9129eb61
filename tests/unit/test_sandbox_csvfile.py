"""The sandbox's upload file checks (worker.sandbox.csvfile), without HTTP."""

from __future__ import annotations

import gzip
import struct
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sandbox.csvfile import (
    ParsedUpload,
    UploadRejectedError,
    _gunzip,
    _gunzip_fast,
    _inflated_limit,
    _parse_fast,
    _parse_reference,
    parse_upload,
)

UUID_A = "6F9619FF-8B86-4011-B42D-00C04FC964FF"
UUID_B = "0c6a7a2e-3f1b-4b8e-9d4f-1a2b3c4d5e6f"


def gz(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"))


def gz_bytes(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


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


# --- the fast path agrees with the row-by-row reference -----------------------------------------

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
Outcome = ParsedUpload | tuple[str, ...]


def outcome(data: bytes, *, reference: bool, max_rows: int = 100_000) -> Outcome:
    """The result, or what was raised: the two paths must agree on both."""
    parse = _parse_reference if reference else parse_upload
    try:
        return parse(data, max_rows=max_rows)
    except UploadRejectedError as exc:
        return ("rejected", str(exc.status), exc.message)
    except Exception as exc:  # the reference's own failures must be kept too
        # A quoted field spanning two lines makes csv.reader yield fewer records than rows, and
        # the reference then lets StopIteration escape; the fast path must not hide that either.
        return ("raised", type(exc).__name__, str(exc))


def mixed_case(text: str, flips: list[bool]) -> str:
    """`text` with its first characters upper-cased where `flips` says so."""
    padded = (flips + [False] * len(text))[: len(text)]
    return "".join(c.upper() if f else c for c, f in zip(text, padded, strict=True))


# st.uuids() never draws the all-zero UUID.
MIXED_CASE_UUIDS = st.builds(mixed_case, st.uuids().map(str), st.lists(st.booleans(), max_size=36))


def with_char(text: str, index: int, char: str) -> str:
    index %= len(text)
    return text[:index] + char + text[index + 1 :]


PLAIN_DEVICE_IDS = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='",'),
    min_size=1,
    max_size=100,
)
# What a row might hold instead, the near misses of the bulk checks first.
UUID_NEAR_MISSES = st.sampled_from(
    [ZERO_UUID, UUID_A.replace("F", "G"), UUID_A + "0", UUID_A[1:], "", f"{UUID_A},"]
)
DEVICE_ID_NEAR_MISSES = st.sampled_from(
    ["x" * 101, "", "a,b", '"a,b"', 'a"b', " a ", "ab\tc", "a\rb", "\x7f", "çà"]
)
UUID_MISSES = st.builds(
    with_char, MIXED_CASE_UUIDS, st.integers(0, 35), st.sampled_from("0Fg- \r\n,")
)
ODD_ROWS = st.one_of(
    UUID_NEAR_MISSES,
    DEVICE_ID_NEAR_MISSES,
    UUID_MISSES,
    st.text(st.characters(min_codepoint=0x1F, max_codepoint=0x7F), max_size=101),
    st.sampled_from(
        [
            " ",
            f'"{UUID_B}"',
            f"{UUID_B},{UUID_B}",
            '"say ""hi"""',
            '"ab',
            'cd"',
            '""',
            "a\x00b",
            "x" * 100,
            "device-0a1b",
        ]
    ),
    st.text(max_size=5),
)
HEADERS = st.one_of(
    st.sampled_from(["ida", "gpId", "ifa"]),
    st.sampled_from(["ida", "gpId", "ifa", "IDA", " ida", "ifa,x", "", "idfa", "ifa\r"]),
)
ENDINGS = st.sampled_from(["\n", "\r\n"])
ODD_ENDINGS = st.sampled_from(["\r\r\n", "\r", "\n\n", "\n\r"])
TAILS = st.sampled_from(["", "\n", "\r\n", "\n\n", "\r", "\n\r", "\r\n\r\n"])
# Mostly the default limit, so that valid files reach the bulk checks; sometimes a tiny one.
MAX_ROWS = st.one_of(st.just(100_000), st.sampled_from([1, 2, 5]))


@st.composite
def upload_texts(draw: st.DrawFn) -> str:
    """Valid rows of the header's kind, plus either one near miss or a few odder rows and lines.

    Half the files differ from a valid one in a single row, where a bulk check that is too lax
    would show; the other half mix odd rows, line endings and tails.
    """
    header = draw(HEADERS)
    uuids = "ifa" not in header
    rows = draw(st.lists(MIXED_CASE_UUIDS if uuids else PLAIN_DEVICE_IDS, max_size=20))
    ending = draw(ENDINGS)
    if draw(st.booleans()):
        near_miss = st.one_of(UUID_NEAR_MISSES, UUID_MISSES) if uuids else DEVICE_ID_NEAR_MISSES
        rows.insert(draw(st.integers(0, len(rows))), draw(near_miss))
        return ending.join([header, *rows]) + draw(st.sampled_from(["", ending]))
    for _ in range(draw(st.integers(0, 2))):
        rows.insert(draw(st.integers(0, len(rows))), draw(ODD_ROWS))
    endings = [ending] * len(rows)
    if endings and draw(st.booleans()):
        endings[draw(st.integers(0, len(rows) - 1))] = draw(ODD_ENDINGS)
    text = header
    for line_end, row in zip(endings, rows, strict=True):
        text += line_end + row
    return text + draw(TAILS)


@settings(max_examples=1000, deadline=None)
@given(upload_texts(), MAX_ROWS, st.sampled_from([b"", b"", b"", b"\xff"]))
def test_fast_path_and_reference_agree_on_any_text(text: str, max_rows: int, suffix: bytes):
    raw = text.encode("utf-8") + suffix  # b"\xff" is never UTF-8
    data = gz_bytes(raw)
    assert outcome(data, reference=False, max_rows=max_rows) == outcome(
        data, reference=True, max_rows=max_rows
    )


@st.composite
def valid_uploads(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file of one of the shapes the fast path is for (what the worker sends)."""
    column = draw(st.sampled_from(["ida", "gpId", "ifa"]))
    rows = draw(
        st.lists(PLAIN_DEVICE_IDS if column == "ifa" else MIXED_CASE_UUIDS, min_size=1, max_size=30)
    )
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    tail = draw(st.sampled_from(["", ending]))
    return column, (ending.join([column, *rows]) + tail).encode("ascii")


@settings(max_examples=200, deadline=None)
@given(valid_uploads())
def test_fast_path_takes_every_plain_valid_file(upload: tuple[str, bytes]):
    column, raw = upload
    fast = _parse_fast(raw, max_rows=100_000)
    assert fast is not None
    assert fast == _parse_reference(gz_bytes(raw))
    assert fast.column == column


@st.composite
def gzip_variants(draw: st.DrawFn) -> bytes:
    """A small upload as one or more gzip members, padded, cut, with junk, or with bytes changed."""
    raw = draw(upload_texts()).encode("utf-8")
    cut = draw(st.integers(0, len(raw)))
    members = [raw] if draw(st.booleans()) else [raw[:cut], raw[cut:]]
    data = b"".join(
        gz_bytes(m) + b"\0" * draw(st.integers(0, 2)) for m in members if m or draw(st.booleans())
    )
    changes = draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=2))
    changed = bytearray(data)
    for position, value in changes:
        if changed:
            changed[position % len(changed)] = value
    end = draw(st.sampled_from([None, -1, -4, -9, 5]))
    return bytes(changed[:end]) + draw(st.sampled_from([b"", b"\0", b"\x1f", b"junk", b"\x1f\x8b"]))


@settings(max_examples=500, deadline=None)
@given(gzip_variants(), MAX_ROWS)
def test_fast_gunzip_and_gzipfile_agree_on_damaged_files(data: bytes, max_rows: int):
    limit = _inflated_limit(max_rows)
    fast = _gunzip_fast(data, limit=limit)
    if fast is not None:
        assert fast == _gunzip(data, limit=limit)
    assert outcome(data, reference=False, max_rows=max_rows) == outcome(
        data, reference=True, max_rows=max_rows
    )


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        (f"ida\n{UUID_B}\r", (UUID_B,)),  # a CR ending the text is dropped like one before LF
        ("ifa\nabc\r\r\n", ("abc",)),  # csv.reader ends the row at the second CR too
        ("ifa\n a \n", (" a ",)),  # csv keeps spaces, and so does the fast path
        ("ifa\n" + "x" * 100 + "\r\ny", ("x" * 100, "y")),
        ('ifa\nsay "hi\n', ('say "hi',)),  # a quote inside a field is a plain character
    ],
)
def test_line_ending_and_csv_quirks_are_kept(text: str, ids: tuple[str, ...]):
    assert parse_upload(gz(text)).ids == ids == _parse_reference(gz(text)).ids


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"ida\n{UUID_B}\n\r", "row 2: empty row"),  # a lone CR after the last LF is a row
        (f"ida\n{UUID_A}\n{ZERO_UUID.upper()}\n{UUID_B}", "row 2: the all-zero UUID is not"),
        (f"gpId\r\n{UUID_A}\r\n{UUID_B}\rx\r\n", "row 2: new-line character seen"),
        ("ifa\nok\r\n\r\n", "row 2: empty row"),
    ],
)
def test_rows_the_fast_path_refuses_get_the_reference_reason(text: str, message: str):
    with pytest.raises(UploadRejectedError) as caught:
        parse_upload(gz(text))
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)


def gzip_member(payload: bytes, *, flags: int, header_crc: int = 0) -> bytes:
    """A gzip member built by hand, for header fields gzip.compress never writes."""
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff"
    if flags & 0x02:
        header += struct.pack("<H", header_crc)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(payload) + deflate.flush()
    return header + body + struct.pack("<II", zlib.crc32(payload), len(payload))


@pytest.mark.parametrize(
    "data",
    [
        gz("ifa\na\nb") + b"\0\0\0",
        gz("ifa\na\n") + b"\0" + gz("b\n"),
        b"".join(gz(part) for part in ["ifa\n", "a\n", "b", "\n", *"cdefgh"]),
        gzip_member(b"ifa\na\nb", flags=0x02, header_crc=0x1234),  # GzipFile skips that CRC
        gzip_member(b"ifa\na\nb", flags=0x20),  # a reserved flag, ignored by GzipFile
    ],
    ids=["zero-padding", "padding-between", "many-members", "bad-header-crc", "reserved-flag"],
)
def test_gzip_files_gzipfile_read_are_still_read(data: bytes):
    parsed = parse_upload(data)
    assert parsed == _parse_reference(data)
    assert parsed.ids[:2] == ("a", "b")


@pytest.mark.parametrize(
    "data",
    [
        gz("ifa\na\n") + b"junk",
        gz("ifa\na\n") + b"\x1f\x8b",
        gz("ifa\na\n")[:-1],
        gz("ifa\na\n")[:-4] + b"\0\0\0\0",  # wrong length in the trailer
        b"",
        b"\0\0",
        # A deflate stream with an invalid distance code that zlib refuses and ISA-L inflates
        # (to its CRC-checked text): a reason the sandbox inflates with zlib, like GzipFile.
        bytes.fromhex(
            "1f8b08000000000000ff15c2410900000c03b17fbd1cd4d2d5bf8831b2e2"
            "56ab2930128299cbe300fe52da1421000000"
        ),
    ],
    ids=["junk", "next-header-cut", "truncated", "bad-length", "empty", "zeros", "zlib-refuses"],
)
def test_damaged_gzip_is_refused_as_before(data: bytes):
    assert outcome(data, reference=False) == outcome(data, reference=True)
    with pytest.raises(UploadRejectedError) as caught:
        parse_upload(data)
    expected = "header '' is not one of" if data == b"" else "file is not valid gzip"
    assert caught.value.status == 400
    assert expected in caught.value.message


def test_output_past_the_bound_is_refused_whatever_the_rows():
    # 1 row allows (1 + 2) * 204 = 612 bytes once inflated: one more byte is a 413.
    exact = b"ifa\n" + b"x" * 607 + b"\n"
    assert len(exact) == 612
    with pytest.raises(UploadRejectedError, match="row 1: not 1-100"):
        parse_upload(gz_bytes(exact), max_rows=1)
    with pytest.raises(UploadRejectedError, match="too large once decompressed"):
        parse_upload(gz_bytes(exact + b"x"), max_rows=1)


def test_a_quoted_field_never_spans_two_lines() -> None:
    data = gzip.compress(b'ifa\nok\n"ab\ncd"\n')
    with pytest.raises(UploadRejectedError) as err:
        parse_upload(data)
    assert (err.value.status, err.value.message) == (400, "row 2: unexpected end of data")
