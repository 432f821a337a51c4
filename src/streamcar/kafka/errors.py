"""What a librdkafka error means for streamcar: the one place its codes are classified.

* :func:`consumer_trouble` -- an error the consumer hands over (an event, or a record carrying an error);
* :func:`produce_failure_is_permanent` -- a record the producer could not deliver;
* :func:`worth_retrying` -- a request of the operator tools (offsets, group, metadata).

The engine never sees a librdkafka error: the bridges hand it a :class:`Said` (what the consumer said, classified),
and a refused commit is a :class:`CommitRefused`.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException

from streamcar.kafka.records import TP


class Trouble(enum.Enum):
    FATAL = "fatal"
    """The consumer cannot go on (bad credentials, no rights, a misconfiguration): the pipeline stops."""
    MISSING_TOPIC = "missing-topic"
    """A subscribed topic does not exist (yet): the consumer waits for it."""
    END_OF_PARTITION = "end-of-partition"
    """Nothing more to read for now (only asked for by a source that ends)."""
    NO_OFFSET = "no-offset"
    """A partition without a usable committed offset: where it starts is streamcar's call (kafka.starts)."""
    PASSING = "passing"
    """librdkafka recovers from it by itself (a broker down, a timeout)."""


# Kafka errors after which the consumer cannot go on; anything else librdkafka recovers from by itself.
_FATAL = frozenset(
    {
        RdKafkaError._AUTHENTICATION,
        RdKafkaError.SASL_AUTHENTICATION_FAILED,
        RdKafkaError.GROUP_AUTHORIZATION_FAILED,
        RdKafkaError.TOPIC_AUTHORIZATION_FAILED,
        RdKafkaError._SSL,
        RdKafkaError._INVALID_ARG,
        RdKafkaError._FATAL,
    }
)
# Errors that no amount of retrying fixes for this record; everything else librdkafka already retried up to
# message.timeout.ms. A topic we may not write to (an ACL) is not one: that is the setup, true of every record,
# and dead-lettering each reply for it would drain the input; the records wait, and the topic is a named problem.
_PERMANENT_PRODUCE = frozenset(
    {
        RdKafkaError.MSG_SIZE_TOO_LARGE,
        RdKafkaError.INVALID_RECORD,
        RdKafkaError.INVALID_REQUIRED_ACKS,
        RdKafkaError.RECORD_LIST_TOO_LARGE,
        RdKafkaError.POLICY_VIOLATION,
    }
)
# librdkafka does not flag these retriable, though the group coordinator is found again within moments
_COORDINATOR_MOVED = frozenset(
    {RdKafkaError.NOT_COORDINATOR, RdKafkaError.COORDINATOR_LOAD_IN_PROGRESS, RdKafkaError.COORDINATOR_NOT_AVAILABLE}
)


class Said(NamedTuple):
    """What the consumer said instead of a record, or as an event: what it means, in its own words, and the
    partition it is about (None: the consumer as a whole)."""

    trouble: Trouble
    text: str
    tp: TP | None = None


def said(error: RdKafkaError, tp: TP | None = None) -> Said:
    return Said(consumer_trouble(error), error.str(), tp)


def failed(text: str) -> Said:
    """The consumer's thread failed: the pipeline cannot go on."""
    return Said(Trouble.FATAL, text)


class CommitRefused(Exception):
    """The broker refused a commit of offsets; ``metadata_too_large``: it refused their metadata as too large
    (a broker whose ``offset.metadata.max.bytes`` is below the default)."""

    def __init__(self, text: str, *, metadata_too_large: bool = False) -> None:
        super().__init__(text)
        self.metadata_too_large = metadata_too_large

    @classmethod
    def of(cls, exc: KafkaException) -> CommitRefused:
        error = exc.args[0] if exc.args else None
        if isinstance(error, RdKafkaError):
            return cls(error.str(), metadata_too_large=error.code() == RdKafkaError.OFFSET_METADATA_TOO_LARGE)
        return cls(str(exc))


def consumer_trouble(error: RdKafkaError) -> Trouble:
    code = error.code()
    if error.fatal() or code in _FATAL:
        return Trouble.FATAL
    if code == RdKafkaError.UNKNOWN_TOPIC_OR_PART:
        return Trouble.MISSING_TOPIC
    if code == RdKafkaError._PARTITION_EOF:
        return Trouble.END_OF_PARTITION
    if code == RdKafkaError._AUTO_OFFSET_RESET:
        return Trouble.NO_OFFSET
    return Trouble.PASSING


def produce_failure_is_permanent(error: RdKafkaError) -> bool:
    return error.code() in _PERMANENT_PRODUCE or error.fatal()


def worth_retrying(error: RdKafkaError) -> bool:
    return bool(error.retriable()) or error.code() in _COORDINATOR_MOVED
