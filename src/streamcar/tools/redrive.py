"""``streamcar dlq redrive``: re-publish dead letters to their source topics, all of them or those a filter picks.

Each dead letter goes to its source topic (to its source partition while that exists) with its key, value and
headers, minus the dead-letter headers, plus ``streamcar-redrive-count`` (previous + 1). A run reads from where
its progress group left off up to the high watermarks measured at start, so it never chases what a running
sidecar dead-letters meanwhile (and a redriven record goes to its source topic, never back into this one). A
record without ``streamcar-source-topic`` cannot be redriven: it is skipped, and passed over like the others, so
a re-run does not meet it again.

Why re-running an interrupted ``redrive --execute`` never publishes a dead letter twice:

* its progress is the group's committed offsets, and each batch commits its records *and* the offsets past
  them in one Kafka transaction (``send_offsets_to_transaction``): both are committed, or neither is;
* the producer's ``transactional.id`` is derived from the topic (whatever the filter), so the next run's
  ``init_transactions`` fences the previous producer (a zombie can no longer commit) and aborts its open
  transaction; only then does the run read the committed offsets, asking for stable ones (read_committed), so
  it resumes right after the last committed batch;
* the records of an aborted transaction never reach read_committed consumers (librdkafka's default, so the
  sidecar's); a read_uncommitted consumer of the source topic may see them, and no producer can prevent that.

**Filters** (``--kind``, ``--grep``, ``--since``, ``--key``, ``--source-topic``: :class:`~streamcar.tools.dlq.Filter`,
as ``dlq show`` has them) let poison records stay behind while the others go around again. Their progress:

* each filter has its own progress group (:mod:`streamcar.tools.redrive_progress`): the unfiltered one keeps
  the name ``streamcar-redrive.<topic>``, a filtered one is ``streamcar-redrive.<topic>:<digest of the filter>``
  and its commits carry the filter. So re-running the same filtered command resumes where it stopped, and a
  dead letter it passed over (not matching) stays for any later run, with another filter or none;
* every run also reads the other groups' progress (after fencing, so no other run is committing) and does not
  redrive a dead letter that one of them already redrove: one below that group's committed offset that its
  filter accepts. An unfiltered run after ``--kind exhausted`` redrives the rest, not the exhausted ones again;
  a filtered run starts no earlier than the unfiltered progress, below which everything was handled;
* all runs of a topic share the transactional id, so two at once fence each other rather than both deciding
  from the same progress: the later one wins, the earlier fails with Kafka's fencing error.

The dry run shows what matches, what it passes over (by kind) and what other runs redrove already.

Progress is kept as committed offsets, and Kafka deletes a group's offsets ``offsets.retention.minutes`` (7 days
by default) after its last commit. An expired unfiltered progress starts the next unfiltered run from the
topic's beginning again; an expired filtered one no longer tells which dead letters it redrove beyond the
unfiltered progress. Either way, a redrive after that long can publish dead letters again that were redriven
before: run the unfiltered redrive once the filtered ones are done (its progress then covers all of theirs), and
within the retention.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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
from streamcar.tools._positions import duration_ms
from streamcar.tools.dlq import SAMPLE, DeadLetter, Filter, filter_of, key_text, parse
from streamcar.tools.redrive_progress import Covered, group_of, metadata_of, read_progress

BATCH = 500  # dead letters per transaction: what an interrupted run leaves uncommitted, to be redone

Action = Literal["redrive", "skip", "pass", "already"]
"""What a run does with a record: redrive it; skip it (not a dead letter: cannot be redriven); pass over it (the
filter does not take it: it stays for other runs); leave it (another run redrove it already)."""


@dataclass
class RedriveResult:
    topic: str
    executed: bool
    resumed: bool  # an earlier run had committed progress (else this one started at the low watermarks)
    started: dict[int, int]
    ends: dict[int, int]  # the high watermarks measured at start: never read past
    reached: dict[int, int]  # after the last record handled, per partition (committed, when executed)
    group: str = ""  # the progress group
    where: Filter | None = None
    from_unfiltered: bool = False  # started where the unfiltered progress is, past this filter's own
    redriven: Counter[str] = field(default_factory=Counter)  # per source topic
    skipped: int = 0
    skipped_first: list[tuple[int, int]] = field(default_factory=list)
    passed_over: Counter[str] = field(default_factory=Counter)  # per kind: what the filter did not take
    already: Counter[str] = field(default_factory=Counter)  # per progress group that redrove them
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
    where: Filter | None = None,
    limit: int | None = None,
    execute: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> RedriveResult:
    """Re-publish ``dlq_topic``'s dead letters that ``where`` accepts (all, when None) to their source topics; a
    dry run unless ``execute``.

    At most ``limit`` are redriven (skipped, passed over and already redriven records do not count);
    ``on_progress(done, total)`` follows the records handled. KafkaError when a source topic does not exist
    (nothing of that batch is published) or a transaction fails (it is aborted); the batches committed before
    stay committed and a re-run resumes after them.
    """
    where = None if where is None or where.empty else where
    group, metadata = group_of(dlq_topic, where), metadata_of(where)
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
        covered = Covered(read_progress(kafka, dlq_topic, partitions, besides=group))
        started = {p: min(max(committed.get(p, low), covered.start(p), low), high) for p, (low, high) in marks.items()}
        ends = {p: high for p, (_, high) in marks.items()}
        result = RedriveResult(dlq_topic, execute, bool(committed), started, ends, dict(started), group, where)
        result.from_unfiltered = any(started[p] > max(committed.get(p, 0), marks[p][0]) for p in partitions)
        pending = {p: ends[p] for p in partitions if started[p] < ends[p]}
        if not pending or (limit is not None and limit <= 0):
            return result
        consumer.assign([TopicPartition(dlq_topic, p, started[p]) for p in pending])
        total = sum(ends[p] - started[p] for p in pending)
        total = total if limit is None else min(total, limit)
        sources: dict[str, list[int] | str] = {}
        batch: list[tuple[DeadLetter, Action]] = []
        wanted = done = 0

        def flush() -> None:
            nonlocal done
            _handle(batch, consumer, producer, sources, result, metadata)
            done += len(batch)
            batch.clear()
            if on_progress is not None:
                on_progress(done, max(total, done))  # records that are not redriven are not counted in --limit

        for msg in read_range(consumer, dlq_topic, pending):
            letter = parse(msg)
            batch.append((letter, action := _action(letter, where, covered, result)))
            wanted += action == "redrive"
            if len(batch) == BATCH or wanted == limit:
                flush()
                if wanted == limit:
                    return result
        if batch:
            flush()
        # read to the ends: past a last offset no record reaches too (the commit marker of a dead-letter topic an
        # exactly-once pipeline writes), else every run said "1 left ... run again"
        gaps = {p: end for p, end in pending.items() if result.reached[p] < end}
        if gaps and producer is not None:
            _transaction(producer, consumer, dlq_topic, [], gaps, metadata)
        result.reached.update(gaps)
        return result
    finally:
        consumer.close()


def _action(letter: DeadLetter, where: Filter | None, covered: Covered, result: RedriveResult) -> Action:
    """What this run does with ``letter`` (see :data:`Action`); counts the ones it passes over or leaves."""
    if where is not None and not where(letter):
        result.passed_over[(letter.kind or "-") if letter.is_dead_letter else ""] += 1
        return "pass"
    if not letter.is_dead_letter:
        return "skip"
    if (by := covered.by(letter)) is not None:
        result.already[by.describe()] += 1
        return "already"
    return "redrive"


def _handle(
    batch: list[tuple[DeadLetter, Action]],
    consumer: Consumer,
    producer: Producer | None,
    sources: dict[str, list[int] | str],
    result: RedriveResult,
    metadata: str,
) -> None:
    targets: list[tuple[DeadLetter, str, int]] = []
    for letter, action in batch:
        topic = letter.source_topic
        if action != "redrive" or topic is None:
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
    # every record of the batch is handled for this run's filter: the progress passes them all
    positions = {letter.partition: letter.offset + 1 for letter, _ in batch}
    if producer is not None:
        _transaction(producer, consumer, result.topic, targets, positions, metadata)
    result.reached.update(positions)
    skipped = [(letter.partition, letter.offset) for letter, action in batch if action == "skip"]
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
    metadata: str,
) -> None:
    """Publish ``targets`` and commit ``positions`` of ``topic`` (each with ``metadata``: the run's filter)
    atomically: both happen, or neither does."""
    what = f"redriving {topic}"
    retrying(producer.begin_transaction, what)
    try:
        for letter, target, partition in targets:
            produce_blocking(producer, target, letter.value, letter.key, partition, headers=letter.redrive_headers())
        offsets = [TopicPartition(topic, p, o, metadata) for p, o in sorted(positions.items())]
        group_metadata = consumer.consumer_group_metadata()
        retrying(lambda: producer.send_offsets_to_transaction(offsets, group_metadata, TIMEOUT), what)
        retrying(lambda: producer.commit_transaction(4 * TIMEOUT), what)
    except BaseException:  # Ctrl-C included: what this batch produced is discarded, its offsets not committed
        with contextlib.suppress(KafkaException):
            producer.abort_transaction(TIMEOUT)
        raise


def redrive_command(args: argparse.Namespace) -> int:
    where = filter_of(args)  # bad usage is reported before any network call
    if args.execute and args.since is not None and duration_ms(args.since.strip()) is not None:
        # a time back from now is another moment, so another filter and progress group, on every run
        moment = where.describe().split("--since ", 1)[1].split(" ", 1)[0]
        raise UsageError(
            f"--since {args.since.strip()} with --execute: a time back from now is a new filter, with a progress "
            f"group of its own, on every run; give the moment it stands for: --since {moment}"
        )
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit: must be 0 or more")
    metadata_of(where)  # a filter too long to keep with the progress, before any network call too
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("redrive", total=None)

        def update(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        result = redrive(kafka, args.topic, where=where, limit=args.limit, execute=args.execute, on_progress=update)
    _report(result)
    if not result.executed:
        print("dry run: nothing was published; add --execute to redrive", file=sys.stderr)
    return 0


def _report(result: RedriveResult) -> None:
    out, topic, executed = plain_console(), result.topic, result.executed
    topics = ", ".join(f"{t} {n:,}" for t, n in sorted(result.redriven.items()))
    verb = "redriven" if executed else "dry run: would redrive"
    noun = "dead letter" if result.total == 1 else "dead letters"
    out.print(f"{verb} {result.total:,} {noun} of {topic}" + (f" to: {topics}" if topics else ""))
    if not executed:
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
        passed = "were passed over in the committed progress" if executed else "would be passed over"
        out.print(
            f"skipped {result.skipped:,} record{'' if result.skipped == 1 else 's'} without a streamcar-source-topic"
            f" header (they {passed}: a re-run does not see them again)"
        )
    if result.from_unfiltered:
        start = "started where the unfiltered redrive is, offsets"
    else:
        start = "resumed from offsets" if result.resumed else "started from the beginning, offsets"
    out.print(f"{start} {_offsets(result.started)}; {'now at' if executed else 'to'} {_offsets(result.reached)}")
    if result.left and executed:
        out.print(f"{result.left:,} left before the end offsets measured at start; run again to go on")
    elif result.left:
        out.print(f"{result.left:,} more after these, before the end offsets measured at start")
    if result.where is not None:
        out.print(f"filter: {result.where.describe()}; progress: consumer group {result.group} (this filter's own)")
        over = sum(result.passed_over.values())
        kinds = ", ".join(f"{k or 'not dead letters'} {n:,}" for k, n in sorted(result.passed_over.items()))
        verb = "passed over" if executed else "would pass over"
        out.print(
            f"{verb} {over:,} record{'' if over == 1 else 's'} the filter does not take"
            + (f" ({kinds})" if kinds else "")
            + ": they stay for other runs (another filter, or none)"
        )
    else:
        out.print(f"progress: consumer group {result.group}")
    if result.already:
        count = sum(result.already.values())
        by = "; ".join(f"{group} {n:,}" for group, n in sorted(result.already.items()))
        out.print(f"{count:,} matching dead letter{'' if count == 1 else 's'} left alone: redriven already by {by}")
    for source, why in sorted(result.unknown_topics.items()):
        print(f"warning: source topic {source!r}: {why}; --execute would stop there", file=sys.stderr)


def _offsets(offsets: dict[int, int]) -> str:
    return ", ".join(f"[{p}] {o:,}" for p, o in sorted(offsets.items())) or "none"
