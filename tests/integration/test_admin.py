"""The admin endpoints against a running sidecar: /healthz, /readyz, /metrics and /status."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

import streamcar
from streamcar.app import Sidecar
from streamcar.errors import StreamcarError

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration


async def reject_bad(seen: Seen) -> web.StreamResponse:
    if seen.body.startswith(b"bad"):
        return web.Response(status=422, text="bad order")
    return web.Response(body=seen.body.upper())


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def eventually(check: Callable[[], Any], what: str, within: float = 30.0) -> None:
    """Poll an endpoint (another process's view: there is no event to await) until ``check`` holds, bounded."""
    for _ in range(int(within / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out after {within}s waiting for {what}")


async def test_metrics_and_status_describe_the_work_done(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq = topic_factory(3), topic_factory(3), topic_factory(1)
    service = TestService(reject_bad).start()
    try:
        spec = pipeline(source, group_factory(), service.url, publish=out, dead_letter=dlq)
        async with running(make_config(kafka.bootstrap, {"orders": spec})) as sidecar:
            base = f"http://127.0.0.1:{sidecar.admin.port}"
            assert await get(f"{base}/healthz") == (200, "ok\n")
            records = [(f"k{i}".encode(), (b"bad-%d" if i % 10 == 0 else b"ok-%d") % i) for i in range(30)]
            produce_records(kafka, source, records)
            await asyncio.to_thread(read_topic, kafka, out, expect=27)
            await asyncio.to_thread(read_topic, kafka, dlq, expect=3)

            async def lag_known() -> bool:
                _, text = await get(f"{base}/metrics")
                lags = [v for (name, _), v in samples(text).items() if name == "streamcar_consumer_lag"]
                return len(lags) == 3 and sum(lags) == 0

            await eventually(lag_known, "the lag of every partition")  # watermarks refresh every 2 s
            status, text = await get(f"{base}/metrics")
            metrics = samples(text)
            ready_status, ready = await get(f"{base}/readyz")
            _, status_text = await get(f"{base}/status")
    finally:
        service.stop()

    assert status == 200
    p = (("pipeline", "orders"),)
    assert metrics[("streamcar_consumed_total", p)] == 30
    assert metrics[("streamcar_results_total", (("pipeline", "orders"), ("result", "success")))] == 27
    assert metrics[("streamcar_results_total", (("pipeline", "orders"), ("result", "dead-letter")))] == 3
    assert metrics[("streamcar_published_total", p)] == 27
    assert metrics[("streamcar_dead_letter_total", p)] == 3
    assert metrics[("streamcar_in_flight", p)] == 0
    assert metrics[("streamcar_call_seconds_count", p)] == 30
    assert metrics[("streamcar_call_seconds_bucket", (("le", "+Inf"), ("pipeline", "orders")))] == 30
    assert 0 < metrics[("streamcar_call_seconds_sum", p)] < 30
    assert metrics[("streamcar_build_info", (("version", streamcar.__version__),))] == 1
    assert not [name for name, _ in metrics if name == "streamcar_publish_errors_total"]  # none refused here
    assert (ready_status, json.loads(ready)) == (200, {"ready": True, "problems": []})
    document = json.loads(status_text)
    assert document["version"] == streamcar.__version__
    assert 0 <= document["uptime_s"] < 120
    assert document["started_at"] <= document["at"]
    (orders,) = document["pipelines"]
    assert orders["rates"]["1m"]["count"]["consumed"] == 30
    assert orders["rates"]["1m"]["per_s"]["consumed"] > 0
    assert orders["latency"]["1m"]["calls"] == 30
    assert 0 < orders["latency"]["1m"]["p50"] <= orders["latency"]["1m"]["p99"]
    assert (orders["topics"], orders["publish_topic"], orders["dead_letter_topic"]) == ([source], out, dlq)
    assert orders["routed"][0]["topic"] == out
    assert [(g["kind"], g["count"]) for g in orders["dead_letter_groups"]] == [("http-status", 3)]
    assert orders["name"] == "orders"
    assert sorted(part["partition"] for part in orders["partitions"]) == [0, 1, 2]
    assert sum(part["next_offset"] for part in orders["partitions"]) == 30
    assert orders["results"] == {"success": 27, "dead-letter": 3}
    assert len(orders["last_errors"]) == 3
    assert "HTTP 422" in orders["last_errors"][0]


async def test_readyz_fails_while_the_service_is_down_and_recovers(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out = topic_factory(1), topic_factory(1)
    service = TestService().start()
    try:
        spec = pipeline(source, group_factory(), service.url, publish=out, retry={"attempts": 100})
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            readyz = f"http://127.0.0.1:{sidecar.admin.port}/readyz"
            assert (await get(readyz))[0] == 200
            service.down()
            produce_records(kafka, source, [(f"k{i}".encode(), b"v") for i in range(10)])

            async def not_ready() -> bool:
                return (await get(readyz))[0] == 503

            await eventually(not_ready, "readyz to fail")
            _, body = await get(readyz)
            assert "pipeline p: the service is failing" in body
            service.up()

            async def ready() -> bool:
                return (await get(readyz))[0] == 200

            await eventually(ready, "readyz to recover")
            await asyncio.to_thread(read_topic, kafka, out, expect=10)  # and nothing was lost meanwhile
    finally:
        service.stop()


async def test_a_taken_admin_port_is_a_one_line_error(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(kafka.bootstrap, {"p": pipeline(topic_factory(1), "g", "http://127.0.0.1:1/x")})
        config = config.model_copy(update={"admin": config.admin.model_copy(update={"listen": f"127.0.0.1:{port}"})})
        with pytest.raises(StreamcarError, match=rf"^admin\.listen 127\.0\.0\.1:{port}: "):
            await Sidecar(config).run(asyncio.Event())


async def test_the_lag_stays_current_while_the_open_circuit_pauses_consumption(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source = topic_factory(1)
    service = TestService().start()
    try:
        # no probe (which would read records) before the lag is looked at
        breaker = {"open_for": "6s", "max_open": "6s"}
        spec = pipeline(source, group_factory(), service.url, retry={"attempts": 100}, circuit_breaker=breaker)
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            base = f"http://127.0.0.1:{sidecar.admin.port}"
            service.down()  # a refused connection opens the circuit at once
            await asyncio.to_thread(produce_records, kafka, source, [(b"k", b"first")])

            async def status() -> dict[str, Any]:
                _, text = await get(f"{base}/status")
                (p,) = json.loads(text)["pipelines"]
                return dict(p)

            async def circuit_open() -> bool:
                return bool((await status())["state"] == "circuit-open")

            await eventually(circuit_open, "the circuit to open")
            assert sidecar.pipelines["p"].stats.consumed == 1
            await asyncio.to_thread(produce_records, kafka, source, [(b"k", b"v")] * 200)

            async def lag_caught_up() -> bool:
                return bool((await status())["lag"] == 201)  # every record since the first (not done) one

            await eventually(lag_caught_up, "the lag to count the records produced while paused", within=15)
            p = await status()
            assert sidecar.pipelines["p"].stats.consumed == 1  # paused: the lag was not read from fetched records
            assert p["circuit"] == "open"
            assert p["state_reason"].startswith("the circuit to the service is open")
            service.up()

            async def drained() -> bool:
                return bool((await status())["lag"] == 0)

            await eventually(drained, "the backlog to drain once the service is back")
    finally:
        service.stop()
