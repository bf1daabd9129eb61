"""Issue 4 acceptance, ci tier: every chaos scenario ends with membership equal to the model.

Each scenario runs a real broker, real `inmobi-sync run` processes and the sandbox, churns them
(kill -9, SIGTERM, joins and leaves, SIGSTOP during a held upload, sandbox faults, poison
records), heals, and then passes the one checker (`tests.chaos.checker`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.runner import run_scenario
from tests.chaos.scenarios import Scenario, scenarios
from worker.embedded import EmbeddedBroker
from worker.sandbox.server import SandboxThread

pytestmark = pytest.mark.chaos


@pytest.mark.parametrize("scenario", scenarios("ci"), ids=lambda s: s.name)
def test_scenario_ends_with_membership_equal_to_the_model(
    scenario: Scenario, broker: EmbeddedBroker, sandbox: SandboxThread, tmp_path: Path
) -> None:
    result = run_scenario(scenario, broker.bootstrap, sandbox.url, tmp_path)
    print(result.row())
    for line in result.evidence:
        print("  ", line)
    assert result.passed, "\n".join([*result.problems, f"logs: {tmp_path}"])
