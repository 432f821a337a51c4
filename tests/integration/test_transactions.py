"""The transactional producer on the real broker: commits, aborts, and a fatal fencing error that replaces the
producer rather than ending the pipeline."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streamcar.kafka.transactions import Aborted, TransactionalProducer

from invariants import read_all
from support import KafkaHandle, TopicFactory

pytestmark = [pytest.mark.integration]


def producer(kafka: KafkaHandle, transactional_id: str) -> TransactionalProducer:
    config = {"bootstrap.servers": kafka.bootstrap, "transaction.timeout.ms": 10000}
    return TransactionalProducer(config, asyncio.get_running_loop(), transactional_id)


async def test_a_fenced_producer_is_replaced_and_only_committed_records_are_visible(
    kafka: KafkaHandle, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1)
    tid = f"test-{uuid.uuid4().hex}"
    first, second = producer(kafka, tid), producer(kafka, tid)
    try:
        await first.start()
        await first.send(topic, b"committed", None)
        await first.commit({}, None)
        await first.send(topic, b"fenced", None)
        await second.start()  # same id: fences the first, aborting its open transaction
        with pytest.raises(Aborted) as refused:
            await first.commit({}, None)
        await first.abort(refused.value)  # fatal: one line, and a new producer under the same id
        assert first.status()["aborted"] == 1
        await first.send(topic, b"after", None)
        await first.commit({}, None)
        assert first.status()["committed"] == 2
        values = [r.value for r in await asyncio.to_thread(read_all, kafka, topic)]
        assert values == [b"committed", b"after"]
    finally:
        await first.close(5)
        await second.close(5)
