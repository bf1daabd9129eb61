"""The one verdict of every chaos scenario.

1. Membership: the sandbox holds exactly the model folded from the published records (minus the
   device IDs the sandbox refuses), each segment name once.
2. Offsets: the group's committed offsets equal the end offsets the delivery reports gave.
3. Dead letters: every bad record's (key, value) is in the DLQ, as many times as it was published,
   and nothing else at the decode stage; every refused ID is there at the upload stage. Copies of
   one source record (re-consumed after a crash) are counted as DLQ duplicates, by the
   ``__connect.errors.partition/offset`` headers.
4. Duplicates: records consumed (the last ``consumed`` count each worker process reported) minus
   records in the topic. Exact after clean stops and then it must be zero; a lower bound when a
   worker was killed or paused (its last report may be up to a second old).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tests.integration.harness import expected_membership, http_json
from worker.generator import GeneratedRecord
from worker.kafka import group_committed, iter_records

__all__ = ["Verdict", "check", "expected_membership"]

Membership = dict[str, set[tuple[str, str]]]
SAMPLE = 3


@dataclass
class Verdict:
    duplicates: int
    exact: bool  # False: `duplicates` is a lower bound (a worker was killed or paused)
    dlq_records: int = 0
    dlq_duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def duplicates_text(self) -> str:
        return str(self.duplicates) if self.exact else f"≥ {max(0, self.duplicates)}"


def sandbox_members(sandbox_url: str, problems: list[str]) -> Membership:
    state = http_json(f"{sandbox_url}/_sandbox/state")
    out: Membership = {}
    for seg in state["segments"]:
        if seg["name"] in out:
            problems.append(f"segment {seg['name']} exists twice in the sandbox")
        members = http_json(f"{sandbox_url}/_sandbox/segments/{seg['id']}/members")["members"]
        got = {(col, i) for col, ids in members.items() for i in ids}
        out[seg["name"]] = out.get(seg["name"], set()) | got
    return {s: m for s, m in out.items() if m}


def _membership(got: Membership, want: Membership) -> list[str]:
    problems = []
    for seg in sorted(set(got) | set(want)):
        missing, extra = (
            want.get(seg, set()) - got.get(seg, set()),
            got.get(seg, set()) - want.get(seg, set()),
        )
        if missing or extra:
            problems.append(
                f"membership of {seg}: {len(missing)} missing {sorted(missing)[:SAMPLE]}, "
                f"{len(extra)} extra {sorted(extra)[:SAMPLE]}"
            )
    return problems


def _offsets(bootstrap: str, group: str, topic: str, ends: Mapping[int, int]) -> list[str]:
    got = group_committed({"bootstrap.servers": bootstrap}, group, topic, ends)
    wrong = {p: (got.get(p), o) for p, o in ends.items() if got.get(p) != o}
    return [f"committed != end offsets (partition: (committed, end)): {wrong}"] if wrong else []


def _dead_letters(
    bootstrap: str, dlq: str, records: Sequence[GeneratedRecord], refused: set[str], v: Verdict
) -> None:
    bad = Counter((r.key, r.value) for r in records if r.bad)
    stored = (
        list(iter_records({"bootstrap.servers": bootstrap}, dlq, {0: 1})) if bad or refused else []
    )
    by_source: dict[tuple[bytes, bytes, bytes], tuple[bytes | None, bytes | None]] = {}
    for r in stored:
        h = dict(r.headers)
        source = (
            h.get("__connect.errors.stage", b""),
            h.get("__connect.errors.partition", b""),
            h.get("__connect.errors.offset", b""),
        )
        by_source[source] = (r.key, r.value)
    v.dlq_records, v.dlq_duplicates = len(stored), len(stored) - len(by_source)
    decoded = Counter(kv for (stage, _, _), kv in by_source.items() if stage != b"UPLOAD")
    if decoded != bad:
        v.problems.append(
            f"DLQ decode-stage records != bad records: {sum((bad - decoded).values())} missing, "
            f"{sum((decoded - bad).values())} unexpected"
        )
    uploads = {
        key.decode() for (stage, _, _), (key, _) in by_source.items() if stage == b"UPLOAD" and key
    }
    if uploads != refused:
        v.problems.append(
            f"DLQ upload-stage IDs {sorted(uploads)} != refused IDs {sorted(refused)}"
        )


def check(
    *,
    bootstrap: str,
    sandbox_url: str,
    topic: str,
    group: str,
    dlq: str,
    records: Sequence[GeneratedRecord],
    end_offsets: Mapping[int, int],
    refused: set[str],
    consumed: Sequence[int],
    exact: bool,
    require_zero: bool,
) -> Verdict:
    v = Verdict(duplicates=sum(consumed) - sum(end_offsets.values()), exact=exact)
    got = sandbox_members(sandbox_url, v.problems)
    v.problems += _membership(got, expected_membership(records, refused))
    v.problems += _offsets(bootstrap, group, topic, end_offsets)
    _dead_letters(bootstrap, dlq, records, refused, v)
    if sum(end_offsets.values()) != len(records):
        v.problems.append(
            f"the topic holds {sum(end_offsets.values())} records, not {len(records)}"
        )
    if require_zero and v.duplicates != 0:
        v.problems.append(f"{v.duplicates} duplicates after clean stops only (want 0)")
    return v
