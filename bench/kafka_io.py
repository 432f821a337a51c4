"""The benchmarks' Kafka plumbing: topics, input records (all at once, or paced for latency), reading outputs.

Every input value starts with a tag and a 9-digit id (``T000000042xxxx``): the echo services return it as is, so
an output record names the input it answers. ``T`` records measure throughput (pre-produced, then drained as fast
as possible); ``L`` records measure latency (produced at a steady rate well below capacity). Input and output
topics stamp records with the broker's LogAppendTime, so a latency is the time from the input's append to its
reply's append, measured on one clock and untouched by the producers' start-up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.processes import BenchFailed, Watched, check_all, wait_until
from streamcar.devkafka import LocalKafka

THROUGHPUT, LATENCY = b"T", b"L"


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    pid: int | None
    """The broker JVM's, where the bench started it (its CPU is measured)."""


@contextmanager
def broker(workdir: Path, bootstrap: str | None) -> Iterator[Broker]:
    """The Kafka a bench runs on: the one at ``bootstrap`` (``--bootstrap``), or else a single local broker of the
    bench's own in ``workdir``, stopped when the block ends (and killed with the bench, should it die)."""
    if bootstrap is not None:
        yield Broker(bootstrap, None)
        return
    cluster = LocalKafka(workdir / "kafka")
    try:
        layout = cluster.start(nodes=1, port=0, heap="1g", timeout=120, die_with_parent=True)
        yield Broker(layout.bootstrap, next((node.pid for node in cluster.status() if node.pid is not None), None))
    finally:
        cluster.stop(timeout=30)


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    """Creates the topic and waits until every partition has a leader: a reader assigned the partitions the
    metadata lists at once may find none on a busy broker, and then waits for records it will never read."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"message.timestamp.type": "LogAppendTime"}
    admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)

    def led() -> bool:
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if topic is None or topic.error is not None or len(topic.partitions) != partitions:
            return False
        return all(p.leader >= 0 for p in topic.partitions.values())

    wait_until(f"leader for each of the {partitions} partitions of {name}", led, timeout=30, every=0.1)


def value(tag: bytes, i: int, size: int) -> bytes:
    head = tag + b"%09d" % i
    return head + b"x" * max(0, size - len(head))


def _produce(producer: Producer, topic: str, key: bytes, payload: bytes) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=payload)
            return
        except BufferError:
            producer.poll(0.05)


def produce_input(bootstrap: str, topic: str, n: int, size: int, *, keys: int = 1000, batch: int = 10_000) -> None:
    """``n`` records, in producer batches of at most ``batch`` (librdkafka's ``batch.num.messages``)."""
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}
    producer = Producer({**settings, "batch.num.messages": batch})
    for i in range(n):
        _produce(producer, topic, f"key-{i % keys}".encode(), value(THROUGHPUT, i, size))
    assert producer.flush(120) == 0


def produce_paced(bootstrap: str, topic: str, n: int, rate: float, size: int) -> None:
    """``n`` latency records at ``rate`` a second."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": True})
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            producer.poll(delay)
        _produce(producer, topic, f"key-{i % 1000}".encode(), value(LATENCY, i, size))
        producer.poll(0)
    assert producer.flush(60) == 0


@dataclass
class Outputs:
    """What reached a topic, by tag: each input id (first seen) and its record's timestamp (ms)."""

    stamps: dict[bytes, dict[int, float]]

    def span(self, tag: bytes) -> float:
        """Seconds from the first to the last output of ``tag``."""
        times = self.stamps[tag].values()
        return max((max(times) - min(times)) / 1000, 1e-3)


class OutputReader:
    """Reads an output topic from the start, incrementally, as the scenario goes."""

    def __init__(self, bootstrap: str, topic: str, *, seen: bool = False) -> None:
        """``seen``: stamp each output with when this reader got it (read_committed: when its transaction
        committed), not with when it was written."""
        settings = {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"}
        self._consumer = Consumer({**settings, "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        self._seen = seen
        partitions = self._consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
        if not partitions:
            raise BenchFailed(f"no partitions of {topic} to read")
        self._consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        self.outputs = Outputs({THROUGHPUT: {}, LATENCY: {}})
        self._topic = topic

    def wait(
        self,
        tag: bytes,
        n: int,
        timeout: float = 600.0,
        progress: Callable[[int], None] | None = None,
        *,
        watch: Iterable[Watched] = (),
        stall: float = 60.0,
    ) -> Outputs:
        """Until ``n`` distinct inputs of ``tag`` were answered; ``progress`` hears the count after every read (a few
        times a second at least, so a CPU meter can take its readings between two of them). Fails as soon as one
        of ``watch`` (what writes the outputs) is gone, after ``timeout`` seconds, or after ``stall`` seconds
        without a new answer."""
        seen = self.outputs.stamps[tag]
        deadline = time.monotonic() + timeout
        count, moved = len(seen), time.monotonic()
        while len(seen) < n:
            check_all(watch)
            now = time.monotonic()
            if len(seen) > count:
                count, moved = len(seen), now
            if now > deadline or now - moved > stall:
                why = f"within {timeout:.0f} s" if now > deadline else f"none for the last {stall:.0f} s"
                raise BenchFailed(f"only {len(seen)} of {n} {tag.decode()} records reached {self._topic} ({why})")
            # consume(n, timeout) waits for n records or the timeout: take the first as it comes, then the rest
            found = self._consumer.consume(num_messages=1, timeout=0.1)
            if found:
                found += self._consumer.consume(num_messages=2000, timeout=0)
            for msg in found:
                payload = msg.value()
                if msg.error() is None and payload:
                    stamps = self.outputs.stamps.setdefault(payload[:1], {})
                    stamp = time.time() * 1000 if self._seen else float(msg.timestamp()[1])
                    stamps.setdefault(int(payload[1:10]), stamp)
            if progress is not None:
                progress(len(seen))
        return self.outputs

    def close(self) -> None:
        self._consumer.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
