"""The watermarks of every partition a pipeline reads: :class:`OffsetTracker` over one
:class:`~streamcar.engine.offsets.PartitionOffsets` per partition, with an O(1) total of what is outstanding."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from streamcar.engine.offsets import BUDGET, PartitionOffsets
from streamcar.kafka.doneahead import Run
from streamcar.kafka.records import TP, CommitPoint

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Contiguous watermarks of every assigned partition, with an O(1) total of outstanding messages.

    A partition starts being tracked on its first :meth:`track`. On rebalance revoke, :meth:`remove` returns
    the final watermarks to commit; work on a removed partition may still complete afterwards, and its
    :meth:`done` is ignored.

    Unknown partitions read as never tracked: ``watermark`` None, ``outstanding`` 0.
    """

    __slots__ = ("_budget", "_partitions", "_total", "ever")

    def __init__(self, budget: int = BUDGET) -> None:
        self._partitions: dict[TP, PartitionOffsets] = {}
        self._total = 0
        self._budget = budget
        self.ever: set[TP] = set()
        """Every partition tracked at some point, removed ones included."""

    def preset(self, tp: TP, runs: Iterable[Run]) -> None:
        """``tp``'s previous owner left ``runs`` done above the offset it committed (where reading starts)."""
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = PartitionOffsets(self._budget)
        partition.preset(runs)

    def track(self, tp: TP, offset: int) -> bool:
        """Track ``offset`` of ``tp``; offsets of one partition must be increasing (gaps allowed). True when the
        partition's previous owner did it already: it is done, not to be processed (see :meth:`preset`)."""
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = PartitionOffsets(self._budget)
        if partition.last < 0:
            self.ever.add(tp)
        if partition.track(offset):
            return True
        self._total += 1
        return False

    def fits(self, tp: TP, offset: int) -> bool:
        """Whether ``offset`` of ``tp`` may be tracked next without the commit's done-ahead metadata outgrowing
        its budget (:meth:`PartitionOffsets.fits`)."""
        partition = self._partitions.get(tp)
        return partition is None or partition.fits(offset)

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

    def commit_points(self) -> dict[TP, CommitPoint]:
        """What to commit for every partition whose watermark or done-ahead offsets changed since its last
        commit."""
        points: dict[TP, CommitPoint] = {}
        for tp, partition in self._partitions.items():
            point = partition.committable()
            if point is not None:
                points[tp] = point
        return points

    def mark_committed(self, points: Mapping[TP, CommitPoint]) -> None:
        """Record a successful commit; partitions removed meanwhile are skipped."""
        partitions = self._partitions
        for tp, point in points.items():
            partition = partitions.get(tp)
            if partition is not None:
                partition.mark_committed(point)

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

    def done_ahead(self, tp: TP) -> int:
        """How many offsets of ``tp`` above its watermark are done (see :attr:`PartitionOffsets.done_ahead`)."""
        partition = self._partitions.get(tp)
        return 0 if partition is None else partition.done_ahead

    @property
    def total_outstanding(self) -> int:
        """Outstanding offsets over all tracked partitions."""
        return self._total

    def remove(self, tps: Iterable[TP]) -> dict[TP, CommitPoint | None]:
        """Stop tracking ``tps`` (rebalance revoke) and return what to commit for each removed partition: its
        final watermark and done-ahead offsets (None: nothing was read).

        Partitions that were not tracked are left out of the result. Their outstanding offsets are abandoned:
        whatever the commit does not say was done will be redelivered to the next owner.
        """
        removed: dict[TP, CommitPoint | None] = {}
        for tp in tps:
            partition = self._partitions.pop(tp, None)
            if partition is not None:
                self._total -= partition.outstanding
                removed[tp] = partition.point()
        return removed

    def partitions(self) -> list[TP]:
        """The tracked partitions, in the order they were first tracked."""
        return list(self._partitions)

    def __contains__(self, tp: object) -> bool:
        return tp in self._partitions

    def __repr__(self) -> str:
        return f"OffsetTracker(partitions={len(self._partitions)}, outstanding={self._total})"
