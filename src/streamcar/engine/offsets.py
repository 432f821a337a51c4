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
locks. Each operation is O(1) amortized: a deque holds tracked offsets in arrival (= increasing) order, an
ordered dict those not done yet and a set those done; completing the head pops every done offset behind it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from streamcar.kafka.doneahead import Run, count, encode, fits, payload_budget, runs_of
from streamcar.kafka.records import TP, CommitPoint

__all__ = ["BUDGET", "TP", "CommitPoint", "PartitionOffsets"]

BUDGET = payload_budget()
"""Bytes of done-ahead metadata a commit may carry (before base64): what the broker's default
``offset.metadata.max.bytes`` allows."""


class PartitionOffsets:
    """The contiguous watermark of one partition, and the offsets done above it.

    Memory is bounded by the span between the oldest unfinished offset and the newest tracked one. Offsets below
    the watermark are forgotten. Offsets done above it are what a commit carries in its metadata
    (:mod:`streamcar.kafka.doneahead`); :meth:`fits` says whether a new offset keeps that within ``budget``
    bytes, whatever completes from here. Offsets the partition's previous owner left done (:meth:`preset`) are
    tracked as done the moment they are read.
    """

    __slots__ = (
        "_ahead",
        "_bits_span",
        "_budget",
        "_committed",
        "_committed_version",
        "_last",
        "_last_done",
        "_pending",
        "_preset",
        "_snapshot",
        "_version",
        "_window",
    )

    def __init__(self, budget: int = BUDGET) -> None:
        # Tracked offsets not yet popped, increasing; the head is the watermark.
        self._window: deque[int] = deque()
        # The window's offsets not done, in increasing order (a dict keeps insertion order), and those done: each
        # offset of the window is in exactly one of them.
        self._pending: dict[int, None] = {}
        self._ahead: set[int] = set()
        self._last = -1  # last tracked offset; -1 = nothing tracked (Kafka offsets are >= 0)
        self._last_done = -1  # the highest offset marked done
        self._committed: CommitPoint | None = None
        self._budget = budget
        self._bits_span = budget * 8  # offsets of span the bits encoding covers within the budget
        self._preset: deque[Run] = deque()  # runs done by the previous owner, not read yet
        self._version = 0  # counts changes to what a commit would say
        self._snapshot = 0  # the version of the last commit point taken
        self._committed_version = -1

    def preset(self, runs: Iterable[Run]) -> None:
        """The partition's previous owner committed these runs as done above its committed offset."""
        self._preset.extend(runs)
        self._version += 1

    def track(self, offset: int) -> bool:
        """Start tracking ``offset``, which must be greater than every offset tracked before. True when the
        previous owner did it already (:meth:`preset`): it is tracked as done, and must not be processed."""
        if offset <= self._last:
            if offset < 0:
                raise ValueError(f"offset must be >= 0, got {offset}")
            raise ValueError(f"offset {offset} is not after the last tracked offset {self._last}")
        self._last = offset
        self._version += 1
        preset = self._preset
        if preset:
            while preset and preset[0][1] < offset:
                preset.popleft()
            if preset and preset[0][0] <= offset:
                if self._window:  # behind an unfinished one: done, waiting for the watermark
                    self._window.append(offset)
                    self._ahead.add(offset)
                    self._last_done = offset
                return True
        self._window.append(offset)
        self._pending[offset] = None
        return False

    def fits(self, offset: int) -> bool:
        """Whether tracking ``offset`` next keeps every commit's done-ahead metadata within the budget, however
        the offsets not done yet complete (:func:`streamcar.kafka.doneahead.fits`)."""
        window, preset = self._window, self._preset
        if not preset and (not window or offset - window[0] <= self._bits_span):
            return True  # the common case: within what the bits encode whatever the pattern
        watermark = window[0] if window else self._last + 1
        if preset:
            while preset and preset[0][1] < offset:
                preset.popleft()
            if preset and preset[0][0] <= offset:
                return True  # done already: tracking it adds nothing to wait for
        if not self._pending:
            return True  # nothing could complete to make room: never wait for it
        span = max(offset, preset[-1][1] if preset else 0) - watermark
        return span <= 0 or fits(span, len(self._pending) + 1 + len(preset), self._budget)

    def done(self, offset: int) -> None:
        """Mark a tracked offset done, in any order; marking it again is a no-op.

        An offset below the watermark is accepted as already done: popped offsets are forgotten to keep memory
        bounded, so a gap offset there cannot be told apart from a completed one. Any other offset that was
        not tracked raises ``KeyError``.
        """
        pending = self._pending
        if offset not in pending:
            if offset in self._ahead:
                return
            watermark = self.watermark
            if watermark is not None and offset < watermark:
                return
            raise KeyError(offset)
        del pending[offset]
        self._version += 1
        window = self._window
        if offset != window[0]:
            self._ahead.add(offset)
            if offset > self._last_done:
                self._last_done = offset
            return
        # The head completed: the watermark advances over it and over every done offset right behind it.
        window.popleft()
        ahead = self._ahead
        while window and window[0] in ahead:
            ahead.remove(window.popleft())

    @property
    def watermark(self) -> int | None:
        """The offset to commit: lowest tracked offset not done, else last tracked + 1; None before any."""
        if self._window:
            return self._window[0]
        return self._last + 1 if self._last >= 0 else None

    @property
    def outstanding(self) -> int:
        """How many tracked offsets are not done yet."""
        return len(self._pending)

    @property
    def done_ahead(self) -> int:
        """How many offsets above the watermark are done (read by this member, or left done by the last)."""
        return len(self._ahead) + count(self._unread())

    def _unread(self) -> list[Run]:
        """The previous owner's runs above the last offset read."""
        preset = self._preset
        if not preset:
            return []
        first, last = preset[0]
        return [(max(first, self._last + 1), last), *list(preset)[1:]] if last > self._last else list(preset)[1:]

    @property
    def last(self) -> int:
        """The last tracked offset; -1 before any."""
        return self._last

    @property
    def last_committed(self) -> CommitPoint | None:
        """The highest point given to :meth:`mark_committed` since the last reset, if any."""
        return self._committed

    def point(self) -> CommitPoint | None:
        """What a commit says now: the watermark and the done-ahead metadata; None before any offset."""
        watermark = self.watermark
        if watermark is None:
            return None
        runs = runs_of(watermark, self._pending, self._last_done) if self._window else []
        rest = self._unread()
        if rest:
            if not self._window and rest[0][0] <= watermark:  # done right from the watermark: commit past it
                watermark = rest.pop(0)[1] + 1
            runs.extend(rest)
        self._snapshot = self._version
        return CommitPoint(watermark, encode(watermark, runs))

    def committable(self) -> CommitPoint | None:
        """:meth:`point`, if it differs from the last one committed (else None: nothing new to commit)."""
        if self._version == self._committed_version:
            return None
        point = self.point()
        if point is None:
            return None
        committed = self._committed
        if committed is not None and point.offset < committed.offset:
            return None  # a watermark below the last commit: never move the group back
        if point == committed:
            self._committed_version = self._snapshot
            return None
        return point

    def mark_committed(self, point: CommitPoint) -> None:
        """Record that ``point`` (the last one :meth:`point` gave) was committed; one below the last recorded
        is ignored."""
        if self._committed is None or point.offset >= self._committed.offset:
            self._committed = point
            self._committed_version = self._snapshot

    def restart(self, offset: int) -> int:
        """The log was replaced from ``offset`` on (topic re-created, log truncated): forget the tracked offsets
        at or after it, so that the new log's records can be tracked from there. Offsets before it stay as they
        are, done or not; the watermark can move back, and the next commit may be lower than the last. Returns
        how many of the forgotten offsets were not done."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        window, ahead, pending = self._window, self._ahead, self._pending
        forgotten = 0
        while window and window[-1] >= offset:
            gone = window.pop()
            if gone in pending:
                forgotten += 1
                del pending[gone]
            else:
                ahead.remove(gone)
        self._preset.clear()  # the previous owner's word was about the old log
        self._version += 1
        if self._last_done >= offset:  # rare: find the last done offset left (scanning the window)
            self._last_done = next((o for o in reversed(window) if o in ahead), -1)
        if window:
            self._last = window[-1]
        elif self._last >= offset:
            self._last = offset - 1  # everything before it was done: the watermark is the new log's start
        if self._committed is not None and self._committed.offset > offset:
            self._committed = None  # the commit of the new log may be lower than the old one's
        return forgotten

    def reset(self) -> None:
        """Forget everything, as for a freshly assigned partition."""
        self._window.clear()
        self._ahead.clear()
        self._pending.clear()
        self._preset.clear()
        self._last = self._last_done = -1
        self._committed = None
        self._version += 1

    def __repr__(self) -> str:
        return (
            f"PartitionOffsets(watermark={self.watermark}, outstanding={len(self._pending)}, "
            f"done_ahead={self.done_ahead}, committed={self._committed})"
        )
