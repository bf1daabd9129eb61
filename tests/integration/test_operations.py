"""Issue 6 "Operable": metrics and health of a real worker, `status`, DLQ replay, connect checks.

Events here are published one per produce request (a flush after each): the embedded broker's
ListOffsets "latest" counts record batches, so only unbatched topics let `status` end offsets be
compared with delivery reports (on Apache Kafka they are right either way). The DLQ replay does
not depend on it (it reads up to the high watermark a fetch reports), but the replay test still
dead-letters exactly one record, so that even ListOffsets alone would be right there.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import (
    Names,
    Stream,
    WorkerProcess,
    committed_reaches,
    generated,
    http_json,
    wait_until,
    worker_env,
)
from worker.avro_fast import BUNDLED_SCHEMA_JSON
from worker.config import Settings
from worker.dlq_records import REPLAYED_FROM, Verdict
from worker.embedded import EmbeddedBroker, free_port
from worker.generator import GeneratedRecord, encode_framed, encode_json
from worker.kafka import EventProducer, create_topics, read_all, watermark_offsets
from worker.ops import check_connect, replay_dlq, status
from worker.sandbox.server import SandboxThread

pytestmark = pytest.mark.integration

# name -> labels every sample of it must carry
REQUIRED_METRICS: dict[str, set[str]] = {
    "inmobi_sync_events_total": {"result"},
    "inmobi_sync_buffered_ids": set(),
    "inmobi_sync_flushes_total": {"reason"},
    "inmobi_sync_uploads_total": {"action", "status"},
    "inmobi_sync_upload_duration_seconds_bucket": {"le"},
    "inmobi_sync_upload_duration_seconds_count": set(),
    "inmobi_sync_upload_duration_seconds_sum": set(),
    "inmobi_sync_dlq_total": {"stage"},
    "inmobi_sync_commit_lag": {"partition"},
    "inmobi_sync_oldest_buffered_age_seconds": set(),
    "inmobi_sync_session_refreshes_total": {"result"},
}
CONSUMER_LAG = "inmobi_sync_consumer_lag"

Samples = dict[str, list[tuple[dict[str, str], float]]]


def publish_unbatched(
    bootstrap: str, names: Names, records: Iterable[GeneratedRecord], partitions: int
) -> Stream:
    conf = {"bootstrap.servers": bootstrap}
    create_topics(conf, {names.topic: partitions, names.dlq: 1})
    producer = EventProducer(conf | {"enable.idempotence": True, "acks": "all"}, names.topic)
    stream = Stream(names.topic)
    for r in records:
        producer.send(r.key, r.value)
        assert producer.flush(30) == 0  # one record per request: see the module docstring
        stream.records.append(r)
    assert producer.failed == 0
    stream.end_offsets = dict(producer.end_offsets)
    return stream


def settings_of(env: Mapping[str, str], **overrides: Any) -> Settings:
    """The worker's settings, as the CLI would build them from `env` (no `.env` file)."""
    fields = {k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}
    return Settings(_env_file=None, **(fields | overrides))  # type: ignore[call-arg]


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(port: int) -> Samples:
    code, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        v for got, v in samples.get(name, []) if all(got.get(k) == x for k, x in labels.items())
    )


def http_port(worker: WorkerProcess) -> int | None:
    for event in worker.events():
        if event.get("event") == "worker_started":
            return int(event["http_port"])
    return None


def started_port(worker: WorkerProcess) -> int:
    wait_until(lambda: http_port(worker) is not None, 30, "the worker logs worker_started")
    port = http_port(worker)
    assert port is not None
    assert port > 0
    return port


# --- one worker, caught up, shared by the metrics, health and status tests ----------------------


@dataclass
class CaughtUp:
    names: Names
    env: dict[str, str]
    stream: Stream
    port: int
    good: int
    bad: int


