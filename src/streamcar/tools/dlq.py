"""``streamcar dlq show``: list the dead letters of a dead-letter topic.

It reads the topic by assignment from its low to its high watermarks as measured at start (records added
meanwhile are not shown), streaming, and parses each record's ``streamcar-*`` headers (docs/dead-letters.md)
into a :class:`DeadLetter`. A record without ``streamcar-source-topic`` is not a streamcar dead letter;
it is listed as such. Redriving them is :mod:`streamcar.tools.redrive`.

A :class:`Filter` picks dead letters the same way for ``show`` and ``redrive``; every option given must hold:
``--source-topic T``, ``--kind K`` (``streamcar-error-kind``, exactly), ``--grep TEXT`` (in ``streamcar-error``,
case-sensitive), ``--since T`` (failed at or after a time, or a duration back from now: ``1h``, ``30m``, ``1d``)
and ``--key K`` (the record key, exactly; its bytes as given on the command line).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Message, TopicPartition
from rich.table import Table

from streamcar.call.envelope import encoder, header_object
from streamcar.config import KafkaConfig
from streamcar.engine.records import REDRIVE_COUNT
from streamcar.errors import UsageError
from streamcar.kafka.records import UNREADABLE_HEADERS, read_headers
from streamcar.tools._common import (
    isolation,
    kafka_settings,
    partitions_of,
    plain_console,
    read_range,
    reader,
    watermarks,
)
from streamcar.tools._positions import parse_moment

SAMPLE = 5  # dead letters (and skipped records) a summary names
TABLE_ROWS = 1000  # rows per table printed by show
_DROPPED_PREFIXES = ("streamcar-error", "streamcar-source-")
_DROPPED = frozenset({"streamcar-attempts", "streamcar-failed-at", REDRIVE_COUNT})

Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # where it is in the dead-letter topic
    offset: int
    key: bytes | None
    value: bytes | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    error: str | None
    kind: str | None
    attempts: int | None
    failed_at: datetime | None
    redrive_count: int
    headers: Headers  # every header but the dead-letter ones: what a redrive re-publishes

    @property
    def is_dead_letter(self) -> bool:
        return self.source_topic is not None

    @property
    def source(self) -> str:
        if self.source_topic is None:
            return "(not a streamcar dead letter)"
        return f"{self.source_topic}[{_dash(self.source_partition)}]@{_dash(self.source_offset)}"

    def redrive_headers(self) -> list[tuple[str, str | bytes | None]]:
        return [*self.headers, (REDRIVE_COUNT, str(self.redrive_count + 1).encode())]


def parse(msg: Message) -> DeadLetter:
    """A record of a dead-letter topic; a malformed ``streamcar-*`` header value reads as absent."""
    meta: dict[str, str] = {}
    kept: Headers = []
    found = read_headers(msg)
    if found is None:  # not readable, hence not parseable: listed as a record that is not a dead letter
        found, meta["streamcar-error"] = (), UNREADABLE_HEADERS
    for name, data in found:
        if name.startswith(_DROPPED_PREFIXES) or name in _DROPPED:
            meta[name] = (data or b"").decode("utf-8", "replace")
        else:
            kept.append((name, data))
    return DeadLetter(
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value(),
        source_topic=meta.get("streamcar-source-topic") or None,
        source_partition=_int(meta.get("streamcar-source-partition")),
        source_offset=_int(meta.get("streamcar-source-offset")),
        error=meta.get("streamcar-error"),
        kind=meta.get("streamcar-error-kind"),
        attempts=_int(meta.get("streamcar-attempts")),
        failed_at=_time(meta.get("streamcar-failed-at")),
        redrive_count=max(_int(meta.get(REDRIVE_COUNT)) or 0, 0),
        headers=kept,
    )


@dataclass(frozen=True)
class Filter:
    """Which dead letters a ``show`` or a ``redrive`` takes: all the given conditions hold."""

    source_topic: str | None = None
    kind: str | None = None  # streamcar-error-kind, exactly
    since: datetime | None = None  # failed at or after (kept to the millisecond, as streamcar-failed-at is)
    grep: str | None = None  # in the error text, case-sensitive
    key: bytes | None = None  # the record key, exactly (a null key never matches)

    def __post_init__(self) -> None:
        if self.since is not None:  # up to the next millisecond: "at or after" holds, and it round-trips as ms
            since = self.since if self.since.tzinfo is not None else self.since.replace(tzinfo=UTC)
            whole = since.replace(microsecond=since.microsecond // 1000 * 1000)
            object.__setattr__(self, "since", whole if whole == since else whole + timedelta(milliseconds=1))

    def __call__(self, letter: DeadLetter) -> bool:
        return (
            (self.source_topic is None or letter.source_topic == self.source_topic)
            and (self.kind is None or letter.kind == self.kind)
            and (self.since is None or (letter.failed_at is not None and letter.failed_at >= self.since))
            and (self.grep is None or self.grep in (letter.error or ""))
            and (self.key is None or letter.key == self.key)
        )

    @property
    def empty(self) -> bool:
        return self == Filter()

    def describe(self) -> str:
        """The filter as the options that make it: ``--kind exhausted --since 2026-11-25T10:00:00Z``."""
        parts = []
        if self.source_topic is not None:
            parts.append(f"--source-topic {self.source_topic}")
        if self.kind is not None:
            parts.append(f"--kind {self.kind}")
        if self.grep is not None:
            parts.append(f"--grep {self.grep!r}")
        if self.since is not None:
            spec = "seconds" if self.since.microsecond == 0 else "milliseconds"
            parts.append(f"--since {self.since.astimezone(UTC).isoformat(timespec=spec).replace('+00:00', 'Z')}")
        if self.key is not None:
            parts.append(f"--key {self.key.decode('utf-8', 'backslashreplace')!r}")
        return " ".join(parts) or "none"


def filter_of(args: argparse.Namespace) -> Filter:
    """The filter of ``dlq show`` / ``dlq redrive``'s options."""
    since = parse_moment(args.since, option="--since") if args.since is not None else None
    key = os.fsencode(args.key) if args.key is not None else None  # the bytes as given on the command line
    return Filter(source_topic=args.source_topic, kind=args.kind, since=since, grep=args.grep, key=key)


