"""A real HTTP service for the tests, on its own thread and loop so it answers whatever the test code is doing.

It records every request it receives (before answering) and answers through a handler the test can swap.
It can go down (the listening socket closes, connections are refused) and come back on the same port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from aiohttp import web

from threaded import ThreadedServer

Handler = Callable[["Seen"], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    body: bytes
    headers: dict[str, str]
    at: float
    peer: int = 0  # the client's port: one per connection

    @property
    def id(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


async def echo_upper(seen: Seen) -> web.StreamResponse:
    return web.Response(body=seen.body.upper(), content_type="text/plain")


class TestService(ThreadedServer):
    __test__ = False  # not a pytest test class

    def __init__(self, handler: Handler = echo_upper, *, keepalive_timeout: float = 75.0) -> None:
        super().__init__("test-service")
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout  # seconds an idle kept-alive connection stays open
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/handle"

    async def _up(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/handle", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, keepalive_timeout=self.keepalive_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])

    async def _down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Kafka-Key")
        seen = Seen(
            topic=request.headers["Kafka-Topic"],
            partition=int(request.headers["Kafka-Partition"]),
            offset=int(request.headers["Kafka-Offset"]),
            key=unquote_to_bytes(key) if key is not None else None,
            body=await request.read(),
            headers=dict(request.headers),
            at=time.monotonic(),
            peer=_peer_port(request),
        )
        with self._lock:
            self.seen.append(seen)
        return await self.handler(seen)

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


def _peer_port(request: web.Request) -> int:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return int(peer[1]) if peer else 0
