"""Worker processes under churn: start, kill -9, SIGTERM, SIGSTOP/SIGCONT, and what their logs say.

Every process ever started stays in the fleet, so the checker can add up what each one reported.
Ownership is read from the ``progress`` events (PROGRESS_LOG_SECONDS=1): the latest one of a
worker lists the partitions it owns.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration.harness import WorkerProcess, wait_until

__all__ = ["Fleet", "Member"]

STOP_TIMEOUT_SECONDS = 60.0
GROUP_EVENTS = frozenset({"partitions_assigned", "partitions_revoked", "partitions_lost"})
# A cooperative rebalance runs in rounds; on Tansu each JoinGroup is held for half the 6 s session
# timeout, so a group whose members saw no callback for this long has no round under way.
QUIET_SECONDS = 5.0


@dataclass
class Member:
    name: str
    process: WorkerProcess
    state: str = "running"  # running | paused | stopping | killed
    exit_code: int | None = None

    def events(self) -> list[dict[str, Any]]:
        return self.process.events()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def started(self) -> bool:
        """Signal handlers are installed: SIGTERM now means a clean drain, not a plain exit."""
        return any(e.get("event") == "worker_started" for e in self.events())

    def last_group_event(self) -> datetime | None:
        """When the latest rebalance callback (assigned, revoked, lost) ran in this worker."""
        times = [e["timestamp"] for e in self.events() if e.get("event") in GROUP_EVENTS]
        return datetime.fromisoformat(times[-1]) if times else None

    def owned(self) -> set[int] | None:
        """Partitions of the latest progress report (None before the first one)."""
        reports = self.named("progress")
        return set(reports[-1]["partitions"]) if reports else None

    def consumed(self) -> int:
        """The last consumed count this process reported (0 if it never reported)."""
        counts = [e["consumed"] for e in self.events() if "consumed" in e]
        return counts[-1] if counts else 0


@dataclass
class Fleet:
    env: Mapping[str, str]
    log_dir: Path
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    members: list[Member] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    churning: bool = False  # starts count as joins once the churn began

    def start(self) -> Member:
        name = f"w{len(self.members) + 1}"
        member = Member(name, WorkerProcess(self.env, self.log_dir, name))
        self.members.append(member)
        if self.churning:
            self.actions["join"] += 1
        return member

    def live(self) -> list[Member]:
        """Running members (not paused, not being stopped, not dead)."""
        return [m for m in self.members if m.state == "running" and m.process.proc.poll() is None]

    def pick(self) -> Member:
        """A running worker, one that has started if there is one (a worker SIGTERMed while
        still importing exits like any Python process, with -15, before it could drain)."""
        live = self.live()
        return self.rng.choice([m for m in live if m.started()] or live)

    def kill(self, member: Member) -> None:
        member.process.kill()
        member.state, member.exit_code = "killed", member.process.proc.returncode
        self.actions["kill -9"] += 1

    def term(self, member: Member) -> None:
        """SIGTERM without waiting: the worker drains while the churn goes on."""
        member.process.proc.send_signal(signal.SIGTERM)
        member.state = "stopping"
        self.actions["SIGTERM"] += 1

    def pause(self, member: Member) -> None:
        member.process.proc.send_signal(signal.SIGSTOP)
        member.state = "paused"
        self.actions["SIGSTOP"] += 1

    def resume(self, member: Member) -> None:
        member.process.proc.send_signal(signal.SIGCONT)
        member.state = "running"

    def stop_all(self) -> None:
        """SIGTERM every process still alive, once (a second SIGTERM that lands after the drain,
        when the loop's handler is gone, ends the process with -15), and collect exit codes."""
        for m in self.members:
            if m.state == "paused":
                self.resume(m)
            if m.state == "running" and m.process.proc.poll() is None:
                wait_until(
                    lambda m=m: m.started() or m.process.proc.poll() is not None,
                    STOP_TIMEOUT_SECONDS,
                    f"{m.name} starts",
                )
                m.process.proc.send_signal(signal.SIGTERM)
                m.state = "stopping"
        for m in self.members:
            if m.state == "stopping":
                m.exit_code = m.process.proc.wait(STOP_TIMEOUT_SECONDS)
                m.process.stop()  # closes the log; the process is gone, nothing is sent
                m.state = "stopped"

    def kill_all(self) -> None:
        """Last resort after a failure: nothing may outlive the scenario; every log is closed."""
        for m in self.members:
            if m.process.proc.poll() is None:
                m.process.proc.send_signal(signal.SIGCONT)
            m.process.kill()

    def assert_none_crashed(self) -> None:
        """No process exited on its own with a failure (killed ones do not count)."""
        crashed = [
            f"{m.name}: {m.process.proc.poll()}"
            for m in self.members
            if m.state != "killed" and m.process.proc.poll() not in (None, 0)
        ]
        assert not crashed, f"workers exited on their own: {crashed}"

    def killed_any(self) -> bool:
        return self.actions["kill -9"] > 0 or self.actions["SIGSTOP"] > 0

    def stable(self, partitions: int) -> bool:
        """No rebalance under way, as far as the logs tell: every running worker owns a balanced
        share, together they own each partition once, and no callback ran for QUIET_SECONDS."""
        live = self.live()
        if not live:
            return False
        owned = [m.owned() or set() for m in live]
        sizes = [len(o) for o in owned]
        if sum(sizes) != partitions or set().union(*owned) != set(range(partitions)):
            return False
        if max(sizes) - min(sizes) > 1:
            return False
        last = max((t for m in live if (t := m.last_group_event()) is not None), default=None)
        return last is not None and (datetime.now(UTC) - last).total_seconds() > QUIET_SECONDS

    def owners(self, members: list[Member]) -> set[int]:
        out: set[int] = set()
        for m in members:
            out |= m.owned() or set()
        return out
