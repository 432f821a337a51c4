"""Helpers for a service *behind* the sidecar: the service's half of the HTTP protocol (docs/http.md).

:mod:`streamcar.call.http` is the sidecar's half (it builds the request and reads the reply); this module is its
mirror image, framework-neutral, so a service can work with :class:`~streamcar.event.Event` and
:class:`~streamcar.event.Reply` instead of raw ``Kafka-*`` headers and status codes::

    event = event_from_http(headers, body)          # any Mapping[str, str] of request headers, the raw body
    status, headers, body = http_reply(Reply.success(b"..."))

    events = events_from_batch(body)                # batch delivery (batch.max_messages > 1)
    body = batch_reply([Reply.success(b"..."), Reply.drop()])

Framework adapters:

* aiohttp: ``event = await aiohttp_event(request)`` and ``return aiohttp_response(reply)``.
* WSGI (Flask, Django, ...): ``event = wsgi_event(environ)`` and ``return wsgi_response(reply, start_response)``.
* Starlette / FastAPI (no adapter needed, starlette is not imported here)::

      event = event_from_http(request.headers, await request.body())
      status, headers, body = http_reply(reply)
      return Response(body, status_code=status, headers=headers)

What the wire cannot carry (choices made here):

* Header names are looked up case-insensitively. ASGI servers (Starlette) lowercase every header name, so a Kafka
  header named ``X-Trace`` arrives as ``x-trace``; aiohttp keeps the case. WSGI is lossier still: the server turns
  ``-`` into ``_`` and uppercases, and joins repeated headers with ``", "``; :func:`wsgi_event` reads
  ``HTTP_KAFKA_HEADER_X_TRACE`` back as ``x-trace``. Use aiohttp when exact Kafka header names matter.
* A Kafka header with a null value travels as an empty ``Kafka-Header-*`` value and comes back as ``b""``.
* A single-message reply can keep the input key (:data:`~streamcar.event.KEEP_KEY`, no ``Kafka-Key`` header) or set
  one (bytes), but it cannot ask for a *null* key: :func:`http_reply` raises ValueError for ``key=None`` rather than
  silently keeping the input key. In a batch reply an absent ``"key"`` keeps the input key and ``"key": null``
  asks for a null key (the envelope is described in :mod:`streamcar.call.envelope`).
* A success with no value, or an empty value, is answered 204: an empty 2xx body publishes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from streamcar.call.envelope import RECORDS_TYPE, decode_messages, encode_records, encode_results
from streamcar.call.http import HEADER_PREFIX, encode_header_name
from streamcar.event import Event, KeepKey, Reply, Result

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "aiohttp_event",
    "aiohttp_response",
    "batch_reply",
    "event_from_http",
    "events_from_batch",
    "http_reply",
    "wsgi_event",
    "wsgi_response",
]

OCTET_STREAM = "application/octet-stream"
_TEXT = "text/plain; charset=utf-8"
_PREFIX = HEADER_PREFIX.lower()
_WSGI_PREFIX = "HTTP_KAFKA_HEADER_"
_HeaderPairs = list[tuple[str, bytes | None]]


# --- single message: request -> Event ------------------------------------------------------------------------------


def event_from_http(headers: Mapping[str, str], body: bytes) -> Event:
    """The :class:`Event` the sidecar sent as one HTTP request (its headers and its body).

    ``headers`` may be any mapping of header names to values; names are matched case-insensitively, and repeated
    ``Kafka-Header-*`` headers are all kept when the mapping's ``items()`` yields them all (aiohttp, multidict).
    Raises ValueError if ``Kafka-Topic``, ``Kafka-Partition`` or ``Kafka-Offset`` is missing or malformed.
    """
    return _event_from_items(headers.items(), body)


def _event_from_items(items: Iterable[tuple[str, str]], body: bytes) -> Event:
    single: dict[str, str] = {}
    record_headers: _HeaderPairs = []
    for name, value in items:
        lowered = name.lower()
        if lowered.startswith(_PREFIX):  # "Kafka-Header-" alone: a header with an empty name
            decoded = unquote_to_bytes(name[len(_PREFIX) :]).decode("utf-8", "replace")
            record_headers.append((decoded, unquote_to_bytes(value)))
        else:
            single.setdefault(lowered, value)
    present = {name for name, _ in record_headers}
    content_type = single.get("content-type")
    if content_type and content_type.strip().lower() != OCTET_STREAM and "content-type" not in present:
        record_headers.append(("content-type", content_type.encode("latin-1")))
    traceparent = single.get("traceparent")
    if traceparent is not None and "traceparent" not in present:
        record_headers.append(("traceparent", traceparent.encode("latin-1")))
    key = single.get("kafka-key")
    return Event(
        topic=_required(single, "Kafka-Topic"),
        partition=_int(single, "Kafka-Partition", required=True),
        offset=_int(single, "Kafka-Offset", required=True),
        timestamp=_int(single, "Kafka-Timestamp", required=False),
        key=None if key is None else unquote_to_bytes(key),
        value=body,
        headers=tuple(record_headers),
    )


def _required(single: Mapping[str, str], name: str) -> str:
    value = single.get(name.lower())
    if value is None or not value.strip():
        raise ValueError(f"not a streamcar request: the {name} header is missing")
    return value.strip()


def _int(single: Mapping[str, str], name: str, *, required: bool) -> int:
    if not required and name.lower() not in single:
        return -1
    raw = _required(single, name)
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"the {name} header must be an integer, got {raw!r}") from None


# --- single message: Reply -> response ------------------------------------------------------------------------------


def http_reply(reply: Reply) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body that make the sidecar read back ``reply`` (see the module docstring for limits).

    Raises ValueError for what the single-message protocol cannot say: a null key, or two reply headers with the
    same name (use :func:`aiohttp_response` or :func:`wsgi_response`, which send repeated headers).
    """
    status, pairs, body = _response_parts(reply)
    headers: dict[str, str] = {}
    for name, value in pairs:
        if name in headers:
            raise ValueError(f"reply header {name!r} is repeated; a dict of headers cannot carry it twice")
        headers[name] = value
    return status, headers, body


