"""Every message taken from the buffer and not done yet, by where it is, and the partitions it may belong to.

A message taken from the buffer is in exactly one of these until it is done (or abandoned), and moves between them
only through this class's methods (no other module assigns into its containers):

* **forming**: gathered into the batch being formed (batch delivery only);
* **calling**: launched into a call that has not returned (a count: the task holds the messages);
* **running**: in a call or settling its outcome, by the task doing it (a batch shares one task);
* **waiting**: on a retry timer (the retries of one batch share one timer);
* **parked**: a retry that came due while the circuit was open;
* **held**: answered, waiting for an earlier message of its lane: one of the same batch, or the one whose reply
  the broker has not acknowledged yet (see ``publishing``).

``publishing`` is not a place of its own but a note beside ``running``: per lane, the message whose reply or dead
letter is with the producer, unacknowledged. It gave its lane up when it handed the record over, so the lane's next
message is called meanwhile; that message's outcome waits (held) until this one is done, so a key's replies are
published in order even when the broker refuses one and it is sent again.

Ownership: a message is *current* while the partition it came from is still assigned to us since it was taken
(its generation); a revoke, or a log that restarted under it, makes it stale, and a stale message's outcome is
ignored (the partition's next owner, or the new log, redoes it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from streamcar.engine.scheduler import Lane
from streamcar.engine.work import Work
from streamcar.kafka.records import TP

FANOUT_PER_SLOT = 1000
"""Records of fan-out replies that take the place of one message in flight (about 1 MB)."""


class InFlight:
    __slots__ = (
        "accepting",
        "calling",
        "changed",
        "fanned",
        "forming",
        "generation",
        "held",
        "parked",
        "publishing",
        "running",
        "verdicts",
        "waiting",
    )

    def __init__(self) -> None:
        self.running: dict[Work, asyncio.Task[Any]] = {}
        self.waiting: dict[Work, asyncio.TimerHandle] = {}
        self.held: set[Work] = set()
        self.publishing: dict[Lane, Work] = {}
        self.parked: list[Work] = []
        self.forming: list[Work] = []
        self.calling = 0
        self.accepting: set[TP] = set()  # partitions assigned to us
        self.generation: dict[TP, int] = {}
        self.changed = asyncio.Event()  # set whenever a message leaves ``running``
        self.verdicts = 0  # messages ever decided without a call: until there is one, no call looks for them
        self.fanned = 0  # records of fan-out replies not done yet (they count against max_in_flight)

    # -- counts -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Messages taken and not done: in a call, publishing, waiting for a retry, parked, held or forming."""
        return len(self.running) + len(self.waiting) + len(self.held) + len(self.forming) + len(self.parked)

    def occupied(self) -> int:
        """What counts against max_in_flight: messages in a call, forming a batch, waiting for a retry, parked or
        held. Not those whose reply is being published: their call slot is free while the broker acknowledges
        (their key still waits, so order holds), else a slow service's slots would idle through every ack. But
        the records of fan-out replies not done yet take a slot per :data:`FANOUT_PER_SLOT`: a reply's records
        stay in memory until each is acknowledged."""
        taken = self.calling + len(self.waiting) + len(self.held) + len(self.forming) + len(self.parked)
        return taken + self.fanned // FANOUT_PER_SLOT if self.fanned else taken

    def free(self, limit: int, owed: int = 0) -> int:
        """How many more may be taken: ``limit`` calls, and as many more messages whose replies wait for the
        broker's acknowledgement (a publish that cannot happen, say to a missing topic, must not let in flight
        grow without bound); and no more than ``3 x limit`` taken and not covered by a commit the broker took,
        with the ``owed`` ones done since it (the bound on what a crash redoes, see
        :mod:`~streamcar.engine.checkpoint`)."""
        taken = len(self)
        return min(limit - self.occupied(), 2 * limit - taken, 3 * limit - taken - owed)

    # -- moves: every change of place is one of these -----------------------------------------------------------
    def launched(self, works: list[Work], task: asyncio.Task[Any]) -> None:
        """``works`` are in a call, which ``task`` makes and then settles (counted at once, not when the task
        starts: a dispatch meanwhile must see them)."""
        self.calling += len(works)
        running = self.running
        for work in works:
            running[work] = task

    def returned(self, count: int) -> None:
        """The calls of ``count`` messages returned, or were not made after all."""
        self.calling -= count

    def ended(self, works: Iterable[Work], task: asyncio.Task[Any] | None) -> None:
        """``task``, which settled ``works``, ended: each is done, waiting for a retry, held, or abandoned. One
        whose retry came due meanwhile and was launched again belongs to its new task, and stays."""
        running = self.running
        for work in works:
            if running.get(work) is task:
                del running[work]
        self.changed.set()

    def adopt(self, works: list[Work], task: asyncio.Task[Any]) -> None:
        """The held ``works`` were released: ``task`` settles them now."""
        running, held = self.running, self.held
        for work in works:
            held.discard(work)
            running[work] = task

    def hold(self, blocker: Work, work: Work) -> None:
        """``work`` waits for ``blocker``, an earlier message of its lane, to be done."""
        blocker.hold(work)
        self.held.add(work)

    def publish(self, lane: Lane, work: Work) -> None:
        """``work``'s record is with the producer, the latest of its lane: the lane's next message waits for it."""
        self.publishing[lane] = work

    def published(self, lane: Lane, work: Work) -> None:
        """``work`` is done: its lane's next message no longer waits for it."""
        if self.publishing.get(lane) is work:
            del self.publishing[lane]

    def wait(self, works: list[Work], timer: asyncio.TimerHandle) -> None:
        """``works`` wait for a retry, on ``timer``."""
        waiting = self.waiting
        for work in works:
            waiting[work] = timer

    def due(self, works: list[Work]) -> list[Work]:
        """``works``' retry timer ran: those still waiting for it and current (to be called again)."""
        waiting = self.waiting
        return [w for w in works if waiting.pop(w, None) is not None and self.current(w)]

    def park(self, works: list[Work]) -> None:
        """Retries came due while the circuit was not closed (or pacing holds them): they wait for it."""
        self.parked.extend(works)

    def unpark(self, count: int | None = None) -> list[Work]:
        """The oldest ``count`` parked messages (None: all), to be called."""
        parked = self.parked
        if count is None or count >= len(parked):
            self.parked = []
            return parked
        taken = parked[:count]
        del parked[:count]
        return taken

    def form(self, works: list[Work]) -> None:
        """``works`` join the batch being formed."""
        self.forming.extend(works)

    def formed(self) -> list[Work]:
        """The batch formed so far, to be called."""
        batch, self.forming = self.forming, []
        return batch

    def decided(self, count: int) -> None:
        """``count`` messages were decided without a call (a verdict)."""
        self.verdicts += count

    def fan(self, count: int) -> None:
        """``count`` records of fan-out replies are in memory (negative: done with)."""
        self.fanned += count

    def unstarted(self, *, forming: bool) -> list[Work]:
        """Take every message not in a call: waiting for a retry (their timers cancelled), parked, and with
        ``forming`` the batch being formed."""
        taken = [*self.waiting, *self.parked, *(self.forming if forming else ())]
        for handle in set(self.waiting.values()):
            handle.cancel()
        self.waiting.clear()
        self.parked = []
        if forming:
            self.forming = []
        return taken

    # -- ownership --------------------------------------------------------------------------------------------
    def assign(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.generation[tp] = self.generation.get(tp, 0) + 1
            self.accepting.add(tp)

    def current(self, work: Work) -> bool:
        return self.generation.get(work.tp) == work.generation

    def stop_taking(self, tps: set[TP]) -> None:
        """No new records, retries or held messages for ``tps``; calls already running go on."""
        self.accepting -= tps
        for work in [w for w in self.waiting if w.tp in tps]:
            del self.waiting[work]  # its timer may carry other partitions' retries too: it skips this one
        self.held = {w for w in self.held if w.tp not in tps}
        self._unpublish(lambda w: w.tp in tps)
        self.parked = [w for w in self.parked if w.tp not in tps]
        self.forming = [w for w in self.forming if w.tp not in tps]

    def invalidate(self, tps: Iterable[TP]) -> None:
        """Late completions of abandoned work on ``tps`` carry the old generation and are ignored."""
        for tp in tps:
            self.generation[tp] = self.generation.get(tp, 0) + 1

    def forget(self, stale: Callable[[Work], bool]) -> None:
        """The ``stale`` messages are never current again (a log restarted under them): their outcomes, if any,
        are ignored, and those not in a call are dropped."""
        for work in [*self.running, *self.waiting, *self.held, *self.parked, *self.forming]:
            if stale(work):
                work.generation = -1
        for work in [w for w in self.waiting if stale(w)]:
            del self.waiting[work]
        self.held = {w for w in self.held if not stale(w)}
        self._unpublish(stale)
        self.parked = [w for w in self.parked if not stale(w)]
        self.forming = [w for w in self.forming if not stale(w)]

    def _unpublish(self, which: Callable[[Work], bool]) -> None:
        # in place: the settling tasks hold the mapping itself
        publishing = self.publishing
        for lane in [lane for lane, work in publishing.items() if which(work)]:
            del publishing[lane]

    def drop_waiting(self) -> None:
        """Stopping: no retry is called again, nothing parked or forming is sent (all redelivered after the
        restart, like everything uncommitted)."""
        for handle in set(self.waiting.values()):
            handle.cancel()
        self.waiting.clear()
        self.parked.clear()
        self.forming.clear()

    async def settled(self, which: Callable[[Work], bool], within: float) -> None:
        """Wait (at most ``within`` seconds) until no running message is one of ``which``."""
        deadline = time.monotonic() + within
        while any(which(w) for w in self.running):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return
