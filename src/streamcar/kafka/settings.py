"""The librdkafka settings streamcar's consumers and producers run with, in one place, with their reasons.

``kafka.librdkafka`` from the config is applied last: an explicit override always wins. A setting only one kind
of client knows goes to that kind only (librdkafka would warn about it on the other, once per client): a
``session.timeout.ms`` to the consumers, a ``linger.ms`` to the producers.
"""

from __future__ import annotations

import uuid
from typing import Any

from streamcar.config import KafkaConfig

Settings = dict[str, Any]

PRODUCER_DEFAULTS: Settings = {
    "acks": "all",  # a reply counts as published only once every in-sync replica has it
    "enable.idempotence": True,  # and once only, in the order handed over (a key's replies stay in order)
    "linger.ms": 5,  # under load: records share batches; a record sent alone is flushed (kafka.producer)
    "compression.type": "lz4",
    # a lone produce request or commit goes out at once rather than behind Nagle's algorithm
    "socket.nagle.disable": True,
    # a missing topic is reported (kafka.topics), or created with the input's partitions (publish.create_missing);
    # never created by the broker with its defaults because we produced to it
    "allow.auto.create.topics": False,
}


# librdkafka's consumer-only (C) and producer-only (P) properties, global and topic-level (CONFIGURATION.md)
CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "group.instance.id",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "group.protocol.type",
        "group.protocol",
        "group.remote.assignor",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "fetch.wait.max.ms",
        "fetch.queue.backoff.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.error.backoff.ms",
        "offset.store.method",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "consume.callback.max.messages",
        "auto.offset.reset",
        "auto.commit.enable",
        "offset.store.path",
        "offset.store.sync.interval.ms",
    }
)
PRODUCER_ONLY = frozenset(
    {
        "transactional.id",
        "transaction.timeout.ms",
        "enable.idempotence",
        "enable.gapless.guarantee",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.ms",
        "linger.ms",
        "message.send.max.retries",
        "retries",
        "queue.buffering.backpressure.threshold",
        "compression.codec",
        "compression.type",
        "compression.level",
        "batch.num.messages",
        "batch.size",
        "delivery.report.only.error",
        "sticky.partitioning.linger.ms",
        "request.required.acks",
        "acks",
        "request.timeout.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "queuing.strategy",
        "produce.offset.report",
        "partitioner",
    }
)


def for_producer(settings: Settings) -> Settings:
    """``settings`` without what only a consumer knows."""
    return {name: value for name, value in settings.items() if name not in CONSUMER_ONLY}


def group_consumer(kafka: KafkaConfig, *, group: str, client_id: str, instance_id: str | None = None) -> Settings:
    """A member of the pipeline's consumer group: nothing committed but by the checkpoint. ``instance_id``:
    static membership (a restart under the same id gets its partitions back without a rebalance)."""
    own: Settings = {
        "group.id": group,
        "client.id": client_id,
        "enable.partition.eof": False,
        # where a partition without a usable committed offset starts is the bridge's decision
        # (streamcar.kafka.starts): librdkafka's own would skip a re-created log or a new partition
        "auto.offset.reset": "error",
        "partition.assignment.strategy": "cooperative-sticky",
    }
    if instance_id is not None:
        own["group.instance.id"] = instance_id
    return _consumer(kafka, own)


def range_consumer(kafka: KafkaConfig, *, client_id: str) -> Settings:
    """A reader of explicit ranges (a replay): it never joins nor commits to a group; librdkafka just needs some
    group.id. A range that retention cut short starts at the log's start."""
    return _consumer(
        kafka,
        {
            "group.id": f"streamcar-replay-{uuid.uuid4().hex}",
            "client.id": client_id,
            "enable.partition.eof": True,  # how a range's end is seen when the log ends before it
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
        },
    )


def share_consumer(kafka: KafkaConfig, *, group: str, client_id: str, fetch: int = 500) -> Settings:
    """A member of the pipeline's share group (queue mode), acknowledging every record itself and fetching at
    most ``fetch`` records at a time (unless one producer batch holds more)."""
    conf: Settings = kafka.client_config()
    conf.update({"group.id": group, "client.id": client_id, "share.acknowledgement.mode": "explicit"})
    conf["max.poll.records"] = fetch
    conf.update({"fetch.wait.max.ms": 50, "socket.nagle.disable": True})  # as for a group member, below
    conf.update(kafka.librdkafka)
    return {name: value for name, value in conf.items() if name not in PRODUCER_ONLY and name not in NOT_SHARED}


NOT_SHARED = frozenset(
    {"group.instance.id", "partition.assignment.strategy", "enable.auto.commit", "auto.offset.reset"}
)
"""Settings of a consumer group's member that a share group's has no use for (and librdkafka would warn of)."""


def _consumer(kafka: KafkaConfig, own: Settings) -> Settings:
    conf: Settings = kafka.client_config()
    conf.update(own)
    conf.update(
        {
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # new partitions of an input topic are found within seconds, not 5 minutes
            "topic.metadata.refresh.interval.ms": 5000,
            # A resumed partition's first fetch can wait behind a fetch request the broker holds for up to
            # fetch.wait.max.ms (500 ms by default) when nothing else was fetchable.
            "fetch.wait.max.ms": 50,
            "socket.nagle.disable": True,
        }
    )
    conf.update(kafka.librdkafka)  # explicit overrides still win
    return {name: value for name, value in conf.items() if name not in PRODUCER_ONLY}
