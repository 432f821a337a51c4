"""One HTTP/1.1 connection of :class:`streamcar.call.http1.Http1Pool`, and the client's errors and responses.

A connection carries one request at a time (no pipelining). llhttp (through ``httptools``) parses the response;
this class bounds it as it arrives: the head (:data:`MAX_HEAD`, checked after every read, so a single read
cannot smuggle a huge head through) and the whole response (the pool's ``max_response``), and keeps header
values as the bytes the server sent (latin-1 in, latin-1 out).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import cast

import httptools
from multidict import CIMultiDict

MAX_HEAD = 256 * 1024
"""Bytes of status line and headers a response may have: beyond it the server is not one we can talk to."""


class HttpError(Exception):
    """A request that got no usable response."""


class ConnectError(HttpError):
    pass


class TlsError(HttpError):
    pass


class Disconnected(HttpError):
    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered
        """Whether any byte of the response had arrived (if not, the request may never have been read)."""


class ProtocolError(HttpError):
    pass


class BadReply(HttpError):
    """A complete-looking response that cannot be used: too large, or its content coding does not decode."""


@dataclass(slots=True)
class Response:
    status: int
    headers: CIMultiDict[str]
    """Names and values decoded as latin-1: ``value.encode("latin-1")`` gives the bytes the server sent."""
    body: bytes
    head_size: int = 0


class _Connection(asyncio.Protocol):
    """One connection; at most one request outstanding (no pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_response: int) -> None:
        self._loop = loop
        self._max_response = max_response
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0  # requests sent on it
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._head_bytes = 0  # raw bytes received while the head was incomplete
        self._head_size = 0  # bytes of the parsed header fields
        self._size = 0  # head fields and body so far
        self._over = False  # the response passed max_response
        self._headers_done = False
        self._framed = False  # Content-Length or chunked; otherwise the body ends with the connection
        self._keep_alive = True

    # -- asyncio.Protocol ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a server that talks out of turn is not one to reuse
            self.close()
            return
        if not self._headers_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"unreadable HTTP response: {exc}"))
        else:
            # After the feed, not only between reads: one read can hold a whole oversized head.
            if self._head_size > MAX_HEAD or (not self._headers_done and self._head_bytes > MAX_HEAD):
                self._fail(BadReply(f"the response headers exceed {MAX_HEAD // 1024} KiB"))
        if self._over:
            self._fail(BadReply(f"the response exceeds {_size(self._max_response)} (call.max_response_bytes)"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:
            self._complete()  # the body was delimited by the end of the connection
            return
        answered = self._head_bytes > 0
        if isinstance(exc, ssl.SSLError):
            self._fail(TlsError(f"TLS error mid-request: {_ssl_reason(exc)}"))
        else:
            what = "mid-response" if answered else "without a response"
            self._fail(Disconnected(f"the server closed the connection {what}{_cause(exc)}", answered=answered))

    # -- httptools callbacks ------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._waiter is None:  # a second response to one request: whatever follows cannot be trusted
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size <= MAX_HEAD:  # llhttp drops the value's leading whitespace; RFC 9110 its trailing too
            self._headers.append((name.decode("latin-1"), value.rstrip(b" \t").decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._framed = any(
            name.lower() in ("content-length", "transfer-encoding") for name, _ in self._headers
        ) or self._parser.get_status_code() in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size + self._head_size > self._max_response:
            self._over = True  # failed once the feed returns; nothing more is kept
        elif not self._over:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # interim (103 Early Hints, a stray 100): the real one follows
            self._reset_message()
            return
        self._keep_alive = self._parser.should_keep_alive()
        self._complete()

    # -- requests -----------------------------------------------------------------------------------------
    def request(self, data: tuple[bytes, ...], deadline: float) -> asyncio.Future[Response]:
        """Send ``data`` (the pieces of a whole request); the future holds the response."""
        assert self.transport is not None
        if self.closed:  # the server closed it after we connected, before this send: nothing of it left us
            raise Disconnected("the server closed the connection before the request was sent", answered=False)
        waiter = self._waiter = self._loop.create_future()
        self._timer = self._loop.call_at(deadline, self._time_out)
        self.used += 1
        for piece in data:
            self.transport.write(piece)
        return waiter

    @property
    def reusable(self) -> bool:
        """Open, answered completely, and the server keeps it alive."""
        return not self.closed and self._waiter is None and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.abort()  # nothing of ours is worth flushing: the request in it failed or was answered

    def _complete(self) -> None:
        waiter = self._waiter
        if self._over or self._head_size > MAX_HEAD:
            return  # over a bound: data_received fails it once the feed returns
        status = self._parser.get_status_code()
        response = Response(status, CIMultiDict(self._headers), b"".join(self._body), self._head_size)
        self._reset()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _reset(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._waiter = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._headers, self._body, self._headers_done = [], [], False
        self._head_bytes = self._head_size = self._size = 0

    def _fail(self, exc: BaseException) -> None:
        waiter = self._waiter
        self._reset()
        self._keep_alive = False
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _time_out(self) -> None:
        self._timer = None
        self._fail(TimeoutError())


def _size(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size % (1024 * 1024) == 0 else f"{size:,} bytes"


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)  # without the errno that SSLError's str() leads with


def _cause(exc: Exception | None) -> str:
    return f" ({exc})" if exc is not None else ""
