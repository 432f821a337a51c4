"""``streamcar topics create|list|describe``: topics, their partitions, replication and configs.

A dev loop that starts from nothing needs topics, and the Kafka that ``streamcar kafka start`` fetches has no
``kafka-topics.sh``; the options are that tool's words.

``create NAME...`` creates every name in one request. ``--partitions`` and ``--replication-factor`` default to
the broker's ``num.partitions`` and ``default.replication.factor`` (the request says -1, KIP-464), and the line
printed says what the topic got, and that those were the broker's defaults. ``--config KEY=VALUE`` (repeated)
sets topic configs. A created topic is waited for (bounded by the tools' timeout) until the metadata names a
leader for each of its partitions, so the next command, which asks for that metadata, finds it. A topic that
exists fails the command (exit 1) unless ``--if-not-exists``: then it is named and left as it is, saying so
when its partition count is not the one asked for. What the broker refuses as invalid (the name, a config key or
value, the partition count, the replication factor) is its own words in one line, exit 2; any other refusal
(authorization, a timeout) exits 1. The topics created before a failure stay created.

``list`` names every topic with its partition count and replication factor; Kafka's internal topics
(``__consumer_offsets``, ``__transaction_state``, ...) only with ``--all``.

``describe NAME`` shows, per partition, the leader, the replicas and the in-sync ones (flagging a partition
under-replicated or without a leader), the low and high watermarks and the offsets between them (the records,
or an upper bound of them in a compacted topic or one with transaction markers), then the topic's configs that
are not Kafka's defaults, with where each comes from (set on the topic, or the broker's).

Every question names its topic through DescribeTopics or DescribeConfigs, which never create it; an admin
client's metadata request for a named topic has the broker create it (``auto.create.topics.enable``, on by
default), and so does a producer's: see :func:`streamcar.tools._common.partitions_of`.

Library use: :func:`create_topics`, :func:`list_topics`, :func:`describe_topic`; the commands that print them
are :mod:`streamcar.tools.topics_cli`.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicCollection, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource, ConfigSource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from streamcar.config import KafkaConfig
from streamcar.errors import KafkaError, UsageError
from streamcar.tools._common import TIMEOUT, admin, reader

INVALID = frozenset(
    {
        RdKafkaError.INVALID_CONFIG,
        RdKafkaError.INVALID_PARTITIONS,
        RdKafkaError.INVALID_REPLICATION_FACTOR,
        RdKafkaError.INVALID_REPLICA_ASSIGNMENT,
        RdKafkaError.TOPIC_EXCEPTION,  # an invalid name (Kafka's InvalidTopicException)
        RdKafkaError.INVALID_REQUEST,
        RdKafkaError.POLICY_VIOLATION,
    }
)
"""What the broker refuses to create as invalid input: exit 2."""

SOURCES = {
    ConfigSource.DYNAMIC_TOPIC_CONFIG: "topic",
    ConfigSource.DYNAMIC_BROKER_CONFIG: "broker (dynamic)",
    ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG: "cluster default (dynamic)",
    ConfigSource.STATIC_BROKER_CONFIG: "broker config file",
    ConfigSource.DEFAULT_CONFIG: "default",
}


@dataclass(frozen=True)
class TopicSummary:
    name: str
    partitions: int
    replication: int
    internal: bool = False


@dataclass(frozen=True)
class Created:
    topic: TopicSummary
    existed: bool = False
    """True: it was there already (``if_not_exists``), left as it is."""
    defaults: tuple[str, ...] = ()
    """The broker settings it took its partitions or replication from."""


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    leader: int | None
    """None: the partition has no leader (offline)."""
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    low: int | None = None
    """The watermarks; None when they cannot be read (no leader)."""
    high: int | None = None

    @property
    def records(self) -> int | None:
        return None if self.low is None or self.high is None else self.high - self.low

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class ConfigValue:
    name: str
    value: str | None
    """None for a sensitive value (Kafka never returns it)."""
    source: str
    read_only: bool = False


@dataclass(frozen=True)
class TopicDetails:
    name: str
    topic_id: str
    internal: bool
    partitions: list[PartitionInfo]
    configs: list[ConfigValue] = field(default_factory=list)
    """The configs that are not Kafka's defaults."""

    @property
    def replication(self) -> int:
        return max((len(p.replicas) for p in self.partitions), default=0)


