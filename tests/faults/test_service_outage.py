"""The service goes down for a few seconds mid-run, then comes back on the same port: with only two attempts per
message, nothing is dead-lettered and every input is replied to once, in order (the circuit breaker's own
promises are test_circuit_breaker's)."""

from __future__ import annotations

import asyncio

import pytest

from invariants import reply_with_id
from scenario import ScenarioFactory
from service import TestService
from sidecar import make_config, running
from support import KafkaHandle, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_service_down_then_back(kafka: KafkaHandle, scenario_factory: ScenarioFactory) -> None:
    scenario = scenario_factory(3)
    n, outage = 3000, 5.0
    service = TestService(reply_with_id).start()
    try:
        spec = scenario.spec(
            service.url,
            max_in_flight=64,
            retry={"attempts": 2, "initial_backoff": "20ms", "max_backoff": "20ms"},
            circuit_breaker={"open_for": "300ms", "max_open": "1s"},
        )
        records = [(f"k{i % 97}".encode(), b"v") for i in range(n)]
        await asyncio.to_thread(produce_records, kafka, scenario.source, records)
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            await asyncio.to_thread(wait_for, lambda: service.count() >= n // 4, timeout=60, what="progress")
            service.down()
            down_at = service.count()
            await asyncio.sleep(outage)
            service.up()
            assert down_at < n, "the outage should start while input is left"
            await asyncio.to_thread(scenario.check, service.requests)
    finally:
        service.stop()


async def test_a_service_that_closes_idle_connections_at_once_costs_no_attempt(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory
) -> None:
    """Services close kept-alive connections after their own idle timeout (gunicorn: 2 s, Node: 5 s), and a call
    can go out on a connection in the very moment it closes. Here the timeout is 20 ms and the input trickles, so
    that race is frequent: with a single attempt per message, any call it failed would be dead-lettered."""
    scenario = scenario_factory(1)
    n = 150
    service = TestService(reply_with_id, keepalive_timeout=0.02).start()
    try:
        spec = scenario.spec(service.url, max_in_flight=4, retry={"attempts": 1})
        producer = kafka.producer(**{"linger.ms": 0})
        async with running(make_config(kafka.bootstrap, {"p": spec})) as sidecar:
            for i in range(n):  # a trickle: gaps of 0 to 30 ms, around the service's idle timeout
                producer.produce(scenario.source, key=f"k{i % 7}".encode(), value=b"v")
                assert await asyncio.to_thread(producer.flush, 10) == 0
                await asyncio.sleep(0.005 * (i % 7))
            await asyncio.to_thread(scenario.check, service.requests)
            retries = sidecar.pipelines["p"].stats.retries
    finally:
        service.stop()
    assert retries == 0
    connections = len({seen.peer for seen in service.requests()})
    assert connections > n // 4, f"the service closed few connections ({connections}): the race was not run"
