"""Contiguous offset watermarks: which offset is safe to commit.

streamcar delivers at least once. Messages of one partition complete out of order (different keys run
concurrently, retries take longer), but Kafka stores one committed offset per partition, meaning "every
message below this one is processed". So the offset we commit is the *contiguous watermark*: the lowest
tracked offset that is not done yet, or, when everything tracked is done, the last tracked offset + 1.
A message counts as done only once its reply was acknowledged by the broker, it was dropped, or its
dead-letter record was acknowledged. A crash therefore redelivers at most the messages at or above the
watermark, some of which may already have been processed (hence the idempotency key).

Offsets are never assumed to be contiguous: compaction and transaction markers leave gaps, so the watermark
jumps straight from one tracked offset to the next.

Everything here is plain synchronous bookkeeping, called from the engine's single asyncio thread; it needs no
locks. Each operation is O(1) amortized: a deque holds tracked offsets in arrival (= increasing) order and a
dict marks which of them are done; completing the head pops every done offset behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from streamcar.kafka.records import TP

__all__ = ["TP", "OffsetTracker", "PartitionOffsets"]


class PartitionOffsets:
    """The contiguous watermark of one partition.

    Memory is bounded by the span between the oldest unfinished offset and the newest tracked one, which
    the engine bounds with ``max_in_flight`` backpressure. Offsets below the watermark are forgotten.
    """

    __slots__ = ("_committed", "_done", "_last", "_outstanding", "_window")

    def __init__(self) -> None:
        # Tracked offsets not yet popped, increasing; the head is the watermark.
        self._window: deque[int] = deque()
        # offset -> done?, for every offset in the window.
        self._done: dict[int, bool] = {}
        self._last = -1  # last tracked offset; -1 = nothing tracked (Kafka offsets are >= 0)
        self._outstanding = 0
        self._committed: int | None = None

    def track(self, offset: int) -> None:
        """Start tracking ``offset``, which must be greater than every offset tracked before."""
        if offset <= self._last:
            if offset < 0:
                raise ValueError(f"offset must be >= 0, got {offset}")
            raise ValueError(f"offset {offset} is not after the last tracked offset {self._last}")
        self._last = offset
        self._window.append(offset)
        self._done[offset] = False
        self._outstanding += 1

    def done(self, offset: int) -> None:
        """Mark a tracked offset done, in any order; marking it again is a no-op.

        An offset below the watermark is accepted as already done: popped offsets are forgotten to keep memory
        bounded, so a gap offset there cannot be told apart from a completed one. Any other offset that was
        not tracked raises ``KeyError``.
        """
        state = self._done.get(offset)
        if state is None:
            watermark = self.watermark
            if watermark is not None and offset < watermark:
                return
            raise KeyError(offset)
        if state:
            return
        self._outstanding -= 1
        window = self._window
        if offset != window[0]:
            self._done[offset] = True
            return
        # The head completed: the watermark advances over it and over every done offset right behind it.
        done = self._done
        del done[window.popleft()]
        while window and done[window[0]]:
            del done[window.popleft()]

    @property
    def watermark(self) -> int | None:
        """The offset to commit: lowest tracked offset not done, else last tracked + 1; None before any."""
        if self._window:
            return self._window[0]
        return self._last + 1 if self._last >= 0 else None

    @property
    def outstanding(self) -> int:
        """How many tracked offsets are not done yet."""
        return self._outstanding

    @property
    def last(self) -> int:
        """The last tracked offset; -1 before any."""
        return self._last

    @property
    def last_committed(self) -> int | None:
        """The highest offset given to :meth:`mark_committed` since the last reset, if any."""
        return self._committed

    def committable(self) -> int | None:
        """The watermark if it advanced past the last committed offset, else None (nothing new to commit)."""
        watermark = self.watermark
        if watermark is None or (self._committed is not None and watermark <= self._committed):
            return None
        return watermark

    def mark_committed(self, offset: int) -> None:
        """Record that ``offset`` was committed; a lower offset than one recorded before is ignored."""
        if self._committed is None or offset > self._committed:
            self._committed = offset

    def restart(self, offset: int) -> int:
        """The log was replaced from ``offset`` on (topic re-created, log truncated): forget the tracked offsets
        at or after it, so that the new log's records can be tracked from there. Offsets before it stay as they
        are, done or not; the watermark can move back, and the next commit may be lower than the last. Returns
        how many of the forgotten offsets were not done."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        window, done = self._window, self._done
        forgotten = 0
        while window and window[-1] >= offset:
            if not done.pop(window.pop()):
                forgotten += 1
        self._outstanding -= forgotten
        if window:
            self._last = window[-1]
        elif self._last >= offset:
            self._last = offset - 1  # everything before it was done: the watermark is the new log's start
        if self._committed is not None and self._committed > offset:
            self._committed = None  # the commit of the new log may be lower than the old one's
        return forgotten

    def reset(self) -> None:
        """Forget everything, as for a freshly assigned partition."""
        self._window.clear()
        self._done.clear()
        self._last = -1
        self._outstanding = 0
        self._committed = None

    def __repr__(self) -> str:
        return (
            f"PartitionOffsets(watermark={self.watermark}, outstanding={self._outstanding}, "
            f"committed={self._committed})"
        )


