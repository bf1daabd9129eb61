"""In-repo fakes of the ports in `worker.ports`: the event source, the DLQ, InMobi and the clock.

They keep their state in plain attributes that tests read directly:

- `FakeSource`: in-memory partitions. Rebalances requested by a test (`request_assign`,
  `request_revoke`, `request_lose`) run inside the next `poll_batch`, on the caller's thread, as
  librdkafka runs its callbacks; the first poll after `subscribe` assigns every partition.
- `FakeDlq`: records sends; confirms them on `poll()`/`flush()` (`auto_confirm`) or on demand.
- `FakeInMobi`: applies gzip CSV uploads to per-segment membership; failures are scripted per
  segment (errors to raise, IDs to reject with 400, a gate to hold uploads until released).
- `FakeClock`: `monotonic()` returns whatever the test set.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from worker.errors import FileRejectedError, SyncError, TransientError, UnknownSegmentError
from worker.model import RecordBatch, Rejection, SourceMessage
from worker.ports import RebalanceCallback

if TYPE_CHECKING:
    from worker.ports import Clock, DlqPort, InMobiPort, SourcePort

__all__ = ["DlqRecord", "FakeClock", "FakeDlq", "FakeInMobi", "FakeSource", "Upload"]


class FakeClock:
    """A monotonic clock that only moves when the test moves it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- source ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Rebalance:
    kind: str  # "assign" | "revoke" | "lost"
    partitions: list[int]