class TopicsFailed(KafkaError):
    """Some topics were not created; ``exit_code`` is 2 when every refusal was of invalid input."""

    def __init__(self, message: str, *, invalid: bool) -> None:
        super().__init__(message)
        self.exit_code = 2 if invalid else 1


# --- the library ---------------------------------------------------------------------------------------------------


def _refuse_colliding(names: Sequence[str]) -> None:
    """Names that differ only by '.' against '_' are one name in Kafka's metrics (which replace '.' with '_'),
    and Kafka refuses the second once the first exists: a typo to catch before either is made."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.replace(".", "_"), name)
        if other != name:
            raise UsageError(
                f"topics create: {other!r} and {name!r} collide: Kafka's metrics name both the same ('.' becomes "
                "'_'); use one of them"
            )


def create_topics(
    kafka: KafkaConfig,
    names: Sequence[str],
    *,
    partitions: int | None = None,
    replication: int | None = None,
    configs: Mapping[str, str] | None = None,
    if_not_exists: bool = False,
    on_done: Callable[[Created], None] | None = None,
) -> list[Created]:
    """Create ``names`` (see the module) and wait until their metadata shows; returns what was created, or was
    there already with ``if_not_exists``. TopicsFailed (after the others are done) if any was not created.
    ``on_done(created)`` is called for each topic as it is ready."""
    if not names:
        raise UsageError("topics create: name at least one topic")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if list(names).count(n) > 1})
        raise UsageError(f"topics create: {', '.join(map(repr, twice))} named twice")
    _refuse_colliding(names)
    if partitions is not None and partitions < 1:
        raise UsageError(f"--partitions: {partitions} is not a partition count (1 or more)")
    if replication is not None and replication < 1:
        raise UsageError(f"--replication-factor: {replication} is not a replication factor (1 or more)")
    client = admin(kafka)
    new = [NewTopic(n, partitions or -1, replication or -1, config=dict(configs or {})) for n in names]
    try:
        futures = client.create_topics(new, operation_timeout=TIMEOUT, request_timeout=TIMEOUT + 5)
    except (KafkaException, ValueError, TypeError) as exc:
        raise UsageError(f"topics create: {_words(exc)}") from None
    defaults = tuple(
        setting
        for setting, given in (("num.partitions", partitions), ("default.replication.factor", replication))
        if given is None
    )
    made: list[str] = []
    existing: list[str] = []
    failures: list[tuple[str, str, bool]] = []  # name, why, invalid input
    for name in names:
        try:
            futures[name].result(timeout=TIMEOUT + 10)
            made.append(name)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, RdKafkaError) else None
            if code == RdKafkaError.TOPIC_ALREADY_EXISTS and if_not_exists:
                existing.append(name)
            elif code == RdKafkaError.TOPIC_ALREADY_EXISTS:
                failures.append((name, "it exists already (--if-not-exists accepts that)", False))
            else:
                failures.append((name, _words(exc), code in INVALID))
        except concurrent.futures.TimeoutError:
            failures.append((name, f"no answer from Kafka within {TIMEOUT + 10:.0f}s", False))
    done: list[Created] = []
    consumer = reader(kafka)
    try:
        for name in names:
            if name in made or name in existing:
                summary = _await_leaders(consumer, name, partitions if name in made else None)
                created = Created(summary, existed=name in existing, defaults=() if name in existing else defaults)
                done.append(created)
                if on_done is not None:
                    on_done(created)
    finally:
        consumer.close()
    if failures:
        raise _failed(failures, len(names))
    return done


def _failed(failures: list[tuple[str, str, bool]], asked: int) -> TopicsFailed:
    invalid = all(bad for _, _, bad in failures)
    if len(failures) == 1:
        name, why, _ = failures[0]
        return TopicsFailed(f"cannot create topic {name!r}: {why}", invalid=invalid)
    reasons = "; ".join(f"{name!r}: {why}" for name, why, _ in failures)
    return TopicsFailed(f"cannot create {len(failures)} of {asked} topics: {reasons}", invalid=invalid)


def _await_leaders(consumer: Consumer, name: str, partitions: int | None) -> TopicSummary:
    """The topic once its metadata shows it whole: ``partitions`` partitions (any, when None), each with a leader.
    A consumer's metadata request, which never creates the topic; bounded by the tools' timeout."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            found = consumer.list_topics(topic=name, timeout=2).topics.get(name)
        except KafkaException:
            found = None
        if found is not None and found.error is None and found.partitions:
            ready = partitions is None or len(found.partitions) == partitions
            if ready and all(p.leader >= 0 for p in found.partitions.values()):
                replication = max(len(p.replicas) for p in found.partitions.values())
                return TopicSummary(name, len(found.partitions), replication)
        if time.monotonic() >= deadline:
            raise KafkaError(
                f"topic {name!r} was created, but its partitions did not all show a leader within {TIMEOUT:.0f}s"
            )
        time.sleep(0.1)  # metadata propagates from the controller to the brokers: no event to wait on