class OffsetTracker:
    """Contiguous watermarks of every assigned partition, with an O(1) total of outstanding messages.

    A partition starts being tracked on its first :meth:`track`. On rebalance revoke, :meth:`remove` returns
    the final watermarks to commit; work on a removed partition may still complete afterwards, and its
    :meth:`done` is ignored.

    Unknown partitions read as never tracked: ``watermark`` None, ``outstanding`` 0.
    """

    __slots__ = ("_partitions", "_total", "ever")

    def __init__(self) -> None:
        self._partitions: dict[TP, PartitionOffsets] = {}
        self._total = 0
        self.ever: set[TP] = set()
        """Every partition tracked at some point, removed ones included."""

    def track(self, tp: TP, offset: int) -> None:
        """Track ``offset`` of ``tp``; offsets of one partition must be increasing (gaps allowed)."""
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = PartitionOffsets()
            self.ever.add(tp)
        partition.track(offset)
        self._total += 1

    def done(self, tp: TP, offset: int) -> bool:
        """Mark ``offset`` of ``tp`` done; False (and nothing happens) when ``tp`` is no longer tracked.

        Raises ``KeyError`` for an offset of a tracked partition that was never tracked (see
        :meth:`PartitionOffsets.done`).
        """
        partition = self._partitions.get(tp)
        if partition is None:
            return False
        before = partition.outstanding
        partition.done(offset)
        self._total -= before - partition.outstanding
        return True

    def restart(self, tp: TP, offset: int) -> None:
        """``tp``'s log was replaced from ``offset`` on (see :meth:`PartitionOffsets.restart`)."""
        partition = self._partitions.get(tp)
        if partition is not None:
            self._total -= partition.restart(offset)

    def commit_points(self) -> dict[TP, int]:
        """The offset to commit for every partition whose watermark advanced since it was last committed."""
        points: dict[TP, int] = {}
        for tp, partition in self._partitions.items():
            offset = partition.committable()
            if offset is not None:
                points[tp] = offset
        return points

    def mark_committed(self, points: Mapping[TP, int]) -> None:
        """Record a successful commit; partitions removed meanwhile are skipped."""
        partitions = self._partitions
        for tp, offset in points.items():
            partition = partitions.get(tp)
            if partition is not None:
                partition.mark_committed(offset)

    def last(self, tp: TP) -> int | None:
        """The last offset of ``tp`` tracked, if any."""
        partition = self._partitions.get(tp)
        return None if partition is None or partition.last < 0 else partition.last

    def watermark(self, tp: TP) -> int | None:
        """The contiguous watermark of ``tp`` (see :attr:`PartitionOffsets.watermark`)."""
        partition = self._partitions.get(tp)
        return None if partition is None else partition.watermark

    def outstanding(self, tp: TP) -> int:
        """How many tracked offsets of ``tp`` are not done yet."""
        partition = self._partitions.get(tp)
        return 0 if partition is None else partition.outstanding

    @property
    def total_outstanding(self) -> int:
        """Outstanding offsets over all tracked partitions."""
        return self._total

    def remove(self, tps: Iterable[TP]) -> dict[TP, int | None]:
        """Stop tracking ``tps`` (rebalance revoke) and return each removed partition's final watermark.

        Partitions that were not tracked are left out of the result. Their outstanding offsets are abandoned:
        whatever the watermark says was not done will be redelivered to the next owner.
        """
        removed: dict[TP, int | None] = {}
        for tp in tps:
            partition = self._partitions.pop(tp, None)
            if partition is not None:
                self._total -= partition.outstanding
                removed[tp] = partition.watermark
        return removed

    def partitions(self) -> list[TP]:
        """The tracked partitions, in the order they were first tracked."""
        return list(self._partitions)

    def __contains__(self, tp: object) -> bool:
        return tp in self._partitions

    def __repr__(self) -> str:
        return f"OffsetTracker(partitions={len(self._partitions)}, outstanding={self._total})"
