"""What queue mode (``consume.share_group``, a Kafka share group, KIP-932) asks of the rest of a pipeline.

A share group hands each record to one member at a time under a lock, and takes it back by acknowledgement, one
record at a time: there is no order to keep, no offset to commit, and a record the broker stopped redelivering
must have somewhere to go.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from streamcar.config._durations import format_duration

if TYPE_CHECKING:
    from streamcar.config.models import PipelineConfig

DEFAULT_LOCK = 30.0
"""Seconds a share group's record lock lasts unless configured otherwise (``group.share.record.lock.duration.ms``
on the broker, ``share.record.lock.duration.ms`` on the group)."""
MAX_DELIVERIES = 10
"""The highest ``share.delivery.count.limit`` a broker allows: a record is delivered at most this many times."""

Problem = tuple[tuple[str, ...], str]


def queue_problems(pipeline: PipelineConfig) -> Iterator[Problem]:
    """Why ``pipeline`` cannot run in queue mode as configured, by the path of the field at fault."""
    if pipeline.ordering != "none":
        got = pipeline.ordering
        yield (("ordering",), f"must be none with consume.share_group (got {got}): a share group keeps no order")
    if pipeline.consume.instance_id is not None:
        yield (("consume", "instance_id"), "applies to a consumer group (consume.group), not to a share group")
    if pipeline.publish is not None and pipeline.publish.exactly_once:
        text = "is not available with consume.share_group: a share group commits no offsets"
        yield (("publish", "exactly_once"), text)
    if pipeline.dead_letter is None:
        yield (
            ("dead_letter",),
            "is required with consume.share_group: a record the broker stops redelivering"
            " (share.delivery.count.limit) would otherwise be lost",
        )
    if pipeline.retry.attempts >= MAX_DELIVERIES:
        yield (
            ("retry", "attempts"),
            f"must be at most {MAX_DELIVERIES - 1} with consume.share_group: each attempt is a delivery, a broker"
            f" delivers a record at most {MAX_DELIVERIES} times, and one is kept for a last attempt cut short"
            f" (got {pipeline.retry.attempts})",
        )


def queue_warnings(name: str, pipeline: PipelineConfig, lock: float = DEFAULT_LOCK) -> list[str]:
    """What works in queue mode but may not do what is meant, one line each."""
    timeout = pipeline.call.timeout
    if timeout < lock:
        return []
    return [
        f"pipelines.{name}.call.timeout ({format_duration(timeout)}) is not below the share group's record lock"
        f" ({format_duration(lock)}, group.share.record.lock.duration.ms): a call that long is redelivered to"
        " another member while it runs"
    ]