def dead_letters(
    kafka: KafkaConfig,
    topic: str,
    *,
    where: Filter | None = None,
    limit: int | None = None,
    uncommitted: bool = False,
) -> Generator[DeadLetter, None, None]:
    """``topic``'s records up to its end at start that ``where`` accepts (at most ``limit``); close to stop early.
    ``uncommitted``: also dead letters of transactions not committed (yet, or ever)."""
    consumer = reader(kafka, **isolation(uncommitted))
    try:
        marks = watermarks(consumer, topic, partitions_of(consumer, topic))
        ends = {p: high for p, (low, high) in marks.items() if low < high}
        if limit is not None and limit <= 0:
            return
        consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in ends])
        shown = 0
        for msg in read_range(consumer, topic, ends):
            letter = parse(msg)
            if where is None or where(letter):
                yield letter
                shown += 1
                if shown == limit:
                    return
    finally:
        consumer.close()


# --- the command ---------------------------------------------------------------------------------------------------


def show_command(args: argparse.Namespace) -> int:
    where = filter_of(args)  # bad usage is reported before any network call
    if args.limit is not None and args.limit < 0:
        raise UsageError("-n/--limit: must be 0 or more")
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    letters = dead_letters(kafka, args.topic, where=where, limit=args.limit, uncommitted=args.uncommitted)
    if args.json:
        for letter in letters:
            print(json.dumps(to_json(letter), separators=(",", ":")))
        return 0
    console, table = plain_console(), _table()
    kinds: Counter[str] = Counter()
    for letter in letters:
        kinds[(letter.kind or "-") if letter.is_dead_letter else ""] += 1
        failed_at = letter.failed_at.isoformat(timespec="seconds") if letter.failed_at else "-"
        at, error = f"{letter.partition}:{letter.offset}", _clip(letter.error or "-", 80)
        table.add_row(at, letter.source, letter.kind or "-", _dash(letter.attempts), failed_at, error, key_text(letter))
        if table.row_count == TABLE_ROWS:  # printed as it fills: the memory stays bounded however long the topic
            console.print(table)
            table = _table()
    if table.row_count:
        console.print(table)
    others = kinds.pop("", 0)
    total = sum(kinds.values())
    counts = ", ".join(f"{kind} {n:,}" for kind, n in sorted(kinds.items()))
    summary = f"{total:,} dead letter{'' if total == 1 else 's'} in {args.topic}" + (f": {counts}" if counts else "")
    if others:
        summary += f"; {others:,} record{'' if others == 1 else 's'} without streamcar headers (not dead letters)"
    console.print(summary)
    return 0


def to_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter for ``--json``: key, value and header values as UTF-8 text, or all base64 when one is not."""
    encoding, encode = encoder([letter.key, letter.value, *(v for _, v in letter.headers)])
    return {
        "partition": letter.partition,
        "offset": letter.offset,
        "dead_letter": letter.is_dead_letter,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "kind": letter.kind,
        "error": letter.error,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at.isoformat(timespec="milliseconds") if letter.failed_at else None,
        "redrive_count": letter.redrive_count,
        "key": encode(letter.key),
        "value": encode(letter.value),
        "headers": header_object(letter.headers, encode),
        "encoding": encoding,
    }


def _table() -> Table:
    table = Table()
    for column in ("dlq", "source", "kind", "attempts", "failed at", "error", "key"):
        table.add_column(column, justify="right" if column in ("dlq", "attempts") else "left")
    return table


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _time(text: str | None) -> datetime | None:
    try:
        when = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return when if when is None or when.tzinfo is not None else when.replace(tzinfo=UTC)


def key_text(letter: DeadLetter) -> str:
    if letter.key is None:
        return "<null>"
    # one line: UTF-8 where it decodes, escapes for the rest and for control characters
    text = letter.key.decode("utf-8", "backslashreplace")
    return _clip("".join(c if c.isprintable() else repr(c)[1:-1] for c in text), 40)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
