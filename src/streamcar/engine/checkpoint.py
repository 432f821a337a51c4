"""The checkpoint: which offsets are done, and when and in what order they are committed.

A message is *done* when its reply was acknowledged by the broker, it was dropped, or its dead letter was
acknowledged; :meth:`Checkpoint.release` is the one call that says so (the settling hands it each message once
its outcome is final). Only the contiguous watermark of done offsets per partition is committed
(:class:`~streamcar.engine.offsets.OffsetTracker`), so whatever was not done is redelivered after a crash.

The order of a commit, written down where it happens (:meth:`Checkpoint.commit`):

1. the watermarks are taken *after* the replies below them were acknowledged: releasing a message is what
   moves them, and it happens only after the broker's ack (the producer is idempotent with acks=all, so an
   acknowledged reply is on the log for good);
2. only partitions this member still owns are committed (a revoked one was committed by its revoke);
3. the commit goes through the consumer's thread, synchronously, and only a commit the broker took is recorded
   as committed; a refused one (mid-rebalance) is simply tried again at the next tick.

When: every ``commit_interval``, and as soon as ``max_in_flight / 2`` messages were released since the last
commit, which bounds what a crash makes us redo (and so the duplicates it causes) to about ``max_in_flight``.
A source that ends (a replay) commits nothing: the pipeline's group offsets stay where they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from confluent_kafka import KafkaException

from streamcar.engine.offsets import OffsetTracker
from streamcar.kafka.records import TP

log = logging.getLogger("streamcar.pipeline")

Committer = Callable[[Mapping[TP, int]], Awaitable[None]]
"""Commits offsets (through the consumer's thread); raises KafkaException when the broker refuses."""


class Checkpoint:
    def __init__(self, name: str, *, max_in_flight: int, interval: float, commits: bool = True) -> None:
        self._name = name
        self.tracker = OffsetTracker()
        self._interval = interval
        self._commits = commits
        self._every = max(1, max_in_flight // 2)
        self._since = 0
        self._committing = False
        self._committer: Committer | None = None
        self._owned: Collection[TP] = ()
        self._task: asyncio.Task[None] | None = None

    def start(self, committer: Committer, owned: Collection[TP]) -> None:
        """Commit through ``committer``, for the partitions in ``owned`` (a live view of what this member owns)."""
        self._committer = committer
        self._owned = owned
        if self._commits:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"{self._name}-commit")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def release(self, tp: TP, offset: int) -> None:
        """``offset`` of ``tp`` is done; commit soon when enough were released since the last commit."""
        self.tracker.done(tp, offset)
        self._since += 1
        if self._since >= self._every and not self._committing and self._commits:
            asyncio.get_running_loop().create_task(self.commit())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.commit()

    async def commit(self) -> None:
        """Commit the watermarks that moved, in the order the module docstring gives."""
        committer = self._committer
        if committer is None or self._committing or not self._commits:
            return
        owned = self._owned
        points = {tp: o for tp, o in self.tracker.commit_points().items() if tp in owned}  # 1 and 2
        if not points:
            return
        self._committing = True
        self._since = 0
        try:
            await committer(points)  # 3
        except KafkaException as exc:  # e.g. mid-rebalance; the next tick (or the revoke) commits again
            log.info(
                "%s: commit deferred: %s", self._name, exc, extra={"event": "commit-deferred", "pipeline": self._name}
            )
            return
        finally:
            self._committing = False
        self.tracker.mark_committed(points)
