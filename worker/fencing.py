"""Fencing: may this worker still upload and commit, or may it have lost its partitions?

A worker that stopped polling for a while (a long GC or CPU starvation, SIGSTOP, a broker it could
not reach) may have been thrown out of the group while it was away: its partitions may already
belong to another worker, which re-reads them from the last commit. If the old worker went on
uploading, a stale add of it could land after a newer remove of the new owner. So:

- *stalled*: no poll has returned for more than half the session timeout (and no rebalance
  callback is running, which legitimately blocks the poll): fenced right now.
- *suspect*: a poll returned after such a gap. Fenced until the group has said where the worker
  stands, i.e. a rebalance callback (assign, revoke or lost) ran, or until the session timeout
  plus a settling time passed with polls flowing and no loss reported (the session was kept).

Pure: time is passed in. The pipeline calls `polled`, `callback_started`/`callback_finished`;
delivery and commits ask `may_act`.
"""

from __future__ import annotations

__all__ = ["Fence"]


class Fence:
    def __init__(self, session_timeout_seconds: float, settle_seconds: float = 3.0) -> None:
        self.session_timeout = session_timeout_seconds
        self.threshold = session_timeout_seconds / 2
        self.settle = settle_seconds
        self._last_poll: float | None = None
        self._suspect_since: float | None = None
        self._in_callback = False
        self._callback_seen = False

    def polled(self, now: float) -> None:
        """A poll returned at `now`."""
        gap = None if self._last_poll is None else now - self._last_poll
        if gap is not None and gap > self.threshold and not self._callback_seen:
            self._suspect_since = now
        self._last_poll = now
        self._callback_seen = False

    def callback_started(self) -> None:
        self._in_callback = True

    def callback_finished(self) -> None:
        """The group told us where we stand: whatever we own now is ours."""
        self._in_callback = False
        self._callback_seen = True
        self._suspect_since = None

    def stalled(self, now: float) -> bool:
        if self._in_callback or self._last_poll is None:
            return False
        return now - self._last_poll > self.threshold

    def may_act(self, now: float) -> bool:
        if self.stalled(now):
            return False
        if self._suspect_since is None:
            return True
        if now - self._suspect_since > self.session_timeout + self.settle:
            self._suspect_since = None  # polls kept flowing and nothing was lost
            return True
        return False
