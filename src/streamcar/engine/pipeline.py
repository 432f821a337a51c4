"""One pipeline: consume -> schedule -> call -> publish / dead-letter -> complete -> commit.

Completion is an explicit event. A message is *done* only when its reply was acknowledged by the broker, it was
dropped, or its dead-letter record was acknowledged; only then does :class:`OffsetTracker` let the partition's
contiguous watermark pass it, and only the watermark is committed. Everything else (queued behind its key,
in a call, waiting for a retry, abandoned on revoke) stays uncommitted and is redelivered after a crash.

All state lives on the asyncio loop; the consumer thread talks to it through :class:`ConsumerListener`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, Message

from streamcar.call import Caller
from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.engine.breaker import OUTAGE_KINDS, UNANSWERED_KINDS
from streamcar.engine.buffer import Buffer
from streamcar.engine.checkpoint import Checkpoint
from streamcar.engine.circuit import Circuit
from streamcar.engine.dispatch import Dispatcher
from streamcar.engine.flow import Flow
from streamcar.engine.inflight import InFlight
from streamcar.engine.offsets import TopicPartition as TP
from streamcar.engine.outcomes import Ack, Outcomes
from streamcar.engine.retry import Backoff
from streamcar.engine.scheduler import Lane, lane_for
from streamcar.engine.tracing import Tracing
from streamcar.engine.work import PipelineStats, Work, event_from
from streamcar.errors import KafkaError as StreamcarKafkaError
from streamcar.event import Reply, Result
from streamcar.kafka.consumer import ConsumerBridge
from streamcar.kafka.producer import AsyncProducer
from streamcar.logs import Throttle, held_back
from streamcar.redact import NOTHING, Redactor

log = logging.getLogger("streamcar.pipeline")

STOP_GRACE = 5.0
"""Seconds beyond ``shutdown_timeout`` that stopping takes at most: the final commit, leaving the consumer group
and handing the producer's last records to the broker."""
COMMIT_GRACE = 2.0
PRODUCER_GRACE = 1.0

# Kafka errors after which the consumer cannot go on; anything else librdkafka recovers from by itself.
_FATAL_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._SSL,
        KafkaError._INVALID_ARG,
        KafkaError._FATAL,
    }
)


