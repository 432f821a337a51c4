"""Poison messages mixed into normal traffic on shared keys: what can be processed is replied to, what cannot is
dead-lettered (original bytes kept), and the pipeline never stops: the traffic after each poison, on its key
too, flows.

| poison | outcome |
|---|---|
| non-UTF-8 key and value | processable: replied, the service gets the exact bytes |
| a value larger than the service accepts | the service answers 413: dead letter, kind ``http-status`` |
| a reply larger than the output topic's max.message.bytes | the broker refuses it for good: dead letter, ``publish``
  (a test of its own, with many replies in flight to the same output partition) |
| header garbage: empty name, duplicate names, binary and null values, a name with a space and a line break, a
  binary traceparent | processable: names and values travel percent-encoded |
| a content-type with a line break (header injection) | never sent as a header: dead letter |
| null value, null key, both null, empty value | processable: replied |
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest
from aiohttp import web

from invariants import Id, Verdict, read_all, reply_with_id
from scenario import Scenario, ScenarioFactory
from service import Seen, TestService
from sidecar import make_config, running
from support import RecordHeaders, produce_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SERVICE_LIMIT = 256 * 1024  # bytes of body the service accepts
REPLY_LIMIT = 32 * 1024  # the output topic's max.message.bytes
REPLY_TOPIC = {"max.message.bytes": str(REPLY_LIMIT)}
NON_UTF8_KEY, NON_UTF8_VALUE = b"\xff\xfe\x00k", b"\x80\x81\xfe\xff\x00\xc3\x28"
TOO_BIG = b"x" * (SERVICE_LIMIT + 1)
BIG_REPLY, INJECTION = b"please reply too large", b"content-type with a line break"
GARBAGE: RecordHeaders = [
    ("", b"empty name"),
    ("dup", b"1"),
    ("dup", b"2"),
    ("bin", b"\x00\xff\r\n"),
    ("none", None),
    ("sp ace\n", b"x"),
    ("traceparent", b"\xffnot-a-traceparent"),
]
Record = tuple[bytes | None, bytes | None, RecordHeaders]


async def handler(seen: Seen) -> web.StreamResponse:
    if len(seen.body) > SERVICE_LIMIT:
        return web.Response(status=413, text="payload too large")
    if seen.body.startswith(BIG_REPLY):
        return web.Response(body=os.urandom(4 * REPLY_LIMIT))  # incompressible: lz4 cannot shrink it to fit
    return await reply_with_id(seen)


async def through_the_pipeline(
    scenario: Scenario,
    records: list[Record],
    dead_letters: Callable[[dict[bytes | None, Id]], dict[Id, str | tuple[str, ...]]],
) -> tuple[Verdict, dict[bytes | None, Seen]]:
    """Run ``records`` through a sidecar and check the invariants; ``dead_letters`` picks, from the inputs' ids
    by value, which must be dead-lettered. Returns the verdict and the service's calls by value."""
    kafka, source = scenario.kafka, scenario.source
    service = TestService(handler).start()
    try:
        spec = scenario.spec(service.url, max_in_flight=32)
        await asyncio.to_thread(produce_records, kafka, source, records)
        at = {r.value: r.id for r in await asyncio.to_thread(read_all, kafka, source)}
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            verdict = await asyncio.to_thread(scenario.check, service.requests, dead_letters=dead_letters(at))
    finally:
        service.stop()
    by_id = {s.id: s for s in service.requests()}
    return verdict, {value: by_id[ident] for value, ident in at.items() if ident in by_id}


def traffic(name: str, count: int, keys: int = 7) -> list[Record]:
    return [(f"k{i % keys}".encode(), f"{name} {i}".encode(), []) for i in range(count)]


async def test_poison_messages_reach_the_dead_letter_topic_and_traffic_flows(
    scenario_factory: ScenarioFactory,
) -> None:
    poisons: list[Record] = [
        (NON_UTF8_KEY, NON_UTF8_VALUE, []),
        (b"k1", TOO_BIG, []),
        (b"k3", b"garbage headers", GARBAGE),
        (b"k4", INJECTION, [("content-type", b"text/plain\r\nX-Injected: yes")]),
        (b"k5", None, []),
        (None, b"null key", []),
        (None, None, []),
        (b"k6", b"", []),
    ]
    normal = 300
    records = [*traffic("before", normal), *poisons, *traffic("after", normal)]
    verdict, calls = await through_the_pipeline(
        scenario_factory(3, out_config=REPLY_TOPIC),
        records,
        # a header value that cannot be sent is retried as a caller failure before it is dead-lettered
        lambda at: {at[TOO_BIG]: "http-status", at[INJECTION]: "rejected"},
    )
    assert verdict.replies.total() == len(records) - 2
    assert (calls[NON_UTF8_VALUE].key, calls[NON_UTF8_VALUE].body) == (NON_UTF8_KEY, NON_UTF8_VALUE)
    garbage = calls[b"garbage headers"].headers
    assert garbage["Kafka-Header-"] == "empty%20name"
    assert garbage["Kafka-Header-bin"] == "%00%FF%0D%0A"
    assert garbage["Kafka-Header-none"] == ""
    assert garbage["Kafka-Header-sp%20ace%0A"] == "x"
    assert INJECTION not in calls  # never sent: no header injection either


async def test_a_reply_too_large_for_the_output_topic_is_dead_lettered_alone(
    scenario_factory: ScenarioFactory,
) -> None:
    # one output partition and many keys: the oversized replies share produce batches with normal ones
    records = traffic("normal", 400, keys=50)
    for i in range(0, 400, 80):
        records.insert(i, (f"k{i}".encode(), BIG_REPLY + b" %d" % i, []))
    big = [r[1] for r in records if (r[1] or b"").startswith(BIG_REPLY)]
    verdict, _ = await through_the_pipeline(
        scenario_factory(3, out_partitions=1, out_config=REPLY_TOPIC),
        records,
        lambda at: dict.fromkeys((at[v] for v in big), "publish"),
    )
    for (letter,) in verdict.dead_letters.values():
        assert b"too large" in (letter.header("streamcar-error") or b"").lower()
