"""The soak's questions to the cluster: topics made, who leads a partition, what a group holds and committed, and
every record of a topic read back. Every call is bounded; a question the cluster cannot answer now (a node just
died) answers "nothing known" and is asked again by the caller's loop."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

T = TypeVar("T")
QUIET = {"log_level": 0}
"""The soak's own clients say nothing of the brokers the nemesis kills."""


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **QUIET})


def create(bootstrap: str, topics: Mapping[str, int], *, replication: int = 3, timeout: float = 60.0) -> None:
    """Create the topics (name -> partitions) and wait until every partition has a leader."""
    client = admin(bootstrap)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=replication) for name, n in topics.items()],
        operation_timeout=timeout,
    )
    for future in futures.values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while not all(_led(client, name, n) for name, n in topics.items()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the soak's topics have no leaders after {timeout:.0f}s")
        time.sleep(0.2)


def _led(client: AdminClient, topic: str, partitions: int) -> bool:
    try:
        meta = client.list_topics(topic=topic, timeout=5).topics[topic]
    except KafkaException:
        return False
    return (
        meta.error is None
        and len(meta.partitions) == partitions
        and all(p.leader >= 0 for p in meta.partitions.values())
    )


def leader(bootstrap: str, topic: str, partition: int) -> int | None:
    """The node leading ``topic``'s ``partition``; None when the metadata does not say now."""
    try:
        meta = admin(bootstrap).list_topics(topic=topic, timeout=5).topics[topic].partitions
    except KafkaException:
        return None
    found = meta.get(partition)
    return found.leader if found is not None and found.leader >= 0 else None


def answers(address: str) -> bool:
    """Whether the node at ``address`` itself answers a metadata request (the cluster's metadata still lists a
    dead node until its broker session ends)."""
    try:
        admin(address).list_topics(timeout=3)
    except KafkaException:
        return False
    return True


def in_sync(bootstrap: str, topic: str) -> bool:
    """Whether every partition of ``topic`` has a leader and all its replicas in sync (a node started again has
    caught up); False when the metadata does not say now."""
    try:
        meta = admin(bootstrap).list_topics(topic=topic, timeout=5).topics[topic]
    except KafkaException:
        return False
    partitions = meta.partitions.values()
    return bool(partitions) and all(p.leader >= 0 and len(p.isrs) == len(p.replicas) for p in partitions)


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Every partition's high watermark."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-probe", **QUIET})
    try:
        partitions = probe.list_topics(topic=topic, timeout=10).topics[topic].partitions
        return {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        probe.close()


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic``; empty when the coordinator does not answer now."""
    client = admin(bootstrap)
    try:
        result = client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(15)
    except (KafkaException, TimeoutError):
        return {}
    return {tp.partition: tp.offset for tp in result.topic_partitions if tp.topic == topic and tp.offset >= 0}


def held(bootstrap: str, group: str) -> set[int]:
    """The partitions the group's members hold now (empty when the coordinator does not answer)."""
    client = admin(bootstrap)
    try:
        description = client.describe_consumer_groups([group])[group].result(15)
    except (KafkaException, TimeoutError):
        return set()
    return {
        tp.partition for member in description.members if member.assignment for tp in member.assignment.topic_partitions
    }


def read(bootstrap: str, topic: str, parse: Callable[[Any], T], *, timeout: float, committed: bool = True) -> list[T]:
    """``parse`` of every record of ``topic``, read ``read_committed`` (else every record, those of aborted
    transactions too) up to each partition's high watermark now.

    Up to the true end, not the last stable offset: a transaction still open (a killed member's, until the
    broker's transaction timeout aborts it) holds the read back rather than ending it early.
    """
    settings = {"bootstrap.servers": bootstrap, "group.id": f"soak-read-{uuid.uuid4().hex}", **QUIET}
    isolation = "read_committed" if committed else "read_uncommitted"
    consumer = Consumer(
        {**settings, "enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": isolation}
    )
    try:
        todo = {p: high for p, high in ends(bootstrap, topic).items() if high > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in todo])
        got: list[T] = []
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to their end within {timeout:.0f}s")
            got += [parse(m) for m in consumer.consume(num_messages=10000, timeout=0.5) if m.error() is None]
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
        return got
    finally:
        consumer.close()
