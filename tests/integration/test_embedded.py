"""``streamcar.serve`` embedded in a host program, against the real broker: the config given as a mapping, and the
logs going where docs/python.md says: into the host's logging when it set logging up, else streamcar's own lines
on stderr from the ``streamcar`` loggers only."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import streamcar
from streamcar import Event, PermanentCallError

from support import KafkaHandle, TopicFactory, committed, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration

TOKEN = "tok-Zr8-embedded-secret"


async def shout(event: Event) -> bytes:
    if event.value == b"bad":
        raise PermanentCallError(f"refused with token {TOKEN}")
    return (event.value or b"").upper()


def mapping(source: str, group: str, url: str, out: str, dlq: str) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": "${BOOT}"},
        "admin": {"listen": "127.0.0.1:0"},
        "pipelines": {
            "p": {
                "consume": {"topics": [source], "group": group},
                "call": {"url": url, "headers": {"Authorization": "Bearer ${TOKEN}"}},
                "commit_interval": "200ms",
                "publish": {"topic": out},
                "dead_letter": {"topic": dlq},
            }
        },
    }


async def test_serve_takes_a_mapping_and_logs_through_the_host_programs_logging(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, out, dlq = topic_factory(1), topic_factory(1), topic_factory(1)
    monkeypatch.setenv("BOOT", kafka.bootstrap)  # interpolated in a mapping as in a file
    monkeypatch.setenv("TOKEN", TOKEN)
    caplog.set_level(logging.INFO)  # the host set logging up: pytest's handler sits on the root logger
    stop = asyncio.Event()
    task = asyncio.create_task(
        streamcar.serve(mapping(source, group_factory(), f"python:{__name__}:shout", out, dlq), stop)
    )
    try:
        produce_records(kafka, source, [(b"a", b"hello"), (b"b", b"bad")])
        (reply,) = await asyncio.to_thread(read_topic, kafka, out, expect=1)
        (letter,) = await asyncio.to_thread(read_topic, kafka, dlq, expect=1)
        assert reply.value() == b"HELLO"
        assert letter.value() == b"bad"
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task

    ours = [record for record in caplog.records if record.name.split(".")[0] == "streamcar"]
    messages = [record.getMessage() for record in ours]
    assert "streamcar running 1 pipeline(s): p" in messages
    assert messages[-1] == "streamcar stopped"
    assert any(getattr(record, "event", None) == "dead-letter" for record in ours)
    assert not [message for message in messages if TOKEN in message]
    assert "streamcar running" not in capsys.readouterr().err  # the host's handlers wrote it, not one of ours
    assert logging.getLogger("streamcar").handlers == []


async def test_cancelling_serve_stops_its_pipelines_with_it_after_their_drain(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host's task group failing, or a timeout, cancels serve(): its pipelines must not run on without it."""
    source, out, dlq = topic_factory(1), topic_factory(1), topic_factory(1)
    monkeypatch.setenv("BOOT", kafka.bootstrap)
    monkeypatch.setenv("TOKEN", TOKEN)
    group = group_factory()
    task = asyncio.create_task(streamcar.serve(mapping(source, group, f"python:{__name__}:shout", out, dlq)))
    produce_records(kafka, source, [(b"a", b"one"), (b"b", b"two")])
    assert len(await asyncio.to_thread(read_topic, kafka, out, expect=2)) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(30):
            await task
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("pipeline-")] == []
    assert await asyncio.to_thread(committed, kafka, group) == {(source, 0): 2}  # it drained and committed


HOST_PROGRAM = """
import asyncio, json, logging, signal, sys

import streamcar


async def handle(event: streamcar.Event) -> bytes:
    return (event.value or b"").upper()


async def main() -> None:
    logging.getLogger("app").info("the host's own info line")  # no logging set up: Python drops it
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await streamcar.serve(json.loads(sys.argv[1]), stop)
    logging.getLogger("app").warning("the host's own warning")  # Python's last resort: the bare message


asyncio.run(main())
"""


def test_serve_in_a_program_without_logging_writes_streamcars_lines_to_stderr(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    source, out, dlq = topic_factory(1), topic_factory(1), topic_factory(1)
    program = tmp_path / "host.py"
    program.write_text(HOST_PROGRAM)
    log_file = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMCAR_")}
    env |= {"BOOT": kafka.bootstrap, "TOKEN": TOKEN}
    config = mapping(source, group_factory(), "python:__main__:handle", out, dlq)
    with log_file.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(program), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    try:
        produce_records(kafka, source, [(b"a", b"hello")])
        (reply,) = read_topic(kafka, out, expect=1)
        assert reply.value() == b"HELLO"
        wait_for(lambda: "streamcar running" in log_file.read_text(), timeout=30, what="the started line")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    text = log_file.read_text()
    lines = text.splitlines()
    assert code == 0, text
    assert any(line.endswith(" INFO streamcar: streamcar running 1 pipeline(s): p") for line in lines), text
    assert any(" INFO streamcar.kafka.consumer: " in line for line in lines), text  # the assignment, at INFO
    assert lines[-2].endswith(" INFO streamcar: streamcar stopped"), text
    assert lines[-1] == "the host's own warning"  # the host's loggers are as Python left them
    assert "the host's own info line" not in text
    assert TOKEN not in text
