"""Calls and acknowledgements side by side: a message gives its lane up once its reply is with the producer, so the
next message of its key or partition is called while the broker acknowledges, and its outcome still waits for the
earlier one's (on the twin, whose producer lingers like librdkafka's)."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from twin import TOPIC, Rig, ScriptedCaller, echo, pipeline_config, record

from streamcar.event import Event, Reply

TP0 = (TOPIC, 0)


def log(count: int, keys: int) -> list:  # type: ignore[type-arg]
    return [record(0, i, b"k%d" % (i % keys), b"%d" % i) for i in range(count)]


def timed_echo(starts: dict[int, float], delay: float):  # type: ignore[no-untyped-def]
    async def answer(event: Event, attempt: int) -> Reply:
        starts.setdefault(event.offset, asyncio.get_running_loop().time())
        await asyncio.sleep(delay)
        return Reply.success(event.value)

    return answer


async def test_one_at_a_time_the_next_call_starts_while_the_broker_acknowledges_the_last_reply() -> None:
    starts: dict[int, float] = {}
    # calls of 50 ms and a linger of 25 ms: at 10 and 5 ms, a CI run at load average 25 delayed the loop past the
    # gap, and 5 replies were hurried
    caller = ScriptedCaller(timed_echo(starts, 0.050))
    async with Rig({TP0: log(20, keys=20)}, caller, pipeline_config(ordering="partition")) as rig:
        rig.producer.linger = 0.025
        await rig.until(lambda: len(rig.out()) == 20, "every reply")
        await rig.until(lambda: rig.committed(TP0) == 20, "the commit")
    acked = {int(value or b""): at for value, at in rig.producer.acks}
    overlapped = [n for n in range(1, 20) if starts[n] < acked[n - 1]]
    assert len(overlapped) >= 18  # (the first may start before the twin's linger applies)
    assert rig.out() == [b"%d" % i for i in range(20)]
    assert rig.producer.hurried <= 2  # a call in progress: the replies keep the linger that batches them


async def test_a_reply_that_waits_for_the_last_ones_acknowledgement_hurries_it() -> None:
    """The service answers faster than the linger: the reply waits for its predecessor's acknowledgement, and
    nothing else is calling, so the producer sends at once instead of lingering."""
    caller = ScriptedCaller(echo, delay=0.001)
    async with Rig({TP0: log(20, keys=20)}, caller, pipeline_config(ordering="partition")) as rig:
        rig.producer.linger = 1.0  # a linger the test would time out on
        await rig.until(lambda: len(rig.producer.acks) == 20, "every acknowledgement", within=3)
    assert rig.out() == [b"%d" % i for i in range(20)]
    assert rig.producer.hurried >= 19


async def test_with_calls_of_other_keys_in_progress_replies_share_the_producers_batches() -> None:
    caller = ScriptedCaller(echo, delay=0.005)
    async with Rig({TP0: log(400, keys=40)}, caller, pipeline_config(max_in_flight=40)) as rig:
        await rig.until(lambda: len(rig.out()) == 400, "every reply")
    assert rig.producer.hurried < 400 / 4  # about one per wave of 40 calls: the last reply of each


@pytest.mark.parametrize("ordering", ["partition", "key"])
async def test_a_refused_reply_sent_again_still_goes_before_the_next_reply_of_its_lane(ordering: str) -> None:
    """The next message was called while the broker had the reply; the broker then gave up on it (a timeout): it
    is sent again, and the next reply, already answered, waits for it."""
    caller = ScriptedCaller(echo, delay=0.002)
    config = pipeline_config(ordering=ordering, retry={"initial_backoff": "20ms", "max_backoff": "40ms"})
    async with Rig({TP0: log(30, keys=3)}, caller, config) as rig:
        for n in (4, 5, 17):
            rig.producer.refuse_once[b"%d" % n] = RdKafkaError(RdKafkaError._MSG_TIMED_OUT)
        await rig.until(lambda: len(rig.out()) == 30, "every reply")
        await rig.until(lambda: rig.committed(TP0) == 30, "the commit")
    out = [int(value) for value in rig.out()]
    assert sorted(out) == list(range(30))  # each once: nothing lost, nothing published twice
    lanes = 1 if ordering == "partition" else 3
    for lane in range(lanes):
        mine = [n for n in out if lanes == 1 or n % 3 == lane]
        assert mine == sorted(mine)  # in order within each key (each partition)
    assert rig.pipeline.stats.results["success"] == 30


async def test_a_revoke_while_replies_of_other_partitions_await_the_broker_stalls_nothing() -> None:
    """The settling tasks hold the map of what is publishing: forgetting a revoked partition's entries must not
    leave the other partitions' entries behind in a copy (their later messages would wait for them forever)."""
    tp1 = (TOPIC, 1)
    logs = {TP0: log(200, keys=4), tp1: [record(1, i, b"x%d" % (i % 4), b"1-%d" % i) for i in range(200)]}
    caller = ScriptedCaller(echo, delay=0.001)
    async with Rig(logs, caller, pipeline_config(ordering="key")) as rig:
        rig.producer.linger = 0.02
        await rig.until(lambda: len(rig.pipeline._inflight.publishing) > 0, "replies awaiting the broker")
        assert rig.consumer is not None
        await rig.consumer.revoke([tp1])
        await rig.until(lambda: len([v for v in rig.out() if not v.startswith(b"1-")]) == 200, "every reply of 0")
