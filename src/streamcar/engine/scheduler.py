"""Per-lane FIFO scheduling: the ``ordering`` setting of a pipeline.

A *lane* is the unit of ordering. With ``ordering: key`` a lane is ``(topic, partition, key)``, with
``partition`` it is ``(topic, partition)``, and with ``none`` (or for a null key) an item has no lane at all.
At most one item per lane is ready or in flight at any time; the next item of a lane becomes ready only when
the engine calls :meth:`LaneScheduler.finish` for the previous one. That gives per-key order while different
keys run concurrently (up to ``max_in_flight``, which the engine enforces by how many items it takes).
Batch delivery relaxes this one way: a take with ``runs`` may hand out several consecutive items of one lane
together (they travel in one batch, in offset order), and then they are finished in that order.

Retries need no special support: an item being retried is simply not finished yet, so its lane stays busy and
later items with the same key wait behind it, while every other lane keeps flowing.

Plain synchronous bookkeeping, called from the engine's single asyncio thread; every operation is O(1)
amortized except :meth:`LaneScheduler.drop_partition`, which runs on rebalance only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Literal, TypeVar

__all__ = ["Lane", "LaneScheduler", "Ordering", "lane_for"]

Lane = Hashable
Ordering = Literal["key", "partition", "none"]

T = TypeVar("T")


def lane_for(ordering: Ordering, topic: str, partition: int, key: bytes | None) -> Lane | None:
    """The lane of a record under ``ordering``; None means the record may run concurrently with anything."""
    if ordering == "key":
        return None if key is None else (topic, partition, key)
    if ordering == "partition":
        return (topic, partition)
    if ordering == "none":
        return None
    raise ValueError(f"unknown ordering {ordering!r}")


class LaneScheduler(Generic[T]):
    """Hands out items so that items of one lane run one at a time, in submission order.

    An item is *ready* (returned by :meth:`take`), then *in flight* until the engine calls :meth:`finish`;
    meanwhile later items of its lane are *queued*. Items without a lane are ready at once and never wait.
    The lane table only holds lanes with a ready, in-flight or queued item, so memory follows live work,
    not the number of keys ever seen. Every item of a lane must belong to the same partition.
    """

    __slots__ = ("_lane_of", "_lanes", "_partition_of", "_queued", "_ready", "_taken")

    def __init__(
        self,
        lane_of: Callable[[T], Lane | None],
        partition_of: Callable[[T], tuple[str, int]],
    ) -> None:
        self._lane_of = lane_of
        self._partition_of = partition_of
        self._ready: deque[T] = deque()
        # Busy lanes. The head of each deque is the lane's ready or in-flight item; the rest are queued.
        # Keeping the head lets finish() recognise a stale item (dropped lane, or the lane re-created after a
        # partition came back) by identity instead of promoting somebody else's successor.
        self._lanes: dict[Lane, deque[T]] = {}
        # Lanes whose head started a run of more than one item (see take(runs=True)): how many of the lane's
        # first items are taken. Absent means one: the head alone is ready or in flight.
        self._taken: dict[Lane, int] = {}
        self._queued = 0

    def submit(self, item: T) -> None:
        """Add an item: ready at once when it has no lane or its lane is idle, else queued behind its lane."""
        lane = self._lane_of(item)
        if lane is None:
            self._ready.append(item)
            return
        line = self._lanes.get(lane)
        if line is None:
            self._lanes[lane] = deque((item,))
            self._ready.append(item)
        else:
            line.append(item)
            self._queued += 1

    def take(self, n: int, *, runs: bool = False) -> list[T]:
        """Pop up to ``n`` ready items, oldest-ready first.

        Without ``runs`` a take holds at most one item per lane. With ``runs`` (batch delivery), when there are
        fewer than ``n`` ready items, the ready items' lanes fill the rest: each brings its queued successors, in
        submission order, after all the ready items. The lane then has a *run* of several items in flight, which
        must be finished in order. Ready items go first because they are the oldest of their lanes: completing
        them is what moves a partition's committed watermark.
        """
        ready = self._ready
        if n >= len(ready):
            items = list(ready)
            ready.clear()
        elif n <= 0:
            return []
        else:
            popleft = ready.popleft
            return [popleft() for _ in range(n)]
        if not runs or not self._queued:
            return items
        lane_of, lanes, room = self._lane_of, self._lanes, n - len(items)
        for item in items[:]:
            lane = lane_of(item)
            if lane is None:
                continue
            line = lanes[lane]
            extra = min(len(line) - 1, room)
            if extra > 0:
                items.extend(line[i] for i in range(1, extra + 1))
                self._taken[lane] = 1 + extra
                self._queued -= extra
                room -= extra
                if not room:
                    break
        return items

    def finish(self, item: T) -> None:
        """Release the lane of a taken item: its next queued item becomes ready, or the lane is freed.

        The items of a run are finished in order: only the lane's head (its oldest taken item) can be finished.

        Pass the very object that :meth:`take` returned: the lane is matched by identity, which is what makes
        a stale finish harmless. Do not call it for an item that will be retried: its lane must stay busy to
        keep order. Finishing an item whose lane was dropped (see :meth:`drop_partition`), or any item that
        does not hold its lane, does nothing.
        """
        lane = self._lane_of(item)
        if lane is None:
            return
        line = self._lanes.get(lane)
        if line is None or line[0] is not item:
            return
        line.popleft()
        taken = self._taken.pop(lane, 1) - 1
        if taken:
            self._taken[lane] = taken  # the new head is the next item of the run, already taken
        elif line:
            self._queued -= 1
            self._ready.append(line[0])
        else:
            del self._lanes[lane]

    def drop_partition(self, tp: tuple[str, int], keep: Callable[[T], bool] | None = None) -> list[T]:
        """Remove and return every ready or queued item of partition ``tp`` (rebalance revoke).

        Ready items come first in ready order, then queued items lane by lane in submission order. In-flight
        items (runs included) of ``tp`` are not returned; their lanes are dropped, so finishing them later is a no-op.

        ``keep`` (a log restarted at some offset): only items for which it is false go, and it must hold for a
        prefix of each lane (items before some offset). A lane keeps that prefix, in flight or not; an in-flight
        item that goes is no longer the lane's, so finishing it later is a no-op, as above.
        """
        partition_of = self._partition_of
        dropped: list[T] = []
        kept: deque[T] = deque()
        for item in self._ready:
            (dropped if partition_of(item) == tp and (keep is None or not keep(item)) else kept).append(item)
        self._ready = kept
        stale = [lane for lane, line in self._lanes.items() if partition_of(line[0]) == tp]
        for lane in stale:
            line = self._lanes.pop(lane)
            taken = self._taken.pop(lane, 1)  # the first `taken` are ready (collected above) or in flight
            prefix = 0
            if keep is not None:
                while prefix < len(line) and keep(line[prefix]):
                    prefix += 1
            for index in range(max(prefix, taken), len(line)):
                self._queued -= 1
                dropped.append(line[index])
            if prefix:
                self._lanes[lane] = deque(line[i] for i in range(prefix))
                if min(taken, prefix) > 1:
                    self._taken[lane] = min(taken, prefix)
        return dropped

    @property
    def ready_count(self) -> int:
        """Items waiting to be taken."""
        return len(self._ready)

    @property
    def queued_count(self) -> int:
        """Items waiting behind a busy lane."""
        return self._queued

    @property
    def busy_lanes(self) -> int:
        """Lanes with a ready or in-flight item."""
        return len(self._lanes)

    def __len__(self) -> int:
        return len(self._ready) + self._queued

    def __repr__(self) -> str:
        return f"LaneScheduler(ready={len(self._ready)}, queued={self._queued}, busy_lanes={len(self._lanes)})"
