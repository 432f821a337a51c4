"""Queue mode's engine on the share-group twin (no broker): acknowledgement per record, a retry as a release
and a redelivery, the dead letter after the last attempt, members sharing a group, and locks that never run out
on records a member did not start."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from share_twin import TwinShareGroup, TwinShareMember, member_factory
from twin import TOPIC, ScriptedCaller, TwinProducer, echo, record

from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.engine.pipeline import Pipeline
from streamcar.engine.queue import Pace, ShareSource
from streamcar.event import Event, Reply
from streamcar.kafka.share_group import ShareGroupSettings

KAFKA = KafkaConfig(bootstrap_servers="twin:9092")


def queue_config(**overrides: Any) -> PipelineConfig:
    spec: dict[str, Any] = {
        "consume": {"topics": [TOPIC], "share_group": "q"},
        "call": {"url": "python:twin:handler", "timeout": "1s"},
        "ordering": "none",
        "publish": {"topic": "out"},
        "dead_letter": {"topic": "dlq"},
        "retry": {"attempts": 3, "initial_backoff": "1ms", "max_backoff": "5ms"},
        "shutdown_timeout": "1s",
        **overrides,
    }
    return PipelineConfig.model_validate(spec)


class Member:
    """One sidecar of the share group: a pipeline on a twin member."""

    def __init__(self, group: TwinShareGroup, caller: ScriptedCaller, config: PipelineConfig, fetch: int = 100) -> None:
        self.members: list[TwinShareMember] = []
        self.producer = TwinProducer()
        settings = ShareGroupSettings(lock=group.lock, deliveries=group.deliveries)
        self.source = ShareSource("p", config, KAFKA, prepare=lambda *args, **kw: settings)
        self.pipeline = Pipeline(
            "p",
            config,
            KAFKA,
            caller,
            self.producer,  # type: ignore[arg-type]
            source=self.source,
            consumer_factory=member_factory(group, self.members, fetch),
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Member:
        self._task = asyncio.get_running_loop().create_task(self.pipeline.run(self._stop))
        return self

    async def close(self) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    def out(self, topic: str = "out") -> list[bytes]:
        return [value or b"" for _, value, _ in self.producer.sent[topic]]


async def until(condition: Any, what: str, within: float = 5.0) -> None:
    """Wait (bounded) until ``condition`` holds; the engine has no event for each of these, so poll briskly."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


def inputs(n: int) -> list[Any]:
    return [record(0, i, None, b"%d" % i) for i in range(n)]


async def test_a_retry_is_a_release_redelivered_with_its_count_and_dead_lettered_at_the_last_attempt() -> None:
    def seven_and_thirteen_fail(event: Event, attempt: int) -> Reply:
        return Reply.retry(error="always") if event.offset in (7, 13) else Reply.success(event.value)

    group = TwinShareGroup(inputs(50))
    member = Member(group, ScriptedCaller(seven_and_thirteen_fail), queue_config()).start()
    await until(lambda: group.done == 50, "every record acknowledged")
    await member.close()
    assert set(group.state.values()) == {"accept"}  # a dead letter acknowledged is accepted too
    assert {o: group.delivered[o] for o in (7, 13)} == {7: 3, 13: 3}  # two releases, then the dead letter
    assert all(group.delivered[o] == 1 for o in range(50) if o not in (7, 13))
    letters = member.producer.sent["dlq"]
    assert [dict(headers)["streamcar-attempts"] for _, _, headers in letters] == [b"3", b"3"]
    assert sorted(member.out()) == sorted(b"%d" % i for i in range(50) if i not in (7, 13))
    assert member.pipeline.stats.results["released"] == 4
    assert member.members[0].refused == 0


