"""The admin server's connections, before aiohttp sees a request: few, prompt, read, and never in a probe's way.

A flood of clients must neither exhaust the process's file descriptors (the pipeline's sockets to Kafka and to
the service need them) nor keep ``/healthz`` and ``/readyz`` from answering: a kubelet restarts a Pod whose
liveness probe fails a few times in a row.

* **A cap** (:data:`MAX_CONNECTIONS`) on the connections aiohttp serves. When it is reached, a new connection
  takes the slot of one that is failing its side of HTTP, oldest first: one still sending its request head, else
  one that does not read its answers (its writes are paused, see below).
* **Waiting, not refusing.** When no connection can give up its slot, a new one waits, unserved, while its
  request head arrives (at most :data:`MAX_WAITING` such, the oldest evicted first). It is served when a slot
  frees; a probe (``/healthz``, ``/readyz``) whose head is complete is served at once in a small reserve of its
  own (:data:`PROBE_RESERVE`). So a full gate never drops a probe's complete request.
* **A head timeout** (:data:`HEAD_TIMEOUT`): a request's head must arrive within it, counted from its first
  byte (or from the connection for the first request).
* **A bound on what a client leaves unread.** A connection whose answers pile up (the transport's buffer above
  its high-water mark, on top of a kernel send buffer of :data:`SEND_BUFFER`) stops being read, so it cannot
  queue more requests, is the first to be evicted, and is closed once its writes have been stuck for
  :data:`WRITE_TIMEOUT`. Idle kept-alive connections are aiohttp's to close (``keepalive_timeout``,
  :data:`IDLE_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

MAX_CONNECTIONS = 64
PROBE_RESERVE = 8  # probes served beyond the cap at once: a kubelet sends one liveness and one readiness probe
MAX_WAITING = 64
HEAD_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
IDLE_TIMEOUT = 5.0
SEND_BUFFER = 128 * 1024  # the kernel's send buffer per connection (loopback's would grow to 4 MiB)
MAX_HEAD = 16 * 1024  # what a waiting connection may send before it is served: aiohttp's own limit is 8 KiB a line
PROBE_PATHS = (b"/healthz", b"/readyz")
_END_OF_HEAD = b"\r\n\r\n"


class Gate:
    """The connections of one server: at most ``limit`` served (plus ``reserve`` probes), the rest waiting."""

    def __init__(self, limit: int = MAX_CONNECTIONS, reserve: int = PROBE_RESERVE, waiting: int = MAX_WAITING) -> None:
        self.limit = limit
        self.reserve = reserve
        self.waiting_limit = waiting
        self.open = 0  # served, within the cap
        self.probes = 0  # served in the probe reserve
        self.refused = 0
        self.evicted = 0
        self._heading: OrderedDict[Guarded, None] = OrderedDict()  # served, a head pending
        self._stalled: OrderedDict[Guarded, None] = OrderedDict()  # served, its answers unread
        self._waiting: OrderedDict[Guarded, None] = OrderedDict()  # not served yet

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, connection: Guarded) -> bool:
        """A slot for ``connection``, taken from a connection failing its side of HTTP if need be."""
        if self.open >= self.limit:
            self._evict(self._heading or self._stalled)
        if self.open >= self.limit:
            return False
        self.open += 1
        connection.slot = "served"
        return True

    def admit_probe(self, connection: Guarded) -> bool:
        """A slot for a waiting probe whose head is complete: a regular one, else one of the reserve."""
        if self.admit(connection):
            return True
        if self.probes >= self.reserve:
            return False
        self.probes += 1
        connection.slot = "probe"
        return True

    def wait(self, connection: Guarded) -> None:
        if len(self._waiting) >= self.waiting_limit:
            self._evict(self._waiting)
        self._waiting[connection] = None
        connection.slot = "waiting"

    def served(self, connection: Guarded) -> None:
        self._waiting.pop(connection, None)

    def heading(self, connection: Guarded, sending: bool) -> None:
        self._mark(self._heading, connection, sending)

    def stalled(self, connection: Guarded, stuck: bool) -> None:
        self._mark(self._stalled, connection, stuck)

    def release(self, connection: Guarded) -> None:
        """``connection`` is gone: its slot goes to the oldest waiting connection."""
        if self._free(connection) and self._waiting:
            oldest = next(iter(self._waiting))
            if self.admit(oldest):
                oldest.serve()

    def refuse(self) -> None:
        self.refused += 1

    @staticmethod
    def _mark(places: OrderedDict[Guarded, None], connection: Guarded, present: bool) -> None:
        if present and connection.slot in ("served", "probe"):
            places[connection] = None
        else:
            places.pop(connection, None)

    def _free(self, connection: Guarded) -> bool:
        """Forget ``connection``; whether it held a slot (now free)."""
        slot, connection.slot = connection.slot, None
        for places in (self._heading, self._stalled, self._waiting):
            places.pop(connection, None)
        if slot == "served":
            self.open -= 1
        elif slot == "probe":
            self.probes -= 1
        return slot in ("served", "probe")

    def _evict(self, places: OrderedDict[Guarded, None]) -> None:
        """Close the oldest of ``places``; its slot is the caller's (connection_lost finds nothing to release)."""
        if not places:
            return
        oldest = next(iter(places))
        self.evicted += 1
        self._free(oldest)
        oldest.close()


