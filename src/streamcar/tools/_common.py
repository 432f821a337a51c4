"""What the operator tools share: which cluster to talk to, the clients, and reading ranges of a topic.

Every tool takes ``-b/--bootstrap-servers`` (default ``$KAFKA_BOOTSTRAP``, else ``127.0.0.1:9092``) and
``-c/--config`` (a streamcar.yaml whose ``kafka:`` section, security included, is used; ``-b`` still wins).

Positions (``--from``, ``--until``, ``--to``) are parsed and resolved in :mod:`streamcar.tools._positions`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient
from rich.console import Console

from streamcar.config import KafkaConfig, load_config
from streamcar.errors import KafkaError, UsageError
from streamcar.kafka.errors import worth_retrying
from streamcar.kafka.security import creation_failure
from streamcar.tools._reach import ReachWatch, await_reach

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
RETRIES = 5  # attempts of a Kafka call whose error is retriable, 0.2 s apart and doubling
T = TypeVar("T")
TIMEOUT = 15.0  # seconds for a metadata or offsets request


def kafka_settings(config: Path | None, bootstrap: str | None) -> KafkaConfig:
    """The cluster: ``config``'s kafka section (if given), with ``bootstrap`` (if given) as its brokers."""
    if config is not None:
        kafka = load_config(config).kafka
        if bootstrap:
            kafka = kafka.model_copy(update={"bootstrap_servers": _checked_servers(bootstrap)})
        return kafka
    return KafkaConfig(
        bootstrap_servers=_checked_servers(bootstrap or os.environ.get("KAFKA_BOOTSTRAP") or DEFAULT_BOOTSTRAP)
    )


def _checked_servers(servers: str) -> str:
    try:
        return KafkaConfig(bootstrap_servers=servers).bootstrap_servers
    except ValueError as exc:
        raise UsageError(f"--bootstrap-servers: {_first_error(exc)}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        found = errors()
        if found:
            return str(found[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


def plain_console() -> Console:
    """stdout for tables and lines: text printed as it is (no rich markup), and not cut to 80 columns when piped."""
    return Console(markup=False, highlight=False, width=None if sys.stdout.isatty() else 10_000)


def client_config(kafka: KafkaConfig, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = dict(kafka.client_config())
    if not os.environ.get("STREAMCAR_DEBUG"):
        # A tool says what failed in one line; librdkafka's own log (a line per reconnect, dozens a second when a
        # broker is down or refuses us) would bury it. A log_level in the config's librdkafka section still wins.
        config.setdefault("log_level", 0)
    config.update(extra)
    return config


def _connected(factory: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """A client of ``config`` that has reached Kafka; else KafkaError in one line, within seconds, naming the
    address tried and the likely cause (refused, unresolvable, no answer, a security protocol mismatch, or
    credentials or a certificate Kafka refuses): see :mod:`streamcar.tools._reach`."""
    watch = ReachWatch(config)
    try:
        client = factory({**config, "error_cb": watch})
    except KafkaException as exc:
        raise KafkaError(creation_failure(exc, config)) from None
    failure = await_reach(client, watch, config)
    if failure is not None:
        del client  # destroyed before the failure is raised (see await_access)
        raise KafkaError(failure)
    return client


def admin(kafka: KafkaConfig) -> AdminClient:
    return _connected(AdminClient, client_config(kafka))


def reader(kafka: KafkaConfig, **extra: Any) -> Consumer:
    """A consumer for assign()-style reading: no group membership and no offset storing; nothing is committed
    unless the caller passes its own group.id and commits (dlq redrive does, through transactions)."""
    settings = {
        "group.id": "streamcar-tools",  # required by librdkafka; never joined (assign only) and never committed to
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        # records of open or aborted transactions are not shown (an exactly-once pipeline's output as its
        # readers see it); the tools' --uncommitted passes read_uncommitted
        "isolation.level": "read_committed",
        **extra,
    }
    return _connected(Consumer, client_config(kafka, **settings))


def isolation(uncommitted: bool) -> dict[str, str]:
    """The reader settings for ``--uncommitted``."""
    return {"isolation.level": "read_uncommitted" if uncommitted else "read_committed"}


def partitions_of(consumer: Consumer, topic: str, *, only: int | None = None) -> list[int]:
    """The topic's partition numbers (just ``only``, when given); KafkaError if it does not exist or the cluster
    cannot be reached, UsageError if it has no partition ``only``."""
    # A consumer, not an AdminClient: the admin client's metadata request auto-creates the topic on brokers
    # with auto.create.topics.enable (Kafka's default).
    try:
        metadata = consumer.list_topics(topic=topic, timeout=TIMEOUT)
    except KafkaException as exc:
        raise KafkaError(f"cannot reach Kafka: {exc.args[0].str() if exc.args else exc}") from None
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaError(f"topic {topic!r} does not exist")
    partitions = sorted(found.partitions)
    if only is None:
        return partitions
    if only not in partitions:
        raise UsageError(f"--partition: {topic} has no partition {only} (it has 0..{len(partitions) - 1})")
    return [only]


def watermarks(consumer: Consumer, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(low, high) watermark per partition."""
    marks = {}
    for partition in partitions:
        try:
            marks[partition] = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)
        except KafkaException as exc:
            raise KafkaError(f"{topic}[{partition}]: cannot read its offsets: {exc.args[0].str()}") from None
    return marks


def retrying(call: Callable[[], T], what: str) -> T:
    """``call``, again after a backoff while librdkafka calls its error retriable (a coordinator moving, a timeout)."""
    for attempt in range(RETRIES):
        try:
            return call()
        except KafkaException as exc:
            error: RdKafkaError = exc.args[0]
            if not worth_retrying(error) or attempt == RETRIES - 1:
                raise KafkaError(f"{what}: {error.str()}") from None
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


READ_BATCH = 500  # records per consume() while reading a range


def range_batches(
    consumer: Consumer, topic: str, ends: Mapping[int, int], *, size: int = READ_BATCH
) -> Generator[list[Message], None, None]:
    """The assigned records of ``topic`` before ``ends`` (partition -> end offset), batch by batch, in order per
    partition. A partition is done (and paused) at its end, or at its EOF: a range can end in a transaction
    marker that no record reaches. KafkaError on any other consumer error."""
    remaining = set(ends)

    def finish(partition: int) -> None:
        if partition in remaining:
            remaining.discard(partition)
            consumer.pause([TopicPartition(topic, partition)])

    while remaining:
        batch: list[Message] = []
        for msg in consumer.consume(num_messages=size, timeout=0.2):
            p: int = msg.partition()  # type: ignore[assignment]  # never None on a consumed record
            error = msg.error()
            if error is not None:
                if error.code() != RdKafkaError._PARTITION_EOF:
                    raise KafkaError(f"reading {topic}[{p}]: {error.str()}")
                finish(p)
                continue
            offset: int = msg.offset()  # type: ignore[assignment]
            if p not in remaining or offset >= ends[p]:
                finish(p)
                continue
            batch.append(msg)
            if offset >= ends[p] - 1:
                finish(p)
        if batch:
            yield batch


def read_range(consumer: Consumer, topic: str, ends: Mapping[int, int]) -> Generator[Message, None, None]:
    """The records of :func:`range_batches`, one by one."""
    for batch in range_batches(consumer, topic, ends):
        yield from batch


def produce_blocking(producer: Producer, topic: str, *args: Any, **kwargs: Any) -> None:
    """``producer.produce(topic, ...)``, waiting while librdkafka's queue is full: that wait is what bounds the
    memory of a tool that copies a whole range."""
    while True:
        try:
            producer.produce(topic, *args, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)
