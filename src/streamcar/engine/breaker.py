"""The circuit breaker: stop calling a service that is down instead of burning every message's retries.

States::

    closed --(the service is down)--> open --(open_for passes)--> half-open --(a probe is answered)--> closed
                                       ^                              |
                                       +-----(every probe fails)------+   (open_for doubles, up to max_open)

*Closed* calls as usual. *Open* makes no calls: the pipeline pauses consumption and parks its retries.
*Half-open* lets ``probes`` calls through (messages not tried yet first: a retry may fail because of itself); the
first of them the service answers closes the circuit, and it reopens when all of them failed. Closing needs a real
answer: with nothing to probe, it stays half-open until messages come.

What tells a service that is down from messages that fail:

* **Silence.** A call that failed is *silent* when no call at all was answered while it was in progress, or, for
  a retry, since its message first failed (and for :data:`WAVE` before: calls launched together end in any
  order). A slow key timing out while other keys are answered is not silent: the service is up, that message is
  slow. Nor are retries of messages that failed while others were answered. A frozen service, a refused
  connection or a 503 for everything is silent. A dropped connection is silent only when nothing was answered
  within ``window`` either (the service took the connection, so it runs: it may be this message).
  ``consecutive`` silent failures in a row open the circuit, and a refused connection (nothing to learn about the
  message) at once. A call that got no answer at all, while nothing else was answered either, does not use up
  its message's attempts (see :mod:`streamcar.engine.attempt`): the circuit decides first.
* **Refusals.** A service that answers nearly every message with the same refusal a wrong setup gets (HTTP 401,
  403, 404, 405, 415; gRPC UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED: :attr:`Reply.refusal`) is up but
  set up wrong: a typo in the path would otherwise drain the topic into the dead-letter topic. :data:`REFUSALS`
  distinct messages in a row refused the same way, with no other message answered between (a message counts
  at most twice: once more after being held, so poison held by a false alarm ends as dead letters), open the circuit
  ("the service rejects everything: HTTP 404 on POST /typo"); the messages refused after that are held, not
  dead-lettered, and each probe refused so fails. A lone refused message is poison, dead-lettered at once: at most
  ``REFUSALS - 1`` messages are dead-lettered before a storm pauses the pipeline.
* **Distinct messages.** The failure ratio counts each message once, on its first attempt: a message that fails
  and is retried does not count again, so one message's retries, or retries resumed together, are not a storm.
  At least ``failure_ratio`` of the messages first tried within ``window`` (and ``min_calls`` of them) failing
  opens it.

A call "failed" when the service did not answer it usefully: refused connection, timeout, TLS failure, a
retryable status (5xx, 429, UNAVAILABLE...). A service that answers "dead-letter this one" is up.

This module is pure logic (the clock is passed in); the pipeline acts on the transitions it reports.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from streamcar.config import CircuitBreakerConfig
from streamcar.failures import Kind

REFUSALS = 10
"""Distinct messages in a row refused the same way that make a reject storm. Ten keeps a topic where one message
in five is legitimately refused from pausing more than once in about ten million messages."""
_SLICES = 10  # the failure-ratio window is counted in this many slices, so it slides in steps of a tenth
WAVE = 0.05
"""Seconds: calls that start this soon after an answer are of one wave with the call answered. Their order of
completion is chance, so the failures of a wave can all come in before its successes; they are not silence. (Calls
are launched in waves: each answer frees its key's next message, a resume brings a fetch's worth.) Found when 1
message in 13 failing, 128 in flight, opened the circuit within a second: 5 failures of a wave, just after an
answer, each taken for silence."""


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
        self.refusing: str | None = None
        """Open (or half-open) on a reject storm: the refusal (see :attr:`Reply.refusal`)."""
        self._refusal: str | None = None  # closed: the refusal of the current run of refused messages...
        self._refused = 0  # ...and how many distinct messages it counts
        # The window in _SLICES slices of [slice number, calls, failed calls]: memory stays constant however many
        # calls a second go through (a deque of every call would hold hundreds of thousands).
        self._slice = config.window / _SLICES
        self._slices: deque[list[int]] = deque()
        self._calls_in_window = 0
        self._failed_in_window = 0
        self._in_a_row = 0
        self._answered = float("-inf")  # when a call was last answered
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

    def silent(self, started: float | None, kind: Kind | None = None, now: float | None = None) -> bool:
        """No call was answered since ``started`` (None: not known, taken as silent). A dropped connection looks
        back a whole ``window`` (from ``now``) too: the service took the connection and closed it, so it runs;
        whether others got through lately says whether it drops everything or this message."""
        if started is None:
            return True
        if kind is Kind.DISCONNECTED and now is not None:
            started = min(started, now - self.config.window)
        return self._answered < started - WAVE

    def record(
        self,
        now: float,
        failure: str | None,
        *,
        probe: bool = False,
        started: float | None = None,
        fresh: bool = True,
        refusal: str | None = None,
        messages: int = 1,
        counts: bool = True,
    ) -> Transition:
        """A call of ``messages`` ended: ``failure`` is its reply kind when no message of it got through, None
        otherwise (what the kind means: :class:`streamcar.failures.Kind`). ``started``: when it began; ``fresh``:
        its messages were tried for the first time; ``refusal``: every message of it was refused so (the service
        answered: no failure), and ``counts``: towards a storm (see :data:`REFUSALS`)."""
        kind = Kind.of(failure)
        outage = kind is not None and kind.outage
        if not outage:
            self._answered = now
        if not self.enabled:
            return None
        if self.state is State.HALF_OPEN:
            # a call that started before the circuit opened is not a probe: the probes decide
            return self._probed(now, failure, outage, refusal, messages, counts) if probe else None
        if self.state is State.OPEN:
            return None  # calls that started before it opened; their answers no longer matter
        # closed: any call, a probe that answered after another one closed the circuit included
        silent = outage and self.silent(started, kind, now)
        if fresh:
            self._remember(now, outage)
        if refusal is not None:
            return self._refused_again(now, refusal, messages) if counts else None
        if not outage:
            self._in_a_row = 0
            self._refused = 0
            return None
        assert failure is not None
        assert kind is not None
        return self._failed(now, failure, kind, fresh=fresh, silent=silent)

    def _probed(
        self, now: float, failure: str | None, outage: bool, refusal: str | None, messages: int, counts: bool
    ) -> Transition:
        """Half-open, a probe ended: the circuit closes if it got through, opens again once every probe failed."""
        if not outage and not (refusal is not None and self.refusing is not None):
            closed = self._close(now)
            if refusal is not None and counts:  # answered, so up; but refused: a run of refusals may start
                self._refusal, self._refused = refusal, messages
            return closed
        self.probing -= 1
        if self.probing > 0:
            return None
        self._wait = min(self._wait * 2, self.config.max_open)
        if failure is None:  # refused again
            return self._open(now, f"the service rejects everything: {refusal}")
        return self._open(now, f"the probe failed: {failure}")

    def _failed(self, now: float, failure: str, kind: Kind, *, fresh: bool, silent: bool) -> Opened | None:
        """Closed, a call failed for every message (an outage kind): whether that opens the circuit."""
        if kind.unreached:  # not reaching the service says nothing about the message: no need to wait for more
            return self._open(now, f"the service could not be reached ({failure})")
        total = self._calls_in_window
        if fresh and total >= self.config.min_calls and self._failed_in_window >= self.config.failure_ratio * total:
            window = self.config.window
            return self._open(now, f"{self._failed_in_window} of {total} messages in {window:g}s failed ({failure})")
        if not silent:
            return None  # other calls were answered meanwhile: this message, not the service
        self._in_a_row += 1
        if kind.dropped:
            return self._open(now, f"the service drops every connection without answering ({failure})")
        if self._in_a_row >= self.config.consecutive:
            n = self._in_a_row
            return self._open(now, f"{n} calls in a row could not get through ({failure}), and no other call either")
        return None

    def _refused_again(self, now: float, refusal: str, messages: int) -> Opened | None:
        self._in_a_row = 0  # the service answered
        if refusal != self._refusal:
            self._refusal, self._refused = refusal, 0
        self._refused += messages
        if self._refused < REFUSALS:
            return None
        opened = self._open(now, f"the service rejects everything: {refusal}")
        self.refusing = refusal
        return opened

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
        while slices[0][0] <= number - _SLICES:
            _, calls, failed = slices.popleft()
            self._calls_in_window -= calls
            self._failed_in_window -= failed

    def _open(self, now: float, reason: str) -> Opened:
        first = self.state is State.CLOSED
        if first:
            self._since = now
            self.opened += 1
            self.refusing = None
        self.state = State.OPEN
        self.reason = reason
        self.open_until = now + self._wait
        return Opened(self._wait, reason, first)

    def _close(self, now: float) -> Closed:
        self.state = State.CLOSED
        self.probing = 0
        self.refusing = self._refusal = None
        self._refused = 0
        self._wait = self.config.open_for
        self._slices.clear()
        self._calls_in_window = self._failed_in_window = self._in_a_row = 0
        return Closed(now - self._since)
