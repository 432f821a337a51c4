"""An in-memory twin of the Kafka side, to run the engine without a broker (as httpx's MockTransport runs a
client without a server).

* :class:`TwinConsumer` -- what :class:`streamcar.kafka.consumer.ConsumerBridge` is to the pipeline: it assigns
  partitions, hands over batches of records (real ``confluent_kafka.Message`` objects) no faster than the
  pipeline takes them, honours pause and resume, takes commits, and can revoke partitions mid-run.
* :class:`TwinProducer` -- an :class:`~streamcar.kafka.producer.AsyncProducer` that keeps what it is sent and
  acknowledges it on the loop, or refuses records of chosen topics.
* :class:`ScriptedCaller` -- a service that answers each event through a function, and records its calls and
  how many were in flight at once.
* :class:`Rig` -- a pipeline wired to all three, with the awaits a test needs.

Everything runs on the test's own event loop, in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Message

from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.engine.offsets import BUDGET
from streamcar.engine.pipeline import Pipeline
from streamcar.engine.source import Source
from streamcar.engine.tracing import Tracing
from streamcar.event import Event, Reply
from streamcar.kafka.bridging import handed
from streamcar.kafka.listener import ConsumerListener
from streamcar.kafka.producer import Ack, ProduceError
from streamcar.kafka.records import TP, CommitPoint
from streamcar.kafka.transactions import Aborted

TOPIC = "in"
BATCH = 500


def record(partition: int, offset: int, key: bytes | None, value: bytes | None, topic: str = TOPIC) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value, timestamp=(1, offset))


class TwinConsumer:
    """Partitions' logs in memory, fed to the listener like the consumer thread does."""

    def __init__(
        self,
        logs: Mapping[TP, list[Message]],
        listener: ConsumerListener,
        loop: asyncio.AbstractEventLoop,
        *,
        assignment: Mapping[TP, int] | None = None,
        committed: Mapping[TP, CommitPoint] | None = None,
    ) -> None:
        self.logs = {tp: list(records) for tp, records in logs.items()}
        self._listener = listener
        self._loop = loop
        self._positions = dict(assignment) if assignment is not None else dict.fromkeys(self.logs, 0)
        # what the group committed before: reading starts there, and the listener hears of its metadata
        self.committed: dict[TP, CommitPoint] = dict(committed or {})
        if assignment is None:
            self._positions.update({tp: point.offset for tp, point in self.committed.items()})
        self._assigned: set[TP] = set()
        self._paused = False
        self._paused_parts: set[TP] = set()
        self._slot = asyncio.Semaphore(2)  # at most two batches ahead of the loop, as the bridge
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.commits: list[dict[TP, CommitPoint]] = []
        self.holds: list[TP] = []
        self.high_watermarks: dict[TP, int] = {}
        self.kafka_error: str | None = None
        self.reset_asked: list[TP] = []
        self.fetch_delay = 0.0
        """Seconds from a resume to the first records, like a real fetch (0: at once)."""
        self.commit_delay = 0.0
        """Seconds a commit travels before the broker has it (0: at once)."""
        self.rewinds = 0

    # -- the Consumer port ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.revoke(sorted(self._assigned))

    def batch_done(self) -> None:
        self._slot.release()
        self._wake.set()

    def pause_all(self) -> None:
        self._paused = True

    def resume_all(self) -> None:
        if self.fetch_delay and self._paused:
            self._loop.call_later(self.fetch_delay, self._resumed)
        else:
            self._resumed()

    def _resumed(self) -> None:
        self._paused = False
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_partition(self, tp: TP) -> None:
        self._paused_parts.add(tp)

    def hold_partition(self, tp: TP) -> None:
        self.holds.append(tp)
        self._paused_parts.add(tp)

    def resume_partition(self, tp: TP) -> None:
        self._paused_parts.discard(tp)
        self._wake.set()

    def reset_offset(self, tp: TP, *, read_before: bool) -> None:
        self.reset_asked.append(tp)

    async def commit(self, offsets: Mapping[TP, CommitPoint]) -> None:
        if self.commit_delay:
            await asyncio.sleep(self.commit_delay)
        self.commits.append(dict(offsets))
        self.committed.update(offsets)

    def rewind(self, tps: list[TP]) -> None:
        """Back to the committed offsets (an aborted transaction), as the bridge: the listener hears it at once."""
        kept = [tp for tp in tps if tp in self._assigned]
        for tp in kept:
            self._positions[tp] = self.committed[tp].offset if tp in self.committed else 0
        self.rewinds += 1
        self._listener.on_rewound(kept, {tp: self.committed[tp] for tp in kept if tp in self.committed})
        self._wake.set()

    async def group_metadata(self) -> object:
        return "twin-group-metadata"

    # -- what a test does -----------------------------------------------------------------------------------------
    def append(self, tp: TP, records: Sequence[Message]) -> None:
        self.logs.setdefault(tp, []).extend(records)
        self._wake.set()

    async def revoke(self, tps: list[TP]) -> dict[TP, CommitPoint]:
        """A rebalance takes ``tps``: the pipeline drains them and says what to commit; committed here."""
        mine = [tp for tp in tps if tp in self._assigned]
        self._assigned -= set(mine)
        final = await self._listener.on_revoked(mine)
        self.committed.update(final)
        return final

    # -- the feeding ----------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        tps = sorted(self._positions)
        await self._listener.on_assigned(tps, {tp: p for tp, p in self.committed.items() if p.metadata})
        self._assigned |= set(tps)
        for tp in tps:
            self.high_watermarks[tp] = len(self.logs.get(tp, []))
        while True:
            batch = self._next_batch()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._slot.acquire()
            self._listener.on_records(handed(batch))

    def _next_batch(self) -> list[Message]:
        if self._paused:
            return []
        batch: list[Message] = []
        for tp in sorted(self._assigned - self._paused_parts):
            log = self.logs.get(tp, [])
            start = self._positions.get(tp, 0)
            taken = log[start : start + BATCH - len(batch)]
            self._positions[tp] = start + len(taken)
            self.high_watermarks[tp] = len(log)
            batch.extend(taken)
            if len(batch) >= BATCH:
                break
        return batch


