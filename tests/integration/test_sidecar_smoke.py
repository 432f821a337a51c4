from __future__ import annotations

from collections.abc import Callable

import pytest

from service import TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration


async def test_replies_are_published(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out = topic_factory(3), topic_factory(3)
    service = TestService().start()
    try:
        config = make_config(kafka.bootstrap, {"p": pipeline(source, group_factory(), service.url, publish=out)})
        async with running(config):
            produce_records(kafka, source, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(100)])
            import asyncio

            replies = await asyncio.to_thread(read_topic, kafka, out, expect=100)
        assert sorted((m.value() or b"").decode() for m in replies) == sorted(f"V{i}" for i in range(100))
    finally:
        service.stop()
