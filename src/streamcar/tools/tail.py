"""``streamcar tail`` prints a topic's records; ``streamcar produce`` writes stdin's lines to a topic.

tail reads by assignment (no consumer group, nothing committed) from ``--from`` in every partition (default
``-10``: the last 10 records of each), and prints records as they arrive: in order within a partition,
partitions interleaved. ``-n N`` stops after N records; ``--no-follow`` stops once every partition reached the end
offset it had when tail started (records produced later are not printed); otherwise it follows until Ctrl-C.

A record is one line, ``<partition>:<offset>  key=<key>  <value>``, the key part left out for a null key and a
null value (tombstone) shown as ``<null>``. Keys and values are shown as UTF-8 text with escapes that keep the
line one line and unambiguous: a backslash is doubled, a byte that is not UTF-8 becomes ``\\xNN``, and a
non-printable character ``\\n``, ``\\r``, ``\\t``, ``\\xNN`` or ``\\uNNNN``. ``--json`` prints one object per line with
the fields of the batch envelope (docs/http.md, "Batch delivery"): ``topic``, ``partition``, ``offset``,
``timestamp`` (ms, null if unknown), ``key``, ``value``, ``headers`` (an object, or ``[name, value]`` pairs when
a name repeats) and ``encoding``: ``utf-8`` when the key, the value and every header value decode as UTF-8, else
``base64`` for all.

produce sends one record per stdin line (bytes; only the trailing ``\\n`` is removed, so an empty line is an
empty value), with ``--keyed`` split at the first TAB into key and value, and each ``-H NAME=VALUE`` as a header
on every record. The producer is idempotent with acks=all; every record must be acknowledged or the command
fails. A ``--keyed`` line without a TAB stops the command (exit 2) once the lines before it are acknowledged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Generator, Iterable, Sequence
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from streamcar.call.envelope import encoder, header_object
from streamcar.config import KafkaConfig
from streamcar.errors import KafkaError, UsageError
from streamcar.kafka.records import UNREADABLE_HEADERS, read_headers
from streamcar.tools._common import (
    client_config,
    isolation,
    kafka_settings,
    partitions_of,
    produce_blocking,
    read_range,
    reader,
    watermarks,
)
from streamcar.tools._positions import Position, parse_position, resolve

DEFAULT_FROM = "-10"
FLUSH_TIMEOUT = 60.0  # seconds for the last records to be acknowledged

Headers = Sequence[tuple[str, bytes]]


# --- tail ------------------------------------------------------------------------------------------------------------


def records(
    kafka: KafkaConfig,
    topic: str,
    start: str | Position = DEFAULT_FROM,
    *,
    limit: int | None = None,
    follow: bool = True,
    uncommitted: bool = False,
) -> Generator[Message, None, None]:
    """``topic``'s records from ``start`` in each partition, as they arrive; close the iterator to stop early.
    ``uncommitted``: also records of transactions not committed (yet, or ever)."""
    position = start if isinstance(start, Position) else parse_position(start, option="--from")
    consumer = reader(kafka, **isolation(uncommitted))
    try:
        partitions = partitions_of(consumer, topic)
        marks = watermarks(consumer, topic, partitions)
        starts = resolve(consumer, topic, partitions, position, marks)
        ends = {p: high for p, (_, high) in marks.items()}
        pending = set(partitions) if follow else {p for p in partitions if starts[p] < ends[p]}
        if not pending or limit == 0:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
        found = read_range(consumer, topic, {p: ends[p] for p in pending}) if not follow else _follow(consumer, topic)
        for count, msg in enumerate(found, 1):
            yield msg
            if limit is not None and count >= limit:
                return
    finally:
        consumer.close()


def _follow(consumer: Consumer, topic: str) -> Generator[Message, None, None]:
    """The assigned records as they arrive, without end."""
    while True:
        for msg in consumer.consume(num_messages=500, timeout=0.5):
            error = msg.error()
            if error is None:
                yield msg
            elif error.code() != RdKafkaError._PARTITION_EOF:
                raise KafkaError(f"reading {topic}[{msg.partition()}]: {error.str()}")


def printable(data: bytes) -> str:
    """``data`` as one line of text: UTF-8, with a doubled backslash and escapes for the rest (see above)."""
    text = data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def format_line(msg: Message) -> str:
    key, value = msg.key(), msg.value()
    parts = [f"{msg.partition()}:{msg.offset()}"]
    if key is not None:
        parts.append(f"key={printable(key)}")
    parts.append("<null>" if value is None else printable(value))
    return "  ".join(parts)


def format_json(msg: Message) -> dict[str, Any]:
    """A record for ``--json``, in the batch envelope's fields and encodings."""
    found = read_headers(msg)
    headers = list(found or ())
    key, value = msg.key(), msg.value()
    encoding, encode = encoder([key, value, *(v for _, v in headers)])
    kind, timestamp = msg.timestamp()
    record: dict[str, Any] = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp": None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
        "key": encode(key),
        "value": encode(value),
        "headers": header_object(headers, encode),
        "encoding": encoding,
    }
    if found is None:  # a name that is not UTF-8: confluent-kafka cannot read them
        record["headers"], record["headers_error"] = None, UNREADABLE_HEADERS
    return record


