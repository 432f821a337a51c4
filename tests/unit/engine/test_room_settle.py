"""The settle room on its own (engine/settle.py): its decisions scripted, the broker's acknowledgements futures
the test resolves, the transaction a gate the test opens. No pipeline, no twin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from streamcar.engine.inflight import InFlight
from streamcar.engine.outcomes import RETRY, Decision, Handed
from streamcar.engine.retry import Backoff
from streamcar.engine.settle import Settle
from streamcar.engine.transaction import AT_LEAST_ONCE, Publishing, Transaction
from streamcar.engine.work import Outcome, Work
from streamcar.event import Event
from streamcar.kafka.producer import Ack

TP = ("t", 0)
LANE = ("t", 0, b"k")


class Outcomes:
    """Decides what ``script`` says per offset, round after round; remembers what was counted and refused."""

    def __init__(self, script: dict[int, list[Callable[[], Decision]]]) -> None:
        self.script = script
        self.counted: list[tuple[int, str]] = []
        self.refusals: list[int] = []

    def act(self, work: Work) -> Decision:
        if work.settled is not None:  # done already, waiting for an earlier one of its lane (the real contract)
            return Handed(work.settled, None)
        return self.script[work.event.offset].pop(0)()

    def hurry(self, sent: int) -> None:
        pass

    def count(self, work: Work, result: str) -> None:
        self.counted.append((work.event.offset, result))

    def refused(self, work: Work, result: str, error: BaseException) -> None:
        self.refusals.append(work.event.offset)


class Completion:
    def __init__(self) -> None:
        self.released: list[int] = []

    def handed_over(self, work: Work) -> bool:
        return False

    def release(self, work: Work, result: str) -> None:
        self.released.append(work.event.offset)


def acked() -> Decision:
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    future.set_result(None)  # what the producer acknowledged is not looked at
    return Handed(Outcome.SUCCESS, cast(Ack, future))


def refused() -> Decision:
    future: Ack = asyncio.get_running_loop().create_future()
    future.set_exception(RuntimeError("the broker refused it"))
    return Handed(Outcome.SUCCESS, future)


def works(inflight: InFlight, *offsets: int) -> list[Work]:
    inflight.assign([TP])
    return [Work(Event("t", 0, o, 0, b"k", b"v", ()), TP, LANE, inflight.generation[TP]) for o in offsets]


def settle(
    outcomes: Outcomes, inflight: InFlight, publishing: Publishing = AT_LEAST_ONCE
) -> tuple[Settle, Completion, list[list[int]]]:
    completion, later = Completion(), cast(list[list[int]], [])
    room = Settle(
        inflight=inflight,
        outcomes=outcomes,
        completion=completion,
        publishing=publishing,
        later=lambda ws, delay: later.append([w.event.offset for w in ws]),
        wake=lambda: None,
        backoff=Backoff(0.001, 0.001),
        max_backoff=0.001,
    )
    return room, completion, later


async def test_a_retry_holds_the_later_messages_of_its_lane() -> None:
    inflight = InFlight()
    outcomes = Outcomes({0: [lambda: RETRY], 1: [acked], 2: [acked]})
    room, completion, later = settle(outcomes, inflight)
    batch = works(inflight, 0, 1, 2)
    await room.settle(batch, list(batch))
    assert later == [[0]]  # the retry waits for its timer
    assert completion.released == []  # its lane's later messages are not completed before it
    assert batch[0].held == [batch[1], batch[2]]
    assert inflight.held == {batch[1], batch[2]}


async def test_a_refused_record_is_acted_on_again_and_completes_in_order() -> None:
    inflight = InFlight()
    outcomes = Outcomes({0: [refused, acked], 1: [acked]})
    room, completion, _ = settle(outcomes, inflight)
    batch = works(inflight, 0, 1)
    touched = list(batch)
    await room.settle(batch, touched)
    assert outcomes.refusals == [0]
    assert completion.released == [0, 1]  # the later one waited for the earlier one, sent again
    assert outcomes.counted == [(0, "success"), (1, "success")]


async def test_messages_decided_while_the_transaction_commits_wait_for_the_next() -> None:
    inflight = InFlight()
    transaction = Transaction()
    outcomes = Outcomes({0: [acked]})
    room, completion, _ = settle(outcomes, inflight, transaction)
    batch = works(inflight, 0)
    await transaction.close()  # committing (nothing pending): no record may go
    task = asyncio.create_task(room.settle(batch, list(batch)))
    for _ in range(5):  # let it run until it waits
        await asyncio.sleep(0)
    assert completion.released == []
    assert not task.done()
    transaction.reopen()
    await asyncio.wait_for(task, 1)
    assert completion.released == [0]
    assert transaction.touched == {TP}
