"""What the admin server accepts: known hosts only (DNS rebinding), the token, few connections, prompt heads.

An :class:`AdminServer` with no pipelines on a loopback port, talked to with raw sockets: what a browser, a
probe, a rebinding page or a slow client would send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest

from streamcar.admin import connections
from streamcar.admin.connections import Gate
from streamcar.admin.guard import host_allowed
from streamcar.admin.server import AdminServer


async def request(port: int, path: str, *, host: str | None = "127.0.0.1", auth: str | None = None) -> int:
    """The status code of one GET, with ``Host`` (None: an HTTP/1.0 request without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.{0 if host is None else 1}"]
    if host is not None:
        lines.append(f"Host: {host}")
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return int(status.split()[1])


TOKEN = "s3cret-admin-token"


@pytest.fixture
async def server() -> AsyncIterator[AdminServer]:
    admin = AdminServer("127.0.0.1", 0, lambda: {}, token=TOKEN)
    await admin.start()
    yield admin
    await admin.close()


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8095", True),
        ("10.1.2.3:8095", True),  # a Pod IP: what the kubelet's probes and Prometheus send
        ("[::1]:8095", True),
        ("localhost:8095", True),
        ("LOCALHOST", True),
        ("orders-7d9f-x2:8095", True),  # $POD_NAME
        ("attacker.example:8095", False),  # rebinding: the browser sends the attacker's name
        ("attacker.example", False),
        ("127.0.0.1.attacker.example", False),
        (None, True),  # HTTP/1.0 without Host: not a browser
    ],
)
def test_hosts_the_admin_server_answers(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, {"localhost", "orders-7d9f-x2"}) is allowed


def test_configured_hosts_may_name_a_port() -> None:
    assert host_allowed("admin.internal:9000", ["admin.internal:9000"])
    assert not host_allowed("admin.internal:9001", ["admin.internal:9000"])
    assert host_allowed("admin.internal.:80", ["admin.internal"])


async def test_a_foreign_host_gets_403_and_the_probes_need_no_token(server: AdminServer) -> None:
    port = server.port
    assert await request(port, "/status", host="attacker.example") == 403
    assert await request(port, "/healthz", host="attacker.example") == 403
    assert await request(port, "/healthz") == 200
    assert await request(port, "/readyz") == 200
    assert await request(port, "/status") == 401
    assert await request(port, "/") == 401
    assert await request(port, "/metrics", host=None) == 401


async def test_the_token_is_taken_as_bearer_or_as_a_browsers_basic_password(server: AdminServer) -> None:
    port = server.port
    basic = base64.b64encode(b"anyone:s3cret-admin-token").decode()
    assert await request(port, "/status", auth="Bearer s3cret-admin-token") == 200
    assert await request(port, "/", auth=f"Basic {basic}") == 200
    assert await request(port, "/metrics", auth="Bearer wrong") == 401
    assert await request(port, "/status", auth="Basic !!!") == 401
    assert await request(port, "/status", auth="Token s3cret-admin-token") == 401


