"""The circuit around the service: what the pipeline does when the breaker opens and closes, and its probes.

The breaker (:mod:`streamcar.engine.breaker`) decides from the calls' outcomes; this room acts on its
transitions. Open: consumption pauses, nothing is dispatched, due retries are parked, and a probe is timed for
``open_for``. The probe: a few calls, with messages not tried yet first (a retry may fail because of itself),
then the oldest parked retries; the first that gets through closes the circuit. Closed: the parked retries go
out again and consumption resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamcar.config import CircuitBreakerConfig
from streamcar.engine.breaker import CircuitBreaker, Closed, Opened, State
from streamcar.engine.buffer import Buffer
from streamcar.engine.dispatch import Dispatcher
from streamcar.engine.flow import Flow
from streamcar.engine.inflight import InFlight
from streamcar.engine.work import PipelineStats

log = logging.getLogger("streamcar.pipeline")


class Circuit:
    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig,
        *,
        stats: PipelineStats,
        inflight: InFlight,
        buffer: Buffer,
        stopping: Callable[[], bool],
    ) -> None:
        self._name = name
        self._probes = config.probes
        self.breaker = CircuitBreaker(config)
        self._stats = stats
        self._inflight = inflight
        self._buffer = buffer
        self._stopping = stopping
        self._probe_timer: asyncio.TimerHandle | None = None
        self.dispatcher: Dispatcher | None = None  # set when the pipeline is wired
        self.flow: Flow | None = None

    def allows(self) -> bool:
        """May a call that is not a probe start now?"""
        return self.breaker.allows()

    @property
    def open_reason(self) -> str | None:
        """Why the circuit is open (or half-open, probing); None while it is closed."""
        breaker = self.breaker
        return None if breaker.state is State.CLOSED else f"{breaker.state.value}: {breaker.reason}"

    def record(self, failure: str | None, *, probe: bool) -> None:
        """A call ended (``failure``: its kind when no message of it got through): the breaker decides."""
        self._on(self.breaker.record(time.monotonic(), failure, probe=probe))

    def stop(self) -> None:
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None

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
            parked, self._inflight.parked = self._inflight.parked, []
            assert self.dispatcher is not None
            assert self.flow is not None
            self.dispatcher.launch_in_batches(parked)
            self.flow.pace()
            self.dispatcher.dispatch()

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
        if self.flow is not None:
            self.flow.pause()
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        self._probe_timer = asyncio.get_running_loop().call_later(transition.wait, self._probe)

    def _probe(self) -> None:
        """Open long enough: let a few calls through, with messages not tried yet if there are any, then the
        oldest parked retries."""
        self._probe_timer = None
        if self._stopping() or self.breaker.state is not State.OPEN:
            return
        assert self.dispatcher is not None
        count = self._probes
        buffer = self._buffer
        works = buffer.take(min(count, buffer.ready_count)) if buffer.ready_count else []
        parked = self._inflight.parked
        while parked and len(works) < count:
            works.append(parked.pop(0))
        for work in [w for w in works if w.verdict is not None]:
            works.remove(work)
            self.dispatcher.launch([work])  # decided without a call: no probe
        if not works:  # nothing to probe with: nothing is at risk either; the next calls tell again
            self._on(self.breaker.reset(time.monotonic()))
            return
        self.breaker.probe(len(works))
        for work in works:
            self.dispatcher.launch([work], probe=True)

    def _fields(self, event: str, **more: object) -> dict[str, object]:
        return {"event": event, "pipeline": self._name, **more}
