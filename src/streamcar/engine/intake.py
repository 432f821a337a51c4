"""Intake: consumed records in, as messages waiting in the buffer.

For each record of a batch the consumer hands over:

1. a record that carries an error is the consumer speaking (the one classification of librdkafka's errors is
   :func:`streamcar.kafka.errors.consumer_trouble`): a partition's end (for a source that ends), a partition
   without a usable offset (the bridge decides where it starts), or trouble for the pipeline to act on;
2. a record of a partition we no longer own is left to its next owner; one outside a bounded source's range
   ends that partition;
3. its offset is tracked for the checkpoint. An offset lower than the last one means the partition's log was
   replaced (the topic created again, the log truncated): what we hold of the old log from there on is
   forgotten and the new log is processed like any (:meth:`Intake.restart`). A record the partition's previous
   owner left done (its commit's done-ahead offsets) is done at once: it is not processed again. A record that
   would let the commit's done-ahead metadata outgrow its bound waits here, its partition's fetching held,
   until completions made room (:meth:`Intake.readmit`);
   In queue mode (:mod:`streamcar.engine.queue`) none of this applies: a share group commits no offsets;
4. it becomes a :class:`Work` in its lane (``ordering``); a record that cannot be called at all (headers that
   cannot be read) carries its verdict, a dead letter, from here on;
5. it waits in the buffer, in lane order, until dispatch takes it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from streamcar.config import PipelineConfig
from streamcar.engine.buffer import Buffer
from streamcar.engine.checkpoint import Checkpoint
from streamcar.engine.inflight import InFlight
from streamcar.engine.scheduler import lane_for
from streamcar.engine.source import Consumer, Source
from streamcar.engine.tracing import Tracing
from streamcar.engine.tracker import OffsetTracker
from streamcar.engine.work import PipelineStats, Work
from streamcar.errors import KafkaError
from streamcar.event import Reply
from streamcar.failures import Kind
from streamcar.kafka.errors import Said, Trouble
from streamcar.kafka.records import TP, Incoming
from streamcar.logs import Throttle, held_back

log = logging.getLogger("streamcar.pipeline")


class Intake:
    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        *,
        source: Source,
        checkpoint: Checkpoint,
        inflight: InFlight,
        buffer: Buffer,
        stats: PipelineStats,
        tracing: Tracing | None,
        fail: Callable[[BaseException], None],
        delivered: Callable[[TP, int, int | None], int] | None = None,
    ) -> None:
        """``delivered``: queue mode, where the broker counts a record's deliveries and no offset is tracked
        (:meth:`ShareSource.acquired <streamcar.engine.queue.ShareSource.acquired>`: the attempts it had)."""
        self._name = name
        self._ordering = config.ordering
        self._source = source
        self._delivered = delivered
        self._admit = self._tracked if delivered is None else self._counted  # the mode, chosen once
        self._checkpoint = checkpoint
        self._tracker: OffsetTracker = checkpoint.tracker
        self._inflight = inflight
        self._buffer = buffer
        self._stats = stats
        self._tracing = tracing
        self._fail = fail
        self._throttle = Throttle()
        self.consumer: Consumer | None = None
        """The consumer that feeds the records, once the pipeline started it."""
        self.held: dict[TP, deque[Incoming]] = {}
        """Records waiting for room in their partition's done-ahead metadata, in offset order."""

    def accept(self, records: list[Incoming | Said]) -> None:
        """A fetch's records, in order, and what the consumer said in their place: each record admitted is a
        message (a ``Work``) now, waiting in the buffer."""
        source = self._source
        bounded = source.bounded
        accepting, generation = self._inflight.accepting, self._inflight.generation
        admit, ordering, tracing, submit = self._admit, self._ordering, self._tracing, self._buffer.submit
        for record in records:
            if isinstance(record, Said):
                self._consumer_said(record)
                continue
            event = record.event
            tp = (event.topic, event.partition)
            if tp not in accepting:
                continue  # fetched just before a revoke: the partition's next owner gets it
            if bounded and not source.admits(tp, event.offset):
                self._reach(tp)
                continue
            attempts = admit(tp, record)
            if attempts is None:
                continue
            self._stats.consumed += 1
            work = Work(event, tp, lane_for(ordering, event.topic, event.partition, event.key), generation[tp])
            work.attempts = attempts
            if record.unusable is not None:
                work.verdict = Reply.dead_letter(record.unusable, kind=Kind.REJECTED)
                self._inflight.decided(1)
            if tracing is not None:
                tracing.consumed(work)
            submit(work)

    def _tracked(self, tp: TP, record: Incoming) -> int | None:
        """A consumer group's record: its offset tracked, it goes on now with no attempt yet (0); or not now
        (None): one held for room in the done-ahead metadata (or behind one), or one done already (the commit's
        metadata says so)."""
        held = self.held
        if held and tp in held:
            held[tp].append(record)
            return None
        offset, tracker = record.event.offset, self._tracker
        if not tracker.fits(tp, offset):
            self._hold(tp, record)
            return None
        try:
            skip = tracker.track(tp, offset)
        except ValueError:
            self.restart(tp, offset)
            skip = tracker.track(tp, offset)
        if skip:
            self._stats.skipped += 1
            return None
        return 0

    def _counted(self, tp: TP, record: Incoming) -> int:
        """A share group's record: no offset to track; the attempts it had, from the broker's deliveries."""
        assert self._delivered is not None
        return self._delivered(tp, record.event.offset, record.deliveries)

    def _hold(self, tp: TP, record: Incoming) -> None:
        """``record`` does not fit ``tp``'s done-ahead metadata: hold it, and stop fetching ``tp``, until it does."""
        self.held[tp] = deque([record])
        if self.consumer is not None:
            self.consumer.hold_partition(tp)
        offset = record.event.offset
        self._checkpoint.wait_for_room(tp, offset, lambda: self.readmit(tp))
        text = (
            f"{tp[0]}[{tp[1]}] waits at offset {offset}: the offsets done above its oldest unfinished message "
            "would not fit the commit's metadata"
        )
        self._stats.note_condition("done-ahead-full", text)
        if self._throttle.allow(("done-ahead-full", tp)) is not None:
            log.info("%s: %s", self._name, text, extra={"event": "done-ahead-full", "pipeline": self._name})

    def readmit(self, tp: TP) -> None:
        """Completions made room in ``tp``'s done-ahead metadata: take its held records that fit now, and fetch
        it again once none is left."""
        queue = self.held.pop(tp, None)
        if not queue or tp not in self._inflight.accepting:
            return
        while queue:
            record = queue[0]
            if not self._tracker.fits(tp, record.event.offset):
                self.held[tp] = queue
                self._checkpoint.wait_for_room(tp, record.event.offset, lambda: self.readmit(tp))
                break
            queue.popleft()
            self.accept([record])
        else:
            if self.consumer is not None:
                self.consumer.resume_partition(tp)

    def forget(self, tps: set[TP]) -> None:
        """``tps`` were revoked or lost: their held records are their next owner's."""
        for tp in tps:
            self.held.pop(tp, None)
        self._checkpoint.forget(tps)

    def _consumer_said(self, said: Said) -> None:
        """What the consumer said in place of a record of ``said.tp``."""
        trouble, tp = said.trouble, said.tp
        assert tp is not None
        if trouble is Trouble.END_OF_PARTITION and self._source.bounded:
            self._reach(tp)
        elif trouble is Trouble.NO_OFFSET:
            if self.consumer is not None:  # the consumer decides where it starts, given whether we read before
                self.consumer.reset_offset(tp, read_before=tp in self._tracker.ever)
        elif trouble is not Trouble.END_OF_PARTITION:
            self.trouble(said)

    def trouble(self, said: Said) -> None:
        """The consumer reported trouble: a fatal one fails the pipeline; a missing topic is waited for."""
        if said.trouble is Trouble.FATAL:
            log.error(
                "%s: Kafka error: %s", self._name, said.text, extra={"event": "kafka-error", "pipeline": self._name}
            )
            self._fail(KafkaError(f"pipeline {self._name}: {said.text}"))
        elif said.trouble is Trouble.MISSING_TOPIC:
            log.warning("%s: %s (waiting for the topic to exist)", self._name, said.text)
        else:
            log.debug("%s: Kafka: %s", self._name, said.text)

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
