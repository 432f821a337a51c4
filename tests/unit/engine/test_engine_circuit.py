"""The circuit tells a sick service from sick messages (on the twin): retries of failing messages are no storm,
slow keys beside answered ones are no outage, a frozen service is one, and only a real answer closes it."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from dataclasses import replace

import pytest
from twin import TOPIC, Rig, ScriptedCaller, pipeline_config, record

from streamcar.engine.breaker import REFUSALS, State
from streamcar.event import Event, Reply

TP0, TP1 = (TOPIC, 0), (TOPIC, 1)


def log(partition: int, count: int, keys: int) -> list:  # type: ignore[type-arg]
    return [record(partition, i, b"k%d" % (i % keys), b"%d-%d" % (partition, i)) for i in range(count)]


async def test_messages_that_fail_twice_then_succeed_never_open_it() -> None:
    """Case (a): 1 in 13 messages gets a 503 twice, then succeeds; the others are answered."""

    def answer(event: Event, attempt: int) -> Reply:
        if event.offset % 13 == 0 and attempt <= 2:
            return Reply.retry(error="HTTP 503", kind="http-status")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    config = pipeline_config(max_in_flight=32, retry={"attempts": 4, "initial_backoff": "1ms", "max_backoff": "2ms"})
    logs = {TP0: log(0, 1500, keys=200), TP1: log(1, 1500, keys=200)}
    async with Rig(logs, caller, config) as rig:
        await rig.until(lambda: len(rig.out()) == 3000, "every reply", within=20)
    assert rig.pipeline.circuit_opened == 0
    assert rig.out("dlq") == []


async def test_slow_keys_timing_out_beside_answered_keys_are_not_an_outage() -> None:
    """Case (b): 5 of 100 keys never answer in time while the others, a steady stream, are answered: the circuit
    stays closed, the fast keys flow, and the slow keys' messages end as dead letters once their attempts are
    spent. (Were only slow keys left, nothing else answered, a slow key could not be told from a frozen service:
    that opens the circuit until an answer says otherwise.)"""

    async def answer(event: Event, attempt: int) -> Reply:
        if (event.key or b"") in SLOW:
            await asyncio.sleep(0.05)  # the call timeout, as the HTTP caller reports it
            return Reply.retry(error="no reply within 50ms", kind="timeout")
        await asyncio.sleep(0.002)
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    config = pipeline_config(max_in_flight=32, retry={"attempts": 2, "initial_backoff": "1ms", "max_backoff": "2ms"})
    slow = [record(0, i, b"k%d" % (i % 5), b"slow") for i in range(50)]  # 10 per slow key
    async with Rig({TP0: slow}, caller, config) as rig:
        assert rig.consumer is not None
        offset = len(slow)
        while len(rig.out("dlq")) < len(slow):  # a steady stream of fast keys meanwhile
            rig.consumer.append(TP0, [record(0, offset + i, b"f%d" % (i % 95), b"fast") for i in range(20)])
            offset += 20
            await asyncio.sleep(0.01)
            assert offset < 20 * 2000, "the slow keys' dead letters did not come"
        await rig.until(lambda: len(rig.out()) == offset - len(slow), "every fast reply")
    assert rig.pipeline.circuit_opened == 0
    assert len(rig.out("dlq")) == len(slow)


SLOW = {b"k%d" % i for i in range(5)}


async def test_a_frozen_service_opens_it_dead_letters_nothing_and_only_an_answer_closes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Case (c): every call times out while the service is frozen, one at a time per partition; the call timeout
    is longer than the circuit's open_for, so a probe round can find nothing parked."""
    loop = asyncio.get_running_loop()
    thawed: list[float] = []
    frozen_until = loop.time() + 1.0

    async def answer(event: Event, attempt: int) -> Reply:
        if loop.time() < frozen_until:
            await asyncio.sleep(0.1)
            return Reply.retry(error="no reply within 100ms", kind="timeout")
        thawed.append(loop.time())
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    config = pipeline_config(
        ordering="partition",
        retry={"attempts": 3, "initial_backoff": "1ms", "max_backoff": "2ms"},
        circuit_breaker={"open_for": "20ms", "max_open": "80ms", "consecutive": 3},
    )
    with caplog.at_level(logging.INFO, logger="streamcar.pipeline"):
        async with Rig({TP0: log(0, 20, keys=20), TP1: log(1, 20, keys=20)}, caller, config) as rig:
            await rig.until(lambda: len(rig.out()) == 40, "every reply", within=10)
    assert rig.out("dlq") == []  # no healthy message spent its attempts on the freeze
    assert rig.pipeline.circuit_opened >= 1
    closed = [r for r in caplog.records if "circuit closed" in r.getMessage()]
    assert closed  # and it closed only on a real answer, once the service had thawed
    assert all(r.created >= min(thawed) - loop.time() + _wall(loop) for r in closed)


def _wall(loop: asyncio.AbstractEventLoop) -> float:
    import time

    return time.time()


