"""Settling a launch: acting on its replies, in rounds, until each message is done or waiting.

A round has three phases, so that a batch costs one round trip to the broker rather than one per message:

1. **decide**, in order: what each reply means (:meth:`Outcomes.act <streamcar.engine.outcomes.Outcomes.act>`)
   and its reply or dead letter handed to the producer. Records reach the producer in offset order per lane and
   the idempotent producer keeps that order, so a key's replies are published in order. A message that stays
   unresolved (a retry, or no dead-letter topic) holds the later messages of its lane from the same launch: they
   are not sent again, and not completed before it. A message whose record went to the producer may give its
   lane up (:meth:`Completion.handed_over <streamcar.engine.completion.Completion.handed_over>`): the lane's
   next message is called while the broker acknowledges, and its own outcome waits until this one is done (it
   is held behind it in its turn), so a refused record sent again still goes first.
2. **publish**: wait for the broker to acknowledge everything handed over.
3. **complete**, in order, what was acknowledged. Completing a message releases the messages it held, which are
   settled in the next round; a record the broker refused is acted on again (or dead-lettered).

How records are published is chosen when the pipeline is wired (:class:`~streamcar.engine.transaction.
Publishing`): exactly once, a message decided while the transaction commits waits for the next one (deferred).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from streamcar.engine.inflight import InFlight
from streamcar.engine.outcomes import Decision, Handed, Later
from streamcar.engine.retry import Backoff
from streamcar.engine.scheduler import Lane
from streamcar.engine.transaction import Publishing
from streamcar.engine.work import Outcome, Work
from streamcar.kafka.producer import Ack


class Decides(Protocol):
    """What settling asks of the outcomes (:class:`~streamcar.engine.outcomes.Outcomes`)."""

    def act(self, work: Work) -> Decision:
        """What ``work``'s reply means, its record (if any) handed to the producer."""
        ...

    def hurry(self, sent: int) -> None:
        """The producer sends now what it holds, ``sent`` records of which someone waits for."""
        ...

    def count(self, work: Work, result: Outcome) -> None:
        """``work`` is done: count what it published."""
        ...

    def refused(self, work: Work, result: Outcome, error: BaseException) -> None:
        """The broker did not take ``work``'s record: decide what acting on it again means."""
        ...


class Completes(Protocol):
    """What settling asks of the completion (:class:`~streamcar.engine.completion.Completion`)."""

    def handed_over(self, work: Work) -> bool:
        """``work``'s record is with the producer: whether its lane was given up for the next message."""
        ...

    def release(self, work: Work, result: Outcome) -> None:
        """``work`` is done."""
        ...


class Round:
    """What one round decided. (A plain class: one is made per launch, and a dataclass's factories cost more.)"""

    __slots__ = ("behind_broker", "blockers", "deferred", "handed", "retry", "sent", "slow")

    def __init__(self) -> None:
        self.sent: list[tuple[Work, Handed]] = []
        """Messages decided, with what they wait for."""
        self.retry: list[Work] = []
        self.slow: list[Work] = []
        """Messages that cannot be delivered (no dead-letter topic): retried at the longest backoff."""
        self.deferred: list[Work] = []
        """Decided while the transaction commits: the next one takes them."""
        self.blockers: dict[Lane, Work] = {}
        """Per lane, the unresolved message the lane's later ones wait for."""
        self.handed: set[Lane] = set()
        """Lanes with a record of this round at the producer: the producer keeps their order."""
        self.behind_broker = 0
        """Messages held behind an earlier message's unacknowledged record."""


