"""Single delivery over HTTP, as docs/http.md pins it.

Request: ``POST url`` with the record value as body and the record's metadata in ``Kafka-*`` headers.
Reply mapping: 2xx with a body is success (published), 2xx without one is success with nothing published,
408/425/429/5xx (but 501), timeouts and connection errors are retried, other 4xx and 501 are dead-lettered at once;
a ``Streamcar-Result`` header overrides the status.

Batch delivery (``batch.max_messages > 1``): ``POST url`` with the JSON envelope of :mod:`streamcar.call.envelope`
and one result per message back. A 2xx reply is read result by result (an empty one is success for all, nothing
published); any other status, a timeout or a connection error retries the whole batch (``Retry-After`` honoured);
``Streamcar-Result`` on the reply applies to every message.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from streamcar.call import override
from streamcar.call.envelope import (
    RECORDS_TYPE,
    EnvelopeError,
    TooManyRecords,
    decode_records,
    decode_results,
    encode_messages,
)
from streamcar.call.http1 import BadReply, ConnectError, Disconnected, Http1Pool, HttpError, TlsError
from streamcar.config import CallConfig, ServiceTlsConfig, format_duration
from streamcar.errors import ConfigError
from streamcar.event import KEEP_KEY, Event, KeepKey, Reply, Result
from streamcar.failures import Kind

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
OVERLOAD_STATUSES = frozenset({429, 503})
"""Statuses that say the service is overloaded (``Reply.overload``), when no ``call.status`` maps them."""
SETUP_STATUSES = frozenset({401, 403, 404, 405, 415})
"""Refusals a wrong setup gets for every message (path, credentials, method, content type): see Reply.refusal."""
NO_STATUSES: Mapping[int, Result] = {}
HEADER_PREFIX = "Kafka-Header-"
# RFC 9110 token characters: what may stand in a header name unescaped
_TOKEN_SAFE = "!#$&'*+-.^_`|~"
_MAX_ERROR_BODY = 2000  # the engine redacts an error, then cuts it shorter (Pipeline._called): a secret the
# service echoed must be whole when the redactor sees it
_PASSTHROUGH = ("traceparent", "tracestate")
# What each request sets itself: a static header of the same name (call.headers) gives way to it. Host is the
# client's (see HttpCaller).
_PER_REQUEST = frozenset(
    {
        "host",
        "content-type",
        "idempotency-key",
        "kafka-topic",
        "kafka-partition",
        "kafka-offset",
        "kafka-timestamp",
        "kafka-key",
    }
)
_PER_BATCH = frozenset({"host", "content-type", "kafka-batch-size"})


def encode_header_name(name: str) -> str:
    return quote_from_bytes(name.encode(), safe=_TOKEN_SAFE)


class UnsendableHeader(ValueError):
    """A record header that goes into an HTTP header as it is (content-type, traceparent, tracestate) holds a
    control character: sending it would inject headers, and no retry changes the record."""


def _raw(name: str, value: bytes) -> str:
    text = value.decode("latin-1")
    if any((ord(char) < 0x20 and char != "\t") or char == "\x7f" for char in text):
        raise UnsendableHeader(f"record header {name!r} holds control characters: it cannot be an HTTP header")
    return text


def static_headers(configured: dict[str, str], own: frozenset[str] = _PER_REQUEST) -> list[tuple[str, str]]:
    """``call.headers`` as sent with every call: without those each request sets itself (``own``, lowercase;
    by default a single call's). Values go out as their UTF-8 bytes (see :meth:`Http1Pool.post`)."""
    return [(name, _wire(value)) for name, value in configured.items() if name.lower() not in own]


def _wire(text: str) -> str:
    """``text``'s UTF-8 bytes, one character each (an environment variable's undecodable bytes as they were)."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def request_headers(event: Event, static: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers of a single call after ``static`` (see :func:`static_headers`), names as sent;
    :class:`UnsendableHeader` when a record header cannot be sent."""
    content_type = event.header("content-type")
    key = event.key
    topic, partition, offset = event.topic, event.partition, event.offset
    headers = [
        *static,
        ("Content-Type", "application/octet-stream" if content_type is None else _raw("content-type", content_type)),
        ("Kafka-Topic", topic),
        ("Kafka-Partition", str(partition)),
        ("Kafka-Offset", str(offset)),
        ("Kafka-Timestamp", str(event.timestamp)),
        ("Idempotency-Key", event.idempotency_key),
    ]
    if key is not None:
        headers.append(("Kafka-Key", quote_from_bytes(key, safe="")))
    if event.headers:
        for name, value in event.headers:
            headers.append((HEADER_PREFIX + encode_header_name(name), quote_from_bytes(value or b"", safe="")))
        for name in _PASSTHROUGH:
            value = event.header(name)
            if value is not None:
                headers = [pair for pair in headers if pair[0].lower() != name]  # the record's wins over call.headers
                headers.append((name, _raw(name, value)))
    return headers


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def reply_from_response(
    status: int,
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    body: bytes,
    *,
    statuses: Mapping[int, Result] = NO_STATUSES,
    request: str = "POST /",
) -> Reply:
    """The reply for a single call's HTTP response; ``statuses`` is ``call.status``, ``request`` what was asked
    (``POST /orders``: a refusal names it)."""
    retry_after = parse_retry_after(headers.get("Retry-After"))
    error = f"HTTP {status}" + (f": {_snippet(body)}" if body and not 200 <= status < 300 else "")
    asked = override(
        headers.get("Streamcar-Result"),
        error=error,
        header="Streamcar-Result",
        retry_after=retry_after,
        kind=Kind.HTTP_STATUS,
    )
    if asked is not None:
        return asked
    configured = statuses.get(status)
    if configured is not None:
        if configured is Result.SUCCESS:
            return _success(headers, body)
        reply = override(configured, error=error, header="call.status", retry_after=retry_after, kind=Kind.HTTP_STATUS)
        assert reply is not None
        return reply
    if 200 <= status < 300:
        return _success(headers, body)
    if status in RETRY_STATUSES or (status >= 500 and status != 501):
        return Reply.retry(after=retry_after, error=error, kind=Kind.HTTP_STATUS, overload=status in OVERLOAD_STATUSES)
    reply = Reply.dead_letter(error, kind=Kind.HTTP_STATUS)
    return replace(reply, refusal=f"HTTP {status} on {request}") if status in SETUP_STATUSES else reply


def replies_from_batch_response(
    status: int,
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    body: bytes,
    count: int,
    *,
    statuses: Mapping[int, Result] = NO_STATUSES,
    request: str = "POST /",
) -> list[Reply]:
    """The replies for a batch of ``count`` messages from the service's HTTP response (``statuses`` and
    ``request``: see :func:`reply_from_response`). A status ``call.status`` maps applies to every message."""
    after = parse_retry_after(headers.get("Retry-After"))
    what = f"HTTP {status} for a batch of {count}"
    asked = override(
        headers.get("Streamcar-Result"), error=what, header="Streamcar-Result", retry_after=after, kind=Kind.HTTP_STATUS
    )
    if asked is not None:
        return [asked] * count
    configured = statuses.get(status)
    if configured is Result.SUCCESS and not 200 <= status < 300:
        return [Reply.success(None)] * count  # done, nothing published: a mapped status carries no results
    if configured is not None and configured is not Result.SUCCESS:
        error = what + (f": {_snippet(body)}" if body else "")
        mapped = override(configured, error=error, header="call.status", retry_after=after, kind=Kind.HTTP_STATUS)
        assert mapped is not None
        return [mapped] * count
    if not 200 <= status < 300 and configured is None:
        error = what + (f": {_snippet(body)}" if body else "")
        reply = Reply.retry(after=after, error=error, kind=Kind.HTTP_STATUS, overload=status in OVERLOAD_STATUSES)
        if status in SETUP_STATUSES:
            reply = replace(reply, refusal=f"HTTP {status} on {request}")
        return [reply] * count
    if not body:
        return [Reply.success(None)] * count
    try:
        return decode_results(body, count)
    except EnvelopeError as exc:
        return [Reply.retry(error=f"{exc}: {_snippet(body)}", kind=Kind.BAD_REPLY)] * count


def _success(headers: CIMultiDictProxy[str] | CIMultiDict[str], body: bytes) -> Reply:
    """A 2xx reply with a body. Header values are latin-1 text (one character per byte the service sent, see
    :class:`~streamcar.call.http1.Response`), so each becomes the exact bytes it was: ``Kafka-Key`` and
    ``Kafka-Header-*`` after percent-decoding, ``Content-Type`` once :func:`~streamcar.event.text_bytes`
    encodes it for the ``content-type`` record header."""
    if not body:
        return Reply.success(None)
    content_type = headers.get("Content-Type")
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() == RECORDS_TYPE:
        try:
            return Reply.records(decode_records(body))  # fan-out: zero or more records, each its own
        except TooManyRecords as exc:  # the same again on a retry, and costly each time
            return Reply.dead_letter(str(exc), kind=Kind.PUBLISH)
        except EnvelopeError as exc:
            return Reply.retry(error=f"{exc}: {_snippet(body)}", kind=Kind.BAD_REPLY)
    key: bytes | KeepKey | None = KEEP_KEY
    if "Kafka-Key" in headers:
        key = unquote_to_bytes(headers["Kafka-Key"].encode("latin-1"))
    record_headers: list[tuple[str, bytes | None]] = []
    for name, value in headers.items():
        if name[: len(HEADER_PREFIX)].lower() == HEADER_PREFIX.lower():
            decoded = unquote_to_bytes(name[len(HEADER_PREFIX) :].encode("latin-1")).decode("utf-8", "replace")
            record_headers.append((decoded, unquote_to_bytes(value.encode("latin-1"))))
    if content_type is not None:  # its bytes as UTF-8 where they are, escaped where not: encoding gives them back
        content_type = content_type.encode("latin-1").decode("utf-8", "surrogateescape")
    topic = headers.get("Kafka-Topic")  # routing: where this reply goes instead of publish.topic
    return Reply.success(
        body, key=key, headers=tuple(record_headers), content_type=content_type, topic=topic.strip() if topic else None
    )


def _snippet(body: bytes) -> str:
    text = body[:_MAX_ERROR_BODY].decode("utf-8", "replace").strip().replace("\n", " ")
    return text + ("..." if len(body) > _MAX_ERROR_BODY else "")


def ssl_context(tls: ServiceTlsConfig) -> ssl.SSLContext:
    """The client TLS context ``call.tls`` asks for; ConfigError naming the field when a file is unusable."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"call.tls.ca_file: cannot use {tls.ca_file}: {_reason(exc)}") from exc
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"call.tls.cert_file: cannot use {tls.cert_file} with {tls.key_file}: {_reason(exc)}"
            ) from exc
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


class HttpCaller:
    def __init__(self, config: CallConfig, *, max_connections: int) -> None:
        self._url = config.url
        self._timeout = config.timeout
        self._max_response = config.max_response_bytes
        self._max_connections = max_connections
        self._batch = config.batch.max_messages > 1
        self._tls = config.tls
        self._server_name = config.tls.server_name if config.tls is not None else None
        # Host from call.headers names the virtual host (the connection still goes to the URL's address)
        self._host = next((v for k, v in config.headers.items() if k.lower() == "host"), None)
        self._static = static_headers(config.headers)
        self._batch_headers = [*static_headers(config.headers, _PER_BATCH), ("Content-Type", "application/json")]
        self._pool: Http1Pool | None = None
        self._statuses = {int(code): Result(result) for code, result in config.status.items()}
        self._request = f"POST {urlsplit(config.url).path or '/'}"  # what a refusal names (never the query)

    async def start(self) -> None:
        context = None if self._tls is None else ssl_context(self._tls)
        self._pool = Http1Pool(
            self._url,
            limit=self._max_connections,
            timeout=self._timeout,
            ssl_context=context,
            server_hostname=self._server_name,
            host_header=self._host,
            max_response=self._max_response,
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def call(self, events: Sequence[Event]) -> list[Reply]:
        if self._batch:
            return await self._call_batch(events)
        return [await self._call_one(event) for event in events]

    def _ready_pool(self) -> Http1Pool:
        if self._pool is None:
            raise RuntimeError("HttpCaller.start() was not awaited")
        return self._pool

    async def _call_batch(self, events: Sequence[Event]) -> list[Reply]:
        pool = self._ready_pool()
        headers = [*self._batch_headers, ("Kafka-Batch-Size", str(len(events)))]
        try:
            response = await pool.post(headers, encode_messages(events))
        except (TimeoutError, HttpError) as exc:
            return [self._unanswered(exc)] * len(events)
        return replies_from_batch_response(
            response.status,
            response.headers,
            response.body,
            len(events),
            statuses=self._statuses,
            request=self._request,
        )

    async def _call_one(self, event: Event) -> Reply:
        pool = self._ready_pool()
        try:
            headers = request_headers(event, self._static)
        except UnsendableHeader as exc:
            return Reply.dead_letter(str(exc), kind=Kind.REJECTED)
        try:
            response = await pool.post(headers, event.value or b"")
        except (TimeoutError, HttpError) as exc:
            return self._unanswered(exc)
        return reply_from_response(
            response.status, response.headers, response.body, statuses=self._statuses, request=self._request
        )

    def _unanswered(self, exc: TimeoutError | HttpError) -> Reply:
        """The retry for a call that got no HTTP reply: timed out, TLS refused, connection failed or ended, or a
        response we cannot read."""
        if isinstance(exc, TimeoutError):
            return Reply.retry(error=f"no reply within {format_duration(self._timeout)}", kind=Kind.TIMEOUT)
        if isinstance(exc, TlsError):
            return Reply.retry(error=f"TLS error: {exc}", kind=Kind.TLS)
        if isinstance(exc, BadReply):
            return Reply.retry(error=str(exc), kind=Kind.BAD_REPLY)
        if isinstance(exc, ConnectError):
            return Reply.retry(error=f"connection error: {exc}", kind=Kind.CONNECTION)
        if isinstance(exc, Disconnected):
            # the service took the connection, then dropped it: maybe for this very request (one too large for
            # it, a handler that crashes on it), so it says nothing about the other messages
            return Reply.retry(error=f"connection error: {exc}", kind=Kind.DISCONNECTED)
        return Reply.retry(error=f"HTTP client error: {exc}", kind=Kind.HTTP_CLIENT)
