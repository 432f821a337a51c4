"""The open transaction of an exactly-once pipeline (``publish.exactly_once``): which messages have records in
it, and the gate that keeps new records out while it commits.

A transaction may only be committed with offsets that cover every input whose records are in it: a record
visible without its input's offset is published again after a crash. So a commit, in this order (the checkpoint
drives it, :meth:`Checkpoint.commit <streamcar.engine.checkpoint.Checkpoint.commit>`):

1. **close** the gate (:meth:`Transaction.close`): a message whose outcome is decided from now on waits before
   its records are handed to the producer (:meth:`Transaction.opened`); calls go on meanwhile;
2. **drain**: wait until every message with records in the transaction was released (its records acknowledged,
   hence in the transaction for good). A record the broker refused dooms the transaction instead;
3. take the commit points (watermarks and done-ahead offsets): they now cover exactly the inputs whose outcomes
   are in the transaction, and those done before it;
4. **commit** the points and the records in one transaction (``send_offsets_to_transaction`` with the consumer's
   group metadata, KIP-447, then ``commit_transaction``), and begin the next;
5. **open** the gate again.

A transaction that cannot be committed (doomed in 2, or refused in 4) is aborted: nothing of it is visible, and
the pipeline rewinds each partition with records in it (:attr:`Transaction.touched`) to its last committed offsets
and redoes their work (the service is called again: that is what ``Idempotency-Key`` is for). The other
partitions go on: their progress since the last commit published nothing the abort took back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

from streamcar.engine.work import Work
from streamcar.event import Headers
from streamcar.kafka.producer import Ack, ProduceError
from streamcar.kafka.records import TP, CommitPoint
from streamcar.kafka.transactions import Aborted

EXACTLY_EVERY = 500
"""An exactly-once pipeline commits at least every this many released messages (and ``8 x max_in_flight``)."""
METADATA_TIMEOUT = 10.0
"""Seconds the consumer's thread has to hand over the group metadata a transaction's offsets carry."""
DRAIN_TIMEOUT = 30.0
"""Seconds a commit waits for the records in the transaction to be acknowledged before it aborts instead."""
ABORT_BACKOFF = 0.5
"""Seconds the work of a second abort in a row waits before it is redone; doubled for each more, up to
:data:`MAX_ABORT_BACKOFF`. A record the broker refused again and again was redone at once, every time: 23 calls
per input."""
MAX_ABORT_BACKOFF = 10.0


def abort_backoff(in_a_row: int) -> float:
    """Seconds to wait before redoing the work of the ``in_a_row``-th abort in a row (the first: none)."""
    return 0.0 if in_a_row <= 1 else min(ABORT_BACKOFF * 2 ** (in_a_row - 2), MAX_ABORT_BACKOFF)


class Unsent(ProduceError):
    """A record not handed to the producer, exactly once: its topic is known not to take it (missing, or not
    allowed), so it would only doom the open transaction and have everything in it redone, again and again (a
    missing routed topic: 11,795 calls for 3,000 inputs and 4,251 log lines in 40 s). It waits instead, as a
    record does at least once: acted on again after a backoff, without a call. Never in the transaction, it
    does not doom it (:meth:`Transaction.refused`)."""


class Publishing(Protocol):
    """How the settle loop publishes: in transactions (:class:`Transaction`, exactly once) or as decided
    (:data:`AT_LEAST_ONCE`). Chosen when the pipeline is wired; the settle loop tests no mode."""

    @property
    def is_open(self) -> bool:
        """Whether records may be handed to the producer now."""
        ...

    async def opened(self) -> None:
        """Wait until records may be handed to the producer."""

    def sent(self, work: Work) -> None:
        """``work``'s records were handed to the producer."""

    def released(self, work: Work) -> None:
        """``work`` is done."""

    def refused(self, work: Work, error: BaseException) -> None:
        """A record of ``work`` was refused."""


class _AtLeastOnce:
    """Records go to the producer as they are decided: nothing to open, drain or doom."""

    __slots__ = ()
    is_open = True

    async def opened(self) -> None:
        return None

    def sent(self, work: Work) -> None:
        pass

    def released(self, work: Work) -> None:
        pass

    def refused(self, work: Work, error: BaseException) -> None:
        pass


AT_LEAST_ONCE: Publishing = _AtLeastOnce()


