"""No loss when a second sidecar joins and leaves the group mid-run (a service outage: test_circuit_breaker)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from aiohttp import web

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration


async def reply_with_id(seen: Seen) -> web.StreamResponse:
    await asyncio.sleep(0.001)
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


async def test_member_joins_and_leaves_mid_run(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out = topic_factory(6), topic_factory(3)
    group = group_factory()
    n, max_in_flight = 12_000, 64
    service = TestService(reply_with_id).start()
    try:
        spec = pipeline(source, group, service.url, publish=out, max_in_flight=max_in_flight)
        config = make_config(kafka.bootstrap, {"p": spec})
        records = [(f"k{i % 101}".encode(), b"v") for i in range(n)]
        await asyncio.to_thread(produce_records, kafka, source, records[: n // 2])
        async with running(config) as first:
            await asyncio.to_thread(wait_for, lambda: service.count() >= 2000, timeout=60, what="progress")
            async with running(config, assigned_within=60) as second:
                one, two = first.pipelines["p"], second.pipelines["p"]
                # the second half arrives once both members hold partitions: each has its share to do, however
                # fast the first one got through the first half
                await asyncio.to_thread(produce_records, kafka, source, records[n // 2 :])
                await asyncio.to_thread(
                    wait_for,
                    lambda: bool(one.assigned) and bool(two.assigned) and two.stats.consumed >= 1000,
                    timeout=60,
                    what="the second member to take partitions and work",
                )
                assert set(one.assigned).isdisjoint(two.assigned)
                assert len(one.assigned) + len(two.assigned) == 6
            # the second member left: the first one gets everything back and finishes
            await asyncio.to_thread(
                wait_for, lambda: len(one.assigned) == 6, timeout=60, what="partitions back with the first member"
            )
            replies = await asyncio.to_thread(read_topic, kafka, out, expect=n, timeout=120)
    finally:
        service.stop()
    ids = Counter((m.value() or b"").decode() for m in replies)
    expected = {f"{source}-{s.partition}-{s.offset}" for s in service.requests()}
    assert len(expected) == n
    assert set(ids) == expected
    # a cooperative rebalance drains and commits before release: duplicates stay within what was in flight
    assert sum(ids.values()) - n <= 2 * max_in_flight
