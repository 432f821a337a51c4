"""What queue mode (``consume.share_group``, a Kafka share group, KIP-932) asks of the rest of a pipeline.

A share group hands each record to one member at a time under a lock, and takes it back by acknowledgement, one
record at a time: there is no order to keep, no offset to commit, and a record the broker stopped redelivering
must have somewhere to go.
"""

from __future__ import annotations

from collections.abc import Iterator

from streamcar.config._durations import format_duration

DEFAULT_LOCK = 30.0
"""Seconds a share group's record lock lasts unless configured otherwise (``group.share.record.lock.duration.ms``
on the broker, ``share.record.lock.duration.ms`` on the group)."""
MAX_DELIVERIES = 10
"""The highest ``share.delivery.count.limit`` a broker allows: a record is delivered at most this many times."""

Problem = tuple[tuple[str, ...], str]


def queue_problems(
    *, ordering: str, instance_id: str | None, exactly_once: bool, dead_letter: bool, attempts: int
) -> Iterator[Problem]:
    """Why a pipeline with these settings cannot run in queue mode, by the path of the field at fault."""
    if ordering != "none":
        yield (("ordering",), f"must be none with consume.share_group (got {ordering}): a share group keeps no order")
    if instance_id is not None:
        yield (("consume", "instance_id"), "applies to a consumer group (consume.group), not to a share group")
    if exactly_once:
        text = "is not available with consume.share_group: a share group commits no offsets"
        yield (("publish", "exactly_once"), text)
    if not dead_letter:
        yield (
            ("dead_letter",),
            "is required with consume.share_group: a record the broker stops redelivering"
            " (share.delivery.count.limit) would otherwise be lost",
        )
    if attempts >= MAX_DELIVERIES:
        yield (
            ("retry", "attempts"),
            f"must be at most {MAX_DELIVERIES - 1} with consume.share_group: each attempt is a delivery, a broker"
            f" delivers a record at most {MAX_DELIVERIES} times, and one is kept for a last attempt cut short"
            f" (got {attempts})",
        )


def queue_warnings(name: str, timeout: float, lock: float = DEFAULT_LOCK) -> list[str]:
    """What works in queue mode but may not do what is meant, one line each: pipeline ``name`` with
    ``call.timeout`` ``timeout``, against the group's record ``lock``."""
    if timeout < lock:
        return []
    return [
        f"pipelines.{name}.call.timeout ({format_duration(timeout)}) is not below the share group's record lock"
        f" ({format_duration(lock)}, group.share.record.lock.duration.ms): a call that long is redelivered to"
        " another member while it runs"
    ]
