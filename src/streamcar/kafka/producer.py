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
        self._thread = threading.Thread(target=self._serve, name="producer-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    def _error_cb(self, error: KafkaError) -> None:
        if error.fatal():
            log.error("producer fatal error: %s", error.str())
        else:
            log.debug("producer: %s", error.str())

    async def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = ()) -> Message:
        """Produce one record and wait for the broker's acknowledgement; raises :class:`ProduceError`."""
        future: asyncio.Future[Message] = self._loop.create_future()
        loop = self._loop

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, err, msg)

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

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for outstanding deliveries; returns how many are still outstanding."""
        return self._producer.flush(timeout)

    async def close(self, grace: float = 10.0) -> None:
        remaining = await asyncio.to_thread(self._producer.flush, grace)
        if remaining:
            log.warning("%d records were not acknowledged before shutdown", remaining)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join, 5)
        self._producer.close()  # frees librdkafka now, not whenever the garbage collector gets to it


def _settle(future: asyncio.Future[Message], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(ProduceError(err))
    else:
        future.set_result(msg)
