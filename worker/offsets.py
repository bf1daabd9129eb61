"""Per-partition low-watermark tracking: what may be committed.

One partition feeds many segment buffers that flush at different times, and bad records wait for
their DLQ write. The committable offset of a partition is therefore its lowest offset still
*held* (by a buffer, an in-flight batch or an unconfirmed DLQ write), or the next offset to consume
when nothing is held. Holds are counted, so two holders of one offset are both released before it
stops counting. Commits only move forward. Pure: no Kafka, no clock.

Every assignment of a partition gets a new *epoch*; a hold returns the epoch it was taken in and
its release must name it. A late release from before a revoke (a batch still finishing after the
partition went away and came back) therefore never frees a hold of the new assignment. A revoked
partition is remembered as such: holds and reads reported for it before it is assigned again get
the dead epoch 0 and change nothing. Nothing is committable for a partition until something of it
was read in the current assignment, and never past what was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OffsetTracker", "PartitionState"]


@dataclass(slots=True)
class PartitionState:
    epoch: int = 0
    next_offset: int | None = None  # one past the last consumed offset
    committed: int | None = None  # the last offset committed (the next to read)
    held: dict[int, int] = field(default_factory=dict)  # offset -> number of holders

    def committable(self) -> int | None:
        if self.next_offset is None:
            return None  # nothing read in this assignment: nothing to say
        if self.held:
            return min(*self.held, self.next_offset)
        return self.next_offset


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[int, PartitionState] = {}
        self._epochs = 0
        self._revoked: set[int] = set()

    def _new(self, partition: int, committed: int | None = None) -> PartitionState:
        self._epochs += 1
        st = self._partitions[partition] = PartitionState(self._epochs, committed=committed)
        return st

    def assign(self, partition: int, committed: int | None = None) -> None:
        self._revoked.discard(partition)
        if partition not in self._partitions:
            self._new(partition, committed)

    def revoke(self, partition: int) -> PartitionState | None:
        """Forget a partition; late holds, reads and releases for it are ignored."""
        self._revoked.add(partition)
        return self._partitions.pop(partition, None)

    def epoch(self, partition: int) -> int | None:
        """The current assignment's epoch, or None when the partition is not tracked."""
        st = self._partitions.get(partition)
        return None if st is None else st.epoch

    def partitions(self) -> list[int]:
        return sorted(self._partitions)

    def state(self, partition: int) -> PartitionState | None:
        return self._partitions.get(partition)

    def consumed(self, partition: int, offset: int) -> None:
        """Record that every offset up to `offset` was read (and is held, ignored or done)."""
        if partition in self._revoked:
            return
        st = self._partitions.get(partition) or self._new(partition)
        if st.next_offset is None or offset + 1 > st.next_offset:
            st.next_offset = offset + 1

    def hold(self, partition: int, offset: int) -> int:
        """Hold `offset` back from commits; return the epoch to release it with (0: dead)."""
        if partition in self._revoked:
            return 0
        st = self._partitions.get(partition) or self._new(partition)
        st.held[offset] = st.held.get(offset, 0) + 1
        return st.epoch

    def release(self, partition: int, offset: int, epoch: int) -> None:
        st = self._partitions.get(partition)
        if st is None or st.epoch != epoch:
            return
        count = st.held.get(offset, 0)
        if count <= 1:
            st.held.pop(offset, None)
        else:
            st.held[offset] = count - 1

    def committable(self, partition: int) -> int | None:
        st = self._partitions.get(partition)
        return None if st is None else st.committable()

    def to_commit(self, partitions: set[int] | None = None) -> dict[int, int]:
        """Offsets that moved past the last commit, for the given (or all) partitions."""
        out = {}
        for p, st in self._partitions.items():
            if partitions is not None and p not in partitions:
                continue
            target = st.committable()
            if target is not None and (st.committed is None or target > st.committed):
                out[p] = target
        return out

    def mark_committed(self, offsets: dict[int, int]) -> None:
        for p, offset in offsets.items():
            st = self._partitions.get(p)
            if st is not None and (st.committed is None or offset > st.committed):
                st.committed = offset

    def lag(self) -> dict[int, int]:
        """Per partition: consumed but not yet committable (the commit lag)."""
        out = {}
        for p, st in self._partitions.items():
            target = st.committable()
            if st.next_offset is not None and target is not None:
                out[p] = st.next_offset - target
        return out

    def outstanding(self, partitions: set[int]) -> int:
        """How many holds remain on these partitions (zero: they can be committed fully)."""
        return sum(len(st.held) for p, st in self._partitions.items() if p in partitions)
