"""The records the engine publishes: replies to ``publish.topic`` and dead letters to ``dead_letter.topic``."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamcar.event import Event, Headers, KeepKey, Reply, text_bytes

DLQ_HEADER_PREFIX = "streamcar-"
# Trace context travels from the input record to what we publish for it, unless the reply sets its own.
_PROPAGATED = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class OutRecord:
    key: bytes | None
    value: bytes | None
    headers: Headers


def reply_record(event: Event, reply: Reply, *, forward: bool = False) -> OutRecord:
    """The record a success publishes: the reply's value, key (the input's unless it set one) and headers.

    ``forward`` (``publish.headers: forward``): the input's headers follow the reply's, but ``streamcar-*`` ones
    and those the reply sets itself (by name; ``content-type`` when the reply has a content type). Else only the
    trace context travels from the input. Either way a span of streamcar's own replaces ``traceparent`` when
    tracing is on (see :mod:`streamcar.engine.tracing`)."""
    key = event.key if isinstance(reply.key, KeepKey) else reply.key
    headers = list(reply.headers)
    names = {name for name, _ in headers}
    if reply.content_type and "content-type" not in names:
        headers.append(("content-type", text_bytes(reply.content_type)))
        names.add("content-type")
    if forward:
        headers += [(n, v) for n, v in event.headers if n not in names and not n.startswith(DLQ_HEADER_PREFIX)]
    else:
        for name in _PROPAGATED:
            value = event.header(name)
            if value is not None and name not in names:
                headers.append((name, value))
    return OutRecord(key, reply.value, tuple(headers))


REDRIVE_COUNT = "streamcar-redrive-count"
"""How many times ``streamcar dlq redrive`` re-published the record; kept when it is dead-lettered again."""


def dead_letter_record(
    event: Event, *, error: str, kind: str, attempts: int, failed_at: datetime | None = None
) -> OutRecord:
    """The original key, value and headers plus the ``streamcar-*`` error headers of docs/dead-letters.md.

    ``streamcar-*`` headers the record already carried (it was dead-lettered before, then redriven) are
    replaced, so a record never holds two contradicting error stories.
    """
    when = (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    kept = [(k, v) for k, v in event.headers if not k.startswith(DLQ_HEADER_PREFIX) or k == REDRIVE_COUNT]
    kept += [
        ("streamcar-error", _clip(error).encode("utf-8", "replace")),
        ("streamcar-error-kind", kind.encode()),
        ("streamcar-source-topic", event.topic.encode()),
        ("streamcar-source-partition", str(event.partition).encode()),
        ("streamcar-source-offset", str(event.offset).encode()),
        ("streamcar-attempts", str(attempts).encode()),
        ("streamcar-failed-at", when.encode()),
    ]
    return OutRecord(event.key, event.value, tuple(kept))


MAX_ERROR_TEXT = 4096
"""Characters of ``streamcar-error`` kept: an error that quotes a service's body must not make a letter huge."""
MAX_CUTS = 2
"""The levels of :func:`cut_down`."""
CUT_HEADER = "streamcar-cut"
"""On a dead letter that was cut down to fit its topic: what was cut, with the original sizes."""
_KEEP_UP_TO = 1024  # bytes of a key or header value that a first cut keeps


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _marker(size: int) -> bytes:
    return f"<cut by streamcar: {size} bytes>".encode()


def cut_down(record: OutRecord, level: int) -> OutRecord:
    """A dead letter made to fit a topic that refused it as too large, keeping every ``streamcar-*`` header.

    Level 1 replaces the value, the key and each header value that is over 1 KiB by a marker with its size.
    Level 2 replaces any value and key, and drops the other headers. ``streamcar-cut`` lists what went and how
    big it was. (The original stays in the source topic, which the letter names.)
    """
    cut: list[str] = []
    value: bytes | None = record.value
    if value and (len(value) > _KEEP_UP_TO or level >= 2):
        cut.append(f"value {len(value)} bytes")
        value = _marker(len(value))
    key = record.key
    if key is not None and (len(key) > _KEEP_UP_TO or level >= 2):
        cut.append(f"key {len(key)} bytes")
        key = _marker(len(key))
    headers: list[tuple[str, bytes | None]] = []
    for name, data in record.headers:
        own = name.startswith(DLQ_HEADER_PREFIX)
        size = len(data or b"")
        if own:
            headers.append((name, data))
        elif level >= 2:
            cut.append(f"header {name[:100]!r} {size} bytes")
        elif size > _KEEP_UP_TO:
            cut.append(f"header {name[:100]!r} {size} bytes")
            headers.append((name[:_KEEP_UP_TO], _marker(size)))
        else:
            headers.append((name[:_KEEP_UP_TO], data))
    text = "; ".join(cut) if len(cut) <= 20 else "; ".join(cut[:20]) + f"; and {len(cut) - 20} more"
    headers.append((CUT_HEADER, text.encode()))
    return OutRecord(key, value, tuple(headers))


def together(acks: list[tuple[int, asyncio.Future[Any]]], acked: set[int]) -> asyncio.Future[Any]:
    """One acknowledgement for a fan-out's records (``acks``: index, acknowledgement): done once each is, with
    the first failure if any; the index of each one acknowledged is added to ``acked`` (so that, sent again,
    only the others are)."""
    combined: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    remaining = len(acks)
    failure: list[BaseException] = []

    def one_done(index: int, ack: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        error = asyncio.CancelledError() if ack.cancelled() else ack.exception()
        if error is None:
            acked.add(index)
        elif not failure:
            failure.append(error)
        if remaining == 0 and not combined.done():
            if failure:
                combined.set_exception(failure[0])
            else:
                combined.set_result(ack.result())

    for index, ack in acks:
        ack.add_done_callback(functools.partial(one_done, index))
    return combined