def tail_command(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 0:
        raise UsageError(f"-n: {args.n} is not a number of records (0 or more)")
    start = parse_position(args.from_ or DEFAULT_FROM, option="--from")
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    show = format_line if not args.json else lambda msg: json.dumps(format_json(msg), separators=(",", ":"))
    out = sys.stdout
    # closing(): the consumer closes even when Ctrl-C or a closed pipe interrupts the loop below
    with contextlib.closing(
        records(kafka, args.topic, start, limit=args.n, follow=not args.no_follow, uncommitted=args.uncommitted)
    ) as found:
        try:
            for msg in found:
                out.write(show(msg) + "\n")
                out.flush()  # followed records show up at once, also through a pipe
        except BrokenPipeError:
            # the reader went away (`| head`): stop quietly, as Unix tools do, and keep Python's exit flush quiet
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return 0


# --- produce ---------------------------------------------------------------------------------------------------------


class BadLineError(UsageError):
    """A ``--keyed`` line without a TAB."""


def produce_lines(
    kafka: KafkaConfig, topic: str, lines: Iterable[bytes], *, keyed: bool = False, headers: Headers = ()
) -> int:
    """Produce a record per line and wait until all are acknowledged; returns how many.

    Raises BadLineError for a ``keyed`` line without a TAB, after the lines before it are acknowledged, and
    KafkaError if the topic does not exist or a record was not acknowledged.
    """
    # A missing topic is one clear line rather than a delivery error per record. Checked through a consumer: a
    # metadata request from an admin client or a producer has the broker auto-create the topic it names.
    probe = reader(kafka)
    try:
        partitions_of(probe, topic)
    finally:
        probe.close()
    settings = {"acks": "all", "enable.idempotence": True, "linger.ms": 5, "allow.auto.create.topics": False}
    producer = Producer(client_config(kafka, **settings))
    failures: list[str] = []

    def on_delivery(err: RdKafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    record_headers: list[tuple[str, str | bytes | None]] | None = list(headers) or None
    produced = 0
    bad: BadLineError | None = None
    for number, line in enumerate(lines, 1):
        body = line[:-1] if line.endswith(b"\n") else line
        key: bytes | None = None
        if keyed:
            key, tab, body = body.partition(b"\t")
            if not tab:
                bad = BadLineError(
                    f"line {number}: no TAB between key and value (--keyed wants key<TAB>value); "
                    f"the {produced} line{'' if produced == 1 else 's'} before it were produced to {topic}"
                )
                break
        produce_blocking(producer, topic, value=body, key=key, headers=record_headers, on_delivery=on_delivery)
        producer.poll(0)
        produced += 1
        if failures:
            break
    unacknowledged = producer.flush(FLUSH_TIMEOUT)
    if unacknowledged:
        raise KafkaError(
            f"{unacknowledged} of {produced} records to {topic} not acknowledged within {FLUSH_TIMEOUT:.0f}s"
        )
    if failures:
        raise KafkaError(f"{len(failures)} of {produced} records were not produced to {topic}: {failures[0]}")
    if bad is not None:
        raise bad
    return produced


def parse_header(text: str) -> tuple[str, bytes]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise UsageError(f"-H {text!r}: expected NAME=VALUE")
    return name, os.fsencode(value)  # the bytes as given on the command line


def produce_command(args: argparse.Namespace) -> int:
    headers = [parse_header(text) for text in args.header]
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    produced = produce_lines(kafka, args.topic, sys.stdin.buffer, keyed=args.keyed, headers=headers)
    print(f"produced {produced} record{'' if produced == 1 else 's'} to {args.topic}", file=sys.stderr)
    return 0
