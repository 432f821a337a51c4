"""Lane scheduling: examples for every method, and a state machine checking ordering and accounting."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamcar.engine.scheduler import Lane, LaneScheduler, lane_for


class Item:
    """A unit of work; compared by identity, like the engine's messages."""

    __slots__ = ("lane", "seq", "tp")

    def __init__(self, seq: int, tp: tuple[str, int], lane: Lane | None) -> None:
        self.seq = seq
        self.tp = tp
        self.lane = lane

    def __repr__(self) -> str:
        return f"Item({self.seq}, {self.tp}, {self.lane})"


def lane_of(item: Item) -> Lane | None:
    return item.lane


def partition_of(item: Item) -> tuple[str, int]:
    return item.tp


def scheduler() -> LaneScheduler[Item]:
    return LaneScheduler(lane_of, partition_of)


def keyed(seq: int, key: bytes | None, partition: int = 0) -> Item:
    return Item(seq, ("t", partition), lane_for("key", "t", partition, key))


# -- lane_for ------------------------------------------------------------------------------------------------


def test_lane_for_key_ordering() -> None:
    assert lane_for("key", "t", 3, b"k") == ("t", 3, b"k")
    assert lane_for("key", "t", 3, b"") == ("t", 3, b"")  # an empty key is a key
    assert lane_for("key", "t", 3, None) is None  # null keys are unordered


def test_lane_for_partition_and_none_ordering() -> None:
    assert lane_for("partition", "t", 3, b"k") == ("t", 3)
    assert lane_for("partition", "t", 3, None) == ("t", 3)
    assert lane_for("none", "t", 3, b"k") is None


def test_lane_for_rejects_unknown_ordering() -> None:
    with pytest.raises(ValueError, match="unknown ordering"):
        lane_for("global", "t", 0, b"k")  # type: ignore[arg-type]


# -- LaneScheduler -------------------------------------------------------------------------------------------


def test_empty_scheduler() -> None:
    sched = scheduler()
    assert sched.take(10) == []
    assert len(sched) == 0
    assert (sched.ready_count, sched.queued_count, sched.busy_lanes) == (0, 0, 0)


def test_items_without_a_lane_are_all_ready_at_once() -> None:
    sched = scheduler()
    items = [keyed(i, None) for i in range(3)]
    for item in items:
        sched.submit(item)
    assert (sched.ready_count, sched.queued_count, sched.busy_lanes) == (3, 0, 0)
    assert sched.take(10) == items
    for item in items:
        sched.finish(item)  # no lane: nothing to release
    assert len(sched) == 0


def test_same_lane_items_wait_for_each_other() -> None:
    sched = scheduler()
    first, second, third = keyed(0, b"a"), keyed(1, b"a"), keyed(2, b"a")
    for item in (first, second, third):
        sched.submit(item)
    assert (sched.ready_count, sched.queued_count, sched.busy_lanes) == (1, 2, 1)
    assert len(sched) == 3
    assert sched.take(10) == [first]
    assert sched.take(10) == []
    sched.finish(first)
    assert (sched.ready_count, sched.queued_count, sched.busy_lanes) == (1, 1, 1)
    assert sched.take(10) == [second]
    sched.finish(second)
    assert sched.take(10) == [third]
    assert sched.busy_lanes == 1
    sched.finish(third)
    assert (sched.ready_count, sched.queued_count, sched.busy_lanes) == (0, 0, 0)


def test_different_lanes_run_concurrently() -> None:
    sched = scheduler()
    a, b, c = keyed(0, b"a"), keyed(1, b"b"), keyed(2, b"a", partition=1)
    for item in (a, b, c):
        sched.submit(item)
    assert sched.busy_lanes == 3
    assert sched.take(10) == [a, b, c]


def test_take_is_fifo_in_order_of_becoming_ready() -> None:
    sched = scheduler()
    a0, a1, b0, n0 = keyed(0, b"a"), keyed(1, b"a"), keyed(2, b"b"), keyed(3, None)
    for item in (a0, a1, b0):
        sched.submit(item)
    assert sched.take(1) == [a0]
    sched.finish(a0)  # a1 becomes ready after b0
    sched.submit(n0)
    assert sched.take(2) == [b0, a1]
    assert sched.take(2) == [n0]


def test_take_limits() -> None:
    sched = scheduler()
    for i in range(5):
        sched.submit(keyed(i, None))
    assert sched.take(0) == []
    assert sched.take(-1) == []
    assert [item.seq for item in sched.take(2)] == [0, 1]
    assert sched.ready_count == 3


