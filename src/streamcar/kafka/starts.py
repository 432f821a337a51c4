"""Where a partition starts when it has no usable committed offset.

The consumer runs with ``auto.offset.reset: error``: librdkafka's own reset would apply ``consume.from`` to every
such partition, and ``latest`` then skips the records of a partition added to a running topic, or of a topic
deleted and created again (rows 12 and 13 of the hostile-input issue: 2,000 and 200 records lost). Instead the
bridge asks :meth:`Starts.start`, which picks:

* A committed offset out of the log's range: the log's start. Below it, retention deleted what was not read
  (nothing else to do); beyond the end, the log was replaced or truncated after the commit, and its records are
  new to us.
* No committed offset, for a partition new to the group: its start. New means created after the group first
  started: this process saw the topic with fewer partitions; or it read this partition before and the log came
  back without offsets (a deleted and re-created topic loses its offsets); or the group has committed other
  partitions of the topic, other than as starts of that same first start (below). ``consume.from: latest`` is
  about the group's first start, not about partitions added later.
* No committed offset otherwise (the group's first start): ``consume.from``.

The bridge commits the start at once, so every partition the group ever started on has a committed offset: that
is what tells a later partition from a first start, across restarts too. The start's commit carries a marker as
its metadata, ``streamcar:start:<n>``, ``n`` the topic's partition count then (:func:`marker`). Without it the
first partition of a first start, committed at once, made every later partition of the same assignment look new
to the group (a 3-partition topic with 300 records, a new group with ``from: latest``, 30 new records: 204 calls),
and so did one member's start to another member starting at the same moment. A marker says "the group started
here with ``n`` partitions": a partition below ``n`` without a commit belongs to that start, one at or above it
came later. A commit of real progress replaces the marker, and says the group ran: a partition without a commit
is new then. (A topic deleted and created again while no member of the group ran looks like a first start: its
offsets went with it.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamcar.kafka.records import TP, CommitPoint

TIMEOUT = 5.0
MARKER = "streamcar:start:"


def marker(partitions: int) -> str:
    """The metadata of a start's commit, on a topic of ``partitions`` partitions (see the module docstring)."""
    return f"{MARKER}{partitions}"


def started_with(metadata: str) -> int | None:
    """The partition count a start's marker names; None for other metadata (a commit of real progress)."""
    if not metadata.startswith(MARKER):
        return None
    try:
        return int(metadata[len(MARKER) :])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Start:
    offset: int
    why: str
    text: str = ""
    partitions: int = 0
    """The topic's partition count when it started (its commit's marker)."""


def choose(
    partition: int, *, low: int, high: int, committed: Mapping[int, CommitPoint], new: str, start_from: str
) -> tuple[int, str]:
    """The offset to start ``partition`` at and why, from its log's range, the group's committed offsets of the
    topic (by partition), and why this process knows the partition is new ("": it does not; see the module
    docstring)."""
    if partition in committed:
        return low, f"its committed offset {committed[partition].offset} is outside the log ({low}..{high})"
    later = new or _later_than_the_group(partition, committed.values())
    if later:
        return low, f"a partition new to the group ({later}): from its start"
    offset = low if start_from == "earliest" else high
    return offset, f"the group's first start on it: consume.from {start_from}"


def _later_than_the_group(partition: int, others: Iterable[CommitPoint]) -> str:
    """Why the group's commits of a topic's other partitions say ``partition`` came after the group started; ""
    when they do not (none yet, or only starts of a first start that had it)."""
    for point in others:
        count = started_with(point.metadata)
        if count is None:
            return "the group has read other partitions of the topic"
        if partition >= count:
            return f"the group started on the topic's first {count} partitions"
    return ""


class Starts:
    """What the consumer thread knows to tell a new partition, and the starts to try again; thread-owned."""

    def __init__(self, start_from: str) -> None:
        self.start_from = start_from
        self.seen: set[TP] = set()
        """Partitions this process read records of, or started."""
        self._first_counts: dict[str, int] = {}  # each topic's partition count when this process first had it
        self._due: dict[TP, float] = {}

    def learn(self, consumer: Consumer, topics: Iterable[str]) -> None:
        """Note the partition count of each topic assigned for the first time (on assignment)."""
        for topic in set(topics) - set(self._first_counts):
            try:
                meta = consumer.list_topics(topic=topic, timeout=TIMEOUT).topics.get(topic)
            except KafkaException:
                continue  # unknown: the group's commits tell a new partition all the same
            self._first_counts[topic] = len(meta.partitions) if meta is not None else 0

    def start(self, consumer: Consumer, tp: TP, *, pause: bool) -> Start:
        """Assign ``tp`` again at its start (a partition whose reset failed cannot be ``seek()``ed: "erroneous
        state"), paused if ``pause``; KafkaException when the cluster cannot tell yet."""
        topic, partition = tp
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT, cached=False)
        meta = consumer.list_topics(topic=topic, timeout=TIMEOUT).topics.get(topic)
        ids = sorted(meta.partitions) if meta is not None else [partition]
        found = consumer.committed([TopicPartition(topic, p) for p in ids], timeout=TIMEOUT)
        committed = {p.partition: CommitPoint(p.offset, p.metadata or "") for p in found if p.offset >= 0}
        new = self._new(tp)
        offset, why = choose(partition, low=low, high=high, committed=committed, new=new, start_from=self.start_from)
        consumer.incremental_unassign([TopicPartition(topic, partition)])
        consumer.incremental_assign([TopicPartition(topic, partition, offset)])
        if pause:
            consumer.pause([TopicPartition(topic, partition)])
        self.seen.add(tp)
        return Start(offset, why, f"{topic}[{partition}] starts at offset {offset}: {why}", max(ids) + 1)

    def _new(self, tp: TP) -> str:
        """Why this process knows ``tp`` is new to the group; "" when it does not."""
        topic, partition = tp
        if tp in self.seen:
            return "read before, and its log came back without offsets: created again"
        first = self._first_counts.get(topic, partition + 1)
        if partition >= first:
            return f"created after this process first saw the topic with {first} partitions"
        return ""

    def retry(self, tp: TP, at: float) -> None:
        self._due[tp] = at

    def due(self, now: float) -> list[TP]:
        """The partitions whose start is to be tried again now (forgotten here: a failure adds them back)."""
        if not self._due:
            return []
        ready = [tp for tp, at in self._due.items() if at <= now]
        for tp in ready:
            del self._due[tp]
        return ready
