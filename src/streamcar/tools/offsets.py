"""``streamcar offsets show``: a consumer group's committed offsets, and what the offset tools share about groups.

``show`` lists, per partition, the committed offset, how many offsets above it the commit names done (the
sidecar's done-ahead offsets, skipped by the partition's next owner), the end offset (high watermark) and the
lag. Without ``--topic`` it covers every topic the group has committed offsets for or is assigned. The lag is
``end - committed`` (never below 0); a partition without a committed offset shows ``-`` for both, as
``kafka-consumer-groups.sh`` does: where such a group starts depends on its consumers' ``auto.offset.reset``,
which the broker does not know. The total lag sums the partitions that have a lag.

``reset`` (moving them) is :mod:`streamcar.tools.reset`.

Library use: :func:`group_offsets`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka.admin import AdminClient
from rich.table import Table

from streamcar.config import KafkaConfig
from streamcar.errors import KafkaError, StreamcarError
from streamcar.kafka.doneahead import DoneAheadError, Run, count, decode
from streamcar.kafka.groups import await_coordinator
from streamcar.kafka.records import CommitPoint
from streamcar.tools._common import (
    TIMEOUT,
    admin,
    client_config,
    kafka_settings,
    partitions_of,
    plain_console,
    reader,
    watermarks,
)

_IDLE_STATES = frozenset({"empty", "dead"})


@dataclass(frozen=True)
class GroupInfo:
    name: str
    state: str
    """The broker's word for it, lower case: ``stable``, ``empty``, ``dead`` (no such group), ..."""
    members: tuple[str, ...] = ()
    """``client_id@host`` of each member."""
    topics: frozenset[str] = frozenset()
    """The topics assigned to its members."""

    @property
    def exists(self) -> bool:
        return self.state != "dead"

    @property
    def active(self) -> bool:
        """Whether consumers may commit for this group now (so its offsets must not be moved under them)."""
        return bool(self.members) or self.state not in _IDLE_STATES

    def summary(self) -> str:
        if not self.exists:
            return "no such group yet"
        count = len(self.members)
        return f"{self.state}, {count} member{'' if count == 1 else 's'}"


class ActiveGroupError(StreamcarError):
    """The group has members (or is rebalancing), so its offsets cannot be reset."""

    retriable = True

    def __init__(self, group: GroupInfo) -> None:
        count = len(group.members)
        if count:
            shown = ", ".join(group.members[:3]) + (f", and {count - 3} more" if count > 3 else "")
            who = f"has {count} active member{'' if count == 1 else 's'} ({shown})"
        else:
            who = f"is {group.state}"
        super().__init__(f"consumer group {group.name!r} {who}: stop its consumers before resetting its offsets")
        self.group = group


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    """None: the group has not committed an offset for this partition."""
    end: int | None
    """The high watermark; None if the topic no longer exists."""
    done_ahead: int = 0
    """Offsets above ``committed`` that the commit's metadata names done (skipped by the next consumer)."""

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.end is None:
            return None
        return max(self.end - self.committed, 0)


@dataclass(frozen=True)
class GroupOffsets:
    group: GroupInfo
    partitions: list[PartitionLag]

    @property
    def total_lag(self) -> int:
        return sum(row.lag for row in self.partitions if row.lag is not None)


# --- the library ---------------------------------------------------------------------------------------------------


def describe_group(client: AdminClient, group: str) -> GroupInfo:
    description = admin_result(client.describe_consumer_groups([group], request_timeout=TIMEOUT)[group], group)
    state = description.state.name.lower() if getattr(description, "state", None) is not None else "unknown"
    members = tuple(f"{m.client_id}@{(m.host or '?').lstrip('/')}" for m in description.members)
    topics = frozenset(
        tp.topic for m in description.members if m.assignment is not None for tp in m.assignment.topic_partitions
    )
    return GroupInfo(group, state, members, topics)


