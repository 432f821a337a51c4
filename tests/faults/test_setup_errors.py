"""A broken setup is neither a sick service nor poison (issue cases d, on the real broker).

* (d) a typo in the call URL's path: every call is answered 404. A few messages are dead-lettered (each could be
  poison), then the pipeline pauses with the refusal named on /readyz and /status, instead of draining the topic
  into the dead-letter topic. Restarted with the right URL, the sidecar gives every input its outcome.
* (e) the publish topic does not exist (the broker would auto-create it): it is a named problem on /readyz, in one
  log line, never created by the broker with one partition; nothing is committed past the replies that wait, and
  SIGTERM still ends the sidecar within shutdown_timeout. With ``publish.create_missing`` the publish and
  dead-letter topics are created with the input topic's partition count.
* (g) the input topic does not exist yet: a named problem on /readyz until it is created, then it flows.

Each ends with the invariant check on the topics: every input has its outcome, per-key order held.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import pytest
from aiohttp import web

from streamcar.engine.breaker import REFUSALS

from invariants import SOURCE_HEADERS, Id
from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, committed, create_topic, produce_records, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def echo_id(seen: Seen) -> web.StreamResponse:
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


def test_a_wrong_path_pauses_after_a_few_dead_letters_instead_of_draining_the_topic(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(3)
    records = [(f"k{i % 50}".encode(), str(i).encode()) for i in range(2000)]
    produce_records(kafka, scenario.source, records)
    service = TestService(echo_id).start()
    typo = service.url.replace("/handle", "/typo")
    spec = scenario.spec(typo, max_in_flight=64, circuit_breaker={"open_for": "200ms", "max_open": "400ms"})
    (tmp_path / "wrong").mkdir()
    (tmp_path / "fixed").mkdir()
    wrong = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path / "wrong").start()
    try:
        expected = "the service rejects everything: HTTP 404 on POST /typo"

        def paused() -> bool:
            code, body = wrong.get("/readyz")
            return code == 503 and any(expected in problem for problem in json.loads(body)["problems"])

        wait_for(paused, timeout=60, what="/readyz to name the reject storm")
        (pipeline,) = wrong.status()["pipelines"]
        assert pipeline["circuit_reason"] == expected
        calls = pipeline["calls"]
        wait_for(lambda: wrong.status()["pipelines"][0]["calls"] >= calls + 5, timeout=30, what="refused probes")
        wrong.signal(signal.SIGTERM)
        assert wrong.wait(30) == 0
    finally:
        wrong.kill()
    letters = read_topic(kafka, scenario.dlq, expect=REFUSALS - 1, timeout=10)
    assert len(letters) <= REFUSALS - 1, f"{len(letters)} dead-lettered by a typo"
    lettered: dict[Id, str] = {}
    for letter in letters:
        headers = {name: (value or b"").decode() for name, value in letter.headers()}
        assert headers["streamcar-error-kind"] == "http-status"
        source = tuple(headers[name] for name in SOURCE_HEADERS)
        lettered[(source[0], int(source[1]), int(source[2]))] = "http-status"
    assert sum("circuit open" in line for line in wrong.log_lines()) == 1  # one line, not one per record

    fixed = SidecarProcess(make_config(kafka.bootstrap, {"p": scenario.spec(service.url)}), tmp_path / "fixed").start()
    try:
        scenario.check(service.requests, dead_letters=lettered)  # those few dead letters, and a reply for the rest
    finally:
        fixed.kill()
        service.stop()


def _not_ready_for(process: SidecarProcess, expected: str) -> None:
    def named() -> bool:
        code, body = process.get("/readyz")
        return code == 503 and any(expected in problem for problem in json.loads(body)["problems"])

    wait_for(named, timeout=60, what=f"/readyz to say {expected!r}")


def _partitions(kafka: KafkaHandle, topic: str) -> int | None:
    """The topic's partition count; None when it does not exist (asked through a consumer: no auto-creation)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "probe"})
    try:
        metadata = consumer.list_topics(topic=topic, timeout=10).topics.get(topic)
    finally:
        consumer.close()
    return None if metadata is None or metadata.error is not None else len(metadata.partitions)


