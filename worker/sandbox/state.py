"""The sandbox's whole memory: sessions, segments and their members, the upload log, counters.

Pure state, no aiohttp and no clock: every method that depends on time takes ``now`` (epoch
seconds), and session rules come in as a `SessionPolicy` built from the current fault config. The
HTTP layer (`worker.sandbox.api`) validates requests and calls in here; tests may build a
`SandboxState` directly or inspect the live one of a running sandbox.

Segments behave like InMobi's: every ``create_segment`` makes a new segment with a fresh UUID (there
is no lookup by name, so creating a name twice gives two segments). Members are kept per CSV column
(``ida``, ``gpId``, ``ifa``) as sets: an ``add`` upload is a union, a ``remove`` a difference. A
reverse index (column, device ID) -> segment IDs answers `segments_of`, which the OpenRTB bidder uses
to find the audiences of a device. IDs (segments and sessions) come from a seeded
``random.Random``, so a run is reproducible.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from worker.sandbox.csvfile import UPLOAD_COLUMNS
from worker.sandbox.sessions import Account, Session, SessionPolicy, SessionStore

__all__ = ["Action", "SandboxState", "Segment", "UploadRecord"]

Action = Literal["add", "remove"]


@dataclass(slots=True)
class Segment:
    id: str
    name: str
    property_id: str
    membership_ttl_days: int
    created_at: float
    members: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in UPLOAD_COLUMNS})
    adds: int = 0  # data rows received by add uploads (duplicates included)
    removes: int = 0  # data rows received by remove uploads
    uploads: int = 0  # accepted uploads

    def summary(self) -> dict[str, Any]:
        by_column = {column: len(ids) for column, ids in self.members.items()}
        return {
            "id": self.id,
            "name": self.name,
            "property_id": self.property_id,
            "membership_ttl_days": self.membership_ttl_days,
            "created_at": self.created_at,
            "members": sum(by_column.values()),
            "members_by_column": by_column,
            "adds": self.adds,
            "removes": self.removes,
            "uploads": self.uploads,
        }


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One upload request as the sandbox answered it (accepted or not)."""

    time: float
    segment_id: str
    segment_name: str | None
    action: str
    column: str | None
    rows: int
    compressed_bytes: int
    status: int
    message: str


class SandboxState:
    """Accounts, sessions, segments, the bounded upload log and request counters."""

    def __init__(
        self, accounts: Iterable[Account], *, seed: int = 0, upload_log_size: int = 1000
    ) -> None:
        self._seed = seed
        self._random = random.Random(seed)
        self.sessions = SessionStore(accounts, self._new_id)
        self.segments: dict[str, Segment] = {}
        self.upload_log: deque[UploadRecord] = deque(maxlen=upload_log_size)
        self.requests: Counter[tuple[str, int]] = Counter()

    # Sessions

    def generate_session(
        self,
        *,
        username: str | None,
        secret_key: str | None,
        account_id: str | None,
        now: float,
        policy: SessionPolicy,
    ) -> Session:
        return self.sessions.generate(
            username=username, secret_key=secret_key, account_id=account_id, now=now, policy=policy
        )

    def check_session(
        self,
        *,
        session_id: str | None,
        account_id: str | None,
        secret_key: str | None,
        now: float,
        policy: SessionPolicy,
    ) -> Session:
        return self.sessions.check(
            session_id=session_id,
            account_id=account_id,
            secret_key=secret_key,
            now=now,
            policy=policy,
        )

    # Segments and uploads

    def create_segment(
        self, *, name: str, property_id: str, membership_ttl_days: int, now: float
    ) -> Segment:
        segment = Segment(self._new_id(), name, property_id, membership_ttl_days, now)
        self.segments[segment.id] = segment
        return segment

    def apply_upload(
        self,
        segment_id: str,
        *,
        action: Action,
        column: str,
        ids: Iterable[str],
        compressed_bytes: int,
        now: float,
    ) -> UploadRecord:
        """Add (union) or remove (difference) IDs of one column; raises KeyError if unknown."""
        segment = self.segments[segment_id]
        rows = list(ids)
        members = segment.members[column]
        if action == "add":
            members.update(rows)
            segment.adds += len(rows)
        else:
            members.difference_update(rows)
            segment.removes += len(rows)
        segment.uploads += 1
        record = UploadRecord(
            now,
            segment_id,
            segment.name,
            action,
            column,
            len(rows),
            compressed_bytes,
            200,
            "accepted",
        )
        self.upload_log.append(record)
        return record

    def record_upload(self, record: UploadRecord) -> None:
        """Log an upload the sandbox refused (the accepted ones are logged by `apply_upload`)."""
        self.upload_log.append(record)

    def segments_of(self, column: str, device_id: str) -> list[Segment]:
        """The segments holding this device ID in this column, oldest segment first.

        A scan of every segment's set (no reverse index): lookups come from bid requests, a few
        per test, while uploads bring millions of rows that an index would have to follow.
        """
        held = [s for s in self.segments.values() if device_id in s.members.get(column, ())]
        return sorted(held, key=lambda s: s.created_at)

    def segment_names_of(self, device_id: str) -> list[str]:
        """Names of the segments holding this ID in any column, once each, oldest first.

        The shape the OpenRTB bidder wants (``SegmentsOf``): a bid request's ``device.ifa`` does
        not say which column it belongs to. Pass UUIDs in lower case, as they are stored.
        """
        holders = [s for column in UPLOAD_COLUMNS for s in self.segments_of(column, device_id)]
        holders.sort(key=lambda s: s.created_at)
        return list(dict.fromkeys(s.name for s in holders))

    def members_of(self, segment_id: str) -> dict[str, Any]:
        """``{"id", "name", "members": {column: sorted IDs}}``; raises KeyError if unknown."""
        segment = self.segments[segment_id]
        members = {column: sorted(ids) for column, ids in segment.members.items()}
        return {"id": segment.id, "name": segment.name, "members": members}

    # Counters, snapshot, reset

    def count_request(self, route: str, status: int) -> None:
        self.requests[(route, status)] += 1

    def snapshot(self, now: float, policy: SessionPolicy) -> dict[str, Any]:
        """A JSON-able view of everything (member IDs themselves are left out: see members_of)."""
        requests: dict[str, dict[str, int]] = {}
        for (route, status), n in sorted(self.requests.items()):
            requests.setdefault(route, {})[str(status)] = n
        return {
            "segments": [s.summary() for s in self.segments.values()],
            "uploads": [asdict(record) for record in self.upload_log],
            "sessions_generated": self.sessions.generated,
            "live_sessions": self.sessions.live_count(now, policy),
            "requests": requests,
        }

    def reset(self) -> None:
        """Forget everything but the accounts; IDs start over from the seed."""
        self._random.seed(self._seed)
        self.sessions.reset()
        self.segments.clear()
        self.upload_log.clear()
        self.requests.clear()

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))
