"""Operator commands: consumer-group status, DLQ replay and a connectivity check.

`status` reads the group's committed offsets and the end offset of every partition of KAFKA_TOPIC.
End offsets come from ListOffsets "latest", which is right on Apache Kafka; the embedded test broker
(Tansu) counts record batches there after batched produce, so on it an end can sit below the
committed offset. Lag is shown as `end - committed` without clamping: a negative lag is a signal
(a recreated topic, or that broker), not something to hide.

`replay_dlq` re-publishes dead-lettered records to KAFKA_TOPIC with their original key and value,
without the `__connect.errors.*` headers and with `inmobi_sync.replayed_from` =
`<dlq topic>:<partition>:<offset>`. It reads a snapshot: the DLQ up to its end when the replay starts
(ListOffsets, raised to the high watermark the first fetch reports, which is also right on the test
broker), so records the worker dead-letters again while the replay runs are not replayed twice.
A replayed change lands at the end of the topic: it wins over any newer change of the same device
and segment that was published before the replay (last write wins in Kafka order).

`check_connect` reaches Kafka, the schema registry (if configured) and InMobi (one session
generation, which takes one of the key's few live sessions); no secret appears in what it returns.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from worker.config import REQUIRED_FOR_RUN, Settings
from worker.dlq_records import ReplayFilter, SchemaLookup, Verdict, replay_headers
from worker.errors import AuthError, ConfigError, SyncError
from worker.inmobi import InMobiConfig, SessionManager
from worker.kafka import (
    EventProducer,
    StoredRecord,
    consumer_config,
    group_committed,
    iter_records,
    list_topic_partitions,
    producer_config,
    watermark_offsets,
)
from worker.registry import SchemaRegistryClient

__all__ = [
    "PartitionStatus",
    "ReplayReport",
    "StatusReport",
    "check_connect",
    "format_replay",
    "format_status",
    "replay_dlq",
    "replay_records",
    "status",
]

CHECK_TIMEOUT_SECONDS = 10.0
PROGRESS_EVERY = 10_000
MAX_SCHEMA_LOOKUPS = 100  # garbage can name any of 2**32 schema IDs: bound the registry calls

Progress = Callable[[int, int], None]
Headers = list[tuple[str, str | bytes | None]]


def _tool_config(settings: Settings) -> dict[str, Any]:
    """Connection properties for assign-only tools (never the worker's static member ID)."""
    return {k: v for k, v in consumer_config(settings).items() if k != "group.instance.id"}


def _partitions(config: Mapping[str, Any], topic: str, variable: str) -> list[int]:
    topics = list_topic_partitions(config, CHECK_TIMEOUT_SECONDS)
    if topic not in topics:
        raise ConfigError([f"{variable}: topic {topic!r} does not exist"])
    return topics[topic]


# --- status -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    committed: int | None  # None: the group never committed this partition
    start: int  # first offset still in the log: where the group starts without a commit
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.start if self.committed is None else self.committed)


@dataclass(frozen=True, slots=True)
class StatusReport:
    topic: str
    group: str
    partitions: tuple[PartitionStatus, ...]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)


def status(settings: Settings) -> StatusReport:
    """Committed offset, end offset and lag of every partition of KAFKA_TOPIC for KAFKA_GROUP_ID."""
    config, topic = _tool_config(settings), settings.kafka_topic
    partitions = _partitions(config, topic, "KAFKA_TOPIC")
    committed = group_committed(config, settings.kafka_group_id, topic, partitions)
    marks = watermark_offsets(config, topic, partitions, CHECK_TIMEOUT_SECONDS)
    rows = tuple(PartitionStatus(p, committed.get(p), *marks[p]) for p in partitions)
    return StatusReport(topic, settings.kafka_group_id, rows)


def format_status(report: StatusReport) -> str:
    """A table: one row per partition, then the totals (an uncommitted partition shows `-`)."""
    line = "{:>9}  {:>12}  {:>12}  {:>10}".format
    rows = [
        f"group {report.group} on topic {report.topic} ({len(report.partitions)} partitions)",
        line("partition", "committed", "end", "lag"),
    ]
    for p in report.partitions:
        shown = "-" if p.committed is None else p.committed
        rows.append(line(p.partition, shown, p.end, p.lag))
    committed = sum(p.committed or 0 for p in report.partitions)
    ends = sum(p.end for p in report.partitions)
    rows.append(line("total", committed, ends, report.total_lag))
    never = sum(p.committed is None for p in report.partitions)
    if never:
        rows.append(f"{never} partition(s) without a committed offset: lag counted from the start")
    return "\n".join(rows)


