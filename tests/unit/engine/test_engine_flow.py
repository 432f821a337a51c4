"""The engine on its in-memory twin (no broker): ordering, max_in_flight, retries, batches, the watermark."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from twin import TOPIC, Rig, ScriptedCaller, echo, pipeline_config, record

from streamcar.event import Event, Reply

TP0, TP1 = (TOPIC, 0), (TOPIC, 1)


def keyed_log(partition: int, count: int, keys: int) -> list:  # type: ignore[type-arg]
    return [record(partition, i, b"k%d" % (i % keys), b"%d-%d" % (partition, i)) for i in range(count)]


def by_key(events: list[Event]) -> dict[bytes | None, list[int]]:
    lanes: dict[bytes | None, list[int]] = defaultdict(list)
    for event in events:
        lanes[event.key].append(event.offset)
    return lanes


async def test_key_ordering_calls_each_key_in_offset_order_and_keys_side_by_side() -> None:
    caller = ScriptedCaller(echo, delay=0.002)
    logs = {TP0: keyed_log(0, 300, keys=10), TP1: keyed_log(1, 300, keys=10)}
    async with Rig(logs, caller, pipeline_config(max_in_flight=8)) as rig:
        await rig.until(lambda: len(rig.out()) == 600, "every reply")
        await rig.until(lambda: rig.committed(TP0) == 300 and rig.committed(TP1) == 300, "the commits")
    for offsets in by_key([e for e in caller.called() if e.partition == 0]).values():
        assert offsets == sorted(offsets)  # per key: one after another, in offset order
    assert caller.most_in_flight == 8  # different keys ran side by side, up to max_in_flight and no more
    assert sorted(rig.out()) == sorted(r.value() or b"" for log in logs.values() for r in log)


async def test_partition_ordering_is_one_at_a_time_per_partition() -> None:
    caller = ScriptedCaller(echo, delay=0.001)
    logs = {TP0: keyed_log(0, 60, keys=6), TP1: keyed_log(1, 60, keys=6)}
    async with Rig(logs, caller, pipeline_config(ordering="partition", max_in_flight=64)) as rig:
        await rig.until(lambda: len(rig.out()) == 120, "every reply")
    assert caller.most_in_flight == 2  # one per partition
    for partition in (0, 1):
        offsets = [e.offset for e in caller.called() if e.partition == partition]
        assert offsets == list(range(60))


async def test_no_ordering_runs_everything_up_to_max_in_flight() -> None:
    caller = ScriptedCaller(echo, delay=0.005)
    async with Rig({TP0: keyed_log(0, 100, keys=1)}, caller, pipeline_config(ordering="none", max_in_flight=16)) as rig:
        await rig.until(lambda: len(rig.out()) == 100, "every reply")
    assert caller.most_in_flight == 16  # one key, and yet 16 at once: nothing orders them


async def test_a_transient_failure_is_retried_after_a_backoff_and_only_its_key_waits() -> None:
    def flaky(event: Event, attempt: int) -> Reply:
        if event.key == b"k0" and attempt < 3:
            return Reply.retry(error="busy", kind="http-status")
        return Reply.success(event.value)

    caller = ScriptedCaller(flaky)
    async with Rig({TP0: keyed_log(0, 40, keys=4)}, caller) as rig:
        await rig.until(lambda: len(rig.out()) == 40, "every reply")
        await rig.until(lambda: rig.committed(TP0) == 40, "the commit")
    assert caller.attempts[(TOPIC, 0, 0)] == 3
    assert rig.pipeline.stats.retries == 20  # 10 messages of k0, retried twice each
    assert by_key(caller.called())[b"k0"] == sorted(by_key(caller.called())[b"k0"])
    assert rig.out("dlq") == []


async def test_attempts_exhausted_or_a_refusal_end_in_the_dead_letter_topic_with_their_story() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        if event.value == b"0-3":
            return Reply.retry(error="still busy", kind="http-status")
        if event.value == b"0-5":
            return Reply.dead_letter("no such order", kind="http-status")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    async with Rig({TP0: keyed_log(0, 10, keys=10)}, caller) as rig:
        await rig.until(lambda: len(rig.producer.sent["dlq"]) == 2 and len(rig.out()) == 8, "the outcomes")
        await rig.until(lambda: rig.committed(TP0) == 10, "the commit")
    letters = {value: dict(headers) for _, value, headers in rig.producer.sent["dlq"]}
    assert letters[b"0-3"]["streamcar-error-kind"] == b"exhausted"
    assert letters[b"0-3"]["streamcar-attempts"] == b"3"
    assert letters[b"0-5"]["streamcar-error-kind"] == b"http-status"
    assert letters[b"0-5"]["streamcar-source-offset"] == b"5"


async def test_a_batch_with_partial_success_retries_only_what_failed() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        if event.offset % 4 == 1 and attempt == 1:
            return Reply.retry(error="later", kind="retry")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    config = pipeline_config(call={"batch": {"max_messages": 8, "max_wait": "1ms"}}, max_in_flight=16)
    async with Rig({TP0: keyed_log(0, 16, keys=16)}, caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 16, "every reply")
    assert [len(call) for call in caller.calls[:2]] == [8, 8]
    again = [e.offset for call in caller.calls[2:] for e in call]
    assert sorted(again) == [1, 5, 9, 13]  # only the failed ones, each once more: what succeeded is never resent
    assert sorted(rig.out()) == sorted(b"0-%d" % i for i in range(16))


async def test_the_commit_is_the_contiguous_watermark_when_completions_come_out_of_order() -> None:
    release = asyncio.Event()

    async def slow_first(event: Event, attempt: int) -> Reply:
        if event.offset == 0:
            await release.wait()
        return Reply.success(event.value)

    caller = ScriptedCaller(slow_first)
    async with Rig({TP0: keyed_log(0, 20, keys=20)}, caller) as rig:
        await rig.until(lambda: len(rig.out()) == 19, "all but the first")
        await asyncio.sleep(0.05)  # commit ticks pass (every 10 ms): none may go past offset 0
        assert rig.committed(TP0) in (None, 0)
        release.set()
        await rig.until(lambda: rig.committed(TP0) == 20, "the watermark past everything")


@pytest.mark.parametrize("batch", [1, 5])
async def test_max_in_flight_bounds_the_calls_whatever_the_backlog(batch: int) -> None:
    caller = ScriptedCaller(echo, delay=0.002)
    config = pipeline_config(max_in_flight=10, ordering="none", call={"batch": {"max_messages": batch}})
    async with Rig({TP0: keyed_log(0, 2000, keys=50)}, caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 2000, "every reply", within=15)
    assert caller.most_in_flight <= 10


async def test_max_block_dead_letters_a_message_that_held_its_key_too_long_and_the_key_goes_on() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        if event.value == b"stuck":
            return Reply.retry(error="HTTP 503", kind="http-status")
        return Reply.success(event.value)

    logs = {TP0: [record(0, 0, b"k", b"stuck"), *[record(0, i, b"k", b"after") for i in range(1, 4)]]}
    config = pipeline_config(
        retry={"attempts": 1000, "initial_backoff": "10ms", "max_backoff": "10ms", "max_block": "150ms"},
        circuit_breaker={"enabled": False},
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with Rig(logs, ScriptedCaller(answer), config) as rig:
        await rig.until(lambda: len(rig.out()) == 3, "the key's later messages")
        assert loop.time() - started >= 0.15
    [(_, _, headers)] = rig.producer.sent["dlq"]
    assert dict(headers)["streamcar-error-kind"] == b"blocked"
    assert b"held its key for" in (dict(headers)["streamcar-error"] or b"")


async def test_max_block_is_not_ended_by_an_outage() -> None:
    """The service refuses connections for longer than max_block: those failures cost no attempt, and the
    messages waiting through the outage are answered once it ends, none dead-lettered as blocked."""
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 0.4

    def answer(event: Event, attempt: int) -> Reply:
        if loop.time() < down_until:
            return Reply.retry(error="connection refused", kind="connection")
        return Reply.success(event.value)

    config = pipeline_config(
        retry={"attempts": 5, "initial_backoff": "10ms", "max_backoff": "20ms", "max_block": "100ms"},
        circuit_breaker={"open_for": "20ms", "max_open": "40ms"},
    )
    async with Rig({TP0: keyed_log(0, 20, keys=4)}, ScriptedCaller(answer, delay=0.001), config) as rig:
        await rig.until(lambda: len(rig.out()) == 20, "every reply")
    assert rig.out("dlq") == []
