"""librdkafka's own log, condensed (streamcar.kafka.rdlog): a burst of reconnect failures from every client and
thread is one line at once and one line with the count once the interval is over, each condition (broker, error)
keeps its own line, condition() drops only what changes from one attempt to the next, and Reachability puts the
failed broker and its error behind ``Broker transport failure`` until the broker answers.

No broker, no sleeps: the throttle runs on a clock the test moves.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.kafka.rdlog import INTERVAL, KafkaLog, Reachability, condition
from streamcar.logs import Throttle

FMT = "%s [%s] %s"  # what confluent-kafka passes to the logger's log()
REFUSED = "Connect to ipv4#127.0.0.1:9099 failed: Connection refused"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Lines(logging.Handler):
    """Every record of a logger, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


class Rig:
    """A KafkaLog on its own logger and throttle, with the clock of the throttle in hand."""

    def __init__(self, name: str) -> None:
        self.clock = Clock()
        self.throttle = Throttle(INTERVAL, clock=self.clock)
        self.lines = Lines()
        self.logger = logging.getLogger(name)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self.lines)

    def client(self) -> KafkaLog:
        """Another client (a consumer, a producer) of the same process: same throttle, same logger."""
        return KafkaLog(self.logger, self.throttle)

    def close(self) -> None:
        self.logger.removeHandler(self.lines)


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = Rig(f"tests.rdlog.{request.node.name}")
    yield made
    made.close()


def rd_line(broker: str, error: str, thread: str | None = None, after_ms: int = 0, state: str = "CONNECT") -> str:
    """A librdkafka broker line as it comes to the logger: thread prefix, broker, error, attempt tail."""
    return f"[thrd:{thread or broker}]: {broker}: {error} (after {after_ms}ms in state {state})"


def refused(port: int, thread: str | None = None, after_ms: int = 0) -> str:
    broker = f"127.0.0.1:{port}/bootstrap"
    return rd_line(broker, f"Connect to ipv4#127.0.0.1:{port} failed: Connection refused", thread, after_ms)


# --- the burst ---------------------------------------------------------------------------------------------------


def test_a_burst_of_refused_connections_is_one_line_then_one_line_with_the_count(rig: Rig) -> None:
    consumer, producer = rig.client(), rig.client()
    threads = ["127.0.0.1:9099/bootstrap", "main", "127.0.0.1:9099/1"]
    for i in range(300):
        client, name = (consumer, "rdkafka#consumer-1") if i % 2 else (producer, "rdkafka#producer-2")
        client.log(logging.ERROR, FMT, "FAIL", name, refused(9099, threads[i % 3], after_ms=i % 7))
        rig.clock.advance(INTERVAL / 1000)  # 300 lines in 3 s: all inside one interval

    assert len(rig.lines.records) == 1
    first = rig.lines.messages[0]
    assert REFUSED in first
    assert "more like it" not in first

    rig.clock.advance(INTERVAL)
    consumer.log(logging.ERROR, FMT, "FAIL", "rdkafka#consumer-1", refused(9099))
    assert len(rig.lines.records) == 2
    assert rig.lines.messages[1].endswith(f"(and 299 more like it in the last {INTERVAL:g}s)")
    assert REFUSED in rig.lines.messages[1]


def test_the_line_keeps_librdkafkas_shape_and_level(rig: Rig) -> None:
    text = refused(9099)
    rig.client().log(logging.WARNING, FMT, "FAIL", "rdkafka#consumer-1", text)
    (record,) = rig.lines.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"FAIL [rdkafka#consumer-1] {text}"


def test_a_condition_that_goes_quiet_starts_afresh_without_a_count(rig: Rig) -> None:
    log = rig.client()
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    rig.clock.advance(INTERVAL)
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    assert len(rig.lines.records) == 2
    assert "more like it" not in rig.lines.messages[1]


def test_the_count_restarts_with_each_interval(rig: Rig) -> None:
    log = rig.client()
    for burst in (5, 12, 3):
        for _ in range(burst):
            log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
        rig.clock.advance(INTERVAL)
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    tails = [message.rpartition(" failed: Connection refused")[2] for message in rig.lines.messages]
    assert len(tails) == 4
    assert "more like it" not in tails[0]
    assert [t.split("(and ")[1].split(" more")[0] for t in tails[1:]] == ["4", "11", "2"]