# --- DLQ replay ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayReport:
    dlq_topic: str
    target_topic: str
    dry_run: bool
    counts: dict[Verdict, int]  # DLQ records read, by what the filter said
    written: int  # confirmed by the broker (0 on a dry run)
    failed: int  # not confirmed: these were possibly not replayed
    target_end_offsets: dict[int, int]  # from delivery reports of the replayed records

    @property
    def scanned(self) -> int:
        return sum(self.counts.values())

    @property
    def matched(self) -> int:
        return self.counts.get(Verdict.REPLAY, 0)


def replay_records(
    records: Iterable[StoredRecord],
    wanted: ReplayFilter,
    *,
    dlq_topic: str,
    send: Callable[[bytes | None, bytes | None, Headers], None] | None,
    progress: Progress,
    progress_every: int = PROGRESS_EVERY,
    lookup: SchemaLookup = lambda _schema_id: None,
) -> dict[Verdict, int]:
    """Send every matching record (`send=None`: a dry run); `progress(scanned, matched)` every N."""
    counts = dict.fromkeys(Verdict, 0)
    for scanned, record in enumerate(records, 1):
        verdict = wanted.verdict(record.headers, record.value, lookup)
        counts[verdict] += 1
        if verdict is Verdict.REPLAY and send is not None:
            send(record.key, record.value, replay_headers(record, dlq_topic))
        if scanned % progress_every == 0:
            progress(scanned, counts[Verdict.REPLAY])
    return counts


def replay_dlq(
    settings: Settings,
    *,
    stage: str | None,
    segment: str | None,
    dry_run: bool,
    progress: Progress,
    progress_every: int = PROGRESS_EVERY,
) -> ReplayReport:
    """Re-publish the DLQ records that match `stage` and `segment` to KAFKA_TOPIC."""
    wanted = ReplayFilter.parse(stage, segment)
    config, dlq, target = _tool_config(settings), settings.kafka_dlq_topic, settings.kafka_topic
    partitions = _partitions(config, dlq, "KAFKA_DLQ_TOPIC")
    if not dry_run:
        _partitions(config, target, "KAFKA_TOPIC")
    ends = {p: hi for p, (_lo, hi) in watermark_offsets(config, dlq, partitions).items()}
    producer = None if dry_run else EventProducer(producer_config(settings), target)
    unconfirmed = 0
    try:
        counts = replay_records(
            iter_records(config, dlq, ends),
            wanted,
            dlq_topic=dlq,
            send=None if producer is None else producer.send,
            progress=progress,
            progress_every=progress_every,
            lookup=_RegistrySchemas(settings.schema_registry_url),
        )
    finally:  # also when reading fails: what was sent is confirmed before this returns
        if producer is not None:
            unconfirmed = producer.flush(60)
    failed = 0 if producer is None else producer.failed + unconfirmed
    written = 0 if producer is None else counts[Verdict.REPLAY] - failed
    return ReplayReport(
        dlq,
        target,
        dry_run,
        counts,
        written,
        failed,
        dict(producer.end_offsets if producer else {}),
    )


def format_replay(report: ReplayReport) -> str:
    what = "would replay" if report.dry_run else "replayed"
    done = report.matched if report.dry_run else report.written
    lines = [
        f"{what} {done} of {report.scanned} DLQ records from {report.dlq_topic} "
        f"to {report.target_topic}"
    ]
    skipped = {v: n for v, n in report.counts.items() if v is not Verdict.REPLAY and n}
    if skipped:
        lines.append("skipped: " + ", ".join(f"{v.value} {n}" for v, n in skipped.items()))
    if report.failed:
        lines.append(f"NOT CONFIRMED: {report.failed} records (run again to replay them)")
    return "\n".join(lines)


