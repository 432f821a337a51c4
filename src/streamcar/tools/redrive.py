"""``streamcar dlq redrive``: re-publish dead letters to their source topics.

Each dead letter goes to its source topic (to its source partition while that exists) with its key, value and
headers, minus the dead-letter headers, plus ``streamcar-redrive-count`` (previous + 1). It
reads from where the group ``streamcar-redrive.<topic>`` left off up to the high watermarks measured at start, so
it never chases what a running sidecar dead-letters meanwhile (and a redriven record goes to its source topic,
never back into this one). A record without ``streamcar-source-topic`` cannot be redriven: it is skipped, and
passed over like the others, so a re-run does not meet it again.

Why re-running an interrupted ``redrive --execute`` never publishes a dead letter twice:

* its progress is the group's committed offsets, and each batch commits its records *and* the offsets past
  them in one Kafka transaction (``send_offsets_to_transaction``): both are committed, or neither is;
* the producer's ``transactional.id`` is derived from the topic, so the next run's ``init_transactions`` fences
  the previous producer (a zombie can no longer commit) and aborts its open transaction; only then does the run
  read the committed offsets, asking for stable ones (read_committed), so it resumes right after the last
  committed batch;
* the records of an aborted transaction never reach read_committed consumers (librdkafka's default, so the
  sidecar's); a read_uncommitted consumer of the source topic may see them, and no producer can prevent that.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamcar.config import KafkaConfig
from streamcar.errors import KafkaError, UsageError
from streamcar.tools._common import (
    TIMEOUT,
    client_config,
    kafka_settings,
    partitions_of,
    plain_console,
    produce_blocking,
    read_range,
    reader,
    retrying,
    watermarks,
)
from streamcar.tools.dlq import SAMPLE, DeadLetter, key_text, parse

BATCH = 500  # dead letters per transaction: what an interrupted run leaves uncommitted, to be redone


@dataclass
class RedriveResult:
    topic: str
    executed: bool
    resumed: bool  # an earlier run had committed progress (else this one started at the low watermarks)
    started: dict[int, int]
    ends: dict[int, int]  # the high watermarks measured at start: never read past
    reached: dict[int, int]  # after the last record handled, per partition (committed, when executed)
    redriven: Counter[str] = field(default_factory=Counter)  # per source topic
    skipped: int = 0
    skipped_first: list[tuple[int, int]] = field(default_factory=list)
    first: list[DeadLetter] = field(default_factory=list)
    unknown_topics: dict[str, str] = field(default_factory=dict)  # dry run: source topics --execute would stop at

    @property
    def total(self) -> int:
        return sum(self.redriven.values())

    @property
    def left(self) -> int:
        return sum(self.ends[p] - self.reached[p] for p in self.ends)


def redrive(
    kafka: KafkaConfig,
    dlq_topic: str,
    *,
    limit: int | None = None,
    execute: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> RedriveResult:
    """Re-publish ``dlq_topic``'s dead letters to their source topics (a dry run unless ``execute``).

    At most ``limit`` are redriven (skipped records do not count); ``on_progress(done, total)`` follows the
    records handled. KafkaError when a source topic does not exist (nothing of that batch is published) or a
    transaction fails (it is aborted); the batches committed before stay committed and a re-run resumes after them.
    """
    group = f"streamcar-redrive.{dlq_topic}"
    consumer = reader(kafka, **{"group.id": group, "isolation.level": "read_committed"})
    producer: Producer | None = None
    try:
        partitions = partitions_of(consumer, dlq_topic)
        if execute:
            settings = {"transactional.id": f"streamcar-redrive-{dlq_topic}", "linger.ms": 20}
            txn = Producer(client_config(kafka, **settings))
            # before reading the progress: fences an interrupted run and aborts its open transaction
            retrying(lambda: txn.init_transactions(4 * TIMEOUT), f"redriving {dlq_topic}")
            producer = txn
        marks = watermarks(consumer, dlq_topic, partitions)
        query = [TopicPartition(dlq_topic, p) for p in partitions]
        found = retrying(lambda: consumer.committed(query, timeout=TIMEOUT), f"reading the progress of group {group}")
        if failed := [tp for tp in found if tp.error is not None]:
            raise KafkaError(f"reading the progress of group {group}: {failed[0].error}")
        committed = {tp.partition: tp.offset for tp in found if tp.offset >= 0}
        started = {p: min(max(committed.get(p, low), low), high) for p, (low, high) in marks.items()}
        ends = {p: high for p, (_, high) in marks.items()}
        result = RedriveResult(dlq_topic, execute, bool(committed), started, ends, dict(started))
        pending = {p: ends[p] for p in partitions if started[p] < ends[p]}
        if not pending or (limit is not None and limit <= 0):
            return result
        consumer.assign([TopicPartition(dlq_topic, p, started[p]) for p in pending])
        total = sum(ends[p] - started[p] for p in pending)
        total = total if limit is None else min(total, limit)
        sources: dict[str, list[int] | str] = {}
        batch: list[DeadLetter] = []
        wanted = done = 0

        def flush() -> None:
            nonlocal done
            _handle(batch, consumer, producer, sources, result)
            done += len(batch)
            batch.clear()
            if on_progress is not None:
                on_progress(done, max(total, done))  # skipped records are not counted in --limit

        for msg in read_range(consumer, dlq_topic, pending):
            batch.append(letter := parse(msg))
            wanted += letter.is_dead_letter
            if len(batch) == BATCH or wanted == limit:
                flush()
                if wanted == limit:
                    break
        if batch:
            flush()
        return result
    finally:
        consumer.close()


def _handle(
    batch: list[DeadLetter],
    consumer: Consumer,
    producer: Producer | None,
    sources: dict[str, list[int] | str],
    result: RedriveResult,
) -> None:
    targets: list[tuple[DeadLetter, str, int]] = []
    for letter in batch:
        topic = letter.source_topic
        if topic is None:
            continue
        if topic not in sources:
            try:
                sources[topic] = partitions_of(consumer, topic)
            except KafkaError as exc:
                sources[topic] = str(exc)
        known = sources[topic]
        if isinstance(known, str):
            where = f"{result.topic}[{letter.partition}]@{letter.offset}"
            if producer is not None:  # checked before the batch's transaction begins: nothing of it is published
                raise KafkaError(
                    f"cannot redrive {where}: {known}; its batch was not published"
                    f" ({result.total:,} redriven before it; a re-run starts from that batch)"
                )
            result.unknown_topics.setdefault(topic, f"{known} (first named by {where})")
            continue
        partition = letter.source_partition
        targets.append((letter, topic, partition if partition is not None and partition in known else -1))
    positions = {letter.partition: letter.offset + 1 for letter in batch}  # skipped records are passed over too
    if producer is not None:
        _transaction(producer, consumer, result.topic, targets, positions)
    result.reached.update(positions)
    skipped = [(letter.partition, letter.offset) for letter in batch if letter.source_topic is None]
    result.skipped += len(skipped)
    result.skipped_first += skipped[: SAMPLE - len(result.skipped_first)]
    result.redriven.update(topic for _, topic, _ in targets)
    result.first += [letter for letter, _, _ in targets[: SAMPLE - len(result.first)]]


def _transaction(
    producer: Producer,
    consumer: Consumer,
    topic: str,
    targets: list[tuple[DeadLetter, str, int]],
    positions: dict[int, int],
) -> None:
    """Publish ``targets`` and commit ``positions`` of ``topic`` atomically: both happen, or neither does."""
    what = f"redriving {topic}"
    retrying(producer.begin_transaction, what)
    try:
        for letter, target, partition in targets:
            produce_blocking(producer, target, letter.value, letter.key, partition, headers=letter.redrive_headers())
        offsets = [TopicPartition(topic, p, o) for p, o in sorted(positions.items())]
        metadata = consumer.consumer_group_metadata()
        retrying(lambda: producer.send_offsets_to_transaction(offsets, metadata, TIMEOUT), what)
        retrying(lambda: producer.commit_transaction(4 * TIMEOUT), what)
    except BaseException:  # Ctrl-C included: what this batch produced is discarded, its offsets not committed
        with contextlib.suppress(KafkaException):
            producer.abort_transaction(TIMEOUT)
        raise


def redrive_command(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit: must be 0 or more")
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("redrive", total=None)

        def update(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        result = redrive(kafka, args.topic, limit=args.limit, execute=args.execute, on_progress=update)
    out, topic = plain_console(), args.topic
    topics = ", ".join(f"{t} {n:,}" for t, n in sorted(result.redriven.items()))
    verb = "redriven" if result.executed else "dry run: would redrive"
    out.print(f"{verb} {result.total:,} dead letters of {topic}" + (f" to: {topics}" if topics else ""))
    if not result.executed:
        for letter in result.first:
            out.print(
                f"  {topic}[{letter.partition}]@{letter.offset} -> {letter.source_topic}  key={key_text(letter)}  "
                f"(from {letter.source}, {letter.kind or '-'}; redrive count {letter.redrive_count + 1})"
            )
        if result.total > len(result.first):
            out.print(f"  ... and {result.total - len(result.first):,} more")
    for p, o in result.skipped_first:
        print(f"warning: {topic}[{p}]@{o} has no streamcar-source-topic header: skipped", file=sys.stderr)
    if result.skipped:
        passed = "were passed over in the committed progress" if result.executed else "would be passed over"
        out.print(
            f"skipped {result.skipped:,} record{'' if result.skipped == 1 else 's'} without a streamcar-source-topic"
            f" header (they {passed}: a re-run does not see them again)"
        )
    start = "resumed from offsets" if result.resumed else "started from the beginning, offsets"
    out.print(f"{start} {_offsets(result.started)}; {'now at' if result.executed else 'to'} {_offsets(result.reached)}")
    if result.left and result.executed:
        out.print(f"{result.left:,} left before the end offsets measured at start; run again to go on")
    elif result.left:
        out.print(f"{result.left:,} more after these, before the end offsets measured at start")
    for source, why in sorted(result.unknown_topics.items()):
        print(f"warning: source topic {source!r}: {why}; --execute would stop there", file=sys.stderr)
    if not result.executed:
        print("dry run: nothing was published; add --execute to redrive", file=sys.stderr)
    return 0


def _offsets(offsets: dict[int, int]) -> str:
    return ", ".join(f"[{p}] {o:,}" for p, o in sorted(offsets.items())) or "none"
