"""The sandbox's pure state: sessions, segments, uploads, lookups (worker.sandbox.state/sessions)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from worker.sandbox.sessions import (
    Account,
    CredentialsError,
    SessionPolicy,
    SessionRejectedError,
)
from worker.sandbox.state import SandboxState

SECRET = "s3cret-key"
ACCOUNT = Account("user", "acct-1", SecretStr(SECRET))
POLICY = SessionPolicy(ttl_seconds=100.0, max_live_per_key=3)
T0 = 1_000.0


def new_state(**kwargs: int) -> SandboxState:
    return SandboxState([ACCOUNT], **kwargs)


def generate(state: SandboxState, now: float = T0, policy: SessionPolicy = POLICY) -> str:
    session = state.generate_session(
        username="user", secret_key=SECRET, account_id=None, now=now, policy=policy
    )
    return session.session_id


def check(
    state: SandboxState, sid: str, now: float = T0, policy: SessionPolicy = POLICY, **kw: str
):
    headers = {"account_id": "acct-1", "secret_key": SECRET} | kw
    return state.check_session(session_id=sid, now=now, policy=policy, **headers)


# Sessions


@pytest.mark.parametrize(
    ("username", "secret", "account_id", "code"),
    [
        (None, SECRET, None, 1001),
        ("user", None, None, 1001),
        ("user", "wrong", None, 1002),
        ("nobody", SECRET, None, 1002),
        ("user", SECRET, "acct-2", 1003),
    ],
)
def test_bad_credentials_are_refused_with_a_code(username, secret, account_id, code):
    state = new_state()
    with pytest.raises(CredentialsError) as caught:
        state.generate_session(
            username=username, secret_key=secret, account_id=account_id, now=T0, policy=POLICY
        )
    assert caught.value.code == code
    assert SECRET not in caught.value.message
    assert state.sessions.generated == 0


def test_a_generated_session_checks_out_with_matching_headers():
    state = new_state()
    session = check(state, generate(state))
    assert (session.account_id, session.expires_at) == ("acct-1", T0 + 100.0)


@pytest.mark.parametrize(
    ("session_id", "headers", "reason"),
    [
        (None, {}, "sessionId header missing"),
        ("nope", {}, "unknown session"),
        ("SID", {"secret_key": "wrong"}, "does not match"),
        ("SID", {"account_id": "acct-2"}, "does not match"),
    ],
)
def test_session_check_failures_say_why(session_id, headers, reason):
    state = new_state()
    sid = generate(state)
    with pytest.raises(SessionRejectedError, match=reason):
        check(state, sid if session_id == "SID" else session_id, **headers)


def test_a_session_expires_after_its_ttl():
    state = new_state()
    sid = generate(state)
    check(state, sid, now=T0 + 99.9)
    with pytest.raises(SessionRejectedError, match="session expired"):
        check(state, sid, now=T0 + 100.0)


def test_generating_past_the_live_limit_revokes_the_oldest():
    state = new_state()
    sids = [generate(state, now=T0 + i) for i in range(4)]
    with pytest.raises(SessionRejectedError, match="session revoked"):
        check(state, sids[0], now=T0 + 5)
    for sid in sids[1:]:
        check(state, sid, now=T0 + 5)
    assert state.sessions.live_count(T0 + 5, POLICY) == 3


def test_periodic_revocation_kills_sessions_of_an_earlier_epoch():
    policy = SessionPolicy(ttl_seconds=1e6, revoke_every_seconds=60.0, revoke_origin=T0)
    state = new_state()
    early = generate(state, now=T0 - 30, policy=policy)  # before the origin: epoch 0
    first = generate(state, now=T0 + 10, policy=policy)
    check(state, early, now=T0 + 59, policy=policy)
    second = generate(state, now=T0 + 61, policy=policy)
    for sid in (early, first):
        with pytest.raises(SessionRejectedError, match="session revoked"):
            check(state, sid, now=T0 + 61, policy=policy)
    check(state, second, now=T0 + 119, policy=policy)


def test_revoke_all_counts_only_fresh_revocations():
    state = new_state()
    generate(state)
    generate(state)
    assert state.sessions.revoke_all() == 2
    assert state.sessions.revoke_all() == 0
    assert state.sessions.live_count(T0, POLICY) == 0


# Segments and uploads


def test_creating_a_name_twice_gives_two_segments():
    state = new_state()
    one = state.create_segment(name="VIP", property_id="p", membership_ttl_days=30, now=T0)
    two = state.create_segment(name="VIP", property_id="p", membership_ttl_days=30, now=T0)
    assert one.id != two.id
    assert [s.name for s in state.segments.values()] == ["VIP", "VIP"]


def test_ids_are_reproducible_from_the_seed_and_after_reset():
    first, second = new_state(seed=7), new_state(seed=7)
    ids = [first.create_segment(name="A", property_id="p", membership_ttl_days=1, now=0).id]
    assert (
        ids[0] == second.create_segment(name="A", property_id="p", membership_ttl_days=1, now=0).id
    )
    first.reset()
    assert first.segments == {}
    assert (
        first.create_segment(name="A", property_id="p", membership_ttl_days=1, now=0).id == ids[0]
    )


def test_upload_counters_and_log():
    state = new_state()
    seg = state.create_segment(name="VIP", property_id="p", membership_ttl_days=30, now=T0)
    state.apply_upload(
        seg.id, action="add", column="ifa", ids=["a", "b", "a"], compressed_bytes=9, now=T0
    )
    record = state.apply_upload(
        seg.id, action="remove", column="ifa", ids=["a", "z"], compressed_bytes=5, now=T0 + 1
    )
    summary = seg.summary()
    assert (summary["adds"], summary["removes"], summary["uploads"]) == (3, 2, 2)
    assert summary["members_by_column"] == {"ida": 0, "gpId": 0, "ifa": 1}
    assert (record.rows, record.status, record.compressed_bytes) == (2, 200, 5)
    assert [r.action for r in state.upload_log] == ["add", "remove"]


def test_segment_names_of_looks_in_every_column_and_names_each_segment_once():
    state = new_state()
    vip = state.create_segment(name="VIP", property_id="p", membership_ttl_days=1, now=1)
    old = state.create_segment(name="OLD", property_id="p", membership_ttl_days=1, now=0)
    vip_again = state.create_segment(name="VIP", property_id="p", membership_ttl_days=1, now=2)
    for seg, column in ((vip, "ida"), (old, "ifa"), (vip_again, "gpId")):
        state.apply_upload(
            seg.id, action="add", column=column, ids=["d"], compressed_bytes=0, now=0
        )
    assert state.segment_names_of("d") == ["OLD", "VIP"]
    assert state.segment_names_of("unknown") == []


def test_upload_log_is_bounded():
    state = new_state(upload_log_size=3)
    seg = state.create_segment(name="VIP", property_id="p", membership_ttl_days=30, now=T0)
    for i in range(5):
        state.apply_upload(
            seg.id, action="add", column="ifa", ids=[str(i)], compressed_bytes=1, now=i
        )
    assert [r.time for r in state.upload_log] == [2, 3, 4]


def test_snapshot_is_json_and_counts_requests_by_route_and_status():
    state = new_state()
    generate(state)
    state.count_request("upload", 200)
    state.count_request("upload", 200)
    state.count_request("upload", 429)
    snapshot = json.loads(json.dumps(state.snapshot(T0, POLICY)))
    assert snapshot["requests"] == {"upload": {"200": 2, "429": 1}}
    assert (snapshot["sessions_generated"], snapshot["live_sessions"]) == (1, 1)
    assert SECRET not in json.dumps(snapshot)


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove"]),
        st.integers(0, 2),
        st.sampled_from(["ida", "ifa"]),
        st.lists(st.sampled_from("abcdef"), max_size=6),
    ),
    max_size=25,
)


@given(ops)
def test_uploads_apply_set_algebra_and_keep_the_lookup_index_in_step(operations):
    state = new_state()
    segs = [
        state.create_segment(name=f"S{i}", property_id="p", membership_ttl_days=1, now=i)
        for i in range(3)
    ]
    model: dict[tuple[int, str], set[str]] = {
        (i, c): set() for i in range(3) for c in ("ida", "ifa")
    }
    for action, index, column, ids in operations:
        state.apply_upload(
            segs[index].id, action=action, column=column, ids=ids, compressed_bytes=0, now=0
        )
        model[(index, column)] = (
            model[(index, column)] | set(ids)
            if action == "add"
            else model[(index, column)] - set(ids)
        )
    for (index, column), expected in model.items():
        assert segs[index].members[column] == expected
        assert state.members_of(segs[index].id)["members"][column] == sorted(expected)
    for column in ("ida", "ifa"):
        for device in "abcdef":
            holders = [segs[i].id for i in range(3) if device in model[(i, column)]]
            assert [s.id for s in state.segments_of(column, device)] == holders