class _RegistrySchemas:
    """Writer schemas of framed DLQ values, fetched from the registry once per ID (bounded)."""

    def __init__(self, url: str | None) -> None:
        self._url = url.rstrip("/") if url else None
        self._known: dict[int, str | None] = {}

    def __call__(self, schema_id: int) -> str | None:
        if self._url is None:
            return None
        if schema_id not in self._known:
            if len(self._known) >= MAX_SCHEMA_LOOKUPS:
                return None
            self._known[schema_id] = asyncio.run(self._fetch(self._url, schema_id))
        return self._known[schema_id]

    @staticmethod
    async def _fetch(url: str, schema_id: int) -> str | None:
        async with aiohttp.ClientSession() as http:
            try:
                return await SchemaRegistryClient(url, http).fetch(schema_id)
            except SyncError:
                return None  # unreadable: the record never matches a segment filter


# --- connectivity -------------------------------------------------------------------------------


def check_connect(
    settings: Settings,
    *,
    timeout: float = CHECK_TIMEOUT_SECONDS,
    note: Callable[[str], None] = lambda _line: None,
) -> list[str]:
    """Problems reaching Kafka, the schema registry and InMobi; what works goes to `note`."""
    problems = _kafka_problems(settings, timeout, note)
    problems += asyncio.run(_http_problems(settings, timeout, note))
    return [_scrub(line, settings) for line in problems]


def _kafka_problems(settings: Settings, timeout: float, note: Callable[[str], None]) -> list[str]:
    servers = settings.kafka_bootstrap_servers
    try:
        topics = list_topic_partitions(_tool_config(settings), timeout)
    except SyncError as exc:
        return [f"KAFKA_BOOTSTRAP_SERVERS: cannot reach Kafka at {servers}: {exc}"]
    note(f"kafka: reached {servers} ({len(topics)} topics)")
    problems = []
    for variable, topic in (
        ("KAFKA_TOPIC", settings.kafka_topic),
        ("KAFKA_DLQ_TOPIC", settings.kafka_dlq_topic),
    ):
        if topic in topics:
            note(f"{variable}: topic {topic} exists ({len(topics[topic])} partitions)")
        else:
            problems.append(f"{variable}: topic {topic!r} does not exist")
    return problems


async def _http_problems(
    settings: Settings, timeout: float, note: Callable[[str], None]
) -> list[str]:
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as http:
        problems = []
        if settings.schema_registry_url:
            problems += await _registry_problems(http, settings.schema_registry_url, note)
        problems += await _inmobi_problems(http, settings, timeout, note)
        return problems


async def _registry_problems(
    http: aiohttp.ClientSession, url: str, note: Callable[[str], None]
) -> list[str]:
    shown = str(URL(url).with_user(None))
    try:
        async with http.get(url.rstrip("/") + "/subjects") as resp:
            status = resp.status
            body = await resp.json(content_type=None) if status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [f"SCHEMA_REGISTRY_URL: cannot reach {shown}: {type(exc).__name__}"]
    if status != 200 or not isinstance(body, list):
        return [f"SCHEMA_REGISTRY_URL: {shown} answered HTTP {status} to GET /subjects"]
    note(f"schema registry: reached {shown} ({len(body)} subjects)")
    return []


async def _inmobi_problems(
    http: aiohttp.ClientSession, settings: Settings, timeout: float, note: Callable[[str], None]
) -> list[str]:
    missing = [n.upper() for n in REQUIRED_FOR_RUN if getattr(settings, n) in (None, "")]
    if missing:
        return [f"{n}: required to generate an InMobi session" for n in missing]
    config = InMobiConfig.from_settings(settings)
    config = dataclasses.replace(config, timeout_seconds=min(config.timeout_seconds, timeout))
    where = config.session_url + config.session_path
    try:
        await SessionManager(config, http, time.monotonic).get()
    except AuthError as exc:
        return [f"INMOBI_USERNAME, INMOBI_ACCOUNT_ID, INMOBI_API_KEY: refused at {where}: {exc}"]
    except SyncError as exc:
        return [f"INMOBI_SESSION_URL: no session from {where}: {exc}"]
    note(f"inmobi: generated a session at {where} as {config.username}")
    return []


def _scrub(line: str, settings: Settings) -> str:
    """Blank any secret value that found its way into a message (a second line of defence)."""
    for secret in (settings.inmobi_api_key, settings.kafka_sasl_password):
        value = secret.get_secret_value() if secret else ""
        if value:
            line = line.replace(value, "[redacted]")
    return line
