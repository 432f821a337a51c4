"""An idempotent, acks=all confluent-kafka Producer whose deliveries are asyncio futures.

A dedicated thread serves delivery reports (``poll``) and resolves each record's future on the loop, so the
engine can ``await`` the broker's acknowledgement of a reply or dead letter before it counts the input as done.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamcar.event import Headers

log = logging.getLogger("streamcar.kafka.producer")

# Errors that no amount of retrying fixes; everything else librdkafka already retried up to message.timeout.ms.
PERMANENT_PRODUCE_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.POLICY_VIOLATION,
    }
)


class ProduceError(Exception):
    """A record was not acknowledged; ``permanent`` says whether producing it again can succeed."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error
        self.permanent = error.code() in PERMANENT_PRODUCE_ERRORS or error.fatal()


class AsyncProducer:
    def __init__(self, config: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        conf: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
        }
        conf.update(config)
        conf["error_cb"] = self._error_cb
        conf.setdefault("logger", logging.getLogger("streamcar.librdkafka"))
        self._producer = Producer(conf)
        self._loop = loop
        self._stopping = threading.Event()
        self._settled: list[tuple[asyncio.Future[Message], KafkaError | None, Message]] = []
        self._thread = threading.Thread(target=self._serve, name="producer-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)
            self._post_settled()

    def _post_settled(self) -> None:
        # One wake-up of the loop per poll round instead of one per record: at thousands of deliveries a second
        # the per-record call_soon_threadsafe (a pipe write and a GIL hand-over each) was a fifth of the CPU.
        # Swapping the list is safe against a concurrent append: that lands in the list we now hold.
        settled, self._settled = self._settled, []
        if settled:
            self._loop.call_soon_threadsafe(_settle_all, settled)

    def _error_cb(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("producer fatal error: %s", error.str())
        else:
            log.debug("producer: %s", error.str())

    async def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = ()) -> Message:
        """Produce one record and wait for the broker's acknowledgement; raises :class:`ProduceError`."""
        future: asyncio.Future[Message] = self._loop.create_future()
        settled = self

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            settled._settled.append((future, err, msg))

        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=list(headers) or None, on_delivery=on_delivery
                )
                break
            except BufferError:  # the local queue is full: wait for deliveries to drain it
                await asyncio.sleep(0.005)
            except KafkaException as exc:
                raise ProduceError(exc.args[0]) from exc
        return await future

    async def close(self, grace: float = 10.0) -> None:
        remaining = await asyncio.to_thread(self._producer.flush, grace)
        self._post_settled()
        if remaining:
            log.warning("%d records were not acknowledged before shutdown", remaining)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, 5)
        self._producer.close()  # frees librdkafka now, not whenever the garbage collector gets to it


def _settle_all(settled: list[tuple[asyncio.Future[Message], KafkaError | None, Message]]) -> None:
    for future, err, msg in settled:
        if future.done():
            continue
        if err is not None:
            future.set_exception(ProduceError(err))
        else:
            future.set_result(msg)
