"""Where ``dlq redrive`` left off: one consumer group per filter, and which dead letters any of them redrove.

A run's progress is a consumer group's committed offsets on the dead-letter topic: below them, every dead letter
was handled by that run's filter (redriven, or passed over as not matching, or already redriven by another run).
The unfiltered run's group is ``streamcar-redrive.<topic>``; a filtered run's is
``streamcar-redrive.<topic>:<16 hex digits>``, a digest of its filter (``:`` is not allowed in topic names, so
the topic ``a.b``'s unfiltered group never looks like a filtered group of topic ``a``). Each commit of a filtered
group carries the filter itself in its metadata (``streamcar-redrive:1:<JSON>``), so another run can tell which
dead letters that group redrove: a dead letter at offset *o* of partition *p* was redriven by group *G* when
*G*'s committed offset on *p* is above *o* and *G*'s filter accepts it (the unfiltered group accepts every dead
letter). :func:`read_progress` reads every group of the topic; :class:`Covered` answers the question for a
run. A group whose metadata this version cannot read makes the run refuse: it cannot tell what that group
redrove, and guessing means either a duplicate or a dead letter never redriven.

A time in a filter (``--since 1h``) is kept as the moment it stood for when the run started, so two runs of
``--since 1h`` an hour apart are two filters, two groups: the later run skips what the earlier one redrove, as
the rule above says.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import hashlib
import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamcar.config import KafkaConfig
from streamcar.errors import KafkaError, UsageError
from streamcar.kafka.doneahead import MAX_METADATA
from streamcar.tools._common import TIMEOUT, admin, client_config
from streamcar.tools.dlq import DeadLetter, Filter

METADATA_PREFIX = "streamcar-redrive:1:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unfiltered_group(topic: str) -> str:
    return f"streamcar-redrive.{topic}"


def group_of(topic: str, where: Filter | None) -> str:
    """The progress group of a run on ``topic`` with the filter ``where`` (None or empty: the unfiltered one)."""
    if where is None or where.empty:
        return unfiltered_group(topic)
    digest = hashlib.sha256(canonical(where).encode()).hexdigest()[:16]
    return f"{unfiltered_group(topic)}:{digest}"


def canonical(where: Filter) -> str:
    """The filter as compact JSON with sorted keys: what the group name digests and the metadata carries."""
    fields: dict[str, Any] = {}
    if where.source_topic is not None:
        fields["source_topic"] = where.source_topic
    if where.kind is not None:
        fields["kind"] = where.kind
    if where.grep is not None:
        fields["grep"] = where.grep
    if where.since is not None:
        fields["since_ms"] = (where.since - _EPOCH) // timedelta(milliseconds=1)
    if where.key is not None:
        fields["key_b64"] = base64.b64encode(where.key).decode("ascii")
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def metadata_of(where: Filter | None) -> str:
    """What a run's commits carry: its filter for a filtered run, nothing for the unfiltered one. UsageError if
    the filter is too long for the broker's ``offset.metadata.max.bytes``."""
    if where is None or where.empty:
        return ""
    text = METADATA_PREFIX + canonical(where)
    if len(text.encode()) > MAX_METADATA:
        raise UsageError(
            f"the filter is too long to be kept with the redrive's progress (at most {MAX_METADATA:,} bytes"
            " in all): shorten --grep or --key"
        )
    return text


def filter_from(metadata: str) -> Filter | None:
    """The filter a filtered group's commit names; None if the metadata is not one this version writes."""
    if not metadata.startswith(METADATA_PREFIX):
        return None
    try:
        fields = json.loads(metadata[len(METADATA_PREFIX) :])
        if not isinstance(fields, dict) or set(fields) - {"source_topic", "kind", "grep", "since_ms", "key_b64"}:
            return None
        since = fields.get("since_ms")
        key = fields.get("key_b64")
        return Filter(
            source_topic=_text(fields.get("source_topic")),
            kind=_text(fields.get("kind")),
            grep=_text(fields.get("grep")),
            since=_EPOCH + timedelta(milliseconds=since) if isinstance(since, int) else None,
            key=base64.b64decode(key, validate=True) if isinstance(key, str) else None,
        )
    except (ValueError, binascii.Error, OverflowError):
        return None


