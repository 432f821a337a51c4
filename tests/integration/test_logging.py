"""``streamcar run`` with JSON logs and a bearer token to the service: one JSON object per line, the notable
events named with their fields, librdkafka's own lines included, and the token never printed."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from streamcar.config import LogConfig

from service import Seen, TestService
from sidecar import SidecarProcess, make_config, pipeline
from support import KafkaHandle, TopicFactory, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration

TOKEN = "tok-7Hq2-Zx91-secret"


async def needs_the_token(seen: Seen) -> web.StreamResponse:
    if seen.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.Response(status=401, text="no or wrong token")
    if seen.body.startswith(b"bad"):
        # a careless service echoing the credential in its error: the error text ends up in a log line
        return web.Response(status=422, text=f"cannot take {seen.body.decode()} (caller token {TOKEN})")
    return web.Response(body=seen.body.upper())


def test_json_logs_name_each_notable_event_and_never_print_the_token(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    source, out, dlq = topic_factory(2), topic_factory(2), topic_factory(1)
    service = TestService(needs_the_token).start()
    spec = pipeline(
        source,
        group_factory(),
        service.url,
        publish=out,
        dead_letter=dlq,
        call={"url": service.url, "headers": {"Authorization": f"Bearer {TOKEN}"}},
    )
    # a deprecated setting: librdkafka warns (CONFWARN) when each client is made, a line of its own to route
    deprecated = {"topic.metadata.refresh.fast.cnt": 5}
    config = make_config(kafka.bootstrap, {"p": spec}, librdkafka=deprecated).model_copy(
        update={"log": LogConfig(format="json")}
    )
    sidecar = SidecarProcess(config, tmp_path).start()
    try:
        produce_records(kafka, source, [(f"k{i}".encode(), b"bad-%d" % i if i % 10 == 0 else b"ok") for i in range(20)])
        replies = read_topic(kafka, out, expect=18)
        letters = read_topic(kafka, dlq, expect=2)
        wait_for(
            lambda: sidecar.log_file.read_text().count('"event": "dead-letter"') == 2,
            timeout=10,
            what="the dead letters' log lines",
        )
        sidecar.signal(signal.SIGTERM)
        code = sidecar.wait(30)
    finally:
        sidecar.kill()
        service.stop()

    text = sidecar.log_file.read_text()
    assert code == 0, sidecar.log_tail()
    assert len(replies) == 18
    assert len(letters) == 2
    assert TOKEN not in text
    assert all(s.headers.get("Authorization") == f"Bearer {TOKEN}" for s in service.requests())
    lines = text.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object: nothing else on stderr
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    events = [entry.get("event") for entry in entries]
    for expected in ("started", "assigned", "dead-letter", "signal", "stopped"):
        assert expected in events, f"no {expected!r} event in {events}"
    assert events.index("started") < events.index("signal") < events.index("stopped")
    dead = [entry for entry in entries if entry.get("event") == "dead-letter"]
    assert {(d["pipeline"], d["topic"], d["kind"]) for d in dead} == {("p", source, "http-status")}
    sources = sorted(int(dict(m.headers() or [])["streamcar-source-offset"]) for m in letters)
    assert sorted(d["offset"] for d in dead) == sources
    assert all("(caller token ***)" in d["message"] for d in dead)
    librdkafka = [entry for entry in entries if entry["logger"] == "streamcar.librdkafka"]
    assert any("topic.metadata.refresh.fast.cnt" in entry["message"] for entry in librdkafka), librdkafka
