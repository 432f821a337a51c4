"""Asking about a consumer group safely.

librdkafka 2.16's admin client crashes the process (SIGSEGV in ``rd_kafka_cgrp_op``, called from
``rd_kafka_handle_OffsetFetch``) when the answer to ``ListConsumerGroupOffsets`` says the group's coordinator is
still loading its offsets, as every coordinator is for a while after a broker starts. A consumer of the group
asks the same question through its own group machinery, which waits out the loading; so the tools let one do
that first (:func:`await_coordinator`), and only then use the admin API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

PROBE_TOPIC = "__streamcar_coordinator_probe"  # need not exist: only the coordinator's answer matters


def await_coordinator(config: Mapping[str, Any], group: str, timeout: float) -> None:
    """Return once ``group``'s coordinator answers offset requests (or ``timeout`` passed; the admin call that
    follows then reports the trouble in words)."""
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False, "logger": _Quiet()})
    try:
        consumer.committed([TopicPartition(PROBE_TOPIC, 0)], timeout=timeout)
    except KafkaException:
        pass
    finally:
        consumer.close()


class _Quiet:
    """A logger for the probe consumer: what it would say, the admin call says better."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass
