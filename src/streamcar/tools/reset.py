"""``streamcar offsets reset``: move a consumer group's committed offsets on one topic, without losing records unseen.

Where to (exactly one, in ``kafka-consumer-groups.sh``'s words where it has them):

* ``--to POSITION`` -- any position of :mod:`streamcar.tools._positions` (``earliest``, ``latest``, an offset,
  ``-N`` records before the end, a duration back from now such as ``10m``, an ISO 8601 time);
* ``--to-earliest``, ``--to-latest``, ``--to-offset N``, ``--to-datetime T``, ``--by-duration PT10M`` (now minus
  that duration, as Kafka's tool has it);
* ``--shift-by N`` -- the committed offset plus N (minus, for a negative N), per partition, clamped to the
  partition's [low, high] watermarks. A partition without a committed offset has nothing to shift from and is
  left as it is (shown so); ``kafka-consumer-groups.sh`` refuses the whole reset instead. When no partition has
  one, it is a usage error.

**Skips.** A new offset past the committed one moves the group over records it has not processed: its consumers
will never see them. ``-N`` is the classic trap: it counts back from the end, so a group already within the last
N records moves *forward*. The dry run counts, per partition, the records a reset would skip: the offsets from
the committed one (or the low watermark, if retention deleted records below it) up to the new one, less those
the commit's done-ahead metadata names done (the sidecar processed them already). They are offsets: in a
compacted topic, or one with transaction markers, the count is an upper bound. ``--execute`` refuses a reset
that skips records (exit 2, one line naming the partitions and the count) unless ``--yes`` is given. Moving back
(reprocessing) needs no ``--yes``: nothing is lost, work is done again. A partition without a committed offset
counts no skips: where the group would start there is up to its consumers' ``auto.offset.reset``, which the
broker does not know.

**What is committed.** Only the partitions whose offset changes: an unchanged one keeps its commit, done-ahead
metadata included. A forward move keeps the done-ahead offsets above the new offset (re-encoded against it), so
the sidecar does not redo them; a backward move drops them, since reprocessing from there is what was asked.

The reset is refused, before and at the moment of applying, while the group has members or is rebalancing: a
live consumer would overwrite the new offsets with its own next commit. A group that does not exist yet may be
reset: its offsets are created.

Library use: :func:`plan_reset`, then :func:`apply_reset`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from rich.table import Table

from streamcar.config import KafkaConfig
from streamcar.errors import KafkaError, UsageError
from streamcar.kafka.doneahead import MAX_METADATA, Run, encode
from streamcar.kafka.records import CommitPoint
from streamcar.tools._common import TIMEOUT, admin, kafka_settings, partitions_of, plain_console, reader, watermarks
from streamcar.tools._positions import Position, duration_ms, parse_position, parse_time, resolve
from streamcar.tools.offsets import (
    ActiveGroupError,
    GroupInfo,
    admin_result,
    committed_points,
    describe_group,
    done_ahead,
    number,
)


@dataclass(frozen=True)
class Shift:
    """``--shift-by``: relative to the committed offset of each partition."""

    by: int

    def __str__(self) -> str:
        return f"shift by {self.by:+,}"


Target = Position | Shift


@dataclass(frozen=True)
class PlannedOffset:
    partition: int
    current: int | None
    """The committed offset now; None if there is none."""
    new: int | None
    """None: left as it is (``--shift-by`` on a partition without a committed offset)."""
    skips: int = 0
    """Unprocessed records the move passes over (see the module)."""
    metadata: str = ""
    """What the new commit carries: the done-ahead offsets above ``new`` on a forward move."""

    @property
    def changes(self) -> bool:
        return self.new is not None and self.new != self.current


@dataclass(frozen=True)
class ResetPlan:
    group: GroupInfo
    """The group as it was when the plan was made."""
    topic: str
    to: Target
    partitions: list[PlannedOffset]

    @property
    def skips(self) -> int:
        return sum(r.skips for r in self.partitions)

    @property
    def skipping(self) -> list[int]:
        """The partitions where the reset skips records."""
        return [r.partition for r in self.partitions if r.skips]

    @property
    def uncommitted(self) -> list[int]:
        return [r.partition for r in self.partitions if r.current is None]


class SkipError(UsageError):
    """The reset would skip records the group has not processed, and that was not allowed (``--yes``)."""

    def __init__(self, plan: ResetPlan) -> None:
        where = _partitions(plan.skipping)
        super().__init__(
            f"refusing to skip {plan.skips:,} unprocessed record{'' if plan.skips == 1 else 's'} of {plan.topic}"
            f" ({where}: the new offsets are past the committed ones); add --yes to skip them"
            " (--shift-by -N moves back from the committed offsets instead)"
        )
        self.plan = plan


def plan_reset(kafka: KafkaConfig, group: str, topic: str, to: str | Target, partition: int | None = None) -> ResetPlan:
    """Where ``reset`` would move ``group`` on ``topic`` (or only its ``partition``), and what it would skip;
    changes nothing."""
    target = to if isinstance(to, Position | Shift) else parse_position(to, option="--to")
    consumer = reader(kafka)
    try:
        partitions = partitions_of(consumer, topic, only=partition)
        marks = watermarks(consumer, topic, partitions)
        resolved = resolve(consumer, topic, partitions, target, marks) if isinstance(target, Position) else {}
    finally:
        consumer.close()
    client = admin(kafka)
    info = describe_group(client, group)
    points = committed_points(client, group, kafka)
    rows = [_planned(p, points.get((topic, p)), marks[p], resolved.get(p), target) for p in partitions]
    if isinstance(target, Shift) and all(r.current is None for r in rows):
        where = f"partition {partition} of {topic}" if partition is not None else topic
        raise UsageError(
            f"--shift-by: consumer group {group!r} has no committed offset on {where}, so nothing to shift from"
            " (use --to earliest, latest, an offset or a time)"
        )
    return ResetPlan(info, topic, target, rows)


def _planned(
    partition: int, point: CommitPoint | None, marks: tuple[int, int], resolved: int | None, target: Target
) -> PlannedOffset:
    low, high = marks
    current = point.offset if point is not None else None
    if isinstance(target, Shift):
        if current is None:
            return PlannedOffset(partition, None, None)
        new = min(max(current + target.by, low), high)
    else:
        assert resolved is not None
        new = resolved
    if point is None or current is None or new <= current:
        return PlannedOffset(partition, current, new)
    runs = done_ahead(point)
    start = max(current, low)
    done = sum(max(min(last + 1, new) - max(first, start), 0) for first, last in runs)
    return PlannedOffset(partition, current, new, max(new - start - done, 0), _kept(new, runs))


def _kept(new: int, runs: list[Run]) -> str:
    """The done-ahead metadata of the offsets of ``runs`` above ``new``, relative to it ("" if none, or should
    it not fit the broker's limit: the sidecar then redoes them, which is safe)."""
    above = [(max(first, new + 1), last) for first, last in runs if last > new]
    metadata = encode(new, above)
    return metadata if len(metadata) <= MAX_METADATA else ""


def apply_reset(kafka: KafkaConfig, plan: ResetPlan, *, allow_skips: bool = False) -> None:
    """Commit ``plan``'s new offsets for its group. SkipError if it skips unprocessed records and ``allow_skips``
    is false; ActiveGroupError if the group has members now."""
    if plan.skips and not allow_skips:
        raise SkipError(plan)
    client = admin(kafka)
    group = plan.group.name
    info = describe_group(client, group)
    if info.active:
        raise ActiveGroupError(info)
    moved = [
        TopicPartition(plan.topic, r.partition, r.new, r.metadata)  # "": no metadata
        for r in plan.partitions
        if r.new is not None and r.new != r.current
    ]
    if not moved:
        return
    request = ConsumerGroupTopicPartitions(group, moved)
    result = admin_result(client.alter_consumer_group_offsets([request], request_timeout=TIMEOUT)[group], group)
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if not failed:
        return
    # A consumer that joined after the check above makes the broker refuse the commit as from a non-member.
    if any(tp.error.code() == RdKafkaError.UNKNOWN_MEMBER_ID for tp in failed):
        raise ActiveGroupError(describe_group(client, group))
    where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in failed)
    raise KafkaError(f"consumer group {group!r}: offsets of {where} not reset: {failed[0].error.str()}")


# --- the command ---------------------------------------------------------------------------------------------------


def target_of(args: argparse.Namespace) -> Target:
    """The one target the command line names (argparse makes sure there is exactly one)."""
    if args.shift_by is not None:
        return Shift(args.shift_by)
    if args.to_earliest:
        return Position("earliest", text="earliest")
    if args.to_latest:
        return Position("latest", text="latest")
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise UsageError(f"--to-offset: {args.to_offset} is not an offset (0 or more)")
        return Position("offset", args.to_offset, str(args.to_offset))
    if args.to_datetime is not None:
        return parse_time(args.to_datetime, option="--to-datetime")
    if args.by_duration is not None:
        raw = args.by_duration.strip()
        if raw.startswith("-") or duration_ms(raw) is None:
            raise UsageError(
                f"--by-duration: {args.by_duration!r} is not a duration such as PT10M, PT1H30M or P1D (or 10m, 2h)"
            )
        return parse_position(raw, option="--by-duration")
    return parse_position(args.to, option="--to")


def reset_command(args: argparse.Namespace) -> int:
    target = target_of(args)  # bad usage is reported before any network call
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    plan = plan_reset(kafka, args.group, args.topic, target, args.partition)
    refused = bool(args.execute and plan.skips and not args.yes)
    executed = bool(args.execute and not refused)
    if executed:
        apply_reset(kafka, plan, allow_skips=args.yes)
    if args.json:
        print(json.dumps(_document(plan, executed), indent=2))
    else:
        _print_plan(plan, executed)
    if refused:
        raise SkipError(plan)
    where = f"{len(plan.partitions)} partition{'' if len(plan.partitions) == 1 else 's'} of {plan.topic}"
    if executed:
        print(f"reset consumer group {plan.group.name} on {where}", file=sys.stderr)
    else:
        if plan.group.active:
            print(f"note: {ActiveGroupError(plan.group)}", file=sys.stderr)
        also = " (and --yes to skip those records)" if plan.skips else ""
        print(f"dry run: nothing was changed; add --execute to apply{also}", file=sys.stderr)
    return 0


def _document(plan: ResetPlan, executed: bool) -> dict[str, Any]:
    to = plan.to
    return {
        "group": plan.group.name,
        "state": plan.group.state,
        "members": len(plan.group.members),
        "topic": plan.topic,
        "to": str(to),
        **({"shift_by": to.by} if isinstance(to, Shift) else {}),
        **({"at": to.moment} if isinstance(to, Position) and to.moment else {}),
        "executed": executed,
        "partitions": [
            {"partition": r.partition, "current": r.current, "new": r.new, "skips": r.skips} for r in plan.partitions
        ],
        "skips": plan.skips,
    }


def _print_plan(plan: ResetPlan, executed: bool) -> None:
    table = Table()
    for column in ("partition", "current", "new", "change", "skips"):
        table.add_column(column, justify="right")
    for r in plan.partitions:
        change = "left: not committed" if r.new is None else "-" if r.current is None else f"{r.new - r.current:+,}"
        skips = f"{r.skips:,} unprocessed" if r.skips else "-"
        table.add_row(str(r.partition), number(r.current), number(r.new), change, skips)
    to = plan.to
    at = f" ({to.moment})" if isinstance(to, Position) and to.moment and duration_ms(to.text) is not None else ""
    console = plain_console()
    console.print(f"consumer group {plan.group.name} ({plan.group.summary()}) on {plan.topic}: reset to {to}{at}")
    console.print(table)
    if plan.skips:
        verb = "skipped" if executed else "would skip"
        count = len(plan.skipping)
        console.print(
            f"{verb} {plan.skips:,} unprocessed record{'' if plan.skips == 1 else 's'} on {count} partition"
            f"{'' if count == 1 else 's'} ({_partitions(plan.skipping)}): the new offsets are past the committed ones"
        )
    if plan.uncommitted and plan.group.exists:
        why = (
            "nothing to shift from, left as it is"
            if isinstance(to, Shift)
            else "where the group starts there depends on its consumers' auto.offset.reset, so no skips are counted"
        )
        console.print(f"no committed offset on {_partitions(plan.uncommitted)}: {why}")


def _partitions(partitions: list[int]) -> str:
    shown = ", ".join(str(p) for p in partitions[:10])
    if len(partitions) > 10:
        shown += f" and {len(partitions) - 10} more"
    return f"partition{'' if len(partitions) == 1 else 's'} {shown}"