class Guarded(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind the :class:`Gate` and the timeouts."""

    def __init__(self, inner: asyncio.Protocol, gate: Gate, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._gate = gate
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._wait_timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self._held = b""  # what a waiting connection sent
        self._started = False  # the inner protocol has the connection
        self.slot: str | None = None  # "served", "probe", "waiting", or None once released

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._arm_head()
        if self._gate.admit(self):
            self.serve()
        else:
            self._gate.wait(self)
            self._wait_timer = self._loop.call_later(HEAD_TIMEOUT, self.close)  # also once its head is complete

    def serve(self) -> None:
        """Hand the connection, and what it sent while it waited, to aiohttp."""
        assert self._transport is not None
        self._gate.served(self)
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None
        self._started = True
        self._inner.connection_made(self._transport)
        held, self._held = self._held, b""
        if self._head_timer is not None:
            self._gate.heading(self, True)
        if held:
            self._inner.data_received(held)

    def data_received(self, data: bytes) -> None:
        if self.slot is None:
            return
        self._watch_head(data)
        if self._started:
            self._inner.data_received(data)
            return
        self._held += data
        if len(self._held) > MAX_HEAD:
            self.close()
        elif self._head_timer is None and self._is_probe() and self._gate.admit_probe(self):
            self.serve()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._started else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._gate.release(self)
        if self._started:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """The client does not read its answers: read no more of its requests, and give it WRITE_TIMEOUT."""
        self._gate.stalled(self, True)
        if self._transport is not None and self._write_timer is None:
            self._transport.pause_reading()
            self._write_timer = self._loop.call_later(WRITE_TIMEOUT, self.close)
        if self._started:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._gate.stalled(self, False)
        if self._transport is not None and self._write_timer is not None and not self._transport.is_closing():
            self._transport.resume_reading()
        self._cancel_write_timer()
        if self._started:
            self._inner.resume_writing()

    def close(self) -> None:
        """Close the connection; reset it if its answers are unread (a close would leave the kernel sending them,
        FIN last, to a client that never takes them)."""
        stalled = self._write_timer is not None
        self._cancel_timers()
        if self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            if stalled and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._transport.abort()

    def _watch_head(self, data: bytes) -> None:
        """Arm the head timeout while a request head is incomplete, disarm it when the head ends."""
        seen = self._tail + data
        end = seen.rfind(_END_OF_HEAD)
        if end < 0:
            if self._head_timer is None:
                self._arm_head()  # a new head began
        elif end + len(_END_OF_HEAD) < len(seen):
            self._arm_head()  # a head ended and the next began in the same read
        else:
            self._disarm_head()
        self._tail = seen[-3:]

    def _is_probe(self) -> bool:
        line = self._held.split(b"\r\n", 1)[0].split(b" ")
        return len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?", 1)[0] in PROBE_PATHS

    def _arm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self._loop.call_later(HEAD_TIMEOUT, self.close)
        self._gate.heading(self, True)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._gate.heading(self, False)

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _cancel_timers(self) -> None:
        self._disarm_head()
        self._cancel_write_timer()
        if self._wait_timer is not None:
            self._wait_timer.cancel()
            self._wait_timer = None


def guarded(factory: Callable[[], asyncio.Protocol], gate: Gate) -> Callable[[], asyncio.Protocol]:
    """A protocol factory wrapping ``factory``'s protocols (aiohttp's ``web.Server``) in :class:`Guarded`."""
    loop = asyncio.get_running_loop()
    return lambda: Guarded(factory(), gate, loop)
