"""The result of a scenario, as a row of the README table.

Columns: scenario, events published, faults injected (what the churn did, HTTP errors the sandbox
answered, held segments, poison records, refused IDs), duplicates (exact after clean stops,
otherwise a lower bound "≥ n"), lag after heal (from the later of the last fault and the end of
publishing until the group's commits reached the end offsets), result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.churn import ChaosContext
from tests.chaos.scenarios import SEGMENTS, Scenario
from worker.generator import GeneratedRecord

__all__ = ["HEADER", "Result", "faults_text", "table"]

HEADER = (
    "| scenario | events | faults injected | duplicates | lag after heal (s) | result |\n"
    "|---|---:|---|---:|---:|---|"
)


@dataclass
class Result:
    scenario: Scenario
    events: int
    faults: str = ""
    duplicates: str = "-"
    lag_seconds: float | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    log_dir: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.problems

    def row(self) -> str:
        lag = "-" if self.lag_seconds is None else f"{self.lag_seconds:.1f}"
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"| {self.scenario.title} | {self.events:,} | {self.faults} | {self.duplicates} "
            f"| {lag} | {verdict} |"
        )


def table(results: Sequence[Result]) -> str:
    return "\n".join([HEADER, *(r.row() for r in results)])


def faults_text(ctx: ChaosContext, records: list[GeneratedRecord], refused: set[str]) -> str:
    parts = [f"{n}× {what}" for what, n in sorted(ctx.fleet.actions.items())]
    try:
        requests = ctx.sandbox("state")["requests"]
    except OSError:
        requests = {}
    errors = {
        f"{route} {status}": n
        for route, by_status in requests.items()
        for status, n in by_status.items()
        if int(status) >= 400
    }
    if errors:
        parts.append(f"{sum(errors.values())} HTTP errors")
        ctx.evidence.append(f"sandbox errors (route status: count): {errors}")
    if ctx.scenario.churn == "pause":
        parts.append(f"{len(SEGMENTS)} held segments")
    parts.append(f"{sum(r.bad for r in records)} poison records")
    if refused:
        parts.append(f"{len(refused)} refused IDs")
    return ", ".join(parts)
