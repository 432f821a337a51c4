"""Each message is in exactly one place: random sequences of :class:`InFlight`'s moves, as the engine makes them.

The places are the buffer (before it is taken), forming, in a call (running, counted in ``calling``), settling
(running, its call returned), waiting for a retry, parked, held behind an earlier message of its lane, and done.
A message waiting for a retry or held is still in ``running`` until the task that settled it ends (the task may
settle others of its launch meanwhile); once it ended, the message is in that one place only."""

from __future__ import annotations

import asyncio

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from streamcar.engine.inflight import InFlight
from streamcar.engine.work import Work
from streamcar.event import Event

MESSAGES = 12


class Task:
    """Stands for the asyncio task of one launch (only its identity matters to InFlight): ``touched``, every
    message it settled (what it hands to :meth:`InFlight.ended`); ``works``, those it still owns (a retry
    launched again while it settles others belongs to its new task)."""

    def __init__(self, works: list[Work]) -> None:
        self.works = list(works)
        self.touched = list(works)
        self.calling = len(works)


class Moves(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.inflight = InFlight()
        self.inflight.assign([("t", 0)])
        self.where: dict[Work, str] = {}
        for offset in range(MESSAGES):
            work = Work(Event("t", 0, offset, 0, b"k%d" % (offset % 3), b"v", ()), ("t", 0), None, 1)
            self.where[work] = "buffer"
        self.tasks: list[Task] = []
        self.timer = self.loop.call_later(3600, lambda: None)

    def teardown(self) -> None:
        self.timer.cancel()
        self.loop.close()

    def _in(self, place: str) -> list[Work]:
        return [w for w, p in self.where.items() if p == place]

    def _task_of(self, work: Work) -> Task | None:
        return next((t for t in self.tasks if work in t.works), None)

    def _launch(self, works: list[Work]) -> None:
        for work in works:
            old = self._task_of(work)
            if old is not None:
                old.works.remove(work)
        task = Task(works)
        self.tasks.append(task)
        self.inflight.launched(works, task)  # type: ignore[arg-type]  # only its identity matters
        for work in works:
            self.where[work] = "calling"

    # -- taking and launching -------------------------------------------------------------------------------------
    @precondition(lambda self: self._in("buffer"))
    @rule(data=st.data())
    def launch_from_buffer(self, data: st.DataObject) -> None:
        ready = self._in("buffer")
        self._launch(data.draw(st.lists(st.sampled_from(ready), min_size=1, max_size=3, unique=True)))

    @precondition(lambda self: self._in("buffer"))
    @rule(data=st.data())
    def form(self, data: st.DataObject) -> None:
        works = data.draw(st.lists(st.sampled_from(self._in("buffer")), min_size=1, max_size=3, unique=True))
        self.inflight.form(works)
        for work in works:
            self.where[work] = "forming"

    @precondition(lambda self: self._in("forming"))
    @rule()
    def flush(self) -> None:
        batch = self.inflight.formed()
        assert sorted(batch, key=id) == sorted(self._in("forming"), key=id)
        self._launch(batch)

    # -- a call returns, and its task settles ---------------------------------------------------------------------
    @precondition(lambda self: any(t.calling for t in self.tasks))
    @rule(data=st.data())
    def call_returns(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from([t for t in self.tasks if t.calling]))
        self.inflight.returned(task.calling)
        task.calling = 0
        for work in task.works:
            if self.where[work] == "calling":
                self.where[work] = "settling"

    @precondition(lambda self: self._in("settling"))
    @rule(data=st.data(), outcome=st.sampled_from(["done", "retry", "held"]))
    def settle_one(self, data: st.DataObject, outcome: str) -> None:
        work = data.draw(st.sampled_from(self._in("settling")))
        if outcome == "done":
            self.where[work] = "done"
        elif outcome == "retry":
            self.inflight.wait([work], self.timer)
            self.where[work] = "waiting"
        else:
            blockers = [w for w in self._in("settling") + self._in("waiting") if w is not work]
            if not blockers:
                return
            self.inflight.hold(data.draw(st.sampled_from(blockers)), work)
            self.where[work] = "held"

    @precondition(lambda self: any(not t.calling for t in self.tasks))
    @rule(data=st.data())
    def task_ends(self, data: st.DataObject) -> None:
        task = data.draw(st.sampled_from([t for t in self.tasks if not t.calling]))
        if any(self.where[w] == "settling" for w in task.works):
            return  # a task ends once each of its messages is done, waiting or held
        self.inflight.ended(task.touched, task)  # type: ignore[arg-type]
        self.tasks.remove(task)

    @precondition(lambda self: self._in("held"))
    @rule(data=st.data())
    def released(self, data: st.DataObject) -> None:
        """The message a held one waited for is done: a running task settles the held one now."""
        work = data.draw(st.sampled_from(self._in("held")))
        task = next((t for t in self.tasks if not t.calling and t.works), None)
        if task is None:
            return
        old = self._task_of(work)
        if old is not None:
            old.works.remove(work)
        task.works.append(work)
        task.touched.append(work)
        self.inflight.adopt([work], task)  # type: ignore[arg-type]
        self.where[work] = "settling"

    # -- retries --------------------------------------------------------------------------------------------------
    @precondition(lambda self: self._in("waiting"))
    @rule(data=st.data(), park=st.booleans())
    def retry_due(self, data: st.DataObject, park: bool) -> None:
        works = data.draw(st.lists(st.sampled_from(self._in("waiting")), min_size=1, unique=True))
        due = self.inflight.due(works)  # its task may still settle others of its launch
        assert sorted(due, key=id) == sorted(works, key=id)
        if park:
            self.inflight.park(due)
            for work in due:
                self.where[work] = "parked"  # in its task's running entry still, until that task ends
        else:
            self._launch(due)

    @precondition(lambda self: self._in("parked"))
    @rule(count=st.one_of(st.none(), st.integers(min_value=1, max_value=4)))
    def unpark(self, count: int | None) -> None:
        oldest = list(self.inflight.parked)
        taken = self.inflight.unpark(count)
        assert taken == oldest[: len(taken)]  # oldest first
        self._launch(taken)

    @precondition(lambda self: not self.tasks)
    @rule(forming=st.booleans())
    def give_back_unstarted(self, forming: bool) -> None:
        taken = self.inflight.unstarted(forming=forming)
        places = {"waiting", "parked"} | ({"forming"} if forming else set())
        assert sorted(taken, key=id) == sorted((w for w, p in self.where.items() if p in places), key=id)
        for work in taken:
            self.where[work] = "buffer"

    # -- the invariant --------------------------------------------------------------------------------------------
    @invariant()
    def each_message_in_one_place(self) -> None:
        inflight = self.inflight
        places: dict[str, set[Work]] = {
            "forming": set(inflight.forming),
            "waiting": set(inflight.waiting),
            "parked": set(inflight.parked),
            "held": set(inflight.held),
        }
        assert len(inflight.forming) == len(places["forming"])
        assert len(inflight.parked) == len(places["parked"])
        for name, works in places.items():
            for other, others in places.items():
                assert name == other or not works & others, (name, other)
        running = set(inflight.running)
        for work, place in self.where.items():
            mine = {name for name, works in places.items() if work in works}
            assert mine == ({place} if place in places else set()), (work, place, mine)
            if place in ("calling", "settling"):
                assert work in running, (work, place)
            else:  # done, waiting, parked or held: in running only while the task that settled it runs
                assert (work in running) == (self._task_of(work) is not None), (work, place)
        assert inflight.calling == sum(t.calling for t in self.tasks)


TestMoves = Moves.TestCase
TestMoves.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