async def test_with_nothing_to_probe_it_stays_half_open_and_probes_with_what_comes() -> None:
    """The circuit opened, and its failed message waits for its retry (a backoff longer than open_for): when the
    probe is due there is nothing to probe with. It does not close on that: consumption resumes, and the next
    message is the probe."""

    def answer(event: Event, attempt: int) -> Reply:
        if event.offset == 0 and attempt == 1:
            return Reply.retry(error="connection refused", kind="connection")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer)
    config = pipeline_config(
        retry={"attempts": 3, "initial_backoff": "400ms", "max_backoff": "400ms"},
        circuit_breaker={"open_for": "20ms", "max_open": "40ms"},
    )
    async with Rig({TP0: log(0, 1, keys=2)}, caller, config) as rig:
        breaker = rig.pipeline._breaker
        await rig.until(lambda: breaker.state is State.HALF_OPEN, "the probe to be due")
        await asyncio.sleep(0.05)
        assert breaker.state is State.HALF_OPEN  # nothing to probe with: not closed on that
        assert rig.consumer is not None
        assert not rig.consumer.paused  # consuming: what comes is the probe
        rig.consumer.append(TP0, [record(0, 1, b"k1", b"0-1")])
        await rig.until(lambda: breaker.state is State.CLOSED, "the probe's answer to close it", within=0.3)
        await rig.until(lambda: sorted(rig.out()) == [b"0-0", b"0-1"], "both replies")


async def test_parked_retries_resume_paced_when_it_closes() -> None:
    """Many retries were parked while the service was down; when it answers again they are not relaunched all
    at once: ``probes`` calls at first, and one more for each call answered since (twice as many each round trip),
    until max_in_flight."""
    down = asyncio.Event()
    down.set()
    answered = 0  # calls answered since the service came back

    def answer(event: Event, attempt: int) -> Reply:
        nonlocal answered
        if down.is_set():
            return Reply.retry(error="HTTP 503", kind="http-status")
        answered += 1
        return Reply.success(event.value)

    starts: list[tuple[int, int]] = []  # per call started since the service came back: (in calls, answered)

    class Traced(ScriptedCaller):
        async def call(self, events: Sequence[Event]) -> list[Reply]:
            if not down.is_set():
                starts.append((self.in_flight + len(events), answered))
            return await super().call(events)

    caller = Traced(answer, delay=0.005)
    config = pipeline_config(
        max_in_flight=64,
        retry={"attempts": 5, "initial_backoff": "1ms", "max_backoff": "2ms"},
        circuit_breaker={"open_for": "20ms", "max_open": "40ms", "probes": 2},
    )
    async with Rig({TP0: log(0, 300, keys=300)}, caller, config) as rig:
        breaker = rig.pipeline._breaker
        await rig.until(lambda: breaker.state is not State.CLOSED, "the circuit to open")
        await rig.until(lambda: len(rig.pipeline._inflight.parked) >= 30, "retries parked")
        down.clear()
        await rig.until(lambda: len(rig.out()) == 300, "every reply", within=10)
    assert rig.out("dlq") == []
    assert starts[0][0] <= 2  # the probes
    for in_calls, so_far in starts:
        assert in_calls <= min(2 + so_far, 64), starts  # the ramp: probes, plus one per call answered
    assert max(in_calls for in_calls, _ in starts) == 64  # and it reached max_in_flight


