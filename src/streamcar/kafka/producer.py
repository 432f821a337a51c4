"""An idempotent, acks=all confluent-kafka Producer whose deliveries are asyncio futures.

A dedicated thread serves delivery reports (``poll``) and resolves each record's future on the loop, so the
engine can ``await`` the broker's acknowledgement of a reply or dead letter before it counts the input as done.

``linger.ms`` lets records wait to share a batch, which under load is what makes publishing cheap. But when the
engine knows that no other record is coming soon (no call is in progress, nothing else awaits the broker) and
that the next message may be waiting for these (one at a time per partition), waiting out the linger only adds
latency: a fifth of each
cycle at a 20 ms service. :meth:`AsyncProducer.hurry` has a second thread call ``flush``, which makes librdkafka
send what is queued without lingering and serves the delivery reports until it was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Self

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException, Message, Producer

from streamcar.event import Headers
from streamcar.kafka.errors import produce_failure_is_permanent
from streamcar.kafka.rdlog import KafkaLog
from streamcar.kafka.records import producible, safe_bytes
from streamcar.kafka.settings import PRODUCER_DEFAULTS

log = logging.getLogger("streamcar.kafka.producer")
Ack = asyncio.Future[Message]
TOPIC_ERRORS = frozenset(
    {
        RdKafkaError.UNKNOWN_TOPIC_OR_PART,
        RdKafkaError._UNKNOWN_TOPIC,
        RdKafkaError._UNKNOWN_PARTITION,
        RdKafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)
FLUSH_WAIT = 1.0
"""Seconds a flush of a lone record waits for its acknowledgement (the poller serves it after that)."""


class ProduceError(Exception):
    """A record was not acknowledged; ``permanent`` says whether producing it again can succeed."""

    def __init__(self, error: RdKafkaError) -> None:
        super().__init__(error.str())
        self.error = error
        self.permanent = produce_failure_is_permanent(error)
        self.of_topic = error.code() in TOPIC_ERRORS
        """Because of the topic, not the record: it does not exist, or we may not write it."""
        self.too_large = error.code() == RdKafkaError.MSG_SIZE_TOO_LARGE
        """The broker refused the *batch* the record was in as too large for the topic: every record of that
        batch gets this error, so only a record sent alone (``send(alone=True)``) is known to be too large."""

    @classmethod
    def topic_refused(cls, text: str) -> Self:
        """A record refused because of its topic (it does not exist, or may not be written), in ``text``."""
        return cls(RdKafkaError(RdKafkaError.UNKNOWN_TOPIC_OR_PART, text))


class AsyncProducer:
    def __init__(self, config: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        conf: dict[str, Any] = dict(PRODUCER_DEFAULTS)
        conf.update(config)
        self._config = dict(conf)  # before its callbacks: what a second producer of the same settings needs
        self._alone: AsyncProducer | None = None
        conf["error_cb"] = self._error_cb
        conf.setdefault("logger", KafkaLog())  # one line per condition per interval, not per attempt
        self._producer = Producer(conf)
        self._loop = loop
        self._stopping = threading.Event()
        self._closed = False
        self._settled: list[tuple[asyncio.Future[Message], RdKafkaError | None, Message]] = []
        self._backlog: deque[tuple[asyncio.Future[Message], str, bytes | None, bytes | None, Headers]] = deque()
        self._feeder: asyncio.Task[None] | None = None
        self._hurry = threading.Event()  # flush what is queued now
        self._awaited = 0  # records handed over and not yet settled on the loop
        self._swap = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="producer-poll", daemon=True)
        self._thread.start()
        self._flusher = threading.Thread(target=self._flush_alone, name="producer-flush", daemon=True)
        self._flusher.start()

    @property
    def client(self) -> Producer:
        """librdkafka's producer itself (for the transaction calls of TransactionalProducer)."""
        return self._producer

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self._producer.poll(0.05)
            except KafkaException:  # a transactional producer's fatal error: its owner replaces it
                self._stopping.wait(0.05)
            self._post_settled()

    def _flush_alone(self) -> None:
        while not self._stopping.is_set():
            if not self._hurry.wait(0.5):
                continue
            self._hurry.clear()
            with contextlib.suppress(KafkaException):  # as in _serve
                self._producer.flush(FLUSH_WAIT)  # serves the delivery reports too: post what it served
            self._post_settled()

    def _post_settled(self) -> None:
        # One wake-up of the loop per poll round instead of one per record: at thousands of deliveries a second
        # the per-record call_soon_threadsafe (a pipe write and a GIL hand-over each) was a fifth of the CPU.
        # Swapping the list is safe against a concurrent append: that lands in the list we now hold. Two threads
        # serve reports (the poller and the flusher): the lock keeps their swaps apart.
        with self._swap:
            settled, self._settled = self._settled, []
        if settled:
            self._loop.call_soon_threadsafe(self._settle_all, settled)

    def _settle_all(self, settled: list[tuple[asyncio.Future[Message], RdKafkaError | None, Message]]) -> None:
        self._awaited -= len(settled)
        _settle_all(settled)

    def hurry(self, mine: int) -> None:
        """Send what is queued now rather than after ``linger.ms``, if the ``mine`` records just sent are all
        that awaits the broker (nothing else will join their batch soon). While others await it, the pipeline
        is busy and the linger is what batches it."""
        if self._awaited <= mine:
            self._hurry.set()

    def _error_cb(self, error: RdKafkaError) -> None:
        if error.fatal():
            log.error("producer fatal error: %s", error.str())
        else:
            log.debug("producer: %s", error.str())

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = (), *, alone: bool = False
    ) -> Ack:
        """Hand one record to librdkafka now and return the future of its acknowledgement.

        Records reach librdkafka in the order of ``send`` calls, and the idempotent producer keeps that order per
        partition: the engine relies on it to publish a key's replies in offset order without waiting for each
        acknowledgement in turn. When librdkafka's local queue is full the record (and every later one, to keep
        the order) waits in a backlog that a task feeds in as the queue drains. The future fails with
        :class:`ProduceError`.

        ``alone``: through a second producer that puts one record in each batch (created on first use), to tell a
        record that is too large for its topic from the records that shared its batch.
        """
        if alone:
            if self._alone is None:
                self._alone = AsyncProducer({**self._config, "batch.num.messages": 1, "linger.ms": 0}, self._loop)
            return self._alone.send(topic, value, key, headers)
        future: asyncio.Future[Message] = self._loop.create_future()
        if self._backlog:
            self._backlog.append((future, topic, value, key, headers))
            return future
        try:
            self._enqueue(future, topic, value, key, headers)
        except BufferError:
            self._backlog.append((future, topic, value, key, headers))
            self._feeder = self._loop.create_task(self._feed_backlog())
        return future

    async def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = ()) -> Message:
        """Produce one record and wait for the broker's acknowledgement; raises :class:`ProduceError`."""
        return await self.send(topic, value, key, headers)

    def _enqueue(
        self, future: asyncio.Future[Message], topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> None:
        def on_delivery(err: RdKafkaError | None, msg: Message) -> None:
            self._settled.append((future, err, msg))  # the list of the moment: _post_settled swaps it

        if value is not None and type(value) is not bytes:
            value = safe_bytes(value)
        if key is not None and type(key) is not bytes:
            key = safe_bytes(key)
        try:
            self._producer.produce(
                topic, value=value, key=key, headers=producible(headers) if headers else None, on_delivery=on_delivery
            )
            self._awaited += 1
        except KafkaException as exc:
            future.set_exception(ProduceError(exc.args[0]))
        except (TypeError, ValueError) as exc:  # not a record librdkafka can take, whatever we retry
            future.set_exception(ProduceError(RdKafkaError(RdKafkaError.INVALID_RECORD, f"not producible: {exc}")))

    async def _feed_backlog(self) -> None:
        backlog = self._backlog
        while backlog:
            future, topic, value, key, headers = backlog[0]
            try:
                self._enqueue(future, topic, value, key, headers)
            except BufferError:  # still full: wait for deliveries to drain it
                await asyncio.sleep(0.005)
                continue
            backlog.popleft()

    async def close(self, grace: float = 10.0) -> None:
        """Hand what is queued to the broker for at most ``grace`` seconds in all, then free librdkafka; records
        not acknowledged by then fail (their inputs are not done, so they are redone after a restart). Closing
        again does nothing."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + grace
        if self._alone is not None:
            await self._alone.close(grace / 2)
        if self._feeder is not None and not self._feeder.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._feeder), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("%d records were still waiting for librdkafka's queue at shutdown", len(self._backlog))
            self._feeder.cancel()
        try:
            remaining = await asyncio.to_thread(self._producer.flush, max(0.0, deadline - time.monotonic()))
        except KafkaException:  # a transactional producer's fatal error: what it holds is never committed
            remaining = len(self._producer)
        if remaining:
            log.warning("%d records were not acknowledged before shutdown", remaining)
            # dropped from librdkafka's queues now (their futures fail): else freeing the producer waits for
            # them, e.g. for a topic that does not exist, and the process outlives its shutdown budget
            self._producer.purge()
            self._producer.poll(0)  # serves the purged records' reports
        self._post_settled()
        self._stopping.set()
        self._hurry.set()
        await asyncio.to_thread(self._thread.join, 1)
        await asyncio.to_thread(self._flusher.join, FLUSH_WAIT + 1)
        self._producer.close()  # frees librdkafka now, not whenever the garbage collector gets to it


def _settle_all(settled: list[tuple[asyncio.Future[Message], RdKafkaError | None, Message]]) -> None:
    for future, err, msg in settled:
        if future.done():
            continue
        if err is not None:
            future.set_exception(ProduceError(err))
        else:
            future.set_result(msg)
