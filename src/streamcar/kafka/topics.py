"""Whether a pipeline's topics are there: its input topics, and the publish and dead-letter topics it writes.

A topic that does not exist stalls a pipeline: its consumer waits, or its replies and dead letters wait in the
producer. That is right (nothing is lost, nothing skipped), but it must not be silent. :class:`TopicWatch` asks
the cluster about each topic every few seconds, on the consumer's thread (through the consumer: a consumer's
metadata request never has the broker create the topic it names), and keeps a named problem per topic that is
missing or that we may not use. The pipeline shows them on ``/readyz`` (503), ``/status`` and the page, and the
watch logs one line per topic when the problem appears (again every :data:`REPEAT` while it lasts) and one when
it is gone.

A topic a reply is routed to (``publish.allow``) is watched from the first reply routed there until it is found
usable: a missing one was named only when the producer gave up on its metadata, after ~35 s.

The watch also reads the ``max.message.bytes`` of each topic written (:meth:`TopicWatch.limit`): an exactly-once
pipeline tells by it a reply too large for its topic from one refused with its batch
(:mod:`streamcar.engine.refusals`).

With ``publish.create_missing``, a missing publish or dead-letter topic is created instead, with as many
partitions as the (first) input topic and the broker's default replication. streamcar's producer never has a
broker create a topic by itself (``allow.auto.create.topics=false``): a misspelled topic would be created with
the broker's defaults (one partition) and go unnoticed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from streamcar.config import KafkaConfig, PipelineConfig

log = logging.getLogger("streamcar.kafka.topics")

REPEAT = 60.0
"""Seconds between two log lines about the same lasting problem."""
LIMITS_AGAIN = 300.0
"""Seconds between two readings of the written topics' ``max.message.bytes``."""
CREATE_AGAIN = 10.0
"""Seconds between two attempts to create the same missing topics (``publish.create_missing``)."""
TIMEOUT = 2.0


def describe(error: RdKafkaError | None) -> str | None:
    """What a topic's metadata error means, in a few words (None: the topic is fine)."""
    if error is None:
        return None
    code = error.code()
    if code in (RdKafkaError.UNKNOWN_TOPIC_OR_PART, RdKafkaError._UNKNOWN_TOPIC):
        return "does not exist"
    if code == RdKafkaError.TOPIC_AUTHORIZATION_FAILED:
        return "is not accessible: not authorized (a topic ACL)"
    return f"is not usable: {error.str()}"


