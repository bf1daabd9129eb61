"""Delivery of cut batches to InMobi: one queue per segment, bounded concurrency across segments.

- Order: each segment has one task that uploads its batches one at a time, file by file, so two
  uploads of one segment are never in flight together and a later batch never overtakes an earlier
  one (CONTRACT section 2). Different segments upload concurrently, bounded by a semaphore.
- Retries: transient failures (429, 5xx, timeouts) and auth failures are retried with the
  `RetryPolicy` schedule, Retry-After honoured, re-sending the identical file. Nothing is ever
  dropped by giving up: a segment that keeps failing stops advancing (its batches keep their
  offset holds) and is reported as stuck.
- Rejected files (400, 413) are split in halves until the rejected rows are isolated; a single
  row InMobi rejects on its own is handed to `on_rejected_row` (the pipeline sends it to the DLQ).
- 404: retried like an outage and reported as stuck; the worker never re-creates a segment on its
  own, because a 404 that is not final would leave a duplicate segment behind. An operator puts
  the right ID into SEGMENTS_FILE (which always wins) and restarts.

- Ownership and fencing: before a file is sent, delivery waits while the pipeline says it may have
  lost its partitions (`may_upload` is False: a long pause, a broker unreachable past the session
  timeout), then drops the rows of partitions that left the assignment their batch was cut in
  (`epoch_of`: a partition that went away and came back is a new assignment). The new owner re-reads
  those changes from the last commit, so a stale add of this worker can never be sent after a
  newer remove of the new owner. (A request already on the wire cannot be recalled: while the
  process runs its window is bounded by INMOBI_REQUEST_TIMEOUT_SECONDS; a request half-written
  when the process is frozen completes when it resumes.)

- Encoding: last write wins and compression run in one thread of their own, batch after batch in
  the order they were submitted (the largest first at shutdown), while the loop uploads what is
  ready. More threads would only take turns at the GIL, and every step of every upload would wait
  behind them: with the default pool the first upload of a 100-segment drain came after 0.5-0.9 s
  (0.1 s with one thread).

A batch is reported to `on_done` only when every one of its rows was acknowledged, dead-lettered,
or dropped because its partition went to another worker (its hold belongs to an old epoch then).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from worker.buffering import Batch, Rows
from worker.directory import SegmentDirectory
from worker.encoding import EncodedFile, FileLimits, encode_rows
from worker.errors import (
    AuthError,
    FileRejectedError,
    SyncError,
    TransientError,
    UnknownSegmentError,
)
from worker.metrics import Metrics
from worker.model import IdType
from worker.ports import InMobiPort
from worker.retry import RetryPolicy

__all__ = ["Delivery", "SegmentHealth"]

Epochs = dict[int, int]  # partition -> tracker epoch of the assignment a batch was cut in

log = structlog.get_logger(__name__)

STUCK_AFTER_ATTEMPTS = 5


@dataclass(slots=True)
class SegmentHealth:
    queue: deque[Batch] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    failures: int = 0  # consecutive failed attempts
    failing_since: float | None = None
    last_error: str | None = None


class Delivery:
    def __init__(
        self,
        client: InMobiPort,
        directory: SegmentDirectory,
        columns: Mapping[IdType, str],
        limits: FileLimits,
        *,
        metrics: Metrics,
        on_done: Callable[[Batch], None],
        on_rejected_row: Callable[[str, Rows, str, int], None],
        concurrency: int = 4,
        policy: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        epoch_of: Callable[[int], int | None] | None = None,
        may_upload: Callable[[], bool] = lambda: True,
    ) -> None:
        self._epoch_of = epoch_of
        self._may_upload = may_upload
        self._client = client
        self._directory = directory
        self._columns = dict(columns)
        self._limits = limits
        self._metrics = metrics
        self._on_done = on_done
        self._on_rejected_row = on_rejected_row
        self._semaphore = asyncio.Semaphore(concurrency)
        self._policy = policy or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._segments: dict[str, SegmentHealth] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.fatal: BaseException | None = None
        self.rows_in_flight = 0
        self._warming: dict[str, asyncio.Task[None]] = {}
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="encode")

    # -- queueing -------------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        health = self._segments.setdefault(batch.segment, SegmentHealth())
        health.queue.append(batch)
        self.rows_in_flight += batch.entries
        self._idle.clear()
        if health.task is None or health.task.done():
            health.task = asyncio.create_task(self._run_segment(batch.segment, health))

    def warm(self, segment: str) -> None:
        """Resolve (or create) the segment's InMobi ID now, ahead of its first upload.

        Called when a segment gets a new buffer, so that the registry round trips and the
        creation of a new segment overlap with buffering instead of delaying the first flush.
        A failure is only logged: the upload resolves again, with its retries.
        """
        if self._directory.cached(segment) is not None or segment in self._warming:
            return
        if not self._may_upload():  # fenced: leave it to the upload, which waits for the fence
            return
        self._warming[segment] = asyncio.create_task(self._warm(segment))

    async def _warm(self, segment: str) -> None:
        try:
            await self._directory.resolve(segment)
        except SyncError as exc:
            log.info("segment_warm_up_failed", segment=segment, error=str(exc))
        finally:
            self._warming.pop(segment, None)

    def batches_in_flight(self) -> int:
        return sum(len(h.queue) for h in self._segments.values())

    def stuck(self) -> dict[str, SegmentHealth]:
        return {n: h for n, h in self._segments.items() if h.failures >= STUCK_AFTER_ATTEMPTS}

    async def drain(self, timeout: float) -> bool:
        """Wait until every submitted batch is done; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        tasks = [h.task for h in self._segments.values() if h.task and not h.task.done()]
        tasks += [t for t in self._warming.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # -- per segment ----------------------------------------------------------------------------
    async def _run_segment(self, segment: str, health: SegmentHealth) -> None:
        try:
            while health.queue:
                batch = health.queue[0]
                await self._deliver(batch, health)
                health.queue.popleft()
                self.rows_in_flight -= batch.entries
                self._on_done(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a FatalError or a bug: stop the worker, commit nothing
            self.fatal = exc
            log.error("delivery_failed", segment=segment, error=repr(exc))
        finally:
            if all(not h.queue for h in self._segments.values()):
                self._idle.set()

    async def _deliver(self, batch: Batch, health: SegmentHealth) -> None:
        started = time.monotonic()
        epochs = {p: e for p, _offset, e in batch.holds}
        # Deduplication and compression of the whole batch in one hop to the encoding thread.
        uploaded = 0
        for encoded in await self._encode(self._encode_batch, batch):
            uploaded += await self._send(batch.segment, encoded, epochs, health)
        log.info(
            "batch_uploaded",
            segment=batch.segment,
            batch=batch.batch_id,
            reason=batch.reason.value,
            rows=uploaded,  # acknowledged by InMobi
            not_uploaded=batch.row_count - uploaded,  # dead-lettered, or no longer this worker's
            entries=batch.entries,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _encode(self, fn: Callable[..., list[EncodedFile]], *args: Any) -> list[EncodedFile]:
        return await asyncio.get_running_loop().run_in_executor(self._encoder, fn, *args)

    def _encode_batch(self, batch: Batch) -> list[EncodedFile]:
        """Every file of a batch, in order (runs in the encoding thread)."""
        return [f for rows in batch.rows for f in encode_rows(rows, self._columns, self._limits)]

    async def _send_rows(
        self, segment: str, rows: Rows, epochs: Epochs, health: SegmentHealth
    ) -> int:
        """Encode and send rows; return how many InMobi acknowledged."""
        sent = 0
        for encoded in await self._encode(encode_rows, rows, self._columns, self._limits):
            sent += await self._send(segment, encoded, epochs, health)
        return sent

    def _still_owned(self, rows: Rows, epochs: Epochs) -> Rows:
        """The rows whose partition is still in the assignment their batch was cut in."""
        if self._epoch_of is None:
            return rows
        live = {p for p in set(rows.partitions) if self._epoch_of(p) == epochs.get(p)}
        if len(live) == len(set(rows.partitions)):
            return rows
        keep = [i for i, p in enumerate(rows.partitions) if p in live]
        log.info("rows_dropped_not_owned", rows=len(rows) - len(keep), kept=len(keep))
        return rows.select(keep)

    async def _send(
        self, segment: str, encoded: EncodedFile, epochs: Epochs, health: SegmentHealth
    ) -> int:
        """Send one file until it is acknowledged, split, or no longer this worker's to send;
        return how many of its rows InMobi acknowledged.

        Before every attempt (the first and each retry): wait while fenced, then drop rows of
        partitions that left the assignment their batch was cut in (re-encoding what is left).
        """
        attempt = 0
        action = encoded.rows.op.action
        while True:
            while not self._may_upload():
                await self._sleep(0.1)
            rows = self._still_owned(encoded.rows, epochs)
            if rows is not encoded.rows:
                return await self._send_rows(segment, rows, epochs, health) if len(rows) else 0
            try:
                await self._upload_once(segment, action, encoded)
            except FileRejectedError as exc:
                self._record_failure(health, segment, exc, attempt)
                health.failures = 0  # a rejection is an answer, not an outage
                return await self._split(segment, encoded, str(exc), epochs, health)
            except (TransientError, AuthError, UnknownSegmentError) as exc:
                self._record_failure(health, segment, exc, attempt)
                retry_after = exc.retry_after if isinstance(exc, TransientError) else None
                await self._sleep(self._policy.delay(attempt, self._rng.random(), retry_after))
                attempt += 1
                continue
            health.failures, health.failing_since, health.last_error = 0, None, None
            return len(encoded.rows)

    async def _upload_once(self, segment: str, action: str, encoded: EncodedFile) -> None:
        try:
            segment_id = await self._directory.resolve(segment)
        except FileRejectedError as exc:  # a refused creation is an outage of this segment
            raise TransientError(f"segment creation refused: {exc}", status=exc.status) from None
        async with self._semaphore:
            started = time.monotonic()
            status = "ok"
            try:
                await self._client.upload(segment_id, action, encoded.payload)
            except SyncError as exc:
                status = str(getattr(exc, "status", None) or type(exc).__name__)
                raise
            finally:
                self._metrics.upload_duration.observe(time.monotonic() - started)
                self._metrics.uploads.labels(action=action, status=status).inc()
        self._metrics.upload_rows.labels(action=action).inc(len(encoded.rows))

    async def _split(
        self,
        segment: str,
        encoded: EncodedFile,
        reason: str,
        epochs: Epochs,
        health: SegmentHealth,
    ) -> int:
        rows = encoded.rows
        if len(rows) == 1:
            self._on_rejected_row(segment, rows, reason, epochs.get(rows.partitions[0], 0))
            return 0
        half = len(rows) // 2
        return sum(
            [
                await self._send_rows(segment, part, epochs, health)
                for part in (rows.slice(0, half), rows.slice(half, len(rows)))
            ]
        )

    def _record_failure(
        self, health: SegmentHealth, segment: str, exc: SyncError, attempt: int
    ) -> None:
        health.failures += 1
        health.last_error = str(exc)
        if health.failing_since is None:
            health.failing_since = time.monotonic()
        if isinstance(exc, AuthError):
            self._metrics.auth_failures.inc()
        log.warning(
            "upload_failed",
            segment=segment,
            attempt=attempt + 1,
            error_class=type(exc).__name__,
            error=str(exc),
        )
