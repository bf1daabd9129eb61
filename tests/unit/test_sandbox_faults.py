"""Fault configuration and the per-request fault decision (worker.sandbox.faults)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from worker.sandbox.faults import FaultAction, FaultConfig, FaultInjector, FaultRule


def injector(*rules: dict[str, Any], seed: int = 0) -> FaultInjector:
    config = FaultConfig.model_validate({"rules": list(rules)})
    return FaultInjector(config, seed=seed)


@pytest.mark.parametrize(
    ("match", "route", "segment", "hit"),
    [
        ({}, "session", None, True),
        ({"route": "upload"}, "upload", "VIP", True),
        ({"route": "upload"}, "segment", "VIP", False),
        ({"segment_name": "VIP"}, "segment", "VIP", True),
        ({"segment_name": "VIP"}, "upload", "OTHER", False),
        ({"segment_name": "VIP"}, "session", None, False),
        ({"route": "upload", "segment_name": "VIP"}, "upload", "VIP", True),
        ({"route": "upload", "segment_name": "VIP"}, "segment", "VIP", False),
    ],
)
def test_rule_matching(match: dict[str, str], route: Any, segment: str | None, hit: bool):
    action = injector({"match": match, "status": 500}).decide(route, segment)
    assert (action is not None) == hit


def test_count_limits_a_rule_to_the_next_n_matching_requests():
    faults = injector({"match": {"route": "upload"}, "status": 503, "count": 2})
    assert faults.decide("segment") is None  # not matching: does not use up the count
    statuses = [a.status if a else None for a in (faults.decide("upload") for _ in range(4))]
    assert statuses == [503, 503, None, None]
    assert faults.remaining() == {0: 0}


def test_the_first_firing_rule_decides():
    faults = injector(
        {"match": {"route": "upload"}, "status": 429, "retry_after": 7, "count": 1},
        {"status": 500},
    )
    assert faults.decide("upload") == FaultAction(status=429, retry_after=7)
    assert faults.decide("upload") == FaultAction(status=500)


def test_rate_is_reproducible_for_a_seed_and_near_its_value():
    def run(seed: int) -> list[bool]:
        faults = injector({"status": 500, "rate": 0.3}, seed=seed)
        return [faults.decide("upload") is not None for _ in range(2000)]

    first = run(42)
    assert first == run(42)
    assert first != run(43)
    assert 500 < sum(first) < 700


def test_rate_zero_never_fires_and_latency_only_rules_pass_through():
    assert injector({"status": 500, "rate": 0.0}).decide("upload") is None
    assert injector({"latency_ms": 50}).decide("upload") == FaultAction(latency_ms=50)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({}, "at least one of status, hang or latency_ms"),
        ({"status": 200}, "greater than or equal to 400"),
        ({"status": 503, "rate": 1.5}, "less than or equal to 1"),
        ({"status": 503, "hang": True}, "cannot both hang"),
        ({"latency_ms": 5, "retry_after": 3}, "retry_after needs a status"),
        ({"status": 503, "count": 0}, "greater than or equal to 1"),
        ({"status": 503, "match": {"route": "bidder"}}, "route"),
        ({"status": 503, "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, Any], message: str):
    with pytest.raises(ValidationError, match=message):
        FaultRule.model_validate(rule)


def test_config_defaults_match_the_contract_limits():
    config = FaultConfig()
    assert (config.max_rows, config.max_bytes) == (100_000, 10_485_760)
    assert (config.session_ttl_seconds, config.max_live_sessions_per_key) == (86400.0, 5)
    assert config.revoke_sessions_every_seconds is None
    assert FaultConfig.model_validate(config.model_dump(mode="json")) == config