def test_take_never_returns_two_items_of_a_lane() -> None:
    sched = scheduler()
    items = [keyed(i, b"a") for i in range(3)]
    for item in items:
        sched.submit(item)
    assert sched.take(10) == [items[0]]


def test_take_with_runs_brings_a_lanes_successors_along_in_order() -> None:
    sched = scheduler()
    a = [keyed(i, b"a") for i in range(4)]
    b = [keyed(10 + i, b"b") for i in range(2)]
    free = keyed(20, None)
    for item in (a[0], b[0], a[1], free, a[2], b[1], a[3]):
        sched.submit(item)
    # the ready items (oldest of their lanes) first, then the lanes' successors fill the room left
    assert sched.take(6, runs=True) == [a[0], b[0], free, a[1], a[2], a[3]]
    assert (sched.ready_count, sched.queued_count) == (0, 1)  # b[1] waits behind b[0]
    sched.finish(a[1])  # not the head of its run: ignored
    assert sched.busy_lanes == 2
    for item in a:
        sched.finish(item)  # a run is finished in order
    sched.finish(b[0])
    assert sched.take(5, runs=True) == [b[1]]
    sched.finish(b[1])
    assert (len(sched), sched.busy_lanes) == (0, 0)


def test_a_run_is_cut_at_the_take_limit_and_the_rest_waits_for_it() -> None:
    sched = scheduler()
    items = [keyed(i, b"a") for i in range(5)]
    for item in items:
        sched.submit(item)
    assert sched.take(3, runs=True) == items[:3]
    assert sched.take(3, runs=True) == []  # the lane is busy until its run is finished
    for item in items[:3]:
        assert sched.ready_count == 0
        sched.finish(item)
    assert sched.take(3, runs=True) == items[3:]


def test_drop_partition_skips_a_run_in_flight() -> None:
    sched = scheduler()
    items = [keyed(i, b"a") for i in range(4)]
    for item in items:
        sched.submit(item)
    assert sched.take(2, runs=True) == items[:2]
    assert sched.drop_partition(("t", 0)) == items[2:]
    sched.finish(items[0])  # abandoned run: nothing happens
    assert (len(sched), sched.busy_lanes) == (0, 0)


def test_a_retried_item_blocks_only_its_lane() -> None:
    sched = scheduler()
    a0, a1, b0, b1 = keyed(0, b"a"), keyed(1, b"a"), keyed(2, b"b"), keyed(3, b"b")
    for item in (a0, a1, b0, b1):
        sched.submit(item)
    assert sched.take(10) == [a0, b0]
    # a0 fails and is being retried: it is not finished, so a1 waits; b keeps flowing.
    sched.finish(b0)
    assert sched.take(10) == [b1]
    sched.finish(b1)
    assert sched.take(10) == []
    assert (sched.queued_count, sched.busy_lanes) == (1, 1)
    sched.finish(a0)
    assert sched.take(10) == [a1]


def test_finish_of_an_item_that_does_not_hold_its_lane_is_ignored() -> None:
    sched = scheduler()
    a0, a1 = keyed(0, b"a"), keyed(1, b"a")
    sched.submit(a0)
    sched.submit(a1)
    sched.take(10)
    sched.finish(a1)  # queued, not in flight
    sched.finish(keyed(9, b"a"))  # never submitted
    sched.finish(keyed(9, b"z"))  # unknown lane
    assert (sched.ready_count, sched.queued_count) == (0, 1)
    sched.finish(a0)
    sched.finish(a0)  # twice: must not promote past a1
    assert sched.take(10) == [a1]
    assert sched.busy_lanes == 1


def test_drop_partition_returns_ready_and_queued_items_of_that_partition() -> None:
    sched = scheduler()
    a0, a1, a2 = keyed(0, b"a"), keyed(1, b"a"), keyed(2, b"a")
    n0 = keyed(3, None)
    b0, b1 = keyed(4, b"b"), keyed(5, b"b")
    other0, other1 = keyed(6, b"a", partition=1), keyed(7, None, partition=1)
    for item in (a0, a1, a2, n0, b0, b1, other0, other1):
        sched.submit(item)
    assert sched.take(1) == [a0]  # in flight: not returned, its lane is dropped
    dropped = sched.drop_partition(("t", 0))
    assert dropped == [n0, b0, a1, a2, b1]
    assert (sched.ready_count, sched.queued_count, sched.busy_lanes) == (2, 0, 1)
    assert len(sched) == 2
    sched.finish(a0)  # abandoned work completing later: harmless, promotes nothing
    assert sched.take(10) == [other0, other1]
    assert sched.drop_partition(("t", 0)) == []
    assert sched.drop_partition(("t", 9)) == []