def test_a_line_just_before_the_interval_is_over_is_still_held_back(rig: Rig) -> None:
    log = rig.client()
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    rig.clock.advance(INTERVAL - 0.001)
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    assert len(rig.lines.records) == 1
    rig.clock.advance(0.001)
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    assert len(rig.lines.records) == 2


def test_counts_above_a_thousand_are_readable(rig: Rig) -> None:
    log = rig.client()
    for _ in range(1235):
        log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    rig.clock.advance(INTERVAL)
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    assert rig.lines.messages[-1].endswith("(and 1,234 more like it in the last 10s)")


# --- different conditions ----------------------------------------------------------------------------------------


def test_each_broker_and_each_error_is_a_condition_of_its_own(rig: Rig) -> None:
    log = rig.client()
    lines = [
        refused(9099),
        refused(9100),
        rd_line("127.0.0.1:9099/bootstrap", "Connection setup timed out in state CONNECT"),
        rd_line("nohost:9092/bootstrap", "Failed to resolve 'nohost:9092': Name or service not known"),
    ]
    for _ in range(50):
        for line in lines:
            log.log(logging.ERROR, FMT, "FAIL", "rdkafka#consumer-1", line)
    assert len(rig.lines.records) == len(lines)

    rig.clock.advance(INTERVAL)
    for line in lines:
        log.log(logging.ERROR, FMT, "FAIL", "rdkafka#consumer-1", line)
    assert len(rig.lines.records) == 2 * len(lines)
    assert all(m.endswith("(and 49 more like it in the last 10s)") for m in rig.lines.messages[len(lines) :])


def test_the_same_text_at_another_level_or_facility_is_another_condition(rig: Rig) -> None:
    log = rig.client()
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    log.log(logging.WARNING, FMT, "FAIL", "c", refused(9099))
    log.log(logging.ERROR, FMT, "CONNECT", "c", refused(9099))
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    assert len(rig.lines.records) == 3


def test_clients_with_their_own_throttles_do_not_hold_back_each_other() -> None:
    first, second = Rig("tests.rdlog.own.a"), Rig("tests.rdlog.own.b")
    try:
        first.client().log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
        second.client().log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
        assert len(first.lines.records) == len(second.lines.records) == 1
    finally:
        first.close()
        second.close()


# --- what is passed on as it is ----------------------------------------------------------------------------------


def test_a_level_the_logger_drops_is_not_counted(rig: Rig) -> None:
    rig.logger.setLevel(logging.ERROR)
    log = rig.client()
    for _ in range(10):
        log.log(logging.DEBUG, FMT, "FAIL", "c", refused(9099))
    assert rig.lines.records == []
    rig.logger.setLevel(logging.DEBUG)
    log.log(logging.DEBUG, FMT, "FAIL", "c", refused(9099))
    assert rig.lines.messages == [f"FAIL [c] {refused(9099)}"]


@pytest.mark.parametrize("args", [(), ("one",), ("FAIL", "c"), ("FAIL", "c", "text", "extra")])
def test_a_call_of_another_shape_is_passed_on_every_time(rig: Rig, args: tuple[object, ...]) -> None:
    fmt = " ".join(["%s"] * len(args)) or "plain"
    log = rig.client()
    for _ in range(3):
        log.log(logging.ERROR, fmt, *args)
    assert len(rig.lines.records) == 3


