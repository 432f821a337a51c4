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

from streamcar.engine.buffer import Buffer

from invariants import read_all, reply_with_id, wait_done
from scenario import ScenarioFactory
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
    kafka: KafkaHandle, scenario_factory: ScenarioFactory
) -> None:
    scenario = scenario_factory(3)
    # more input than the buffer holds (2,000 messages, plus two batches the consumer thread hands over before it
    # is held back): a consumer that went on reading during the outage would be seen doing so
    n, max_in_flight, outage = 8000, 64, 5.0
    bound = Buffer(max_in_flight).max_messages + 2 * 500 + max_in_flight
    service = TestService(reply_with_id).start()
    try:
        # two attempts 20 ms apart: without the breaker a 5 s outage would dead-letter everything in flight
        spec = scenario.spec(
            service.url,
            max_in_flight=max_in_flight,
            retry={"attempts": 2, "initial_backoff": "20ms", "max_backoff": "20ms"},
            circuit_breaker={"open_for": "300ms", "max_open": "1s"},
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            p = sidecar.pipelines["p"]
            admin = f"http://127.0.0.1:{sidecar.admin.port}"
            records = [(f"k{i % 97}".encode(), b"v") for i in range(n)]
            await asyncio.to_thread(produce_records, kafka, scenario.source, records)
            await asyncio.to_thread(wait_for, lambda: service.count() >= 500, timeout=60, what="progress")
            service.down()
            calls_before, consumed_before = p.stats.calls, p.stats.consumed
            await asyncio.to_thread(wait_for, lambda: p.circuit_open is not None, timeout=10, what="the circuit")
            ready_status, ready = await get(f"{admin}/readyz")
            _, metrics = await get(f"{admin}/metrics")
            _, status = await get(f"{admin}/status")
            await asyncio.sleep(outage)  # the fault itself: the service stays down this long
            consumed_during = p.stats.consumed - consumed_before
            outage_calls = p.stats.calls - calls_before
            still_open = p.circuit_open is not None
            service.up()
            verdict = await asyncio.to_thread(scenario.check, service.requests)
            await asyncio.to_thread(wait_for, lambda: p.circuit_open is None, timeout=10, what="the circuit to close")
            ready_after, _ = await get(f"{admin}/readyz")
            opened = p.circuit_opened
    finally:
        service.stop()

    assert verdict.replies.total() == n
    assert still_open
    assert consumed_during <= bound, f"consumption went on while the circuit was open: {consumed_during} records"
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
    kafka: KafkaHandle, scenario_factory: ScenarioFactory
) -> None:
    scenario = scenario_factory(2)
    broken = threading.Event()

    async def handler(seen: Seen) -> web.StreamResponse:
        if broken.is_set():
            return web.Response(status=503, text="database unavailable")
        if seen.body == b"poison":
            return web.Response(status=500, text="boom")
        return await reply_with_id(seen)

    service = TestService(handler).start()
    try:
        spec = scenario.spec(
            service.url,
            retry={"attempts": 3, "initial_backoff": "20ms", "max_backoff": "50ms"},
            circuit_breaker={"open_for": "200ms", "max_open": "500ms"},
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            p = sidecar.pipelines["p"]
            # a healthy service with one poison message: the circuit stays closed, the poison is dead-lettered
            first = [(f"k{i}".encode(), b"poison" if i == 50 else b"ok") for i in range(200)]
            await asyncio.to_thread(produce_records, kafka, scenario.source, first)
            await asyncio.to_thread(wait_done, kafka, scenario.group, scenario.source, timeout=60)
            opened_while_healthy = p.circuit_opened
            # now every call gets 503: after five in a row the circuit opens instead of exhausting the retries
            broken.set()
            second = [(f"k{i}".encode(), b"ok") for i in range(300)]
            await asyncio.to_thread(produce_records, kafka, scenario.source, second)
            await asyncio.to_thread(wait_for, lambda: p.circuit_open is not None, timeout=30, what="the circuit")
            reason = p.circuit_open
            await asyncio.to_thread(
                wait_for, lambda: "probe failed" in (p.circuit_open or ""), timeout=30, what="a failed probe"
            )
            broken.clear()
            (poison,) = [
                r.id for r in await asyncio.to_thread(read_all, kafka, scenario.source) if r.value == b"poison"
            ]
            # the poison only: nothing dead-lettered while the service failed every call
            verdict = await asyncio.to_thread(scenario.check, service.requests, dead_letters={poison: "exhausted"})
    finally:
        service.stop()

    assert opened_while_healthy == 0
    assert verdict.replies.total() == 499
    ((letter,),) = verdict.dead_letters.values()
    assert letter.value == b"poison"
    assert reason is not None
    assert "calls in a row could not get through (http-status)" in reason


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