class TwinProducer:
    """Keeps every record it is sent, acknowledged on the loop's next turn; ``refuse`` topics fail, and a record
    whose value is in ``refuse_once`` fails the first time it is sent. With ``linger`` (seconds), records are
    acknowledged that long after they were sent, or at once when :meth:`hurry` is called, like librdkafka's
    ``linger.ms`` and a flush. ``sent`` is what was published, in the order the broker took it."""

    def __init__(self) -> None:
        self.sent: dict[str, list[tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]]] = (
            defaultdict(list)
        )
        self.refuse: dict[str, RdKafkaError] = {}
        self.refuse_once: dict[bytes, RdKafkaError] = {}
        self.linger = 0.0
        self.closed = False
        self.hurried = 0
        self.acks: list[tuple[bytes | None, float]] = []  # (value, loop time) of each acknowledgement
        self._lingering: dict[Ack, tuple[asyncio.TimerHandle, bytes | None, ProduceError | None]] = {}

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any = (), *, alone: bool = False
    ) -> Ack:
        loop = asyncio.get_running_loop()
        future: Ack = loop.create_future()
        refused = self.refuse.get(topic)
        if refused is None and value is not None:
            refused = self.refuse_once.pop(value, None)
        if refused is None:
            self.sent[topic].append((key, value, tuple(headers)))
        outcome = None if refused is None else ProduceError(refused)
        if self.linger:
            handle = loop.call_later(self.linger, self._ack, future, value, outcome)
            self._lingering[future] = (handle, value, outcome)
        else:
            loop.call_soon(self._ack, future, value, outcome)
        return future

    def _ack(self, future: Ack, value: bytes | None, outcome: ProduceError | None) -> None:
        self._lingering.pop(future, None)
        if outcome is not None:
            future.set_exception(outcome)
            return
        self.acks.append((value, asyncio.get_running_loop().time()))
        future.set_result(None)  # type: ignore[arg-type]  # the engine reads no Message

    def hurry(self, mine: int) -> None:
        if len(self._lingering) > mine:
            return  # others await the broker too: the linger batches them (as AsyncProducer.hurry)
        self.hurried += 1
        loop = asyncio.get_running_loop()
        for future, (handle, value, outcome) in self._lingering.items():
            handle.cancel()
            loop.call_soon(self._ack, future, value, outcome)  # now rather than after the linger
        self._lingering.clear()

    async def close(self, grace: float = 10.0) -> None:
        self.closed = True


