"""The segment registry log: record format and claim resolution (pure: no Kafka, no clock reads).

InMobi cannot look a segment up by name, so the name → ID mapping lives in a compacted,
single-partition Kafka topic that every worker reads from the start. Records (UTF-8 keys, JSON
values)::

    id:<NAME>                  {"segment_id": "...", "worker": "...", "at_ms": n}
    claim:<NAME>:<worker_id>   {"worker": "...", "at_ms": n, "ttl_ms": n}
    retired:<NAME>:<ID>        {"worker": "...", "at_ms": n}    (InMobi answered 404 for this ID)
    marker:<worker_id>         {"worker": "...", "at_ms": n}    (read-to-the-end probe; ignored)

A null value (tombstone) removes an ID or releases a claim. Every worker has its own claim key, so
compaction never erases another worker's claim, and compaction keeps the order of what it keeps.
A retired ID counts as absent for good, wherever its record sits in the log: retiring is
idempotent and cannot erase an ID created after it (which a tombstone on `id:` could).

Protocol for a name nobody knows yet:

1. Append `claim:<NAME>:<me>`, then read the log up to that record.
2. Decide (`RegistryView.decide`): an `id:` record wins over everything (`Known`); otherwise the
   first claim in log order that has not expired (`at_ms + ttl_ms > now_ms`) wins.
3. `Mine`: create the segment at InMobi, append `id:<NAME>`, then release the claim (tombstone).
   A winning claim with less than half its TTL left is renewed first (appended again, which moves
   it to the end of the log) so that nobody acts on a claim about to expire.
4. `Theirs`: read on until an ID appears or the winning claim expires or is released; decide again.
5. Whatever the outcome (ID known, creation failed, caller cancelled), the worker then releases
   its claim (tombstone), so a failed creation hands over at once instead of after the TTL.

While no claim expires, every reader that has read past its own claim agrees on the winner: the
first claim of the whole log is already in that prefix. The view folds records with compaction's semantics (last
record per key, at the position of that record), so readers before and after compaction agree.

Clock assumption: claims expire by the claimant's wall clock (`at_ms`) against the reader's
(`now_ms`). The TTL (default 5 min) is much longer than a creation request plus any clock skew
between workers. Residual race: a claimant that stalls for more than half the TTL between its
decision and its `id:` record (or a skew larger than that) lets a second worker create the same
segment; the later `id:` record then wins. A claimant that crashes after InMobi created the
segment but before its `id:` record is confirmed, or whose creation request fails although InMobi
did create the segment (a timeout), also leaves a duplicate behind once its claim is gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ClaimRecord",
    "ClaimReleased",
    "Decision",
    "IdRecord",
    "IdRemoved",
    "Known",
    "Marker",
    "Mine",
    "NoClaim",
    "Record",
    "RegistryEntry",
    "RegistryView",
    "Retired",
    "Theirs",
    "claim_record",
    "format_registry",
    "id_record",
    "marker_record",
    "needs_renewal",
    "parse_record",
    "release_record",
    "retired_record",
]

KeyValue = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class IdRecord:
    name: str
    segment_id: str
    worker: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class IdRemoved:
    name: str


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    name: str
    worker: str
    at_ms: int
    ttl_ms: int

    @property
    def expires_at_ms(self) -> int:
        return self.at_ms + self.ttl_ms


@dataclass(frozen=True, slots=True)
class ClaimReleased:
    name: str
    worker: str


@dataclass(frozen=True, slots=True)
class Retired:
    name: str
    segment_id: str


@dataclass(frozen=True, slots=True)
class Marker:
    worker: str


Record = IdRecord | IdRemoved | ClaimRecord | ClaimReleased | Retired | Marker


@dataclass(frozen=True, slots=True)
class Known:
    segment_id: str


@dataclass(frozen=True, slots=True)
class Mine:
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Theirs:
    worker: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class NoClaim:
    pass


Decision = Known | Mine | Theirs | NoClaim


def _check_name(name: str) -> str:
    if not name or ":" in name:
        raise ValueError(f"registry segment name must be non-empty without ':', not {name!r}")
    return name


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def id_record(name: str, segment_id: str, worker: str, at_ms: int) -> KeyValue:
    value = {"segment_id": segment_id, "worker": worker, "at_ms": at_ms}
    return f"id:{_check_name(name)}".encode(), _json(value)


def claim_record(name: str, worker: str, at_ms: int, ttl_ms: int) -> KeyValue:
    value = {"worker": worker, "at_ms": at_ms, "ttl_ms": ttl_ms}
    return f"claim:{_check_name(name)}:{worker}".encode(), _json(value)


def release_record(name: str, worker: str) -> KeyValue:
    return f"claim:{_check_name(name)}:{worker}".encode(), None


def retired_record(name: str, segment_id: str, worker: str, at_ms: int) -> KeyValue:
    value = {"worker": worker, "at_ms": at_ms}
    return f"retired:{_check_name(name)}:{segment_id}".encode(), _json(value)


def marker_record(worker: str, at_ms: int) -> KeyValue:
    return f"marker:{worker}".encode(), _json({"worker": worker, "at_ms": at_ms})


def _parse_id(name: str, value: dict[str, Any] | None) -> Record:
    if value is None:
        return IdRemoved(name)
    return IdRecord(name, str(value["segment_id"]), str(value["worker"]), int(value["at_ms"]))


def _parse_claim(rest: str, value: dict[str, Any] | None) -> Record | None:
    name, _, worker = rest.partition(":")
    if not (name and worker):
        return None
    if value is None:
        return ClaimReleased(name, worker)
    return ClaimRecord(name, worker, int(value["at_ms"]), int(value["ttl_ms"]))


def _parse(key: str, value: dict[str, Any] | None) -> Record | None:
    kind, _, rest = key.partition(":")
    if not rest:
        return None
    if kind == "id":
        return _parse_id(rest, value)
    if kind == "claim":
        return _parse_claim(rest, value)
    if kind == "retired":
        name, _, segment_id = rest.partition(":")
        return Retired(name, segment_id) if name and segment_id and value is not None else None
    return Marker(rest) if kind == "marker" else None


def parse_record(key: bytes | None, value: bytes | None) -> Record | None:
    """The record for a Kafka key and value, or None for anything this protocol does not know."""
    if key is None:
        return None
    try:
        body = None if value is None else json.loads(value)
        if body is not None and not isinstance(body, dict):
            return None
        return _parse(key.decode(), body)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def needs_renewal(mine: Mine, now_ms: int, ttl_ms: int) -> bool:
    """A winning claim with less than half its TTL left is renewed before anyone acts on it."""
    return mine.expires_at_ms - now_ms < ttl_ms // 2


class RegistryView:
    """Records folded in log order: the known IDs and, per name, the claims in log order."""

    def __init__(self, records: Iterable[Record] = ()) -> None:
        self._ids: dict[str, IdRecord] = {}
        self._claims: dict[str, dict[str, ClaimRecord]] = {}
        self._retired: set[tuple[str, str]] = set()
        for record in records:
            self.apply(record)

    def apply(self, record: Record) -> None:
        match record:
            case IdRecord(name=name):
                self._ids[name] = record
            case IdRemoved(name=name):
                self._ids.pop(name, None)
            case ClaimRecord(name=name, worker=worker):
                claims = self._claims.setdefault(name, {})
                claims.pop(worker, None)  # a renewed claim takes its new place in the log
                claims[worker] = record
            case ClaimReleased(name=name, worker=worker):
                self._claims.get(name, {}).pop(worker, None)
            case Retired(name=name, segment_id=segment_id):
                self._retired.add((name, segment_id))

    def _live(self) -> list[IdRecord]:
        return [r for r in self._ids.values() if (r.name, r.segment_id) not in self._retired]

    def get(self, name: str) -> str | None:
        """The segment ID of `name`, None when none is known (or it was retired)."""
        found = self._ids.get(name)
        if found is None or (name, found.segment_id) in self._retired:
            return None
        return found.segment_id

    def known(self) -> dict[str, str]:
        return {rec.name: rec.segment_id for rec in self._live()}

    def entries(self) -> list[IdRecord]:
        return sorted(self._live(), key=lambda rec: rec.name)

    def claims(self, name: str) -> list[ClaimRecord]:
        return list(self._claims.get(name, {}).values())

    def decide(self, name: str, me: str, now_ms: int) -> Decision:
        """Who creates `name`: an ID wins; else the first claim in the log that has not expired."""
        found = self.get(name)
        if found is not None:
            return Known(found)
        for claim in self._claims.get(name, {}).values():
            if claim.expires_at_ms > now_ms:
                if claim.worker == me:
                    return Mine(claim.expires_at_ms)
                return Theirs(claim.worker, claim.expires_at_ms)
        return NoClaim()


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One row of `inmobi-sync segments list`."""

    name: str
    segment_id: str
    worker: str
    at: datetime

    @classmethod
    def from_record(cls, record: IdRecord) -> RegistryEntry:
        at = datetime.fromtimestamp(record.at_ms / 1000, tz=UTC)
        return cls(record.name, record.segment_id, record.worker, at)


def format_registry(entries: Sequence[RegistryEntry]) -> str:
    """An aligned table, one segment per line, under a header."""
    header = ("NAME", "SEGMENT ID", "WORKER", "REGISTERED AT (UTC)")
    rows = [header] + [
        (e.name, e.segment_id, e.worker, e.at.strftime("%Y-%m-%d %H:%M:%S")) for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    if not entries:
        lines.append("(no segments registered)")
    return "\n".join(lines)
