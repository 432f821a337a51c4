"""Adaptive concurrency (``max_in_flight: auto``): how many calls the service gets at once, learnt from how fast
it answers and whether it says it is overloaded.

The estimator is Vegas-style (TCP Vegas: Brakmo and Peterson, 1994; the same idea as ``VegasLimit`` in Netflix's
concurrency-limits). Its one input is the no-load latency, the *baseline*: with ``limit`` calls at the service
and an average round trip ``rtt``, about ``limit x (1 - baseline / rtt)`` of them are waiting inside it rather
than being served. Once per *round* (``limit`` answers, or :data:`ROUND` seconds with at least one) that estimate
moves the limit, with ``lg = max(1, log10(limit))``:

* an overload signal in the round (a 429 or 503, gRPC RESOURCE_EXHAUSTED or UNAVAILABLE from the service, or a
  timeout): ``limit x`` :data:`BACKOFF`, once per round however many calls failed so;
* queue at most ``lg``: grow by ``BETA x lg`` (the service is idle: find its capacity fast);
* queue below ``ALPHA x lg``: grow by ``lg``;
* queue above ``BETA x lg``: shrink by ``lg``;
* otherwise hold: a few calls waiting inside the service keep it busy without much latency.

Growth needs the limit to be in use: a round whose calls never reached half the limit does not grow it (an idle
pipeline's limit would otherwise climb to ``max`` and hit the service with all of it on the next burst). Only
answered calls carry latency: a quick 429 is no sign of a fast service.

**The baseline** is the lowest round latency since it was last measured, and it is measured by a *probe* (as
BBR's ProbeRTT does): the limit drops to ``min`` until the calls in flight drained to it, the next
:data:`PROBE_SAMPLES` answers give the baseline (their median), and the limit goes back to where it was. A
probe runs at the start, every :data:`PROBE_EVERY` seconds (jittered), and as soon as :data:`DECLINES` rounds in
a row shrank the limit: a service that got slower for good looks like queueing against the old baseline until
a probe measures the new one. A probe costs about two round trips at ``min`` calls. The baseline is only as
good as ``min`` is below the service's capacity: at ``min`` calls the service must not queue.

The constants are those of TCP Vegas's alpha/beta scaled by ``log10(limit)``, as concurrency-limits does; the
backoff is its AIMD ratio. All of them, and the probe, are exercised on synthetic latency traces in
``tests/unit/test_limit.py``.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable

ALPHA = 3.0
"""Fewer calls than ``ALPHA x lg`` waiting inside the service: grow."""
BETA = 6.0
"""More than ``BETA x lg`` waiting: shrink; none to speak of (at most ``lg``): grow by ``BETA x lg``."""
BACKOFF = 0.9
"""The limit's factor after a round with an overload signal."""
ROUND = 1.0
"""The longest round, in seconds, when fewer than ``limit`` answers come in."""
PROBE_EVERY = 5.0
"""Seconds between baseline probes (each drawn between 0.8 and 1.2 times this)."""
PROBE_GAP = 1.0
"""The least time between two probes, whatever triggers them."""
DECLINES = 8
"""Rounds in a row that shrank the limit before a probe is due at once."""
PROBE_SAMPLES = 5
"""Answers, at ``min`` calls in flight, whose median is the new baseline."""