class TwinTransactionalProducer(TwinProducer):
    """A transactional producer: records sent go into the open transaction (``open``) and become visible in
    ``sent`` only when it commits, together with its offsets (into the consumer's ``committed``); an abort drops
    them. ``fail_commits`` commits are refused (then the engine aborts). ``sends_while_committing`` counts
    records sent while a commit was under way (the engine's gate must keep it at 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[tuple[str, tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]]] = []
        self.consumer: TwinConsumer | None = None
        self.fail_commits = 0
        self.commit_delay = 0.0
        self.committed = 0
        self.aborted = 0
        self.sends_while_committing = 0
        self._committing = False

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any = (), *, alone: bool = False
    ) -> Ack:
        self.sends_while_committing += self._committing
        before = len(self.sent[topic])
        future = super().send(topic, value, key, headers)
        if len(self.sent[topic]) > before:  # taken: in the transaction, not visible yet
            self.open.append((topic, self.sent[topic].pop()))
        return future

    async def start(self) -> None:
        pass

    async def commit(self, points: Mapping[TP, CommitPoint], group_metadata: object | None) -> None:
        self._committing = True
        try:
            if self.commit_delay:
                await asyncio.sleep(self.commit_delay)
            if self.fail_commits:
                self.fail_commits -= 1
                raise Aborted(KafkaException(RdKafkaError(RdKafkaError.CONCURRENT_TRANSACTIONS, "twin refuses")))
            assert group_metadata == "twin-group-metadata"
            for topic, record in self.open:
                self.sent[topic].append(record)
            self.open.clear()
            assert self.consumer is not None
            self.consumer.committed.update(points)
            self.committed += 1
        finally:
            self._committing = False

    async def abort(self, why: str | Aborted) -> None:
        self.open.clear()
        self.aborted += 1

    @property
    def clash(self) -> str | None:
        return None

    def fit_batches(self, limit: int) -> None:
        pass

    def status(self) -> dict[str, object]:
        return {"committed": self.committed, "aborted": self.aborted}


@dataclass
class ScriptedCaller:
    """Answers each event with ``answer(event, attempt)`` (attempt counts from 1), after ``delay`` seconds."""

    answer: Callable[[Event, int], Reply | Awaitable[Reply]]
    delay: float = 0.0
    calls: list[list[Event]] = field(default_factory=list)
    attempts: dict[tuple[str, int, int], int] = field(default_factory=lambda: defaultdict(int))
    in_flight: int = 0
    most_in_flight: int = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, events: Sequence[Event]) -> list[Reply]:
        self.calls.append(list(events))
        self.in_flight += len(events)
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            replies = []
            for event in events:
                ident = (event.topic, event.partition, event.offset)
                self.attempts[ident] += 1
                reply = self.answer(event, self.attempts[ident])
                replies.append(await reply if isinstance(reply, Awaitable) else reply)
            return replies
        finally:
            self.in_flight -= len(events)

    def called(self) -> list[Event]:
        return [event for call in self.calls for event in call]


def echo(event: Event, attempt: int) -> Reply:
    return Reply.success(event.value)


def pipeline_config(**overrides: Any) -> PipelineConfig:
    spec: dict[str, Any] = {
        "consume": {"topics": [TOPIC], "group": "g"},
        "call": {"url": "python:twin:handler", "timeout": "1s"},
        "publish": {"topic": "out"},
        "dead_letter": {"topic": "dlq"},
        "retry": {"attempts": 3, "initial_backoff": "1ms", "max_backoff": "5ms"},
        "commit_interval": "10ms",
        "shutdown_timeout": "1s",
    }
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return PipelineConfig.model_validate(spec)


class Rig:
    """A pipeline on the twin: start it, wait for what a test needs, stop it."""

    def __init__(
        self,
        logs: Mapping[TP, list[Message]],
        caller: ScriptedCaller,
        config: PipelineConfig | None = None,
        *,
        source: Source | None = None,
        committed: Mapping[TP, CommitPoint] | None = None,
        budget: int | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config or pipeline_config()
        self.caller = caller
        publish = self.config.publish
        exactly = publish is not None and publish.exactly_once
        self.producer = TwinTransactionalProducer() if exactly else TwinProducer()
        self.consumer: TwinConsumer | None = None
        self._logs = logs

        def consumer_factory(
            settings: Mapping[str, Any], topics: list[str], listener: ConsumerListener, loop: Any, **kw: Any
        ) -> TwinConsumer:
            self.consumer = TwinConsumer(
                self._logs, listener, loop, assignment=kw.get("assignment"), committed=committed
            )
            if isinstance(self.producer, TwinTransactionalProducer):
                self.producer.consumer = self.consumer
            return self.consumer

        self.pipeline = Pipeline(
            "p",
            self.config,
            KafkaConfig(bootstrap_servers="twin:9092"),
            caller,
            self.producer,  # type: ignore[arg-type]
            source=source,
            tracing=tracing,
            consumer_factory=consumer_factory,  # type: ignore[arg-type]
            metadata_budget=BUDGET if budget is None else budget,
        )
        self.stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Rig:
        self._task = asyncio.create_task(self.pipeline.run(self.stop))
        await self.until(lambda: self.consumer is not None and bool(self.pipeline.assigned), "the assignment")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)

    async def until(self, condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
        """Wait (bounded) until ``condition`` holds; the engine has no event for each of these, so poll briskly."""
        async with asyncio.timeout(within):
            while not condition():
                if self._task is not None and self._task.done():
                    self._task.result()
                await asyncio.sleep(0.001)

    def out(self, topic: str = "out") -> list[bytes]:
        return [value or b"" for _, value, _ in self.producer.sent[topic]]

    def committed(self, tp: TP) -> int | None:
        assert self.consumer is not None
        point = self.consumer.committed.get(tp)
        return None if point is None else point.offset

    def commit_point(self, tp: TP) -> CommitPoint | None:
        assert self.consumer is not None
        return self.consumer.committed.get(tp)
