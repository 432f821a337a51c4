"""Where a pipeline's records come from, and whether that ends.

Both sources below read through the same consumer thread (:class:`~streamcar.kafka.consumer.ConsumerBridge`);
they differ in how partitions come to us, whether progress is committed, and whether the run ends:

* :class:`GroupSource` -- ``streamcar run``: a member of the pipeline's consumer group. Partitions come and go
  with rebalances; the checkpoint commits the watermarks; it never ends (a stop ends the run).
* :class:`RangeSource` -- ``streamcar replay --pipeline``: explicit ranges ``[start, until)`` of partitions,
  assigned directly. Nothing is committed (the group's offsets stay where they are), and the source *ends* once
  every partition reached the end of its range and everything read is done, as Benthos' ``ErrEndOfInput``
  ends an input: :attr:`Source.ended` is set and the pipeline stops as on a signal.

The pipeline asks a source three things per record only when it is bounded (:attr:`Source.bounded`), so the
group source costs nothing on the per-message path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.engine.buffer import Buffer
from streamcar.engine.inflight import InFlight
from streamcar.engine.tracker import OffsetTracker
from streamcar.engine.view import lags
from streamcar.engine.work import PipelineStats, Work
from streamcar.kafka.listener import ConsumerListener
from streamcar.kafka.records import TP, CommitPoint
from streamcar.kafka.settings import group_consumer, range_consumer
from streamcar.kafka.topics import TopicWatch

Launch = Callable[[list[Work]], None]
"""Start the processing of messages now (:meth:`streamcar.engine.dispatch.Dispatcher.launch`)."""


class Consumer(Protocol):
    """What the pipeline needs of the consumer that feeds it: :class:`streamcar.kafka.consumer.ConsumerBridge`,
    or an in-memory twin in the engine's unit tests. It calls its
    :class:`~streamcar.kafka.consumer.ConsumerListener` (the pipeline) on the loop."""

    high_watermarks: dict[TP, int]
    kafka_error: str | None

    def start(self) -> None: ...

    def stop(self) -> Awaitable[None]: ...

    def batch_done(self) -> None: ...

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    @property
    def paused(self) -> bool: ...

    def pause_partition(self, tp: TP) -> None:
        """Stop fetching ``tp`` for good (a bounded source read its range)."""
        ...

    def hold_partition(self, tp: TP) -> None:
        """Stop fetching ``tp`` until :meth:`resume_partition`."""
        ...

    def resume_partition(self, tp: TP) -> None: ...

    def reset_offset(self, tp: TP, *, read_before: bool) -> None: ...

    def commit(self, offsets: Mapping[TP, CommitPoint]) -> Awaitable[None]: ...

    def rewind(self, tps: list[TP]) -> None:
        """Go back to the committed offsets of ``tps``; the listener's ``on_rewound`` follows."""
        ...

    async def group_metadata(self) -> object:
        """The group metadata a transaction's offsets carry (KIP-447)."""
        ...


class ConsumerFactory(Protocol):
    def __call__(
        self,
        config: Mapping[str, Any],
        topics: list[str],
        listener: ConsumerListener,
        loop: asyncio.AbstractEventLoop,
        *,
        batch_size: int,
        revoke_timeout: float,
        assignment: Mapping[TP, int] | None,
        start_from: str,
        watch: TopicWatch | None,
    ) -> Consumer: ...