def _response_parts(reply: Reply) -> tuple[int, list[tuple[str, str]], bytes]:
    if reply.result is Result.SUCCESS and reply.fanout is not None:
        body = json.dumps({"records": encode_records(reply.fanout)}, separators=(",", ":")).encode()
        return 200, [("Content-Type", RECORDS_TYPE)], body
    if reply.result is Result.SUCCESS:
        if not reply.value:
            return 204, [], b""
        headers = [("Content-Type", reply.content_type or OCTET_STREAM)]
        if reply.key is None:
            raise ValueError("a single-message HTTP reply cannot publish a null key: use KEEP_KEY or bytes")
        if not isinstance(reply.key, KeepKey):
            headers.append(("Kafka-Key", quote_from_bytes(reply.key, safe="")))
        if reply.topic is not None:
            headers.append(("Kafka-Topic", reply.topic))
        for name, value in reply.headers:
            headers.append((HEADER_PREFIX + encode_header_name(name), quote_from_bytes(value or b"", safe="")))
        return 200, headers, reply.value
    if reply.result is Result.DROP:
        return 204, [("Streamcar-Result", "drop")], b""
    error = (reply.error or "").encode()
    if reply.result is Result.RETRY:
        headers = [("Streamcar-Result", "retry"), ("Content-Type", _TEXT)]
        if reply.retry_after is not None:
            headers.append(("Retry-After", str(max(0, math.ceil(reply.retry_after)))))
        return 503, headers, error
    return 422, [("Streamcar-Result", "dead-letter"), ("Content-Type", _TEXT)], error


# --- batch envelope ---------------------------------------------------------------------------------------------------


def events_from_batch(body: bytes) -> list[Event]:
    """The events of a batch request body ``{"messages": [...]}``; ValueError if it is not one."""
    return decode_messages(body)


def batch_reply(replies: Sequence[Reply]) -> bytes:
    """The batch reply body ``{"results": [...]}``, one result per reply, in order.

    Each result is ``utf-8`` encoded when its key, header values and value all decode as UTF-8, else ``base64``.
    An absent ``"key"`` keeps the input key; ``"key": null`` asks for a null key. A reply's ``content_type`` becomes
    a ``content-type`` header unless it has one; a retry's ``retry_after`` travels as ``"retry_after"`` seconds.
    """
    return encode_results(replies)


# --- framework adapters ---------------------------------------------------------------------------------------------


async def aiohttp_event(request: web.Request) -> Event:
    """The :class:`Event` in an aiohttp request (exact header names, repeated headers kept)."""
    return event_from_http(request.headers, await request.read())


def aiohttp_response(reply: Reply) -> web.Response:
    """An aiohttp response that the sidecar reads back as ``reply`` (repeated reply headers are sent repeatedly)."""
    from aiohttp import web
    from multidict import CIMultiDict

    status, headers, body = _response_parts(reply)
    return web.Response(status=status, headers=CIMultiDict(headers), body=body or None)


def wsgi_event(environ: Mapping[str, Any]) -> Event:
    """The :class:`Event` in a WSGI environ (header names come back lowercase with ``_`` read as ``-``)."""
    items: list[tuple[str, str]] = []
    for name, value in environ.items():
        if name == "CONTENT_TYPE":
            items.append(("Content-Type", str(value)))
        elif name.startswith(_WSGI_PREFIX):
            items.append((HEADER_PREFIX + name[len(_WSGI_PREFIX) :].lower().replace("_", "-"), str(value)))
        elif name.startswith("HTTP_"):
            items.append((name[5:].replace("_", "-"), str(value)))
    stream = environ.get("wsgi.input")
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = stream.read(length) if stream is not None and length > 0 else b""
    return _event_from_items(items, body)


def wsgi_response(reply: Reply, start_response: Callable[..., Any]) -> list[bytes]:
    """Calls ``start_response`` and returns the body iterable for ``reply``: ``return wsgi_response(reply, sr)``."""
    status, headers, body = _response_parts(reply)
    reasons = {200: "OK", 204: "No Content", 422: "Unprocessable Content", 503: "Service Unavailable"}
    if status != 204:
        headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} {reasons[status]}", headers)
    return [body] if body else []