class TopicWatch:
    """The problems of a pipeline's topics (``roles``: topic -> ``input``, ``publish``, ``dead-letter``, or
    ``routed`` for one a reply was routed to, see :meth:`routed`)."""

    def __init__(
        self,
        pipeline: str,
        roles: Mapping[str, str],
        *,
        create_missing: bool = False,
        admin_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.roles = dict(roles)
        self._create = create_missing
        self._admin_config = dict(admin_config or {})
        self.problems: dict[str, str] = {}
        """topic -> what is wrong with it, for each topic that has a problem now (replaced whole: no lock)."""
        self._told: dict[str, float] = {}  # topic -> when its problem was last logged
        self._admin: AdminClient | None = None  # made on the first creation, kept for the next ones
        self._create_again = 0.0  # no creation before then (time.monotonic())
        self._failed: dict[str, str] = {}  # topic -> why creating it failed
        self._usable: set[str] = set()  # routed topics found usable: not watched any more
        self.limits: dict[str, int] = {}
        """Each written topic's max.message.bytes, where read (replaced whole: no lock)."""
        self._limits_read: dict[str, float] = {}  # topic -> when its limit was last asked for
        self.wanted = False
        """A limit is wanted now (:meth:`want`): the consumer's thread looks at once rather than at its next look."""

    @classmethod
    def of(cls, pipeline: str, config: PipelineConfig, kafka: KafkaConfig) -> TopicWatch:
        """The watch of ``pipeline``'s input, publish and dead-letter topics."""
        roles = dict.fromkeys(config.consume.topics, "input")
        if config.publish is not None:
            roles[config.publish.topic] = "publish"
        if config.dead_letter is not None:
            roles[config.dead_letter.topic] = "dead-letter"
        create = config.publish is not None and config.publish.create_missing
        return cls(pipeline, roles, create_missing=create, admin_config=kafka.client_config())

    def problem(self, topic: str) -> str | None:
        """What is wrong with ``topic`` now (``does not exist``...); None when nothing is known to be."""
        return self.problems.get(topic)

    def limit(self, topic: str) -> int | None:
        """``topic``'s max.message.bytes; None when not known (yet, or reading topic configs is not allowed)."""
        return self.limits.get(topic)

    def want(self, topic: str) -> None:
        """``topic``'s max.message.bytes is wanted now (on the loop): a record was refused as too large for it
        while its limit was not known, so an exactly-once pipeline could not tell whether to send it again (the
        first look, at start-up, may not have got an answer yet)."""
        self._limits_read = {t: at for t, at in self._limits_read.items() if t != topic}
        self.wanted = True

    def routed(self, topic: str) -> None:
        """A reply goes to ``topic`` (on the loop): watched from the next look until it is found usable."""
        if topic not in self.roles and topic not in self._usable:
            self.roles = {**self.roles, topic: "routed"}  # replaced whole: the consumer's thread reads it

    def lines(self) -> list[str]:
        """Each problem as a line: ``publish topic 'orders-out' does not exist``."""
        return [f"{self.roles.get(topic, 'a')} topic {topic!r} {text}" for topic, text in sorted(self.problems.items())]

    def check(self, consumer: Any) -> None:
        """Ask the cluster about every topic (on the consumer's thread). A cluster that does not answer says
        nothing about the topics: the problems stay as they were (the pipeline reports the cluster itself)."""
        found: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for topic in self.roles:
            try:
                metadata = consumer.list_topics(topic=topic, timeout=TIMEOUT).topics.get(topic)
            except KafkaException:
                return
            problem = "does not exist" if metadata is None else describe(metadata.error)
            if problem is not None:
                found[topic] = problem
            elif metadata is not None:
                sizes[topic] = len(metadata.partitions)
        if self._create:
            found = self._create_missing(found, sizes)
        self._tell(found)
        self.problems = found
        self._read_limits([t for t in sizes if t not in found and self.roles.get(t) != "input"])
        usable = {t for t, role in self.roles.items() if role == "routed" and t in sizes and t not in found}
        if usable:
            self._usable |= usable
            self.roles = {t: role for t, role in self.roles.items() if t not in usable}

    def _read_limits(self, topics: list[str]) -> None:
        """Read the max.message.bytes of those of ``topics`` not read for :data:`LIMITS_AGAIN`; one that cannot
        be read stays unknown (the engine then does without)."""
        now = time.monotonic()
        due = [t for t in topics if now - self._limits_read.get(t, float("-inf")) >= LIMITS_AGAIN]
        if not due:
            return
        for topic in due:
            self._limits_read[topic] = now
        limits = dict(self.limits)
        try:
            if self._admin is None:
                self._admin = AdminClient({**self._admin_config, "log_level": 0})
            futures = self._admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in due])
            for resource, future in futures.items():
                entry = future.result(TIMEOUT * 2).get("max.message.bytes")
                if entry is not None and entry.value is not None:
                    limits[resource.name] = int(entry.value)
        except Exception as exc:  # the watch must never end the pipeline: the limits stay unknown
            log.debug("%s: reading the max.message.bytes of %s failed: %s", self._pipeline, due, exc)
        self.limits = limits

    def _create_missing(self, found: dict[str, str], sizes: dict[str, int]) -> dict[str, str]:
        writes = ("publish", "dead-letter")  # not a routed topic: publish.allow may name topics made elsewhere
        missing = [t for t, problem in found.items() if problem == "does not exist" and self.roles.get(t) in writes]
        inputs = [t for t, role in self.roles.items() if role == "input" and t in sizes]
        now = time.monotonic()
        if not missing or not inputs:
            return found  # nothing to create, or no input topic yet to take the partition count from
        if now < self._create_again:
            return {**found, **{t: self._failed[t] for t in missing if t in self._failed}}
        self._create_again = now + CREATE_AGAIN  # a creation that fails (no CREATE right, say) is not tried each look
        partitions = sizes[inputs[0]]
        left = dict(found)
        try:
            if self._admin is None:
                self._admin = AdminClient({**self._admin_config, "log_level": 0})
            new = [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in missing]
            futures = self._admin.create_topics(new, operation_timeout=TIMEOUT)
        except Exception as exc:  # the watch must never end the pipeline: the topic stays a named problem
            for topic in missing:
                left[topic] = self._failed[topic] = f"does not exist, and creating it failed: {exc}"
            return left
        for topic, future in futures.items():
            try:
                future.result(TIMEOUT * 2)
            except Exception as exc:
                error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
                if isinstance(error, RdKafkaError) and error.code() == RdKafkaError.TOPIC_ALREADY_EXISTS:
                    left.pop(topic, None)
                    continue
                left[topic] = self._failed[topic] = (
                    f"does not exist, and creating it failed: {exc or type(exc).__name__}"
                )
                continue
            left.pop(topic, None)
            self._failed.pop(topic, None)
            log.warning(
                "%s: created %s topic %r (%d partitions, as %s; publish.create_missing)",
                self._pipeline,
                self.roles.get(topic, "a"),
                topic,
                partitions,
                inputs[0],
                extra={"event": "topic-created", "pipeline": self._pipeline, "topic": topic},
            )
        return left

    def _tell(self, found: dict[str, str]) -> None:
        now = time.monotonic()
        for topic, problem in found.items():
            if now - self._told.get(topic, float("-inf")) < REPEAT and self.problems.get(topic) == problem:
                continue
            self._told[topic] = now
            role = self.roles.get(topic, "a")
            waits = "consumption waits for it" if role == "input" else f"{role} records wait for it"
            log.warning(
                "%s: %s topic %r %s; %s",
                self._pipeline,
                role,
                topic,
                problem,
                waits,
                extra={"event": "topic-problem", "pipeline": self._pipeline, "topic": topic, "problem": problem},
            )
        for topic in self.problems.keys() - found.keys():
            self._told.pop(topic, None)
            log.info(
                "%s: %s topic %r is there now",
                self._pipeline,
                self.roles[topic],
                topic,
                extra={"event": "topic-ok", "pipeline": self._pipeline, "topic": topic},
            )
