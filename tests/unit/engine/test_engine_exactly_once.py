"""publish.exactly_once on the twin: records become visible only with a committed transaction that also carries
their inputs' offsets; an aborted one rewinds the partitions with records in it, whose work is redone, visible
exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

from confluent_kafka import KafkaError as RdKafkaError
from twin import TOPIC, Rig, ScriptedCaller, TwinTransactionalProducer, echo, pipeline_config, record

from streamcar.event import Event, Reply
from streamcar.kafka.doneahead import decode
from streamcar.kafka.records import TP, CommitPoint

PARTITIONS, PER_PARTITION = 3, 400


def logs() -> dict:  # type: ignore[type-arg]
    return {
        (TOPIC, p): [record(p, i, b"k%d" % (i % 20), b"%d:%d" % (p, i)) for i in range(PER_PARTITION)]
        for p in range(PARTITIONS)
    }


def exactly_once(**overrides: object) -> object:
    return pipeline_config(publish={"topic": "out", "exactly_once": True}, **overrides)


def visible(rig: Rig) -> Counter[bytes]:
    return Counter(rig.out())


def transactional(rig: Rig) -> TwinTransactionalProducer:
    assert isinstance(rig.producer, TwinTransactionalProducer)
    return rig.producer


def all_committed(rig: Rig) -> bool:
    return all(rig.committed((TOPIC, p)) == PER_PARTITION for p in range(PARTITIONS))


def assert_each_once_in_order(rig: Rig) -> None:
    """Every input's reply visible exactly once, a key's in offset order."""
    assert set(visible(rig).values()) == {1}
    assert len(visible(rig)) == PARTITIONS * PER_PARTITION
    assert in_key_order(rig)


def in_key_order(rig: Rig) -> bool:
    """Each key's visible replies are in offset order."""
    last: dict[tuple[int, int], int] = {}
    for value in rig.out():
        partition, offset = map(int, value.split(b":"))
        key = (partition, offset % 20)
        if last.get(key, -1) >= offset:
            return False
        last[key] = offset
    return True


async def test_records_are_visible_with_the_offsets_of_their_inputs_and_only_then() -> None:
    caller = ScriptedCaller(echo, delay=0.001)
    async with Rig(logs(), caller, exactly_once(max_in_flight=16)) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        producer.commit_delay = 0.005
        await rig.until(lambda: all_committed(rig), "every offset committed in a transaction", within=20)
    assert_each_once_in_order(rig)
    assert producer.sends_while_committing == 0, "a record went into a transaction while it committed"
    assert producer.committed > 1
    assert producer.aborted == 0


async def test_a_refused_record_aborts_the_transaction_and_its_work_is_redone_once_visible() -> None:
    caller = ScriptedCaller(echo, delay=0.001)
    async with Rig(logs(), caller, exactly_once(max_in_flight=16)) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        producer.refuse_once[b"1:200"] = RdKafkaError(RdKafkaError.REQUEST_TIMED_OUT, "twin: timed out")
        await rig.until(lambda: all_committed(rig), "every offset committed", within=20)
        assert rig.consumer is not None
        assert rig.consumer.rewinds >= 1
    assert producer.aborted >= 1
    assert_each_once_in_order(rig)
    called = Counter(event.value for event in caller.called())
    assert called[b"1:200"] >= 2, "the refused record's input is called again after the rewind"


async def test_a_commit_the_broker_refuses_is_aborted_and_redone_once_visible() -> None:
    caller = ScriptedCaller(echo, delay=0.001)
    async with Rig(logs(), caller, exactly_once(max_in_flight=16)) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        producer.fail_commits = 2
        await rig.until(lambda: all_committed(rig), "every offset committed", within=20)
    assert producer.aborted == 2
    assert_each_once_in_order(rig)


async def test_dead_letters_and_retries_go_in_the_transaction_too() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        offset = int(event.value.split(b":")[1]) if event.value else 0
        if offset % 50 == 7:
            return Reply.dead_letter("poison")
        if offset % 30 == 3 and attempt < 2:
            return Reply.retry(error="busy")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    async with Rig(logs(), caller, exactly_once(max_in_flight=16)) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        producer.fail_commits = 1
        await rig.until(lambda: all_committed(rig), "every offset committed", within=20)
    letters = Counter(value for _, value, _ in producer.sent["dlq"])
    replies = visible(rig)
    assert set(letters.values()) == {1}
    assert set(replies.values()) == {1}
    assert len(letters) + len(replies) == PARTITIONS * PER_PARTITION
    assert not set(letters) & set(replies)