class FakeSource:
    """Partitions as lists; a consumer position per assigned partition; commits recorded."""

    def __init__(self, partitions: int, topic: str = "segment-membership-changes") -> None:
        self.topic = topic
        self.log: dict[int, list[SourceMessage]] = {p: [] for p in range(partitions)}
        self.committed: dict[int, int] = {}  # the group's committed offsets (the next to read)
        self.commits: list[dict[int, int]] = []  # every successful commit, in order
        self.assigned: set[int] = set()
        self.paused: set[int] = set()
        self.fail_commits = 0  # the next N commits raise TransientError
        # Called with each commit before it is recorded, on the committing thread: a test checks
        # what must hold at that moment (it must not raise: record what it finds).
        self.on_commit: Callable[[Mapping[int, int]], None] | None = None
        self.rebalances = 0  # rebalance callbacks completed
        self.closed = False
        self._positions: dict[int, int] = {}
        self._pending: deque[_Rebalance] = deque()
        self._callbacks: dict[str, RebalanceCallback] = {}
        self._lock = threading.RLock()

    # -- test side --------------------------------------------------------------------------------
    def produce(self, partition: int, key: bytes | None, value: bytes | None) -> SourceMessage:
        with self._lock:
            log = self.log[partition]
            msg = SourceMessage(self.topic, partition, len(log), key, value, 0)
            log.append(msg)
            return msg

    def end_offsets(self) -> dict[int, int]:
        with self._lock:
            return {p: len(log) for p, log in self.log.items()}

    def commit_elsewhere(self, offsets: Mapping[int, int]) -> None:
        """Another member of the group commits (it owns these partitions meanwhile)."""
        with self._lock:
            self.committed.update(offsets)

    def request_assign(self, partitions: Iterable[int]) -> None:
        self._request("assign", partitions)

    def request_revoke(self, partitions: Iterable[int]) -> None:
        self._request("revoke", partitions)

    def request_lose(self, partitions: Iterable[int]) -> None:
        self._request("lost", partitions)

    def _request(self, kind: str, partitions: Iterable[int]) -> None:
        with self._lock:
            self._pending.append(_Rebalance(kind, sorted(partitions)))

    def settled(self) -> bool:
        """No rebalance pending and every assigned partition read to its end."""
        with self._lock:
            return not self._pending and all(
                self._positions[p] >= len(self.log[p]) for p in self.assigned
            )

    # -- SourcePort ---------------------------------------------------------------------------------
    def subscribe(
        self, on_assign: RebalanceCallback, on_revoke: RebalanceCallback, on_lost: RebalanceCallback
    ) -> None:
        with self._lock:
            self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
            self._pending.appendleft(_Rebalance("assign", sorted(self.log)))

    def poll_batch(self, max_messages: int, timeout: float) -> RecordBatch:
        if self._rebalance():
            return RecordBatch.of(self.topic, [])
        out: list[SourceMessage] = []
        with self._lock:
            for p in sorted(self.assigned - self.paused):
                take = self.log[p][
                    self._positions[p] : self._positions[p] + max_messages - len(out)
                ]
                out.extend(take)
                self._positions[p] += len(take)
        if not out:
            time.sleep(min(timeout, 0.002))
        return RecordBatch.of(self.topic, out)

    def _rebalance(self) -> bool:
        """Run one pending rebalance, its callback outside the lock (it may commit)."""
        with self._lock:
            if not self._pending:
                return False
            event = self._pending.popleft()
            callback = self._callbacks[event.kind]
            if event.kind == "assign":
                for p in event.partitions:
                    self.assigned.add(p)
                    self._positions[p] = self.committed.get(p, 0)
        callback(event.partitions)
        with self._lock:
            if event.kind != "assign":
                self.assigned.difference_update(event.partitions)
                self.paused.difference_update(event.partitions)
            self.rebalances += 1
        return True

    def commit(self, offsets: Mapping[int, int]) -> None:
        with self._lock:
            if not offsets:
                return
            if self.fail_commits:
                self.fail_commits -= 1
                raise TransientError("fake commit failure")
            foreign = set(offsets) - self.assigned
            if foreign:
                raise TransientError(f"not assigned: {sorted(foreign)}")
            if self.on_commit is not None:
                self.on_commit(offsets)
            self.committed.update(offsets)
            self.commits.append(dict(offsets))

    def pause(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self.paused.update(partitions)

    def resume(self, partitions: Iterable[int]) -> None:
        with self._lock:
            self.paused.difference_update(partitions)

    def high_watermarks(self, partitions: Iterable[int]) -> dict[int, int]:
        with self._lock:
            return {p: len(self.log[p]) for p in partitions if p in self.log}

    def close(self) -> None:
        self.closed = True


# -- DLQ ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DlqRecord:
    msg: SourceMessage
    rejection: Rejection


class FakeDlq:
    """Records DLQ sends; each is confirmed (or failed with `failure`) on poll, flush or demand."""

    def __init__(self, *, auto_confirm: bool = True) -> None:
        self.auto_confirm = auto_confirm
        self.failure: str | None = None  # when set, deliveries report this error
        self.sent: list[DlqRecord] = []
        self.confirmed: list[DlqRecord] = []
        self.polls = 0
        self._pending: deque[tuple[DlqRecord, Callable[[str | None], None]]] = deque()
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(
        self, msg: SourceMessage, rejection: Rejection, on_done: Callable[[str | None], None]
    ) -> None:
        record = DlqRecord(msg, rejection)
        with self._lock:
            self.sent.append(record)
            self._pending.append((record, on_done))

    def confirm_all(self) -> int:
        """Report every pending send (as confirmed, or as `failure`); return how many."""
        served = 0
        while True:
            with self._lock:
                if not self._pending:
                    return served
                record, on_done = self._pending.popleft()
                if self.failure is None:
                    self.confirmed.append(record)
            on_done(self.failure)
            served += 1

    def poll(self, timeout: float = 0.0) -> int:
        self.polls += 1
        return self.confirm_all() if self.auto_confirm else 0

    def flush(self, timeout: float) -> int:
        if self.auto_confirm:
            self.confirm_all()
        return self.pending


# -- InMobi ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Upload:
    """One upload request as InMobi saw it."""

    segment: str
    action: str
    column: str
    ids: tuple[str, ...]
    at: float  # clock time of the request
    outcome: str  # "ok", "ambiguous" or the error class name


def read_upload(payload: bytes) -> tuple[str, tuple[str, ...]]:
    """The header column and the IDs of a gzip CSV upload file."""
    rows = list(csv.reader(io.StringIO(gzip.decompress(payload).decode("ascii"))))
    return rows[0][0], tuple(r[0] for r in rows[1:])


@dataclass(slots=True)
class _Script:
    errors: deque[tuple[SyncError, bool]] = field(default_factory=deque)  # (error, applied first)
    rejected: set[str] = field(default_factory=set)
    reject_status: int = 400
    gate: asyncio.Event | None = None


class FakeInMobi:
    """Segments by name, membership as (column, id) pairs, failures scripted per segment name."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock
        self.ids: dict[str, str] = {}  # segment name -> InMobi segment ID
        self.members: dict[str, set[tuple[str, str]]] = {}
        self.uploads: list[Upload] = []
        self.created: list[tuple[str, int]] = []
        self.waiting: dict[str, int] = {}  # uploads held at a segment's gate right now
        self._names: dict[str, str] = {}
        self._scripts: dict[str, _Script] = {}

    # -- scripting --------------------------------------------------------------------------------
    def _script(self, segment: str) -> _Script:
        return self._scripts.setdefault(segment, _Script())

    def fail_next(self, segment: str, *errors: SyncError) -> None:
        """The next uploads to `segment` raise these errors, one per upload, in order."""
        self._script(segment).errors.extend((e, False) for e in errors)

    def apply_then_fail(self, segment: str, error: SyncError) -> None:
        """The next upload is applied, but the caller sees `error` (an ambiguous outcome)."""
        self._script(segment).errors.append((error, True))

    def reject_ids(self, segment: str, ids: Iterable[str], status: int = 400) -> None:
        """Any file of `segment` holding one of `ids` is refused as a whole (400 or 413)."""
        script = self._script(segment)
        script.rejected.update(ids)
        script.reject_status = status

    def recover(self, segment: str) -> None:
        """Drop the errors still scripted for `segment`."""
        self._script(segment).errors.clear()

    def hold(self, segment: str) -> asyncio.Event:
        """Uploads to `segment` wait until the returned event is set."""
        gate = self._script(segment).gate = asyncio.Event()
        return gate

    def release_all(self) -> None:
        """Open every gate and drop every scripted error (a test cleaning up after a failure)."""
        for script in self._scripts.values():
            script.errors.clear()
            if script.gate is not None:
                script.gate.set()

    def membership(self, segment: str) -> set[tuple[str, str]]:
        return set(self.members.get(segment, set()))

    def apply(self, segment: str, action: str, column: str, ids: Iterable[str]) -> None:
        """Change membership directly (what another writer would do)."""
        members = self.members.setdefault(segment, set())
        pairs = {(column, i) for i in ids}
        if action == "add":
            members |= pairs
        else:
            members -= pairs

    # -- InMobiPort -------------------------------------------------------------------------------
    async def create_segment(self, name: str, ttl_days: int) -> str:
        segment_id = str(uuid.uuid4())
        self.ids[name] = segment_id
        self._names[segment_id] = name
        self.created.append((name, ttl_days))
        return segment_id

    async def upload(self, segment_id: str, action: str, payload: bytes) -> int:
        name = self._names.get(segment_id)
        if name is None:
            raise UnknownSegmentError(f"unknown segment {segment_id}")
        column, ids = read_upload(payload)
        script = self._script(name)
        if script.gate is not None and not script.gate.is_set():
            self.waiting[name] = self.waiting.get(name, 0) + 1
            try:
                await script.gate.wait()
            finally:
                self.waiting[name] -= 1
        at = self._clock.monotonic() if self._clock is not None else 0.0
        if script.rejected.intersection(ids):
            self.uploads.append(Upload(name, action, column, ids, at, "FileRejectedError"))
            status = script.reject_status
            raise FileRejectedError(f"{status}: file refused", status=status)
        if script.errors:
            error, applied = script.errors.popleft()
            if applied:
                self.apply(name, action, column, ids)
            outcome = "ambiguous" if applied else type(error).__name__
            self.uploads.append(Upload(name, action, column, ids, at, outcome))
            raise error
        self.apply(name, action, column, ids)
        self.uploads.append(Upload(name, action, column, ids, at, "ok"))
        return len(ids)


if TYPE_CHECKING:  # mypy proves that each fake is its port

    def _ports(
        c: FakeClock, s: FakeSource, d: FakeDlq, i: FakeInMobi
    ) -> tuple[Clock, SourcePort, DlqPort, InMobiPort]:
        return c, s, d, i
