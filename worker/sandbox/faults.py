"""Fault injection: the configuration model and the pure decision of which fault hits a request.

A `FaultConfig` is what ``PUT /_sandbox/faults`` takes (JSON, validated here) and what
``GET /_sandbox/faults`` returns. It holds the session and file limits of the simulated account and
an ordered list of `FaultRule`::

    {"rules": [{"match": {"route": "upload", "segment_name": "VIP"},
                "status": 503, "rate": 1.0, "count": 2}],
     "session_ttl_seconds": 86400, "revoke_sessions_every_seconds": null,
     "max_rows": 100000, "max_bytes": 10485760, "max_live_sessions_per_key": 5}

`FaultInjector.decide` walks the rules in order. A rule *matches* a request when every field of
its ``match`` is equal (an absent field matches anything; ``segment_name`` never matches a session
request). A matching rule with a ``count`` uses up one of its ``count`` requests whether or not it
fires: it applies to the next ``count`` matching requests, then never again. It *fires* with
probability ``rate``, drawn from a ``random.Random`` seeded at construction, so a test that sends
the same requests sees the same faults. The first rule that fires decides; later rules are not
consulted. The resulting `FaultAction` is carried out by the app: wait ``latency_ms``, then either
hang (never answer), answer ``status`` (with ``Retry-After`` when ``retry_after`` is set), or go on
normally. Pure code: no clock, no I/O.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.sandbox.csvfile import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS

__all__ = ["FaultAction", "FaultConfig", "FaultInjector", "FaultMatch", "FaultRule", "Route"]

Route = Literal["session", "segment", "upload"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FaultMatch(_Strict):
    """Which requests a rule applies to; every field left out matches anything."""

    route: Route | None = None
    segment_name: str | None = None

    def matches(self, route: Route, segment_name: str | None) -> bool:
        if self.route is not None and self.route != route:
            return False
        return self.segment_name is None or self.segment_name == segment_name


class FaultRule(_Strict):
    """One fault: what it matches, what it does, how often and how many times."""

    match: FaultMatch = FaultMatch()
    status: int | None = Field(default=None, ge=400, le=599)
    retry_after: int | None = Field(default=None, ge=0, le=86400)
    message: str | None = Field(default=None, max_length=500)
    latency_ms: int = Field(default=0, ge=0, le=300_000)
    hang: bool = False
    rate: float = Field(default=1.0, ge=0.0, le=1.0)
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _does_something(self) -> FaultRule:
        if self.status is None and not self.hang and self.latency_ms == 0:
            raise ValueError("a rule needs at least one of status, hang or latency_ms")
        if self.hang and self.status is not None:
            raise ValueError("a rule cannot both hang and answer a status")
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after needs a status")
        return self


class FaultConfig(_Strict):
    """The whole fault and limit configuration of the sandbox (replaced as one value)."""

    rules: tuple[FaultRule, ...] = ()
    session_ttl_seconds: float = Field(default=86400.0, gt=0)
    revoke_sessions_every_seconds: float | None = Field(default=None, gt=0)
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1)
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)
    max_live_sessions_per_key: int = Field(default=5, ge=1)
    # IDs that pass every format check but that InMobi refuses: a file holding one gets a 400
    # naming its row, so tests can reproduce "a file with one invalid ID".
    reject_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultAction:
    """What the app does to one request: delay, then hang, fail, or carry on."""

    latency_ms: int = 0
    hang: bool = False
    status: int | None = None
    retry_after: int | None = None
    message: str | None = None

    @classmethod
    def of(cls, rule: FaultRule) -> FaultAction:
        return cls(rule.latency_ms, rule.hang, rule.status, rule.retry_after, rule.message)


class FaultInjector:
    """Decides, request by request, which configured fault applies (if any)."""

    def __init__(self, config: FaultConfig, *, seed: int) -> None:
        self.config = config
        self._random = random.Random(seed)
        # Requests each counted rule may still apply to, by rule index.
        self._remaining: dict[int, int] = {
            i: rule.count for i, rule in enumerate(config.rules) if rule.count is not None
        }

    def decide(self, route: Route, segment_name: str | None = None) -> FaultAction | None:
        """The fault for this request, or None to handle it normally."""
        for index, rule in enumerate(self.config.rules):
            if not rule.match.matches(route, segment_name) or not self._take(index):
                continue
            if self._fires(rule.rate):
                return FaultAction.of(rule)
        return None

    def remaining(self) -> dict[int, int]:
        """Requests left for each rule with a ``count`` (rule index to count)."""
        return dict(self._remaining)

    def _take(self, index: int) -> bool:
        left = self._remaining.get(index)
        if left is None:
            return True
        if left == 0:
            return False
        self._remaining[index] = left - 1
        return True

    def _fires(self, rate: float) -> bool:
        if rate >= 1.0:
            return True
        return rate > 0.0 and self._random.random() < rate
