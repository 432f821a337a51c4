"""The consumed-but-not-started messages of a pipeline: the lane scheduler, bounded in messages and in bytes.

Records wait here behind their key, or for a free call slot. The consumer thread is held back while the buffer is
full (see :mod:`streamcar.engine.flow`) and let go on once it drained to half, so both bounds hold whatever the
service or the broker does: ``max_messages`` messages and ``max_bytes`` of keys, values and headers, plus what the
consumer thread hands over before it is held back (at most two batches of 500 records).

A buffer full of messages that all wait behind busy keys (a few slow or retrying keys with a deep backlog) has
nothing to call, while the log beyond may hold other keys' messages: stopping there would starve every key for
the few. So it is full only once none of its messages is ready, at a second bound, :data:`BLOCKED` times
greater (``max_blocked_messages``, and twice the bytes): memory stays bounded, and other keys keep flowing until
that much is queued behind the busy ones (``retry.max_block`` ends a key's wait after a while).
"""

from __future__ import annotations

from collections.abc import Callable

from streamcar.engine.scheduler import LaneScheduler
from streamcar.engine.work import Work, lane_of, partition_of
from streamcar.kafka.records import TP

MAX_MESSAGES = 2000
"""The least number of messages the buffer holds (it holds at least ``2 x max_in_flight``)."""
MAX_BYTES = 64 * 1024 * 1024
"""Bytes of records the buffer holds before the consumer is held back: 2,000 records of 1 MiB are 2 GiB."""
BLOCKED = 4
"""How many times more messages the buffer holds when none of them is ready (each waits behind its busy key)."""


class Buffer:
    __slots__ = ("_scheduler", "bytes", "max_blocked_bytes", "max_blocked_messages", "max_bytes", "max_messages")

    def __init__(self, max_in_flight: int, *, max_bytes: int = MAX_BYTES) -> None:
        self._scheduler: LaneScheduler[Work] = LaneScheduler(lane_of, partition_of)
        self.max_messages = max(MAX_MESSAGES, 2 * max_in_flight)
        self.max_bytes = max_bytes
        self.max_blocked_messages = BLOCKED * self.max_messages
        self.max_blocked_bytes = 2 * max_bytes
        self.bytes = 0

    def submit(self, work: Work) -> None:
        self.bytes += work.size
        self._scheduler.submit(work)

    def take(self, n: int, *, runs: bool = False) -> list[Work]:
        """Up to ``n`` ready messages (see :meth:`LaneScheduler.take`)."""
        taken = self._scheduler.take(n, runs=runs)
        self.bytes -= sum(work.size for work in taken)
        return taken

    def finish(self, work: Work) -> None:
        self._scheduler.finish(work)

    def drop_partition(self, tp: TP, keep: Callable[[Work], bool] | None = None) -> list[Work]:
        """Forget the waiting messages of ``tp`` (those ``keep`` does not keep; see the scheduler's)."""
        dropped = self._scheduler.drop_partition(tp, keep)
        self.bytes -= sum(work.size for work in dropped)
        return dropped

    @property
    def ready_count(self) -> int:
        return self._scheduler.ready_count

    @property
    def full(self) -> bool:
        """No more records for now: the consumer waits until :attr:`half` empty."""
        count, size = len(self._scheduler), self.bytes
        if count >= self.max_blocked_messages or size >= self.max_blocked_bytes:
            return True
        return (count >= self.max_messages or size >= self.max_bytes) and self._scheduler.ready_count > 0

    @property
    def half(self) -> bool:
        """Room again: drained to half, or every message waits behind a busy key, below the second bound."""
        count, size = len(self._scheduler), self.bytes
        if count <= self.max_messages // 2 and size <= self.max_bytes // 2:
            return True
        # every message behind a busy key: room up to the second bound (what a batch more brings is the slack)
        return self._scheduler.ready_count == 0 and count < self.max_blocked_messages and size < self.max_blocked_bytes

    def __len__(self) -> int:
        return len(self._scheduler)

    def __repr__(self) -> str:
        return f"Buffer({len(self._scheduler)} messages, {self.bytes} bytes)"