def _text(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("not text")
    return value


@dataclass(frozen=True)
class Progress:
    group: str
    where: Filter | None
    """None: the unfiltered run's (it accepts every dead letter)."""
    offsets: dict[int, int]
    """DLQ partition -> the committed offset: below it, everything the filter accepts was redriven."""

    def redrove(self, letter: DeadLetter) -> bool:
        if self.offsets.get(letter.partition, -1) <= letter.offset:
            return False
        return self.where is None or self.where(letter)

    def describe(self) -> str:
        return f"{self.group} ({'unfiltered' if self.where is None else self.where.describe()})"


class Covered:
    """Whether a dead letter was redriven already by another run (another filter's progress group)."""

    def __init__(self, others: Iterable[Progress]) -> None:
        self.others = [p for p in others if p.offsets]

    def by(self, letter: DeadLetter) -> Progress | None:
        return next((p for p in self.others if p.redrove(letter)), None)

    def start(self, partition: int) -> int:
        """Where the unfiltered run's progress is on ``partition`` (0 if it has none): a run of any filter may
        start there, as everything below it was handled."""
        return max((p.offsets.get(partition, 0) for p in self.others if p.where is None), default=0)


def read_progress(kafka: KafkaConfig, topic: str, partitions: Sequence[int], *, besides: str) -> list[Progress]:
    """The progress of every redrive group of ``topic`` but ``besides`` (the run's own, which it reads itself):
    the unfiltered one and every filtered one. Read as stable offsets (read_committed), so call it after the
    run's ``init_transactions`` fenced any other run. KafkaError for a group whose filter cannot be read."""
    base = unfiltered_group(topic)
    client = admin(kafka)  # referenced until the future resolves: a destroyed client never resolves it
    try:
        listed = client.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=TIMEOUT + 5)
    except KafkaException as exc:
        raise KafkaError(f"listing the progress groups of {topic}: {exc.args[0]}") from None
    except concurrent.futures.TimeoutError:
        raise KafkaError(f"listing the progress groups of {topic}: no answer within {TIMEOUT + 5:.0f}s") from None
    names = {g.group_id for g in listed.valid if g.group_id.startswith(f"{base}:")} | {base}
    names.discard(besides)
    with ThreadPoolExecutor(max_workers=min(8, len(names) or 1)) as pool:
        found = list(pool.map(lambda name: _progress(kafka, topic, partitions, name), sorted(names)))
    return [p for p in found if p is not None]


def _progress(kafka: KafkaConfig, topic: str, partitions: Sequence[int], group: str) -> Progress | None:
    settings = {"group.id": group, "isolation.level": "read_committed", "enable.auto.commit": False}
    consumer = Consumer(client_config(kafka, **settings))
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT)
    except KafkaException as exc:
        raise KafkaError(f"reading the progress of group {group}: {exc.args[0].str()}") from None
    finally:
        consumer.close()
    committed = [tp for tp in found if tp.error is None and tp.offset >= 0]
    if not committed:
        return None
    offsets = {tp.partition: tp.offset for tp in committed}
    if group == unfiltered_group(topic):
        return Progress(group, None, offsets)
    filters = {tp.metadata or "" for tp in committed}
    where = filter_from(filters.pop()) if len(filters) == 1 else None
    if where is None or group_of(topic, where) != group:
        raise KafkaError(
            f"the progress of group {group} does not say which dead letters it redrove (not written by this"
            " version of streamcar?): refusing to redrive what it may have redriven; delete the group if it is"
            " not a redrive's"
        )
    return Progress(group, where, offsets)
