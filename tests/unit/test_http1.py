"""The sidecar's HTTP/1.1 client against scripted servers on loopback: framing, keep-alive, limits, failures."""

from __future__ import annotations

import asyncio
import base64
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.call.http1 import (
    BadReply,
    ConnectError,
    Disconnected,
    Http1Pool,
    ProtocolError,
    Response,
)
from streamcar.call.http1_connection import _Connection
from streamcar.devkafka import free_ports


@dataclass
class Request:
    head: str
    body: bytes

    @property
    def line(self) -> str:
        return self.head.split("\r\n", 1)[0]

    def headers(self) -> list[tuple[str, str]]:
        pairs = [line.split(": ", 1) for line in self.head.split("\r\n")[1:] if line]
        return [(name, value) for name, value in pairs]


Answer = Callable[[Request, asyncio.StreamWriter, int], Awaitable[bool]]
"""Writes the response to the n-th request of a connection; returns whether to keep the connection open."""


@dataclass
class Server:
    port: int
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    closed_by_client: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/path?q=1"


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("utf-8", "surrogateescape")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = next((int(v) for k, v in Request(head, b"").headers() if k.lower() == "content-length"), 0)
    return Request(head, await reader.readexactly(length))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Server:
        state = Server(0)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            state.open_now += 1
            state.most_open = max(state.most_open, state.open_now)
            n = 0
            try:
                while (request := await read_request(reader)) is not None:
                    state.requests.append(request)
                    n += 1
                    if not await answer(request, writer, n):
                        return
                    await writer.drain()
                state.closed_by_client += 1
            except ConnectionError:
                state.closed_by_client += 1
            finally:
                state.open_now -= 1
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def response(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def echo(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
    writer.write(response(request.body.upper(), extra="X-Seen: yes\r\n"))
    return True


def pool(server: Server, *, limit: int = 4, timeout: float = 5.0, **extra: str) -> Http1Pool:
    return Http1Pool(extra.pop("url", server.url), limit=limit, timeout=timeout, **extra)  # type: ignore[arg-type]


async def test_requests_reuse_one_kept_alive_connection(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    server = await serve(echo)
    client = pool(server)
    try:
        for i in range(20):
            got = await client.post([("Kafka-Offset", str(i)), ("X-Case", "Kept")], b"hello %d" % i)
            assert (got.status, got.body, got.headers["x-seen"]) == (200, b"HELLO %d" % i, "yes")
    finally:
        await client.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.line == "POST /path?q=1 HTTP/1.1"
    assert first.headers()[:4] == [
        ("Host", f"127.0.0.1:{server.port}"),
        ("Kafka-Offset", "0"),
        ("X-Case", "Kept"),  # names go out as written: services that read exact Kafka header names rely on it
        ("Content-Length", "7"),
    ]
    assert first.body == b"hello 0"


async def test_at_most_limit_connections_and_every_request_answered(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def slow(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        await asyncio.sleep(0.01)
        return await echo(request, writer, n)

    server = await serve(slow)
    client = pool(server, limit=3)
    try:
        replies = await asyncio.gather(*(client.post([], b"m%d" % i) for i in range(40)))
        assert [r.body for r in replies] == [b"M%d" % i for i in range(40)]
        assert client.open_connections == 3
    finally:
        await client.close()
    assert server.most_open == 3
    assert server.connections == 3


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx", b"x"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", b"zipped"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s", b"deflated"),
    ],
)
async def test_response_framings(serve: Callable[[Answer], Awaitable[Server]], raw: bytes, body: bytes) -> None:
    if b"gzip" in raw:
        raw = raw % (len(gzip.compress(body)), gzip.compress(body))
    elif b"deflate" in raw:
        raw = raw % (len(zlib.compress(body)), zlib.compress(body))

    async def scripted(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(raw)
        return True

    server = await serve(scripted)
    client = pool(server)
    try:
        first, second = await client.post([], b"a"), await client.post([], b"b")
    finally:
        await client.close()
    assert first.body == second.body == body
    assert "Content-Encoding" not in first.headers
    assert server.connections == 1  # the framing let the connection be reused


async def test_a_server_that_answers_twice_loses_its_connection(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def twice(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(response(request.body) + response(b"stale"))
        return True

    server = await serve(twice)
    client = pool(server, limit=1)
    try:
        assert [(await client.post([], b)).body for b in (b"a", b"b", b"c")] == [b"a", b"b", b"c"]
    finally:
        await client.close()
    assert server.connections == 3


async def test_a_body_ended_by_the_connection_and_connection_close(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def unframed(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            return False
        return True

    async def closing(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(response(b"bye", extra="Connection: close\r\n"))
        await writer.drain()
        await asyncio.sleep(0.05)  # the client closes first: it must not reuse a connection the server ends
        return True

    for answer, body in ((unframed, b"until the end"), (closing, b"bye")):
        server = await serve(answer)
        client = pool(server)
        try:
            assert (await client.post([], b"1")).body == body
            assert (await client.post([], b"2")).body == body
        finally:
            await client.close()
        assert server.connections == 2


async def test_a_kept_alive_connection_the_server_closed_is_replaced_without_a_failure(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def one_per_connection(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(response(b"ok"))  # keeps the connection alive on paper, then closes it: a keep-alive timeout
        return False

    server = await serve(one_per_connection)
    client = pool(server, limit=1)
    try:
        for _ in range(5):
            assert (await client.post([], b"x")).body == b"ok"
    finally:
        await client.close()
    assert len(server.requests) == 5
    assert server.connections == 5


async def test_a_stale_connection_that_swallows_the_request_is_retried_once_on_a_new_one(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def forget_second(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 2:
            return False  # reads the request, closes without a word: the keep-alive race, seen from the client
        writer.write(response(b"ok"))
        return True

    server = await serve(forget_second)
    client = pool(server, limit=1)
    try:
        assert (await client.post([], b"1")).body == b"ok"
        assert (await client.post([], b"2")).body == b"ok"
    finally:
        await client.close()
    assert [r.body for r in server.requests] == [b"1", b"2", b"2"]


@pytest.mark.parametrize("closed_before_the_send", [1, 2])
async def test_a_new_connection_the_server_closed_before_the_send_is_replaced_once(
    serve: Callable[[Answer], Awaitable[Server]], closed_before_the_send: int
) -> None:
    """A server's idle timer runs from the accept, and a busy loop may get to the write late: the connection is
    gone before the request left us. The request used to be written into the closed transport and to wait out
    its deadline; now it goes out on one new connection, and a second such close fails it at once."""
    closer = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    server = await serve(echo)
    ports = [closer.sockets[0].getsockname()[1]] * closed_before_the_send + [server.port]

    class LateWriter(Http1Pool):
        async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
            self._port = ports.pop(0)
            connection = await super()._connect(loop)
            if self._port != server.port and not connection.closed:  # busy elsewhere until the close arrived
                lost = asyncio.Event()
                connection_lost = connection.connection_lost

                def on_lost(exc: Exception | None) -> None:
                    connection_lost(exc)
                    lost.set()

                connection.connection_lost = on_lost  # type: ignore[method-assign]
                await asyncio.wait_for(lost.wait(), 5)
            return connection

    client = LateWriter(server.url, limit=2, timeout=3.0)
    try:
        async with asyncio.timeout(1):
            if closed_before_the_send == 1:
                assert (await client.post([], b"x")).body == b"X"
            else:
                with pytest.raises(Disconnected, match="before the request was sent"):
                    await client.post([], b"x")
    finally:
        await client.close()
        closer.close()
        await closer.wait_closed()
    assert [r.body for r in server.requests] == ([b"x"] if closed_before_the_send == 1 else [])


async def test_a_new_connection_closed_without_an_answer_fails_without_a_retry(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def hang_up(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        return False

    server = await serve(hang_up)
    client = pool(server)
    try:
        with pytest.raises(Disconnected, match="without a response") as failed:
            await client.post([], b"x")
    finally:
        await client.close()
    assert not failed.value.answered
    assert len(server.requests) == 1


async def test_a_response_cut_short_fails_and_is_not_sent_again(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    async def cut(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        if n == 1:
            writer.write(response(b"ok"))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nonly")
        return False

    server = await serve(cut)
    client = pool(server)
    try:
        await client.post([], b"1")
        with pytest.raises(Disconnected, match="mid-response") as failed:
            await client.post([], b"2")
    finally:
        await client.close()
    assert failed.value.answered
    assert len(server.requests) == 2


async def test_no_answer_within_the_timeout_closes_the_connection(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    async def silent_first(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        if request.body == b"slow":
            await asyncio.sleep(1)  # the client gave up long before: its connection is gone
        writer.write(response(b"late" if request.body == b"slow" else b"fine"))
        return True

    server = await serve(silent_first)
    client = pool(server, timeout=0.2)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.post([], b"slow")
        assert 0.15 < loop.time() - started < 0.6
        assert (await client.post([], b"fast")).body == b"fine"  # a new connection, not the late answer
    finally:
        await client.close()
    assert server.connections == 2


async def test_a_cancelled_request_does_not_leave_its_connection_for_the_next(
    serve: Callable[[Answer], Awaitable[Server]],
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def wait_for_release(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        if request.body == b"held":
            arrived.set()
            await release.wait()
        writer.write(response(request.body))
        return True

    server = await serve(wait_for_release)
    client = pool(server, limit=1)
    try:
        held = asyncio.ensure_future(client.post([], b"held"))
        await asyncio.wait_for(arrived.wait(), 5)
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        release.set()
        assert (await client.post([], b"next")).body == b"next"
    finally:
        await client.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    ("raw", "kind", "error"),
    [
        (b"HTTP/1.1 2OO OK\r\n\r\n", ProtocolError, "unreadable HTTP response"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", ProtocolError, "unreadable HTTP response"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (300 * 1024), BadReply, "exceed 256 KiB"),
        (
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (300 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok",
            BadReply,
            "exceed 256",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nnot",
            BadReply,
            "does not decode",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            ProtocolError,
            "switched",
        ),
    ],
)
async def test_unreadable_responses_are_protocol_errors(
    serve: Callable[[Answer], Awaitable[Server]], raw: bytes, kind: type[Exception], error: str
) -> None:
    async def garbage(request: Request, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(raw)
        await writer.drain()
        await asyncio.sleep(0.5)  # the client must not wait for the close to notice
        return False

    server = await serve(garbage)
    client = pool(server, timeout=5)
    try:
        with pytest.raises(kind, match=error):
            await asyncio.wait_for(client.post([], b"x"), 0.4)
    finally:
        await client.close()


async def test_nobody_listening_is_a_connect_error() -> None:
    (port,) = free_ports(1)
    client = Http1Pool(f"http://127.0.0.1:{port}/", limit=1, timeout=2)
    try:
        with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
            await client.post([], b"x")
        assert client.open_connections == 0
    finally:
        await client.close()


async def test_credentials_in_the_url_and_a_host_override(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    server = await serve(echo)
    url = f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/x%20y/ü"
    client = Http1Pool(url, limit=1, timeout=2, host_header="orders.internal")
    try:
        await client.post([], b"")
    finally:
        await client.close()
    request = server.requests[0]
    assert request.line == "POST /x%20y/%C3%BC HTTP/1.1"
    headers = dict(request.headers())
    assert headers["Host"] == "orders.internal"
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"us@er:p:ss"
    assert headers["Content-Length"] == "0"


async def test_large_bodies_both_ways(serve: Callable[[Answer], Awaitable[Server]]) -> None:
    server = await serve(echo)
    client = pool(server)
    body = bytes(range(256)) * 8192  # 2 MiB: sent in two writes, read in many chunks
    try:
        got = await client.post([], body)
    finally:
        await client.close()
    assert got.body == body.upper()


# -- the response reader alone, fed byte streams split anywhere --------------------------------------------
class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


def framed(body: bytes, framing: str, chunk: int) -> bytes:
    if framing == "length":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-A: 1\r\n\r\n" % len(body) + body
    if framing == "chunked":
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n" + encoded + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n" + body  # ends with the connection


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=2000),
    framing=st.sampled_from(["length", "chunked", "eof"]),
    chunk=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_any_split_of_the_stream_gives_the_same_response(
    body: bytes, framing: str, chunk: int, cuts: list[int]
) -> None:
    stream = framed(body, framing, chunk)

    async def feed() -> Response:
        loop = asyncio.get_running_loop()
        connection = _Connection(loop, 1 << 20)
        connection.connection_made(FakeTransport())  # type: ignore[arg-type]
        waiter = connection.request((b"POST / HTTP/1.1\r\n\r\n",), loop.time() + 5)
        points = sorted({c for c in cuts if 0 < c < len(stream)})
        for start, end in zip([0, *points], [*points, len(stream)], strict=True):
            connection.data_received(stream[start:end])
        if framing == "eof":
            assert not waiter.done()
            connection.connection_lost(None)
        return await waiter

    got = asyncio.run(feed())
    assert (got.status, got.body, got.headers["X-A"]) == (200, body, "1")
