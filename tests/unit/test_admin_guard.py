"""What the admin server accepts: known hosts only (DNS rebinding), the token, few connections, prompt heads.

An :class:`AdminServer` with no pipelines on a loopback port, talked to with raw sockets: what a browser, a
probe, a rebinding page or a slow client would send.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest

from streamcar.admin import guard
from streamcar.admin.guard import Gate, host_allowed
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


@pytest.fixture
async def server() -> AsyncIterator[AdminServer]:
    admin = AdminServer("127.0.0.1", 0, lambda: {}, token="s3cret-admin-token")
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


def test_the_gate_evicts_the_oldest_slow_head_and_refuses_when_all_are_busy() -> None:
    gate = Gate(limit=2)

    class Connection:
        def __init__(self) -> None:
            self.counted = True
            self.closed = False

        def close(self) -> None:
            self.closed = True

    a, b, c = Connection(), Connection(), Connection()
    assert gate.admit()
    assert gate.admit()
    gate.heading(a, True)  # type: ignore[arg-type]
    gate.heading(b, True)  # type: ignore[arg-type]
    assert gate.admit()  # a made room
    assert (a.closed, b.closed, gate.open, gate.evicted) == (True, False, 2, 1)
    gate.heading(b, False)  # type: ignore[arg-type]  # b's head is complete: it is being served
    gate.heading(c, False)  # type: ignore[arg-type]
    assert not gate.admit()
    assert gate.refused == 1
    gate.release(b)  # type: ignore[arg-type]
    assert gate.open == 1


async def test_slow_clients_never_keep_healthz_from_answering(
    server: AdminServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(guard, "HEAD_TIMEOUT", 0.5)
    port = server.port
    slow = []
    for _ in range(3 * guard.MAX_CONNECTIONS):  # far more slow clients than the server has room for
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and never the end of the head
        slow.append((reader, writer))
    await asyncio.sleep(0)
    for _ in range(5):
        assert await asyncio.wait_for(request(port, "/healthz"), 2) == 200
    assert server.gate.open <= guard.MAX_CONNECTIONS
    assert server.gate.evicted > 0
    # and those left alone are closed once their head is overdue
    reader, writer = slow[-1]
    assert await asyncio.wait_for(reader.read(), 2) == b""
    for _, writer in slow:
        writer.close()
