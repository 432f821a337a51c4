"""A raw HTTP/1.1 service for the fault suite that answers each request with a script: a normal reply, or what
a broken or hostile service does (a body that never ends, a compression bomb, a huge head, odd header bytes, a
dropped connection, garbage). It runs on its own thread and loop, like :class:`service.TestService`, and logs
every request it read as a :class:`service.Seen`, so the invariant check can read its calls.

aiohttp cannot send most of this (it validates what it writes), hence bytes on a socket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import unquote_to_bytes

from service import Seen
from threaded import ThreadedServer

Script = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request; returns whether the connection stays open for the next one."""
Chooser = Callable[[Seen], Script]

MAX_HEAD = 4 * 1024 * 1024


def response(status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    lines = [b"HTTP/1.1 %d X\r\n" % status, b"Content-Length: %d\r\n" % len(body)]
    lines += [name + b": " + value + b"\r\n" for name, value in headers or []]
    return b"".join(lines) + b"\r\n" + body


async def reply_with_id(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """The normal answer: the reply body names its input (see invariants.reply_with_id)."""
    writer.write(response(200, seen.headers["Idempotency-Key"].encode()))
    return True


def content_type(raw: bytes) -> Script:
    """A normal reply whose Content-Type holds exactly ``raw``."""

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(200, seen.headers["Idempotency-Key"].encode(), [(b"Content-Type", raw)]))
        return True

    return script


def batch(result: Callable[[dict[str, Any]], dict[str, Any]]) -> Script:
    """A batch envelope reply: ``result`` makes each message's result (see streamcar.call.envelope); JSON's own
    escapes let a result hold what no proper encoder writes, e.g. a lone surrogate in a header name."""

    async def script(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        messages = json.loads(seen.body)["messages"]
        body = json.dumps({"results": [result(message) for message in messages]}).encode()
        writer.write(response(200, body, [(b"Content-Type", b"application/json")]))
        return True

    return script


def echo_id(message: dict[str, Any]) -> dict[str, Any]:
    """A batch result naming its input, as reply_with_id does."""
    return {"status": "success", "value": f"{message['topic']}-{message['partition']}-{message['offset']}"}


async def endless(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """A chunked 200 whose body never ends, written as fast as the client reads."""
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (256 * 1024) + b"e" * (256 * 1024) + b"\r\n"
    try:
        while True:
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        return False


def gzip_bomb(expanded: int = 2 * 1024**3) -> bytes:
    """A gzip body of about ``expanded / 1000`` bytes that inflates to ``expanded`` zero bytes. Built in
    milliseconds: a full-flush deflate block of 1 MiB of zeros repeated (its trailer's CRC is not checked
    before the end, and nothing should get that far)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    deflate.compress(bytes(1 << 20))
    again = deflate.flush(zlib.Z_FULL_FLUSH)
    return first + again * (expanded // (1 << 20) - 1) + deflate.flush()


_BOMB: list[bytes] = []


async def bomb(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """A 200 whose gzip body (2 MB) inflates to 2 GiB."""
    if not _BOMB:
        _BOMB.append(gzip_bomb())
    writer.write(response(200, _BOMB[0], [(b"Content-Encoding", b"gzip")]))
    return True


async def huge_head(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """A 200 with a 300 KB header, head and body in one write."""
    writer.write(response(200, b"ok", [(b"X-Huge", b"h" * (300 * 1024))]))
    return True


async def drop(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """The connection closed without a response."""
    return False


async def garbage(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"\x00\xffnot http at all\r\n\r\n")
    return False


class HostileService(ThreadedServer):
    __test__ = False

    def __init__(self, choose: Chooser) -> None:
        super().__init__("hostile-service")
        self.choose = choose
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/handle"

    async def _up(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                seen = await self._read(reader)
                if seen is None:
                    return
                with self._lock:
                    self.seen.extend(_calls(seen))
                if not await self.choose(seen)(seen, writer):
                    return
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _read(self, reader: asyncio.StreamReader) -> Seen | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[_canonical(name.strip())] = value.strip()
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        key = headers.get("Kafka-Key")
        return Seen(
            topic=headers.get("Kafka-Topic", ""),
            partition=int(headers.get("Kafka-Partition", "-1")),
            offset=int(headers.get("Kafka-Offset", "-1")),
            key=unquote_to_bytes(key) if key is not None else None,
            body=body,
            headers=headers,
            at=time.monotonic(),
        )

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


def _canonical(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _calls(seen: Seen) -> list[Seen]:
    """The messages a request carried: itself, or each message of a batch envelope."""
    if seen.topic or not seen.headers.get("Content-Type", "").startswith("application/json"):
        return [seen]
    calls = []
    for message in json.loads(seen.body)["messages"]:
        key = message.get("key")
        if key is not None:
            key = base64.b64decode(key) if message.get("encoding") == "base64" else key.encode()
        calls.append(
            replace(seen, topic=message["topic"], partition=message["partition"], offset=message["offset"], key=key)
        )
    return calls
