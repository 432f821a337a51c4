"""What a crash can redo is bounded by max_in_flight, however long a commit takes to reach the broker.

A crash redoes every message taken and not covered by a commit the broker has: those in flight, and those done
since the last commit landed. A slow commit (a distant coordinator, a loaded broker) must not let the second
grow with the throughput: the engine takes no new messages while ``3 x max_in_flight`` are uncovered.
"""

from __future__ import annotations

import asyncio

from twin import TOPIC, Rig, ScriptedCaller, echo, pipeline_config, record

from streamcar.kafka.doneahead import decode
from streamcar.kafka.records import TP

PARTITIONS = 4
PER_PARTITION = 1000
LIMIT = 16


def uncovered(rig: Rig) -> int:
    """Replies on the output topic whose input no commit the broker took covers: a crash now publishes them again."""
    assert rig.consumer is not None
    covered: dict[TP, tuple[int, set[int]]] = {}
    for tp, point in rig.consumer.committed.items():
        ahead: set[int] = set()
        if point.metadata:
            _, runs = decode(point.metadata)
            for low, high in runs:
                ahead.update(range(low, high + 1))
        covered[tp] = (point.offset, ahead)
    count = 0
    for value in rig.out():
        partition, offset = map(int, value.split(b":"))
        watermark, ahead = covered.get((TOPIC, partition), (0, set()))
        count += offset >= watermark and offset not in ahead
    return count


async def test_a_slow_commit_does_not_let_what_a_crash_redoes_grow_past_three_times_max_in_flight() -> None:
    logs = {
        (TOPIC, p): [record(p, i, b"k%d" % (i % 50), b"%d:%d" % (p, i)) for i in range(PER_PARTITION)]
        for p in range(PARTITIONS)
    }
    config = pipeline_config(max_in_flight=LIMIT, commit_interval="5ms")
    caller = ScriptedCaller(echo, delay=0.001)
    worst = 0
    async with Rig(logs, caller, config) as rig:
        assert rig.consumer is not None
        rig.consumer.commit_delay = 0.02  # each commit travels 20 ms: ~300 calls' worth at this pace
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal worst
            while not done.is_set():
                worst = max(worst, uncovered(rig))
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        total = PARTITIONS * PER_PARTITION
        await rig.until(lambda: len(rig.out()) == total, "every reply", within=30)
        done.set()
        await watcher
        await rig.until(lambda: uncovered(rig) == 0, "the last commit")
    assert 0 < worst <= 3 * LIMIT, f"{worst} replies uncovered at once, bound {3 * LIMIT}"
