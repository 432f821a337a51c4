"""Authenticating to the service from config, end to end through the broker: mutual TLS (``call.tls``) and a
bearer token (``call.headers``); a wrong client certificate is retried as a TLS error, never dead-lettered."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from pki import Pki, make_pki
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration

TOKEN = "svc-token-5d1e"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def mtls_service(pki: Pki) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS service that requires a client certificate from ``pki.ca`` and the bearer token; yields its URL
    and the client certificate names it served."""
    clients: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.Response(status=401)
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        clients.append(dict(pair[0] for pair in peer["subject"])["commonName"] if peer else "-")
        return web.Response(body=(await request.read()).upper())

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/orders", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/orders", clients
    finally:
        await runner.cleanup()


def tls(pki: Pki, cert: Path, key: Path) -> dict[str, str]:
    return {"ca_file": str(pki.ca), "cert_file": str(cert), "key_file": str(key)}


async def test_mutual_tls_and_a_bearer_token_from_config(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    pki: Pki,
    mtls_service: tuple[str, list[str]],
) -> None:
    url, clients = mtls_service
    source, out, dlq = topic_factory(2), topic_factory(2), topic_factory(1)
    call = {
        "url": url,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "tls": tls(pki, pki.client.cert, pki.client.key),
    }
    spec = pipeline(source, group_factory(), url, publish=out, dead_letter=dlq, call=call)
    async with running(make_config(kafka.bootstrap, {"p": spec})):
        await asyncio.to_thread(
            produce_records, kafka, source, [(f"k{i}".encode(), b"order-%d" % i) for i in range(50)]
        )
        replies = await asyncio.to_thread(read_topic, kafka, out, expect=50)
    assert sorted(m.value() for m in replies) == sorted(b"ORDER-%d" % i for i in range(50))
    assert set(clients) == {"client"}
    assert await asyncio.to_thread(read_topic, kafka, dlq, expect=0, timeout=1) == []


async def test_a_client_certificate_the_service_does_not_trust_is_retried_not_dead_lettered(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    pki: Pki,
    mtls_service: tuple[str, list[str]],
) -> None:
    url, clients = mtls_service
    source, dlq = topic_factory(1), topic_factory(1)
    # the server's own certificate as a client certificate: right CA, but not for client authentication
    call = {
        "url": url,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "tls": tls(pki, pki.server.cert, pki.server.key),
    }
    spec = pipeline(source, group_factory(), url, dead_letter=dlq, call=call, retry={"attempts": 2})
    async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
        p = sidecar.pipelines["p"]
        await asyncio.to_thread(produce_records, kafka, source, [(b"k", b"order")])
        await asyncio.to_thread(wait_for, lambda: p.circuit_open is not None, timeout=20, what="the circuit")
        reason = p.circuit_open
        error = p.stats.last_call_error
    assert clients == []
    # TLS 1.3 finishes the client's side of the handshake before the service checks its certificate: the
    # refusal arrives as a reset connection, or as a TLS alert, depending on timing
    assert reason is not None
    assert "could not be reached" in reason or "drops every connection without answering" in reason, reason
    assert "connection error" in error or "TLS error" in error, error
    assert await asyncio.to_thread(read_topic, kafka, dlq, expect=0, timeout=1) == []
