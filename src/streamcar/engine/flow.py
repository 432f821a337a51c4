"""Backpressure: how fast records come in, given how full the buffer is.

The consumer thread hands over a batch of records at a time and waits for the loop to take it before it hands
over the next (:meth:`Feed.batch_done`). After each batch the pipeline asks :meth:`Flow.accepted`: while the
buffer of consumed-but-not-started messages is full, the thread is held back, and let go on once the buffer
drained to half (:meth:`Flow.pace`).

Holding the thread back rather than pausing keeps what librdkafka prefetched: a pause purges it and a resume
fetches it all again, which under a deep backlog cost more than the calls themselves (in-process throughput fell
from 18k to 6.6k msg/s between a 50k and a 400k backlog). A buffer that stays full for :data:`STALL` seconds (a
blocked key, an open circuit) is paused after all, so the thread goes back to polling and serves rebalances and
``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from streamcar.engine.buffer import Buffer

STALL = 5.0
"""Seconds the buffer may stay full with the consumer thread held back before consumption is paused instead."""


class Feed(Protocol):
    """What backpressure needs of the consumer: the feed of records, held back and let go on."""

    def batch_done(self) -> None: ...

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    @property
    def paused(self) -> bool: ...


class Flow:
    def __init__(self, buffer: Buffer, *, may_resume: Callable[[], bool], draining: Callable[[], bool]) -> None:
        self._buffer = buffer
        self._may_resume = may_resume  # false while the circuit is open
        self._draining = draining
        self.source: Feed | None = None
        self._withheld = 0  # batches the consumer thread was not yet allowed to follow with another
        self._stall_timer: asyncio.TimerHandle | None = None

    def accepted(self) -> None:
        """A batch was accepted: the consumer thread may hand over the next one at once, unless the buffer is
        full; then once it has drained to half."""
        source = self.source
        if source is None:
            return
        if not self._buffer.full or self._draining():
            source.batch_done()
            return
        self._withheld += 1
        if self._stall_timer is None:
            self._stall_timer = asyncio.get_running_loop().call_later(STALL, self._stalled)

    def pace(self) -> None:
        """Let the consumer thread go on once the buffer drained to half, and resume a paused consumer then,
        unless the circuit is open (or the pipeline stops)."""
        source = self.source
        if source is None:
            return
        half = self._buffer.half
        draining = self._draining()
        if self._withheld and (half or draining):
            self._let_consume()
        if source.paused and half and not draining and self._may_resume():
            source.resume_all()

    def pause(self) -> None:
        """Stop consuming (an open circuit, a stop): librdkafka keeps polling for the group's sake."""
        if self.source is not None:
            self.source.pause_all()

    def _let_consume(self) -> None:
        """Give the consumer thread back every batch slot held back."""
        source = self.source
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        while self._withheld and source is not None:
            self._withheld -= 1
            source.batch_done()

    def _stalled(self) -> None:
        self._stall_timer = None
        if self._withheld and self.source is not None:
            self.source.pause_all()
            self._let_consume()