def test_stale_finish_after_the_partition_comes_back_promotes_nothing() -> None:
    sched = scheduler()
    old = keyed(0, b"a")
    sched.submit(old)
    sched.take(10)
    sched.drop_partition(("t", 0))
    new0, new1 = keyed(0, b"a"), keyed(1, b"a")  # redelivered to the new assignment
    sched.submit(new0)
    sched.submit(new1)
    assert sched.take(10) == [new0]
    sched.finish(old)
    assert sched.take(10) == []
    sched.finish(new0)
    assert sched.take(10) == [new1]


def test_partition_ordering_is_one_at_a_time_per_partition() -> None:
    sched = scheduler()
    items = [Item(i, ("t", i % 2), lane_for("partition", "t", i % 2, b"k")) for i in range(4)]
    for item in items:
        sched.submit(item)
    assert sched.take(10) == [items[0], items[1]]
    sched.finish(items[1])
    assert sched.take(10) == [items[3]]


def test_scheduler_repr() -> None:
    sched = scheduler()
    sched.submit(keyed(0, b"a"))
    sched.submit(keyed(1, b"a"))
    assert repr(sched) == "LaneScheduler(ready=1, queued=1, busy_lanes=1)"


# -- state machine -------------------------------------------------------------------------------------------

PARTITIONS = [("t", 0), ("t", 1)]
LANE_CHOICES: list[tuple[tuple[str, int], Lane | None]] = [
    (("t", 0), ("t", 0, b"a")),
    (("t", 0), ("t", 0, b"b")),
    (("t", 0), None),
    (("t", 1), ("t", 1, b"a")),
    (("t", 1), ("t", 1)),
    (("t", 1), None),
]


