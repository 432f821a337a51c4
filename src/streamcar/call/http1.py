"""A lean keep-alive HTTP/1.1 client for the one service a pipeline calls: ``POST`` to one URL, a bounded pool.

Why not aiohttp's client, which the rest of streamcar uses: single delivery makes one request per message, and
aiohttp's client spent about 90 µs of CPU per request on the 2-core development machine (request and response
objects, payload classes, timers, hooks), three quarters of the sidecar's cost per message; this one spends
about 20 µs. It does only what the sidecar needs, and leaves the hard part, reading responses, to llhttp (the
parser of Node.js, through ``httptools``, the binding uvicorn uses):

* one origin, keep-alive connections reused newest first, at most ``limit`` open (the pipeline's max_in_flight);
* the request in one write: ``Host``, ``Content-Length`` and the caller's headers (URL credentials become Basic
  authorization);
* responses framed by Content-Length, chunked, or the end of the connection; 1xx interim responses skipped;
  ``gzip``/``deflate`` content decoded in bounded steps that yield to the loop;
* a bound on every response (``max_response``: head and body, decompressed), checked as the bytes arrive, and
  on its head (:data:`MAX_HEAD`), so neither a body that never ends nor a compression bomb nor a huge head can
  exhaust memory or hold the loop;
* header values kept as the bytes they are (decoded as latin-1, which maps each byte to one character and
  back, as RFC 9110 treats field values: opaque octets);
* one deadline per request covering the wait for a connection, connecting, TLS, sending and the whole response;
  a connection whose request timed out or was cancelled is closed, never reused;
* a request sent on a kept-alive connection that the server closed before answering (its keep-alive timeout
  raced our reuse) is sent once more on a new connection: the request never reached the service's handler,
  or if it did, the ``Idempotency-Key`` lets the service tell.

Failures, all :class:`HttpError` except the timeout::

    TimeoutError       no complete response before the deadline (the builtin)
    HttpError
     ├─ ConnectError   no connection: refused, unreachable, unknown host
     ├─ TlsError       the TLS handshake failed or the server refused our certificate
     ├─ Disconnected   the connection ended before a complete response
     ├─ ProtocolError  the response is not HTTP/1.x we can read
     └─ BadReply       a response beyond the bounds, or a body that does not decode
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools
from multidict import CIMultiDict

MAX_HEAD = 256 * 1024
"""Bytes of status line and headers a response may have: beyond it the server is not one we can talk to."""
DECODE_STEP = 256 * 1024
"""Bytes of decompressed body produced between two yields to the loop (about a millisecond of zlib)."""
IDLE_TIMEOUT = 15.0
"""Seconds a kept-alive connection may sit unused before we close it rather than reuse it (as aiohttp does)."""
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and '/': kept as written, existing escapes included
_QUERY_SAFE = _PATH_SAFE + "?"


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


class Http1Pool:
    """Keep-alive connections to the origin of ``url``, at most ``limit`` open; :meth:`post` is the one verb, each
    request answered within ``timeout`` seconds or failed with ``TimeoutError``."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        host_header: str | None = None,
        max_response: int = 16 * 1024 * 1024,
    ) -> None:
        parts = urlsplit(url)
        tls = parts.scheme.lower() == "https"
        if parts.hostname is None:
            raise ValueError(f"{url!r} has no host")
        self._host = parts.hostname
        self._port = parts.port or (443 if tls else 80)
        self._ssl: ssl.SSLContext | None = (ssl_context or ssl.create_default_context()) if tls else None
        self._server_hostname = (server_hostname or self._host) if tls else None
        self._limit = max(1, limit)
        self._timeout = timeout
        self._max_response = max_response
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port is not None and parts.port != (443 if tls else 80):
            host += f":{parts.port}"
        target = quote(parts.path or "/", safe=_PATH_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_QUERY_SAFE)
        head = f"POST {target} HTTP/1.1\r\nHost: {host_header or host}\r\n"
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            head += f"Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
        self._head = head.encode("utf-8", "surrogateescape").decode("latin-1")  # a virtual host may be UTF-8
        self._idle: list[_Connection] = []  # newest last: reused first, the oldest age out
        self._open = 0  # connections counted against the limit: idle, in use, or connecting
        self._slots: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    async def post(self, headers: list[tuple[str, str]], body: bytes) -> Response:
        """``POST`` ``body`` with ``headers`` (names as given; Host and Content-Length are ours); the response,
        or an :class:`HttpError` / ``TimeoutError`` once the pool's ``timeout`` passed.

        Header values are sent as latin-1, one byte per character, so a value decoded from bytes as latin-1 goes
        out as those very bytes (text meant as UTF-8 is passed as its UTF-8 bytes decoded as latin-1)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        data = self.request_bytes(headers, body)
        fresh = False
        while True:
            connection = await self._acquire(loop, deadline, fresh=fresh)
            try:
                response = await connection.request(data, deadline)
                break
            except Disconnected as exc:
                if fresh or connection.used == 1 or exc.answered:
                    raise
                fresh = True  # see the module docstring: once more, on a new connection
            finally:
                self._release(connection)
        coding = response.headers.get("Content-Encoding", "").strip().lower()
        if response.body and coding in ("gzip", "x-gzip", "deflate"):
            room = self._max_response - response.head_size
            async with asyncio.timeout_at(deadline):
                response.body = await _decode(response.body, coding, room, self._max_response)
            del response.headers["Content-Encoding"]
        return response

    def request_bytes(self, headers: list[tuple[str, str]], body: bytes) -> tuple[bytes, ...]:
        """The pieces of the whole request, written in one go: one for the usual small body, which is not worth
        a second segment; a large body is not copied to join the head."""
        lines = [self._head]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        text = "".join(lines)
        try:
            head = text.encode("latin-1")  # one byte per character: see post's docstring
        except UnicodeEncodeError:
            head = text.encode("utf-8", "backslashreplace")
        return (head + body,) if len(body) < 65536 else (head, body)

    async def close(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
        for slot in self._slots:
            if not slot.done():
                slot.set_exception(ConnectError("the client is closing"))
        self._slots.clear()

    # -- the pool -----------------------------------------------------------------------------------------
    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float, *, fresh: bool) -> _Connection:
        while True:
            if self._closed:
                raise ConnectError("the client is closing")
            while self._idle and not fresh:
                connection = self._idle.pop()
                if not connection.closed and loop.time() - connection.idle_since < IDLE_TIMEOUT:
                    return connection
                self._discard(connection)
            if fresh and self._open >= self._limit and self._idle:
                self._discard(self._idle.pop(0))  # a new connection is wanted: the oldest idle one makes room
            if self._open < self._limit:
                break
            slot = loop.create_future()
            self._slots.append(slot)
            try:
                await asyncio.wait_for(slot, max(0.0, deadline - loop.time()))
            except BaseException:
                if slot.done() and not slot.cancelled():
                    self._wake_one()  # woken as the wait ended: the free slot goes to the next in line
                raise
        self._open += 1
        try:
            return await asyncio.wait_for(self._connect(loop), max(0.0, deadline - loop.time()))
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            _, protocol = await loop.create_connection(
                lambda: _Connection(loop, self._max_response),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._server_hostname,
            )
        except ssl.SSLError as exc:
            raise TlsError(f"TLS handshake with {self._host}:{self._port} failed: {_ssl_reason(exc)}") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self._host}:{self._port}: {exc.strerror or exc}") from exc
        return protocol

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
            self._wake_one()
        else:
            self._discard(connection)  # a request still outstanding (timed out, cancelled) makes it unusable

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return


async def _decode(body: bytes, coding: str, room: int, limit: int) -> bytes:
    """``body`` decompressed, at most ``room`` bytes of it, :data:`DECODE_STEP` bytes between yields to the loop;
    :class:`BadReply` when it does not decode or would not fit (a compression bomb stops there)."""
    if coding == "deflate":
        # zlib-wrapped, as RFC 9110 says; raw deflate, as some servers send it, when the zlib header is missing
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] * 256 + body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        wbits = 16 + zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    pieces: list[bytes] = []
    size = 0
    pending = body
    try:
        while not inflater.eof:
            piece = inflater.decompress(pending, DECODE_STEP)
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                break  # the input is used up and nothing more comes out: cut short
            size += len(piece)
            if size > room:
                raise BadReply(f"the response exceeds {_size(limit)} decompressed (call.max_response_bytes)")
            pieces.append(piece)
            await asyncio.sleep(0)
    except zlib.error as exc:
        raise BadReply(f"the {coding} response body does not decode: {exc}") from None
    if not inflater.eof:
        raise BadReply(f"the {coding} response body is cut short")
    return b"".join(pieces)


def _size(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size % (1024 * 1024) == 0 else f"{size:,} bytes"


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)  # without the errno that SSLError's str() leads with


def _cause(exc: Exception | None) -> str:
    return f" ({exc})" if exc is not None else ""
