"""Done-ahead offsets on the twin: a commit names what was done above its watermark, the partition's next owner
skips it, and a partition whose done-ahead metadata would outgrow its bound takes no new records until it has
room again."""

from __future__ import annotations

import asyncio

from twin import TOPIC, Rig, ScriptedCaller, echo, record

from streamcar.event import Event, Reply
from streamcar.kafka.doneahead import decode, encode
from streamcar.kafka.records import CommitPoint

TP0 = (TOPIC, 0)


def log(count: int, keys: int = 10) -> list:  # type: ignore[type-arg]
    return [record(0, i, b"k%d" % (i % keys), b"%d" % i) for i in range(count)]


async def test_a_stuck_message_holds_the_watermark_and_the_commit_names_what_was_done_above_it() -> None:
    gate = asyncio.Event()

    async def stuck(event: Event, attempt: int) -> Reply:
        if event.offset == 2:
            await gate.wait()
        return Reply.success(event.value)

    caller = ScriptedCaller(stuck)
    async with Rig({TP0: log(40, keys=40)}, caller) as rig:  # every key its own: nothing waits behind offset 2
        await rig.until(lambda: len(rig.out()) == 39, "every reply but offset 2's")

        def names_the_rest() -> bool:
            point = rig.commit_point(TP0)
            return point is not None and point.metadata != "" and decode(point.metadata) == (2, [(3, 39)])

        await rig.until(names_the_rest, "a commit at 2 naming 3..39 done")
        assert rig.pipeline.status()["partitions"] == [
            {"topic": TOPIC, "partition": 0, "next_offset": 2, "done_ahead": 37, "lag": 38}
        ]
        gate.set()
        await rig.until(lambda: rig.commit_point(TP0) == CommitPoint(40), "the commit past everything")


async def test_the_next_owner_skips_what_the_commit_names_done() -> None:
    committed = {TP0: CommitPoint(3, encode(3, [(5, 9), (12, 12)]))}
    caller = ScriptedCaller(echo)
    async with Rig({TP0: log(20)}, caller, committed=committed) as rig:
        await rig.until(lambda: rig.committed(TP0) == 20, "the commit at the end")
    assert sorted(event.offset for event in caller.called()) == [3, 4, 10, 11, *range(13, 20)]
    assert rig.pipeline.stats.skipped == 6
    assert rig.commit_point(TP0) == CommitPoint(20)  # nothing left above: the metadata is gone


async def test_metadata_that_is_not_a_done_ahead_set_is_ignored_and_everything_processed() -> None:
    caller = ScriptedCaller(echo)
    committed = {TP0: CommitPoint(3, "written by another tool")}
    async with Rig({TP0: log(10)}, caller, committed=committed) as rig:
        await rig.until(lambda: rig.committed(TP0) == 10, "the commit at the end")
    assert sorted(event.offset for event in caller.called()) == list(range(3, 10))


async def test_a_set_left_beside_another_offset_is_ignored() -> None:
    caller = ScriptedCaller(echo)
    committed = {TP0: CommitPoint(3, encode(1, [(5, 9)]))}  # the group was reset to 3 since
    async with Rig({TP0: log(10)}, caller, committed=committed) as rig:
        await rig.until(lambda: rig.committed(TP0) == 10, "the commit at the end")
    assert sorted(event.offset for event in caller.called()) == list(range(3, 10))


async def test_a_partition_whose_metadata_would_outgrow_its_bound_waits_and_then_goes_on() -> None:
    gate = asyncio.Event()

    async def stuck(event: Event, attempt: int) -> Reply:
        if event.key == b"k0":
            await gate.wait()
        return Reply.success(event.value)

    caller = ScriptedCaller(stuck)
    # 2 bytes: any pattern over 16 offsets, or one unfinished message (one run); key k0 has 3 messages per 30
    async with Rig({TP0: log(300, keys=30)}, caller, budget=2) as rig:
        consumer = rig.consumer
        assert consumer is not None
        await rig.until(lambda: TP0 in consumer.holds, "the partition held")
        await asyncio.sleep(0.02)  # let it try to go on: it must not
        furthest = max(event.offset for event in caller.called())
        assert furthest <= 16, furthest
        gate.set()
        await rig.until(lambda: rig.committed(TP0) == 300, "everything, once there was room")
    replies = rig.out()
    assert sorted(replies, key=int) == [b"%d" % i for i in range(300)]  # each once
    for key in range(30):
        mine = [int(v) for v in replies if int(v) % 30 == key]
        assert mine == sorted(mine)  # per-key order
