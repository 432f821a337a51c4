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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message

from streamcar.call import Caller
from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.engine.offsets import OffsetTracker
from streamcar.engine.offsets import TopicPartition as TP
from streamcar.engine.records import OutRecord, dead_letter_record, reply_record
from streamcar.engine.retry import Backoff
from streamcar.engine.scheduler import Lane, LaneScheduler, lane_for
from streamcar.errors import KafkaError as StreamcarKafkaError
from streamcar.event import Event, Reply, Result
from streamcar.kafka.consumer import ConsumerBridge
from streamcar.kafka.producer import AsyncProducer, ProduceError

log = logging.getLogger("streamcar.pipeline")

PREFETCH = 2000

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


@dataclass
class PipelineStats:
    consumed: int = 0
    results: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    published: int = 0
    dead_lettered: int = 0
    call_seconds: float = 0.0
    last_errors: list[str] = field(default_factory=list)

    def note_error(self, text: str) -> None:
        self.last_errors.append(text)
        del self.last_errors[:-20]


class Work:
    """One consumed record on its way through the pipeline."""

    __slots__ = ("attempts", "blocked", "event", "generation", "lane", "last_error", "last_kind", "tp")

    def __init__(self, event: Event, tp: TP, lane: Lane | None, generation: int) -> None:
        self.event = event
        self.tp = tp
        self.lane = lane
        self.generation = generation
        self.attempts = 0
        self.last_error = ""
        self.last_kind = ""
        self.blocked = False


def _lane_of(work: Work) -> Lane | None:
    return work.lane


def _partition_of(work: Work) -> TP:
    return work.tp


def event_from(msg: Message) -> Event:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None
    assert partition is not None
    assert offset is not None
    _, timestamp = msg.timestamp()
    raw = msg.headers()
    pairs = raw.items() if isinstance(raw, dict) else (raw or ())
    headers = tuple((k, v if v is None or isinstance(v, bytes) else str(v).encode()) for k, v in pairs)
    return Event(topic, partition, offset, timestamp, msg.key(), msg.value(), headers)