async def test_two_members_share_the_group_and_each_record_is_done_once() -> None:
    group = TwinShareGroup(inputs(400))
    callers = [ScriptedCaller(echo, delay=0.002) for _ in range(2)]
    members = [Member(group, caller, queue_config(max_in_flight=16), fetch=40).start() for caller in callers]
    await until(lambda: group.done == 400, "every record acknowledged")
    for member in members:
        await member.close()
    assert all(len(caller.called()) > 40 for caller in callers)  # both had a real share
    replies = Counter(value for member in members for value in member.out())
    assert replies == Counter(b"%d" % i for i in range(400))  # each exactly once
    assert set(group.delivered.values()) == {1}
    assert group.expired == 0


async def test_records_not_started_within_half_their_lock_go_to_another_member() -> None:
    # a 2 s lock: at 0.4 s, a CI run at load average 25 let 200 locks run out before the member gave them back
    group = TwinShareGroup(inputs(300), lock=2.0)
    short = {"url": "python:twin:handler", "timeout": "100ms"}  # a call started at half the lock ends within it
    slow_config, fast_config = queue_config(max_in_flight=1, call=short), queue_config(max_in_flight=32, call=short)
    slow = Member(group, ScriptedCaller(echo, delay=0.05), slow_config, fetch=100).start()
    await until(lambda: group.delivered[0] == 1, "the slow member's first fetch")
    fast = Member(group, ScriptedCaller(echo, delay=0.001), fast_config, fetch=100).start()
    await until(lambda: group.done == 300, "every record acknowledged")
    released = slow.pipeline.stats.results["released"]
    await slow.close()
    await fast.close()
    assert group.expired == 0  # no lock ran out: what the slow member could not start went back in time
    assert released > 50, released
    assert len(fast.out()) > 200, len(fast.out())  # and the fast member did it
    assert Counter([*slow.out(), *fast.out()]) == Counter(b"%d" % i for i in range(300))


async def test_a_stopping_member_releases_what_it_did_not_start_at_once() -> None:
    group = TwinShareGroup(inputs(100), lock=30.0)
    caller = ScriptedCaller(echo, delay=0.2)
    first = Member(group, caller, queue_config(max_in_flight=2), fetch=100).start()
    await until(lambda: caller.in_flight == 2, "two calls under way")
    closing = asyncio.get_running_loop().create_task(first.close())
    await until(lambda: len(group.owner) == 2, "the 98 not started released")
    assert caller.in_flight == 2  # at once: the two calls still run (shutdown drains them)
    await closing
    assert group.owner == {}
    assert group.done == 2
    second = Member(group, ScriptedCaller(echo), queue_config(max_in_flight=32)).start()
    await until(lambda: group.done == 100, "every record acknowledged", within=2.0)  # not after a 30 s lock
    await second.close()
    assert group.expired == 0
    assert Counter([*first.out(), *second.out()]) == Counter(b"%d" % i for i in range(100))


async def test_a_service_down_opens_the_circuit_dead_letters_nothing_and_every_record_is_done_after() -> None:
    """While the service refuses connections, the circuit opens; what the member held goes back to the group at
    half its lock (one delivery more), and is done once the service is back."""
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 1.0

    def answer(event: Event, attempt: int) -> Reply:
        if loop.time() < down_until:
            return Reply.retry(error="connection refused", kind="connection")
        return Reply.success(event.value)

    group = TwinShareGroup(inputs(200), lock=2.0, deliveries=4)
    config = queue_config(max_in_flight=8, circuit_breaker={"open_for": "20ms", "max_open": "100ms", "consecutive": 3})
    member = Member(group, ScriptedCaller(answer), config, fetch=32).start()
    await until(lambda: group.done == 200, "every record acknowledged", within=10)
    await member.close()
    assert member.producer.sent["dlq"] == []  # the outage cost no record its attempts
    assert set(group.state.values()) == {"accept"}
    assert member.pipeline.circuit_opened >= 1
    assert max(group.delivered.values()) <= 2, group.delivered.most_common(3)  # released once, at half the lock
    assert Counter(member.out()) == Counter(b"%d" % i for i in range(200))