async def test_a_probe_is_a_message_not_tried_yet_even_when_it_has_to_be_consumed_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The circuit opened at start-up: the first five messages got a 503 (each fails twice, then succeeds), and
    they are all there is when the probe is due. Probing with one of those retries would fail again, and again
    each round, the wait doubling up to max_open (a stall of minutes), since it fails before the records a resume
    fetches can come. Consumption resumes instead, and the messages that come are the probes: the first probe
    round closes it."""

    def answer(event: Event, attempt: int) -> Reply:
        if event.offset < 5 and attempt <= 2:
            return Reply.retry(error="HTTP 503", kind="http-status")
        return Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    config = pipeline_config(
        retry={"attempts": 4, "initial_backoff": "1ms", "max_backoff": "2ms"},
        circuit_breaker={"open_for": "50ms", "max_open": "2s"},
    )
    with caplog.at_level(logging.INFO, logger="streamcar.pipeline"):
        async with Rig({TP0: log(0, 5, keys=5)}, caller, config) as rig:
            breaker = rig.pipeline._breaker
            await rig.until(lambda: breaker.state is State.OPEN, "the circuit to open")
            assert rig.consumer is not None
            rig.consumer.fetch_delay = 0.01  # a resume's records take a fetch to come
            rig.consumer.append(TP0, log(0, 100, keys=100)[5:])  # more comes while it is open, other keys
            await rig.until(lambda: len(rig.out()) == 100, "every reply", within=5)
    assert rig.out("dlq") == []
    assert not [r for r in caplog.records if "circuit still open" in r.getMessage()]
    assert rig.pipeline.circuit_opened == 1


async def test_a_wave_of_calls_whose_failures_end_first_is_not_silence() -> None:
    """Case (a) in the shape that tripped it on the real broker: 1 message in 13 gets a 503 twice, keys spread
    over partitions, 128 in flight, retries after 200 ms. Held lanes free their next messages together, so calls go
    out in waves just after an answer, and a wave's failures can all end before its successes: taken for silence,
    five of them opened the circuit within a second, and its probes (retries, failing again) kept it open."""

    def answer(event: Event, attempt: int) -> Reply:
        if (event.partition * 7919 + event.offset) % 13 == 3 and attempt <= 2:
            return Reply.retry(error="HTTP 503", kind="http-status")
        return Reply.success(event.value)

    keys = [b"k%d" % (i % 211) for i in range(12_000)]
    logs: dict[tuple[str, int], list] = {}  # type: ignore[type-arg]
    for key in keys:
        tp = (TOPIC, zlib.crc32(key) % 6)
        part = logs.setdefault(tp, [])
        part.append(record(tp[1], len(part), key, b"%d-%d" % (tp[1], len(part))))
    caller = ScriptedCaller(answer, delay=0.002)
    config = pipeline_config(max_in_flight=128, retry={"attempts": 4, "initial_backoff": "200ms", "max_backoff": "2s"})
    async with Rig(logs, caller, config) as rig:
        # a bound on liveness, not on pace: 7 s on two quiet cores, 19-28 s beside two busy loops, over 20 s on a
        # loaded CI worker (the twin runs on the wall clock here); whether the circuit opened, the bug, is below
        await rig.until(lambda: len(rig.out()) == len(keys), "every reply", within=120)
    assert rig.pipeline.circuit_opened == 0, rig.pipeline._breaker.reason
    assert rig.out("dlq") == []


def refused(event: Event) -> Reply:
    return replace(Reply.dead_letter("HTTP 404: not found", kind="http-status"), refusal="HTTP 404 on POST /typo")


async def test_a_reject_storm_pauses_after_a_few_dead_letters_and_holds_the_rest() -> None:
    """Case (d): a typo in the path, every call 404. A few messages are dead-lettered (each could be poison), then
    the pipeline pauses with the refusal named; the messages refused after that wait. Once the service accepts
    the calls again (the setup is fixed), every one of them gets its outcome."""
    broken = asyncio.Event()
    broken.set()

    def answer(event: Event, attempt: int) -> Reply:
        return refused(event) if broken.is_set() else Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    config = pipeline_config(max_in_flight=32, circuit_breaker={"open_for": "20ms", "max_open": "40ms"})
    async with Rig({TP0: log(0, 300, keys=300)}, caller, config) as rig:
        breaker = rig.pipeline._breaker
        await rig.until(lambda: breaker.state is not State.CLOSED, "the circuit to open")
        assert breaker.reason == "the service rejects everything: HTTP 404 on POST /typo"
        await rig.until(lambda: len(caller.calls) > 60, "probe rounds")  # several refused probes
        assert breaker.state is not State.CLOSED
        assert len(rig.out("dlq")) == REFUSALS - 1  # and no more, however many probes were refused
        broken.clear()
        await rig.until(lambda: len(rig.out()) + len(rig.out("dlq")) == 300, "every outcome")
    assert len(rig.out("dlq")) == REFUSALS - 1
    assert rig.pipeline.circuit_opened == 1


async def test_a_lone_refused_message_among_answered_ones_is_dead_lettered_at_once() -> None:
    def answer(event: Event, attempt: int) -> Reply:
        return refused(event) if event.offset % 5 == 0 else Reply.success(event.value)

    caller = ScriptedCaller(answer, delay=0.001)
    async with Rig({TP0: log(0, 300, keys=300)}, caller, pipeline_config(max_in_flight=32)) as rig:
        await rig.until(lambda: len(rig.out()) + len(rig.out("dlq")) == 300, "every outcome")
    assert len(rig.out("dlq")) == 60
    assert {attempt for attempt in caller.attempts.values()} == {1}
    assert rig.pipeline.circuit_opened == 0


async def test_retries_parked_through_an_outage_and_then_refused_are_a_storm_too() -> None:
    """The service was down (the circuit opened, retries parked), and comes back set up wrong: every call 404.
    The parked retries are refused one after another; they count like untried messages, so the pipeline pauses
    after 9 dead letters again rather than dead-lettering every one of them."""
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 0.3

    def answer(event: Event, attempt: int) -> Reply:
        if loop.time() < down_until:
            return Reply.retry(error="connection refused", kind="connection")
        return refused(event)

    config = pipeline_config(max_in_flight=32, circuit_breaker={"open_for": "20ms", "max_open": "40ms"})
    async with Rig({TP0: log(0, 100, keys=100)}, ScriptedCaller(answer, delay=0.001), config) as rig:
        breaker = rig.pipeline._breaker
        await rig.until(lambda: breaker.refusing is not None, "the reject storm", within=5)
        await asyncio.sleep(0.2)  # a few probe rounds more
    assert len(rig.out("dlq")) <= REFUSALS - 1
