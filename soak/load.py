"""The soak's input: a steady keyed stream, produced on a thread of its own (acks=all, idempotent).

Record ``n`` (0, 1, 2, ...) has the value ``n`` in decimal, which the service reads to know the records it always
refuses, and a key drawn from ``keys`` keys (``k0`` ...) by a random source seeded by the soak. The records due
by now (``rate`` a second since the start) are handed to the producer every 10 ms; while the producer's queue is
full (a partition's leader just died), the stream falls behind and catches up once it drains.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from confluent_kafka import Producer

TICK = 0.01
FLUSH = 90.0
"""Seconds the last records get to be acknowledged at the stop (a leader election takes about 10)."""


class Load(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, *, rate: float, keys: int, seed: int) -> None:
        super().__init__(name="soak-load", daemon=True)
        self._settings = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "log_level": 0,
        }
        self._topic, self._rate, self._keys = topic, rate, keys
        self._rng = random.Random(seed)
        self._halt = threading.Event()
        self.produced = 0
        self.acknowledged = 0
        self.failed: list[str] = []
        self.unflushed = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def _produce(self) -> None:
        producer = Producer(self._settings)
        start = time.monotonic()
        while not self._halt.is_set():
            due = int((time.monotonic() - start) * self._rate)
            while self.produced < due and not self._halt.is_set():
                key = f"k{self._rng.randrange(self._keys)}".encode()
                try:
                    producer.produce(self._topic, key=key, value=b"%d" % self.produced, on_delivery=self._delivered)
                except BufferError:  # the queue is full: let deliveries drain it
                    producer.poll(0.1)
                    continue
                self.produced += 1
            producer.poll(0)
            self._halt.wait(TICK)
        self.unflushed = producer.flush(FLUSH)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.acknowledged += 1
        elif len(self.failed) < 10:
            self.failed.append(str(err))

    def stop(self) -> None:
        """Stop producing and wait (bounded) until what was produced is acknowledged."""
        self._halt.set()
        self.join(FLUSH + 10)
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure
