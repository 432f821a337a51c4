"""The completion room on its own (engine/completion.py): a message done lets its partition's watermark pass,
or in queue mode is acknowledged instead, and frees its lane for the next message of its key."""

from __future__ import annotations

from twin import TOPIC, pipeline_config

from streamcar.engine.buffer import Buffer
from streamcar.engine.checkpoint import Checkpoint
from streamcar.engine.completion import Completion
from streamcar.engine.source import GroupSource
from streamcar.engine.work import Outcome, PipelineStats, Work
from streamcar.event import Event

TP = (TOPIC, 0)
LANE = (TOPIC, 0, b"k")


def message(offset: int) -> Work:
    return Work(Event(TOPIC, 0, offset, 0, b"k", b"v", ()), TP, LANE, 1)


def room(acknowledged: list[tuple[int, Outcome]] | None = None) -> tuple[Completion, Checkpoint, Buffer]:
    checkpoint = Checkpoint("p", max_in_flight=8, interval=60.0, commits=False)
    buffer = Buffer(8)
    acknowledge = None if acknowledged is None else (lambda w, r: acknowledged.append((w.event.offset, r)))
    source = GroupSource(pipeline_config())
    completion = Completion(checkpoint, buffer, PipelineStats(), source, acknowledge=acknowledge)
    return completion, checkpoint, buffer


async def test_a_message_done_lets_the_watermark_pass_and_frees_its_lane() -> None:
    completion, checkpoint, buffer = room()
    first, second = message(0), message(1)
    for work in (first, second):
        checkpoint.tracker.track(TP, work.event.offset)
        buffer.submit(work)
    assert buffer.take(2) == [first]  # one at a time per key
    completion.release(first, Outcome.SUCCESS)
    assert checkpoint.tracker.watermark(TP) == 1
    assert buffer.take(2) == [second]  # its lane is free: the next message of the key may start


async def test_in_queue_mode_a_message_done_is_acknowledged_instead() -> None:
    acknowledged: list[tuple[int, Outcome]] = []
    completion, checkpoint, buffer = room(acknowledged)
    work = message(5)
    buffer.submit(work)
    buffer.take(1)
    completion.release(work, Outcome.DEAD_LETTER)
    assert acknowledged == [(5, Outcome.DEAD_LETTER)]
    assert checkpoint.tracker.watermark(TP) is None  # no offset tracked, none let pass
