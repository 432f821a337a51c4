"""Where a pipeline's outputs go: the publish topic (and the topics a reply may route to), the dead-letter topic."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import field_validator

from streamcar.config._fields import _TOPIC_GLOB, TopicName, _Model, _raise_problems


class PublishConfig(_Model):
    """Where a pipeline's replies go, and how. Without it nothing is published: a message is done once the
    service answered it."""

    topic: TopicName
    """Where reply payloads go, unless a reply names another topic."""
    allow: list[str] | None = None
    """Topics (names or globs: ``orders-*``) a reply may name besides ``topic``."""
    headers: Literal["forward", "none"] = "forward"
    """``forward``: each reply carries the input record's headers (but ``streamcar-*`` ones, and those the reply
    sets itself); ``none``: only the reply's own (and the trace context)."""

    @field_validator("allow")
    @classmethod
    def _patterns(cls, allow: list[str] | None) -> list[str] | None:
        _raise_problems(
            ((index,), f"{pattern!r} is not a topic name or glob")
            for index, pattern in enumerate(allow or ())
            if not _TOPIC_GLOB.fullmatch(pattern)
        )
        return allow

    def allows(self, topic: str) -> bool:
        """Whether a reply may go to ``topic``."""
        return topic == self.topic or any(fnmatchcase(topic, pattern) for pattern in self.allow or ())

    create_missing: bool = False
    """Create the publish and dead-letter topics when they do not exist, with the input topic's partition count
    (else a missing one is a named problem on /readyz, and its records wait)."""
    exactly_once: bool = False
    """Replies, dead letters and the input offsets are committed together in one Kafka transaction: a consumer
    with ``isolation.level=read_committed`` sees each input's outcome exactly once."""


class DeadLetterConfig(_Model):
    """Where a pipeline's messages that failed for good go, with the error in ``streamcar-*`` headers."""

    topic: TopicName
    """Where messages that failed for good go; without it they block their key, never dropped."""
