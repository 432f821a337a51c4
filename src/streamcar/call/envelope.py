"""The JSON envelope of batch delivery (docs/http.md, "Batch delivery"), both directions.

Request ``{"messages": [{"topic", "partition", "offset", "timestamp", "key", "headers", "value", "encoding"}]}``
and reply ``{"results": [{"status", "value", "encoding", "key", "headers", "error"}]}``, one result per message
in order. ``encoding`` (``utf-8`` or ``base64``) applies to the key, the header values and the value of its entry
alike; an entry is ``utf-8`` when all of them decode as UTF-8. ``headers`` is an object, or a list of
``[name, value]`` pairs when a name repeats. In a result an absent ``"key"`` keeps the input key and
``"key": null`` asks for a null key. A ``retry`` result may carry ``"retry_after"`` (seconds).

The sidecar writes requests with :func:`encode_messages` and reads replies with :func:`decode_results`; the
service side (:mod:`streamcar.service`) uses :func:`decode_messages` and :func:`encode_results`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from streamcar.event import (
    KEEP_KEY,
    MAX_FANOUT,
    Event,
    Headers,
    KeepKey,
    Record,
    Reply,
    Result,
    text_bytes,
    too_many_records,
)
from streamcar.failures import Kind

_Pairs = list[tuple[str, bytes | None]]


class TooManyRecords(ValueError):
    """A fan-out reply with more records than one reply may publish (:data:`streamcar.event.MAX_FANOUT`)."""


class EnvelopeError(ValueError):
    """A batch body or reply that is not the envelope."""


# --- the sidecar's side ------------------------------------------------------------------------------------------


def encode_messages(events: Sequence[Event]) -> bytes:
    """The request body for ``events``."""
    messages = []
    for event in events:
        encoding, encode = encoder([event.key, event.value, *(value for _, value in event.headers)])
        messages.append(
            {
                "topic": event.topic,
                "partition": event.partition,
                "offset": event.offset,
                "timestamp": event.timestamp,
                "key": encode(event.key),
                "headers": header_object(event.headers, encode),
                "value": encode(event.value),
                "encoding": encoding,
            }
        )
    return json.dumps({"messages": messages}, separators=(",", ":")).encode()


def decode_results(body: bytes, expected: int) -> list[Reply]:
    """The ``expected`` replies in a reply body.

    Raises :class:`EnvelopeError` when the body as a whole is unusable (not JSON, no ``results`` list, the wrong
    number of results). A single malformed result becomes a ``retry`` reply of kind ``bad-reply`` for its message.
    """
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise EnvelopeError(f"the batch reply is not JSON: {exc}") from None
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        raise EnvelopeError('the batch reply is not an object with a "results" list')
    if len(results) != expected:
        raise EnvelopeError(f"the batch reply has {len(results)} results for {expected} messages")
    replies = []
    for index, result in enumerate(results):
        try:
            replies.append(_reply(result))
        except (KeyError, TypeError, ValueError) as exc:
            replies.append(Reply.retry(error=f"results[{index}] is malformed: {exc}", kind=Kind.BAD_REPLY))
    return replies


def _reply(result: object) -> Reply:
    if not isinstance(result, dict):
        raise TypeError("not an object")
    status = Result.named(result.get("status"))
    if status is None:
        raise ValueError(f"unknown status {result.get('status')!r} (success, drop, retry or dead-letter)")
    error = result.get("error")
    error = None if error is None else str(error)
    if status is Result.SUCCESS and "records" in result:
        return Reply.records(_records(result["records"]))
    if status is Result.SUCCESS:
        decode = _decoder(result.get("encoding"))
        key: bytes | KeepKey | None = decode(result["key"]) if "key" in result else KEEP_KEY
        headers = tuple((str(name), decode(value)) for name, value in _header_items(result.get("headers")))
        topic = result.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic must be a string, got {topic!r}")
        return Reply.success(decode(result.get("value")), key=key, headers=headers, topic=topic)
    if status is Result.DROP:
        return Reply.drop()
    if status is Result.RETRY:
        after = result.get("retry_after")
        if after is not None and (not isinstance(after, int | float) or not math.isfinite(after) or after < 0):
            raise ValueError(f"retry_after must be a number of seconds, got {after!r}")
        return Reply.retry(after=after, error=error or "the service asked for a retry", kind=Kind.RETRY)
    return Reply.dead_letter(error or "the service dead-lettered it", kind=Kind.REJECTED)


# --- fan-out: {"records": [...]}, a single reply's body or a batch result's ---------------------------------------

RECORDS_TYPE = "application/vnd.streamcar.records+json"
"""The content type of a single reply that carries records (fan-out)."""


def decode_records(body: bytes) -> list[Record]:
    """The records of a fan-out reply body ``{"records": [...]}``; :class:`EnvelopeError` if it is not one,
    :class:`TooManyRecords` if it has more than one reply may publish (checked before they are decoded)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise EnvelopeError(f"the records reply is not JSON: {exc}") from None
    if not isinstance(document, dict) or "records" not in document:
        raise EnvelopeError('the records reply is not an object with a "records" list')
    items = document["records"]
    if isinstance(items, list) and len(items) > MAX_FANOUT:
        raise TooManyRecords(too_many_records(len(items)))
    try:
        return _records(document["records"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EnvelopeError(f"the records reply is malformed: {exc}") from None


def _records(items: object) -> list[Record]:
    if not isinstance(items, list):
        raise TypeError('"records" must be a list')
    records = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise TypeError(f"records[{index}] is not an object")
        decode = _decoder(item.get("encoding"))
        topic = item.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"records[{index}].topic must be a string")
        records.append(
            Record(
                decode(item.get("value")),
                key=decode(item["key"]) if "key" in item else KEEP_KEY,
                headers=tuple((str(name), decode(value)) for name, value in _header_items(item.get("headers"))),
                topic=topic,
            )
        )
    return records


def encode_records(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Each record as the envelope writes it (a single reply's body is ``{"records": <this>}``)."""
    return [_payload(r.value, r.key, r.headers, r.content_type, r.topic) for r in records]


def _payload(
    value: bytes | None, key: bytes | KeepKey | None, headers: Headers, content_type: str | None, topic: str | None
) -> dict[str, Any]:
    """What a record to publish holds, as a result or a fanned-out record writes it: ``value`` and ``encoding``,
    ``key`` (absent: the input's), ``headers`` (``content_type`` among them unless one is), ``topic``."""
    pairs: _Pairs = list(headers)
    if content_type and all(name != "content-type" for name, _ in pairs):
        pairs.append(("content-type", text_bytes(content_type)))
    encoding, encode = encoder([value, None if isinstance(key, KeepKey) else key, *(v for _, v in pairs)])
    item: dict[str, Any] = {"value": encode(value), "encoding": encoding}
    if not isinstance(key, KeepKey):
        item["key"] = encode(key)
    item["headers"] = header_object(pairs, encode)
    if topic is not None:
        item["topic"] = topic
    return item


# --- the service's side ------------------------------------------------------------------------------------------


def decode_messages(body: bytes) -> list[Event]:
    """The events of a request body; :class:`EnvelopeError` if it is not one."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise EnvelopeError(f"a batch body must be JSON: {exc}") from None
    messages = document.get("messages") if isinstance(document, dict) else None
    if not isinstance(messages, list):
        raise EnvelopeError('a batch body must be an object with a "messages" list')
    events = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise EnvelopeError(f"messages[{index}] must be an object")
        try:
            events.append(_event(message))
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(f"messages[{index}] is malformed: {exc!r}") from None
    return events


def _event(message: dict[str, Any]) -> Event:
    decode = _decoder(message.get("encoding"))
    for field in ("topic", "partition", "offset"):
        if message.get(field) is None:
            raise ValueError(f"missing {field!r}")
    timestamp = message.get("timestamp")
    return Event(
        topic=str(message["topic"]),
        partition=int(message["partition"]),
        offset=int(message["offset"]),
        timestamp=-1 if timestamp is None else int(timestamp),
        key=decode(message.get("key")),
        value=decode(message.get("value")),
        headers=tuple((str(name), decode(value)) for name, value in _header_items(message.get("headers"))),
    )


def encode_results(replies: Sequence[Reply]) -> bytes:
    """The reply body for ``replies``, one result per reply, in order.

    A reply's ``content_type`` becomes a ``content-type`` header unless it has one; a retry's ``retry_after``
    becomes ``"retry_after"``.
    """
    return json.dumps({"results": [_result(reply) for reply in replies]}, separators=(",", ":")).encode()


def _result(reply: Reply) -> dict[str, Any]:
    if reply.fanout is not None:
        return {"status": reply.result.value, "records": encode_records(reply.fanout)}
    result: dict[str, Any] = {
        "status": reply.result.value,
        **_payload(reply.value, reply.key, reply.headers, reply.content_type, reply.topic),
    }
    result["error"] = reply.error
    if reply.result is Result.RETRY and reply.retry_after is not None:
        result["retry_after"] = reply.retry_after
    return result


# --- encodings ------------------------------------------------------------------------------------------------------


def _decoder(encoding: object) -> Callable[[object], bytes | None]:
    if encoding in (None, "utf-8", "utf8"):
        return lambda value: None if value is None else str(value).encode()
    if encoding == "base64":

        def b64(value: object) -> bytes | None:
            if value is None:
                return None
            try:
                return base64.b64decode(str(value), validate=True)
            except binascii.Error as exc:
                raise ValueError(f"bad base64: {exc}") from None

        return b64
    raise ValueError(f"unknown encoding {encoding!r} (utf-8 or base64)")


def encoder(values: Iterable[bytes | None]) -> tuple[str, Callable[[bytes | None], str | None]]:
    """The encoding for an entry holding ``values`` (``utf-8`` if they all decode, else ``base64``) and its encoder."""
    try:
        for value in values:
            if value is not None:
                value.decode()
    except UnicodeDecodeError:
        return "base64", lambda value: None if value is None else base64.b64encode(value).decode("ascii")
    return "utf-8", lambda value: None if value is None else value.decode()


def _header_items(headers: object) -> list[tuple[object, object]]:
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    if isinstance(headers, list):
        return [(pair[0], pair[1]) for pair in headers]
    raise ValueError('"headers" must be an object')


def header_object(headers: Iterable[tuple[str, bytes | None]], encode: Callable[[bytes | None], str | None]) -> Any:
    """Encoded headers as an object, or as ``[name, value]`` pairs when a name repeats."""
    pairs = [(name, encode(value)) for name, value in headers]
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        return [list(pair) for pair in pairs]  # repeated names: pairs, which decode_messages also reads
    return dict(pairs)