@pytest.fixture(scope="module")
def caught_up(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CaughtUp]:
    names = Names()
    records = generated(
        count=300,
        segments=("high_value users", "Gamers", "vip"),
        devices=120,
        remove_share=0.2,
        bad_share=0.03,
        encodings=("avro", "json"),
        seed=11,
    )
    bad = sum(r.bad for r in records)
    assert 0 < bad < len(records)
    stream = publish_unbatched(broker.bootstrap, names, records, partitions=4)
    with SandboxThread() as sandbox:
        env = worker_env(broker.bootstrap, sandbox.url, names)
        worker = WorkerProcess(env, tmp_path_factory.mktemp("ops"))
        try:
            port = started_port(worker)
            wait_until(
                lambda: committed_reaches(
                    broker.bootstrap, names.group, names.topic, stream.end_offsets
                ),
                timeout=90,
                what="committed offsets reach the end offsets",
            )
            yield CaughtUp(names, env, stream, port, len(records) - bad, bad)
        finally:
            code = worker.stop()
        assert code == 0, worker.log_path.read_text()[-3000:]


def test_metrics_exposes_every_operational_series_with_its_labels(caught_up: CaughtUp) -> None:
    samples = scrape(caught_up.port)
    missing = [name for name in REQUIRED_METRICS if not samples.get(name)]
    assert not missing, f"no samples for {missing}"
    for name, labels in REQUIRED_METRICS.items():
        for got, _value in samples[name]:
            assert labels <= set(got), (name, got)


def test_metrics_follow_the_workload_once_caught_up(caught_up: CaughtUp) -> None:
    def settled() -> bool:
        s = scrape(caught_up.port)
        return (
            total(s, "inmobi_sync_events_total", result="accepted") == caught_up.good
            and total(s, "inmobi_sync_dlq_total") == caught_up.bad
            and total(s, "inmobi_sync_commit_lag") == 0
            and total(s, "inmobi_sync_buffered_ids") == 0
        )

    wait_until(settled, 20, "accepted events, DLQ count and lags settle")
    s = scrape(caught_up.port)
    assert total(s, "inmobi_sync_events_total", result="rejected") == caught_up.bad
    assert {got["stage"] for got, _v in s["inmobi_sync_dlq_total"]} <= {"DECODE", "VALIDATE"}
    assert total(s, "inmobi_sync_uploads_total", status="ok") > 0
    assert total(s, "inmobi_sync_upload_duration_seconds_count") > 0
    assert total(s, "inmobi_sync_flushes_total") > 0
    assert total(s, "inmobi_sync_session_refreshes_total", result="ok") >= 1
    assert total(s, "inmobi_sync_oldest_buffered_age_seconds") == 0


def test_consumer_lag_is_reported_per_partition_and_reaches_zero(caught_up: CaughtUp) -> None:
    def zero_everywhere() -> bool:
        lags = {got["partition"]: v for got, v in scrape(caught_up.port)[CONSUMER_LAG]}
        return lags == {str(p): 0 for p in caught_up.stream.end_offsets}

    wait_until(zero_everywhere, 20, "consumer lag 0 on every partition")


def test_health_and_readiness_answer_json(caught_up: CaughtUp) -> None:
    code, body = http_get(f"http://127.0.0.1:{caught_up.port}/healthz")
    assert code == 200
    assert json.loads(body)["ok"] is True
    code, body = http_get(f"http://127.0.0.1:{caught_up.port}/readyz")
    ready = json.loads(body)
    assert code == 200, ready
    assert ready["ok"] is True
    assert ready["assigned"] is True


def test_status_after_catch_up_shows_zero_lag_on_every_partition(caught_up: CaughtUp) -> None:
    report = status(settings_of(caught_up.env))
    ends = caught_up.stream.end_offsets
    assert [p.partition for p in report.partitions] == [0, 1, 2, 3]
    for p in report.partitions:
        assert (p.committed, p.end, p.lag) == (ends[p.partition], ends[p.partition], 0), p
    assert report.total_lag == 0


# --- DLQ replay ----------------------------------------------------------------------------------


