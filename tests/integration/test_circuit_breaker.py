"""The circuit breaker against a real broker: a service that is down or failing every call pauses consumption
instead of burning retries, nothing is dead-lettered because of it, and a poison message still is."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def circuit_gauge(metrics: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "streamcar_circuit_open":
                return sample.value
    raise AssertionError("no streamcar_circuit_open in /metrics")


async def test_service_down_opens_the_circuit_pauses_and_dead_letters_nothing(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq = topic_factory(3), topic_factory(3), topic_factory(1)
    n, max_in_flight = 3000, 64
    service = TestService().start()
    try:
        # two attempts 20 ms apart: without the breaker a 5 s outage would dead-letter everything in flight
        spec = pipeline(
            source,
            group_factory(),
            service.url,
            publish=out,
            dead_letter=dlq,
            max_in_flight=max_in_flight,
            retry={"attempts": 2, "initial_backoff": "20ms", "max_backoff": "20ms"},
            circuit_breaker={"open_for": "300ms", "max_open": "1s"},
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            p = sidecar.pipelines["p"]
            admin = f"http://127.0.0.1:{sidecar.admin.port}"
            await asyncio.to_thread(produce_records, kafka, source, [(f"k{i % 97}".encode(), b"v") for i in range(n)])
            await asyncio.to_thread(wait_for, lambda: service.count() >= 500, timeout=60, what="progress")
            service.down()
            calls_before = p.stats.calls
            await asyncio.to_thread(wait_for, lambda: p.circuit_open is not None, timeout=10, what="the circuit")
            ready_status, ready = await get(f"{admin}/readyz")
            _, metrics = await get(f"{admin}/metrics")
            _, status = await get(f"{admin}/status")
            await asyncio.sleep(1)  # the outage goes on; consumption is paused
            consumed = p.stats.consumed
            await asyncio.sleep(4)
            assert p.stats.consumed == consumed
            outage_calls = p.stats.calls - calls_before
            assert p.circuit_open is not None
            service.up()
            replies = await asyncio.to_thread(read_topic, kafka, out, expect=n, timeout=120)
            await asyncio.to_thread(wait_for, lambda: p.circuit_open is None, timeout=10, what="the circuit to close")
            ready_after, _ = await get(f"{admin}/readyz")
            letters = await asyncio.to_thread(read_topic, kafka, dlq, expect=0, timeout=1)
            opened = p.circuit_opened
    finally:
        service.stop()

    assert letters == []
    assert len({(m.partition(), m.value()) for m in replies}) >= 1
    assert len(replies) >= n
    # no retry storm: the calls in flight when it went down and those started before the first failure came
    # back (each at most max_in_flight), then only rounds of 3 probes (0.3, 0.6, 1, 1, 1, 1 s apart)
    assert outage_calls <= 2 * max_in_flight + 3 * 8, outage_calls
    assert opened == 1
    assert ready_status == 503
    assert "pipeline p: the circuit to the service is open" in json.loads(ready)["problems"][0]
    assert circuit_gauge(metrics) == 1
    document = json.loads(status)["pipelines"][0]
    assert document["circuit"] in ("open", "half-open")
    assert "could not be reached" in document["circuit_reason"]
    assert ready_after == 200


async def test_failing_calls_open_it_but_a_poison_message_is_still_dead_lettered(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq = topic_factory(2), topic_factory(2), topic_factory(1)
    broken = threading.Event()

    async def handler(seen: Seen) -> web.StreamResponse:
        if broken.is_set():
            return web.Response(status=503, text="database unavailable")
        if seen.body == b"poison":
            return web.Response(status=500, text="boom")
        return web.Response(body=seen.body.upper())

    service = TestService(handler).start()
    try:
        spec = pipeline(
            source,
            group_factory(),
            service.url,
            publish=out,
            dead_letter=dlq,
            retry={"attempts": 3, "initial_backoff": "20ms", "max_backoff": "50ms"},
            circuit_breaker={"open_for": "200ms", "max_open": "500ms"},
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            p = sidecar.pipelines["p"]
            # a healthy service with one poison message: the circuit stays closed, the poison is dead-lettered
            first = [(f"k{i}".encode(), b"poison" if i == 50 else b"ok") for i in range(200)]
            await asyncio.to_thread(produce_records, kafka, source, first)
            (letter,) = await asyncio.to_thread(read_topic, kafka, dlq, expect=1, timeout=60)
            await asyncio.to_thread(read_topic, kafka, out, expect=199, timeout=60)
            assert p.circuit_opened == 0
            # now every call gets 503: after five in a row the circuit opens instead of exhausting the retries
            broken.set()
            await asyncio.to_thread(produce_records, kafka, source, [(f"k{i}".encode(), b"ok") for i in range(300)])
            await asyncio.to_thread(wait_for, lambda: p.circuit_open is not None, timeout=30, what="the circuit")
            reason = p.circuit_open
            await asyncio.to_thread(
                wait_for, lambda: "probe failed" in (p.circuit_open or ""), timeout=30, what="a failed probe"
            )
            broken.clear()
            await asyncio.to_thread(read_topic, kafka, out, expect=499, timeout=60)
            letters = await asyncio.to_thread(read_topic, kafka, dlq, expect=1, timeout=2)
    finally:
        service.stop()

    headers = dict(letter.headers() or [])
    assert letter.value() == b"poison"
    assert headers["streamcar-error-kind"] == b"exhausted"
    assert reason is not None
    assert "calls in a row could not get through (http-status)" in reason
    assert len(letters) == 1  # the poison only: nothing dead-lettered while the service failed every call


async def test_a_lone_poison_message_that_trips_the_circuit_still_reaches_the_dead_letter_topic(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq = topic_factory(1), topic_factory(1), topic_factory(1)

    async def handler(seen: Seen) -> web.StreamResponse:
        if seen.body == b"poison":
            return web.Response(status=503, text="cannot handle this one")
        return web.Response(body=seen.body.upper())

    service = TestService(handler).start()
    try:
        # its five attempts are five failed calls in a row: the circuit opens on the last one (which is not
        # counted), then the probe -- the poison itself, the only message -- fails with an answer and counts
        spec = pipeline(
            source,
            group_factory(),
            service.url,
            publish=out,
            dead_letter=dlq,
            retry={"attempts": 5, "initial_backoff": "20ms", "max_backoff": "50ms"},
            circuit_breaker={"consecutive": 5, "open_for": "200ms"},
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            p = sidecar.pipelines["p"]
            await asyncio.to_thread(produce_records, kafka, source, [(b"k", b"poison")])
            (letter,) = await asyncio.to_thread(read_topic, kafka, dlq, expect=1, timeout=30)
            await asyncio.to_thread(produce_records, kafka, source, [(b"k", b"after")])
            (reply,) = await asyncio.to_thread(read_topic, kafka, out, expect=1, timeout=30)
            opened = p.circuit_opened
    finally:
        service.stop()

    assert opened == 1
    assert dict(letter.headers() or [])["streamcar-attempts"] == b"5"
    assert reply.value() == b"AFTER"
    assert [s.body for s in service.requests()] == [b"poison"] * 6 + [b"after"]
