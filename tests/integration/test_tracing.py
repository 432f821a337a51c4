"""Tracing against a real broker: ``streamcar run`` with ``tracing.enabled`` exports OTLP/HTTP spans to a
collector (a small receiver here) that continue each record's trace: process -> call -> publish, the service sees
the call span as its parent, and published replies and dead letters carry the publish span."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from streamcar.config import TracingConfig

from otlp import Collector
from service import Seen, TestService
from sidecar import SidecarProcess, make_config, pipeline
from support import KafkaHandle, TopicFactory, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def ids(headers: list[tuple[str, bytes]] | None) -> tuple[str, str]:
    """(trace id, parent span id) of a record's traceparent."""
    _, trace_id, span_id, _ = dict(headers or [])["traceparent"].decode().split("-")
    return trace_id, span_id


async def upper_or_reject(seen: Seen) -> web.StreamResponse:
    if seen.body == b"bad":
        return web.Response(status=422, text="rejected")
    return web.Response(body=seen.body.upper())


def test_spans_continue_the_records_trace_through_the_service_and_onto_what_is_published(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    source, out, dlq = topic_factory(1), topic_factory(1), topic_factory(1)
    collector = Collector().start()
    service = TestService(upper_or_reject).start()
    spec = pipeline(source, group_factory(), service.url, publish=out, dead_letter=dlq)
    tracing = TracingConfig(enabled=True, endpoint=collector.url, service_name="orders-sidecar")
    config = make_config(kafka.bootstrap, {"p": spec}).model_copy(update={"tracing": tracing})
    sidecar = SidecarProcess(config, tmp_path).start()
    traced: list[tuple[str, str | bytes | None]] = [("traceparent", f"00-{TRACE}-{PARENT}-01".encode())]
    try:
        produce_records(kafka, source, [(b"a", b"one", traced), (b"b", b"two", []), (b"c", b"bad", traced)])
        replies = read_topic(kafka, out, expect=2)
        (letter,) = read_topic(kafka, dlq, expect=1)
        sidecar.signal(signal.SIGTERM)  # the sidecar flushes its spans on the way out
        code = sidecar.wait(30)
        wait_for(lambda: len(collector.snapshot()) >= 9, timeout=15, what="3 messages x (process, call, publish)")
    finally:
        sidecar.kill()
        service.stop()
        collector.stop()

    assert code == 0, sidecar.log_tail()
    spans = collector.snapshot()
    by_id = {s.span_id: s for s in spans}
    process = {int(str(s.attributes["messaging.kafka.offset"])): s for s in spans if s.name == f"{source} process"}
    assert sorted(process) == [0, 1, 2]
    assert all(s.resource["service.name"] == "orders-sidecar" for s in spans)

    # offset 0 carried a traceparent: its spans join that trace, under the producer's span
    one = process[0]
    assert (one.trace_id, one.parent_id) == (TRACE, PARENT)
    assert one.kind == 5  # CONSUMER
    assert one.attributes["streamcar.result"] == "success"
    assert one.attributes["messaging.destination.name"] == source
    call = next(s for s in spans if s.name == f"{source} call" and s.parent_id == one.span_id)
    assert call.kind == 3  # CLIENT
    seen = {s.offset: s.headers.get("traceparent") for s in service.requests()}
    assert seen[0] == f"00-{TRACE}-{call.span_id}-01"  # the service's parent is the call span
    publish = next(s for s in spans if s.name == f"{out} publish" and s.parent_id == one.span_id)
    assert publish.kind == 4  # PRODUCER
    published = {ids(m.headers()) for m in replies}
    assert (TRACE, publish.span_id) in published

    # offset 1 had none: a new trace starts at its process span and reaches its reply just the same
    two = process[1]
    assert two.parent_id == ""
    assert two.trace_id != TRACE
    assert seen[1] is not None
    assert seen[1].split("-")[1] == two.trace_id
    two_publish = next(s for s in spans if s.name == f"{out} publish" and s.parent_id == two.span_id)
    assert (two.trace_id, two_publish.span_id) in published

    # offset 2 was rejected: its process span is an error and the dead letter carries the publish span
    bad = process[2]
    assert bad.error
    assert bad.attributes["streamcar.result"] == "dead-letter"
    assert by_id[next(s.span_id for s in spans if s.name == f"{source} call" and s.parent_id == bad.span_id)].error
    dead = next(s for s in spans if s.name == f"{dlq} publish" and s.parent_id == bad.span_id)
    assert dead.attributes["streamcar.dead_letter"] is True
    assert ids(letter.headers()) == (TRACE, dead.span_id)