def test_dlq_replay_republishes_the_record_with_its_key_value_and_origin(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names, log_dir: Path
) -> None:
    bad_key = b"replay-device-1"
    bad_value = encode_json(
        {
            "event_id": str(uuid.uuid4()),
            "segment": "replay me",
            "op": "ADD",
            "id_type": "IDFA",
            "device_id": "not-a-uuid",
            "occurred_at": 1_700_000_000_000,
        }
    )
    good = generated(count=20, segments=("vip",), devices=10, encodings=("json",), seed=5)
    bad = GeneratedRecord(bad_key, bad_value, "json", True, None)
    stream = publish_unbatched(broker.bootstrap, names, [*good[:10], bad, *good[10:]], 2)
    env = worker_env(broker.bootstrap, sandbox.url, names)
    settings = settings_of(env)
    conf = {"bootstrap.servers": broker.bootstrap}
    worker = WorkerProcess(env, log_dir)
    try:
        wait_until(
            lambda: committed_reaches(
                broker.bootstrap, names.group, names.topic, stream.end_offsets
            ),
            timeout=60,
            what="the worker commits past the bad record",
        )
        assert watermark_offsets(conf, names.dlq, [0]) == {0: (0, 1)}

        other = replay_dlq(settings, stage="DECODE", segment=None, dry_run=True, progress=print)
        assert (other.scanned, other.matched) == (1, 0)
        dry = replay_dlq(
            settings, stage="VALIDATE", segment="REPLAY_ME", dry_run=True, progress=print
        )
        assert (dry.scanned, dry.matched, dry.written) == (1, 1, 0)

        progress: list[tuple[int, int]] = []
        report = replay_dlq(
            settings,
            stage="VALIDATE",
            segment=None,
            dry_run=False,
            progress=lambda s, m: progress.append((s, m)),
            progress_every=1,
        )
        assert (report.matched, report.written, report.failed) == (1, 1, 0)
        assert progress == [(1, 1)]

        ends = stream.end_offsets | report.target_end_offsets
        replayed = [
            m
            for m in read_all(conf, names.topic, ends)
            if any(k == REPLAYED_FROM for k, _v in m.headers)
        ]
        assert len(replayed) == 1
        assert (replayed[0].key, replayed[0].value) == (bad_key, bad_value)
        assert replayed[0].headers == [(REPLAYED_FROM, f"{names.dlq}:0:0".encode())]

        # Still bad: the worker dead-letters the replayed copy again, pointing at its new offset.
        wait_until(
            lambda: committed_reaches(broker.bootstrap, names.group, names.topic, ends),
            timeout=60,
            what="the worker commits past the replayed record",
        )
        again = read_all(conf, names.dlq, {0: 2})[1]
        headers = dict(again.headers)
        assert (again.key, again.value) == (bad_key, bad_value)
        assert headers["__connect.errors.offset"] == str(replayed[0].offset).encode()
        assert headers["__connect.errors.stage"] == b"VALIDATE"
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text()[-3000:]


def test_dlq_replay_filters_by_segment_read_from_framed_json_and_unknown_values(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names
) -> None:
    schema_id = http_json(
        f"{sandbox.url}/registry/subjects/{names.topic}-value/versions",
        "POST",
        {"schema": BUNDLED_SCHEMA_JSON},
    )["id"]
    change = {
        "event_id": str(uuid.uuid4()),
        "segment": "vip",
        "op": "ADD",
        "id_type": "DEVICE_ID",
        "device_id": "device-1",
        "occurred_at": 1_700_000_000_000,
    }
    framed = encode_framed(schema_id, change)
    dlq_values = [
        (framed, b"VALIDATE"),
        (encode_framed(999_999, change), b"DECODE"),  # the registry does not know this schema
        (encode_json({**change, "segment": "Gamers"}), b"VALIDATE"),
    ]
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, {names.topic: 1, names.dlq: 1})
    producer = EventProducer(conf, names.dlq)
    for value, stage in dlq_values:
        producer.send(b"device-1", value, [("__connect.errors.stage", stage)])
        assert producer.flush(30) == 0  # one batch per record: see the module docstring
    settings = settings_of(worker_env(broker.bootstrap, sandbox.url, names))

    dry = replay_dlq(settings, stage=None, segment="VIP", dry_run=True, progress=print)
    assert dry.counts == {
        Verdict.REPLAY: 1,
        Verdict.OTHER_STAGE: 0,
        Verdict.OTHER_SEGMENT: 1,
        Verdict.UNREADABLE: 1,
    }
    report = replay_dlq(settings, stage="validate", segment="vip", dry_run=False, progress=print)
    assert (report.scanned, report.written) == (3, 1)
    [replayed] = read_all(conf, names.topic, report.target_end_offsets)
    assert (replayed.key, replayed.value) == (b"device-1", framed)
    assert replayed.headers == [(REPLAYED_FROM, f"{names.dlq}:0:0".encode())]