class Source(Protocol):
    bounded: bool
    """Whether records are checked against a range (and the source can end)."""
    commits: bool
    """Whether the checkpoint commits progress."""
    ended: asyncio.Event
    """Set when the source has nothing more to give and everything it gave is done."""

    def settings(self, kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
        """The consumer's librdkafka settings."""
        ...

    def assignment(self) -> Mapping[TP, int] | None:
        """Partitions to read from these offsets (no group membership), or None to subscribe."""
        ...

    def admits(self, tp: TP, offset: int) -> bool:
        """Whether a record at ``offset`` of ``tp`` is one to process (bounded sources only)."""
        ...

    def reach(self, tp: TP) -> None:
        """``tp`` has nothing more to give (bounded sources only)."""
        ...

    def check(self, tracker: OffsetTracker) -> None:
        """After a completion: end when every partition is reached and done."""
        ...

    async def prepared(self) -> None:
        """Before the consumer starts: whatever the source must learn or set up first."""
        ...

    def attach(
        self, consumer: Consumer, buffer: Buffer, inflight: InFlight, stats: PipelineStats, launch: Launch
    ) -> None:
        """The pipeline started ``consumer``; the rest is where its records wait, are counted, and are started."""
        ...

    def stopping(self) -> None:
        """The pipeline stops: nothing more is started."""
        ...

    def lag(self, assigned: set[TP], tracker: OffsetTracker, highs: Mapping[TP, int]) -> dict[TP, int | None]:
        """Records still to do per partition (None: unknown)."""
        ...


class _ByOffsets:
    """A source read by offsets (the tracker's): nothing to prepare, attach or give back on a stop."""

    async def prepared(self) -> None:
        pass

    def attach(
        self, consumer: Consumer, buffer: Buffer, inflight: InFlight, stats: PipelineStats, launch: Launch
    ) -> None:
        pass

    def stopping(self) -> None:
        pass

    def lag(self, assigned: set[TP], tracker: OffsetTracker, highs: Mapping[TP, int]) -> dict[TP, int | None]:
        return lags(assigned, tracker, highs)


class Unbounded:
    """A source that subscribes to its group and never ends: nothing to check records against."""

    bounded = False

    def assignment(self) -> Mapping[TP, int] | None:
        return None

    def admits(self, tp: TP, offset: int) -> bool:
        return True

    def reach(self, tp: TP) -> None:
        pass

    def check(self, tracker: OffsetTracker) -> None:
        pass


class GroupSource(_ByOffsets, Unbounded):
    """The pipeline's consumer group: subscribe to its topics; never ends."""

    commits = True

    def __init__(self, config: PipelineConfig) -> None:
        self._group = config.consume.group_id
        self._instance_id = config.consume.instance_id
        self.ended = asyncio.Event()

    def settings(self, kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
        return group_consumer(kafka, group=self._group, client_id=client_id, instance_id=self._instance_id)


class RangeSource(_ByOffsets):
    """Explicit ranges ``[start, until)`` per partition: read them, commit nothing, end when all are done."""

    bounded = True
    commits = False

    def __init__(self, ranges: Mapping[TP, tuple[int, int]]) -> None:
        self.ranges = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
        self._reached: set[TP] = set()
        self.ended = asyncio.Event()
        if not self.ranges:
            self.ended.set()  # an empty range: nothing to read

    def settings(self, kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
        return range_consumer(kafka, client_id=client_id)

    def assignment(self) -> Mapping[TP, int] | None:
        return {tp: start for tp, (start, _) in self.ranges.items()}

    def admits(self, tp: TP, offset: int) -> bool:
        until = self.ranges[tp][1]
        if tp in self._reached or offset >= until:
            return False
        if offset == until - 1:
            self._reached.add(tp)  # the last record of the range: done once it is
        return True

    def reach(self, tp: TP) -> None:
        self._reached.add(tp)

    def check(self, tracker: OffsetTracker) -> None:
        if self.ended.is_set() or len(self._reached) < len(self.ranges):
            return
        if all(tracker.outstanding(tp) == 0 for tp in self.ranges):
            self.ended.set()

    def progress(self, tracker: OffsetTracker) -> tuple[int, int]:
        """(records done, records in the ranges); done counts every offset below each watermark."""
        total = sum(until - start for start, until in self.ranges.values())
        done = 0
        for tp, (start, until) in self.ranges.items():
            mark = tracker.watermark(tp)
            if tp in self._reached and tracker.outstanding(tp) == 0:
                done += until - start
            elif mark is not None:
                done += min(mark, until) - start
        return done, total
