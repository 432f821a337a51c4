"""The librdkafka settings streamcar's consumers and producers run with, in one place, with their reasons.

``kafka.librdkafka`` from the config is applied last: an explicit override always wins.
"""

from __future__ import annotations

import uuid
from typing import Any

from streamcar.config import KafkaConfig

Settings = dict[str, Any]

PRODUCER_DEFAULTS: Settings = {
    "acks": "all",  # a reply counts as published only once every in-sync replica has it
    "enable.idempotence": True,  # and once only, in the order handed over (a key's replies stay in order)
    "linger.ms": 5,
    "compression.type": "lz4",
}


def group_consumer(kafka: KafkaConfig, *, group: str, client_id: str) -> Settings:
    """A member of the pipeline's consumer group: nothing committed but by the checkpoint."""
    return _consumer(
        kafka,
        {
            "group.id": group,
            "client.id": client_id,
            "enable.partition.eof": False,
            # where a partition without a usable committed offset starts is the bridge's decision
            # (streamcar.kafka.starts): librdkafka's own would skip a re-created log or a new partition
            "auto.offset.reset": "error",
            "partition.assignment.strategy": "cooperative-sticky",
        },
    )


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
        }
    )
    conf.update(kafka.librdkafka)  # explicit overrides still win
    return conf
