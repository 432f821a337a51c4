"""A pipeline whose service is an in-process Python handler (``python:module:function``) against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from streamcar import Event, PermanentCallError

from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration


async def upper(event: Event) -> bytes:
    if event.key == b"bad":
        raise PermanentCallError("bad key")
    return (event.value or b"").upper()


async def test_python_handler_replies_and_dead_letters(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq = topic_factory(3), topic_factory(3), topic_factory(1)
    url = f"python:{__name__}:upper"
    config = make_config(kafka.bootstrap, {"p": pipeline(source, group_factory(), url, publish=out, dead_letter=dlq)})
    records = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)] + [(b"bad", b"nope")]
    async with running(config):
        produce_records(kafka, source, records)
        replies = await asyncio.to_thread(read_topic, kafka, out, expect=20)
        letters = await asyncio.to_thread(read_topic, kafka, dlq, expect=1)

    assert sorted((m.key(), m.value()) for m in replies) == sorted(
        (f"k{i}".encode(), f"V{i}".encode()) for i in range(20)
    )
    assert len(letters) == 1
    letter = letters[0]
    assert letter.key() == b"bad"
    assert letter.value() == b"nope"
    headers = {name: value for name, value in letter.headers() or []}
    assert headers["streamcar-error-kind"] == b"exception"
    assert headers["streamcar-error"] == b"PermanentCallError: bad key"
    assert headers["streamcar-attempts"] == b"1"
