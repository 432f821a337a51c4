"""The engine on its in-memory twin (no broker): the circuit breaker, a revoke mid-flight, a source that ends,
a log that restarts, publishes the broker refuses."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import Message
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from twin import TOPIC, Rig, ScriptedCaller, echo, pipeline_config, record

from streamcar.engine.breaker import State
from streamcar.engine.source import RangeSource
from streamcar.engine.tracing import Tracing
from streamcar.event import Event, Reply
from streamcar.kafka.records import CommitPoint

TP0, TP1 = (TOPIC, 0), (TOPIC, 1)


def log(partition: int, count: int, keys: int = 10) -> list:  # type: ignore[type-arg]
    return [record(partition, i, b"k%d" % (i % keys), b"%d-%d" % (partition, i)) for i in range(count)]


async def test_the_circuit_opens_on_an_outage_pauses_consumption_probes_and_closes() -> None:
    down = asyncio.Event()
    down.set()

    def answer(event: Event, attempt: int) -> Reply:
        if down.is_set():
            return Reply.retry(error="connection refused", kind="connection")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    config = pipeline_config(
        circuit_breaker={"open_for": "20ms", "max_open": "40ms"}, retry={"attempts": 2, "initial_backoff": "1ms"}
    )
    async with Rig({TP0: log(0, 30)}, caller, config) as rig:
        breaker = rig.pipeline._breaker
        await rig.until(lambda: breaker.state is not State.CLOSED, "the circuit to open")
        assert rig.consumer is not None
        assert rig.consumer.paused  # consumption paused while the service is down
        calls = len(caller.calls)
        await asyncio.sleep(0.1)  # a few probe rounds: each lets only `probes` calls through
        assert len(caller.calls) - calls <= 3 * 4
        down.clear()
        await rig.until(lambda: breaker.state is State.CLOSED, "the circuit to close")
        await rig.until(lambda: len(rig.out()) == 30, "every reply")
        assert not rig.consumer.paused
    assert rig.out("dlq") == []  # attempts that failed while the circuit was open did not count
    assert rig.pipeline.circuit_opened == 1


async def test_a_revoke_mid_flight_waits_for_the_partitions_calls_and_commits_their_watermark() -> None:
    gate = asyncio.Event()

    async def held(event: Event, attempt: int) -> Reply:
        if event.partition == 0 and event.offset >= 5:
            await gate.wait()
        return Reply.success(event.value)

    caller = ScriptedCaller(held)
    config = pipeline_config(shutdown_timeout="50ms")  # how long a revoke waits for the partition's calls
    async with Rig({TP0: log(0, 20), TP1: log(1, 20)}, caller, config) as rig:
        await rig.until(lambda: len(rig.out()) >= 25, "partition 1, and partition 0 up to offset 5")
        assert rig.consumer is not None
        final = await rig.consumer.revoke([TP0])  # its calls past offset 5 still hang: abandoned after 50 ms
        assert final == {TP0: CommitPoint(5)}  # nothing done above 5 either
        assert rig.pipeline.assigned == [TP1]
        gate.set()  # the abandoned calls answer now: nothing of them may count any more
        await asyncio.sleep(0.05)
        assert rig.committed(TP0) == 5
        await rig.until(lambda: rig.committed(TP1) == 20, "partition 1 committed to its end")


async def test_a_range_source_ends_the_run_once_everything_in_it_is_done() -> None:
    caller = ScriptedCaller(echo)
    ranges = {TP0: (5, 15), TP1: (0, 0)}  # an empty range needs nothing
    rig = Rig({TP0: log(0, 30), TP1: log(1, 30)}, caller, source=RangeSource(ranges))
    await asyncio.wait_for(rig.pipeline.run(asyncio.Event()), 5)  # no stop: it ends by itself
    assert sorted(e.offset for e in caller.called()) == list(range(5, 15))
    assert rig.consumer is not None
    assert rig.consumer.commits == []  # a replay commits nothing
    assert rig.pipeline.replay_progress() == (10, 10)


async def test_offsets_that_go_back_are_read_as_a_new_log() -> None:
    caller = ScriptedCaller(echo)
    async with Rig({TP0: log(0, 20)}, caller) as rig:
        await rig.until(lambda: rig.committed(TP0) == 20, "the old log committed")
        assert rig.consumer is not None
        new = [record(0, i, b"k%d" % i, b"new-%d" % i) for i in range(8)]  # the topic was created again
        rig.consumer.append(TP0, new)
        await rig.until(lambda: len([v for v in rig.out() if v.startswith(b"new")]) == 8, "the new log")
        await rig.until(lambda: rig.committed(TP0) == 8, "the commit following the new log")
    assert rig.pipeline.stats.recent()[0]["name"] == "log-restarted"


async def test_a_reply_the_broker_refuses_for_good_is_dead_lettered_and_the_rest_flows() -> None:
    rig = Rig({TP0: log(0, 10)}, ScriptedCaller(echo))
    rig.producer.refuse["out"] = RdKafkaError(RdKafkaError.POLICY_VIOLATION)
    async with rig:
        await rig.until(lambda: len(rig.producer.sent["dlq"]) == 10, "the dead letters")
        await rig.until(lambda: rig.committed(TP0) == 10, "the commit")
    kinds = {dict(headers)["streamcar-error-kind"] for _, _, headers in rig.producer.sent["dlq"]}
    assert kinds == {b"publish"}


async def test_a_topic_we_may_not_write_is_a_named_problem_and_its_records_wait() -> None:
    """Not authorized to write the publish topic is the setup, true of every reply: dead-lettering each would
    drain the input. The replies wait, nothing is committed past them, and the topic is named until it takes
    records again."""
    rig = Rig({TP0: log(0, 10)}, ScriptedCaller(echo))
    rig.producer.refuse["out"] = RdKafkaError(RdKafkaError.TOPIC_AUTHORIZATION_FAILED)
    async with rig:
        await rig.until(lambda: rig.pipeline.stats.publish_errors["out"] >= 20, "records refused again and again")
        assert rig.out("dlq") == []
        assert not rig.committed(TP0)
        [problem] = rig.pipeline.topic_problems
        assert problem.startswith("topic 'out' does not take records: ")
        del rig.producer.refuse["out"]  # the ACL was granted
        await rig.until(lambda: rig.committed(TP0) == 10, "the commit")
        assert rig.pipeline.topic_problems == []
    assert len(rig.out()) == 10


async def test_stopping_commits_what_is_done_and_abandons_the_rest_within_the_timeout() -> None:
    hang = asyncio.Event()

    async def answer(event: Event, attempt: int) -> Reply:
        if event.offset == 7:
            await hang.wait()  # never set: a call that does not end
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    config = pipeline_config(shutdown_timeout="30ms", ordering="partition")
    loop = asyncio.get_running_loop()
    async with Rig({TP0: log(0, 20)}, caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 7, "up to the call that hangs")
        started = loop.time()
    assert loop.time() - started < 1.0  # shutdown_timeout, plus the stop grace's short steps on a twin
    assert rig.committed(TP0) == 7
    assert rig.producer.closed


async def test_a_reply_goes_to_the_topic_it_names_when_allowed_and_is_dead_lettered_when_not() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        where = {0: None, 1: "review-big", 2: "elsewhere", 3: "bad topic"}[event.offset % 4]
        return Reply.success(event.value, topic=where, headers={"stage": "scored"})

    records = [
        Message(
            topic=TOPIC,
            partition=0,
            offset=i,
            key=b"k%d" % i,
            value=b"%d" % i,
            headers=[("origin", b"acc"), ("stage", b"raw"), ("streamcar-error", b"old")],
            timestamp=(1, i),
        )
        for i in range(8)
    ]
    config = pipeline_config(publish={"topic": "out", "allow": ["review-*"]})
    async with Rig({TP0: records}, ScriptedCaller(answer), config) as rig:
        await rig.until(lambda: rig.committed(TP0) == 8, "the commit")
    assert rig.out() == [b"0", b"4"]
    assert rig.out("review-big") == [b"1", b"5"]
    for _, _, headers in rig.producer.sent["out"] + rig.producer.sent["review-big"]:
        assert list(headers) == [("stage", b"scored"), ("origin", b"acc")]  # forwarded, the reply's own first
    letters = {value or b"": dict(headers) for _, value, headers in rig.producer.sent["dlq"]}
    assert sorted(letters) == [b"2", b"3", b"6", b"7"]
    assert {h["streamcar-error-kind"] for h in letters.values()} == {b"route"}
    assert b"'elsewhere', which publish.allow does not list" in (letters[b"2"]["streamcar-error"] or b"")
    assert b"not a valid topic name" in (letters[b"3"]["streamcar-error"] or b"")


async def test_publish_headers_none_keeps_only_the_replys_own() -> None:
    records = [Message(topic=TOPIC, partition=0, offset=0, key=b"k", value=b"v", headers=[("origin", b"acc")])]
    config = pipeline_config(publish={"topic": "out", "headers": "none"})
    async with Rig({TP0: records}, ScriptedCaller(echo), config) as rig:
        await rig.until(lambda: rig.committed(TP0) == 1, "the commit")
    [(_, _, headers)] = rig.producer.sent["out"]
    assert list(headers) == []


async def test_traced_messages_end_their_spans_with_their_outcome() -> None:
    """Each message's "process" span ends with how it ended (the tracing room runs on every message done: a name
    it needs at run time only under TYPE_CHECKING failed every traced pipeline, which no twin test had run)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("twin"), pipeline="p", group="g", target="python:twin:handler")

    def answer(event: Event, attempt: int) -> Reply:
        return Reply.dead_letter("no") if event.value == b"bad" else Reply.success(event.value)

    logs = {TP0: [record(0, 0, b"a", b"good"), record(0, 1, b"b", b"bad")]}
    async with Rig(logs, ScriptedCaller(answer), tracing=tracing) as rig:
        await rig.until(lambda: rig.committed(TP0) == 2, "the commit")
    results = sorted(
        str(span.attributes.get("streamcar.result"))
        for span in exporter.get_finished_spans()
        if span.attributes is not None and "streamcar.result" in span.attributes
    )
    assert results == ["dead-letter", "success"]
