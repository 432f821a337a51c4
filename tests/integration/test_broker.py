"""The local Kafka is a real Apache Kafka: clients, partitions, group offsets and an independent client agree."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from support import KafkaHandle, TopicFactory

pytestmark = pytest.mark.integration


def produce_all(
    producer: Producer,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes]],
    *,
    partition: int = -1,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    failures: list[str] = []

    def on_delivery(err: object, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in records:
        producer.produce(topic, value=value, key=key, partition=partition, headers=headers, on_delivery=on_delivery)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} records not delivered within 30 s"
    assert failures == []


def consume_n(consumer: Consumer, n: int, timeout: float = 30.0) -> list[Message]:
    import time

    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=n - len(got), timeout=0.5):
            assert msg.error() is None, msg.error()
            got.append(msg)
    assert len(got) == n, f"consumed {len(got)} of {n} records within {timeout} s"
    return got


def test_produce_and_consume_round_trip(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    topic = topic_factory(partitions=1)
    records = [(f"k{i}".encode(), f"value-{i}".encode()) for i in range(50)]
    produce_all(kafka.producer(), topic, records, headers=[("content-type", b"text/plain")])

    consumer = kafka.consumer(group_factory())
    consumer.subscribe([topic])
    got = consume_n(consumer, 50)

    assert [(m.key(), m.value()) for m in got] == records
    assert [m.offset() for m in got] == list(range(50))
    assert got[0].headers() == [("content-type", b"text/plain")]


def test_topic_with_several_partitions_spreads_keys(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    topic = topic_factory(partitions=6)
    metadata = kafka.admin().list_topics(topic=topic, timeout=10)
    assert sorted(metadata.topics[topic].partitions) == [0, 1, 2, 3, 4, 5]

    records = [(f"key-{i % 40}".encode(), str(i).encode()) for i in range(400)]
    produce_all(kafka.producer(), topic, records)
    consumer = kafka.consumer(group_factory())
    consumer.subscribe([topic])
    got = consume_n(consumer, 400)

    partitions_by_key: dict[bytes, set[int]] = {}
    for msg in got:
        key = msg.key()
        assert key is not None
        partition = msg.partition()
        assert partition is not None
        partitions_by_key.setdefault(key, set()).add(partition)
    # the default partitioner hashes keys: one partition per key, and 40 keys land on more than one partition
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    assert len({p for parts in partitions_by_key.values() for p in parts}) > 1
    # per partition, offsets come in order
    for partition in range(6):
        offsets = [m.offset() or 0 for m in got if m.partition() == partition]
        assert offsets == sorted(offsets)


def test_group_offset_is_committed_and_read_back(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    topic = topic_factory(partitions=2)
    group = group_factory()
    produce_all(kafka.producer(), topic, [(None, b"x")] * 10, partition=1)

    consumer = kafka.consumer(group)
    consumer.assign([TopicPartition(topic, 1, 0)])
    consume_n(consumer, 7)
    consumer.commit(offsets=[TopicPartition(topic, 1, 7)], asynchronous=False)
    consumer.close()

    # read back through an independent path: the admin API, then a fresh consumer of the group
    admin = kafka.admin()  # keep a reference: the futures die with their client
    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    committed = {(tp.topic, tp.partition): tp.offset for tp in futures[group].result(timeout=30).topic_partitions}
    assert committed == {(topic, 1): 7}

    fresh = kafka.consumer(group)
    fresh.subscribe([topic])
    rest = consume_n(fresh, 3)
    assert [m.offset() for m in rest] == [7, 8, 9]


def test_kcat_reads_what_confluent_kafka_wrote(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        if os.environ.get("CI"):
            pytest.fail("kcat must be installed in CI (scripts/ensure-test-tools.sh installs it)")
        pytest.skip("kcat is not installed (scripts/ensure-test-tools.sh installs it)")
    topic = topic_factory(partitions=3)
    records = [(f"user-{i % 7}".encode(), f"payload {i}".encode()) for i in range(90)]
    produce_all(kafka.producer(), topic, records)

    out = subprocess.run(
        [kcat, "-b", kafka.bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p\t%o\t%k\t%s\n"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert sorted((k, v) for _, _, k, v in rows) == sorted((k.decode(), v.decode()) for k, v in records)
    # kcat sees per-partition offsets 0..n-1 with no gaps
    for partition in {p for p, _, _, _ in rows}:
        offsets = [int(o) for p, o, _, _ in rows if p == partition]
        assert offsets == list(range(len(offsets)))


def test_producing_to_a_stopped_broker_fails_fast(kafka: KafkaHandle) -> None:
    """A guard against a fake: an address nothing listens on must not 'succeed'."""
    from streamcar.devkafka import free_ports

    producer = Producer({"bootstrap.servers": f"127.0.0.1:{free_ports(1)[0]}", "message.timeout.ms": 1500})
    errors: list[object] = []
    producer.produce("nowhere", b"x", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(10)
    assert len(errors) == 1
    assert errors[0] is not None
    with pytest.raises(KafkaException):
        Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}).list_topics(timeout=1)