async def test_a_long_outage_dead_letters_records_on_their_last_delivery_rather_than_let_them_be_archived() -> None:
    """Each lock the outage outlasts costs what the member held a delivery; one on its last delivery, released,
    would be archived by the broker with no outcome at all: it is dead-lettered instead."""
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 3.0

    def answer(event: Event, attempt: int) -> Reply:
        if loop.time() < down_until:
            return Reply.retry(error="connection refused", kind="connection")
        return Reply.success(event.value)

    group = TwinShareGroup(inputs(100), lock=0.4, deliveries=4)
    config = queue_config(max_in_flight=8, circuit_breaker={"open_for": "20ms", "max_open": "100ms", "consecutive": 3})
    member = Member(group, ScriptedCaller(answer), config, fetch=32).start()
    await until(lambda: group.done == 100, "every record acknowledged", within=15)
    await member.close()
    assert "archived" not in group.state.values()  # every record has an outcome
    letters = {int(value or b"-1") for _, value, _ in member.producer.sent["dlq"]}
    assert letters, "the outage outlasted the deliveries of what the member held"
    # dead-lettered without a call, then rejected (or after a failed call on their last delivery, then accepted)
    assert "reject" in {group.state[o] for o in letters}
    kinds = {dict(headers)["streamcar-error-kind"] for _, _, headers in member.producer.sent["dlq"]}
    assert kinds == {b"exhausted"}
    assert Counter(member.out()) + Counter(b"%d" % o for o in letters) == Counter(b"%d" % i for i in range(100))


async def test_records_released_without_a_call_keep_their_attempts_for_the_calls() -> None:
    """Issue 30, finding 6: with a backlog, healthy records released unstarted by their member came back with a
    higher delivery count, and one 503 then dead-lettered them "after 4 attempts" (192 of 193 dead letters after
    exactly one call). The attempts are the calls: a record this member released without calling it keeps them."""
    group = TwinShareGroup(inputs(120), lock=0.4, deliveries=10)
    fails_once: set[int] = set()

    def first_call_fails(event: Event, attempt: int) -> Reply:
        if event.offset % 3 == 0 and event.offset not in fails_once:
            fails_once.add(event.offset)
            return Reply.retry(error="HTTP 503")
        return Reply.success(event.value)

    short = {"url": "python:twin:handler", "timeout": "50ms"}
    config = queue_config(max_in_flight=2, call=short, retry={"attempts": 2, "initial_backoff": "1ms"})
    member = Member(group, ScriptedCaller(first_call_fails, delay=0.01), config, fetch=120).start()
    await until(lambda: group.done == 120, "every record acknowledged", within=30.0)
    released = member.pipeline.stats.results["released"]
    await member.close()
    assert released > 40, released  # the member could not start most of a fetch within half the 0.4 s lock
    assert max(group.delivered.values()) > 2  # so records came back more often than they were called
    assert member.producer.sent["dlq"] == []  # one failure in two attempts: nothing dead-lettered
    assert sorted(member.out()) == sorted(b"%d" % i for i in range(120))


def test_the_pace_is_measured_only_while_records_wait_and_some_are_done() -> None:
    pace = Pace()
    assert pace.can_start(10.0, 8) is None  # nothing measured: nothing goes back early
    pace.look(0.0, busy=True)
    pace.done = 100
    pace.look(1.0, busy=True)
    assert pace.rate == 100.0
    assert pace.can_start(2.0, 8) == int(100 * 2 * Pace.SAFETY) + 8
    pace.look(2.0, busy=True)  # none done: an outage, not a pace
    assert pace.rate == 100.0
    pace.done = 150
    pace.look(3.0, busy=False)  # nothing waited at the end: its load, not its pace
    pace.done = 160
    pace.look(4.0, busy=True)  # nothing waited at the start either
    assert pace.rate == 100.0
    pace.done = 360
    pace.look(5.0, busy=True)
    assert pace.rate == 150.0  # the average with the new sample
    assert pace.can_start(-1.0, 8) == 8  # past the deadline: only the free slots
