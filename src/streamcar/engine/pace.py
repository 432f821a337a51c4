"""Pacing: what may start now besides ``max_in_flight``, the adaptive limit on calls in flight and the rate limit.

The dispatcher asks :meth:`Pacing.room` how many more messages may start calls, tells :meth:`Pacing.started`
how many did, and the attempt tells :meth:`Pacing.observe` how each call went. Pacing only gates dispatch: it
never reorders, and a key's next message still waits for its previous one. Retries due go through it too (they
are parked and dispatched, the oldest first), so a service answering 429 gets fewer calls, not more.

* ``max_in_flight: auto``: at most :attr:`AdaptiveLimit.limit` messages in calls or forming a batch
  (:mod:`streamcar.engine.limit`); the engine's other bounds are those of ``max_in_flight`` = ``auto.max``.
* ``rate_limit``: a token bucket of ``rate`` tokens a second, holding at most ``burst``; a message takes one
  when it starts its call (a batch takes one per message).

A token bucket rather than aiolimiter's leaky bucket: the dispatcher is synchronous and takes as many messages
as may start now, so it needs how many tokens there are, not an awaitable per call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from streamcar.config import PipelineConfig
from streamcar.engine.limit import AdaptiveLimit
from streamcar.engine.work import PipelineStats
from streamcar.event import Reply
from streamcar.failures import Kind


class TokenBucket:
    """``rate`` tokens a second, at most ``size`` held; full at first."""

    def __init__(self, rate: float, size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.size = size
        self._clock = clock
        self._tokens = float(size)
        self._stamp = clock()

    def available(self) -> int:
        now = self._clock()
        self._tokens = min(float(self.size), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return int(self._tokens)

    def take(self, count: int) -> None:
        self._tokens -= count

    def wait(self, count: int = 1) -> float:
        """Seconds until ``count`` tokens are there."""
        return max(0.0, (count - self._tokens) / self.rate)


class Pacing:
    def __init__(
        self, config: PipelineConfig, stats: PipelineStats, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        auto = config.adaptive
        self.adaptive = (
            None
            if auto is None
            else AdaptiveLimit(initial=auto.initial, minimum=auto.min, maximum=auto.max, clock=clock)
        )
        rate = config.rate_limit
        self._batch = config.call.batch.max_messages
        self.bucket = None if rate is None else TokenBucket(rate.rate, rate.bucket(self._batch), clock=clock)
        self._stats = stats
        if self.adaptive is not None:
            stats.concurrency_limit = self.adaptive.limit

    def room(self, calling: int) -> int:
        """How many more messages may start calls, with ``calling`` in calls or forming a batch."""
        room = math.inf if self.adaptive is None else self.adaptive.limit - calling
        if self.bucket is not None:
            room = min(room, self.bucket.available())
        return max(0, int(min(room, 1 << 30)))

    def refill_in(self) -> float | None:
        """When the bucket has tokens for a batch again, if it is what stops calls now (else None)."""
        bucket = self.bucket
        if bucket is None or bucket.available() >= self._batch:
            return None
        return bucket.wait(self._batch)

    def started(self, messages: int) -> None:
        if self.bucket is not None:
            self.bucket.take(messages)

    def observe(self, rtt: float, replies: list[Reply], *, in_flight: int, failed: bool) -> None:
        """A call of ``len(replies)`` messages took ``rtt`` seconds, with ``in_flight`` messages in calls then
        (itself included); ``failed``: none of it got through. An overload answer or a timeout backs the limit
        off; other failures (a refused connection, a 500) say nothing about load and are left out."""
        adaptive = self.adaptive
        if adaptive is None:
            return
        overload = any(r.overload or r.error_kind == Kind.TIMEOUT for r in replies)
        if failed and not overload:
            return
        adaptive.observe(rtt, in_flight=in_flight, overload=overload, messages=len(replies))
        self._stats.concurrency_limit = adaptive.limit
