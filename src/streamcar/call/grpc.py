"""Single delivery over gRPC, as docs/grpc.md pins it: ``grpc(s)://host:port/pkg.Service/Method``.

Request: a unary call whose request bytes are the record value, passed through without (de)serializers since the
records already hold serialized protobuf (a null value is sent as zero bytes). Call metadata carries ``kafka-topic``,
``kafka-partition``, ``kafka-offset``, ``kafka-timestamp`` (ms epoch), ``kafka-key-bin`` (absent for a null key),
``idempotency-key``, ``traceparent``/``tracestate`` when the record has them, ``kafka-header-<name>-bin`` for each
record header whose lowercased name is a legal metadata key (others are not sent), and ``call.headers`` with
their names lowercased.

Reply mapping: OK is success and the response bytes are published; zero response bytes (an empty message such as
``google.protobuf.Empty``) publish nothing, like HTTP 204. Response metadata ``kafka-key-bin`` sets the published
record's key (else the input key is kept) and ``kafka-header-<name>-bin`` entries become its headers.
UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and ABORTED are retried (kind ``grpc-status``; ``call.timeout``
running out is kind ``timeout``), other statuses are dead-lettered; a ``streamcar-result`` trailer (``drop``,
``retry``, ``dead-letter``) overrides the status and a ``retry-after`` trailer (seconds) delays the retry.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from streamcar.call import override, records_pb
from streamcar.config import CallConfig, GrpcTarget, ServiceTlsConfig, format_duration, read_pem
from streamcar.errors import ConfigError
from streamcar.event import KEEP_KEY, Event, KeepKey, Reply, Result
from streamcar.failures import Kind

Metadata = tuple[tuple[str, str | bytes], ...]

SETUP_CODES = frozenset(
    {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
)
"""Refusals a wrong setup gets for every message (method, credentials): see Reply.refusal."""
NO_STATUSES: Mapping[str, Result] = {}
RETRY_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
HEADER_PREFIX = "kafka-header-"
BIN_SUFFIX = "-bin"  # gRPC sends the values of keys ending in -bin as bytes (base64 on the wire)
_HEADER_AFFIXES = len(HEADER_PREFIX) + len(BIN_SUFFIX)
_LEGAL_KEY = re.compile(r"[0-9a-z_.-]+")
_ASCII_VALUE = re.compile(rb"[\x20-\x7e]*")  # what a non-binary metadata value may hold
_PASSTHROUGH = ("traceparent", "tracestate")

# HTTP/2 servers commonly allow 100 concurrent streams per connection (gRPC's default
# SETTINGS_MAX_CONCURRENT_STREAMS); calls beyond it queue on the connection. Spread max_in_flight calls over
# enough connections that none queues, within a bound.
_STREAMS_PER_CONNECTION = 100
_MAX_CHANNELS = 8
_MAX_SEND = 64 * 1024 * 1024
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # without it channels to the same target share one subchannel, hence one connection
    ("grpc.use_local_subchannel_pool", 1),
    # the default reconnect backoff grows to 2 minutes; a service back from an outage should be seen in seconds
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.max_send_message_length", _MAX_SEND),
)
# grpc's own words when a response is over grpc.max_receive_message_length (call.max_response_bytes)
_TOO_LARGE = re.compile(r"larger than max", re.I)
# our deadline and the elapsed time are read from the same monotonic clock; this absorbs rounding only
_DEADLINE_SLACK = 0.005


def static_metadata(headers: dict[str, str]) -> Metadata:
    """``call.headers`` as metadata; ConfigError naming the header if gRPC would refuse it."""
    metadata: list[tuple[str, str | bytes]] = []
    for name, value in headers.items():
        key = name.lower()
        if not _LEGAL_KEY.fullmatch(key) or key.startswith("grpc-"):
            raise ConfigError(f"call.headers.{name}: not a gRPC metadata key (0-9 a-z _ . - only, no grpc- prefix)")
        if key.endswith(BIN_SUFFIX):
            metadata.append((key, value.encode()))
        elif _ASCII_VALUE.fullmatch(value.encode()):
            metadata.append((key, value))
        else:
            raise ConfigError(f"call.headers.{name}: gRPC metadata values must be printable ASCII")
    return tuple(metadata)


def request_metadata(event: Event, static: Metadata = ()) -> Metadata:
    metadata: list[tuple[str, str | bytes]] = [
        *static,
        ("kafka-topic", event.topic),
        ("kafka-partition", str(event.partition)),
        ("kafka-offset", str(event.offset)),
        ("kafka-timestamp", str(event.timestamp)),
        ("idempotency-key", event.idempotency_key),
    ]
    if event.key is not None:
        metadata.append(("kafka-key-bin", event.key))
    for name in _PASSTHROUGH:
        value = event.header(name)
        if value is not None and _ASCII_VALUE.fullmatch(value):
            metadata.append((name, value.decode("ascii")))
    # metadata keys are lowercase: a header whose name differs only in case arrives under the same key
    for name, header_value in event.headers:
        lowered = name.lower()
        if _LEGAL_KEY.fullmatch(lowered):
            metadata.append((HEADER_PREFIX + lowered + BIN_SUFFIX, header_value or b""))
    return tuple(metadata)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` value (integer or decimal); None if absent or not a non-negative number."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# UNAVAILABLE from the channel itself (nothing listens), as opposed to a service answering UNAVAILABLE
_NOT_REACHED = re.compile(r"failed to connect|connection refused|connect failed|name resolution", re.I)


def reply_from_status(
    code: Any,
    details: str,
    metadata: Iterable[tuple[str, str | bytes]],
    response: bytes,
    *,
    statuses: Mapping[str, Result] = NO_STATUSES,
    method: str = "",
    fanout: bool = False,
) -> Reply:
    """The reply for a finished call: its status code, details, response metadata (initial, then trailing) and
    bytes; ``statuses`` is ``call.status`` (by code name), ``method`` the one called (a refusal names it),
    ``fanout``: the response is a Records message (``call.fanout``)."""
    received = tuple(metadata)
    retry_after = parse_retry_after(_text(received, "retry-after"))
    error = f"gRPC {code.name}" + (f": {details}" if details and code != grpc.StatusCode.OK else "")
    asked = override(
        _text(received, "streamcar-result"),
        error=error,
        header="streamcar-result",
        retry_after=retry_after,
        kind=Kind.GRPC_STATUS,
    )
    if asked is not None:
        return asked
    configured = statuses.get(code.name)
    if configured is Result.SUCCESS or (configured is None and code == grpc.StatusCode.OK):
        if fanout:
            try:
                return Reply.records(records_pb.decode(response))
            except records_pb.RecordsError as exc:
                return Reply.retry(
                    error=f"the response is not a streamcar.v1.Records message: {exc}", kind=Kind.BAD_REPLY
                )
        return _success(received, response)
    if configured is not None:
        mapped = override(configured, error=error, header="call.status", retry_after=retry_after, kind=Kind.GRPC_STATUS)
        assert mapped is not None
        return mapped
    if code == grpc.StatusCode.UNAVAILABLE and _NOT_REACHED.search(details):
        return Reply.retry(after=retry_after, error=error, kind=Kind.CONNECTION)
    if code in RETRY_CODES:
        overload = code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        return Reply.retry(after=retry_after, error=error, kind=Kind.GRPC_STATUS, overload=overload)
    reply = Reply.dead_letter(error, kind=Kind.GRPC_STATUS)
    return replace(reply, refusal=f"gRPC {code.name} on {method or '?'}") if code in SETUP_CODES else reply


def _text(metadata: Metadata, name: str) -> str | None:
    """The last text value of ``name``."""
    found: str | None = None
    for key, value in metadata:
        if key == name and isinstance(value, str):
            found = value
    return found


def _success(metadata: Metadata, response: bytes) -> Reply:
    if not response:
        return Reply.success(None)
    key: bytes | KeepKey | None = KEEP_KEY
    headers: list[tuple[str, bytes | None]] = []
    for name, value in metadata:
        if not isinstance(value, bytes):
            continue
        if name == "kafka-key-bin":
            key = value
        elif name.startswith(HEADER_PREFIX) and name.endswith(BIN_SUFFIX) and len(name) > _HEADER_AFFIXES:
            headers.append((name[len(HEADER_PREFIX) : -len(BIN_SUFFIX)], value))
    return Reply.success(response, key=key, headers=tuple(headers), topic=_text(metadata, "streamcar-topic"))


def channel_count(max_in_flight: int) -> int:
    return max(1, min(_MAX_CHANNELS, math.ceil(max_in_flight / _STREAMS_PER_CONNECTION)))


def read_credentials(tls: ServiceTlsConfig | None) -> Any:
    """The channel credentials of ``call.tls``; ConfigError naming the field when a file is unusable."""
    if tls is None:
        return grpc.ssl_channel_credentials()  # the CAs bundled with grpc (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH overrides)
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(tls.ca_file, "ca_file"),
        private_key=_read_pem(tls.key_file, "key_file"),
        certificate_chain=_read_pem(tls.cert_file, "cert_file"),
    )


def _read_pem(path: Path | None, field: str) -> bytes | None:
    return None if path is None else read_pem(path, f"call.tls.{field}")


class GrpcCaller:
    """Unary calls spread in turn over ``ceil(max_in_flight / 100)`` channels (at most 8), each its own connection."""

    def __init__(self, config: CallConfig, *, max_in_flight: int) -> None:
        target = config.target
        if not isinstance(target, GrpcTarget):
            raise ConfigError(f"call.url: {config.url!r} is not a grpc(s)://host:port/pkg.Service/Method target")
        self._target = target
        self._tls = config.tls
        self._headers = dict(config.headers)
        self._timeout = config.timeout
        self._max_response = config.max_response_bytes
        self._channel_count = channel_count(max_in_flight)
        self._static: Metadata = ()
        self._channels: list[Any] = []
        self._methods: Iterator[Any] | None = None
        self._closed = False
        self._statuses = {code.upper(): Result(result) for code, result in config.status.items()}
        self._fanout = config.fanout

    async def start(self) -> None:
        """Open the channels on the running loop (grpc.aio binds them to it); ConfigError for bad TLS or headers."""
        self._static = static_metadata(self._headers)
        host = f"[{self._target.host}]" if ":" in self._target.host else self._target.host
        address = f"{host}:{self._target.port}"
        options = [*_CHANNEL_OPTIONS, ("grpc.max_receive_message_length", self._max_response)]
        if self._target.tls:
            credentials = read_credentials(self._tls)
            if self._tls is not None and self._tls.server_name is not None:
                options.append(("grpc.ssl_target_name_override", self._tls.server_name))
            self._channels = [
                grpc.aio.secure_channel(address, credentials, options=options) for _ in range(self._channel_count)
            ]
        else:
            self._channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(self._channel_count)]
        # no serializers: request and response bytes pass through untouched
        self._methods = itertools.cycle([channel.unary_unary(self._target.method) for channel in self._channels])
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        channels, self._channels, self._methods = self._channels, [], None
        for channel in channels:
            await channel.close()

    async def call(self, events: Sequence[Event]) -> list[Reply]:
        return list(await asyncio.gather(*(self._call_one(event) for event in events)))

    async def _call_one(self, event: Event) -> Reply:
        methods = self._methods
        if methods is None:
            raise RuntimeError("GrpcCaller.start() was not awaited")
        method = next(methods)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            call = method(event.value or b"", timeout=self._timeout, metadata=request_metadata(event, self._static))
            response: bytes = await call
            received = (*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ()))
            return reply_from_status(
                await call.code(),
                "",
                received,
                response,
                statuses=self._statuses,
                method=self._target.method,
                fanout=self._fanout,
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and loop.time() - started >= self._timeout - _DEADLINE_SLACK:
                return Reply.retry(error=f"no reply within {format_duration(self._timeout)}", kind=Kind.TIMEOUT)
            details = exc.details() or ""
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and _TOO_LARGE.search(details):
                error = f"the response exceeds {self._max_response:,} bytes (call.max_response_bytes): {details}"
                return Reply.retry(error=error, kind=Kind.BAD_REPLY)  # grpc refused it on our side: no outage
            received = (*(exc.initial_metadata() or ()), *(exc.trailing_metadata() or ()))
            return reply_from_status(
                code, details, received, b"", statuses=self._statuses, method=self._target.method, fanout=self._fanout
            )
        except grpc.aio.BaseError as exc:  # refused by the client library before reaching the service
            return Reply.retry(error=f"gRPC client error: {type(exc).__name__}: {exc}", kind=Kind.GRPC_CLIENT)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                # close() cancelled the call, not our caller: the record was not handled, so it must be tried again
                return Reply.retry(error="the gRPC channel was closed during the call", kind=Kind.CONNECTION)
            raise