# --- condition() -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "[thrd:127.0.0.1:9099/bootstrap]: 127.0.0.1:9099/bootstrap: Connect to ipv4#127.0.0.1:9099 failed:"
            " Connection refused (after 0ms in state CONNECT)",
            "127.0.0.1:9099/bootstrap: Connect to ipv4#127.0.0.1:9099 failed: Connection refused",
            id="refused",
        ),
        pytest.param(
            "[thrd:nohost:9092/bootstrap]: nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service"
            " not known (after 2ms in state CONNECT)",
            "nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known",
            id="unknown-host",
        ),
        pytest.param(
            "[thrd:sasl_ssl://k1:9093/bootstrap]: sasl_ssl://k1:9093/bootstrap: SASL authentication error:"
            " Authentication failed during authentication due to invalid credentials with SASL mechanism"
            " SCRAM-SHA-512 (after 5ms in state AUTH_REQ)",
            "sasl_ssl://k1:9093/bootstrap: SASL authentication error: Authentication failed during authentication"
            " due to invalid credentials with SASL mechanism SCRAM-SHA-512",
            id="auth",
        ),
        pytest.param(
            "[thrd:10.0.0.1:9092/bootstrap]: 10.0.0.1:9092/bootstrap: Connection setup timed out in state CONNECT"
            " (after 30029ms in state CONNECT)",
            "10.0.0.1:9092/bootstrap: Connection setup timed out in state CONNECT",
            id="timeout",
        ),
        pytest.param(
            "[thrd:main]: Failed to acquire metadata: Local: Broker transport failure",
            "Failed to acquire metadata: Local: Broker transport failure",
            id="no-attempt-tail",
        ),
        pytest.param("  plain text  ", "plain text", id="no-decorations"),
    ],
)
def test_condition_drops_the_thread_and_the_attempt_but_keeps_broker_and_error(text: str, expected: str) -> None:
    assert condition(text) == expected


def test_attempts_of_one_condition_are_one_condition() -> None:
    variants = {
        condition(refused(9099, thread, after_ms))
        for thread in ("127.0.0.1:9099/bootstrap", "main", "127.0.0.1:9099/1")
        for after_ms in (0, 3, 1234)
    }
    assert variants == {"127.0.0.1:9099/bootstrap: " + REFUSED}


def test_different_brokers_and_errors_are_different_conditions() -> None:
    texts = [
        refused(9099),
        refused(9100),
        rd_line("127.0.0.1:9099/bootstrap", "Connection setup timed out in state CONNECT"),
        rd_line("127.0.0.1:9099/bootstrap", "Failed to resolve '127.0.0.1:9099': Name or service not known"),
        rd_line("127.0.0.1:9099/bootstrap", "SASL authentication error: Authentication failed", state="AUTH_REQ"),
    ]
    assert len({condition(text) for text in texts}) == len(texts)


def test_condition_drops_librdkafkas_suppressed_tail() -> None:
    text = (
        "[thrd:127.0.0.1:9099/bootstrap]: 127.0.0.1:9099/bootstrap: Connect to ipv4#127.0.0.1:9099 failed:"
        " Connection refused (after 0ms in state CONNECT, 3 identical error(s) suppressed)"
    )
    assert condition(text) == "127.0.0.1:9099/bootstrap: " + REFUSED


def test_a_failure_with_and_without_librdkafkas_suppressed_tail_is_one_condition(rig: Rig) -> None:
    log = rig.client()
    log.log(logging.ERROR, FMT, "FAIL", "c", refused(9099))
    suppressed = refused(9099).replace("in state CONNECT)", "in state CONNECT, 1 identical error(s) suppressed)")
    log.log(logging.ERROR, FMT, "FAIL", "c", suppressed)
    assert len(rig.lines.records) == 1


# --- Reachability ------------------------------------------------------------------------------------------------

TRANSPORT = "Local: Broker transport failure"


