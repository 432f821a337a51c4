"""A server on its own thread and event loop, so it answers whatever the test code is doing meanwhile.

Subclasses bind in ``_up`` (keeping ``self.port``, so ``up()`` after ``down()`` comes back on the same port)
and release in ``_down``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Protocol, Self, TypeVar


class ThreadedServer:
    def __init__(self, name: str) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def _run(self, coro: Awaitable[None]) -> None:
        async def wrap() -> None:
            await coro

        asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(30)

    def start(self) -> Self:
        self._thread.start()
        self._run(self._up())
        return self

    def stop(self) -> None:
        self._run(self._down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def down(self) -> None:
        """Stop listening: calls now fail (connection refused, UNAVAILABLE)."""
        self._run(self._down())

    def up(self) -> None:
        self._run(self._up())

    async def _up(self) -> None:
        raise NotImplementedError

    async def _down(self) -> None:
        raise NotImplementedError


S = TypeVar("S", bound=ThreadedServer)


class ServiceFactory(Protocol):
    """The ``service_factory`` fixture: starts a service for the test and stops it when the test ends."""

    def __call__(self, service: S) -> S: ...
