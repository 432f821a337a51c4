"""``streamcar replay``: re-run a range of a topic, into another topic or through a pipeline's service.

The range is ``[--from, --until)`` per partition (``--until`` defaults to the end as the replay starts, so a
replay always finishes even while producers keep writing). Two destinations:

* ``--to-topic X`` copies the records: key, value, headers and create-time timestamp kept, and each source
  partition written to one target partition (``p % partitions(X)``), so the order within a partition is kept.
  The copy streams (librdkafka's queues bound the memory), with an idempotent acks=all producer; it fails with
  one line if the broker refused any record.
* ``-c streamcar.yaml --pipeline P`` runs the records through P's service with P's call, ordering, retry,
  publish and dead-letter settings, exactly as ``streamcar run`` would, but reading by assignment: P's consumer
  group and its committed offsets are not touched. It ends when every record of the range is done. As in
  ``run``, a message that cannot be delivered and has no dead-letter topic is never dropped, so the replay
  waits for it (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streamcar.config import Config, KafkaConfig, load_config
from streamcar.errors import KafkaError as StreamcarKafkaError
from streamcar.errors import UsageError
from streamcar.kafka.records import UNREADABLE, raw_headers
from streamcar.kafka.settings import for_producer
from streamcar.tools._common import (
    client_config,
    kafka_settings,
    partitions_of,
    produce_blocking,
    range_batches,
    reader,
    watermarks,
)
from streamcar.tools._positions import parse_position, resolve

Ranges = dict[int, tuple[int, int]]
"""partition -> [start, until)"""

_err = Console(stderr=True)


@dataclass
class CopyResult:
    copied: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    headerless: int = 0
    """Records copied without their headers: a header name was not UTF-8, so none of them could be read."""

    @property
    def total(self) -> int:
        return sum(self.copied.values())


def plan(kafka: KafkaConfig, topic: str, start: str, until: str | None, partition: int | None) -> Ranges:
    """The range to replay in each partition of ``topic`` (positions as in :mod:`streamcar.tools._positions`)."""
    begin = parse_position(start, option="--from")
    end = parse_position(until, option="--until") if until is not None else None
    consumer = reader(kafka)
    try:
        partitions = partitions_of(consumer, topic, only=partition)
        marks = watermarks(consumer, topic, partitions)
        starts = resolve(consumer, topic, partitions, begin, marks)
        ends = resolve(consumer, topic, partitions, end, marks) if end is not None else {p: marks[p][1] for p in marks}
    finally:
        consumer.close()
    return {p: (starts[p], max(starts[p], ends[p])) for p in partitions}


def copy(
    kafka: KafkaConfig,
    topic: str,
    ranges: Ranges,
    to_topic: str,
    on_progress: Callable[[int], None] | None = None,
) -> CopyResult:
    """Copy ``ranges`` of ``topic`` into ``to_topic``; raises RdKafkaError if any record was not acknowledged."""
    active = {p: r for p, r in ranges.items() if r[0] < r[1]}
    result = CopyResult(copied=dict.fromkeys(ranges, 0))
    if not active:
        return result
    consumer = reader(kafka, **{"fetch.max.bytes": 64 * 1024 * 1024})
    producer = Producer(
        client_config(
            kafka,
            **{"acks": "all", "enable.idempotence": True, "linger.ms": 20, "batch.size": 1_000_000},
        )
    )
    failures: list[str] = []

    def on_delivery(err: RdKafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    started = time.monotonic()
    try:
        targets = partitions_of(consumer, to_topic)
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in active.items()])
        ends = {p: until for p, (_, until) in active.items()}
        target_of = {p: targets[p % len(targets)] for p in active}
        copied = result.copied
        produce, create_time = producer.produce, TIMESTAMP_CREATE_TIME
        for batch in range_batches(consumer, topic, ends, size=5000):
            # The hot loop of a replay, kept flat: Python's per-record cost is what bounds its speed.
            for msg in batch:
                p: int = msg.partition()  # type: ignore[assignment]  # never None on a consumed record
                kind, timestamp = msg.timestamp()
                if kind != create_time:
                    timestamp = 0
                headers = raw_headers(msg)  # once: see streamcar.kafka.records
                if headers is UNREADABLE:
                    result.headerless += 1
                try:  # positional: topic, value, key, partition, callback, on_delivery, timestamp, headers
                    produce(to_topic, msg.value(), msg.key(), target_of[p], None, on_delivery, timestamp, headers)
                except BufferError:  # librdkafka's queue is full: let deliveries drain it (this bounds the memory)
                    produce_blocking(
                        producer, to_topic, msg.value(), msg.key(), target_of[p], None, on_delivery, timestamp, headers
                    )
                copied[p] += 1
            producer.poll(0)
            if on_progress is not None:
                on_progress(len(batch))
            if failures:
                break
        if producer.flush(60) > 0:
            failures.append("not acknowledged within 60 s")
    finally:
        consumer.close()
    result.seconds = time.monotonic() - started
    if failures:
        raise StreamcarKafkaError(f"{len(failures)} records were not copied to {to_topic}: {failures[0]}")
    return result


# --- through a pipeline ------------------------------------------------------------------------------------------


@dataclass
class PipelineResult:
    results: dict[str, int]
    published: int
    dead_lettered: int
    retries: int
    seconds: float


async def through_pipeline(
    config: Config,
    name: str,
    topic: str,
    ranges: Ranges,
    on_progress: Callable[[int, int], None] | None = None,
) -> PipelineResult:
    """Run ``ranges`` of ``topic`` through pipeline ``name``'s service, publishing as ``run`` does."""
    from streamcar.call import build_caller
    from streamcar.engine.pipeline import Pipeline
    from streamcar.engine.source import RangeSource
    from streamcar.kafka.producer import AsyncProducer

    pipeline_config = config.pipelines[name]
    loop = asyncio.get_running_loop()
    producer = AsyncProducer(for_producer(config.kafka.client_config()), loop)
    caller = build_caller(pipeline_config.call, pipeline_config.in_flight_bound)
    pipeline = Pipeline(
        name,
        pipeline_config,
        config.kafka,
        caller,
        producer,
        source=RangeSource({(topic, p): r for p, r in ranges.items()}),
    )
    started = time.monotonic()
    never = asyncio.Event()
    task = asyncio.create_task(pipeline.run(never))
    try:
        while not task.done():
            if on_progress is not None:
                on_progress(*pipeline.replay_progress())
            await asyncio.wait({task}, timeout=0.2)
        task.result()
    finally:
        if not task.done():
            never.set()
            await task
        await producer.close()
    stats = pipeline.stats
    return PipelineResult(
        results=dict(stats.results),
        published=stats.published,
        dead_lettered=stats.dead_lettered,
        retries=stats.retries,
        seconds=time.monotonic() - started,
    )


