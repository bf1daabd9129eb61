"""The composition of `inmobi-sync run`: settings → adapters → pipeline, plus health and signals.

Exit codes: 0 after a clean drain (SIGTERM/SIGINT), 1 on a fatal error (nothing further is
committed; the next start re-consumes from the last commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from worker.buffering import BufferLimits, BufferSet
from worker.config import Settings
from worker.decoding import Decoder
from worker.delivery import Delivery
from worker.directory import SegmentDirectory
from worker.encoding import FileLimits
from worker.errors import FatalError, SyncError
from worker.inmobi import InMobiClient, InMobiConfig, RequestGate, SessionManager
from worker.kafka import DlqSink, KafkaSource, consumer_config, producer_config
from worker.kafka_registry import SegmentRegistry
from worker.metrics import Metrics
from worker.observability import Readiness, bound_port, start_http
from worker.offsets import OffsetTracker
from worker.pipeline import Pipeline, PipelineConfig
from worker.registry import SchemaRegistryClient

__all__ = ["MonotonicClock", "run_worker"]

log = structlog.get_logger(__name__)

STUCK_READINESS_SECONDS = 300.0


class MonotonicClock:
    def monotonic(self) -> float:
        return time.monotonic()


def worker_id() -> str:
    """Unique per process: two live processes sharing one would both win a claim."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _pipeline_config(s: Settings) -> PipelineConfig:
    return PipelineConfig(
        commit_interval_seconds=s.commit_interval_seconds,
        shutdown_timeout_seconds=s.shutdown_timeout_seconds,
        revoke_timeout_seconds=s.revoke_timeout_seconds,
        max_buffered_ids=s.max_buffered_ids,
        session_timeout_seconds=s.kafka_session_timeout_ms / 1000,
        progress_log_seconds=s.progress_log_seconds,
    )


async def keep_session(
    sessions: SessionManager, on_fatal: Callable[[FatalError], None], every: float = 60.0
) -> None:
    """Hold a valid InMobi session even while idle, so readiness can require one: generated at
    start, refreshed ahead of expiry by `SessionManager.get`. Failures are logged and retried;
    credentials refused again and again (FatalError) stop the worker."""
    while True:
        try:
            await sessions.get()
        except FatalError as exc:
            on_fatal(exc)
            return
        except SyncError as exc:
            log.warning("session_unavailable", error_class=type(exc).__name__, error=str(exc))
        await asyncio.sleep(every)


def _readiness(pipeline: Pipeline, sessions: SessionManager) -> Readiness:
    stuck = {
        name: h.last_error
        for name, h in pipeline.delivery.stuck().items()
        if h.failing_since is not None
        and time.monotonic() - h.failing_since > STUCK_READINESS_SECONDS
    }
    reasons = {
        "assigned": pipeline.assigned_once,
        "inmobi_session": sessions.valid,
        "stuck_segments": stuck,
    }
    return Readiness(not stuck and sessions.valid and pipeline.fatal is None, reasons)


def _liveness(pipeline: Pipeline, limit: float) -> Readiness:
    since = time.monotonic() - pipeline.last_poll if pipeline.last_poll else 0.0
    return Readiness(since < limit, {"seconds_since_poll": round(since, 3)})


async def run_worker(
    settings: Settings,
    stop: asyncio.Event | None = None,
    early_stop: threading.Event | None = None,
) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if early_stop is not None and early_stop.is_set():
        stop.set()
    metrics = Metrics()
    catalog = settings.load_segments()
    tracker = OffsetTracker()
    buffers = BufferSet(
        BufferLimits(
            settings.flush_max_ids,
            settings.flush_max_bytes,
            settings.flush_max_age_seconds,
            settings.flush_age_spread,
        ),
        tracker,
    )
    limits = FileLimits(
        settings.inmobi_max_rows_per_file, settings.inmobi_max_bytes_per_file, settings.gzip_level
    )
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        sessions = SessionManager(
            InMobiConfig.from_settings(settings),
            http,
            time.monotonic,
            on_refresh=lambda ok: metrics.session_refreshes.labels(
                result="ok" if ok else "failed"
            ).inc(),
        )
        gate = RequestGate(settings.inmobi_requests_per_second, time.monotonic)
        client = InMobiClient(InMobiConfig.from_settings(settings), http, sessions, gate)
        registry_log = SegmentRegistry(
            producer_config(settings),
            consumer_config(settings),
            settings.segment_registry_topic,
            worker_id(),
            claim_ttl_seconds=settings.segment_claim_ttl_seconds,
        )
        await registry_log.start()
        stack.push_async_callback(registry_log.close)
        directory = SegmentDirectory(catalog, client, registry_log)

        def make_delivery(**hooks: Any) -> Delivery:
            return Delivery(
                client,
                directory,
                settings.csv_columns,
                limits,
                metrics=metrics,
                concurrency=settings.inmobi_max_concurrent_uploads,
                **hooks,
            )

        registry = (
            SchemaRegistryClient(settings.schema_registry_url.rstrip("/"), http)
            if settings.schema_registry_url
            else None
        )
        pipeline = Pipeline(
            _pipeline_config(settings),
            source=KafkaSource(consumer_config(settings), settings.kafka_topic),
            dlq=DlqSink(producer_config(settings), settings.kafka_dlq_topic),
            decoder=Decoder(registry_enabled=registry is not None),
            registry=registry,
            buffers=buffers,
            tracker=tracker,
            delivery_factory=make_delivery,
            catalog=catalog,
            metrics=metrics,
            clock=MonotonicClock(),
        )
        live_limit = max(30.0, settings.revoke_timeout_seconds + 15)
        runner = await start_http(
            settings.http_port,
            metrics,
            live=lambda: _liveness(pipeline, live_limit),
            ready=lambda: _readiness(pipeline, sessions),
        )
        log.info(
            "worker_started",
            topic=settings.kafka_topic,
            group=settings.kafka_group_id,
            http_port=bound_port(runner),
        )

        def fatal(exc: FatalError) -> None:
            pipeline.fatal = pipeline.fatal or exc
            stop.set()

        keeper = asyncio.create_task(keep_session(sessions, fatal))
        try:
            await pipeline.run(stop)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await runner.cleanup()
    if pipeline.fatal is not None:
        log.error("worker_failed", error=str(pipeline.fatal))
        return 1
    log.info("worker_stopped")
    return 0
