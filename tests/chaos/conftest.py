"""The integration fixtures, shared: one embedded broker per session, a fresh sandbox per test.

Topic, DLQ, group and registry names are fresh per scenario (`tests.integration.harness.Names`):
the broker keeps everything in memory, and a group whose member died uncleanly can stall the next
join on it (shared BROKER.md).
"""

from tests.integration.conftest import broker, sandbox

__all__ = ["broker", "sandbox"]
