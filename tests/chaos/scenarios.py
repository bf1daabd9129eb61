"""The chaos scenarios and their sizes per tier.

A scenario is a churn kind (what happens to the workers and the sandbox, `tests.chaos.churn`) on
a workload (the event stream). The ``ci`` tier keeps each scenario to about half a minute on a
2-core machine; the ``full`` tier publishes 200k+ events over 12 partitions with a longer churn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SEGMENTS", "Scenario", "Tier", "Workload", "scenarios"]

Tier = Literal["ci", "full"]
SEGMENTS = ("alpha", "beta users", "GAMMA", "delta-2024", "epsilon")

# Faults of scenario (e): failures, throttling, slowness and lost sessions, all at once.
SANDBOX_FAULTS: dict[str, Any] = {
    "rules": [
        {"match": {"route": "upload"}, "status": 503, "rate": 0.25},
        {"match": {"route": "upload"}, "status": 429, "retry_after": 1, "rate": 0.1},
        {"match": {"route": "upload"}, "latency_ms": 300, "rate": 0.3},
        {"match": {"route": "session"}, "status": 500, "rate": 0.2},
    ],
    "revoke_sessions_every_seconds": 3,
}


@dataclass(frozen=True)
class Workload:
    events: int
    partitions: int
    devices: int
    publish_seconds: float  # the stream is paced over this long, overlapping the churn
    bad_share: float = 0.01
    seed: int = 7


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    churn: str  # a key of tests.chaos.churn.CHURNS
    workload: Workload
    workers: int = 3  # running when the churn starts (kept running by bounce churns)
    rounds: int = 3  # churn steps
    period: float = 3.0  # seconds between churn steps
    faults: dict[str, Any] = field(default_factory=dict)  # sandbox faults during the churn
    rejected_ids: int = 0  # device IDs the sandbox refuses (their rows go to the DLQ)
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Only clean stops (SIGTERM, leaving the group): duplicates must be zero."""
        return self.churn in {"sigterm", "join_leave"}


def _workload(tier: Tier, **overrides: Any) -> Workload:
    if tier == "ci":
        base = Workload(events=15_000, partitions=6, devices=3_000, publish_seconds=12)
    else:
        base = Workload(events=200_000, partitions=12, devices=40_000, publish_seconds=60)
    return Workload(**{**base.__dict__, **overrides})


def scenarios(tier: Tier) -> list[Scenario]:
    """The six scenarios (a)-(f) at the size of `tier`."""
    rounds, period = (3, 3.0) if tier == "ci" else (15, 4.0)
    common: dict[str, Any] = {"rounds": rounds, "period": period}
    return [
        Scenario(
            "kill9",
            "(a) kill -9 of a worker every few seconds, 3 workers",
            "kill9",
            _workload(tier),
            **common,
        ),
        Scenario("sigterm", "(b) SIGTERM bounces, 3 workers", "sigterm", _workload(tier), **common),
        Scenario(
            "join_leave",
            "(c) workers joining and leaving",
            "join_leave",
            _workload(tier),
            workers=2,
            **common,
        ),
        Scenario(
            "pause",
            "(d) SIGSTOP past the session timeout while its uploads are held",
            "pause",
            # The stream goes on while the worker is stopped; the pause outlasts the request
            # timeout, so the resumed worker's held upload times out and is tried again.
            _workload(tier, publish_seconds=_workload(tier).publish_seconds * 2),
            workers=1,
            rounds=1,
            env={"INMOBI_REQUEST_TIMEOUT_SECONDS": 4},
        ),
        Scenario(
            "faults",
            "(e) sandbox faults during kill -9 and SIGTERM bounces",
            "faults",
            _workload(tier),
            faults=SANDBOX_FAULTS,
            env={"REVOKE_TIMEOUT_SECONDS": 10},
            **common,
        ),
        Scenario(
            "poison",
            "(f) poison records and refused IDs during kill -9 bounces",
            "kill9",
            _workload(tier, bad_share=0.2),
            rejected_ids=3,
            **common,
        ),
    ]