class SchedulerMachine(RuleBasedStateMachine):
    """Drives a scheduler with random submit/take/finish/drop and checks it against a simple model."""

    def __init__(self) -> None:
        super().__init__()
        self.sched = scheduler()
        self.seq = 0
        self.submitted: list[Item] = []
        # Not yet taken and not dropped, per lane (None-lane items are keyed by their own identity).
        self.pending: dict[Lane, deque[Item]] = {}
        self.ready: deque[Item] = deque()  # the order take() must follow
        self.in_flight: list[Item] = []  # taken, unfinished, partition still assigned
        self.abandoned: list[Item] = []  # taken, unfinished, partition dropped
        self.finished: list[Item] = []
        self.taken: set[int] = set()
        self.dropped: set[int] = set()

    def lane_key(self, item: Item) -> Lane:
        return item.lane if item.lane is not None else ("no-lane", item.seq)

    @rule(choice=st.sampled_from(LANE_CHOICES))
    def submit(self, choice: tuple[tuple[str, int], Lane | None]) -> None:
        tp, lane = choice
        item = Item(self.seq, tp, lane)
        self.seq += 1
        self.submitted.append(item)
        key = self.lane_key(item)
        lane_idle = key not in self.pending and all(other.lane != lane for other in self.in_flight)
        if lane is None or lane_idle:
            self.ready.append(item)
        self.pending.setdefault(key, deque()).append(item)
        self.sched.submit(item)

    @rule(n=st.integers(min_value=0, max_value=4))
    def take(self, n: int) -> None:
        items = self.sched.take(n)
        assert items == [self.ready.popleft() for _ in range(min(n, len(self.ready)))]
        busy = {item.lane for item in self.in_flight if item.lane is not None}
        for item in items:
            assert item.seq not in self.taken, "taken twice"
            assert item.seq not in self.dropped, "taken after being dropped"
            if item.lane is not None:
                assert item.lane not in busy, "two items of one lane in flight"
                busy.add(item.lane)
            line = self.pending[self.lane_key(item)]
            assert line[0] is item, "lane taken out of submission order"
            line.popleft()
            if not line:
                del self.pending[self.lane_key(item)]
            self.taken.add(item.seq)
            self.in_flight.append(item)

    @rule(n=st.integers(min_value=0, max_value=6))
    def take_runs(self, n: int) -> None:
        items = self.sched.take(n, runs=True)
        heads = [self.ready.popleft() for _ in range(min(n, len(self.ready)))]
        expected = list(heads)
        for head in heads:
            if head.lane is not None and len(expected) < n:
                successors = list(self.pending[head.lane])[1:]
                expected.extend(successors[: n - len(expected)])
        assert items == expected
        for item in items:
            assert item.seq not in self.taken, "taken twice"
            assert item.seq not in self.dropped, "taken after being dropped"
            pending = self.pending[self.lane_key(item)]
            assert pending[0] is item, "lane taken out of submission order"
            pending.popleft()
            if not pending:
                del self.pending[self.lane_key(item)]
            self.taken.add(item.seq)
            self.in_flight.append(item)

    def heads(self) -> list[Item]:
        """In-flight items that may finish now: the oldest in flight of each lane (runs finish in order)."""
        seen: set[Lane] = set()
        heads = []
        for item in self.in_flight:
            if item.lane is None:
                heads.append(item)
            elif item.lane not in seen:
                seen.add(item.lane)
                heads.append(item)
        return heads

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        self.finish_item(data.draw(st.sampled_from(self.heads())))

    @precondition(lambda self: self.abandoned or self.finished)
    @rule(data=st.data())
    def stale_finish(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.abandoned + self.finished))
        before = (self.sched.ready_count, self.sched.queued_count, self.sched.busy_lanes)
        self.sched.finish(item)
        assert (self.sched.ready_count, self.sched.queued_count, self.sched.busy_lanes) == before

    @rule(tp=st.sampled_from(PARTITIONS))
    def drop_partition(self, tp: tuple[str, int]) -> None:
        dropped = self.sched.drop_partition(tp)
        expected = [item for line in self.pending.values() for item in line if item.tp == tp]
        assert sorted(item.seq for item in dropped) == sorted(item.seq for item in expected)
        assert len({id(item) for item in dropped}) == len(dropped)
        for item in dropped:
            self.dropped.add(item.seq)
        self.pending = {lane: line for lane, line in self.pending.items() if not line or line[0].tp != tp}
        self.ready = deque(item for item in self.ready if item.tp != tp)
        self.abandoned += [item for item in self.in_flight if item.tp == tp]
        self.in_flight = [item for item in self.in_flight if item.tp != tp]

    @rule(tp=st.sampled_from(PARTITIONS), back=st.integers(0, 6))
    def restart_partition(self, tp: tuple[str, int], back: int) -> None:
        """The partition's log restarted: everything from some point on goes (drop_partition with ``keep``)."""
        floor = max(0, self.seq - back)

        def gone(item: Item) -> bool:
            return item.tp == tp and item.seq >= floor

        dropped = self.sched.drop_partition(tp, lambda item: item.seq < floor)
        expected = [item for line in self.pending.values() for item in line if gone(item)]
        assert sorted(item.seq for item in dropped) == sorted(item.seq for item in expected)
        for item in dropped:
            self.dropped.add(item.seq)
        pending = {lane: deque(i for i in line if not gone(i)) for lane, line in self.pending.items()}
        self.pending = {lane: line for lane, line in pending.items() if line}
        self.ready = deque(item for item in self.ready if not gone(item))
        self.abandoned += [item for item in self.in_flight if gone(item)]
        self.in_flight = [item for item in self.in_flight if not gone(item)]

    @rule()
    def drain(self) -> None:
        """Finish everything in flight and keep taking until empty: nothing may be lost or stuck."""
        while self.in_flight or len(self.sched):
            self.take(4)
            for item in list(self.in_flight):  # in take order, so a run's items finish in order
                self.finish_item(item)
        assert not self.pending
        assert self.sched.busy_lanes == 0
        accounted = self.taken | self.dropped
        assert accounted == {item.seq for item in self.submitted}
        assert not self.taken & self.dropped

    def finish_item(self, item: Item) -> None:
        self.in_flight.remove(item)
        self.finished.append(item)
        run_goes_on = any(other.lane == item.lane for other in self.in_flight)
        if item.lane is not None and item.lane in self.pending and not run_goes_on:
            self.ready.append(self.pending[item.lane][0])
        self.sched.finish(item)

    @invariant()
    def counts_match_the_model(self) -> None:
        live = {item.lane for item in self.in_flight if item.lane is not None}
        ready = queued = 0
        busy = set(live)
        for key, line in self.pending.items():
            lane = line[0].lane
            if lane is None:
                ready += 1
                continue
            busy.add(lane)
            if lane in live:
                queued += len(line)
            else:
                ready += 1  # the lane's next item is ready, the rest wait
                queued += len(line) - 1
            assert key == lane
        assert self.sched.ready_count == ready == len(self.ready)
        assert self.sched.queued_count == queued
        assert self.sched.busy_lanes == len(busy)
        assert len(self.sched) == ready + queued


SchedulerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
test_scheduler_state_machine = SchedulerMachine.TestCase
