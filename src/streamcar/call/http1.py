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
  or if it did, the ``Idempotency-Key`` lets the service tell. So is one whose new connection the server
  closed before we could send (its idle timer runs from the accept, and a busy loop may write late): nothing
  was sent. A new connection closed after the request went out is not retried here (the request itself may
  be what ends the server's connections), as Go's ``net/http`` does.

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
from urllib.parse import quote, unquote, urlsplit

from streamcar.call.http1_connection import (
    MAX_HEAD,
    BadReply,
    ConnectError,
    Disconnected,
    HttpError,
    ProtocolError,
    Response,
    TlsError,
    _Connection,
    _size,
    _ssl_reason,
)

DECODE_STEP = 256 * 1024
"""Bytes of decompressed body produced between two yields to the loop (about a millisecond of zlib)."""
IDLE_TIMEOUT = 15.0
"""Seconds a kept-alive connection may sit unused before we close it rather than reuse it (as aiohttp does)."""

__all__ = [
    "MAX_HEAD",
    "BadReply",
    "ConnectError",
    "Disconnected",
    "Http1Pool",
    "HttpError",
    "ProtocolError",
    "Response",
    "TlsError",
]

_PATH_SAFE = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and '/': kept as written, existing escapes included
_QUERY_SAFE = _PATH_SAFE + "?"


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
                if fresh or connection.used == 1 or exc.answered:  # used 0: closed before the request was sent
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