class Transaction:
    __slots__ = ("_drained", "_open", "doomed", "on_doomed", "pending", "produced", "touched")

    def __init__(self, on_doomed: Callable[[], None] = lambda: None) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._drained = asyncio.Event()  # set when nothing is pending, or the transaction is doomed
        self.pending: set[Work] = set()
        """Messages whose records are in the open transaction and that were not released yet."""
        self.produced = False
        """Whether the open transaction holds any record."""
        self.touched: set[TP] = set()
        """The partitions whose messages' records are in the open transaction: an abort redoes those only."""
        self.doomed: str | None = None
        """Why the open transaction cannot be committed (a record of it was refused); None while it can."""
        self.on_doomed = on_doomed
        """Called when the transaction is first doomed (the pipeline aborts it at once rather than at a tick)."""

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def opened(self) -> None:
        """Wait until records may be handed to the producer."""
        await self._open.wait()

    def sent(self, work: Work) -> None:
        """``work``'s records were handed to the producer, in the open transaction."""
        self.pending.add(work)
        self.produced = True
        self.touched.add(work.tp)

    def released(self, work: Work) -> None:
        self.pending.discard(work)
        if not self.pending:
            self._drained.set()

    def refused(self, work: Work, error: BaseException) -> None:
        """A record of ``work`` was refused: the transaction is lost (librdkafka made it abortable); unless it was
        never sent (:class:`Unsent`), and so never in it."""
        if isinstance(error, Unsent):
            self.released(work)
            return
        self.pending.discard(work)
        self.doom(f"a record of {work.event.idempotency_key} was refused: {error}")

    def doom(self, why: str) -> None:
        """The open transaction cannot be committed: a commit draining it stops waiting and aborts it."""
        if self.doomed is None:
            self.doomed = why
            self.on_doomed()
        self._drained.set()

    async def close(self) -> None:
        """Keep new records out, and wait until the transaction's messages are released (or it is doomed)."""
        self._open.clear()
        if self.pending and self.doomed is None:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), DRAIN_TIMEOUT)
            except TimeoutError:
                self.doomed = f"{len(self.pending)} messages' records were not acknowledged within {DRAIN_TIMEOUT:g}s"

    def forget(self) -> None:
        """The pipeline rewound: what was pending is stale (its outcomes are ignored)."""
        self.pending.clear()
        self._drained.set()

    def reopen(self) -> None:
        """A new transaction began: records may go again."""
        self.pending.clear()
        self.produced = False
        self.touched = set()
        self.doomed = None
        self._open.set()


@runtime_checkable
class Transactional(Protocol):
    """What an exactly-once pipeline needs of its producer: :class:`~streamcar.kafka.transactions.
    TransactionalProducer`, or the engine tests' in-memory twin. A pipeline given one is exactly-once."""

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = (), *, alone: bool = False
    ) -> Ack: ...

    def hurry(self, mine: int) -> None: ...

    @property
    def clash(self) -> str | None:
        """Why its transactional id seems shared with another live producer; None when not."""
        ...

    def fit_batches(self, limit: int) -> None:
        """A topic it writes takes batches of at most ``limit`` bytes: build no larger ones from the next
        transaction on."""
        ...

    async def start(self) -> None: ...

    async def commit(self, points: Mapping[TP, CommitPoint], group_metadata: object | None) -> None:
        """Commit the open transaction with ``points``; raises :class:`Aborted` when it could not be."""
        ...

    async def abort(self, why: str | Aborted) -> None: ...

    def status(self) -> dict[str, object]: ...

    async def close(self, grace: float = 10.0) -> None: ...


class ExactlyOnce:
    """The commit of an exactly-once pipeline, in the order of the module docstring; the checkpoint calls
    :meth:`commit` where an at-least-once pipeline commits through the consumer."""

    def __init__(
        self,
        transaction: Transaction,
        producer: Transactional,
        *,
        group_metadata: Callable[[], Awaitable[object | None]],
        rewind: Callable[[float], None],
    ) -> None:
        self.transaction = transaction
        self.producer = producer
        self._group_metadata = group_metadata
        self._rewind_after = rewind
        self.aborts_in_a_row = 0
        """Transactions aborted since the last one committed: the redo waits longer each time."""

    async def commit(self, points: Callable[[], dict[TP, CommitPoint]]) -> dict[TP, CommitPoint] | None:
        """Commit the open transaction with the offsets ``points()`` gives once it drained: the points committed
        ({} when there was nothing to commit), or None when it was aborted and the partitions with records in it
        rewound."""
        transaction = self.transaction
        await transaction.close()  # 1 and 2
        try:
            if transaction.doomed is not None:
                self._rewind()  # first: the aborted work's late outcomes are stale from here on
                await self.producer.abort(transaction.doomed)
                return None
            taken = points()  # 3
            if not taken and not transaction.produced:
                return {}
            try:
                metadata = await asyncio.wait_for(self._group_metadata(), METADATA_TIMEOUT)
                await self.producer.commit(taken, metadata)  # 4
            except Aborted as exc:
                self._rewind()
                await self.producer.abort(exc)
                return None
            except TimeoutError:
                self._rewind()
                await self.producer.abort(f"the consumer gave no group metadata within {METADATA_TIMEOUT:g}s")
                return None
            self.aborts_in_a_row = 0
            return taken
        finally:
            transaction.reopen()  # 5

    def _rewind(self) -> None:
        self.aborts_in_a_row += 1
        self._rewind_after(abort_backoff(self.aborts_in_a_row))
