"""The circuit breaker: stop calling a service that is down instead of burning every message's retries.

States::

    closed --(too many calls fail)--> open --(open_for passes)--> half-open --(the probe gets through)--> closed
                                       ^                              |
                                       +-----(every probe fails)------+   (open_for doubles, up to max_open)

*Closed* calls as usual. It opens when, within ``window``, at least ``min_calls`` calls were made and at least
``failure_ratio`` of them could not get through, when ``consecutive`` calls in a row could not, or at once when
a call could not even connect. *Open* makes no calls: the pipeline pauses consumption and parks its retries.
*Half-open* lets ``probes`` calls through (messages not tried yet first: a retry may fail because of itself); the
first of them that gets through closes the circuit, and it reopens when all of them failed.

A call "could not get through" when the service did not answer it usefully: refused connection, timeout, TLS
failure, a retryable status (5xx, 429, UNAVAILABLE...). A service that answers "dead-letter this one" is up.

This module is pure logic (the clock is passed in); the pipeline acts on the transitions it reports.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from streamcar.config import CircuitBreakerConfig
from streamcar.failures import Kind

_SLICES = 10  # the failure-ratio window is counted in this many slices, so it slides in steps of a tenth


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Opened:
    """The circuit just opened (``first``: it was closed; else a probe failed): probe after ``wait`` seconds."""

    wait: float
    reason: str
    first: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The circuit just closed after being open for ``outage`` seconds."""

    outage: float


Transition = Opened | Closed | None


class CircuitBreaker:
    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.config = config
        self.state = State.CLOSED
        self.reason = ""
        """Why the circuit last opened."""
        self.opened = 0
        """How many times it opened."""
        self.open_until = 0.0
        """While open: when the probe is due (clock of the calls)."""
        self.probing = 0
        """Half-open: probe calls in flight."""
        # The window in _SLICES slices of [slice number, calls, failed calls]: memory stays constant however many
        # calls a second go through (a deque of every call would hold hundreds of thousands).
        self._slice = config.window / _SLICES
        self._slices: deque[list[int]] = deque()
        self._calls_in_window = 0
        self._failed_in_window = 0
        self._in_a_row = 0
        self._wait = config.open_for
        self._since = 0.0

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def allows(self) -> bool:
        """May a call that is not a probe start now?"""
        return self.state is State.CLOSED

    def due(self, now: float) -> bool:
        """Open, and the time to probe has come: the caller moves to half-open with :meth:`probe`."""
        return self.state is State.OPEN and now >= self.open_until

    def probe(self, calls: int) -> None:
        """``calls`` probe calls start (open -> half-open)."""
        self.state = State.HALF_OPEN
        self.probing = calls

    def record(self, now: float, failure: str | None, *, probe: bool = False) -> Transition:
        """A call ended: ``failure`` is its reply kind when no message of it got through, None otherwise (what the
        kind means: :class:`streamcar.failures.Kind`)."""
        kind = Kind.of(failure)
        outage = kind is not None and kind.outage
        if not self.enabled:
            return None
        if self.state is State.HALF_OPEN:
            if not probe:
                return None  # a call started before the circuit opened: the probes decide
            if not outage:
                return self._close(now)
            self.probing -= 1
            if self.probing > 0:
                return None
            self._wait = min(self._wait * 2, self.config.max_open)
            return self._open(now, f"the probe failed: {failure}")
        if self.state is State.OPEN:
            return None  # calls that started before it opened; their answers no longer matter
        # closed: any call, a probe that answered after another one closed the circuit included
        self._remember(now, outage)
        if not outage:
            return None
        assert failure is not None
        assert kind is not None
        if kind.unreached:  # not reaching the service says nothing about the message: no need to wait for more
            return self._open(now, f"the service could not be reached ({failure})")
        if kind.dropped and self._failed_in_window == self._calls_in_window:
            return self._open(now, f"the service drops every connection without answering ({failure})")
        if self._in_a_row >= self.config.consecutive:
            return self._open(now, f"{self._in_a_row} calls in a row could not get through ({failure})")
        total = self._calls_in_window
        if total >= self.config.min_calls and self._failed_in_window >= self.config.failure_ratio * total:
            window = self.config.window
            return self._open(now, f"{self._failed_in_window} of {total} calls in {window:g}s failed ({failure})")
        return None

    def _remember(self, now: float, outage: bool) -> None:
        number = int(now / self._slice)
        slices = self._slices
        if not slices or slices[-1][0] != number:
            slices.append([number, 0, 0])
        current = slices[-1]
        current[1] += 1
        current[2] += outage
        self._calls_in_window += 1
        self._failed_in_window += outage
        self._in_a_row = self._in_a_row + 1 if outage else 0
        while slices[0][0] <= number - _SLICES:
            _, calls, failed = slices.popleft()
            self._calls_in_window -= calls
            self._failed_in_window -= failed

    def reset(self, now: float) -> Closed:
        """Close without a probe (there was nothing to probe with)."""
        return self._close(now)

    def _open(self, now: float, reason: str) -> Opened:
        first = self.state is State.CLOSED
        if first:
            self._since = now
            self.opened += 1
        self.state = State.OPEN
        self.reason = reason
        self.open_until = now + self._wait
        return Opened(self._wait, reason, first)

    def _close(self, now: float) -> Closed:
        self.state = State.CLOSED
        self.probing = 0
        self._wait = self.config.open_for
        self._slices.clear()
        self._calls_in_window = self._failed_in_window = self._in_a_row = 0
        return Closed(now - self._since)
