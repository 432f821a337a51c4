"""Intake: consumed records in, as messages waiting in the buffer.

For each record of a batch the consumer hands over:

1. a record that carries an error is the consumer speaking (the one classification of librdkafka's errors is
   :func:`streamcar.kafka.errors.consumer_trouble`): a partition's end (for a source that ends), a partition
   without a usable offset (the bridge decides where it starts), or trouble for the pipeline to act on;
2. a record of a partition we no longer own is left to its next owner; one outside a bounded source's range
   ends that partition;
3. its offset is tracked for the checkpoint. An offset lower than the last one means the partition's log was
   replaced (the topic created again, the log truncated): what we hold of the old log from there on is
   forgotten and the new log is processed like any (:meth:`Intake.restart`);
4. it becomes a :class:`Work` in its lane (``ordering``); a record that cannot be called at all (headers that
   cannot be read) carries its verdict, a dead letter, from here on;
5. it waits in the buffer, in lane order, until dispatch takes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import Message

from streamcar.config import PipelineConfig
from streamcar.engine.buffer import Buffer
from streamcar.engine.inflight import InFlight
from streamcar.engine.offsets import OffsetTracker
from streamcar.engine.scheduler import lane_for
from streamcar.engine.source import Consumer, Source
from streamcar.engine.tracing import Tracing
from streamcar.engine.work import PipelineStats, Work, event_from
from streamcar.errors import KafkaError
from streamcar.event import Reply
from streamcar.failures import Kind
from streamcar.kafka.errors import Trouble, consumer_trouble
from streamcar.kafka.records import TP
from streamcar.logs import Throttle, held_back

log = logging.getLogger("streamcar.pipeline")


class Intake:
    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        *,
        source: Source,
        tracker: OffsetTracker,
        inflight: InFlight,
        buffer: Buffer,
        stats: PipelineStats,
        tracing: Tracing | None,
        fail: Callable[[BaseException], None],
    ) -> None:
        self._name = name
        self._ordering = config.ordering
        self._source = source
        self._tracker = tracker
        self._inflight = inflight
        self._buffer = buffer
        self._stats = stats
        self._tracing = tracing
        self._fail = fail
        self._throttle = Throttle()
        self.consumer: Consumer | None = None
        """The consumer that feeds the records, once the pipeline started it."""

    def accept(self, records: list[Message]) -> None:
        ordering = self._ordering
        source = self._source
        bounded = source.bounded
        tracker = self._tracker
        accepting = self._inflight.accepting
        generation = self._inflight.generation
        for msg in records:
            error = msg.error()
            if error is not None:
                self._consumer_said(msg, error)
                continue
            event, unusable = event_from(msg)
            tp = (event.topic, event.partition)
            if tp not in accepting:
                continue  # fetched just before a revoke: the partition's next owner gets it
            if bounded and not source.admits(tp, event.offset):
                self._reach(tp)
                continue
            try:
                tracker.track(tp, event.offset)
            except ValueError:
                self.restart(tp, event.offset)
                tracker.track(tp, event.offset)
            self._stats.consumed += 1
            work = Work(event, tp, lane_for(ordering, event.topic, event.partition, event.key), generation[tp])
            if unusable is not None:
                work.verdict = Reply.dead_letter(unusable, kind=Kind.REJECTED)
                self._inflight.verdicts += 1
            if self._tracing is not None:
                self._tracing.consumed(work)
            self._buffer.submit(work)

    def _consumer_said(self, msg: Message, error: RdKafkaError) -> None:
        trouble = consumer_trouble(error)
        tp = (msg.topic() or "", msg.partition() or 0)
        if trouble is Trouble.END_OF_PARTITION and self._source.bounded:
            self._reach(tp)
        elif trouble is Trouble.NO_OFFSET:
            if self.consumer is not None:  # the consumer decides where it starts, given whether we read before
                self.consumer.reset_offset(tp, read_before=tp in self._tracker.ever)
        elif trouble is not Trouble.END_OF_PARTITION:
            self.trouble(error, trouble)

    def trouble(self, error: RdKafkaError, trouble: Trouble) -> None:
        """The consumer reported ``error``: a fatal one fails the pipeline; a missing topic is waited for."""
        if trouble is Trouble.FATAL:
            log.error(
                "%s: Kafka error: %s", self._name, error.str(), extra={"event": "kafka-error", "pipeline": self._name}
            )
            self._fail(KafkaError(f"pipeline {self._name}: {error.str()}"))
        elif trouble is Trouble.MISSING_TOPIC:
            log.warning("%s: %s (waiting for the topic to exist)", self._name, error.str())
        else:
            log.debug("%s: Kafka: %s", self._name, error.str())

    def _reach(self, tp: TP) -> None:
        """A bounded source: ``tp`` has nothing more to read in its range; stop fetching it."""
        source = self._source
        source.reach(tp)
        source.check(self._tracker)
        if self.consumer is not None and not source.ended.is_set():
            self.consumer.pause_partition(tp)

    def restart(self, tp: TP, offset: int) -> None:
        """``tp``'s offsets went back to ``offset``: its log was replaced from there (the topic deleted and created
        again, or the log truncated, e.g. after an unclean leader election). What we hold of the old log at or
        after ``offset`` is forgotten, and the new log's records are processed like any: nothing is skipped, and
        the watermark (hence the commit) moves back to the new log. Messages before ``offset`` carry on."""
        last = self._tracker.last(tp)

        def stale(work: Work) -> bool:
            return work.tp == tp and work.event.offset >= offset

        self._inflight.forget(stale)
        self._buffer.drop_partition(tp, lambda w: w.event.offset < offset)
        self._tracker.restart(tp, offset)
        text = f"{tp[0]}[{tp[1]}] went back from offset {last} to {offset}: the log was replaced"
        self._stats.note_condition("log-restarted", f"{text} (topic re-created or log truncated)")
        held = self._throttle.allow(("log-restarted", tp))
        if held is not None:
            log.warning(
                "%s: %s (topic re-created or log truncated); reading it as a new log from %d%s",
                self._name,
                text,
                offset,
                held_back(held, self._throttle.interval),
                extra={"event": "log-restarted", "pipeline": self._name, "topic": tp[0], "partition": tp[1]},
            )
