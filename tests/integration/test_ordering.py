"""Per-key order with real concurrency, and retries that hold back only their own key."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from aiohttp import web

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, committed_total, produce_records, topic_offsets, wait_for

pytestmark = pytest.mark.integration


class Concurrency:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1


async def test_per_key_order_under_concurrency(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source = topic_factory(3)
    group = group_factory()
    gauge = Concurrency()
    rng = random.Random(7)

    async def handler(seen: Seen) -> web.StreamResponse:
        gauge.enter()
        try:
            await asyncio.sleep(rng.uniform(0, 0.005))
        finally:
            gauge.leave()
        return web.Response(status=204)

    service = TestService(handler).start()
    n, keys = 10_000, 50
    try:
        config = make_config(kafka.bootstrap, {"p": pipeline(source, group, service.url, max_in_flight=256)})
        async with running(config):
            records = [(f"key-{i % keys}".encode(), str(i).encode()) for i in range(n)]
            await asyncio.to_thread(produce_records, kafka, source, records)
            await asyncio.to_thread(
                wait_for, lambda: committed_total(kafka, group) == n, timeout=120, what="all 10,000 committed"
            )
    finally:
        service.stop()

    seen = service.requests()
    assert len({s.id for s in seen}) == n
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for s in seen:  # in arrival order at the service
        by_key[s.key].append(s.offset)
    assert len(by_key) == keys
    for key, offsets in by_key.items():
        assert offsets == sorted(set(offsets)), f"{key!r} arrived out of order"
    # different keys really ran side by side (50 keys, 256 in flight)
    assert gauge.peak >= 10, gauge.peak


async def test_retries_hold_back_only_their_key(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    """A key whose first message fails for a while waits; every other key keeps flowing meanwhile.

    The sick message fails until the 300 others have all been called (it used to fail 5 times, about 1.5 s of
    backoff, and a CI run at load average 25 took longer for the others). A partition held up by its retries would
    call none of them, and the sick message would run out of its 30 attempts."""
    source = topic_factory(1)  # one partition: the failing key shares it with everything else
    attempts: Counter[tuple[str, int, int]] = Counter()
    others: set[tuple[str, int, int]] = set()

    async def handler(seen: Seen) -> web.StreamResponse:
        attempts[seen.id] += 1
        if seen.key != b"sick":
            others.add(seen.id)
        elif seen.offset == 0 and len(others) < 300:
            return web.Response(status=503)
        return web.Response(status=204)

    service = TestService(handler).start()
    try:
        spec = pipeline(
            source,
            group_factory(),
            service.url,
            retry={"attempts": 30, "initial_backoff": "100ms", "max_backoff": "400ms"},
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            records = [(b"sick", b"0")] + [(f"k{i % 20}".encode(), b"x") for i in range(300)] + [(b"sick", b"1")]
            await asyncio.to_thread(produce_records, kafka, source, records)
            await asyncio.to_thread(
                wait_for,
                lambda: sum(1 for s in service.requests() if s.key == b"sick" and s.offset == 301) == 1,
                timeout=60,
                what="the sick key's second message",
            )
    finally:
        service.stop()

    seen = service.requests()
    sick_first_success = max(s.at for s in seen if s.key == b"sick" and s.offset == 0)
    sick_second = next(s.at for s in seen if s.key == b"sick" and s.offset == 301)
    others_done = max(s.at for s in seen if s.key != b"sick")
    # everybody else finished while the sick key was still being retried ...
    assert others_done < sick_first_success
    # ... and the sick key kept its order: its second message only after its first succeeded
    assert sick_second > sick_first_success
    assert attempts[(source, 0, 0)] >= 2


async def test_without_dead_letter_topic_an_exhausted_message_blocks_its_key_only(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source = topic_factory(1)
    group = group_factory()

    async def handler(seen: Seen) -> web.StreamResponse:
        if seen.key == b"poison":
            return web.Response(status=400, text="never")
        return web.Response(status=204)

    service = TestService(handler).start()
    try:
        spec = pipeline(source, group, service.url, retry={"attempts": 2, "max_backoff": "300ms"})
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            records = [(b"a", b"1"), (b"poison", b"2"), (b"b", b"3"), (b"poison", b"4"), (b"c", b"5")]
            await asyncio.to_thread(produce_records, kafka, source, records)
            await asyncio.to_thread(
                wait_for,
                lambda: sum(1 for s in service.requests() if s.key == b"poison" and s.offset == 1) >= 3,
                timeout=30,
                what="the poison message retried while blocked",
            )
            await asyncio.to_thread(
                wait_for, lambda: committed_total(kafka, group) == 1, timeout=10, what="commit up to the poison"
            )
    finally:
        service.stop()
    seen = service.requests()
    assert {s.offset for s in seen if s.key != b"poison"} == {0, 2, 4}  # other keys flowed
    assert all(s.offset == 1 for s in seen if s.key == b"poison")  # its key's next message waits behind it
    # the watermark stops at the poison message: nothing at or after it is committed, nothing is lost
    assert committed_total(kafka, group) == 1


async def test_every_offset_is_consumed_under_backpressure(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    """A fast service and a small max_in_flight: the consumer pauses and resumes all the time, skipping nothing."""
    source = topic_factory(3)
    group = group_factory()

    async def handler(seen: Seen) -> web.StreamResponse:
        return web.Response(status=204)

    service = TestService(handler).start()
    n = 20_000
    try:
        spec = pipeline(source, group, service.url, max_in_flight=32, ordering="none")
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            await asyncio.to_thread(produce_records, kafka, source, [(None, b"v")] * n)
            await asyncio.to_thread(
                wait_for, lambda: committed_total(kafka, group) == n, timeout=120, what="all committed"
            )
    finally:
        service.stop()
    seen = service.requests()
    assert {s.id for s in seen} == {(source, p, o) for p, o in topic_offsets(kafka, source)}