def list_topics(kafka: KafkaConfig, *, internal: bool = False) -> list[TopicSummary]:
    """Every topic (Kafka's internal ones only with ``internal``), by name."""
    client = admin(kafka)
    try:
        names = sorted(client.list_topics(timeout=TIMEOUT).topics)  # every topic: creates none
    except KafkaException as exc:
        raise KafkaError(f"cannot list topics: {_words(exc)}") from None
    found = []
    for description in _described(client, names).values():
        if description is None or (description.is_internal and not internal):
            continue  # gone since the listing
        replication = max((len(p.replicas) for p in description.partitions), default=0)
        found.append(TopicSummary(description.name, len(description.partitions), replication, description.is_internal))
    return sorted(found, key=lambda t: t.name)


def describe_topic(kafka: KafkaConfig, name: str) -> TopicDetails:
    """Partitions (leader, replicas, ISR, watermarks) and the configs that are not defaults of ``name``;
    KafkaError if it does not exist."""
    client = admin(kafka)
    description = _described(client, [name])[name]
    if description is None:
        raise KafkaError(f"topic {name!r} does not exist")
    configs = _configs(client, name)
    consumer = reader(kafka)
    try:
        partitions = [_partition(consumer, name, p) for p in sorted(description.partitions, key=lambda p: p.id)]
    finally:
        consumer.close()
    return TopicDetails(name, str(description.topic_id), description.is_internal, partitions, configs)


def _described(client: AdminClient, names: list[str]) -> dict[str, Any]:
    """DescribeTopics of ``names``: name -> description, None for a topic that does not exist."""
    if not names:
        return {}
    futures = client.describe_topics(TopicCollection(names), request_timeout=TIMEOUT)
    found: dict[str, Any] = {}
    for name, future in futures.items():
        try:
            found[name] = future.result(timeout=TIMEOUT + 5)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, RdKafkaError) and error.code() == RdKafkaError.UNKNOWN_TOPIC_OR_PART:
                found[name] = None
                continue
            raise KafkaError(f"topic {name!r}: {_words(exc)}") from None
        except concurrent.futures.TimeoutError:
            raise KafkaError(f"topic {name!r}: no answer from Kafka within {TIMEOUT + 5:.0f}s") from None
    return found


def _configs(client: AdminClient, name: str) -> list[ConfigValue]:
    resource = ConfigResource(ResourceType.TOPIC, name)
    try:
        entries = client.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(timeout=TIMEOUT + 5)
    except KafkaException as exc:
        raise KafkaError(f"topic {name!r}: cannot read its configs: {_words(exc)}") from None
    except concurrent.futures.TimeoutError:
        raise KafkaError(f"topic {name!r}: no answer from Kafka within {TIMEOUT + 5:.0f}s") from None
    shown = []
    for key, entry in sorted(entries.items()):
        try:
            source = ConfigSource(entry.source)
        except ValueError:  # a source this client does not know yet
            source = ConfigSource.UNKNOWN_CONFIG
        if source == ConfigSource.DEFAULT_CONFIG or entry.is_default:
            continue
        value = None if entry.is_sensitive else entry.value
        shown.append(ConfigValue(key, value, SOURCES.get(source, source.name.lower()), bool(entry.is_read_only)))
    return shown


def _partition(consumer: Consumer, topic: str, described: Any) -> PartitionInfo:
    leader = described.leader.id if described.leader is not None and described.leader.id >= 0 else None
    replicas = tuple(node.id for node in described.replicas)
    isr = tuple(node.id for node in described.isr)
    if leader is None:  # no one to ask: the watermarks stay unknown rather than waited for
        return PartitionInfo(described.id, None, replicas, isr)
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, described.id), timeout=TIMEOUT)
    except KafkaException:
        return PartitionInfo(described.id, leader, replicas, isr)
    return PartitionInfo(described.id, leader, replicas, isr, low, high)


def _words(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, RdKafkaError) else str(exc) or type(exc).__name__
