"""One pipeline: the rooms of the engine wired together, in the order a message walks through them.

1. intake (:mod:`~streamcar.engine.intake`): the source's records become Works, into the buffer; backpressure
   (:mod:`~streamcar.engine.flow`) holds the consumer thread back while the buffer is full;
2. scheduling and batch forming (:mod:`~streamcar.engine.dispatch`, over the lane scheduler): in key, partition or
   no order, up to ``max_in_flight``, as the circuit (:mod:`~streamcar.engine.circuit`) and pacing allow;
3. the call and 4. its outcome (:mod:`~streamcar.engine.attempt`, :mod:`~streamcar.engine.outcomes`): publish, ...;
5. completion (:mod:`~streamcar.engine.completion`): one explicit call per message once its outcome is final;
6. the checkpoint (:mod:`~streamcar.engine.checkpoint`): the contiguous watermark of released offsets, committed.

Where each Work is at any moment is :mod:`~streamcar.engine.inflight`'s. All state lives on the asyncio loop;
the consumer thread talks to it through the ConsumerListener methods below (on_records, on_assigned, ...).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from streamcar.call import Caller
from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.engine.attempt import KEPT, Attempts
from streamcar.engine.buffer import Buffer
from streamcar.engine.checkpoint import Checkpoint
from streamcar.engine.circuit import Circuit
from streamcar.engine.completion import Completion
from streamcar.engine.dispatch import Dispatcher
from streamcar.engine.flow import Flow
from streamcar.engine.inflight import InFlight
from streamcar.engine.intake import Intake
from streamcar.engine.offsets import BUDGET
from streamcar.engine.outcomes import MAX_RECORD, Outcomes
from streamcar.engine.pace import Pacing
from streamcar.engine.queue import ShareSource
from streamcar.engine.source import Consumer, ConsumerFactory, GroupSource, RangeSource, Source
from streamcar.engine.stopping import COMMIT_GRACE, PRODUCER_GRACE, STOP_GRACE, within
from streamcar.engine.tracing import Tracing
from streamcar.engine.transaction import AT_LEAST_ONCE, ExactlyOnce, Transaction, Transactional
from streamcar.engine.view import status_document
from streamcar.engine.work import PipelineStats
from streamcar.kafka.consumer import ConsumerBridge
from streamcar.kafka.errors import Said
from streamcar.kafka.producer import AsyncProducer
from streamcar.kafka.records import TP, CommitPoint, Incoming
from streamcar.kafka.share import ShareBridge
from streamcar.kafka.topics import TopicWatch
from streamcar.redact import NOTHING, Redactor

log = logging.getLogger("streamcar.pipeline")


class Pipeline:
    # the rooms that call each other through the pipeline's wiring (typed here: the lambdas that reach them are
    # made before they are)
    _attempts: Attempts
    _dispatcher: Dispatcher
    _flow: Flow
    _draining: bool

    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        kafka: KafkaConfig,
        caller: Caller,
        producer: AsyncProducer | Transactional,
        *,
        source: Source | None = None,
        tracing: Tracing | None = None,
        redactor: Redactor = NOTHING,
        consumer_factory: ConsumerFactory | None = None,
        metadata_budget: int = BUDGET,
    ) -> None:
        self.name = name
        self.config = config
        self.stats = PipelineStats()
        self._kafka = kafka
        self._caller = caller
        self._producer = producer
        self._tracing = tracing
        self._draining = False
        self._drain_until = 0.0
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        queue = config.consume.queue  # a share group (engine.queue) rather than a consumer group
        self._source: Source = source or (ShareSource(name, config, kafka) if queue else GroupSource(config))
        share = self._source if isinstance(self._source, ShareSource) else None  # queue mode's strategies
        self._transaction: Transaction | None = None
        self._exactly: ExactlyOnce | None = None
        if isinstance(producer, Transactional):
            # exactly-once: each commit is a transaction of the records and the offsets (engine.transaction)
            self._transaction = Transaction(on_doomed=self._abort_soon)
            self._exactly = ExactlyOnce(
                self._transaction, producer, group_metadata=self._group_metadata, rewind=self._rewind
            )
        self._checkpoint = self._commits(metadata_budget)
        self._tracker = self._checkpoint.tracker
        self.topics = TopicWatch.of(name, config, kafka)
        """The pipeline's topics that are missing or not usable (checked on the consumer's thread)."""
        # Consumed records wait here (behind their key, or for a free call slot) up to its bounds; beyond them
        # the consumer thread is held back until the buffer drained to half (see engine.flow).
        self._buffer = Buffer(config.in_flight_bound)
        self._inflight = InFlight()
        self._circuit = self._gate()
        self._breaker = self._circuit.breaker
        self._batch_size = config.call.batch.max_messages
        self._dispatcher = self._dispatch()
        self._flow = Flow(self._buffer, may_resume=self._circuit.may_consume, draining=lambda: self._draining)
        self._attempts = self._calls(share, tracing, redactor)
        self._intake = Intake(
            name,
            config,
            source=self._source,
            checkpoint=self._checkpoint,
            inflight=self._inflight,
            buffer=self._buffer,
            stats=self.stats,
            tracing=tracing,
            fail=self._fail,
            delivered=share.acquired if share is not None else None,
        )
        self._consumer_factory = consumer_factory or (ShareBridge if queue else ConsumerBridge)
        self._bridge: Consumer | None = None

    def _commits(self, budget: int) -> Checkpoint:
        """What commits the offsets of what is done (in transactions, exactly once)."""
        config = self.config
        return Checkpoint(
            self.name,
            max_in_flight=config.in_flight_bound,
            interval=config.commit_interval,
            commits=self._source.commits,
            budget=budget,  # bytes of done-ahead offsets a commit carries at most
            exactly=self._exactly,
            covered=lambda: self._dispatcher.dispatch(),
        )

    def _gate(self) -> Circuit:
        """The circuit breaker, the dispatcher's gate."""
        config = self.config
        return Circuit(
            self.name,
            config.circuit_breaker,
            stats=self.stats,
            inflight=self._inflight,
            stopping=lambda: self._draining,
            max_in_flight=config.in_flight_bound,
            batch_size=config.call.batch.max_messages,
            wake=lambda: self._dispatcher.dispatch(),
            consume=lambda: self._flow.pace(),
            pause=lambda: self._flow.pause(),
        )

    def _dispatch(self) -> Dispatcher:
        """What takes messages from the buffer into calls."""
        config = self.config
        return Dispatcher(
            self._inflight,
            self._buffer,
            max_in_flight=config.in_flight_bound,
            batch_size=self._batch_size,
            max_wait=config.call.batch.max_wait,
            stopping=lambda: self._draining,
            gate=self._circuit,
            owed=lambda: self._checkpoint.owed,
            pacing=Pacing(config, self.stats),
            process=lambda works, probe: self._attempts.process(works, probe),
        )

    def _calls(self, share: ShareSource | None, tracing: Tracing | None, redactor: Redactor) -> Attempts:
        """What calls the service and acts on its replies, in the mode chosen here: published in transactions
        or at least once, records kept or leased from a share group."""
        config, kafka = self.config, self._kafka
        outcomes = Outcomes(
            self.name,
            config,
            self._producer,
            self.stats,
            tracing,
            max_record=int(kafka.librdkafka.get("message.max.bytes", MAX_RECORD)),
            routed=self.topics.routed,
            limit=self.topics.limit,
            want=self.topics.want,
            missing=self.topics.problem,
        )
        acknowledge = share.acknowledge if share is not None else None
        completion = Completion(self._checkpoint, self._buffer, self.stats, self._source, acknowledge=acknowledge)
        return Attempts(
            self.name,
            config,
            caller=self._caller,
            outcomes=outcomes,
            stats=self.stats,
            circuit=self._circuit,
            inflight=self._inflight,
            wake=self._dispatcher.dispatch,
            launch=self._dispatcher.launch_in_batches,
            pacing=self._dispatcher.pacing,
            flow=self._flow,
            tracing=tracing,
            redactor=redactor,
            stopping=lambda: self._draining,
            completion=completion,
            fail=self._fail,
            publishing=self._transaction if self._transaction is not None else AT_LEAST_ONCE,
            lease=share if share is not None else KEPT,
        )

    # -- life cycle ---------------------------------------------------------------------------------------
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
        if isinstance(self._producer, Transactional):
            await self._producer.start()  # fences this id's previous producer, aborting what it left open
        source = self._source
        await source.prepared()  # a share group's lock and delivery limit
        self._bridge = self._consumer_factory(
            source.settings(self._kafka, f"{self._kafka.client_id}-{self.name}"),
            list(self.config.consume.topics),
            self,
            loop,
            batch_size=500,
            revoke_timeout=self.config.shutdown_timeout,
            assignment=source.assignment(),
            start_from=self.config.consume.from_,
            watch=self.topics,
        )
        self._flow.source = self._intake.consumer = self._bridge
        source.attach(self._bridge, self._buffer, self._inflight, self.stats, self._dispatcher.launch)
        self._bridge.start()
        self._checkpoint.start(self._bridge.commit, self._inflight.accepting)
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(self._failed.wait())}
        waits.add(asyncio.create_task(source.ended.wait()))  # a source that ends ends the run
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
        self._source.stopping()  # a share group takes back at once what is not started
        self._inflight.drop_waiting()
        self._dispatcher.stop()
        self._circuit.stop()
        await self._inflight.settled(lambda w: True, self._drain_until - time.monotonic())
        abandoned = len(self._inflight.running)
        if abandoned:
            what = "%s: %d messages still in a call or publishing after shutdown_timeout; they will be redelivered"
            log.warning(what, self.name, abandoned)
        for task in set(self._inflight.running.values()):
            task.cancel()
        final = self._checkpoint.commit()
        await within(final, min(COMMIT_GRACE, end - time.monotonic()), f"{self.name}: the final commit")
        if bridge is not None:
            await within(bridge.stop(), end - time.monotonic() - PRODUCER_GRACE, f"{self.name}: leaving the group")
        await self._caller.close()
        await self._producer.close(max(end - time.monotonic(), PRODUCER_GRACE))

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._failed.set()

    # -- ConsumerListener (called on the loop) ------------------------------------------------------------
    def on_records(self, records: list[Incoming | Said]) -> None:
        try:
            self._intake.accept(records)
            self._flow.pace()
            self._dispatcher.dispatch()
        except Exception as exc:  # an engine bug: fail loudly rather than skip records silently
            log.exception("%s: accepting records failed", self.name)
            self._fail(exc)
        finally:
            self._flow.accepted()

    # -- what the admin endpoints show -----------------------------------------------------------------------
    def lag(self) -> dict[TP, int | None]:
        highs = self._bridge.high_watermarks if self._bridge is not None else {}
        return self._source.lag(self._inflight.accepting, self._tracker, highs)

    def next_offsets(self) -> dict[TP, int | None]:
        return {tp: self._tracker.watermark(tp) for tp in sorted(self._inflight.accepting)}

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

    @property
    def topic_problems(self) -> list[str]:
        """The pipeline's topics that are missing or not usable, and those refusing its records now."""
        return [*self.topics.lines(), *self.stats.refusing_topics()]

    @property
    def producer_problem(self) -> str | None:
        """Why the producer cannot get its work committed; None when it can."""
        return self._exactly.producer.clash if self._exactly is not None else None

    def status(self) -> dict[str, object]:
        exactly = self._exactly
        txns = None if exactly is None else {**exactly.producer.status(), "aborted_in_a_row": exactly.aborts_in_a_row}
        view = status_document(self, self.config, breaker=self._breaker, tracker=self._tracker, buffered=self.buffered)
        return {**view, "transactions": txns}  # transactional_id, committed, aborted(_in_a_row), last_abort, clash

    def replay_progress(self) -> tuple[int, int]:
        """A range source: (records done, records in the range)."""
        source = self._source
        return source.progress(self._tracker) if isinstance(source, RangeSource) else (0, 0)

    # -- partitions come and go (ConsumerListener, called on the loop) ---------------------------------------
    async def on_assigned(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        for tp, point in committed.items():
            self._checkpoint.resume(tp, point)  # the previous owner's done-ahead offsets are skipped when read
        self._inflight.assign(partitions)

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, CommitPoint]:
        revoked = set(partitions) & self._inflight.accepting
        self._stop_taking(revoked)
        # a revoke while stopping (the consumer closing) waits only for what is left of the drain's deadline
        within = self._drain_until - time.monotonic() if self._draining else self.config.shutdown_timeout
        await self._inflight.settled(lambda w: w.tp in revoked, within)
        if self._transaction is not None and revoked:
            # their work is committed in a transaction (with everyone else's) before they are released; an
            # aborted one rewinds what is left, and the revoked partitions are their next owner's to redo
            await self._checkpoint.commit_now(also=revoked)
            self._forget(revoked)
            return {}
        final = self._forget(revoked)
        return {tp: offset for tp, offset in final.items() if offset is not None}

    async def on_lost(self, partitions: list[TP]) -> None:
        lost = set(partitions)
        self._stop_taking(lost)
        self._forget(lost)  # another member owns them now: nothing to drain, nothing to commit
        if self._transaction is not None:
            # the open transaction may hold their records, whose offsets may no longer be committed by us
            self._transaction.doom("partitions were lost to another member")  # aborted at once, and rewound
            await self._checkpoint.commit_now()

    def on_rewound(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        """The consumer went back to ``committed`` for ``partitions`` (after :meth:`_rewind`): take them again."""
        for tp, point in committed.items():
            self._checkpoint.resume(tp, point)
        self._inflight.assign(partitions)
        self._flow.pace()

    def _rewind(self, after: float = 0.0) -> None:
        """An exactly-once transaction was aborted: each partition with records in it goes back to its last
        committed offsets, and everything taken of it since is redone, ``after`` seconds from now (outcomes of
        its work under way are ignored from now on). The others go on: what they did since the last commit
        published nothing that the abort took back, and the next commit holds it. A partition being revoked
        with records in the transaction is forgotten too: the revoke's own commit, which may follow this one,
        must not say that what went with the aborted transaction was done (its next owner redoes it)."""
        assert self._transaction is not None
        touched = self._transaction.touched
        tps = self._inflight.accepting & touched
        self._stop_taking(tps)
        self._forget(tps | (set(self._tracker.partitions()) & touched))
        self._transaction.forget()
        bridge = self._bridge
        if bridge is not None and tps:
            if after > 0:
                asyncio.get_running_loop().call_later(after, bridge.rewind, sorted(tps))
            else:
                bridge.rewind(sorted(tps))

    def _abort_soon(self) -> None:
        asyncio.get_running_loop().create_task(self._checkpoint.commit())  # a doomed transaction's commit aborts

    async def _group_metadata(self) -> object | None:
        return await self._bridge.group_metadata() if self._bridge is not None else None

    def _stop_taking(self, tps: set[TP]) -> None:
        """No new records, queued messages or retries for ``tps``; calls already running go on."""
        for tp in tps:
            self._buffer.drop_partition(tp)
        self._inflight.stop_taking(tps)

    def _forget(self, tps: set[TP]) -> dict[TP, CommitPoint | None]:
        """Forget ``tps``: what to commit for them, and late completions of abandoned work ignored from now on."""
        self._intake.forget(tps)
        final = self._tracker.remove(tps)
        self._inflight.invalidate(tps)
        self._flow.pace()
        return final

    def on_error(self, said: Said) -> None:
        self._intake.trouble(said)