class Pipeline:
    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        kafka: KafkaConfig,
        caller: Caller,
        producer: AsyncProducer,
        *,
        replay: Mapping[TP, tuple[int, int]] | None = None,
        tracing: Tracing | None = None,
        redactor: Redactor = NOTHING,
    ) -> None:
        self.name = name
        self.config = config
        self.stats = PipelineStats()
        self._kafka = kafka
        self._caller = caller
        self._producer = producer
        self._backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff)
        self._tracing = tracing
        self._redactor = redactor
        self._outcomes = Outcomes(name, config, producer, self.stats, tracing)
        self._checkpoint = Checkpoint(
            name, max_in_flight=config.max_in_flight, interval=config.commit_interval, commits=replay is None
        )
        self._tracker = self._checkpoint.tracker
        # Consumed records wait here (behind their key, or for a free call slot) up to its bounds; beyond them
        # the consumer thread is held back until the buffer drained to half (see engine.flow).
        self._buffer = Buffer(config.max_in_flight)
        self._inflight = InFlight()
        self._verdicts = 0  # messages ever decided without a call: until there is one, no call looks for them
        self._circuit = Circuit(
            name,
            config.circuit_breaker,
            stats=self.stats,
            inflight=self._inflight,
            buffer=self._buffer,
            stopping=lambda: self._draining,
        )
        self._breaker = self._circuit.breaker
        self._throttle = Throttle()
        self._batch_size = config.call.batch.max_messages
        self._dispatcher = Dispatcher(
            self._inflight,
            self._buffer,
            max_in_flight=config.max_in_flight,
            batch_size=self._batch_size,
            max_wait=config.call.batch.max_wait,
            stopping=lambda: self._draining,
            circuit_allows=lambda: self._breaker.allows(),
        )
        self._dispatcher.process = self._process
        self._circuit.dispatcher = self._dispatcher
        self._draining = False
        self._drain_until = 0.0
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._flow = Flow(self._buffer, may_resume=lambda: self._breaker.allows(), draining=lambda: self._draining)
        self._circuit.flow = self._flow
        self._bridge: ConsumerBridge | None = None
        # Replay mode: read [start, until) of these partitions, publish like run does, commit nothing, and stop
        # once every partition reached its end and everything read is done.
        self._range = {tp: r for tp, r in (replay or {}).items() if r[0] < r[1]} if replay is not None else None
        self._reached: set[TP] = set()
        self._replayed = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------------------------
    def consumer_config(self) -> dict[str, str | int | float | bool]:
        conf = self._kafka.client_config()
        replaying = self._range is not None
        conf.update(
            {
                # a replay never joins nor commits to the pipeline's group: librdkafka just needs some group.id
                "group.id": f"streamcar-replay-{uuid.uuid4().hex}" if replaying else self.config.consume.group,
                "enable.partition.eof": replaying,
                "client.id": f"{self._kafka.client_id}-{self.name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # where a partition without a usable committed offset starts is the bridge's decision
                # (streamcar.kafka.starts): librdkafka's own would skip a re-created log or a new partition. A
                # replay reads explicit offsets, and a range that retention cut short starts at the log's start.
                "auto.offset.reset": "earliest" if replaying else "error",
                # new partitions of an input topic are found within seconds, not 5 minutes
                "topic.metadata.refresh.interval.ms": 5000,
                "partition.assignment.strategy": "cooperative-sticky",
                # A resumed partition's first fetch can wait behind a fetch request the broker holds for up to
                # fetch.wait.max.ms (500 ms by default) when nothing else was fetchable.
                "fetch.wait.max.ms": 50,
            }
        )
        conf.update(self._kafka.librdkafka)  # explicit overrides still win
        return conf

    @property
    def assigned(self) -> list[TP]:
        """The partitions this pipeline currently consumes."""
        return sorted(self._inflight.accepting)

    @property
    def in_flight(self) -> int:
        """Messages taken from the scheduler and not done: in a call, publishing, waiting for a retry or held
        behind an earlier message of their lane."""
        return len(self._inflight)

    @property
    def buffered(self) -> int:
        """Messages consumed and not started yet: behind their key or waiting for a free slot."""
        return len(self._buffer)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain within ``shutdown_timeout`` and commit; raises on failure."""
        loop = asyncio.get_running_loop()
        await self._caller.start()
        ranges = self._range
        self._bridge = ConsumerBridge(
            self.consumer_config(),
            list(self.config.consume.topics),
            self,
            loop,
            batch_size=500,
            revoke_timeout=self.config.shutdown_timeout,
            assignment=None if ranges is None else {tp: start for tp, (start, _) in ranges.items()},
            start_from=self.config.consume.from_,
        )
        if ranges is not None and not ranges:
            self._replayed.set()  # an empty range: nothing to read
        self._flow.source = self._bridge
        self._bridge.start()
        self._checkpoint.start(self._bridge.commit, self._inflight.accepting)
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(self._failed.wait())}
        waits.add(asyncio.create_task(self._replayed.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            self._checkpoint.stop()
            await self._shutdown()
        if self._failure is not None:
            raise self._failure

    async def _shutdown(self) -> None:
        """Stop taking work, let calls in flight finish, commit, leave the group, close the producer: all within
        ``shutdown_timeout`` plus :data:`STOP_GRACE`, so that a Pod's termination grace period can be set from it.

        Order matters: the final commit happens after in-flight work settled (so it covers it) and before the
        consumer closes (closing revokes our partitions; on_revoked commits once more, which is harmless). Work
        still running at the deadline is abandoned: it is not committed, so it is redone after the restart.
        """
        self._draining = True
        self._drain_until = time.monotonic() + self.config.shutdown_timeout
        end = self._drain_until + STOP_GRACE
        bridge = self._bridge
        if bridge is not None:
            self._flow.pause()
        self._inflight.drop_waiting()
        self._dispatcher.stop()
        self._circuit.stop()
        await self._inflight.settled(lambda w: True, self._drain_until - time.monotonic())
        abandoned = len(self._inflight.running)
        if abandoned:
            log.warning(
                "%s: %d messages still in a call or publishing after shutdown_timeout; they will be redelivered",
                self.name,
                abandoned,
            )
        for task in set(self._inflight.running.values()):
            task.cancel()
        final = self._checkpoint.commit()
        await _within(final, min(COMMIT_GRACE, end - time.monotonic()), f"{self.name}: the final commit")
        if bridge is not None:
            await _within(bridge.stop(), end - time.monotonic() - PRODUCER_GRACE, f"{self.name}: leaving the group")
        await self._caller.close()
        await self._producer.close(max(end - time.monotonic(), PRODUCER_GRACE))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    # -- ConsumerListener (called on the loop) ------------------------------------------------------------
    def on_records(self, records: list[Message]) -> None:
        try:
            self._accept(records)
        except Exception as exc:  # an engine bug: fail loudly rather than skip records silently
            log.exception("%s: accepting records failed", self.name)
            self._fail(exc)
        finally:
            self._flow.accepted()

    def _accept(self, records: list[Message]) -> None:
        ordering = self.config.ordering
        ranges = self._range
        for msg in records:
            error = msg.error()
            if error is not None:
                code = error.code()
                if code == KafkaError._PARTITION_EOF and ranges is not None:
                    self._reach((msg.topic() or "", msg.partition() or 0))
                elif code == KafkaError._AUTO_OFFSET_RESET and self._bridge is not None:
                    tp = (msg.topic() or "", msg.partition() or 0)
                    self._bridge.reset_offset(tp, read_before=tp in self._tracker.ever)
                else:
                    self.on_error(error)
                continue
            event, unusable = event_from(msg)
            tp = (event.topic, event.partition)
            if tp not in self._inflight.accepting:
                continue  # fetched just before a revoke: the partition's next owner gets it
            if ranges is not None:
                if tp in self._reached or event.offset >= ranges[tp][1]:
                    self._reach(tp)
                    continue
                if event.offset == ranges[tp][1] - 1:
                    self._reached.add(tp)  # the last record of the range: done once it is
            try:
                self._tracker.track(tp, event.offset)
            except ValueError:
                self._restart_log(tp, event.offset)
                self._tracker.track(tp, event.offset)
            self.stats.consumed += 1
            lane = lane_for(ordering, event.topic, event.partition, event.key)
            work = Work(event, tp, lane, self._inflight.generation[tp])
            if unusable is not None:
                work.verdict = Reply.dead_letter(unusable, kind="rejected")
                self._verdicts += 1
            if self._tracing is not None:
                self._tracing.consumed(work)
            self._buffer.submit(work)
        self._pace()
        self._dispatch()

    def _restart_log(self, tp: TP, offset: int) -> None:
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
        self.stats.note_condition("log-restarted", f"{text} (topic re-created or log truncated)")
        held = self._throttle.allow(("log-restarted", tp))
        if held is not None:
            log.warning(
                "%s: %s (topic re-created or log truncated); reading it as a new log from %d%s",
                self.name,
                text,
                offset,
                held_back(held, self._throttle.interval),
                extra=self._fields("log-restarted", topic=tp[0], partition=tp[1], offset=offset),
            )

    # -- what the admin endpoints show -----------------------------------------------------------------------
    def lag(self) -> dict[TP, int | None]:
        """Per assigned partition: records from the next offset to commit to the high watermark (None: unknown,
        i.e. nothing read since the partition was assigned, or no watermark seen yet)."""
        highs = self._bridge.high_watermarks if self._bridge is not None else {}
        lags: dict[TP, int | None] = {}
        for tp in sorted(self._inflight.accepting):
            mark, high = self._tracker.watermark(tp), highs.get(tp)
            lags[tp] = None if mark is None or high is None else max(high - mark, 0)
        return lags

    @property
    def circuit_open(self) -> str | None:
        """Why the circuit is open (or half-open, probing); None while it is closed."""
        return self._circuit.open_reason

    @property
    def circuit_opened(self) -> int:
        """How many times the circuit opened."""
        return self._breaker.opened

    @property
    def kafka_error(self) -> str | None:
        """Why the cluster did not answer the consumer's last probe; None when it did."""
        return self._bridge.kafka_error if self._bridge is not None else "the consumer has not started"

    def status(self) -> dict[str, object]:
        """The pipeline at a glance, for /status (no secrets: the config's credentials never appear here)."""
        stats = self.stats
        lags = self.lag()
        return {
            "name": self.name,
            "group": self.config.consume.group,
            "topics": list(self.config.consume.topics),
            "call": {
                **self.config.call.model_dump(mode="json", include={"timeout", "batch"}),
                "url": self.config.call.target_text,  # a password in the URL never shows
            },
            "kafka_error": self.kafka_error,
            "service_failing": stats.service_failing,
            "circuit": self._breaker.state.value,
            "circuit_reason": self._breaker.reason or None,
            "circuit_opened": self._breaker.opened,
            "last_call_error": stats.last_call_error or None,
            "partitions": [
                {"topic": t, "partition": p, "next_offset": self._tracker.watermark((t, p)), "lag": lag}
                for (t, p), lag in lags.items()
            ],
            "lag": sum(lag for lag in lags.values() if lag is not None),
            "in_flight": self.in_flight,
            "buffered": self.buffered,
            "consumed": stats.consumed,
            "results": dict(stats.results),
            "published": stats.published,
            "dead_lettered": stats.dead_lettered,
            "retries": stats.retries,
            "calls": stats.calls,
            "last_errors": list(stats.last_errors),
            "conditions": stats.recent(),
            "recent_dead_letters": list(stats.recent_dead_letters),
        }

    # -- replay ---------------------------------------------------------------------------------------------
    def _reach(self, tp: TP) -> None:
        """Replay: ``tp`` has nothing more to read in its range."""
        self._reached.add(tp)
        bridge = self._bridge
        self._check_replayed()
        if bridge is not None and self._range is not None and not self._replayed.is_set():
            bridge.pause_partition(tp)

    def _check_replayed(self) -> None:
        ranges = self._range
        if ranges is None or self._replayed.is_set() or len(self._reached) < len(ranges):
            return
        if all(self._tracker.outstanding(tp) == 0 for tp in ranges):
            self._replayed.set()

    def replay_progress(self) -> tuple[int, int]:
        """Replay: (records done, records in the range); done counts every offset below each watermark."""
        ranges = self._range or {}
        total = sum(until - start for start, until in ranges.values())
        done = 0
        for tp, (start, until) in ranges.items():
            mark = self._tracker.watermark(tp)
            if tp in self._reached and self._tracker.outstanding(tp) == 0:
                done += until - start
            elif mark is not None:
                done += min(mark, until) - start
        return done, total

    async def on_assigned(self, partitions: list[TP]) -> None:
        self._inflight.assign(partitions)

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, int]:
        revoked = set(partitions) & self._inflight.accepting
        self._stop_taking(revoked)
        # a revoke while stopping (the consumer closing) waits only for what is left of the drain's deadline
        within = self._drain_until - time.monotonic() if self._draining else self.config.shutdown_timeout
        await self._inflight.settled(lambda w: w.tp in revoked, within)
        final = self._release(revoked)
        return {tp: offset for tp, offset in final.items() if offset is not None}

    async def on_lost(self, partitions: list[TP]) -> None:
        lost = set(partitions)
        self._stop_taking(lost)
        self._release(lost)  # another member owns them now: nothing to drain, nothing to commit

    def _stop_taking(self, tps: set[TP]) -> None:
        """No new records, queued messages or retries for ``tps``; calls already running go on."""
        for tp in tps:
            self._buffer.drop_partition(tp)
        self._inflight.stop_taking(tps)

    def _release(self, tps: set[TP]) -> dict[TP, int | None]:
        """Forget ``tps``: their final watermarks, and late completions of abandoned work ignored from now on."""
        final = self._tracker.remove(tps)
        self._inflight.invalidate(tps)
        self._pace()
        return final

    def on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _FATAL_CODES:
            log.error("%s: Kafka error: %s", self.name, error.str(), extra=self._fields("kafka-error"))
            self._fail(StreamcarKafkaError(f"pipeline {self.name}: {error.str()}"))
        elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            log.warning("%s: %s (waiting for the topic to exist)", self.name, error.str())
        else:
            log.debug("%s: Kafka: %s", self.name, error.str())

    # -- flow control -------------------------------------------------------------------------------------
    def _pace(self) -> None:
        self._flow.pace()

    def _dispatch(self) -> None:
        self._dispatcher.dispatch()

    # -- one call ---------------------------------------------------------------------------------------------
    async def _process(self, works: list[Work], probe: bool = False) -> None:
        """Call the service for ``works`` (a batch, or a batch of one) and act on each reply; a ``probe`` is the
        one call a half-open circuit lets through. A message with a ``verdict`` (a record that cannot be called at
        all) is not sent: the verdict is its reply."""
        touched = list(works)  # grows by the held messages this task settles; all leave _running at the end
        try:
            calls = works
            if self._verdicts and any(work.verdict is not None for work in works):
                calls = [work for work in works if work.verdict is None]
                self._inflight.calling -= len(works) - len(calls)
                for work in works:
                    if work.verdict is not None:
                        work.reply = work.verdict
            if calls:  # one call, inline: a coroutine of its own per call costs as much as the bookkeeping
                for work in calls:
                    work.attempts += 1
                tracing = self._tracing
                span, events = tracing.call(calls) if tracing is not None else (None, [work.event for work in calls])
                started = time.perf_counter()
                try:
                    replies = await self._caller.call(events)
                    if len(replies) != len(calls):
                        raise RuntimeError(f"{len(replies)} replies for {len(calls)} events")
                except Exception as exc:  # a caller bug must not lose messages: retry them like a failed call
                    log.exception("%s: caller failed", self.name)
                    replies = [Reply.retry(error=f"{type(exc).__name__}: {exc}", kind="internal")] * len(calls)
                finally:
                    self._inflight.calling -= len(calls)
                if any(reply.error is not None for reply in replies):
                    replies = self._redacted(replies)
                if span is not None:
                    Tracing.called(span, replies)
                self._called(calls, replies, time.perf_counter() - started, probe)
            await self._settle(works, touched)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: settling %s failed", self.name, works[0].event.idempotency_key)
            self._fail(exc)
        finally:
            running = self._inflight.running
            for work in touched:
                running.pop(work, None)
            self._inflight.changed.set()
            self._pace()
            self._dispatch()

    def _redacted(self, replies: list[Reply]) -> list[Reply]:
        """``replies`` with their errors redacted and cut short. An error's text is the service's words, and a
        service may echo the request's credentials: redacted here, once, as the replies come in, every output
        downstream is clean (dead letters, /status, spans, logs)."""
        scrub = self._redactor.scrub
        return [r if r.error is None else replace(r, error=_clip(scrub(r.error))) for r in replies]

    def _called(self, works: list[Work], replies: list[Reply], seconds: float, probe: bool) -> None:
        """A call for ``works`` returned ``replies``: each message gets its reply, and the call counts for the
        stats and the circuit."""
        failed = [r for r in replies if r.result is Result.RETRY]
        failure = failed[0].error_kind if failed and len(failed) == len(replies) else None
        self.stats.observe_call(seconds, failure)
        if failure is not None:
            self.stats.last_call_error = failed[0].error or failure
        self._circuit.record(failure, probe=probe)
        if failure in OUTAGE_KINDS and not self._breaker.allows() and (not probe or failure in UNANSWERED_KINDS):
            # The service is down: this attempt does not count against the message. A failed probe does count
            # when the service answered it: the probe's message itself may be what fails (a poison message
            # that is the only traffic must still reach the dead-letter topic).
            for work in works:
                work.attempts -= 1
        for work, reply in zip(works, replies, strict=True):
            work.reply = reply

    async def _settle(self, works: list[Work], touched: list[Work]) -> None:
        """Act on the replies of ``works`` (in offset order within each lane) until each is done or waiting.

        Three phases, so that a batch costs one round trip to the broker rather than one per message:
        1. in order, decide each message and hand its reply or dead letter to the producer. Records reach the
           producer in offset order per lane and the idempotent producer keeps that order, so a key's replies
           are published in order. A message that stays unresolved (retry, or no dead-letter topic) holds the
           later messages of its lane from the same batch: they are not sent again, and not completed before it.
        2. wait for the broker to acknowledge everything handed over.
        3. in order, complete what was acknowledged. Completing a message releases the messages it held, which
           are settled in the next round; a record the broker refused is acted on again (or dead-lettered).
        """
        while works:
            blockers: dict[Lane, Work] = {}
            sent: list[tuple[Work, str, Ack | None]] = []
            retry: list[Work] = []
            slow: list[Work] = []
            for work in works:
                if not self._inflight.current(work):
                    continue  # the partition was revoked meanwhile; its new owner redoes this message
                blocker = blockers.get(work.lane) if work.lane is not None else None
                if blocker is not None:
                    self._hold(blocker, work)
                    continue
                outcome = self._outcomes.act(work, retry, slow)
                if outcome is None:
                    if work.lane is not None:
                        blockers[work.lane] = work
                else:
                    sent.append((work, *outcome))
            if retry:
                attempts = max(w.attempts for w in retry)
                after = max((w.reply.retry_after or 0.0 for w in retry if w.reply is not None), default=0.0)
                self._schedule_retry(retry, self._backoff.delay(attempts, after or None))
            if slow:
                self._schedule_retry(slow, self.config.retry.max_backoff)

            pending = [future for _, _, future in sent if future is not None and not future.done()]
            if pending:
                # every message of this round is now publishing, waiting for a retry or held: the call slots of
                # the publishing ones are free, and the next calls need not wait for the broker's acks
                self._dispatch()
                await _all_done(pending)

            blockers.clear()
            again: list[Work] = []
            released: list[Work] = []
            for work, result, future in sent:
                if not self._inflight.current(work):
                    continue
                error = None if future is None else future.exception()
                blocker = blockers.get(work.lane) if work.lane is not None else None
                if error is None and blocker is not None:
                    work.settled = result  # done, but an earlier message of its lane is not: wait for it
                    self._hold(blocker, work)
                elif error is None:
                    self._outcomes.count(work, result)
                    self._complete(work, result)
                    if work.held is not None:
                        released.extend(work.held)
                        work.held = None
                else:
                    self._outcomes.refused(work, result, error)
                    again.append(work)
                    if work.lane is not None:
                        blockers[work.lane] = work
            if released:
                task = asyncio.current_task()
                assert task is not None
                for work in released:  # settled by this task now: revoke and shutdown wait for them like any call
                    self._inflight.held.discard(work)
                    self._inflight.running[work] = task
                    touched.append(work)
            if again:
                await asyncio.sleep(self._backoff.delay(1))
            works = again + released

    def _hold(self, blocker: Work, work: Work) -> None:
        blocker.hold(work)
        self._inflight.held.add(work)

    def _schedule_retry(self, works: list[Work], delay: float) -> None:
        """Call ``works`` again (together, as one batch where batching is on) after ``delay`` seconds."""
        if self._draining:
            return
        self.stats.retries += len(works)
        handle = asyncio.get_running_loop().call_later(delay, self._retry_now, works)
        for work in works:
            self._inflight.waiting[work] = handle

    def _retry_now(self, works: list[Work]) -> None:
        due = [w for w in works if self._inflight.waiting.pop(w, None) is not None and self._inflight.current(w)]
        if self._draining:
            return
        if not self._breaker.allows():
            self._inflight.parked.extend(due)  # called again once the circuit closes (or the first as its probe)
            return
        self._dispatcher.launch_in_batches(due)

    def _fields(self, event: str, **more: object) -> dict[str, object]:
        """The structured fields of a notable log line (keys in JSON logs)."""
        return {"event": event, "pipeline": self.name, **more}

    def _complete(self, work: Work, result: str) -> None:
        if work.span is not None:
            Tracing.done(work, result)
        self.stats.results[result] += 1
        self._checkpoint.release(work.tp, work.event.offset)
        self._buffer.finish(work)
        if self._range is not None:
            self._check_replayed()


ERROR_TEXT = 500
"""Characters of a call's error kept (after redaction) for dead letters, /status, spans and logs."""


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_TEXT else text[: ERROR_TEXT - 3] + "..."


async def _within(step: Coroutine[Any, Any, None], seconds: float, what: str) -> None:
    """Run one step of stopping for at most ``seconds``: past it, say so and go on with the next."""
    try:
        await asyncio.wait_for(step, max(seconds, 0.0))
    except TimeoutError:
        log.warning("%s took too long; going on without it", what)


def _all_done(futures: list[Ack]) -> asyncio.Future[None]:
    """A future done once every one of ``futures`` is (whatever their outcome): what ``asyncio.wait`` does, minus
    its sets, timeout and per-call wrapping, which showed in profiles of the per-message path."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(futures)

    def one_done(_: Ack) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not waiter.done():
            waiter.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    return waiter