async def test_batch_delivery_with_aborts_is_visible_exactly_once_in_key_order() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        offset = int(event.value.split(b":")[1]) if event.value else 0
        return Reply.retry(error="busy") if offset % 17 == 5 and attempt < 2 else Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    config = exactly_once(max_in_flight=32, call={"batch": {"max_messages": 8, "max_wait": "1ms"}})
    async with Rig(logs(), caller, config) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        producer.fail_commits = 2
        producer.refuse_once[b"2:333"] = RdKafkaError(RdKafkaError.REQUEST_TIMED_OUT, "twin: timed out")
        await rig.until(lambda: all_committed(rig), "every offset committed", within=20)
    assert producer.aborted == 3
    assert_each_once_in_order(rig)
    assert producer.sends_while_committing == 0


def covered(point: CommitPoint) -> set[int]:
    """The offsets a commit says are done: below its offset, and its done-ahead offsets."""
    done = set(range(point.offset))
    if point.metadata:
        _, runs = decode(point.metadata)
        done |= {offset for first, last in runs for offset in range(first, last + 1)}
    return done


async def test_a_revoke_waiting_for_a_transaction_that_aborts_commits_none_of_its_work() -> None:
    # The soak (seeds 3 and 11) lost inputs this way: a transaction was committing (waiting for the group
    # metadata, or refused with ILLEGAL_GENERATION) when a rebalance revoked a partition; it aborted, and the
    # revoke's own commit, right after, committed the revoked partition's offsets of the aborted work, whose
    # replies were gone: read_committed never saw them, and the next owner skipped them.
    caller = ScriptedCaller(echo, delay=0.001)
    # a transaction a second long: at the twin's 10 ms, a CI run at load average 25 never had 50 replies in one
    config = exactly_once(max_in_flight=16, commit_interval="1s")
    async with Rig(logs(), caller, config) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        assert rig.consumer is not None
        consumer = rig.consumer
        entered = asyncio.Event()
        commit = producer.commit

        async def travelling(points: Mapping[TP, CommitPoint], group_metadata: object | None) -> None:
            entered.set()
            await commit(points, group_metadata)

        await rig.until(lambda: len(producer.open) > 50, "replies in the open transaction")
        producer.commit = travelling  # type: ignore[method-assign]
        producer.commit_delay, producer.fail_commits = 0.2, 1  # the next commit travels, and is refused
        await asyncio.wait_for(entered.wait(), 5)
        await consumer.revoke([(TOPIC, 1)])
        assert producer.aborted >= 1
        point = rig.commit_point((TOPIC, 1))
    replies = set(rig.out())
    done = covered(point) if point is not None else set()
    assert {offset for offset in done if b"1:%d" % offset not in replies} == set()


async def test_an_abort_redoes_only_the_partitions_with_records_in_the_transaction() -> None:
    """Issue 30, finding 2: an abort rewound every partition, so a partition whose work published nothing (here
    slow calls whose replies are drops) had its calls under way abandoned and made again."""

    async def answer(event: Event, attempt: int) -> Reply:
        if event.partition == 1:
            await asyncio.sleep(0.2)
            return Reply.drop()
        return Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    two = {tp: records[:100] for tp, records in logs().items() if tp[1] < 2}
    async with Rig(two, caller, exactly_once(max_in_flight=32)) as rig:  # type: ignore[arg-type]
        producer = transactional(rig)
        producer.refuse_once[b"0:50"] = RdKafkaError(RdKafkaError.REQUEST_TIMED_OUT, "twin: timed out")
        done = lambda: all(rig.committed((TOPIC, p)) == 100 for p in range(2))  # noqa: E731
        await rig.until(done, "every offset committed", within=20)
    assert producer.aborted >= 1
    called = Counter((event.partition, event.offset) for event in caller.called())
    assert called[(0, 50)] >= 2, "the refused record's input is called again after the rewind"
    assert max(n for (partition, _), n in called.items() if partition == 1) == 1  # none of partition 1 redone
    assert sorted(rig.out()) == sorted(b"0:%d" % i for i in range(100))
