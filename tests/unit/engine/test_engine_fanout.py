"""Fan-out on the twin: a reply of zero or more records, each to its own topic; the input is done once all are
acknowledged, a key's inputs publish their records in order, and a record that cannot go dead-letters the input
before any is sent."""

from __future__ import annotations

from collections import defaultdict

from confluent_kafka import KafkaError as RdKafkaError
from twin import TOPIC, Rig, ScriptedCaller, pipeline_config, record

from streamcar.engine.inflight import FANOUT_PER_SLOT, InFlight
from streamcar.event import MAX_FANOUT, Event, Record, Reply

TP0 = (TOPIC, 0)


def items(event: Event, attempt: int) -> Reply:
    """Input ``n`` (its value) fans out to ``n % 4`` records: 0, 1, 2 or 3, the odd ones to ``review``."""
    n = int(event.value or b"0")
    made = [Record(b"%d.%d" % (n, i), topic="review" if i % 2 else None) for i in range(n % 4)]
    return Reply.records(made)


async def test_each_input_publishes_its_records_in_order_per_key_and_is_done_once_all_are_acknowledged() -> None:
    logs = {TP0: [record(0, i, b"k%d" % (i % 3), b"%d" % i) for i in range(40)]}
    config = pipeline_config(publish={"topic": "out", "allow": ["review"]}, max_in_flight=8)
    async with Rig(logs, ScriptedCaller(items, delay=0.001), config) as rig:
        await rig.until(lambda: rig.committed(TP0) == 40, "the commit")
    expected = {"out": [], "review": []}  # type: dict[str, list[bytes]]
    for n in range(40):
        for i in range(n % 4):
            expected["review" if i % 2 else "out"].append(b"%d.%d" % (n, i))
    for topic in ("out", "review"):
        assert sorted(rig.out(topic)) == sorted(expected[topic])  # each once, none for the 0-record inputs
        by_key: dict[bytes | None, list[int]] = defaultdict(list)
        for key, value, _ in rig.producer.sent[topic]:
            by_key[key].append(int((value or b"").split(b".")[0]))
        for seq in by_key.values():
            assert seq == sorted(seq)  # a key's inputs publish their records in offset order
    assert rig.pipeline.stats.published == sum(n % 4 for n in range(40))


async def test_a_record_that_may_not_go_dead_letters_the_input_and_none_of_its_records_is_published() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        return Reply.records([Record(b"fine"), Record(b"elsewhere", topic="nowhere"), Record(b"x" * 1_100_000)])

    async with Rig({TP0: [record(0, 0, b"k", b"in")]}, ScriptedCaller(answer)) as rig:
        await rig.until(lambda: rig.committed(TP0) == 1, "the commit")
    assert rig.out() == []
    [(_, _, headers)] = rig.producer.sent["dlq"]
    assert dict(headers)["streamcar-error-kind"] == b"route"
    assert b"record 2 of 3" in (dict(headers)["streamcar-error"] or b"")


async def test_a_record_too_large_dead_letters_the_input_before_any_is_sent() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        return Reply.records([Record(b"fine"), Record(b"x" * 1_100_000)])

    async with Rig({TP0: [record(0, 0, b"k", b"in")]}, ScriptedCaller(answer)) as rig:
        await rig.until(lambda: rig.committed(TP0) == 1, "the commit")
    assert rig.out() == []
    [(_, _, headers)] = rig.producer.sent["dlq"]
    assert dict(headers)["streamcar-error-kind"] == b"publish"
    assert b"none was published" in (dict(headers)["streamcar-error"] or b"")


async def test_a_record_refused_once_is_sent_again_alone_and_the_others_not_twice() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        return Reply.records([Record(b"a"), Record(b"b"), Record(b"c")])

    rig = Rig({TP0: [record(0, 0, b"k", b"in")]}, ScriptedCaller(answer))
    rig.producer.refuse_once[b"b"] = RdKafkaError(RdKafkaError._MSG_TIMED_OUT)
    async with rig:
        await rig.until(lambda: rig.committed(TP0) == 1, "the commit")
    assert sorted(rig.out()) == [b"a", b"b", b"c"]  # b once: the refused send is not in what was published


async def test_zero_records_is_done_with_nothing_published() -> None:
    async with Rig({TP0: [record(0, 0, b"k", b"in")]}, ScriptedCaller(lambda e, a: Reply.records([]))) as rig:
        await rig.until(lambda: rig.committed(TP0) == 1, "the commit")
    assert rig.out() == []
    assert rig.out("dlq") == []


async def test_more_records_than_one_reply_may_publish_dead_letters_the_input_and_publishes_none() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        count = MAX_FANOUT + 1 if event.value == b"many" else MAX_FANOUT
        return Reply.records([Record(b"r")] * count)

    logs = {TP0: [record(0, 0, b"a", b"many"), record(0, 1, b"b", b"most")]}
    async with Rig(logs, ScriptedCaller(answer)) as rig:
        await rig.until(lambda: rig.committed(TP0) == 2, "the commit")
    assert len(rig.out()) == MAX_FANOUT  # the second input's, all of them
    [(_, value, headers)] = rig.producer.sent["dlq"]
    assert value == b"many"
    assert dict(headers)["streamcar-error-kind"] == b"publish"
    assert b"over the 10,000 one reply may publish" in (dict(headers)["streamcar-error"] or b"")


def test_fanned_out_records_take_call_slots_until_done() -> None:
    inflight = InFlight()
    inflight.calling = 2
    assert inflight.free(16) == 14
    inflight.fanned = 10 * FANOUT_PER_SLOT
    assert inflight.free(16) == 4
    inflight.fanned = 20 * FANOUT_PER_SLOT
    assert inflight.free(16) <= 0  # no new call until some of them are done
