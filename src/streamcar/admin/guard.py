"""What the admin server accepts, before aiohttp sees a request: few connections, prompt heads, known hosts.

* **A cap on connections** (:data:`MAX_CONNECTIONS`). When it is reached, the oldest connection that has not
  sent a complete request head makes room; if every connection is busy with a request, the new one is closed.
  So a flood of slow clients can neither exhaust the process's file descriptors (the pipeline's sockets to
  Kafka and to the service need them) nor keep ``/healthz`` from answering.
* **A head timeout** (:data:`HEAD_TIMEOUT`): a request's head must arrive within it, counted from its first
  byte (or from the connection for the first request). Idle kept-alive connections are aiohttp's to close
  (``keepalive_timeout``, :data:`IDLE_TIMEOUT`).
* **Known hosts** (:func:`host_allowed`): a ``Host`` the server does not go by gets 403. A page on another site
  can reach a loopback server by rebinding its own DNS name to 127.0.0.1, but the browser still sends that name
  as ``Host``: refusing unknown names is what stops it. IP addresses are always accepted (a rebinding attack
  cannot send one, and Kubernetes probes and Prometheus do).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import cast

MAX_CONNECTIONS = 64
HEAD_TIMEOUT = 5.0
IDLE_TIMEOUT = 5.0
_END_OF_HEAD = b"\r\n\r\n"


class Gate:
    """The connections of one server: at most ``limit``, with those still sending a head evictable, oldest first."""

    def __init__(self, limit: int = MAX_CONNECTIONS) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self.evicted = 0
        self._heading: OrderedDict[Guarded, None] = OrderedDict()

    def admit(self) -> bool:
        if self.open >= self.limit and self._heading:
            oldest, _ = self._heading.popitem(last=False)
            self.evicted += 1
            oldest.close()  # its connection_lost frees the slot: count it free now, it is gone for us
            self.open -= 1
            oldest.counted = False
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def heading(self, connection: Guarded, sending: bool) -> None:
        if sending:
            self._heading[connection] = None
        else:
            self._heading.pop(connection, None)

    def release(self, connection: Guarded) -> None:
        self._heading.pop(connection, None)
        if connection.counted:
            connection.counted = False
            self.open -= 1


class Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the :class:`Gate` and the head timeout."""

    def __init__(self, inner: asyncio.Protocol, gate: Gate, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._gate = gate
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._started = False  # the inner protocol has the connection
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        if not self._gate.admit():
            self._transport.abort()
            return
        self.counted = self._started = True
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if not self.counted:
            return
        seen = self._tail + data
        end = seen.rfind(_END_OF_HEAD)
        if end < 0:
            if self._timer is None:
                self._arm()  # a new head began
        elif end + len(_END_OF_HEAD) < len(seen):
            self._arm()  # a head ended and the next began in the same read
        else:
            self._disarm()
        self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self.counted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._gate.release(self)
        if self._started:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._started:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._started:
            self._inner.resume_writing()

    def close(self) -> None:
        self._disarm()
        if self._transport is not None:
            self._transport.abort()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(HEAD_TIMEOUT, self.close)
        self._gate.heading(self, True)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._gate.heading(self, False)


def guarded(factory: Callable[[], asyncio.Protocol], gate: Gate) -> Callable[[], asyncio.Protocol]:
    """A protocol factory wrapping ``factory``'s protocols (aiohttp's ``web.Server``) in :class:`Guarded`."""
    loop = asyncio.get_running_loop()
    return lambda: Guarded(factory(), gate, loop)


def default_hosts(listen_host: str) -> set[str]:
    """The names the admin server goes by when ``admin.allowed_hosts`` is not set (IP addresses always pass)."""
    names = {"localhost", listen_host, socket.gethostname()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    names |= {os.environ[name] for name in ("POD_NAME", "HOSTNAME") if os.environ.get(name)}
    return {name.lower() for name in names if name}


def host_allowed(host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a request's ``Host`` (``name``, ``name:port``, ``[v6]:port``) is one the server answers: an IP
    address, a name in ``allowed``, or a ``name:port`` in ``allowed``. A request without ``Host`` (HTTP/1.0) is
    not from a browser: it passes."""
    if host is None:
        return True
    host = host.strip().lower()
    name = host
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    names = {entry.lower() for entry in allowed}
    return name.rstrip(".") in names or host in names
