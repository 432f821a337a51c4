"""The 3-node local cluster survives losing a node: acks=all produce still succeeds with min.insync.replicas 2."""

from __future__ import annotations

import signal

import pytest
from confluent_kafka import KafkaException, Message

from support import KafkaHandle, TopicFactory, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def _deliver(handle: KafkaHandle, topic: str, values: list[bytes]) -> list[Message]:
    producer = handle.producer(**{"enable.idempotence": True, "message.timeout.ms": 30000})
    delivered: list[Message] = []
    errors: list[str] = []

    def on_delivery(err: object, msg: Message) -> None:
        if err is None:
            delivered.append(msg)
        else:
            errors.append(str(err))

    for value in values:
        producer.produce(topic, value=value, partition=0, on_delivery=on_delivery)
    assert producer.flush(45) == 0
    assert errors == []
    return delivered


def test_acks_all_survives_a_killed_leader(kafka_cluster: KafkaHandle, topic_factory: TopicFactory) -> None:
    topic = topic_factory(partitions=1, replication=3, on=kafka_cluster)
    admin = kafka_cluster.admin()
    meta = admin.list_topics(topic=topic, timeout=10).topics[topic].partitions[0]
    assert sorted(meta.replicas) == [1, 2, 3]
    assert len(meta.isrs) == 3
    first = _deliver(kafka_cluster, topic, [b"before-%d" % i for i in range(100)])
    assert len(first) == 100

    leader = meta.leader
    kafka_cluster.cluster.kill_node(leader, signal.SIGKILL)
    assert kafka_cluster.cluster.pid(leader) is None

    def new_leader() -> bool:
        try:
            p = admin.list_topics(topic=topic, timeout=5).topics[topic].partitions[0]
        except KafkaException:  # the metadata request went to the dead node and timed out: ask again
            return False
        return p.leader not in (-1, leader)

    wait_for(new_leader, timeout=60, what="a new partition leader")
    after = _deliver(kafka_cluster, topic, [b"after-%d" % i for i in range(100)])
    assert len(after) == 100
    assert all((m.offset() or 0) >= 100 for m in after)

    # everything acknowledged is readable from the surviving replicas
    consumer = kafka_cluster.consumer("reader-" + topic)
    consumer.subscribe([topic])
    seen: list[bytes] = []

    def read_all() -> bool:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            assert msg.error() is None
            seen.append(msg.value() or b"")
        return len(seen) >= 200

    wait_for(read_all, timeout=60, what="200 records from the surviving nodes")
    assert seen == [m.value() for m in first + after]

    # the killed node comes back and rejoins the in-sync replicas
    kafka_cluster.cluster.start(nodes=3, timeout=120, die_with_parent=True)
    wait_for(
        lambda: len(admin.list_topics(topic=topic, timeout=5).topics[topic].partitions[0].isrs) == 3,
        timeout=90,
        what="the restarted node back in sync",
    )
