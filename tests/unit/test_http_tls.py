"""HTTPS to the service with ``call.tls``: a private CA, mutual TLS and a server name, against a real TLS server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streamcar.call.http import HttpCaller
from streamcar.config import CallConfig
from streamcar.errors import ConfigError
from streamcar.event import Event, Reply, Result

from pki import Leaf, Pki, make_pki

EVENT = Event("orders", 0, 7, 1, b"k", b"hello", ())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


ServerFactory = Callable[..., Any]


@pytest.fixture
async def https_server() -> AsyncIterator[ServerFactory]:
    """Starts HTTPS echo servers on 127.0.0.1; ``await make(leaf, client_ca=None)`` returns the port."""
    runners: list[web.AppRunner] = []

    async def echo(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in peer["subject"]) if peer else {}
        return web.Response(
            body=(await request.read()).upper(), headers={"Kafka-Header-client": subject.get("commonName", "-")}
        )

    async def make(leaf: Leaf, *, client_ca: Path | None = None) -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(leaf.cert, leaf.key)
        if client_ca is not None:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        app.router.add_post("/x", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return int(runner.addresses[0][1])

    yield make
    for runner in runners:
        await runner.cleanup()


async def call(url: str, **extra: Any) -> Reply:
    caller = HttpCaller(CallConfig.model_validate({"url": url, "timeout": "5s", **extra}), max_connections=4)
    await caller.start()
    try:
        (reply,) = await caller.call([EVENT])
    finally:
        await caller.close()
    return reply


async def test_the_services_ca_verifies_it(https_server: ServerFactory, pki: Pki) -> None:
    port = await https_server(pki.server)
    reply = await call(f"https://127.0.0.1:{port}/x", tls={"ca_file": str(pki.ca)})
    assert (reply.result, reply.value) == (Result.SUCCESS, b"HELLO")


@pytest.mark.parametrize("ca", ["other", "system"])
async def test_a_certificate_no_trusted_ca_signed_is_retried_as_a_tls_error(
    https_server: ServerFactory, pki: Pki, ca: str
) -> None:
    port = await https_server(pki.server)
    extra = {"tls": {"ca_file": str(pki.other_ca)}} if ca == "other" else {}
    reply = await call(f"https://127.0.0.1:{port}/x", **extra)
    assert reply.result is Result.RETRY
    assert reply.error_kind == "tls"
    assert "certificate verify failed" in (reply.error or "")


async def test_mutual_tls_presents_the_client_certificate(https_server: ServerFactory, pki: Pki) -> None:
    port = await https_server(pki.server, client_ca=pki.ca)
    url = f"https://127.0.0.1:{port}/x"
    without = await call(url, tls={"ca_file": str(pki.ca)})
    assert without.result is Result.RETRY  # the server refuses the handshake
    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    caller = HttpCaller(CallConfig.model_validate({"url": url, "tls": tls}), max_connections=1)
    await caller.start()
    try:
        (reply,) = await caller.call([EVENT])
    finally:
        await caller.close()
    assert (reply.result, reply.value) == (Result.SUCCESS, b"HELLO")
    assert reply.headers == (("client", b"client"),)  # the server saw the client certificate (CN=client)


@pytest.mark.parametrize(("server_name", "expected"), [(None, Result.RETRY), ("orders.internal", Result.SUCCESS)])
async def test_server_name_is_the_name_the_certificate_must_carry(
    https_server: ServerFactory, pki: Pki, server_name: str | None, expected: Result
) -> None:
    port = await https_server(pki.named_server)  # issued for orders.internal only
    tls: dict[str, str] = {"ca_file": str(pki.ca)}
    if server_name is not None:
        tls["server_name"] = server_name
    reply = await call(f"https://127.0.0.1:{port}/x", tls=tls)
    assert reply.result is expected


async def test_unusable_tls_files_are_config_errors_naming_the_field(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"^call\.tls\.ca_file: cannot use .*missing\.pem"):
        await call("https://127.0.0.1:1/x", tls={"ca_file": str(tmp_path / "missing.pem")})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match=r"^call\.tls\.cert_file: cannot use "):
        await call("https://127.0.0.1:1/x", tls={"cert_file": str(pki.client.cert), "key_file": str(garbage)})
