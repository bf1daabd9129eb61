"""The registry log's record format and claim resolution, without Kafka or a clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.registry_log import (
    ClaimRecord,
    ClaimReleased,
    IdRecord,
    IdRemoved,
    Known,
    Marker,
    Mine,
    NoClaim,
    Record,
    RegistryEntry,
    RegistryView,
    Retired,
    Theirs,
    claim_record,
    format_registry,
    id_record,
    marker_record,
    needs_renewal,
    parse_record,
    release_record,
    retired_record,
)

TTL = 300_000


def claim(name: str, worker: str, at_ms: int = 0, ttl_ms: int = TTL) -> ClaimRecord:
    return ClaimRecord(name, worker, at_ms, ttl_ms)


# -- record format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_value", "expected"),
    [
        (id_record("SEG", "s-1", "w1", 5), IdRecord("SEG", "s-1", "w1", 5)),
        (claim_record("SEG", "w1", 5, 100), ClaimRecord("SEG", "w1", 5, 100)),
        (release_record("SEG", "w1"), ClaimReleased("SEG", "w1")),
        (marker_record("w1", 5), Marker("w1")),
        (retired_record("SEG", "s-1", "w1", 5), Retired("SEG", "s-1")),
        ((b"id:SEG", None), IdRemoved("SEG")),
    ],
)
def test_records_round_trip_through_key_and_value(
    key_value: tuple[bytes, bytes | None], expected: Record
) -> None:
    assert parse_record(*key_value) == expected


def test_claim_keys_are_distinct_per_worker_so_compaction_keeps_both() -> None:
    assert claim_record("SEG", "w1", 0, 1)[0] == b"claim:SEG:w1"
    assert claim_record("SEG", "w1", 0, 1)[0] != claim_record("SEG", "w2", 0, 1)[0]


def test_worker_ids_may_contain_colons() -> None:
    assert parse_record(*claim_record("SEG", "host:1:abc", 0, 1)) == claim(
        "SEG", "host:1:abc", 0, 1
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (None, b"{}"),
        (b"other:SEG", b"{}"),
        (b"id:", b'{"segment_id":"s","worker":"w","at_ms":1}'),
        (b"id:SEG", b"not json"),
        (b"id:SEG", b"[1, 2]"),
        (b"id:SEG", b'{"worker":"w","at_ms":1}'),
        (b"claim:SEG", b'{"worker":"w","at_ms":1,"ttl_ms":1}'),
        (b"claim:SEG:w", b'{"worker":"w","at_ms":"soon","ttl_ms":1}'),
        (b"\xff\xfe", b"{}"),
    ],
)
def test_unknown_or_malformed_records_are_ignored(key: bytes | None, value: bytes) -> None:
    assert parse_record(key, value) is None


@pytest.mark.parametrize("name", ["", "A:B"])
def test_names_that_would_break_the_key_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="segment name"):
        claim_record(name, "w1", 0, 1)


# -- decisions ----------------------------------------------------------------------------------


def test_nobody_claimed_means_no_claim() -> None:
    assert RegistryView().decide("SEG", "w1", 0) == NoClaim()


def test_first_claim_in_log_order_wins_for_every_reader() -> None:
    view = RegistryView([claim("SEG", "w2", at_ms=10), claim("SEG", "w1", at_ms=0)])
    assert view.decide("SEG", "w2", 20) == Mine(10 + TTL)
    assert view.decide("SEG", "w1", 20) == Theirs("w2", 10 + TTL)
    assert view.decide("SEG", "w3", 20) == Theirs("w2", 10 + TTL)


def test_an_id_wins_over_any_claim() -> None:
    view = RegistryView([claim("SEG", "w1"), IdRecord("SEG", "s-1", "w2", 0)])
    assert view.decide("SEG", "w1", 1) == Known("s-1")


def test_expired_claim_hands_over_to_the_next_one() -> None:
    view = RegistryView([claim("SEG", "w1", at_ms=0, ttl_ms=100), claim("SEG", "w2", at_ms=50)])
    assert view.decide("SEG", "w2", 99) == Theirs("w1", 100)
    assert view.decide("SEG", "w2", 100) == Mine(50 + TTL)  # at_ms + ttl_ms == now: expired


def test_all_claims_expired_means_no_claim() -> None:
    view = RegistryView([claim("SEG", "w1", ttl_ms=10), claim("SEG", "w2", ttl_ms=10)])
    assert view.decide("SEG", "w1", 10) == NoClaim()


def test_released_claim_no_longer_counts() -> None:
    view = RegistryView([claim("SEG", "w1"), claim("SEG", "w2"), ClaimReleased("SEG", "w1")])
    assert view.decide("SEG", "w2", 1) == Mine(TTL)


def test_renewed_claim_moves_to_its_new_place_in_the_log() -> None:
    view = RegistryView([claim("SEG", "w1"), claim("SEG", "w2"), claim("SEG", "w1", at_ms=5)])
    assert [c.worker for c in view.claims("SEG")] == ["w2", "w1"]
    assert view.decide("SEG", "w1", 6) == Theirs("w2", TTL)


def test_claims_of_other_names_do_not_matter() -> None:
    view = RegistryView([claim("OTHER", "w2"), claim("SEG", "w1")])
    assert view.decide("SEG", "w1", 0) == Mine(TTL)


def test_last_id_record_wins_and_a_tombstone_forgets_it() -> None:
    view = RegistryView([IdRecord("SEG", "s-1", "w1", 0), IdRecord("SEG", "s-2", "w2", 1)])
    assert view.known() == {"SEG": "s-2"}
    view.apply(IdRemoved("SEG"))
    assert view.known() == {}


def test_a_retired_id_counts_as_absent_wherever_its_record_sits() -> None:
    before = RegistryView([Retired("SEG", "s-1"), IdRecord("SEG", "s-1", "w1", 0)])
    after = RegistryView([IdRecord("SEG", "s-1", "w1", 0), Retired("SEG", "s-1")])
    for view in (before, after):
        assert view.known() == {}
        assert view.get("SEG") is None
        assert view.decide("SEG", "w1", 0) == NoClaim()


def test_an_id_created_after_a_retirement_is_known() -> None:
    view = RegistryView([IdRecord("SEG", "s-1", "w1", 0), Retired("SEG", "s-1")])
    view.apply(IdRecord("SEG", "s-2", "w2", 1))
    view.apply(Retired("SEG", "s-1"))  # a late duplicate retirement does not erase it
    assert view.decide("SEG", "w1", 2) == Known("s-2")
    assert [e.segment_id for e in view.entries()] == ["s-2"]


def test_markers_change_nothing() -> None:
    view = RegistryView([claim("SEG", "w1"), Marker("w2")])
    assert view.decide("SEG", "w1", 0) == Mine(TTL)
    assert view.known() == {}


@pytest.mark.parametrize(
    ("expires_at_ms", "now_ms", "renew"),
    [(TTL, 0, False), (TTL, TTL // 2, False), (TTL, TTL // 2 + 1, True), (TTL, TTL, True)],
)
def test_a_winning_claim_is_renewed_when_less_than_half_its_ttl_is_left(
    expires_at_ms: int, now_ms: int, renew: bool
) -> None:
    assert needs_renewal(Mine(expires_at_ms), now_ms, TTL) is renew


# -- properties ---------------------------------------------------------------------------------

WORKERS = [f"w{i}" for i in range(5)]


def winners(view: RegistryView, readers: list[str]) -> set[str]:
    """The worker every reader believes creates SEG (Mine counts as the reader itself)."""
    out = set()
    for reader in readers:
        decision = view.decide("SEG", reader, 1)
        assert isinstance(decision, Mine | Theirs)
        out.add(reader if isinstance(decision, Mine) else decision.worker)
    return out


@given(st.permutations(WORKERS), st.integers(1, len(WORKERS)))
def test_any_interleaving_of_claims_gives_every_reader_the_same_winner(
    order: list[str], n: int
) -> None:
    log = [claim("SEG", w, at_ms=i) for i, w in enumerate(order[:n])]
    assert winners(RegistryView(log), WORKERS) == {order[0]}


@given(st.permutations(WORKERS))
def test_reading_up_to_ones_own_claim_is_enough_to_know_the_winner(order: list[str]) -> None:
    log = [claim("SEG", w, at_ms=i) for i, w in enumerate(order)]
    for i, me in enumerate(order):
        decision = RegistryView(log[: i + 1]).decide("SEG", me, 1)
        assert decision == (Mine(TTL) if i == 0 else Theirs(order[0], TTL))


ops = st.one_of(
    st.builds(claim, st.just("SEG"), st.sampled_from(WORKERS), st.integers(0, 10)),
    st.builds(ClaimReleased, st.just("SEG"), st.sampled_from(WORKERS)),
    st.builds(IdRecord, st.just("SEG"), st.sampled_from(["s-1", "s-2"]), st.just("w0"), st.just(0)),
    st.builds(IdRemoved, st.just("SEG")),
    st.builds(Retired, st.just("SEG"), st.sampled_from(["s-1", "s-2"])),
    st.builds(claim, st.just("OTHER"), st.sampled_from(WORKERS)),
)


def key_of(record: Record) -> tuple[str, ...]:
    match record:
        case ClaimRecord(name=n, worker=w) | ClaimReleased(name=n, worker=w):
            return ("claim", n, w)
        case IdRecord(name=n) | IdRemoved(name=n):
            return ("id", n)
        case Retired(name=n, segment_id=s):
            return ("retired", n, s)
        case Marker(worker=w):
            return ("marker", w)


def compact(log: list[Record], drop_tombstones: bool) -> list[Record]:
    """What log compaction may leave: the last record per key, in log order."""
    last = {key_of(r): i for i, r in enumerate(log)}
    kept = [r for i, r in enumerate(log) if last[key_of(r)] == i]
    if drop_tombstones:
        kept = [r for r in kept if not isinstance(r, ClaimReleased | IdRemoved)]
    return kept


@given(st.lists(ops, max_size=30), st.booleans(), st.integers(0, 400_000))
def test_readers_before_and_after_compaction_decide_alike(
    log: list[Record], drop_tombstones: bool, now_ms: int
) -> None:
    full, compacted = RegistryView(log), RegistryView(compact(log, drop_tombstones))
    assert full.known() == compacted.known()
    for me in WORKERS:
        assert full.decide("SEG", me, now_ms) == compacted.decide("SEG", me, now_ms)


# -- the table ----------------------------------------------------------------------------------


def test_registry_table_is_aligned_under_its_header() -> None:
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    rows = [RegistryEntry("A", "seg-1", "worker-long-name", at), RegistryEntry("BB", "s2", "w", at)]
    lines = format_registry(rows).splitlines()
    assert lines[0].split() == ["NAME", "SEGMENT", "ID", "WORKER", "REGISTERED", "AT", "(UTC)"]
    assert lines[1].split() == ["A", "seg-1", "worker-long-name", "2024-05-01", "12:00:00"]
    starts = {line.index("2024-05-01") for line in lines[1:]}
    assert len(starts) == 1
    assert lines[0].index("REGISTERED") == starts.pop()


def test_empty_registry_table_says_so() -> None:
    assert format_registry([]).splitlines()[-1] == "(no segments registered)"


def test_entry_time_comes_from_the_id_record() -> None:
    entry = RegistryEntry.from_record(IdRecord("A", "s", "w", 1_714_564_800_000))
    assert entry.at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
