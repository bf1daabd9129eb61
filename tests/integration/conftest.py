from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Names
from worker.embedded import EmbeddedBroker
from worker.sandbox.server import SandboxThread


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def sandbox() -> Iterator[SandboxThread]:
    with SandboxThread() as s:
        yield s


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
