"""A pipeline whose service is an in-process Python handler (``python:module:function``) against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import streamcar
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


async def test_serve_embeds_the_engine_from_a_yaml_file(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``streamcar.serve`` is the library entry point: a YAML path in, the engine on the caller's loop."""
    source, out = topic_factory(1), topic_factory(1)
    config_file = tmp_path / "streamcar.yaml"
    config_file.write_text(
        "kafka: {bootstrap_servers: '${BOOT}'}\n"
        "pipelines:\n"
        f"  p:\n    consume: {{topics: [{source}], group: {group_factory()}}}\n"
        f"    call: {{url: 'python:{__name__}:upper'}}\n"
        f"    publish: {{topic: {out}}}\n"
    )
    monkeypatch.setenv("BOOT", kafka.bootstrap)
    stop = asyncio.Event()
    task = asyncio.create_task(streamcar.serve(config_file, stop))
    try:
        produce_records(kafka, source, [(b"a", b"hello")])
        (reply,) = await asyncio.to_thread(read_topic, kafka, out, expect=1)
        assert reply.value() == b"HELLO"
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task