# --- the command ---------------------------------------------------------------------------------------------------


def replay_command(args: argparse.Namespace) -> int:
    if (args.to_topic is None) == (args.pipeline is None):
        raise UsageError("replay needs exactly one destination: --to-topic X, or -c streamcar.yaml --pipeline P")
    config: Config | None = None
    if args.pipeline is not None:
        if args.config is None:
            raise UsageError("--pipeline needs the config that defines it: -c streamcar.yaml")
        config = load_config(args.config)
        if args.pipeline not in config.pipelines:
            names = ", ".join(sorted(config.pipelines))
            raise UsageError(f"--pipeline: {args.config} has no pipeline {args.pipeline!r} (it has: {names})")
        if args.bootstrap_servers:
            kafka = kafka_settings(args.config, args.bootstrap_servers)
            config = config.model_copy(update={"kafka": kafka})
        kafka = config.kafka
    else:
        kafka = kafka_settings(args.config, args.bootstrap_servers)
    ranges = plan(kafka, args.topic, args.from_, args.until, args.partition)
    total = sum(until - start for start, until in ranges.values())
    where = ", ".join(f"[{p}] {s}..{u}" for p, (s, u) in sorted(ranges.items()) if s < u) or "nothing"
    destination = args.to_topic if args.to_topic is not None else f"pipeline {args.pipeline}"
    _err.print(f"replaying {total:,} records of {args.topic} ({where}) into {destination}")
    if total == 0:
        return 0
    show = not args.quiet and sys.stderr.isatty()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
        disable=not show,
    ) as progress:
        bar = progress.add_task("replay", total=total)
        if args.to_topic is not None:
            copied = copy(kafka, args.topic, ranges, args.to_topic, lambda n: progress.advance(bar, n))
            rate = copied.total / max(copied.seconds, 1e-3)
            summary = f"copied {copied.total:,} records to {args.to_topic} in {copied.seconds:.2f}s ({rate:,.0f}/s)"
            if copied.headerless:
                summary += f"; {copied.headerless:,} without their headers (a header name was not UTF-8)"
        else:
            assert config is not None

            def update(done: int, of: int) -> None:
                progress.update(bar, completed=done, total=of)

            ran = asyncio.run(through_pipeline(config, args.pipeline, args.topic, ranges, update))
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(ran.results.items())) or "none"
            summary = (
                f"replayed {total:,} records through pipeline {args.pipeline} in {ran.seconds:.1f}s: {kinds}; "
                f"{ran.published:,} replies published, {ran.dead_lettered:,} dead-lettered, {ran.retries:,} retries"
            )
    print(summary)
    return 0