class Connection:
    """What the gate sees of a connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.slot: str | None = None
        self.closed = self.served = False

    def close(self) -> None:
        self.closed = True

    def serve(self) -> None:
        self.served = True


def test_the_gate_evicts_slow_heads_then_unread_answers_and_keeps_the_rest_waiting() -> None:
    gate = Gate(limit=2, reserve=1, waiting=2)
    a, b, c, d, e, f, g, h = (Connection(name) for name in "abcdefgh")
    assert gate.admit(a)  # type: ignore[arg-type]
    assert gate.admit(b)  # type: ignore[arg-type]
    gate.heading(a, True)  # type: ignore[arg-type]
    gate.stalled(b, True)  # type: ignore[arg-type]
    assert gate.admit(c)  # type: ignore[arg-type]  # a, still sending its head, made room
    assert gate.admit(d)  # type: ignore[arg-type]  # then b, which does not read its answers
    assert (a.closed, b.closed, gate.open, gate.evicted) == (True, True, 2, 2)

    assert not gate.admit(e)  # type: ignore[arg-type]  # c and d are being served: nobody gives up a slot
    gate.wait(e)  # type: ignore[arg-type]
    gate.wait(f)  # type: ignore[arg-type]
    assert gate.admit_probe(e)  # type: ignore[arg-type]  # e's head is a complete probe: the reserve
    gate.served(e)  # type: ignore[arg-type]
    assert (e.slot, gate.probes) == ("probe", 1)
    assert not gate.admit_probe(f)  # type: ignore[arg-type]  # the reserve is full: f waits on

    gate.wait(g)  # type: ignore[arg-type]
    gate.wait(h)  # type: ignore[arg-type]  # more waiting than allowed: the oldest waiting one goes
    assert (f.closed, gate.waiting) == (True, 2)
    gate.release(c)  # type: ignore[arg-type]
    assert (g.served, g.slot) == (True, "served")  # the slot went to the oldest waiting connection
    gate.release(e)  # type: ignore[arg-type]
    assert (gate.open, gate.probes, gate.refused) == (2, 0, 0)


async def test_slow_clients_never_keep_healthz_from_answering(
    server: AdminServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections, "HEAD_TIMEOUT", 0.5)
    port = server.port
    slow = []
    for _ in range(3 * connections.MAX_CONNECTIONS):  # far more slow clients than the server has room for
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the end of the head
        slow.append((reader, writer))
    await asyncio.sleep(0)
    for _ in range(5):
        assert await asyncio.wait_for(request(port, "/healthz"), 2) == 200
    assert server.gate.open <= connections.MAX_CONNECTIONS
    assert server.gate.evicted > 0
    # and those left alone are closed once their head is overdue
    reader, writer = slow[-1]
    assert await asyncio.wait_for(reader.read(), 2) == b""
    for _, writer in slow:
        writer.close()


class Unread:
    """``count`` connections that pipeline complete requests and never read an answer; each one the server closes
    is opened again at the next round, so they take every slot that frees."""

    REQUESTS = 3000  # per connection, at its start: their answers (/metrics: 2 KiB each) fill every buffer

    def __init__(self, port: int, count: int, path: str = "/metrics") -> None:
        self.port, self.count = port, count
        self.request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        self.sent = self.reopened = 0
        self.sockets: list[socket.socket] = []

    def round(self) -> None:
        """Reopen what was closed, and open up to ``count``."""
        for index, sock in enumerate(self.sockets):
            if self.closed(sock):
                sock.close()
                self.sockets[index] = self._connect()
                self.reopened += 1
        while len(self.sockets) < self.count:
            self.sockets.append(self._connect())

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # its answers back up at once
        with contextlib.suppress(OSError):  # refused or reset: opened again next round
            sock.sendall(self.request * self.REQUESTS)  # whole requests: the server's reads end with a whole head
            self.sent += self.REQUESTS
        sock.setblocking(False)
        return sock

    @staticmethod
    def closed(sock: socket.socket) -> bool:
        """Whether the server closed or reset it (its unread answers may still wait in our buffer: no recv)."""
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except OSError:
            return True
        return state != 1  # TCP_ESTABLISHED

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


async def test_connections_that_never_read_their_answers_never_keep_healthz_from_answering(
    server: AdminServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections, "WRITE_TIMEOUT", 1.0, raising=True)
    unread = Unread(server.port, connections.MAX_CONNECTIONS)
    try:
        answered = 0
        probes = 34
        for _ in range(probes):
            unread.round()
            await asyncio.sleep(0.2)  # the server reads what they sent: their heads are complete, they wait on us
            with contextlib.suppress(TimeoutError, ConnectionError, IndexError):  # a reset, no answer, no status
                answered += await asyncio.wait_for(request(server.port, "/healthz"), 2) == 200
            await asyncio.sleep(0.1)
        gate = server.gate
        print(
            f"/healthz answered {answered} of {probes} probes beside {unread.count} connections that never read "
            f"({unread.sent} requests, {unread.reopened} connections opened again); gate: {gate.open} open, "
            f"{gate.evicted} evicted, {gate.waiting} waiting"
        )
        assert answered == probes
    finally:
        unread.close()


async def test_a_connection_that_leaves_its_answers_unread_is_read_no_more_and_closed(
    server: AdminServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections, "WRITE_TIMEOUT", 0.5)
    unread = Unread(server.port, 1)
    try:
        unread.round()
        [sock] = unread.sockets
        deadline = time.monotonic() + 10
        while not Unread.closed(sock):  # its answers fill every buffer, then its writes stall for WRITE_TIMEOUT
            assert time.monotonic() < deadline, "a connection that never reads was not closed"
            await asyncio.sleep(0.05)
        assert (server.gate.open, server.gate.waiting) == (0, 0)
    finally:
        unread.close()


async def body_of(port: int, path: str, auth: str | None = None) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Authorization: {auth}\r\n" if auth else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_readyz_without_the_token_gives_reasons_without_what_the_service_said() -> None:
    """Issue 30, finding 9: /readyz stays open under admin.token (the probes carry none), and showed the service's
    last error body, so record data a service echoes was visible to anyone who reached the port."""
    from test_admin_window import View

    view = View()
    view.in_flight = 3  # waiting for the failing service
    for _ in range(10):
        view.stats.observe_call(0.01, "http-status")
    view.stats.last_call_error = "HTTP 503: no stock for card 4111-1111-1111-1111"
    view.stats.last_call_failure = "http-status"
    assert view.stats.service_failing
    admin = AdminServer("127.0.0.1", 0, lambda: {"p": view}, token=TOKEN)
    await admin.start()
    try:
        code, body = await body_of(admin.port, "/readyz")
        assert code == 503
        assert "the service is failing" in body
        assert "last: http-status" in body
        assert "4111" not in body
        code, body = await body_of(admin.port, "/readyz", auth=f"Bearer {TOKEN}")
        assert code == 503
        assert "4111-1111-1111-1111" in body  # the operator with the token sees what the service said
    finally:
        await admin.close()


async def test_an_idle_pipeline_whose_last_calls_failed_is_ready() -> None:
    """Issue 30: an idle pipeline whose last traffic was poison kept /readyz 503 for minutes (service-failing,
    circuit half-open with nothing to probe): a kubelet takes the Pod out of its Service while nothing is wrong."""
    from test_admin_window import View

    view = View()
    for _ in range(10):
        view.stats.observe_call(0.01, "http-status")
    view.circuit_open = "half-open"  # type: ignore[assignment]
    view.lags[("t", 0)] = 0
    admin = AdminServer("127.0.0.1", 0, lambda: {"p": view})
    await admin.start()
    try:
        assert await body_of(admin.port, "/readyz") == (200, '{"ready": true, "problems": []}\n')
        view.lags[("t", 0)] = 1  # a message came: the service decides again
        code, body = await body_of(admin.port, "/readyz")
        assert code == 503
        assert "the circuit to the service is half-open" in body
        view.lags[("t", 0)] = None  # unknown is not idle
        assert (await body_of(admin.port, "/readyz"))[0] == 503
    finally:
        await admin.close()
