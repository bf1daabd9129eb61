"""Publishing the stream at a steady pace in a background thread, so it overlaps the churn.

End offsets come from delivery reports (the embedded broker's ListOffsets "latest" is wrong after
batched produce, see shared BROKER.md).
"""

from __future__ import annotations

import threading
import time

from worker.generator import GeneratedRecord
from worker.kafka import EventProducer

__all__ = ["PacedPublisher"]

STEPS_PER_SECOND = 10


class PacedPublisher:
    def __init__(
        self, bootstrap: str, topic: str, records: list[GeneratedRecord], seconds: float
    ) -> None:
        self._conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}
        self._topic = topic
        self._records = records
        self._seconds = seconds
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self.end_offsets: dict[int, int] = {}
        self.error: BaseException | None = None
        self.finished_at: float | None = None  # monotonic

    def start(self) -> None:
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> dict[int, int]:
        """Wait for the whole stream to be acknowledged by the broker; its end offsets."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"publishing did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise AssertionError(f"publishing failed: {self.error!r}")
        return self.end_offsets

    def _run(self) -> None:
        try:
            self._publish()
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def _publish(self) -> None:
        producer = EventProducer(self._conf, self._topic)
        steps = max(1, int(self._seconds * STEPS_PER_SECOND))
        size = -(-len(self._records) // steps)
        started = time.monotonic()
        for i in range(steps):
            for r in self._records[i * size : (i + 1) * size]:
                producer.send(r.key, r.value)
            producer.flush(0)  # serve delivery reports
            pause = started + (i + 1) / STEPS_PER_SECOND - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing of the workload, not a wait for an outcome
        if producer.flush(60) != 0 or producer.failed:
            raise RuntimeError(f"{producer.failed} records were not delivered")
        self.end_offsets = dict(producer.end_offsets)