class Pipeline:
    def __init__(
        self, name: str, config: PipelineConfig, kafka: KafkaConfig, caller: Caller, producer: AsyncProducer
    ) -> None:
        self.name = name
        self.config = config
        self.stats = PipelineStats()
        self._kafka = kafka
        self._caller = caller
        self._producer = producer
        self._backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff)
        self._tracker = OffsetTracker()
        self._scheduler: LaneScheduler[Work] = LaneScheduler(_lane_of, _partition_of)
        self._generation: dict[TP, int] = {}
        self._accepting: set[TP] = set()
        self._running: dict[Work, asyncio.Task[None]] = {}
        self._waiting: dict[Work, asyncio.TimerHandle] = {}
        self._changed = asyncio.Event()
        self._draining = False
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        # Consumed records wait here (behind their key, or for a free call slot) up to this many; beyond it the
        # consumer pauses. Pausing purges librdkafka's prefetch and a resumed fetch takes a while, so the buffer
        # must outlast that refetch or the service sits idle: resume at half of it.
        self._prefetch = max(PREFETCH, 2 * config.max_in_flight)
        self._bridge: ConsumerBridge | None = None
        # Besides every commit_interval, commit once this many messages completed since the last commit: it
        # bounds what a crash makes us redo (and so the duplicates it causes) to about max_in_flight.
        self._commit_every = max(1, config.max_in_flight // 2)
        self._since_commit = 0
        self._committing = False

    # -- life cycle ---------------------------------------------------------------------------------------
    def consumer_config(self) -> dict[str, str | int | float | bool]:
        conf = self._kafka.client_config()
        conf.update(
            {
                "group.id": self.config.consume.group,
                "client.id": f"{self._kafka.client_id}-{self.name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": self.config.consume.from_,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        conf.update(self._kafka.librdkafka)  # explicit overrides still win
        return conf

    @property
    def assigned(self) -> list[TP]:
        """The partitions this pipeline currently consumes."""
        return sorted(self._accepting)

    @property
    def in_flight(self) -> int:
        """Messages in a call (or publishing its result) or waiting for a retry: at most max_in_flight."""
        return len(self._running) + len(self._waiting)

    @property
    def buffered(self) -> int:
        """Messages consumed and not started yet: behind their key or waiting for a free slot."""
        return len(self._scheduler)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain within ``shutdown_timeout`` and commit; raises on failure."""
        loop = asyncio.get_running_loop()
        await self._caller.start()
        self._bridge = ConsumerBridge(
            self.consumer_config(),
            list(self.config.consume.topics),
            self,
            loop,
            batch_size=500,
            revoke_timeout=self.config.shutdown_timeout,
        )
        self._bridge.start()
        committer = asyncio.create_task(self._commit_loop(), name=f"{self.name}-commit")
        stopper = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait({stopper, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            failed.cancel()
            committer.cancel()
            await self._shutdown()
        if self._failure is not None:
            raise self._failure

    async def _shutdown(self) -> None:
        """Stop taking work, let calls in flight finish (bounded), commit, leave the group.

        Order matters: the final commit happens after in-flight work settled (so it covers it) and before the
        consumer closes (closing revokes our partitions; on_revoked commits once more, which is harmless).
        """
        self._draining = True
        bridge = self._bridge
        if bridge is not None:
            bridge.pause_all()
        for handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        await self._wait_running(lambda w: True, self.config.shutdown_timeout)
        abandoned = len(self._running)
        if abandoned:
            log.warning(
                "%s: %d calls still running after shutdown_timeout; they will be redelivered", self.name, abandoned
            )
        await self._commit()
        if bridge is not None:
            await bridge.stop()
        for task in list(self._running.values()):
            task.cancel()
        await self._caller.close()

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
            if self._bridge is not None:
                self._bridge.batch_done()

    def _accept(self, records: list[Message]) -> None:
        ordering = self.config.ordering
        for msg in records:
            error = msg.error()
            if error is not None:
                self.on_error(error)
                continue
            event = event_from(msg)
            tp = (event.topic, event.partition)
            if tp not in self._accepting:
                continue  # fetched just before a revoke: the partition's next owner gets it
            try:
                self._tracker.track(tp, event.offset)
            except ValueError:
                log.warning("%s: %s[%d] offset %d went backwards; skipped", self.name, *tp, event.offset)
                continue
            self.stats.consumed += 1
            lane = lane_for(ordering, event.topic, event.partition, event.key)
            self._scheduler.submit(Work(event, tp, lane, self._generation[tp]))
        self._pace()
        self._dispatch()

    async def on_assigned(self, partitions: list[TP]) -> None:
        for tp in partitions:
            self._generation[tp] = self._generation.get(tp, 0) + 1
            self._accepting.add(tp)

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, int]:
        revoked = set(partitions) & self._accepting
        self._stop_taking(revoked)
        await self._wait_running(lambda w: w.tp in revoked, self.config.shutdown_timeout)
        final = self._release(revoked)
        return {tp: offset for tp, offset in final.items() if offset is not None}

    async def on_lost(self, partitions: list[TP]) -> None:
        lost = set(partitions)
        self._stop_taking(lost)
        self._release(lost)  # another member owns them now: nothing to drain, nothing to commit

    def _stop_taking(self, tps: set[TP]) -> None:
        """No new records, queued messages or retries for ``tps``; calls already running go on."""
        self._accepting -= tps
        for tp in tps:
            self._scheduler.drop_partition(tp)
        for work in [w for w in self._waiting if w.tp in tps]:
            self._waiting.pop(work).cancel()

    def _release(self, tps: set[TP]) -> dict[TP, int | None]:
        """Forget ``tps``: their final watermarks, and late completions of abandoned work ignored from now on."""
        final = self._tracker.remove(tps)
        self._invalidate(tps)
        self._pace()
        return final

    def on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _FATAL_CODES:
            log.error("%s: Kafka error: %s", self.name, error.str())
            self._fail(StreamcarKafkaError(f"pipeline {self.name}: {error.str()}"))
        elif error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            log.warning("%s: %s (waiting for the topic to exist)", self.name, error.str())
        else:
            log.debug("%s: Kafka: %s", self.name, error.str())

    def _invalidate(self, tps: set[TP]) -> None:
        # late completions of abandoned work carry the old generation and are ignored
        for tp in tps:
            self._generation[tp] = self._generation.get(tp, 0) + 1

    # -- flow control -------------------------------------------------------------------------------------
    def _pace(self) -> None:
        """Backpressure: pause fetching while the consumed-but-not-started buffer is full, resume at half."""
        bridge = self._bridge
        if bridge is None:
            return
        buffered = len(self._scheduler)
        if buffered >= self._prefetch:
            bridge.pause_all()
        elif bridge.paused and buffered <= self._prefetch // 2 and not self._draining:
            bridge.resume_all()

    def _dispatch(self) -> None:
        """Start ready messages while fewer than max_in_flight are in a call or waiting for a retry."""
        if self._draining:
            return
        free = self.config.max_in_flight - len(self._running) - len(self._waiting)
        if free > 0 and self._scheduler.ready_count:
            for work in self._scheduler.take(min(free, self._scheduler.ready_count)):
                self._launch(work)

    def _launch(self, work: Work) -> None:
        task = asyncio.get_running_loop().create_task(self._process(work))
        self._running[work] = task

    def _current(self, work: Work) -> bool:
        return self._generation.get(work.tp) == work.generation

    async def _wait_running(self, which: Callable[[Work], bool], within: float) -> None:
        deadline = time.monotonic() + within
        while any(which(w) for w in self._running):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    # -- one message --------------------------------------------------------------------------------------
    async def _process(self, work: Work) -> None:
        try:
            work.attempts += 1
            started = time.perf_counter()
            try:
                (reply,) = await self._caller.call([work.event])
            except Exception as exc:  # a caller bug must not lose the message: retry it like a failed call
                log.exception("%s: caller failed", self.name)
                reply = Reply.retry(error=f"{type(exc).__name__}: {exc}", kind="internal")
            self.stats.call_seconds += time.perf_counter() - started
            await self._settle(work, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: processing %s failed", self.name, work.event.idempotency_key)
            self._fail(exc)
        finally:
            self._running.pop(work, None)
            self._changed.set()
            self._pace()
            self._dispatch()

    async def _settle(self, work: Work, reply: Reply) -> None:
        if not self._current(work):
            return  # the partition was revoked meanwhile; its new owner redoes this message
        result = reply.result
        if result is Result.SUCCESS:
            publish = self.config.publish
            if reply.value is not None and publish is not None:
                record = reply_record(work.event, reply)
                try:
                    await self._produce(work, publish.topic, record)
                except ProduceError as exc:
                    await self._dead_letter(work, f"publishing the reply failed: {exc}", "publish")
                    return
                self.stats.published += 1
            self._complete(work, "success")
        elif result is Result.DROP:
            self._complete(work, "drop")
        elif result is Result.RETRY:
            await self._retry_or_give_up(work, reply)
        else:
            await self._dead_letter(
                work, reply.error or "the service rejected the message", reply.error_kind or "rejected"
            )

    async def _retry_or_give_up(self, work: Work, reply: Reply) -> None:
        work.last_error = reply.error or "retry"
        work.last_kind = reply.error_kind or "retry"
        if work.attempts < self.config.retry.attempts:
            self._schedule_retry(work, self._backoff.delay(work.attempts, reply.retry_after))
            return
        error = f"gave up after {work.attempts} attempts; last error ({work.last_kind}): {work.last_error}"
        await self._dead_letter(work, error, "exhausted")

    async def _dead_letter(self, work: Work, error: str, kind: str) -> None:
        dlq = self.config.dead_letter
        if dlq is None:
            # No dead-letter topic: never drop. The message blocks its key and keeps being retried slowly.
            if not work.blocked:
                work.blocked = True
                log.error(
                    "%s: %s cannot be delivered and there is no dead_letter topic; its key waits (%s)",
                    self.name,
                    work.event.idempotency_key,
                    error,
                )
                self.stats.note_error(f"{work.event.idempotency_key}: {error}")
            self._schedule_retry(work, self.config.retry.max_backoff)
            return
        record = dead_letter_record(work.event, error=error, kind=kind, attempts=work.attempts)
        try:
            await self._produce(work, dlq.topic, record)
        except ProduceError as exc:
            log.error("%s: the dead-letter topic refused %s: %s", self.name, work.event.idempotency_key, exc)
            self._schedule_retry(work, self.config.retry.max_backoff)
            return
        self.stats.dead_lettered += 1
        self.stats.note_error(f"{work.event.idempotency_key}: {kind}: {error}")
        log.warning("%s: dead-lettered %s (%s): %s", self.name, work.event.idempotency_key, kind, error)
        self._complete(work, "dead-letter")

    async def _produce(self, work: Work, topic: str, record: OutRecord) -> None:
        """Produce until acknowledged; transient failures (already retried by librdkafka) are tried again."""
        failures = 0
        while True:
            try:
                await self._producer.produce(topic, record.value, record.key, record.headers)
                return
            except ProduceError as exc:
                if exc.permanent or self._draining or not self._current(work):
                    raise
                failures += 1
                log.warning("%s: producing to %s failed (%s); trying again", self.name, topic, exc)
                await asyncio.sleep(self._backoff.delay(failures))

    def _schedule_retry(self, work: Work, delay: float) -> None:
        if self._draining or not self._current(work):
            return
        self.stats.retries += 1
        self._waiting[work] = asyncio.get_running_loop().call_later(delay, self._retry_now, work)

    def _retry_now(self, work: Work) -> None:
        if self._waiting.pop(work, None) is not None and not self._draining and self._current(work):
            self._launch(work)

    def _complete(self, work: Work, result: str) -> None:
        self.stats.results[result] += 1
        if self._current(work):
            self._tracker.done(work.tp, work.event.offset)
            self._scheduler.finish(work)
            self._since_commit += 1
            if self._since_commit >= self._commit_every and not self._committing:
                asyncio.get_running_loop().create_task(self._commit())

    # -- committing ---------------------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval)
            await self._commit()

    async def _commit(self) -> None:
        bridge = self._bridge
        if bridge is None or self._committing:
            return
        points = {tp: o for tp, o in self._tracker.commit_points().items() if tp in self._accepting}
        if not points:
            return
        self._committing = True
        self._since_commit = 0
        try:
            await bridge.commit(points)
        except KafkaException as exc:  # e.g. mid-rebalance; the next tick (or the revoke) commits again
            log.info("%s: commit deferred: %s", self.name, exc)
            return
        finally:
            self._committing = False
        self._tracker.mark_committed(points)