class AdaptiveLimit:
    """The current limit on calls in flight, fed with every call's latency and whether it signalled overload."""

    def __init__(
        self,
        *,
        initial: int,
        minimum: int,
        maximum: int,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(f"need 1 <= min ({minimum}) <= initial ({initial}) <= max ({maximum})")
        self.minimum = minimum
        self.maximum = maximum
        self._clock = clock
        self._rng = rng or random.Random()
        self._limit = float(initial)
        self.baseline: float | None = None
        """The no-load latency in seconds, once a probe measured it."""
        self.probes = 0
        """Probes finished."""
        self._round_start = clock()
        self._answers = 0  # messages answered in the round (a batch call counts its messages)
        self._rtts: list[float] = []  # answered calls' latencies in the round
        self._overloaded = False
        self._busiest = 0  # the most calls in flight the round saw
        self._declines = 0
        # the probe: None when not probing, else the limit to go back to
        self._restore: float | None = float(initial)  # the first probe runs at once
        self._drained = False
        self._skip = 0  # answers still due from calls started before the drain
        self._probe_rtts: list[float] = []
        self._probe_answers = 0
        self._last_probe = -math.inf
        self._next_probe = math.inf

    @property
    def limit(self) -> int:
        """How many calls may be in flight now (``min`` while a probe runs)."""
        return self.minimum if self._restore is not None else int(self._limit)

    @property
    def probing(self) -> bool:
        return self._restore is not None

    def observe(self, rtt: float, *, in_flight: int, overload: bool, messages: int = 1) -> None:
        """A call of ``messages`` messages returned after ``rtt`` seconds, with ``in_flight`` messages in calls
        at that moment (itself included); ``overload``: it failed in a way that says the service is overloaded."""
        if self._restore is not None:
            self._probe(rtt, in_flight=in_flight, overload=overload)
            return
        self._answers += messages
        self._busiest = max(self._busiest, in_flight)
        if overload:
            self._overloaded = True
        else:
            self._rtts.append(rtt)
        now = self._clock()
        if self._answers >= self._limit or (now - self._round_start >= ROUND and self._answers):
            self._end_round(now)

    # -- rounds ---------------------------------------------------------------------------------------------
    def _end_round(self, now: float) -> None:
        limit = self._limit
        before = limit
        lg = max(1.0, math.log10(limit))
        if self._overloaded:
            limit *= BACKOFF
        elif self._rtts and self.baseline is not None:
            rtt = statistics.fmean(self._rtts)
            self.baseline = min(self.baseline, rtt)
            queue = limit * (1 - self.baseline / rtt)
            in_use = 2 * self._busiest >= limit
            if queue <= lg:
                limit += BETA * lg if in_use else 0
            elif queue < ALPHA * lg:
                limit += lg if in_use else 0
            elif queue > BETA * lg:
                limit -= lg
        self._limit = min(float(self.maximum), max(float(self.minimum), limit))
        self._declines = self._declines + 1 if self._limit < before else 0
        self._new_round(now)
        due = now >= self._next_probe or self._declines >= DECLINES
        if due and now - self._last_probe >= PROBE_GAP:
            self._restore = self._limit

    def _new_round(self, now: float) -> None:
        self._round_start = now
        self._answers = 0
        self._rtts.clear()
        self._overloaded = False
        self._busiest = 0

    # -- the probe ------------------------------------------------------------------------------------------
    def _probe(self, rtt: float, *, in_flight: int, overload: bool) -> None:
        if not self._drained:
            if in_flight > self.minimum:
                return  # still more calls out than the probe allows
            self._drained = True
            self._skip = in_flight - 1  # this one and the rest began before the drain, maybe behind a queue
            self._probe_answers = 0
            return
        if self._skip > 0:
            self._skip -= 1
            return
        self._probe_answers += 1
        if not overload:
            self._probe_rtts.append(rtt)
        if len(self._probe_rtts) >= PROBE_SAMPLES:
            self.baseline = statistics.median(self._probe_rtts)
            self._end_probe(self._restore)
        elif self._probe_answers >= 4 * PROBE_SAMPLES:  # overloaded even at min: the old baseline stays
            self._end_probe(self._restore * BACKOFF if self._restore is not None else self._limit)

    def _end_probe(self, restore: float | None) -> None:
        assert restore is not None
        self._probe_rtts.clear()
        self._limit = max(float(self.minimum), restore)
        self._restore, self._drained = None, False
        self._declines = 0
        self.probes += 1
        now = self._clock()
        self._last_probe = now
        self._next_probe = now + PROBE_EVERY * self._rng.uniform(0.8, 1.2)
        self._new_round(now)
