"""Dead letters for the dlq tests: crafted as the sidecar writes them, or made by a real sidecar over a service
that refuses some records; and reading a topic as the sidecar's consumer does (read_committed)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any, cast

from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from streamcar.cli import main

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, RecordHeaders, produce_records, read_topic

ERROR_HEADERS = {
    "streamcar-error",
    "streamcar-error-kind",
    "streamcar-source-topic",
    "streamcar-source-partition",
    "streamcar-source-offset",
    "streamcar-attempts",
    "streamcar-failed-at",
}
Record = tuple[bytes | None, bytes | None, RecordHeaders]


def read_committed(kafka: KafkaHandle, topic: str, *, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic`` a read_committed consumer gets, up to each partition's end (EOF), bounded."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "committed-reader",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        pending, got = set(partitions), []
        deadline = time.monotonic() + timeout
        while pending:
            assert time.monotonic() < deadline, f"{topic}: no EOF on partitions {sorted(pending)} within {timeout}s"
            for msg in consumer.consume(num_messages=5000, timeout=0.2):
                error = msg.error()
                if error is None:
                    got.append(msg)
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                else:
                    raise AssertionError(error.str())
        return got
    finally:
        consumer.close()


def end_offsets(kafka: KafkaHandle, topic: str) -> dict[int, int]:
    """The high watermarks (read_uncommitted: what was written, committed or not)."""
    consumer = kafka.consumer("probe", **{"isolation.level": "read_uncommitted"})
    partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}


def letter(
    source: str,
    partition: int,
    offset: int,
    value: bytes | None,
    *,
    key: bytes | None = b"k",
    kind: str = "http-status",
    error: str = "HTTP 422: invalid order",
    failed_at: str = "2026-01-02T03:04:05.678+00:00",
    extra: RecordHeaders | None = None,
) -> Record:
    """A dead letter as the sidecar writes it (docs/dead-letters.md), with a ``trace`` header of the original record."""
    headers: RecordHeaders = [
        ("trace", b"t-1"),
        *(extra or []),
        ("streamcar-error", error.encode()),
        ("streamcar-error-kind", kind.encode()),
        ("streamcar-source-topic", source.encode()),
        ("streamcar-source-partition", str(partition).encode()),
        ("streamcar-source-offset", str(offset).encode()),
        ("streamcar-attempts", b"1"),
        ("streamcar-failed-at", failed_at.encode()),
    ]
    return (key, value, headers)


def dlq(*args: str, bootstrap: str) -> int:
    return main(["dlq", *args, "-b", bootstrap])


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def value_of(msg: Message) -> bytes:
    value = msg.value()
    assert value is not None
    return value


def id_of(msg: Message) -> int:
    return int(value_of(msg).removeprefix(b"id-"))


def headers_of(msg: Message) -> dict[str, bytes | None]:
    return dict(cast(list[tuple[str, bytes | None]], msg.headers() or []))


async def invalid_or_busy(seen: Seen) -> web.StreamResponse:
    if seen.body.startswith(b"bad"):
        return web.Response(status=422, text="invalid order")  # permanent: dead-lettered at once
    if seen.body.startswith(b"down"):
        return web.Response(status=503, text="busy")  # retried, then dead-lettered as exhausted
    return web.Response(body=b"ok")


async def sidecar_dead_letters(
    kafka: KafkaHandle, source: str, dead_letter: str, group: str, records: Sequence[Record], *, expect: int
) -> dict[bytes, tuple[int, int]]:
    """Run a real sidecar over ``source`` (after adding ``records``) until ``dead_letter`` holds ``expect`` records;
    every source record's value -> (partition, offset)."""
    service = TestService(invalid_or_busy).start()
    try:
        await asyncio.to_thread(produce_records, kafka, source, records)
        config = make_config(kafka.bootstrap, {"p": pipeline(source, group, service.url, dead_letter=dead_letter)})
        async with running(config):
            letters = await asyncio.to_thread(read_topic, kafka, dead_letter, expect=expect)
        assert len(letters) == expect
    finally:
        service.stop()
    originals = await asyncio.to_thread(read_topic, kafka, source, expect=len(records))
    return {m.value(): (m.partition(), m.offset()) for m in originals}


def mixed_records() -> list[Record]:
    kinds = ["bad"] * 6 + ["down"] * 4 + ["ok"] * 10
    return [(f"k{i}".encode(), f"{kind}-{i}".encode(), [("trace", f"t-{i}".encode())]) for i, kind in enumerate(kinds)]