def group_offsets(kafka: KafkaConfig, group: str, topic: str | None = None) -> GroupOffsets:
    """Committed offset, end offset and lag of ``group`` per partition of ``topic`` (default: of every topic it has
    committed offsets for or is assigned); KafkaError if the group does not exist."""
    client = admin(kafka)
    info = describe_group(client, group)
    if not info.exists:
        raise KafkaError(f"consumer group {group!r} does not exist (no members, no committed offsets)")
    points = committed_points(client, group, kafka)
    committed = {tp: point.offset for tp, point in points.items()}
    ahead = {tp: count(done_ahead(point)) for tp, point in points.items()}
    consumer = reader(kafka)
    try:
        if topic is not None:
            layout: dict[str, list[int] | None] = {topic: partitions_of(consumer, topic)}
        else:
            layout = _layout(consumer, {t for t, _ in committed} | info.topics)
        rows = []
        for name, partitions in sorted(layout.items()):
            if partitions is None:  # deleted since the group committed to it
                rows += [
                    PartitionLag(name, p, offset, None, ahead[(t, p)])
                    for (t, p), offset in sorted(committed.items())
                    if t == name
                ]
                continue
            marks = watermarks(consumer, name, partitions)
            rows += [
                PartitionLag(name, p, committed.get((name, p)), marks[p][1], ahead.get((name, p), 0))
                for p in partitions
            ]
    finally:
        consumer.close()
    return GroupOffsets(info, rows)


def admin_result(future: concurrent.futures.Future[Any], group: str) -> Any:
    try:
        return future.result(timeout=TIMEOUT + 5)
    except KafkaException as exc:
        error = exc.args[0]
        raise KafkaError(f"consumer group {group!r}: {error.str() if hasattr(error, 'str') else error}") from None
    except concurrent.futures.TimeoutError:
        raise KafkaError(f"consumer group {group!r}: no answer from Kafka within {TIMEOUT + 5:.0f}s") from None


def committed_points(client: AdminClient, group: str, kafka: KafkaConfig) -> dict[tuple[str, int], CommitPoint]:
    """Every offset the group has committed, with its metadata, by (topic, partition)."""
    await_coordinator(client_config(kafka), group, TIMEOUT)  # else a loading coordinator crashes librdkafka
    request = ConsumerGroupTopicPartitions(group)
    answer = admin_result(client.list_consumer_group_offsets([request], request_timeout=TIMEOUT)[group], group)
    return {
        (tp.topic, tp.partition): CommitPoint(tp.offset, tp.metadata or "")
        for tp in answer.topic_partitions
        if tp.offset >= 0
    }


def done_ahead(point: CommitPoint) -> list[Run]:
    """The runs of offsets above the committed one that its metadata names done; none for no metadata, or for
    metadata that is not streamcar's (the sidecar ignores it too)."""
    if not point.metadata:
        return []
    try:
        base, runs = decode(point.metadata)
    except DoneAheadError:
        return []
    return runs if base == point.offset else []


def _layout(consumer: Consumer, topics: set[str]) -> dict[str, list[int] | None]:
    """Partitions of each of ``topics``; None for a topic that does not exist (any more)."""
    if not topics:
        return {}
    try:
        metadata = consumer.list_topics(timeout=TIMEOUT)
    except KafkaException as exc:
        raise KafkaError(f"cannot reach Kafka: {exc.args[0].str() if exc.args else exc}") from None
    layout: dict[str, list[int] | None] = {}
    for name in topics:
        found = metadata.topics.get(name)
        ok = found is not None and found.error is None and found.partitions
        layout[name] = sorted(found.partitions) if ok else None
    return layout


# --- the commands --------------------------------------------------------------------------------------------------


def show_command(args: argparse.Namespace) -> int:
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    result = group_offsets(kafka, args.group, args.topic)
    if args.json:
        document = {
            "group": result.group.name,
            "state": result.group.state,
            "members": len(result.group.members),
            "partitions": [
                {
                    "topic": r.topic,
                    "partition": r.partition,
                    "committed": r.committed,
                    "done_ahead": r.done_ahead,
                    "end": r.end,
                    "lag": r.lag,
                }
                for r in result.partitions
            ],
            "total_lag": result.total_lag,
        }
        print(json.dumps(document, indent=2))
        return 0
    table = Table()
    table.add_column("topic")
    for column in ("partition", "committed", "done ahead", "end", "lag"):
        table.add_column(column, justify="right")
    for r in result.partitions:
        ahead = number(r.done_ahead) if r.done_ahead else "-"
        table.add_row(r.topic, str(r.partition), number(r.committed), ahead, number(r.end), number(r.lag))
    console = plain_console()
    console.print(f"consumer group {result.group.name} ({result.group.summary()})")
    console.print(table)
    if not result.partitions:
        console.print(f"no committed offsets{f' on {args.topic}' if args.topic else ''}")
    console.print(f"total lag {result.total_lag:,}")
    return 0


def number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