def test_a_missing_publish_topic_is_named_and_waited_for_and_nothing_is_committed_past_its_replies(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = dataclasses.replace(scenario_factory(3), out=f"missing-{time.monotonic_ns()}")
    records = [(f"k{i % 40}".encode(), str(i).encode()) for i in range(600)]
    produce_records(kafka, scenario.source, records)
    service = TestService(echo_id).start()
    (tmp_path / "first").mkdir()
    (tmp_path / "again").mkdir()
    spec = scenario.spec(service.url, max_in_flight=32, shutdown_timeout="3s")
    first = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path / "first").start()
    try:
        _not_ready_for(first, f"publish topic {scenario.out!r} does not exist")
        (pipeline,) = first.status()["pipelines"]
        assert pipeline["topic_problems"] == [f"publish topic {scenario.out!r} does not exist"]
        wait_for(lambda: len(service.requests()) >= 32, timeout=30, what="replies waiting for the topic")
        stopping = time.monotonic()
        first.signal(signal.SIGTERM)
        assert first.wait(3 + 5 + 5) == 0  # shutdown_timeout, the stop grace, and this machine's slack
        print(f"SIGTERM to exit: {time.monotonic() - stopping:.1f}s")
    finally:
        first.kill()
    assert committed(kafka, scenario.group) in ({}, {(scenario.source, p): 0 for p in range(3)})
    assert _partitions(kafka, scenario.out) is None  # not created by the broker with its defaults
    told = [line for line in first.log_lines() if "does not exist" in line]
    assert 1 <= len(told) <= 2, told  # one line per condition per interval, not one per record

    create_topic(kafka, scenario.out, 3, 1)
    again = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path / "again").start()
    try:
        scenario.check(service.requests, crashes=True)  # a restart calls again what it had called
        assert again.status()["pipelines"][0]["topic_problems"] == []
    finally:
        again.kill()
        service.stop()


def test_with_create_missing_the_publish_and_dead_letter_topics_are_created_like_the_input(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    stamp = time.monotonic_ns()
    scenario = dataclasses.replace(scenario_factory(4), out=f"created-{stamp}", dlq=f"created-dlq-{stamp}")
    produce_records(kafka, scenario.source, [(f"k{i % 40}".encode(), str(i).encode()) for i in range(400)])
    service = TestService(echo_id).start()
    spec = scenario.spec(service.url)
    spec["publish"]["create_missing"] = True
    process = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path).start()
    try:
        scenario.check(service.requests)
        assert _partitions(kafka, scenario.out) == 4
        assert _partitions(kafka, scenario.dlq) == 4
        assert sum("created publish topic" in line for line in process.log_lines()) == 1
    finally:
        process.kill()
        service.stop()


def test_a_missing_input_topic_is_named_until_it_is_created(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = dataclasses.replace(scenario_factory(3), source=f"later-{time.monotonic_ns()}")
    service = TestService(echo_id).start()
    process = SidecarProcess(make_config(kafka.bootstrap, {"p": scenario.spec(service.url)}), tmp_path).start()
    try:
        _not_ready_for(process, f"input topic {scenario.source!r} does not exist")
        create_topic(kafka, scenario.source, 3, 1)
        produce_records(kafka, scenario.source, [(f"k{i % 40}".encode(), str(i).encode()) for i in range(300)])
        scenario.check(service.requests)
        wait_for(lambda: process.get("/readyz")[0] == 200, timeout=30, what="/readyz to be 200 again")
    finally:
        process.kill()
        service.stop()


def test_a_missing_routed_topic_is_named_within_seconds_and_its_replies_wait(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    """Issue 30: a reply routed to a topic ``publish.allow`` lists, which does not exist yet, was named only after
    ~35 s (when the producer gave up on the topic's metadata)."""
    scenario = scenario_factory(2)
    routed = f"{scenario.out}-routed"

    async def route_odd_keys(seen: Seen) -> web.StreamResponse:
        headers = {"Kafka-Topic": routed} if int(seen.body) % 2 else {}
        return web.Response(body=seen.body, headers=headers)

    records = [(f"k{i % 20}".encode(), str(i).encode()) for i in range(200)]
    service = TestService(route_odd_keys).start()
    spec = scenario.spec(service.url, max_in_flight=16)
    spec["publish"]["allow"] = [f"{scenario.out}-*"]
    process = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path).start()
    try:
        wait_for(lambda: process.get("/readyz")[0] == 200, timeout=60, what="the sidecar ready")
        produce_records(kafka, scenario.source, records)
        wait_for(lambda: service.count() > 0, timeout=30, what="a first call")
        routing = time.monotonic()
        _not_ready_for(process, f"routed topic {routed!r} does not exist")
        named = time.monotonic() - routing
        print(f"missing routed topic named {named:.1f}s after the first call")
        assert named < 10, named  # the watch looks every 2 s
        assert _partitions(kafka, routed) is None  # not created by the broker with its defaults
        create_topic(kafka, routed, 2, 1)
        wait_for(lambda: process.get("/readyz")[0] == 200, timeout=60, what="/readyz to be 200 again")
        wait_for(
            lambda: len(read_topic(kafka, routed, expect=0, timeout=0)) >= 100, timeout=90, what="the routed replies"
        )
        wait_for(
            lambda: len(read_topic(kafka, scenario.out, expect=0, timeout=0)) >= 100, timeout=60, what="the others"
        )
        replies = read_topic(kafka, routed, expect=0, timeout=0) + read_topic(kafka, scenario.out, expect=0, timeout=0)
        assert sorted(int(m.value() or b"") for m in replies) == list(range(200))  # each once, nothing lost
        assert {int(m.value() or b"") % 2 for m in read_topic(kafka, routed, expect=0, timeout=0)} == {1}
        assert sum("routed topic" in line and "does not exist" in line for line in process.log_lines()) == 1
    finally:
        process.kill()
        service.stop()
