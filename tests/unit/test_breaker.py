"""The circuit breaker's state machine: when it opens, how it probes, when it closes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamcar.config import CircuitBreakerConfig
from streamcar.engine.breaker import REFUSALS, CircuitBreaker, Closed, Opened, State
from streamcar.failures import Kind

OUTAGE_KINDS = sorted(kind.value for kind in Kind if kind.outage)


def breaker(**settings: object) -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerConfig.model_validate(settings))


def test_a_refused_connection_opens_at_once() -> None:
    b = breaker()
    opened = b.record(0.0, "connection")
    assert isinstance(opened, Opened)
    assert opened.first
    assert opened.wait == 1.0
    assert "could not be reached" in opened.reason
    assert b.state is State.OPEN
    assert not b.allows()
    assert b.opened == 1


def test_consecutive_failures_open_and_a_success_resets_the_run() -> None:
    b = breaker(consecutive=3, min_calls=1000)
    assert b.record(0.0, "timeout") is None
    assert b.record(0.1, "http-status") is None
    assert b.record(0.2, None) is None  # the service answered: the run starts over
    assert b.record(0.3, "timeout") is None
    assert b.record(0.4, "timeout") is None
    opened = b.record(0.5, "grpc-status")
    assert isinstance(opened, Opened)
    assert "3 calls in a row" in opened.reason


def test_a_failure_while_other_calls_were_answered_is_the_message_not_the_service() -> None:
    """Ten slow keys time out (5 s) while the other keys are answered: never an outage. The same timeouts with
    nothing answered meanwhile (a frozen service) open it."""
    b = breaker(consecutive=5, min_calls=1000)
    for i in range(10):
        b.record(5.0 + i * 0.01 - 0.001, None, started=5.0 + i * 0.01 - 0.002)  # a fast key, answered
        assert b.record(5.0 + i * 0.01, "timeout", started=0.0 + i * 0.01) is None
    assert b.state is State.CLOSED
    frozen = breaker(consecutive=5, min_calls=1000)
    frozen.record(0.0, None, started=0.0)
    transitions = [frozen.record(5.0 + i * 0.01, "timeout", started=0.1 + i * 0.01) for i in range(5)]
    assert transitions[:4] == [None] * 4
    opened = transitions[4]
    assert isinstance(opened, Opened)
    assert "and no other call either" in opened.reason


def test_retries_do_not_count_again_in_the_failure_ratio() -> None:
    """1 in 13 messages fails twice and then succeeds: the ratio counts each message once, on its first try."""
    b = breaker(consecutive=1000, min_calls=20, failure_ratio=0.5, window="10s")
    now = 0.0
    for message in range(1300):
        now += 0.005
        if message % 13 == 0:
            assert b.record(now, "http-status", started=now - 0.001) is None  # first try: counts
            for _ in range(4):  # its retries (and a storm of them), answered while nothing else was
                assert b.record(now, "http-status", started=now - 0.001, fresh=False) is None
        else:
            assert b.record(now, None, started=now - 0.001) is None
    assert b.state is State.CLOSED
    assert b.opened == 0


def test_silence_is_judged_from_when_the_call_began() -> None:
    b = breaker()
    b.record(10.0, None, started=9.9)
    assert b.silent(10.5)  # nothing answered since 10.5
    assert not b.silent(9.95)  # a call answered at 10.0
    assert b.silent(None)


def test_the_failure_ratio_opens_only_with_enough_calls_in_the_window() -> None:
    b = breaker(consecutive=1000, min_calls=10, failure_ratio=0.5, window="10s")
    now = 0.0
    for _ in range(4):  # 8 calls, half failed: too few calls to judge
        assert b.record(now, None) is None
        assert b.record(now, "http-status") is None
        now += 0.1
    assert b.record(now, None) is None  # 9 calls, 4 failed
    opened = b.record(now, "http-status")  # 10 calls, 5 failed
    assert isinstance(opened, Opened)
    assert "5 of 10 messages" in opened.reason


def test_old_calls_leave_the_window() -> None:
    b = breaker(consecutive=1000, min_calls=4, failure_ratio=0.5, window="10s")
    for at in (0.0, 1.0, 2.0):
        assert b.record(at, "timeout") is None  # three failures: too few calls to judge
    # 20 s later they are outside the window; counted, a fourth failure would make 4 of 4
    assert b.record(20.0, "timeout") is None
    assert b.state is State.CLOSED
    for at in (20.1, 20.2):
        assert b.record(at, "timeout") is None
    assert isinstance(b.record(20.3, "timeout"), Opened)  # 4 of 4 within the window


def test_answers_that_are_not_outages_never_open_it() -> None:
    b = breaker(consecutive=1, min_calls=1)
    for kind in ("retry", "bad-reply", "internal", None):
        assert b.record(0.0, kind) is None
    assert b.state is State.CLOSED


def test_a_failed_probe_reopens_with_a_doubled_wait_up_to_max_open() -> None:
    b = breaker(open_for="1s", max_open="3s")
    b.record(0.0, "connection")
    waits = []
    now = 0.0
    for _ in range(4):
        now = b.open_until
        assert b.due(now)
        b.probe(1)
        assert b.state is State.HALF_OPEN
        assert not b.allows()
        reopened = b.record(now, "connection", probe=True)
        assert isinstance(reopened, Opened)
        assert not reopened.first
        waits.append(reopened.wait)
    assert waits == [2.0, 3.0, 3.0, 3.0]
    assert b.opened == 1  # one outage, however many probes


def test_a_probe_that_gets_through_closes_it_and_resets_the_wait() -> None:
    b = breaker(open_for="1s")
    b.record(5.0, "connection")
    assert not b.due(5.5)
    assert b.due(6.0)
    b.probe(1)
    assert b.record(6.1, "timeout") is None  # a call from before the opening: only the probe decides
    closed = b.record(6.2, None, probe=True)
    assert isinstance(closed, Closed)
    assert abs(closed.outage - 1.2) < 1e-9
    assert b.allows()
    assert isinstance(b.record(7.0, "connection"), Opened)
    assert b.open_until == 8.0  # the wait is back to open_for


def test_the_first_probe_that_gets_through_closes_it_and_all_must_fail_to_reopen() -> None:
    b = breaker()
    b.record(0.0, "connection")
    b.probe(3)
    assert b.record(1.0, "http-status", probe=True) is None
    assert b.record(1.0, "timeout", probe=True) is None
    assert b.state is State.HALF_OPEN
    assert isinstance(b.record(1.1, None, probe=True), Closed)
    assert b.record(1.2, None, probe=True) is None  # the last probe answers after the circuit closed
    b.record(2.0, "connection")
    b.probe(2)
    assert b.record(3.0, "http-status", probe=True) is None
    reopened = b.record(3.0, "http-status", probe=True)
    assert isinstance(reopened, Opened)
    assert reopened.wait == 2.0


def test_disabled_never_opens() -> None:
    b = breaker(enabled=False)
    for i in range(100):
        assert b.record(float(i), "connection") is None
    assert b.allows()


@given(st.lists(st.tuples(st.sampled_from([None, *OUTAGE_KINDS, "retry"]), st.booleans()), max_size=200))
def test_only_a_probe_ever_closes_an_open_circuit(calls: list[tuple[str | None, bool]]) -> None:
    b = breaker(consecutive=3, min_calls=5)
    now = 0.0
    for failure, probe_when_due in calls:
        now += 0.25
        was = b.state
        probing = False
        if probe_when_due and b.due(now):
            b.probe(1)
            probing = True
        transition = b.record(now, failure, probe=probing)
        if isinstance(transition, Closed):
            assert probing
            assert failure not in OUTAGE_KINDS
        if was is State.OPEN and not probing:
            assert b.state is State.OPEN
        assert b.allows() == (b.state is State.CLOSED)


NOT_FOUND = "HTTP 404 on POST /typo"


def test_a_reject_storm_opens_it_after_refusals_in_a_row_and_names_the_refusal() -> None:
    b = breaker()
    for i in range(REFUSALS - 1):
        assert b.record(i * 0.01, None, refusal=NOT_FOUND) is None  # each of these is dead-lettered: poison
    assert b.refusing is None
    opened = b.record(1.0, None, refusal=NOT_FOUND)
    assert isinstance(opened, Opened)
    assert opened.reason == f"the service rejects everything: {NOT_FOUND}"
    assert b.refusing == NOT_FOUND


def test_refusals_between_answers_are_poison_messages_not_a_storm() -> None:
    b = breaker()
    for i in range(1000):  # 1 in 2 refused, the others answered: never a storm
        assert b.record(i * 0.01, None, refusal=NOT_FOUND if i % 2 else None) is None
    assert b.state is State.CLOSED


def test_only_the_same_refusal_of_distinct_messages_counts() -> None:
    b = breaker()
    for i in range(REFUSALS - 1):
        b.record(i * 0.01, None, refusal=NOT_FOUND)
    assert b.record(0.5, None, refusal="HTTP 401 on POST /typo") is None  # another refusal starts over
    for _ in range(REFUSALS - 2):
        b.record(0.6, None, refusal="HTTP 401 on POST /typo")
    assert b.record(0.7, None, refusal=NOT_FOUND, counts=False) is None  # a message counted twice already
    assert b.state is State.CLOSED
    assert isinstance(b.record(0.8, None, refusal="HTTP 401 on POST /typo"), Opened)


def test_a_batch_counts_its_messages() -> None:
    b = breaker()
    assert isinstance(b.record(0.0, None, refusal=NOT_FOUND, messages=REFUSALS), Opened)


def test_a_refused_probe_keeps_it_open_and_an_answered_one_closes_it() -> None:
    b = breaker()
    b.record(0.0, None, refusal=NOT_FOUND, messages=REFUSALS)
    b.probe(1)
    reopened = b.record(2.0, None, probe=True, refusal=NOT_FOUND)
    assert isinstance(reopened, Opened)
    assert not reopened.first
    assert reopened.wait == 2.0
    assert "rejects everything" in reopened.reason
    assert b.refusing == NOT_FOUND
    b.probe(1)
    assert isinstance(b.record(5.0, None, probe=True), Closed)
    assert b.refusing is None


def test_a_refusal_answering_a_probe_of_an_outage_closes_it() -> None:
    """Open on refused connections, the probe is refused with a 404: the service is up (that message is poison)."""
    b = breaker()
    b.record(0.0, "connection")
    b.probe(1)
    assert isinstance(b.record(2.0, None, probe=True, refusal=NOT_FOUND), Closed)


EVENTS = st.sampled_from(["answered", "refused-a", "refused-b", "refused-a-retry", "503"])


@given(st.lists(EVENTS, max_size=200))
def test_a_reject_storm_is_exactly_refusals_in_a_row_of_one_kind(events: list[str]) -> None:
    """Only fresh refusals of one kind, REFUSALS in a row with no answer between, open it; a retry's refusal and
    a 503 neither count nor break the run."""
    b = breaker(consecutive=100_000, min_calls=100_000)
    run_kind, run = "", 0
    for i, name in enumerate(events):
        now = i * 0.001
        if name == "answered":
            transition = b.record(now, None)
            run = 0
        elif name == "503":
            transition = b.record(now, "http-status", started=now)
        else:
            kind = name.split("-")[1]
            fresh = not name.endswith("retry")
            transition = b.record(now, None, refusal=kind, counts=fresh)
            if fresh:
                run = run + 1 if kind == run_kind else 1
                run_kind = kind
        if run >= REFUSALS:
            assert isinstance(transition, Opened)
            assert b.refusing == run_kind
            return
        assert transition is None
    assert b.state is State.CLOSED
