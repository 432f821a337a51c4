"""The checkpoint: which offsets are done, and when and in what order they are committed.

A message is *done* when its reply was acknowledged by the broker, it was dropped, or its dead letter was
acknowledged; :meth:`Checkpoint.done` is the one call that says so (the settling hands it each message once
its outcome is final). Only the contiguous watermark of done offsets per partition is committed
(:class:`~streamcar.engine.offsets.OffsetTracker`), so whatever was not done is redelivered after a crash.

Each commit also carries the offsets done *above* the watermark, in the commit's metadata
(:mod:`streamcar.kafka.doneahead`): a message waiting for its retry holds the watermark back while later ones
complete, and whoever owns the partition next skips those (:meth:`Checkpoint.resume`) instead of redoing them.

The order of a commit, written down where it happens (:meth:`Checkpoint.commit`):

1. the watermarks and done-ahead offsets are taken *after* the replies they cover were acknowledged: releasing
   a message is what moves them, and it happens only after the broker's ack (the producer is idempotent with
   acks=all, so an acknowledged reply is on the log for good);
2. only partitions this member still owns are committed (a revoked one was committed by its revoke);
3. the commit goes through the consumer's thread, synchronously, and only a commit the broker took is recorded
   as committed; a refused one (mid-rebalance) is simply tried again at the next tick.

When: every ``commit_interval``, and as soon as ``max_in_flight / 2`` messages were released since the last
commit; if a commit is under way then, the next follows the moment it ends.

What a crash redoes is what was taken and is not covered by a commit the broker took: the messages in flight, and
those released since (:attr:`Checkpoint.owed`). A commit that travels long (a loaded broker, a distant
coordinator) would let the second grow with the throughput, so the dispatcher takes no new message while both
together reach ``3 x max_in_flight`` (:meth:`~streamcar.engine.inflight.InFlight.free`): that is the bound on
what a crash redoes, whatever the commit's round trip. A commit the broker refused while that bound holds the
pipeline back is tried again within 100 ms, not at the next tick.
A source that ends (a replay) commits nothing: the pipeline's group offsets stay where they are.

An exactly-once pipeline (``exactly``) commits through its transactional producer instead, each commit one
transaction of the records and the offsets, in the order :mod:`streamcar.engine.transaction` gives (the points
are taken only once the transaction drained). It commits after ``max(500, 8 x max_in_flight)`` releases rather than
half of ``max_in_flight`` (new records wait while a transaction commits), and the bound above does not apply: what
a crash leaves uncommitted is aborted, never published twice.

The metadata's size is bounded (the broker's ``offset.metadata.max.bytes``): a partition whose next record would
let it outgrow the bound takes no new records (:meth:`Checkpoint.wait_for_room`) until completions made room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping

from streamcar.engine.offsets import BUDGET
from streamcar.engine.tracker import OffsetTracker
from streamcar.engine.transaction import EXACTLY_EVERY, ExactlyOnce
from streamcar.engine.work import Outcome, Work
from streamcar.kafka.doneahead import MAX_METADATA, DoneAheadError, decode
from streamcar.kafka.errors import CommitRefused
from streamcar.kafka.records import TP, CommitPoint
from streamcar.logs import Throttle, held_back

log = logging.getLogger("streamcar.pipeline")

Committer = Callable[[Mapping[TP, CommitPoint]], Awaitable[None]]
"""Commits offsets (through the consumer's thread); raises :class:`CommitRefused` when the broker refuses."""


class Checkpoint:
    def __init__(
        self,
        name: str,
        *,
        max_in_flight: int,
        interval: float,
        commits: bool = True,
        budget: int = BUDGET,
        exactly: ExactlyOnce | None = None,
        covered: Callable[[], None] = lambda: None,
    ) -> None:
        self._name = name
        self.tracker = OffsetTracker(budget)
        self._interval = interval
        self._commits = commits
        self.exactly = exactly
        """An exactly-once pipeline's transactions: each commit is one (see streamcar.engine.transaction)."""
        # a transaction's commit holds its records back while it drains, so those are fewer and larger
        self._every = max(1, max_in_flight // 2) if exactly is None else max(EXACTLY_EVERY, 8 * max_in_flight)
        self._since = 0
        self._committing = False
        self._idle = asyncio.Event()  # set while no commit is under way
        self._idle.set()
        self._again = False  # enough was released during a commit for the next to follow at once
        self._soon = False  # a commit task was made and has not started yet
        self._committer: Committer | None = None
        self._owned: Collection[TP] = ()
        self._task: asyncio.Task[None] | None = None
        self._room: dict[TP, tuple[int, Callable[[], None]]] = {}
        self._throttle = Throttle()
        self._limit = max_in_flight
        self._owed: dict[TP, int] = {}  # per partition: released, not covered by a commit the broker took
        self.owed = 0
        """Messages released and not covered by a commit the broker took yet (a crash now would redo them)."""
        self.covered = covered
        """Called when a commit the broker took lowered :attr:`owed` (the dispatcher may take messages again)."""

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

    def done(self, work: Work, result: Outcome) -> None:
        """``work`` is done (with ``result``): its offset may be committed; commit soon when enough were done
        since the last commit."""
        tp, offset = work.tp, work.event.offset
        tracker = self.tracker
        if tracker.done(tp, offset) and self._commits and self.exactly is None:
            self._owed[tp] = self._owed.get(tp, 0) + 1
            self.owed += 1
        self._since += 1
        if self._since >= self._every and self._commits:
            if self._committing:
                self._again = True
            else:
                self._commit_soon()
        if self._room and tp in self._room:
            waiting, wake = self._room[tp]
            if tracker.fits(tp, waiting):
                del self._room[tp]
                wake()

    def wait_for_room(self, tp: TP, offset: int, wake: Callable[[], None]) -> None:
        """``offset`` of ``tp`` does not fit (:meth:`OffsetTracker.fits`): call ``wake`` once it does."""
        self._room[tp] = (offset, wake)

    def forget(self, tps: Collection[TP]) -> None:
        """``tps`` were revoked or lost: nothing waits for room in them any more."""
        for tp in tps:
            self._room.pop(tp, None)
            self.owed -= self._owed.pop(tp, 0)  # committed by the revoke, or the next owner's to redo

    def resume(self, tp: TP, committed: CommitPoint) -> None:
        """``tp`` was assigned, with what its previous owner committed: the offsets that commit says were done
        above its offset are skipped when read. Metadata that is not streamcar's, or that was left beside another
        offset (a reset by another tool), is ignored, with one warning."""
        if not committed.metadata:
            return
        try:
            base, runs = decode(committed.metadata)
            if base != committed.offset:
                raise DoneAheadError(f"written beside offset {base}, not beside the committed {committed.offset}")
        except DoneAheadError as exc:
            self._warn(
                "foreign-metadata",
                f"{tp[0]}[{tp[1]}]: the committed offset's metadata is not a done-ahead set ({exc}): ignored, every "
                f"record from offset {committed.offset} on is processed",
            )
            return
        self.tracker.preset(tp, runs)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.commit()

    async def commit(self, also: Collection[TP] = ()) -> None:
        """Commit the watermarks that moved, in the order the module docstring gives (of the partitions owned, and
        ``also`` those: being revoked)."""
        committer = self._committer
        if committer is None or self._committing or not self._commits:
            return
        owned = self._owned
        if self.exactly is not None:
            await self._transaction(owned, also)
            return
        points = {tp: o for tp, o in self.tracker.commit_points().items() if tp in owned}  # 1 and 2
        if not points:
            return
        self._committing = True
        self._idle.clear()
        self._since = 0
        owed = {tp: self._owed.get(tp, 0) for tp in points}  # what this commit covers once the broker took it
        try:
            await self._commit(committer, points)  # 3
        except CommitRefused as exc:  # e.g. mid-rebalance; the next tick (or the revoke) commits again
            self._warn("commit-deferred", f"commit deferred: {exc}", level=logging.INFO)
            if self.owed >= self._limit:  # the dispatcher may be waiting for this commit: try again soon
                loop = asyncio.get_running_loop()
                loop.call_later(min(self._interval, 0.1), lambda: loop.create_task(self.commit()))
            return
        finally:
            self._ended()
        self.tracker.mark_committed(points)
        self._cover(owed)

    async def commit_now(self, also: Collection[TP] = ()) -> None:
        """Commit once any commit under way ended (a revoke's: its partitions are released right after)."""
        while self._committing:
            await self._idle.wait()
        await self.commit(also)

    async def _transaction(self, owned: Collection[TP], also: Collection[TP]) -> None:
        """An exactly-once commit: the points are taken once the transaction drained (see ExactlyOnce.commit)."""
        assert self.exactly is not None
        self._committing = True
        self._idle.clear()
        self._since = 0
        try:
            points = await self.exactly.commit(
                lambda: {tp: o for tp, o in self.tracker.commit_points().items() if tp in owned or tp in also}
            )
        finally:
            self._ended()
        if points:
            self.tracker.mark_committed(points)

    def _cover(self, owed: Mapping[TP, int]) -> None:
        """A commit the broker took covers ``owed`` releases per partition (those since are still owed)."""
        left = self._owed
        for tp, count in owed.items():
            if tp in left:  # not revoked meanwhile (forget took its count off)
                left[tp] -= count
                self.owed -= count
                if not left[tp]:
                    del left[tp]
        self.covered()

    async def _commit(self, committer: Committer, points: Mapping[TP, CommitPoint]) -> None:
        try:
            await committer(points)
        except CommitRefused as exc:
            if not exc.metadata_too_large:
                raise
            # a broker whose offset.metadata.max.bytes is below the default: the offsets still go in, without
            # the done-ahead offsets (a crash then redoes those)
            self._warn(
                "metadata-too-large",
                "the broker refused the done-ahead offsets as too large (offset.metadata.max.bytes is below "
                f"{MAX_METADATA}); committing the offsets without them",
            )
            await committer({tp: CommitPoint(point.offset) for tp, point in points.items()})

    def _ended(self) -> None:
        """A commit ended: the next follows at once if enough was released meanwhile."""
        self._committing = False
        self._idle.set()
        if self._again:
            self._again = False
            self._commit_soon()

    def _commit_soon(self) -> None:
        """A commit as soon as the loop gets to it: one task, however many messages are done before it starts
        (a task each made as many commit tasks as messages a round completed past the threshold)."""
        if not self._soon:
            self._soon = True
            asyncio.get_running_loop().create_task(self._soon_commit())

    async def _soon_commit(self) -> None:
        self._soon = False
        await self.commit()

    def _warn(self, event: str, text: str, *, level: int = logging.WARNING) -> None:
        """One line per ``event`` per interval, however often it happens."""
        held = self._throttle.allow(event)
        if held is not None:
            log.log(
                level,
                "%s: %s%s",
                self._name,
                text,
                held_back(held, self._throttle.interval),
                extra={"event": event, "pipeline": self._name},
            )
