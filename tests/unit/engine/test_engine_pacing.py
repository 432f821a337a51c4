"""Pacing on the engine's twin: ``max_in_flight: auto`` against a service with a capacity knee, backing off on
overload answers with retries paced too, and ``rate_limit`` holding; per-key order and every outcome each time."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from twin import TOPIC, Rig, ScriptedCaller, pipeline_config, record

from streamcar.event import Event, Reply

TP0, TP1 = (TOPIC, 0), (TOPIC, 1)


def _logs(count: int, keys: int) -> dict[tuple[str, int], list]:  # type: ignore[type-arg]
    return {(TOPIC, p): [record(p, i, b"k%d" % (i % keys), b"%d-%d" % (p, i)) for i in range(count)] for p in (0, 1)}


def _in_key_order(caller: ScriptedCaller) -> bool:
    lanes: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
    for event in caller.called():
        lanes[(event.partition, event.key)].append(event.offset)
    return all(offsets == sorted(offsets) for offsets in lanes.values())


class Knee:
    """``capacity`` calls served at once, ``service`` seconds each; the rest wait inside the service."""

    def __init__(self, capacity: int, service: float) -> None:
        self._servers = asyncio.Semaphore(capacity)
        self.service = service

    async def __call__(self, event: Event, attempt: int) -> Reply:
        async with self._servers:
            await asyncio.sleep(self.service)
        return Reply.success(event.value)


async def test_auto_settles_near_the_knee_instead_of_queueing_max_calls_in_the_service() -> None:
    caller = ScriptedCaller(Knee(capacity=8, service=0.005))
    config = pipeline_config(max_in_flight={"auto": {"min": 2, "max": 256, "initial": 16}}, ordering="none")
    async with Rig(_logs(2000, keys=500), caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 4000, "every reply", within=60)
        limit = rig.pipeline.stats.concurrency_limit
        status = rig.pipeline.status()
    assert limit is not None
    assert 2 <= limit <= 64, limit  # near the knee (8), far from max (256)
    assert caller.most_in_flight <= 128
    assert status["concurrency_limit"] == limit
    assert status["max_in_flight"] == "auto"


async def test_overload_answers_back_the_limit_off_and_their_retries_wait_their_turn() -> None:
    rejected: set[tuple[int, int]] = set()

    def busy(event: Event, attempt: int) -> Reply:
        if event.offset % 3 == 0 and attempt == 1:
            rejected.add((event.partition, event.offset))
            return Reply.retry(error="HTTP 429", kind="http-status", overload=True)
        return Reply.success(event.value)

    caller = ScriptedCaller(busy, delay=0.002)
    config = pipeline_config(max_in_flight={"auto": {"min": 2, "max": 64, "initial": 32}})
    async with Rig(_logs(600, keys=40), caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 1200, "every reply", within=60)
        await rig.until(lambda: rig.committed(TP0) == 600 and rig.committed(TP1) == 600, "the commits")
        limit = rig.pipeline.stats.concurrency_limit
    assert limit is not None
    assert limit < 32  # a third of the first calls said 429
    assert len(rejected) == 400
    assert len(caller.called()) == 1200 + 400  # each rejected message called once more, no more
    assert _in_key_order(caller)
    assert rig.out("dlq") == []


async def test_the_rate_limit_holds_and_every_message_gets_its_outcome() -> None:
    starts: list[float] = []

    def stamped(event: Event, attempt: int) -> Reply:
        starts.append(time.monotonic())
        return Reply.success(event.value)

    caller = ScriptedCaller(stamped)
    config = pipeline_config(rate_limit={"rate": "200/s", "burst": 10}, max_in_flight=64)
    async with Rig(_logs(150, keys=30), caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 300, "every reply", within=30)
    span = starts[-1] - starts[0]
    assert span >= (300 - 10) / 200 * 0.95  # no faster than the rate, after the burst
    assert span <= (300 - 10) / 200 * 1.5  # and not much slower: the bucket's refill wakes dispatch
    window = 0.5
    busiest = max(sum(1 for t in starts if s <= t < s + window) for s in starts)
    assert busiest <= 200 * window + 10 + 1
    assert _in_key_order(caller)


async def test_with_batch_delivery_the_adaptive_limit_counts_messages_and_order_holds() -> None:
    caller = ScriptedCaller(Knee(capacity=4, service=0.005))
    config = pipeline_config(
        max_in_flight={"auto": {"min": 10, "max": 200, "initial": 40}},
        call={"batch": {"max_messages": 10, "max_wait": "2ms"}},
    )
    async with Rig(_logs(500, keys=50), caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 1000, "every reply", within=60)
        await rig.until(lambda: rig.committed(TP0) == 500 and rig.committed(TP1) == 500, "the commits")
        limit = rig.pipeline.stats.concurrency_limit
    assert limit is not None
    assert 10 <= limit <= 200
    assert max(len(call) for call in caller.calls) <= 10
    assert caller.most_in_flight <= 200
    assert _in_key_order(caller)
