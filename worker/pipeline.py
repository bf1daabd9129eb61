"""The pipeline: consume, decode, buffer, flush, deliver, commit.

It sees its adapters only through ports (`SourcePort`, `DlqPort`) and the `Delivery` stage; the
pure core (decoder, buffers, offset tracker) is driven from the event loop thread. Every call to
the consumer runs on one dedicated thread, so rebalance callbacks (invoked inside `poll_batch`)
run there too and hand their work to the loop with `run_coroutine_threadsafe`.

Commit protocol (the only place offsets are committed; every failure commits nothing further and
re-consumption after a restart is the recovery):

1. Every consumed record is accounted for before the batch it came in is marked consumed: it is
   held by a segment buffer (the buffer's first offset per partition), held by a pending DLQ write,
   or ignored (mode) and so already done.
2. A cut batch keeps its buffer's holds while it is delivered; the holds are released only when
   every row was acknowledged by InMobi (2xx) or dead-lettered with a confirmed DLQ write.
3. The committable offset of a partition is its lowest held offset, or the next offset to consume
   when nothing is held (`OffsetTracker.to_commit`).
4. Commits run on the consumer thread, every COMMIT_INTERVAL_SECONDS and after each acknowledged
   batch, only for partitions this worker still owns at that moment and only when the offset moved.
5. On a commit failure nothing is marked committed; the next tick tries again from step 3.
6. On revoke: the buffers holding revoked partitions are flushed, their deliveries awaited up to
   REVOKE_TIMEOUT_SECONDS, and what is committable is committed from inside the callback; anything
   still unacknowledged stays uncommitted and the new owner re-reads it (at-least-once).
   On partition loss nothing is committed for the lost partitions.
7. On shutdown: consumption stops, every buffer is flushed, deliveries and DLQ writes are awaited
   up to SHUTDOWN_TIMEOUT_SECONDS, a final commit runs, and the consumer leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from worker.buffering import Batch, BufferSet, FlushReason, Rows
from worker.decoding import Decoder
from worker.delivery import Delivery
from worker.errors import FatalError, SyncError, TransientError
from worker.fencing import Fence
from worker.ingest import Ingest
from worker.metrics import Metrics
from worker.model import RecordBatch, Rejection, SourceMessage, Stage
from worker.offsets import OffsetTracker
from worker.ports import Clock, DlqPort, SourcePort
from worker.registry import SchemaRegistryClient
from worker.retry import RetryPolicy
from worker.segments import SegmentCatalog

__all__ = ["Pipeline", "PipelineConfig"]

log = structlog.get_logger(__name__)
T = TypeVar("T")


def _drop_result(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned future's outcome, so an error in it is not reported as unhandled."""
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    commit_interval_seconds: float = 1.0
    shutdown_timeout_seconds: float = 30.0
    revoke_timeout_seconds: float = 20.0
    max_buffered_ids: int = 10_000_000
    poll_max_messages: int = 10_000
    process_slice: int = 1_000  # records processed between two yields to the event loop
    poll_timeout_seconds: float = 0.1
    tick_seconds: float = 0.1
    session_timeout_seconds: float = 45.0
    progress_log_seconds: float = 10.0


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        *,
        source: SourcePort,
        dlq: DlqPort,
        decoder: Decoder,
        registry: SchemaRegistryClient | None,
        buffers: BufferSet,
        tracker: OffsetTracker,
        delivery_factory: Any,
        catalog: SegmentCatalog,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self._config = config
        self._source = source
        self._dlq = dlq
        self._decoder = decoder
        self._registry = registry
        self._buffers = buffers
        self._tracker = tracker
        self._metrics = metrics
        self._clock = clock
        self._ingest = Ingest(decoder, buffers, catalog)
        self.fence = Fence(config.session_timeout_seconds)
        self.delivery: Delivery = delivery_factory(
            on_done=self._batch_done,
            on_rejected_row=self._row_rejected,
            epoch_of=self._owned_epoch,
            may_upload=lambda: self.fence.may_act(self._clock.monotonic()),
        )
        buffers.watch_opens(self.delivery.warm)  # segment IDs resolved while buffers fill
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owned: frozenset[int] = frozenset()  # written on the consumer thread only
        self._paused = False
        self._commit_wanted = asyncio.Event()
        self._closing = False
        self.last_poll = 0.0  # monotonic time of the last poll: liveness
        self.assigned_once = False
        self.consumed_records = 0  # records of owned partitions taken in (for progress reports)
        self.fatal: BaseException | None = None

    # -- consumer thread helpers ----------------------------------------------------------------
    async def _on_kafka_thread(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._thread, fn, *args)

    def _in_loop(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """From the consumer thread: run `coro` on the loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- rebalance callbacks (consumer thread) --------------------------------------------------
    def _on_assign(self, partitions: list[int]) -> None:
        with self._group_callback():
            self._assign(partitions)

    def _on_revoke(self, partitions: list[int]) -> None:
        with self._group_callback():
            self._revoke(partitions)

    def _on_lost(self, partitions: list[int]) -> None:
        with self._group_callback():
            self._lose(partitions)

    @contextlib.contextmanager
    def _group_callback(self) -> Iterator[None]:
        self.fence.callback_started()
        try:
            yield
        finally:
            self.fence.callback_finished()

    def _assign(self, partitions: list[int]) -> None:
        self._owned = self._owned | set(partitions)
        self.assigned_once = True
        self._in_loop(self._assigned(partitions), 30)

    def _revoke(self, partitions: list[int]) -> None:
        deadline = 0.0 if self._closing else self._config.revoke_timeout_seconds
        offsets = self._in_loop(self._revoking(set(partitions), deadline), deadline + 10)
        try:
            self._source.commit(offsets)
            self._in_loop(self._committed(offsets), 30)
        except SyncError as exc:
            log.warning("revoke_commit_failed", partitions=partitions, error=str(exc))
        self._owned = self._owned - set(partitions)
        self._in_loop(self._forget(partitions), 30)

    def _lose(self, partitions: list[int]) -> None:
        """Lost, not revoked: another worker may own them already. Commit nothing for them;
        rows of theirs that are buffered or queued are dropped before upload (delivery checks
        ownership), and the new owner re-reads them from the last commit."""
        self._owned = self._owned - set(partitions)
        log.warning("partitions_lost", partitions=partitions)
        self._in_loop(self._forget(partitions), 30)

    async def _assigned(self, partitions: list[int]) -> None:
        for p in partitions:
            self._tracker.assign(p)
        log.info("partitions_assigned", partitions=partitions)

    async def _revoking(self, partitions: set[int], deadline: float) -> dict[int, int]:
        for segment in self._buffers.holding(partitions):
            self._flush(segment, FlushReason.REVOKE)
        if deadline > 0:
            await self._wait_released(partitions, deadline)
        offsets = self._tracker.to_commit(partitions)
        log.info(
            "partitions_revoked",
            partitions=sorted(partitions),
            commit=offsets,
            unacknowledged=self._tracker.outstanding(partitions),
        )
        return offsets

    async def _wait_released(self, partitions: set[int], deadline: float) -> None:
        end = self._clock.monotonic() + deadline
        while self._tracker.outstanding(partitions) and self._clock.monotonic() < end:
            self._dlq.poll(0)
            await asyncio.sleep(0.02)

    async def _committed(self, offsets: dict[int, int]) -> None:
        self._tracker.mark_committed(offsets)

    async def _forget(self, partitions: list[int]) -> None:
        for p in partitions:
            self._tracker.revoke(p)
            with contextlib.suppress(KeyError):
                self._metrics.commit_lag.remove(str(p))
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(str(p))

    # -- processing (loop thread) ---------------------------------------------------------------
    async def _ensure_schemas(self, batch: RecordBatch) -> None:
        missing = self._decoder.missing_schema_ids(batch.values)
        if not missing or self._registry is None:
            return
        attempt = 0
        policy = RetryPolicy(cap_seconds=10)
        for schema_id in sorted(missing):
            while True:
                try:
                    text = await self._registry.fetch(schema_id)
                    break
                except TransientError as exc:
                    log.warning("schema_registry_unavailable", schema_id=schema_id, error=str(exc))
                    await asyncio.sleep(policy.delay(attempt, 0.5))
                    attempt += 1
            if text is None:
                self._decoder.mark_schema_missing(schema_id)
            else:
                self._decoder.add_writer_schema(schema_id, text)

    def _process(self, batch: RecordBatch, owned: frozenset[int]) -> None:
        """Protocol step 1 for polled records: every record of an ``owned`` partition ends
        buffered, ignored or held by a DLQ write before its offset counts as consumed."""
        done = self._ingest.take(batch, owned, self._clock.monotonic(), self._flush)
        if done.rejected:
            self._dead_letter_all(done.rejected)
        for p, offset in done.last_offsets.items():
            self._tracker.consumed(p, offset)
        self.consumed_records += done.records
        self._metrics.events.labels(result="accepted").inc(done.accepted)
        self._metrics.events.labels(result="ignored").inc(done.ignored)
        if self._buffers.buffered > self._config.max_buffered_ids:
            self._relieve_memory()

    def _dead_letter_all(self, rejected: list[tuple[SourceMessage, Rejection]]) -> None:
        """DLQ a slice's bad records; one log event for all of them (each one at debug level).

        A log line per record would turn a flood of bad input into a flood of log lines, and
        each write costs the event loop far more than the record itself. The DLQ holds every
        record with its reason, and `inmobi_sync_dlq_total` counts them by stage.
        """
        stages: dict[str, int] = {}
        for msg, rejection in rejected:
            stages[rejection.stage.value] = stages.get(rejection.stage.value, 0) + 1
            self._dead_letter(msg, rejection, level="debug")
        first_msg, first = rejected[0]
        log.info(
            "records_rejected",
            count=len(rejected),
            stages=stages,
            first_partition=first_msg.partition,
            first_offset=first_msg.offset,
            first_reason=first.message,
        )

    def _dead_letter(self, msg: SourceMessage, rejection: Rejection, level: str = "info") -> None:
        epoch = self._tracker.hold(msg.partition, msg.offset)
        self._metrics.events.labels(result="rejected").inc()

        def done(error: str | None) -> None:
            if error is not None:  # not confirmed: keep holding; never commit past it
                log.error(
                    "dlq_write_failed", partition=msg.partition, offset=msg.offset, error=error
                )
                self.fatal = self.fatal or FatalError(f"DLQ write failed: {error}")
                return
            self._metrics.dlq.labels(stage=rejection.stage.value).inc()
            self._tracker.release(msg.partition, msg.offset, epoch)

        (log.debug if level == "debug" else log.info)(
            "record_rejected",
            partition=msg.partition,
            offset=msg.offset,
            stage=rejection.stage.value,
            reason=rejection.message,
        )
        self._dlq.send(msg, rejection, done)

    def _owned_epoch(self, partition: int) -> int | None:
        """The tracker epoch of an owned partition; None when this worker does not own it."""
        return self._tracker.epoch(partition) if partition in self._owned else None

    def _row_rejected(self, segment: str, rows: Rows, reason: str, epoch: int) -> None:
        """A row InMobi rejected on its own: DLQ it (stage UPLOAD) as a JSON change.

        The original bytes are not kept once buffered, so the value is the change re-encoded as
        JSON with the same field names (replayable with `inmobi-sync dlq replay`); its event_id is
        derived from the source position, and occurred_at is 0 (unknown).
        """
        p, o, device = rows.partitions[0], rows.offsets[0], rows.ids[0]
        if self._owned_epoch(p) != epoch:  # the partition moved on: its new owner re-reads it
            log.info("rejected_row_not_owned", partition=p, offset=o)
            return
        event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{self._source.topic}/{p}/{o}/{device}")
        value = json.dumps(
            {
                "event_id": str(event_id),
                "segment": segment,
                "op": rows.op.name,
                "id_type": rows.id_type.name,
                "device_id": device,
                "occurred_at": 0,
            }
        ).encode()
        msg = SourceMessage(self._source.topic, p, o, device.encode(), value, 0)
        self._dead_letter(msg, Rejection(Stage.UPLOAD, "FileRejectedError", reason, p, o))

    def _flush(self, segment: str, reason: FlushReason) -> None:
        batch = self._buffers.cut(segment, reason)
        if batch is None:
            return
        self._metrics.flushes.labels(reason=reason.value).inc()
        self._metrics.buffered_ids.labels(segment=segment).set(0)
        self.delivery.submit(batch)

    def _relieve_memory(self) -> None:
        for segment in self._buffers.largest():
            if self._buffers.buffered <= self._config.max_buffered_ids // 2:
                break
            self._flush(segment, FlushReason.MEMORY)

    def _batch_done(self, batch: Batch) -> None:
        for partition, offset, epoch in batch.holds:
            self._tracker.release(partition, offset, epoch)
        self._commit_wanted.set()

    # -- periodic work --------------------------------------------------------------------------
    async def _commit(self) -> None:
        if not self.fence.may_act(self._clock.monotonic()):
            log.warning("commit_fenced", reason="the worker may have lost its partitions")
            return
        offsets = self._tracker.to_commit(set(self._owned))
        if not offsets:
            return
        try:
            done = await self._on_kafka_thread(self._commit_owned, offsets)
        except SyncError as exc:
            self._metrics.commits.labels(result="failed").inc()
            log.warning("commit_failed", error=str(exc))
            return
        self._tracker.mark_committed(done)
        self._metrics.commits.labels(result="ok").inc()
        log.debug("offsets_committed", offsets=done)

    def _commit_owned(self, offsets: dict[int, int]) -> dict[int, int]:
        """On the consumer thread: commit only what is still owned at this moment."""
        owned = {p: o for p, o in offsets.items() if p in self._owned}
        self._source.commit(owned)
        return owned

    def _backpressure(self) -> None:
        """Pause every owned partition while buffered plus in-flight changes pass the cap.

        Polling goes on while paused, so the group stays healthy; consumption resumes below half
        the cap. Buffers past the cap were already cut early (`_relieve_memory`), so what holds
        memory here is uploads InMobi has not acknowledged yet.
        """
        held = self.delivery.rows_in_flight + self._buffers.buffered
        limit = self._config.max_buffered_ids
        if not self._paused and held > limit:
            self._paused = True
            self._thread.submit(self._source.pause, sorted(self._owned))
            log.warning("consumption_paused", changes_held=held)
        elif self._paused and held <= limit // 2:
            self._paused = False
            self._thread.submit(self._source.resume, sorted(self._owned))
            log.info("consumption_resumed", changes_held=held)
        self._metrics.paused.set(len(self._owned) if self._paused else 0)

    async def _ticker(self, stop: asyncio.Event) -> None:
        next_commit = next_progress = self._clock.monotonic()
        while not stop.is_set():
            now = self._clock.monotonic()
            for segment, reason in self._buffers.due(now):
                self._flush(segment, reason)
            self._dlq.poll(0)
            self._backpressure()
            if self._commit_wanted.is_set() or now >= next_commit:
                self._commit_wanted.clear()
                next_commit = now + self._config.commit_interval_seconds
                await self._commit()
                self._observe(now, await self._on_kafka_thread(self._owned_high_watermarks))
            if now >= next_progress:
                next_progress = now + self._config.progress_log_seconds
                self._log_progress()
            if self.delivery.fatal or self.fatal:
                self.fatal = self.fatal or self.delivery.fatal
                stop.set()
            await asyncio.sleep(self._config.tick_seconds)

    def _log_progress(self) -> None:
        log.info(
            "progress",
            consumed=self.consumed_records,
            buffered=self._buffers.buffered,
            batches_in_flight=self.delivery.batches_in_flight(),
            partitions=sorted(self._owned),
        )

    def _owned_high_watermarks(self) -> dict[int, int]:
        """On the consumer thread: end offsets of owned partitions as the last fetch saw them."""
        return self._source.high_watermarks(sorted(self._owned))

    def _observe(self, now: float, high_watermarks: dict[int, int]) -> None:
        m = self._metrics
        for segment, size in self._buffers.sizes().items():
            m.buffered_ids.labels(segment=segment).set(size)
        oldest = self._buffers.oldest()
        m.oldest_age.set(0 if oldest is None else now - oldest)
        for p, lag in self._tracker.lag().items():
            m.commit_lag.labels(partition=str(p)).set(lag)
        for p, high in high_watermarks.items():
            st = self._tracker.state(p)
            if st is not None and st.committed is not None:  # known once committed here
                m.consumer_lag.labels(partition=str(p)).set(high - st.committed)
        m.in_flight.set(self.delivery.batches_in_flight())
        m.stuck_segments.set(len(self.delivery.stuck()))

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then drain and commit (protocol steps 7)."""
        self._loop = asyncio.get_running_loop()
        await self._on_kafka_thread(
            self._source.subscribe, self._on_assign, self._on_revoke, self._on_lost
        )
        ticker = asyncio.create_task(self._ticker(stop))
        try:
            await self._consume(stop)
        finally:
            await self._shutdown(ticker)

    async def _consume(self, stop: asyncio.Event) -> None:
        """Poll and process, overlapped: the next batch is fetched while this one is processed.

        A stop ends it at once, even while a poll waits up to its timeout for records.

        Rebalance callbacks run inside the poll on the consumer thread and wait for the loop, so
        they take effect between two processed slices, never in the middle of one.
        """
        pending = self._poll()
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                await asyncio.wait((pending, stopped), return_when=asyncio.FIRST_COMPLETED)
                if not pending.done():
                    break  # stopped while the poll waits for records: do not wait them out
                batch = pending.result()
                self.fence.polled(self._clock.monotonic())
                pending = self._poll()
                await self._process_sliced(batch)
        finally:
            stopped.cancel()
        if pending.done():  # consumed from Kafka: process it, it is committed like any other
            await self._process_sliced(pending.result())
        else:
            pending.add_done_callback(_drop_result)
        # Otherwise whatever it returns is dropped: never processed, so never committed, and
        # read again by the partition's next owner. The drain does not wait for an empty poll.

    async def _process_sliced(self, batch: RecordBatch) -> None:
        """Process a polled batch a slice at a time, yielding to the loop after each slice.

        Processing is synchronous; without the yields, deliveries (which need a loop iteration
        for every step of an upload) would advance once per polled batch and fall behind while
        a backlog is consumed. A rebalance callback may run between two slices: each slice is
        taken only for partitions still in the assignment the batch was fetched in (same
        tracker epoch); records of a partition that left, even if it came back, are skipped
        like any record fetched before a revoke (the new assignment fetches them again).
        """
        if not len(batch):
            return
        epoch = self._tracker.epoch
        fetched_in = {p: epoch(p) for p in set(batch.partitions)}
        await self._ensure_schemas(batch)
        step = self._config.process_slice
        for start in range(0, len(batch), step):
            owned = frozenset(
                p
                for p, e in fetched_in.items()
                if e is not None and p in self._owned and epoch(p) == e
            )
            self._process(batch.slice(start, start + step) if len(batch) > step else batch, owned)
            await asyncio.sleep(0)

    def _poll(self) -> asyncio.Future[RecordBatch]:
        cfg = self._config
        self.last_poll = self._clock.monotonic()
        assert self._loop is not None
        return self._loop.run_in_executor(
            self._thread, self._source.poll_batch, cfg.poll_max_messages, cfg.poll_timeout_seconds
        )

    async def _keep_polling(self, done: asyncio.Event) -> None:
        """While draining: partitions paused, keep serving the group (rebalance callbacks, the
        fence) so a long drain neither fences itself nor misses a loss."""
        await self._on_kafka_thread(self._source.pause, sorted(self._owned))
        while not done.is_set():
            await self._on_kafka_thread(self._source.poll_batch, 1, 0.1)  # paused: nothing comes
            self.fence.polled(self._clock.monotonic())

    async def _shutdown(self, ticker: asyncio.Task[None]) -> None:
        cfg = self._config
        self._closing = True
        log.info("shutdown_started", buffered=self._buffers.buffered)
        for segment in self._buffers.largest():  # longest uploads first: the drain ends sooner
            self._flush(segment, FlushReason.SHUTDOWN)
        end = self._clock.monotonic() + cfg.shutdown_timeout_seconds
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_polling(done))
        drained = self.fatal is None and await self.delivery.drain(cfg.shutdown_timeout_seconds)
        while self._dlq.flush(0) and self._clock.monotonic() < end:
            await asyncio.sleep(0.05)  # DLQ deliveries confirm on this thread (their callbacks)
        left = self._dlq.flush(0)
        done.set()
        await asyncio.gather(keeper, return_exceptions=True)
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
        if self.fatal is None:
            await self._commit()
        await self.delivery.close()
        await self._on_kafka_thread(self._source.close)
        self._thread.shutdown(wait=True)
        self._log_progress()
        log.info(
            "shutdown_finished",
            drained=drained,
            dlq_unconfirmed=left,
            unacknowledged=self._tracker.outstanding(set(self._tracker.partitions())),
        )
