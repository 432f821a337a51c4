"""Helpers shared by the tests: a handle on a running local Kafka, topic creation, bounded waits."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streamcar.devkafka import LocalKafka
from streamcar.kafka.groups import await_coordinator


@dataclass
class KafkaHandle:
    """A running local Kafka and helpers to talk to it; clients made here are closed at teardown."""

    cluster: LocalKafka
    bootstrap: str
    _consumers: list[Consumer] = field(default_factory=list)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def producer(self, **overrides: Any) -> Producer:
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 5}
        config.update(overrides)
        return Producer(config)

    def consumer(self, group: str, **overrides: Any) -> Consumer:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
        config.update(overrides)
        consumer = Consumer(config)
        self._consumers.append(consumer)
        return consumer

    def close_clients(self) -> None:
        for consumer in self._consumers:
            with contextlib.suppress(RuntimeError):  # already closed by the test
                consumer.close()
        self._consumers.clear()


class TopicFactory(Protocol):
    def __call__(
        self,
        partitions: int = 3,
        *,
        replication: int = 1,
        config: dict[str, str] | None = None,
        on: KafkaHandle | None = None,
    ) -> str: ...


KEEP_FOREVER = {"retention.ms": "-1"}
"""Topic config for records with timestamps in the past: under the default retention (7 days) the broker's
retention check, every 5 minutes, deletes them all mid-test (a CI run lost a 3-partition topic that way)."""


def create_topic(
    handle: KafkaHandle, name: str, partitions: int, replication: int, config: dict[str, str] | None = None
) -> None:
    """Create a topic and wait until every partition has a leader (bounded)."""
    admin = handle.admin()
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication, config=config or {})],
        operation_timeout=30,
    )
    futures[name].result(timeout=60)
    wait_for(lambda: _leaders_ready(admin, name, partitions), timeout=30, what=f"leaders for {partitions} partitions")


def _leaders_ready(admin: AdminClient, name: str, partitions: int) -> bool:
    topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
    if topic is None or topic.error is not None or len(topic.partitions) != partitions:
        return False
    return all(p.leader >= 0 for p in topic.partitions.values())


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_topic(handle: KafkaHandle, topic: str, *, expect: int, timeout: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, waiting (bounded) until at least ``expect`` arrived."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": handle.bootstrap, "group.id": "reader", "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                if msg.error() is None:
                    got.append(msg)
        # records beyond ``expect`` (duplicates) that are already there are read too
        for msg in consumer.consume(num_messages=100000, timeout=0.5):
            if msg.error() is None:
                got.append(msg)
        return got
    finally:
        consumer.close()


RecordHeaders = list[tuple[str, str | bytes | None]]


def produce_records(
    handle: KafkaHandle,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, RecordHeaders]],
    *,
    headers: RecordHeaders | None = None,
    partition: int = -1,
) -> None:
    """Produce ``(key, value)`` or ``(key, value, headers)`` records; wait until all are acknowledged (bounded)."""
    producer = handle.producer(**{"linger.ms": 20, "enable.idempotence": True})
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for record in records:
        key, value = record[0], record[1]
        own = record[2] if len(record) == 3 else headers
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=own, partition=partition, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "records not acknowledged within 60 s"
    assert failures == [], failures


_COORDINATOR_BUSY = {
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
}


def committed(handle: KafkaHandle, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offset per (topic, partition), asked by a consumer of the group that never joins it.

    Not through the admin API: librdkafka 2.16's ListConsumerGroupOffsets crashes the process when the answer is
    NOT_COORDINATOR (rd_kafka_handle_OffsetFetch asks the admin client's consumer group, which is NULL, to find
    the coordinator: confluent-kafka-python#1982). The broker answered so while an exactly-once sidecar aborted
    transaction after transaction, and the whole pytest worker died with SIGSEGV."""
    from confluent_kafka import TopicPartition

    await_coordinator({"bootstrap.servers": handle.bootstrap}, group, 30)  # see streamcar.kafka.groups
    # read_uncommitted: the last offsets committed, without waiting for an open transaction's (require_stable)
    settings = {"bootstrap.servers": handle.bootstrap, "group.id": group, "isolation.level": "read_uncommitted"}
    consumer = Consumer({**settings, "enable.auto.commit": False})
    deadline = time.monotonic() + 30
    try:
        topics = consumer.list_topics(timeout=10).topics
        query = [TopicPartition(t, p) for t, meta in topics.items() if not t.startswith("__") for p in meta.partitions]
        while True:
            try:
                found = consumer.committed(query, timeout=30) if query else []
                break
            except KafkaException as exc:  # a coordinator still loading the offsets of a fresh broker: ask again
                error = exc.args[0]
                if not (error.retriable() or error.code() in _COORDINATOR_BUSY) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None and tp.offset >= 0}


def committed_total(handle: KafkaHandle, group: str) -> int:
    return sum(committed(handle, group).values())


def topic_offsets(handle: KafkaHandle, topic: str) -> list[tuple[int, int]]:
    """Every (partition, offset) the topic holds, from its low to its high watermark."""
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": handle.bootstrap, "group.id": "probe"})
    try:
        pairs = []
        for p in consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            pairs += [(p, o) for o in range(low, high)]
        return pairs
    finally:
        consumer.close()
