"""What the consumer thread asks the cluster besides records: where the previous owner of an assigned partition
left off (its done-ahead offsets), how far the assigned partitions' logs reach (for the lag) and whether the
cluster answers at all, and the nudge that makes a resumed partition fetch at once. All run on the consumer's
own thread, between two fetches.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from streamcar.kafka.rdlog import Reachability
from streamcar.kafka.records import TP, CommitPoint
from streamcar.kafka.starts import started_with

log = logging.getLogger("streamcar.kafka.consumer")

PROBE_TIMEOUT = 2.0
COMMITTED_TIMEOUT = 10.0


def committed_points(consumer: Consumer, partitions: list[TopicPartition], group: str) -> dict[TP, CommitPoint]:
    """What the group committed for ``partitions`` with metadata (the previous owner's done-ahead offsets),
    read before the first record is: without it those offsets are redone, which is safe but slow."""
    if not partitions:
        return {}
    try:
        found = consumer.committed(partitions, timeout=COMMITTED_TIMEOUT)
    except KafkaException as exc:
        log.warning(
            "%s: reading the committed offsets' metadata failed (%s): done-ahead offsets are redone",
            group,
            exc,
        )
        return {}
    return {
        (tp.topic, tp.partition): CommitPoint(tp.offset, _done_ahead(tp.metadata))
        for tp in found
        if tp.error is None and tp.offset >= 0 and _done_ahead(tp.metadata)
    }


def _done_ahead(metadata: str | None) -> str:
    """A commit's metadata as done-ahead offsets: "" for none, and for a start's marker
    (:mod:`streamcar.kafka.starts`: the group started there, nothing was done above it)."""
    if not metadata or started_with(metadata) is not None:
        return ""
    return metadata


def seek_committed(consumer: Consumer, tps: list[TP]) -> tuple[list[TP], dict[TP, CommitPoint], list[TP]]:
    """Move the assigned ones of ``tps`` back to what the group committed for them (an exactly-once
    transaction was aborted): those still assigned, their committed points (with metadata), and those with no
    committed offset (where they start is the caller's to decide)."""
    assigned = {(p.topic, p.partition) for p in consumer.assignment()}
    kept = [tp for tp in tps if tp in assigned]  # a revoke may have taken some meanwhile
    found = consumer.committed([TopicPartition(t, p) for t, p in kept], timeout=COMMITTED_TIMEOUT) if kept else []
    committed: dict[TP, CommitPoint] = {}
    missing: list[TP] = []
    for tp in found:
        key = (tp.topic, tp.partition)
        if tp.error is not None or tp.offset < 0:
            missing.append(key)
            continue
        committed[key] = CommitPoint(tp.offset, _done_ahead(tp.metadata))
        try:
            consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset))
        except KafkaException:  # not fetching yet: assign it again at that offset
            consumer.incremental_unassign([TopicPartition(tp.topic, tp.partition)])
            consumer.incremental_assign([TopicPartition(tp.topic, tp.partition, tp.offset)])
    return kept, committed, missing


def look_around(
    consumer: Consumer, topic: str, fresh: bool, finished: Collection[TP], reach: Reachability
) -> tuple[dict[TP, int] | None, str | None]:
    """The assigned partitions' high watermarks (None when the cluster did not answer) and why the cluster did
    not answer a metadata request about ``topic`` (None when it did).

    The watermarks are librdkafka's cached ones (no request), which each fetch brings up to date. While nothing
    is fetched (``fresh``: consumption paused, or the thread held back by the pipeline's backpressure for a
    while) they are asked of the brokers instead, one request per partition: the lag must stay true exactly
    when it grows. So are those of ``finished`` partitions (paused for good). Why the cluster did not answer
    comes with the connection failure ``reach`` last heard of.
    """
    try:
        highs = {}
        for tp in consumer.assignment():
            if fresh or (tp.topic, tp.partition) in finished:
                _, high = consumer.get_watermark_offsets(tp, timeout=PROBE_TIMEOUT, cached=False)
            else:
                _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                highs[(tp.topic, tp.partition)] = high
        consumer.list_topics(topic=topic, timeout=PROBE_TIMEOUT)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        return None, reach.explain(error.str() if isinstance(error, RdKafkaError) else str(exc))
    return highs, reach.explain(None)


def wake_fetchers(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    """Make librdkafka fetch resumed partitions now rather than up to a second later.

    A resume takes effect at the next wake-up of the broker thread that fetches the partition, and an idle
    one (nothing to fetch while everything was paused) sleeps for up to a second (confluent-kafka-go#630):
    under backpressure that left the service idle most of the time. Any request to the broker wakes its
    thread, so ask each resumed partition's leader for a watermark. Only a wake-up: errors are ignored.
    """
    try:
        by_leader: dict[int, TopicPartition] = {}
        for topic in {tp.topic for tp in partitions}:
            meta = consumer.list_topics(topic=topic, timeout=1).topics.get(topic)
            if meta is None:
                continue
            for tp in partitions:
                if tp.topic == topic and tp.partition in meta.partitions:
                    by_leader.setdefault(meta.partitions[tp.partition].leader, tp)
        for tp in by_leader.values():
            consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=1, cached=False)
    except KafkaException as exc:
        log.debug("waking the fetchers after a resume failed: %s", exc)