def test_reachability_names_the_broker_and_failure_behind_a_transport_failure() -> None:
    reach = Reachability()
    reach.note(
        RdKafkaError(
            RdKafkaError._TRANSPORT,
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state"
            " CONNECT)",
        )
    )
    assert reach.explain(TRANSPORT) == (
        f"{TRANSPORT}: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    )


def test_reachability_names_an_unresolvable_host() -> None:
    reach = Reachability()
    reach.note(
        RdKafkaError(
            RdKafkaError._RESOLVE,
            "nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known (after 1ms in state"
            " CONNECT)",
        )
    )
    assert reach.explain(TRANSPORT) == (
        f"{TRANSPORT}: nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known"
    )


def test_reachability_keeps_the_latest_connection_failure() -> None:
    reach = Reachability()
    reach.note(RdKafkaError(RdKafkaError._TRANSPORT, "a:1/bootstrap: Connect to ipv4#1.2.3.4:1 failed: refused"))
    reach.note(RdKafkaError(RdKafkaError._TRANSPORT, "b:2/bootstrap: Connection setup timed out in state CONNECT"))
    assert reach.explain(TRANSPORT) == f"{TRANSPORT}: b:2/bootstrap: Connection setup timed out in state CONNECT"


def test_reachability_says_the_failure_alone_when_it_heard_of_no_broker() -> None:
    assert Reachability().explain(TRANSPORT) == TRANSPORT


def test_reachability_ignores_errors_that_are_not_connection_failures() -> None:
    reach = Reachability()
    reach.note(RdKafkaError(RdKafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    reach.note(RdKafkaError(RdKafkaError.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed"))
    assert reach.explain(TRANSPORT) == TRANSPORT


def test_reachability_forgets_the_failure_once_the_broker_answers() -> None:
    reach = Reachability()
    reach.note(RdKafkaError(RdKafkaError._TRANSPORT, "a:1/bootstrap: Connect to ipv4#1.2.3.4:1 failed: refused"))
    assert reach.explain(TRANSPORT) != TRANSPORT
    assert reach.explain(TRANSPORT) != TRANSPORT  # a failed probe does not forget it
    assert reach.explain(None) is None
    assert reach.explain(TRANSPORT) == TRANSPORT


# --- the invariant -----------------------------------------------------------------------------------------------

TEXTS = [
    lambda thread, ms: refused(9099, thread, ms),
    lambda thread, ms: refused(9100, thread, ms),
    lambda thread, ms: rd_line("127.0.0.1:9099/bootstrap", "Connection setup timed out in state CONNECT", thread, ms),
    lambda thread, ms: rd_line("nohost:9092/bootstrap", "Failed to resolve 'nohost:9092': Unknown", thread, ms),
]

events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=2 * INTERVAL, allow_nan=False),  # time since the previous line
        st.integers(min_value=0, max_value=len(TEXTS) - 1),  # the condition
        st.sampled_from(["main", "127.0.0.1:9099/bootstrap", "127.0.0.1:9099/1"]),  # the thread
        st.integers(min_value=0, max_value=99_999),  # the attempt's ms
        st.sampled_from(["rdkafka#consumer-1", "rdkafka#producer-2"]),  # the client
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_lines_per_condition_are_an_interval_apart_and_their_counts_add_up(
    sequence: list[tuple[float, int, str, int, str]],
) -> None:
    rig = Rig("tests.rdlog.property")
    try:
        log = rig.client()
        emitted: dict[int, list[tuple[float, int]]] = {kind: [] for kind in range(len(TEXTS))}  # time, count
        seen = dict.fromkeys(range(len(TEXTS)), 0)
        since_last = dict.fromkeys(range(len(TEXTS)), 0)
        for gap, kind, thread, ms, client in sequence:
            rig.clock.advance(gap)
            before = len(rig.lines.records)
            log.log(logging.ERROR, FMT, "FAIL", client, TEXTS[kind](thread, ms))
            seen[kind] += 1
            new = rig.lines.messages[before:]
            assert len(new) <= 1
            if new:
                tail = new[0].partition(" (and ")[2]
                count = int(tail.split(" ")[0].replace(",", "")) if tail else 0
                assert count == since_last[kind]
                emitted[kind].append((rig.clock.now, count))
                since_last[kind] = 0
            else:
                since_last[kind] += 1

        for kind, lines in emitted.items():
            times = [at for at, _ in lines]
            assert all(later - earlier >= INTERVAL for earlier, later in itertools.pairwise(times))
            # every line is either out, counted on a later line, or held back since the last line
            assert len(lines) + sum(count for _, count in lines) + since_last[kind] == seen[kind]
            # a condition met at all has its first line out at once
            assert (seen[kind] > 0) == (len(lines) > 0)
    finally:
        rig.close()