class Settle:
    """The settle loop of every launch of one pipeline."""

    def __init__(
        self,
        *,
        inflight: InFlight,
        outcomes: Decides,
        completion: Completes,
        publishing: Publishing,
        later: Callable[[list[Work], float], None],
        wake: Callable[[], None],
        backoff: Backoff,
        max_backoff: float,
    ) -> None:
        self._inflight = inflight
        self._outcomes = outcomes
        self._completion = completion
        self._publishing = publishing
        self._later = later
        """Calls messages again after a delay (the retry timers)."""
        self._wake = wake
        """Starts new calls where slots are free (the dispatcher)."""
        self._backoff = backoff
        self._max_backoff = max_backoff

    async def settle(self, works: list[Work], touched: list[Work]) -> None:
        """Act on the replies of ``works`` (in offset order within each lane) until each is done or waiting;
        ``touched`` grows by the held messages this task settles in their turn. (The phases are plain functions
        and the waits are here: a coroutine per phase showed in the per-message cost.)"""
        publishing = self._publishing
        while works:
            if not publishing.is_open and self._nothing_to_finish(works):
                await publishing.opened()  # while the transaction commits: wait for the next one
            round_ = self._decide(works)
            if round_.retry or round_.slow:
                self._retry(round_)
            pending = self._handed(round_)
            if pending:
                await _all_done(pending)
            works, again = self._complete(round_, touched)
            if again:
                await asyncio.sleep(self._backoff.delay(max(w.refused for w in again)))

    def _nothing_to_finish(self, works: list[Work]) -> bool:
        current = self._inflight.current
        return all(w.settled is None for w in works if current(w))

    # -- 1. decide ------------------------------------------------------------------------------------------------
    def _decide(self, works: list[Work]) -> Round:
        """Each current message decided, unless it waits this round: behind an earlier message of its lane (held),
        or for the next transaction (deferred). A message no longer current is skipped: its partition was revoked
        meanwhile, and its new owner redoes it."""
        round_ = Round()
        current, blockers, handed = self._inflight.current, round_.blockers, round_.handed
        is_open = self._publishing.is_open
        for work in works:
            if not current(work):
                continue
            lane = work.lane
            if lane is not None:
                blocker = blockers.get(lane)
                if blocker is None and lane not in handed:
                    blocker = self._publishing_before(lane, work)
                    round_.behind_broker += blocker is not None
                if blocker is not None:
                    self._hold(blocker, work)
                    continue
            if work.settled is None and not is_open:
                round_.deferred.append(work)
                if lane is not None:
                    blockers[lane] = work
                continue
            self._act(work, round_)
        return round_

    def _act(self, work: Work, round_: Round) -> None:
        decision = self._outcomes.act(work)
        lane = work.lane
        if isinstance(decision, Later):
            (round_.slow if decision.slowly else round_.retry).append(work)
            if lane is not None:
                round_.blockers[lane] = work
            return
        round_.sent.append((work, decision))
        ack = decision.ack
        if ack is None:
            return
        self._publishing.sent(work)
        if lane is not None and not ack.done():
            round_.handed.add(lane)
            if self._completion.handed_over(work):
                inflight = self._inflight
                latest = inflight.publishing.get(lane)
                if latest is None or latest.event.offset < work.event.offset or not inflight.current(latest):
                    inflight.publish(lane, work)  # the latest: the lane's next message waits for it

    def _retry(self, round_: Round) -> None:
        retry = round_.retry
        if retry:
            attempts = max(w.attempts for w in retry)
            after = max((w.reply.retry_after or 0.0 for w in retry if w.reply is not None), default=0.0)
            self._later(retry, self._backoff.delay(attempts, after or None))
        if round_.slow:
            self._later(round_.slow, self._max_backoff)

    # -- 2. publish -----------------------------------------------------------------------------------------------
    def _handed(self, round_: Round) -> list[Ack]:
        """What this round handed over that the broker has not acknowledged yet (to wait for); meanwhile the
        next calls start, and the producer is hurried when nothing else will join its batch."""
        inflight = self._inflight
        pending = [ack for _, (_, ack) in round_.sent if ack is not None and not ack.done()]
        if round_.behind_broker and not inflight.calling:
            # these wait for acknowledgements: if those records are all that awaits the broker, nothing else will
            # share their batch
            self._outcomes.hurry(round_.behind_broker)
        if pending:
            # every message of this round is now publishing, waiting for a retry or held: the call slots of the
            # publishing ones are free, and the next calls need not wait for the broker's acks
            self._wake()
            if not inflight.calling:
                # no call in progress: no reply will join these in the producer's linger, and the next message of
                # their lanes may be waiting for them (one at a time per partition)
                self._outcomes.hurry(len(pending))
        return pending

    # -- 3. complete ----------------------------------------------------------------------------------------------
    def _complete(self, round_: Round, touched: list[Work]) -> tuple[list[Work], list[Work]]:
        """Complete, in order, what the broker acknowledged: what to settle in the next round, and which of those
        the broker refused (acted on again after a backoff)."""
        blockers: dict[Lane, Work] = {}
        again: list[Work] = []
        released: list[Work] = []
        current = self._inflight.current
        for work, (result, ack) in round_.sent:
            error = None if ack is None else ack.exception()  # retrieved, whoever still wants it
            if not current(work):
                continue  # rewound or revoked meanwhile (an aborted transaction's records fail as purged)
            lane = work.lane
            blocker = blockers.get(lane) if lane is not None else None
            if error is None and blocker is not None:
                work.settled = result  # done, but an earlier message of its lane is not: wait for it
                self._hold(blocker, work)
            elif error is None:
                self._done(work, result, released)
            else:
                self._publishing.refused(work, error)  # exactly once: aborted at the next commit, and redone
                self._outcomes.refused(work, result, error)
                again.append(work)
                if lane is not None:
                    blockers[lane] = work
        if released:
            self._adopt(released, touched)
        if not (round_.deferred or again or released):
            return [], []
        return round_.deferred + again + released, again

    def _done(self, work: Work, result: Outcome, released: list[Work]) -> None:
        """``work`` is done: counted, completed, and the messages it held released to ``released``."""
        self._outcomes.count(work, result)
        self._completion.release(work, result)
        self._publishing.released(work)
        lane = work.lane
        if lane is not None and self._inflight.publishing.get(lane) is work:
            self._inflight.published(lane, work)
        if work.held is not None:
            released.extend(work.held)
            work.held = None

    def _adopt(self, released: list[Work], touched: list[Work]) -> None:
        """The ``released`` messages are settled by this task now: revoke and shutdown wait for them like any
        call."""
        task = asyncio.current_task()
        assert task is not None
        self._inflight.adopt(released, task)
        touched.extend(released)

    # -- lanes ----------------------------------------------------------------------------------------------------
    def _publishing_before(self, lane: Lane, work: Work) -> Work | None:
        """The message of ``work``'s lane, earlier than it, whose record is with the producer, if any."""
        earlier = self._inflight.publishing.get(lane)
        if earlier is not None and earlier.event.offset < work.event.offset and self._inflight.current(earlier):
            return earlier
        return None

    def _hold(self, blocker: Work, work: Work) -> None:
        self._inflight.hold(blocker, work)


def _all_done(futures: list[Ack]) -> asyncio.Future[None]:
    """A future done once every one of ``futures`` is (whatever their outcome): what ``asyncio.wait`` does, minus
    its sets, timeout and per-call wrapping, which showed in profiles of the per-message path."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(futures)

    def one_done(_: Ack) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not waiter.done():
            waiter.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    return waiter
