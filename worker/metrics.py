"""Prometheus metrics, every name prefixed `inmobi_sync_`.

Label values stay bounded: segment names (operator-defined), partitions, fixed enums. No device ID
and no secret is ever a label. A `Metrics` instance owns its own registry so tests and several
in-process workers do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "inmobi_sync_events", "Events consumed, by result", ["result"], registry=r
        )
        self.buffered_ids = Gauge(
            "inmobi_sync_buffered_ids", "IDs buffered per segment", ["segment"], registry=r
        )
        self.flushes = Counter(
            "inmobi_sync_flushes", "Buffer flushes, by reason", ["reason"], registry=r
        )
        self.uploads = Counter(
            "inmobi_sync_uploads",
            "Upload requests, by action and status",
            ["action", "status"],
            registry=r,
        )
        self.upload_duration = Histogram(
            "inmobi_sync_upload_duration_seconds",
            "Upload request duration",
            registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.upload_rows = Counter(
            "inmobi_sync_upload_rows", "Rows acknowledged by InMobi", ["action"], registry=r
        )
        self.dlq = Counter(
            "inmobi_sync_dlq", "Records written to the DLQ, by stage", ["stage"], registry=r
        )
        self.commit_lag = Gauge(
            "inmobi_sync_commit_lag",
            "Consumed but not yet committable, per partition",
            ["partition"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "inmobi_sync_consumer_lag",
            "End offset minus committed offset, per partition",
            ["partition"],
            registry=r,
        )
        self.oldest_age = Gauge(
            "inmobi_sync_oldest_buffered_age_seconds",
            "Age of the oldest buffered change",
            registry=r,
        )
        self.session_refreshes = Counter(
            "inmobi_sync_session_refreshes",
            "InMobi session generations, by result",
            ["result"],
            registry=r,
        )
        self.auth_failures = Counter(
            "inmobi_sync_auth_failures", "InMobi authentication failures", registry=r
        )
        self.stuck_segments = Gauge(
            "inmobi_sync_stuck_segments", "Segments whose delivery keeps failing", registry=r
        )
        self.commits = Counter(
            "inmobi_sync_commits", "Offset commits, by result", ["result"], registry=r
        )
        self.paused = Gauge(
            "inmobi_sync_paused_partitions", "Partitions paused for backpressure", registry=r
        )
        self.in_flight = Gauge(
            "inmobi_sync_in_flight_batches", "Batches cut but not yet acknowledged", registry=r
        )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
