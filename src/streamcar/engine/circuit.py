"""The circuit around the service: what the pipeline does when the breaker opens and closes, and its probes.

The breaker (:mod:`streamcar.engine.breaker`) decides from the calls' outcomes; this room acts on its
transitions, and is the dispatcher's gate (:meth:`Circuit.room`):

* **Open**: consumption pauses, nothing is dispatched, due retries are parked, and a probe is timed for
  ``open_for``.
* **Half-open**: ``probes`` calls, with the oldest messages not tried yet first (a retry may fail because of
  itself). With none at hand, consumption resumes and the next messages that come are the probes; a parked retry
  is a probe only when no untried message came within ``open_for`` (say only retries are left). The circuit
  closes only on a real answer: the first probe answered closes it.
* **Closed, ramping**: the service just came back. Calls resume paced, as TCP's slow start does: ``probes`` at a
  time at first, one more for each call answered (so the pace doubles every round trip) until ``max_in_flight``.
  The parked retries go first, being the oldest; resumed all at once they would fail together and trip it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamcar.config import CircuitBreakerConfig
from streamcar.engine.breaker import CircuitBreaker, Closed, Opened, State
from streamcar.engine.inflight import InFlight
from streamcar.engine.work import PipelineStats
from streamcar.failures import Kind, outage

log = logging.getLogger("streamcar.pipeline")


class Circuit:
    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig,
        *,
        stats: PipelineStats,
        inflight: InFlight,
        stopping: Callable[[], bool],
        max_in_flight: int,
        batch_size: int = 1,
        wake: Callable[[], None] = lambda: None,
        consume: Callable[[], None] = lambda: None,
        pause: Callable[[], None] = lambda: None,
    ) -> None:
        """``wake``: starts what the circuit now lets through (the dispatcher); ``consume``: lets consumption go
        on as far as the buffer allows, and ``pause``: pauses it (the consumer's flow)."""
        self._name = name
        self._probes = config.probes
        self._limit = max_in_flight
        self._start = config.probes * batch_size  # messages in calls at the start of a ramp
        self._ramp: int | None = None  # closed, ramping: messages that may be in calls; None: no limit of ours
        self._probe_room = 0  # half-open: probes still to start
        self._grace = config.open_for  # half-open: how long untried messages may take to come, before a retry probes
        self._retries_may_probe = False
        self._grace_timer: asyncio.TimerHandle | None = None
        self.breaker = CircuitBreaker(config)
        self._stats = stats
        self._inflight = inflight
        self._stopping = stopping
        self._probe_timer: asyncio.TimerHandle | None = None
        self._wake = wake
        self._consume = consume
        self._pause = pause

    def allows(self) -> bool:
        """May a call that is not a probe start now?"""
        return self.breaker.allows()

    def room(self) -> int | None:
        """How many more calls may start now: None for as many as max_in_flight allows (closed), else a number
        (open: none; half-open: the probes not started yet; ramping: up to the ramp)."""
        state = self.breaker.state
        if state is State.CLOSED:
            return None if self._ramp is None else max(0, self._ramp - self._inflight.calling)
        return self._probe_room if state is State.HALF_OPEN else 0

    @property
    def probing(self) -> bool:
        """Calls that start now are probes."""
        return self.breaker.state is State.HALF_OPEN

    @property
    def retries_may_probe(self) -> bool:
        """Half-open, and no untried message came within ``open_for``: a parked retry may be the probe."""
        return self._retries_may_probe

    @property
    def probes_running(self) -> int:
        return self.breaker.probing if self.breaker.state is State.HALF_OPEN else 0

    def started(self, calls: int, *, probe: bool) -> None:
        """``calls`` calls were launched through the gate."""
        if probe:
            self._probe_room = max(0, self._probe_room - calls)
            self.breaker.probing += calls

    def may_consume(self) -> bool:
        """Closed, or half-open with probes to start (the messages that come are the probes)."""
        return self.breaker.allows() or (self.breaker.state is State.HALF_OPEN and self._probe_room > 0)

    def silent(self, started: float, kind: Kind | None = None) -> bool:
        """No call was answered since ``started`` (time.monotonic()): see the breaker."""
        return self.breaker.silent(started, kind, time.monotonic())

    def holds(self, refusal: str | None) -> bool:
        """A message the service refused so waits, instead of being dead-lettered: the circuit is open on a reject
        storm (the setup is wrong; see the breaker)."""
        return refusal is not None and self.breaker.refusing is not None

    @property
    def open_reason(self) -> str | None:
        """Why the circuit is open (or half-open, probing); None while it is closed."""
        breaker = self.breaker
        return None if breaker.state is State.CLOSED else f"{breaker.state.value}: {breaker.reason}"

    def record(
        self,
        failure: str | None,
        *,
        probe: bool,
        started: float | None = None,
        fresh: bool = True,
        messages: int = 1,
        refusal: str | None = None,
        counts: bool = True,
    ) -> None:
        """A call of ``messages`` ended (``failure``: its kind when no message of it got through; ``refusal``: the
        service refused every one of them so): the breaker decides. ``started``: when it began
        (time.monotonic()); ``fresh``: its messages were tried for the first time."""
        breaker = self.breaker
        now = time.monotonic()
        self._on(
            breaker.record(
                now,
                failure,
                probe=probe,
                started=started,
                fresh=fresh,
                refusal=refusal,
                messages=messages,
                counts=counts,
            )
        )
        if self._ramp is not None and breaker.state is State.CLOSED and not outage(failure) and refusal is None:
            self._ramp += messages  # as many more as were answered: twice as many each round trip
            if self._ramp >= self._limit:
                self._ramp = None

    def stop(self) -> None:
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None
        self._end_grace()

    def _end_grace(self) -> None:
        self._retries_may_probe = False
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def _on(self, transition: Opened | Closed | None) -> None:
        if isinstance(transition, Opened):
            self._opened(transition)
        elif isinstance(transition, Closed):
            log.warning(
                "%s: circuit closed: the service answered again after %.1fs; resuming",
                self._name,
                transition.outage,
                extra=self._fields("circuit-closed", outage_seconds=round(transition.outage, 3)),
            )
            self._probe_room = 0
            self._end_grace()
            self._ramp = self._start if self._start < self._limit else None
            self._wake()  # the parked retries first, paced by the ramp
            self._consume()

    def _opened(self, transition: Opened) -> None:
        if transition.first:
            log.warning(
                "%s: circuit open: %s; consumption paused, probing in %.1fs",
                self._name,
                transition.reason,
                transition.wait,
                extra=self._fields("circuit-open", reason=transition.reason),
            )
            self._stats.note_error(f"circuit open: {transition.reason}")
        else:
            log.info(
                "%s: circuit still open: %s; next probe in %.1fs",
                self._name,
                transition.reason,
                transition.wait,
                extra=self._fields("circuit-probe-failed", reason=transition.reason),
            )
        self._ramp = None
        self._probe_room = 0
        self._end_grace()
        self._pause()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        self._probe_timer = asyncio.get_running_loop().call_later(transition.wait, self._probe)

    def _probe(self) -> None:
        """Open long enough: let ``probes`` calls through, with the oldest messages not tried yet first (see
        :meth:`Dispatcher.dispatch`). With too few at hand, consumption resumes and the next messages that come are
        the probes; a parked retry may probe once none came within ``open_for``. (A retry probed at once would
        most often fail again at once, because of itself, and reopen the circuit before anything could come: at
        start-up, when the first failures are all there is, that was a stall of minutes.)"""
        self._probe_timer = None
        if self._stopping() or self.breaker.state is not State.OPEN:
            return
        self._ramp = None
        self.breaker.probe(0)  # half-open: the probes count themselves in as they start
        self._probe_room = self._probes
        self._end_grace()
        self._wake()
        if self._probe_room:
            self._consume()  # nothing (or too little) to probe with: consume, and probe with what comes
            self._grace_timer = asyncio.get_running_loop().call_later(self._grace, self._grace_over)

    def _grace_over(self) -> None:
        self._grace_timer = None
        if self.breaker.state is State.HALF_OPEN and not self._stopping():
            self._retries_may_probe = True
            self._wake()

    def _fields(self, event: str, **more: object) -> dict[str, object]:
        return {"event": event, "pipeline": self._name, **more}