def test_dlq_replay_reads_a_batched_dlq_to_its_end(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names
) -> None:
    conf = {"bootstrap.servers": broker.bootstrap}
    create_topics(conf, {names.topic: 1, names.dlq: 2})
    producer = EventProducer(conf, names.dlq)
    for i in range(500):  # batched: the test broker's ListOffsets alone would undercount
        producer.send(f"k{i}".encode(), b"garbage", [("__connect.errors.stage", b"DECODE")])
    assert producer.flush(30) == 0
    assert sum(producer.end_offsets.values()) == 500
    settings = settings_of(worker_env(broker.bootstrap, sandbox.url, names))
    progress: list[tuple[int, int]] = []
    report = replay_dlq(
        settings,
        stage="DECODE",
        segment=None,
        dry_run=True,
        progress=lambda s, m: progress.append((s, m)),
        progress_every=200,
    )
    assert (report.scanned, report.matched, report.written) == (500, 500, 0)
    assert progress == [(200, 200), (400, 400)]


# --- check_connect -------------------------------------------------------------------------------


def test_check_connect_passes_against_the_broker_and_sandbox(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names
) -> None:
    create_topics({"bootstrap.servers": broker.bootstrap}, {names.topic: 2, names.dlq: 1})
    notes: list[str] = []
    problems = check_connect(
        settings_of(worker_env(broker.bootstrap, sandbox.url, names)), note=notes.append
    )
    assert problems == []
    assert any(n.startswith("kafka: reached") for n in notes)
    assert f"KAFKA_TOPIC: topic {names.topic} exists (2 partitions)" in notes
    assert any(n.startswith("schema registry: reached") for n in notes)
    assert any(n.startswith("inmobi: generated a session") for n in notes)


def test_check_connect_reports_a_refused_key_and_missing_topics_without_the_key(
    broker: EmbeddedBroker, sandbox: SandboxThread, names: Names
) -> None:
    key = f"wrong-key-{uuid.uuid4().hex}"
    notes: list[str] = []
    settings = settings_of(worker_env(broker.bootstrap, sandbox.url, names), inmobi_api_key=key)
    problems = check_connect(settings, note=notes.append)
    assert [p.split(":")[0] for p in problems] == [
        "KAFKA_TOPIC",
        "KAFKA_DLQ_TOPIC",
        "INMOBI_USERNAME, INMOBI_ACCOUNT_ID, INMOBI_API_KEY",
    ]
    assert "refused" in problems[2]
    assert all(key not in line for line in problems + notes)


def test_check_connect_names_each_unreachable_service(sandbox: SandboxThread, names: Names) -> None:
    closed = f"127.0.0.1:{free_port()}"
    env = worker_env(
        closed,
        sandbox.url,
        names,
        SCHEMA_REGISTRY_URL=f"{sandbox.url}/no-registry-here",
        INMOBI_SESSION_URL=f"http://{closed}",
    )
    problems = check_connect(settings_of(env), timeout=3)
    assert [p.split(":")[0] for p in problems] == [
        "KAFKA_BOOTSTRAP_SERVERS",
        "SCHEMA_REGISTRY_URL",
        "INMOBI_SESSION_URL",
    ]
    assert "HTTP 404" in problems[1]
