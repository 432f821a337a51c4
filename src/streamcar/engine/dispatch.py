"""Dispatch: from the buffer into calls, single or in batches, within max_in_flight.

Single delivery starts one call per message. Batch delivery gathers taken messages into a forming batch that
goes out when it is full, when no more may be taken, or ``batch.max_wait`` after its first message. A batch takes
the oldest ready message of as many lanes as it can, then their successors (see ``LaneScheduler.take``).

Each launch is one task running ``process(works, probe)`` (the attempt: call, then settle the outcomes), which
holds the messages in ``InFlight.running`` until they are done or waiting.

The circuit is the dispatcher's gate (:class:`Gate`): while it is closed, calls start as max_in_flight allows;
otherwise it says how many may start (none while open, its probes while half-open, a ramp after it closed), and
what goes first: a probe tests the service with the oldest messages not tried yet; a ramp resumes the parked
retries first, the oldest. :class:`~streamcar.engine.pace.Pacing` (an adaptive limit, a rate limit) gates both:
while a pipeline is paced, retries due are parked and go first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from streamcar.engine.buffer import Buffer
from streamcar.engine.inflight import InFlight
from streamcar.engine.pace import Pacing
from streamcar.engine.work import Work

Process = Callable[[list[Work], bool], Coroutine[Any, Any, None]]


class Gate(Protocol):
    """What the dispatcher needs of the circuit."""

    def room(self) -> int | None:
        """How many more messages may start calls now; None: as many as max_in_flight allows."""
        ...

    @property
    def probing(self) -> bool:
        """Calls that start now are probes."""
        ...

    @property
    def probes_running(self) -> int:
        """Probe calls in progress."""
        ...

    @property
    def retries_may_probe(self) -> bool:
        """A parked retry may be a probe (no untried message came in time)."""
        ...

    def started(self, calls: int, *, probe: bool) -> None: ...


class Dispatcher:
    def __init__(
        self,
        inflight: InFlight,
        buffer: Buffer,
        *,
        max_in_flight: int,
        batch_size: int,
        max_wait: float,
        stopping: Callable[[], bool],
        gate: Gate,
        owed: Callable[[], int] = lambda: 0,
        pacing: Pacing | None = None,
        process: Process | None = None,
    ) -> None:
        self._inflight = inflight
        self._buffer = buffer
        self._limit = max_in_flight
        self._batch_size = batch_size
        self._max_wait = max_wait
        self._stopping = stopping
        self._gate = gate
        self._owed = owed  # done and not covered by a commit yet: counts against what may be taken
        self._linger: asyncio.TimerHandle | None = None
        self.pacing = pacing if pacing is not None and (pacing.adaptive or pacing.bucket) else None
        """None when nothing but max_in_flight gates calls."""
        self._refill: asyncio.TimerHandle | None = None
        self.process = process
        """The attempt: calls a launch's messages and settles their outcomes."""

    def dispatch(self) -> None:
        """Start ready messages while fewer than max_in_flight are taken (forming, in a call, retrying, held)."""
        if self._stopping():
            return
        room = self._gate.room()
        pacing = self.pacing
        if pacing is not None:
            self._paced(room)
            return
        if room is not None:
            self._gated(room)
            return
        inflight = self._inflight
        if inflight.parked:  # left from a ramp: they are the oldest, and already count against the limit
            self.launch_in_batches(inflight.unpark())
        self._take(inflight.free(self._limit, self._owed()))

    def _paced(self, room: int | None) -> None:
        """Dispatch within what pacing allows (and the circuit's ``room``, if it is not closed): the parked
        retries first, then new messages; if the rate limit is what stops them, again once it has tokens."""
        pacing, inflight = self.pacing, self._inflight
        assert pacing is not None
        pace = pacing.room(inflight.calling + len(inflight.forming))
        if room is not None:
            self._gated(min(room, pace))
        else:
            if inflight.parked and pace > 0:  # already counted against max_in_flight
                due = inflight.unpark(pace)
                count = len(due)
                pacing.started(count)
                pace -= count
                self.launch_in_batches(due)
            before = len(inflight)
            self._take(min(pace, inflight.free(self._limit, self._owed())))
            pacing.started(len(inflight) - before)
        if self._refill is None and (inflight.parked or self._buffer.ready_count):
            wait = pacing.refill_in()
            if wait is not None:
                self._refill = asyncio.get_running_loop().call_later(wait, self._refilled)

    def _refilled(self) -> None:
        self._refill = None
        self.dispatch()

    def _take(self, free: int) -> None:
        """Take up to ``free`` ready messages: into calls, or into the forming batch."""
        buffer = self._buffer
        inflight = self._inflight
        size = self._batch_size
        if size == 1:
            if free > 0 and buffer.ready_count:
                for work in buffer.take(min(free, buffer.ready_count)):
                    self.launch([work])
            return
        while free > 0 and buffer.ready_count:
            taken = buffer.take(min(free, size - len(inflight.forming)), runs=True)
            inflight.form(taken)
            free -= len(taken)
            if len(inflight.forming) >= size:
                self.flush()
        if inflight.forming:
            if free <= 0 or self._max_wait <= 0:
                self.flush()
            elif self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(self._max_wait, self.flush)

    def _gated(self, room: int) -> None:
        """Start at most ``room`` messages' calls, as the circuit says: probes (untried messages first, each
        alone), or a ramp (parked retries first)."""
        if room <= 0:
            return  # an open circuit calls nothing until its probe got through
        gate, inflight, buffer = self._gate, self._inflight, self._buffer
        probe = gate.probing
        taken: list[Work] = []

        def untried() -> None:
            # probes are few, and may go past max_in_flight by their number: parked retries count against it, and
            # when they fill it, an untried message is still the probe to send (a retry may fail because of itself)
            free = room if probe else inflight.free(self._limit, self._owed())
            count = min(room - len(taken), free, buffer.ready_count)
            if count > 0:
                taken.extend(buffer.take(count))  # no runs: a lane's run must travel in one batch

        def retries() -> None:
            # a probe round tries one parked retry, and only when no untried message came within open_for (a retry
            # may fail because of itself); the rest of its room waits for untried messages to come
            if probe:
                count = int(gate.retries_may_probe and not taken and not gate.probes_running)
            else:
                count = min(room - len(taken), len(inflight.parked))
            if count > 0 and inflight.parked:
                taken.extend(inflight.unpark(count))

        for step in (untried, retries) if probe else (retries, untried):
            step()
        for work in [w for w in taken if w.verdict is not None]:
            taken.remove(work)
            self.launch([work])  # decided without a call: nothing to test, nothing to pace
        if not taken:
            return
        gate.started(len(taken), probe=probe)
        if self.pacing is not None:
            self.pacing.started(len(taken))
        if probe:
            for work in taken:
                self.launch([work], probe=True)
        else:
            self.launch_in_batches(taken)

    def flush(self) -> None:
        """Send the forming batch."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        batch = self._inflight.formed()
        if batch and not self._stopping():  # taken before the circuit opened: it goes out all the same
            self.launch(batch)

    def launch(self, works: list[Work], *, probe: bool = False) -> None:
        """One task for ``works``: their call (a ``probe`` of a half-open circuit, maybe) and their outcomes."""
        process = self.process
        assert process is not None
        self._inflight.launched(works, asyncio.get_running_loop().create_task(process(works, probe)))

    def launch_in_batches(self, works: list[Work]) -> None:
        """Call ``works`` again (retries due, or parked while the circuit was open), batch by batch."""
        size = self._batch_size
        for start in range(0, len(works), size):
            self.launch(works[start : start + size])

    def stop(self) -> None:
        for timer in (self._linger, self._refill):
            if timer is not None:
                timer.cancel()
        self._linger = self._refill = None
