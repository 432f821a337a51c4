"""The records the engine publishes: replies to ``publish.topic`` and dead letters to ``dead_letter.topic``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from streamcar.event import Event, Headers, KeepKey, Reply

DLQ_HEADER_PREFIX = "streamcar-"
# Trace context travels from the input record to what we publish for it, unless the reply sets its own.
_PROPAGATED = ("traceparent", "tracestate")


@dataclass(frozen=True, slots=True)
class OutRecord:
    key: bytes | None
    value: bytes | None
    headers: Headers


def reply_record(event: Event, reply: Reply) -> OutRecord:
    key = event.key if isinstance(reply.key, KeepKey) else reply.key
    headers = list(reply.headers)
    names = {name for name, _ in headers}
    if reply.content_type and "content-type" not in names:
        headers.append(("content-type", reply.content_type.encode()))
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
    """The original key, value and headers plus the ``streamcar-*`` error headers of DESIGN.md.

    ``streamcar-*`` headers the record already carried (it was dead-lettered before, then redriven) are
    replaced, so a record never holds two contradicting error stories.
    """
    when = (failed_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    kept = [(k, v) for k, v in event.headers if not k.startswith(DLQ_HEADER_PREFIX) or k == REDRIVE_COUNT]
    kept += [
        ("streamcar-error", error.encode("utf-8", "replace")),
        ("streamcar-error-kind", kind.encode()),
        ("streamcar-source-topic", event.topic.encode()),
        ("streamcar-source-partition", str(event.partition).encode()),
        ("streamcar-source-offset", str(event.offset).encode()),
        ("streamcar-attempts", str(attempts).encode()),
        ("streamcar-failed-at", when.encode()),
    ]
    return OutRecord(event.key, event.value, tuple(kept))
