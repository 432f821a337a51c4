"""The fault suite's closing check: read what the sidecar produced and hold it to the delivery promises.

A scenario ends with :func:`check`. It waits (bounded) until the group has committed every input offset -- the
engine commits an offset only once the reply or dead letter below it was acknowledged, so from then on the
topics hold every outcome -- reads the source, output and dead-letter topics in full and asserts:

* **outcome** -- every input ``(topic, partition, offset)`` has a reply or a dead letter, never both (the test
  services answer each message the same way every time), and every reply and dead letter names a real input.
  Replies identify their input by their body, the call's ``Idempotency-Key`` (:func:`reply_with_id`); dead
  letters by their ``streamcar-source-*`` headers. A dead letter carries the input's key, value and headers.
  ``dead_letters`` pins which inputs must be dead-lettered, and with which ``streamcar-error-kind``.
* **order in the service's log** -- per key (null keys are unordered), the offsets the service was called with:
  without a crash, non-decreasing (a retry repeats its offset, nothing else comes back); after a crash a
  redelivery may repeat what was already called, so the offsets in order of *first* call are increasing.
* **order of the replies** -- the same two rules over each key's replies in its output partition.
* **duplicates** -- replies beyond one per input, plus dead letters beyond one, are at most ``max_duplicates``.

:func:`evaluate` is the pure part (tests/faults/test_invariants.py feeds it synthetic records).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from confluent_kafka import Consumer, TopicPartition

from streamcar.kafka.records import read_headers

from service import Seen
from support import KafkaHandle, committed, wait_for

Id = tuple[str, int, int]
Headers = tuple[tuple[str, bytes | None], ...]
SHOWN = 5  # violations listed per kind in the failure message
SOURCE_HEADERS = ("streamcar-source-topic", "streamcar-source-partition", "streamcar-source-offset")


async def reply_with_id(seen: Seen) -> web.StreamResponse:
    """The scenarios' service: the reply names its input (``{topic}-{partition}-{offset}``)."""
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @property
    def id(self) -> Id:
        return (self.topic, self.partition, self.offset)

    def header(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    @classmethod
    def of(cls, msg: Any) -> Record:
        """A consumed record; one whose header names are not UTF-8 reads with no headers (none can be read)."""
        headers = read_headers(msg) or ()
        return cls(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers)


class Call(Protocol):
    """One entry of the service's log (a :class:`service.Seen`)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...


@dataclass
class Verdict:
    replies: Counter[Id]
    dead_letters: dict[Id, list[Record]]
    duplicates: int
    violations: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, text: str) -> None:
        self.violations.setdefault(kind, []).append(text)

    def describe(self) -> str:
        count = sum(map(len, self.violations.values()))
        lines = [f"{count} violation(s) of the delivery invariants:"]
        for kind, found in self.violations.items():
            more = f" (+{len(found) - SHOWN} more)" if len(found) > SHOWN else ""
            lines.append(f"  {kind} x{len(found)}: " + "; ".join(found[:SHOWN]) + more)
        return "\n".join(lines)


def name(ident: Id) -> str:
    return "-".join(map(str, ident))


def reply_source(value: bytes | None) -> Id | None:
    """The input a reply answers, from its body (``{topic}-{partition}-{offset}``; topics may hold dashes)."""
    try:
        topic, partition, offset = (value or b"").decode().rsplit("-", 2)
        return (topic, int(partition), int(offset))
    except ValueError:
        return None


def letter_source(letter: Record) -> Id | None:
    topic, partition, offset = (letter.header(h) for h in SOURCE_HEADERS)
    try:
        return ((topic or b"").decode(), int(partition or b""), int(offset or b""))
    except ValueError:
        return None


def evaluate(
    inputs: Sequence[Record],
    replies: Sequence[Record],
    letters: Sequence[Record],
    calls: Sequence[Call],
    *,
    max_duplicates: int,
    crashes: bool,
    dead_letters: Mapping[Id, str | tuple[str, ...]] | None = None,
) -> Verdict:
    """Hold the outcome of a run to the invariants (module docstring); ``crashes``: the sidecar was killed.
    ``dead_letters``: the inputs that must be dead-lettered, with the acceptable ``streamcar-error-kind``
    values (every other input must be replied); None accepts a reply or a dead letter for any input."""
    by_id = {record.id: record for record in inputs}
    answered: Counter[Id] = Counter()
    lettered: dict[Id, list[Record]] = defaultdict(list)
    verdict = Verdict(answered, lettered, 0)
    for reply in replies:
        source = reply_source(reply.value)
        if source in by_id:
            answered[source] += 1
        else:
            verdict.add("reply for no input", f"{reply.value!r:.60} at {reply.partition}:{reply.offset}")
    for letter in letters:
        source = letter_source(letter)
        if source is None or source not in by_id:
            verdict.add("dead letter for no input", f"{source} at {letter.partition}:{letter.offset}")
            continue
        lettered[source].append(letter)
        original = by_id[source]
        kept = tuple((k, v) for k, v in letter.headers if not k.startswith("streamcar-"))
        if (letter.key, letter.value, kept) != (original.key, original.value, original.headers):
            verdict.add("dead letter altered", f"{name(source)}: key, value or headers differ from the input's")

    for ident in by_id:
        got, dead = answered[ident], len(lettered.get(ident, ()))
        if got == 0 and dead == 0:
            verdict.add("unanswered", name(ident))
        elif got and dead:
            verdict.add("replied and dead-lettered", name(ident))
        verdict.duplicates += max(0, got - 1) + max(0, dead - 1)
    if verdict.duplicates > max_duplicates:
        verdict.add("duplicates", f"{verdict.duplicates} outcomes beyond one per input, bound {max_duplicates}")
    if dead_letters is not None:
        _expected_letters(verdict, by_id, dead_letters)

    call_lanes = _lanes((c.topic, c.partition, c.key, c.offset) for c in calls if c.key is not None)
    _ordered(verdict, "call order", call_lanes, crashes)
    reply_lanes = _lanes(
        (ident[0], ident[1], by_id[ident].key, ident[2])
        for ident in _in_log_order(replies, by_id)
        if by_id[ident].key is not None
    )
    _ordered(verdict, "reply order", reply_lanes, crashes)
    return verdict


def _expected_letters(
    verdict: Verdict, by_id: Mapping[Id, Record], expected: Mapping[Id, str | tuple[str, ...]]
) -> None:
    for ident, record in by_id.items():
        letters = verdict.dead_letters.get(ident, [])
        kinds = _kinds(expected.get(ident, ()))
        if not kinds:
            for letter in letters:
                why = f"{_text(letter, 'streamcar-error-kind')}: {_text(letter, 'streamcar-error')}"
                verdict.add("unexpected dead letter", f"{name(ident)} {record.value!r:.30} ({why:.100})")
        elif not letters:
            verdict.add("expected dead letter", f"{name(ident)} (kind {'|'.join(kinds)}) was not dead-lettered")
        for letter in letters if kinds else ():
            if (kind := _text(letter, "streamcar-error-kind")) not in kinds:
                verdict.add("dead letter kind", f"{name(ident)}: {kind!r}, expected {'|'.join(kinds)}")


def _kinds(expected: str | tuple[str, ...]) -> tuple[str, ...]:
    return (expected,) if isinstance(expected, str) else expected


def _text(record: Record, header: str) -> str:
    return (record.header(header) or b"").decode("utf-8", "replace")


def _in_log_order(replies: Sequence[Record], by_id: Mapping[Id, Record]) -> list[Id]:
    """The inputs the replies answer, in the order of each output partition's log."""
    ordered = sorted(replies, key=lambda r: (r.topic, r.partition, r.offset))
    return [ident for r in ordered if (ident := reply_source(r.value)) is not None and ident in by_id]


Lane = tuple[str, int, bytes]


def _lanes(entries: Iterable[tuple[str, int, bytes | None, int]]) -> dict[Lane, list[int]]:
    lanes: dict[Lane, list[int]] = defaultdict(list)
    for topic, partition, key, offset in entries:
        assert key is not None
        lanes[(topic, partition, key)].append(offset)
    return lanes


def _ordered(verdict: Verdict, kind: str, lanes: Mapping[Lane, list[int]], crashes: bool) -> None:
    for (topic, partition, key), offsets in lanes.items():
        sequence = list(dict.fromkeys(offsets)) if crashes else offsets
        for before, after in itertools.pairwise(sequence):
            if after < before:
                verdict.add(kind, f"{topic}-{partition} key {key!r:.30}: offset {after} after {before}")
                break


def read_all(kafka: KafkaHandle, topic: str, *, timeout: float = 60.0) -> list[Record]:
    """Every record of ``topic`` up to the high watermark each partition has now, in log order."""
    settings = {"bootstrap.servers": kafka.bootstrap, "group.id": "invariants", "enable.auto.commit": False}
    # read committed, up to the true end: a transaction still open (a zombie's) holds the read back until it is
    # committed or aborted, rather than ending the read at the last stable offset
    consumer = Consumer({**settings, "isolation.level": "read_committed"})
    probe = Consumer({**settings, "isolation.level": "read_uncommitted"})
    try:
        partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
        ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        probe.close()
        todo = {p: high for p, (low, high) in ends.items() if high > low}
        consumer.assign([TopicPartition(topic, p, ends[p][0]) for p in todo])
        got: list[Record] = []
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to their end within {timeout}s")
            got += [Record.of(m) for m in consumer.consume(num_messages=5000, timeout=0.2) if m.error() is None]
            for tp in consumer.position([TopicPartition(topic, p) for p in todo]):
                if tp.offset >= todo[tp.partition]:
                    del todo[tp.partition]
        return sorted(got, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def wait_done(kafka: KafkaHandle, group: str, source: str, *, timeout: float) -> None:
    """Wait until ``group`` has committed the end offset of every partition of ``source``."""
    probe = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "invariants-probe"})
    try:
        partitions = probe.list_topics(topic=source, timeout=10).topics[source].partitions
        ends = {p: probe.get_watermark_offsets(TopicPartition(source, p), timeout=10)[1] for p in partitions}
    finally:
        probe.close()
    state: dict[int, int] = {}

    def done() -> bool:
        state.clear()
        state.update({p: o for (t, p), o in committed(kafka, group).items() if t == source})
        return all(state.get(p, 0) >= end for p, end in ends.items())

    try:
        wait_for(done, timeout=timeout, what=f"group {group} to commit every offset of {source}", interval=0.25)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}: committed {state}, ends {ends}") from None


def check(
    kafka: KafkaHandle,
    *,
    group: str,
    source: str,
    out: str,
    dlq: str | None,
    calls: Callable[[], Sequence[Call]],
    max_duplicates: int,
    crashes: bool,
    dead_letters: Mapping[Id, str | tuple[str, ...]] | None = None,
    timeout: float = 120.0,
) -> Verdict:
    """Wait until ``group`` is done with ``source``, then assert the invariants over the topics' contents and
    the service's log (``calls()``, read once the group is done)."""
    wait_done(kafka, group, source, timeout=timeout)
    inputs = read_all(kafka, source)
    replies = read_all(kafka, out)
    letters = read_all(kafka, dlq) if dlq is not None else []
    verdict = evaluate(
        inputs,
        replies,
        letters,
        calls(),
        max_duplicates=max_duplicates,
        crashes=crashes,
        dead_letters=dead_letters,
    )
    assert not verdict.violations, verdict.describe()
    return verdict
