"""What happens to the workers and the sandbox during a scenario: one schedule per churn kind.

A schedule paces its steps with the scenario's ``period`` (the only sleeps of the suite: they
are the fault schedule, never a wait for an outcome); whatever must have happened before the next
step is waited for as a condition with a deadline. Each step records when it happened, so the
runner can measure the lag after the last fault.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.chaos.fleet import Fleet, Member
from tests.chaos.scenarios import SEGMENTS, Scenario
from tests.integration.harness import http_json, wait_until
from worker.generator import ExpectedChange, GeneratedRecord, encode_json
from worker.kafka import EventProducer
from worker.model import IdType, Op
from worker.naming import inmobi_segment_name

__all__ = ["CHURNS", "ChaosContext"]

# Tansu holds JoinGroup for session.timeout.ms / 2 and replaces a dead member about
# session.timeout.ms + 3 s after it stopped heartbeating (shared BROKER.md): 6 s sessions here.
REASSIGN_TIMEOUT_SECONDS = 60.0


@dataclass
class ChaosContext:
    scenario: Scenario
    fleet: Fleet
    sandbox_url: str
    partitions: int
    baseline_faults: dict[str, Any]
    records: list[GeneratedRecord]  # the whole stream in publish order (a churn may add some)
    bootstrap: str = ""
    topic: str = ""
    extra_end_offsets: dict[int, int] = field(default_factory=dict)
    last_fault_at: float = field(default_factory=time.monotonic)
    evidence: list[str] = field(default_factory=list)  # what the schedule observed
    problems: list[str] = field(default_factory=list)  # scenario-specific failures
    # checks of the whole logs, run once every worker has stopped
    after_stop: list[Callable[[], None]] = field(default_factory=list)

    def mark(self) -> None:
        self.last_fault_at = time.monotonic()

    def sandbox(self, path: str, method: str = "GET", body: Any = None) -> Any:
        return http_json(f"{self.sandbox_url}/_sandbox/{path}", method, body)

    def publish_now(self, records: list[GeneratedRecord]) -> None:
        """Publish records outside the paced stream (and wait until the broker has them)."""
        producer = EventProducer({"bootstrap.servers": self.bootstrap, "acks": "all"}, self.topic)
        for r in records:
            producer.send(r.key, r.value)
        assert producer.flush(30) == 0 and not producer.failed, "extra records not delivered"
        for p, end in producer.end_offsets.items():
            self.extra_end_offsets[p] = max(end, self.extra_end_offsets.get(p, 0))
        self.records += records

    def settle(self) -> None:
        """Wait until no rebalance is under way. Tansu 0.6.0 wedges a group for good when its
        leader leaves (SIGTERM: LeaveGroup) while a rebalance is in progress: every later
        generation names the departed leader, whose SyncGroup never comes, so every member's
        SyncGroup fails with REBALANCE_IN_PROGRESS. Apache Kafka elects a new leader. So a clean
        leave is only ever sent to a stable group (a kill -9 sends nothing and is not held back)."""
        wait_until(
            lambda: self.fleet.stable(self.partitions),
            REASSIGN_TIMEOUT_SECONDS,
            "the group is stable before a worker leaves",
            interval=0.5,
        )

    def pace(self) -> None:
        time.sleep(self.scenario.period)  # the churn schedule's pacing
        self.fleet.assert_none_crashed()


def _bounce(ctx: ChaosContext, how: Callable[[int], str]) -> None:
    """Every period stop one running worker (kill -9 or SIGTERM) and start a replacement."""
    for step in range(ctx.scenario.rounds):
        ctx.pace()
        if how(step) == "kill":
            ctx.fleet.kill(ctx.fleet.pick())
        else:
            ctx.settle()
            ctx.fleet.term(ctx.fleet.pick())
        ctx.fleet.start()
        ctx.mark()


def kill9(ctx: ChaosContext) -> None:
    _bounce(ctx, lambda _step: "kill")


def sigterm(ctx: ChaosContext) -> None:
    _bounce(ctx, lambda _step: "term")


def join_leave(ctx: ChaosContext) -> None:
    """Alternate a worker joining and one leaving (SIGTERM), between 1 and 4 workers."""
    for step in range(ctx.scenario.rounds):
        ctx.pace()
        live = ctx.fleet.live()
        if len(live) <= 1 or (step % 2 == 0 and len(live) < 4):
            ctx.fleet.start()
        else:
            ctx.settle()
            ctx.fleet.term(ctx.fleet.pick())
        ctx.mark()


def faults(ctx: ChaosContext) -> None:
    """Sandbox faults on for the whole churn, during alternating kill -9 and SIGTERM bounces."""
    ctx.sandbox("faults", "PUT", ctx.baseline_faults | ctx.scenario.faults)
    ctx.mark()
    _bounce(ctx, lambda step: "kill" if step % 2 == 0 else "term")


def _held(ctx: ChaosContext) -> int:
    return int(ctx.sandbox("state")["held"])


def pause(ctx: ChaosContext) -> None:
    """SIGSTOP the only worker while the sandbox holds its uploads; two new workers take over.

    1. The sandbox holds every segment: each upload is read whole, then waits. Once one upload
       per segment waits, the worker has nothing half-sent (uploads of a segment go one at a
       time), and the ADDs of the flip devices are published.
    2. SIGSTOP that worker (longer than its session timeout and its request timeout); two new
       workers join; once its session timed out they own every partition, re-read from its last
       commit, and their uploads wait too.
    3. Release: the sandbox applies the held uploads in arrival order, the stopped worker's first.
    4. SIGCONT: its held uploads time out and it is fenced: it must neither commit for the lost
       partitions nor upload their rows again (a retry is a new request), and the final
       membership must still equal the model.
    """
    fleet, segments = ctx.fleet, len(SEGMENTS)
    wait_until(lambda: _held(ctx) >= segments, 60, "one upload per segment of the first worker")
    ctx.publish_now([_flip(i, Op.ADD) for i in range(FLIPS)])
    (stopped,) = fleet.live()
    before = stopped.owned() or set()
    fleet.pause(stopped)
    ctx.mark()
    owners = [fleet.start(), fleet.start()]
    wait_until(
        lambda: fleet.owners(owners) == set(range(ctx.partitions)),
        REASSIGN_TIMEOUT_SECONDS,
        "the new workers own every partition",
        interval=0.5,
    )
    wait_until(lambda: _held(ctx) >= 2 * segments, 60, "the new owners' uploads are held too")
    ctx.sandbox("release", "POST", {})
    wait_until(lambda: _held(ctx) == 0, 30, "the held uploads are applied")
    seen = len(stopped.events())
    fleet.resume(stopped)
    ctx.mark()
    wait_until(
        lambda: any(e.get("event") == "partitions_lost" for e in stopped.events()[seen:]),
        REASSIGN_TIMEOUT_SECONDS,
        "the resumed worker learns that its partitions are lost",
        interval=0.5,
    )
    ctx.after_stop.append(lambda: _fencing_evidence(ctx, stopped, before, seen))


def _fencing_evidence(ctx: ChaosContext, member: Member, owned: set[int], seen: int) -> None:
    after = [e.get("event") for e in member.events()[seen:]]
    fenced = {name: after.count(name) for name in ("commit_fenced", "rows_dropped_not_owned")}
    ctx.evidence.append(
        f"{member.name} owned {sorted(owned)} when stopped; after SIGCONT: partitions_lost, "
        + ", ".join(f"{k} x{v}" for k, v in fenced.items())
    )
    if not owned:
        ctx.problems.append(f"{member.name} owned no partition when it was stopped")
    if not any(fenced.values()):
        ctx.problems.append(f"{member.name} showed no fencing after SIGCONT: {after[:20]}")


FLIPS = 20


def _flip(i: int, op: Op) -> GeneratedRecord:
    """A change of a device that appears nowhere else in the stream (IDFA, the held segment)."""
    device = str(uuid.uuid5(uuid.NAMESPACE_URL, f"chaos-flip-{i}"))
    value = encode_json(
        {
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"chaos-flip-{i}-{op.name}")),
            "segment": SEGMENTS[0],
            "op": op.name,
            "id_type": "IDFA",
            "device_id": device,
            "occurred_at": 1_700_000_000_000,
        }
    )
    change = ExpectedChange(inmobi_segment_name(SEGMENTS[0]), op, IdType.IDFA, device)
    return GeneratedRecord(device.encode(), value, "json", False, change)


def hold_every_segment(ctx: ChaosContext) -> None:
    """Hold every segment, and open the stream with REMOVEs of the flip devices.

    The first upload of the first segment is then its IDFA REMOVE file (a batch uploads IDFA
    before the other types, REMOVE before ADD), holding these REMOVEs. Their ADDs are published
    once it is held, so the model ends with the flip devices as members and the new owners upload
    those ADDs before the stopped worker wakes up: were it to send its stale REMOVE file again,
    they would go missing. (Caught the retry that skipped the fence, fixed in 430d77d.)
    """
    ctx.records[:0] = [_flip(i, Op.REMOVE) for i in range(FLIPS)]
    for segment in SEGMENTS:
        ctx.sandbox("hold", "POST", {"segment_name": inmobi_segment_name(segment)})


@dataclass(frozen=True)
class ChurnKind:
    run: Callable[[ChaosContext], None]
    prepare: Callable[[ChaosContext], None] = lambda _ctx: None


CHURNS: dict[str, ChurnKind] = {
    "kill9": ChurnKind(kill9),
    "sigterm": ChurnKind(sigterm),
    "join_leave": ChurnKind(join_leave),
    "faults": ChurnKind(faults),
    "pause": ChurnKind(pause, prepare=hold_every_segment),
}
