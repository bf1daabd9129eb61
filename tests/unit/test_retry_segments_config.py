"""Retry schedule, segment modes and SEGMENTS_FILE parsing, settings validation."""

from __future__ import annotations

import pytest

from worker.config import load_settings, require_for_run
from worker.errors import ConfigError
from worker.model import Op
from worker.retry import RetryPolicy
from worker.segments import Mode, parse_segments_document


@pytest.mark.parametrize(
    ("attempt", "jitter", "retry_after", "expected"),
    [
        (0, 0.5, None, 0.25),
        (3, 1.0, None, 4.0),
        (20, 1.0, None, 30.0),
        (0, 0.0, 7.0, 7.0),
        (5, 0.99, 1.0, 15.84),
    ],
)
def test_full_jitter_capped_and_retry_after_is_a_floor(
    attempt: int, jitter: float, retry_after: float | None, expected: float
) -> None:
    assert RetryPolicy().delay(attempt, jitter, retry_after) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("mode", "op", "accepted"),
    [
        (Mode.MIRROR, Op.ADD, True),
        (Mode.MIRROR, Op.REMOVE, True),
        (Mode.ADD, Op.ADD, True),
        (Mode.ADD, Op.REMOVE, False),
        (Mode.REMOVE, Op.ADD, False),
        (Mode.REMOVE, Op.REMOVE, True),
    ],
)
def test_modes_accept_their_ops(mode: Mode, op: Op, accepted: bool) -> None:
    assert mode.accepts(op) is accepted


def test_segments_file_maps_names_and_applies_defaults() -> None:
    cat = parse_segments_document(
        {
            "defaults": {"mode": "add", "membership_ttl_days": 7},
            "segments": {
                "high_value users": {"inmobi_segment_id": "abc"},
                "CHURN": {"mode": "remove"},
            },
        }
    )
    assert cat.get("HIGH_VALUE_USERS").inmobi_segment_id == "abc"
    assert cat.get("HIGH_VALUE_USERS").mode is Mode.ADD
    assert cat.get("CHURN").mode is Mode.REMOVE
    assert cat.get("OTHER").membership_ttl_days == 7


def test_segments_file_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        parse_segments_document({"segments": {"A": {"mode": "upsert", "membership_ttl_days": 0}}})
    assert len(err.value.problems) == 2
    assert all(p.startswith("SEGMENTS_FILE:") for p in err.value.problems)


def test_bad_settings_fail_with_one_line_per_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUSH_MAX_IDS", "zero")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    monkeypatch.setenv("KAFKA_CONSUMER_OVERRIDES", "[1]")
    with pytest.raises(ConfigError) as err:
        load_settings()
    names = sorted(p.split(":")[0] for p in err.value.problems)
    assert names == ["FLUSH_MAX_IDS", "KAFKA_CONSUMER_OVERRIDES", "LOG_FORMAT"]


def test_run_requires_inmobi_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INMOBI_USERNAME", "INMOBI_ACCOUNT_ID", "INMOBI_API_KEY", "INMOBI_PROPERTY_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INMOBI_USERNAME", "u")
    with pytest.raises(ConfigError) as err:
        require_for_run(load_settings())
    assert [p.split(":")[0] for p in err.value.problems] == [
        "INMOBI_ACCOUNT_ID",
        "INMOBI_API_KEY",
        "INMOBI_PROPERTY_ID",
    ]


def test_api_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INMOBI_API_KEY", "s3cr3t-value")
    s = load_settings()
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in str(s.model_dump(mode="json"))
