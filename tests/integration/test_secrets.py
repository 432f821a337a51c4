"""Secrets planted everywhere a config holds them, and a service that echoes every request header back in its
error bodies: no output of ``streamcar run`` shows any of them, in any form (as they are, URL-encoded, base64,
Basic auth's ``user:password``). The outputs read: the log (spans too), /status, /readyz, /metrics, the status
page's DOM in headless Chromium, the dead letters read from Kafka, and the spans exported over OTLP.
"""

from __future__ import annotations

import base64
import http.client
import json
import signal
from collections.abc import Callable
from urllib.parse import quote, quote_plus, urlsplit

import pytest
from aiohttp import web

from streamcar.redact import forms

from browser import chromium, chromium_binary
from otlp import Collector
from service import Seen, TestService
from sidecar import SidecarFactory, make_config, pipeline
from support import KafkaHandle, TopicFactory, produce_records, read_topic, wait_for
from threaded import ServiceFactory

pytestmark = pytest.mark.integration

KAFKA_PASSWORD = "kafka-pw-Zq81"
BEARER = "bearer-tok-Xk42"
API_KEY = "api-key-Mv77"
URL_USER, URL_PASSWORD = "svc-user", "url-p@ss Wd5/+"  # characters that URL-encoding changes
QUERY_TOKEN = "query-tok-Ld93"
COLLECTOR_KEY = "collector-key-Hj26"
SECRETS = [KAFKA_PASSWORD, BEARER, API_KEY, URL_PASSWORD, QUERY_TOKEN, COLLECTOR_KEY]


def every_form() -> set[str]:
    found: set[str] = set()
    for secret in SECRETS:
        found |= forms(secret)
    basic = base64.b64encode(f"{URL_USER}:{URL_PASSWORD}".encode()).decode()
    return found | {basic, basic.rstrip("="), quote(URL_PASSWORD), quote_plus(URL_PASSWORD)}


async def echo_headers(seen: Seen) -> web.StreamResponse:
    """Every request header in the error body, the way a careless service reports a bad request."""
    echoed = "\n".join(f"{name}: {value}" for name, value in seen.headers.items())
    if seen.body.startswith(b"reject"):
        return web.Response(status=400, text=f"bad request; you sent:\n{echoed}")
    if seen.body.startswith(b"busy"):
        return web.Response(status=503, text=f"busy; you sent:\n{echoed}")
    return web.Response(body=seen.body.upper())


def rebound(base: str, path: str) -> int:
    """What a browser on a rebinding page gets: the request goes to our address, with the page's own Host."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": "attacker.example"})
        return connection.getresponse().status
    finally:
        connection.close()


def leaks(text: str) -> list[str]:
    return sorted(form for form in every_form() if form in text)


async def test_no_output_shows_a_secret_in_any_form(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    chromium_binary()  # skip (or fail in CI) before starting anything
    source, out, dlq = topic_factory(1), topic_factory(1), topic_factory(1)
    service = service_factory(TestService(echo_headers))
    collector = service_factory(Collector())
    url = f"http://{URL_USER}:{quote(URL_PASSWORD, safe='')}@127.0.0.1:{service.port}/handle?token={QUERY_TOKEN}&x=1"
    spec = pipeline(
        source,
        group_factory(),
        url,
        publish=out,
        dead_letter=dlq,
        call={"headers": {"Authorization": f"Bearer {BEARER}", "X-Api-Key": API_KEY}},
        retry={"attempts": 2},
        circuit_breaker={"enabled": False},
    )
    config = make_config(kafka.bootstrap, {"p": spec}, librdkafka={"sasl.password": KAFKA_PASSWORD})
    config = config.model_copy(
        update={
            "tracing": config.tracing.model_copy(
                update={"enabled": True, "endpoint": collector.url, "headers": {"api-key": COLLECTOR_KEY}}
            )
        }
    )
    process = sidecar_factory(config)
    produce_records(kafka, source, [(b"k", b"reject 1"), (b"k", b"busy 2"), (b"k", b"fine 3")])
    letters = read_topic(kafka, dlq, expect=2)
    assert len(letters) == 2
    assert service.requests()[0].headers["Authorization"].startswith("Basic")  # the secrets did go out

    outputs: dict[str, str] = {}
    for path in ("/status", "/readyz", "/metrics"):
        outputs[path] = process.get(path)[1].decode()
    assert rebound(process.admin_url(), "/status") == 403  # a page on attacker.example rebound to 127.0.0.1
    outputs["page"] = await chromium(process.admin_url() + "/")
    outputs["dead letters"] = json.dumps(
        [
            {"key": m.key(), "value": m.value(), "headers": [(k, (v or b"").decode("latin-1")) for k, v in m.headers()]}
            for m in letters
        ],
        default=lambda b: b.decode("latin-1"),
    )
    process.signal(signal.SIGTERM)  # the sidecar exports its spans on the way out
    assert process.wait(30) == 0, process.log_tail()
    outputs["log"] = "\n".join(process.log_lines())
    wait_for(lambda: len(collector.snapshot()) >= 3, timeout=10, what="the exported spans")
    outputs["spans"] = "\n".join(body.decode("latin-1") for body in collector.bodies)

    status = json.loads(outputs["/status"])
    assert "bad request; you sent" in json.dumps(status)  # the error bodies are there, their secrets not
    assert "bad request; you sent" in outputs["dead letters"]
    found = {where: leaks(text) for where, text in outputs.items() if leaks(text)}
    assert found == {}, found
