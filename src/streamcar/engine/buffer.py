"""The consumed-but-not-started messages of a pipeline: the lane scheduler, bounded in messages and in bytes.

Records wait here behind their key, or for a free call slot. The consumer thread is held back while the buffer is
full (see :mod:`streamcar.engine.flow`) and let go on once it drained to half, so both bounds hold whatever the
service or the broker does: ``max_messages`` messages and ``max_bytes`` of keys, values and headers, plus what the
consumer thread hands over before it is held back (at most two batches of 500 records). A buffer full for
:data:`streamcar.engine.flow.STALL` seconds pauses consumption, and librdkafka may still return what a fetch under
way brought in just after the pause: at most two batches more, once (seen in ``tests/faults/test_bounds.py``: 2,872
buffered, then 3,372 160 ms after the pause).

A buffer full of messages that all wait behind busy keys stops consumption; ``retry.max_block`` ends a stuck
key's wait. (A second, larger bound for that case was tried and taken back: with every key merely in a call it
buffered the whole backlog, spread completions far apart and multiplied what a crash redoes.)
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


class Buffer:
    __slots__ = ("_scheduler", "bytes", "max_bytes", "max_messages")

    def __init__(self, max_in_flight: int, *, max_bytes: int = MAX_BYTES) -> None:
        self._scheduler: LaneScheduler[Work] = LaneScheduler(lane_of, partition_of)
        self.max_messages = max(MAX_MESSAGES, 2 * max_in_flight)
        self.max_bytes = max_bytes
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
        return len(self._scheduler) >= self.max_messages or self.bytes >= self.max_bytes

    @property
    def half(self) -> bool:
        return len(self._scheduler) <= self.max_messages // 2 and self.bytes <= self.max_bytes // 2

    def __len__(self) -> int:
        return len(self._scheduler)

    def __repr__(self) -> str:
        return f"Buffer({len(self._scheduler)} messages, {self.bytes} bytes)"
