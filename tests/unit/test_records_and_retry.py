"""Dead-letter and reply records, and the retry timing."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from streamcar.engine.records import dead_letter_record, reply_record
from streamcar.engine.retry import MAX_RETRY_AFTER, Backoff
from streamcar.event import Event, Reply

EVENT = Event("orders", 1, 7, 0, b"key", b"value", (("traceparent", b"00-t"), ("streamcar-error", b"old")))


def test_dead_letter_record_has_every_design_header() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = dead_letter_record(EVENT, error="HTTP 400: bad", kind="http-status", attempts=1, failed_at=when)
    h = dict(record.headers)
    assert (record.key, record.value) == (b"key", b"value")
    assert h == {
        "traceparent": b"00-t",
        "streamcar-error": b"HTTP 400: bad",  # the stale one from an earlier dead-lettering is replaced
        "streamcar-error-kind": b"http-status",
        "streamcar-source-topic": b"orders",
        "streamcar-source-partition": b"1",
        "streamcar-source-offset": b"7",
        "streamcar-attempts": b"1",
        "streamcar-failed-at": b"2026-01-02T03:04:05.000+00:00",
    }
    assert [k for k, _ in record.headers].count("streamcar-error") == 1


def test_reply_record_keeps_key_and_trace_and_sets_content_type() -> None:
    record = reply_record(EVENT, Reply.success(b"out", content_type="application/json"))
    assert record.key == b"key"
    assert ("content-type", b"application/json") in record.headers
    assert ("traceparent", b"00-t") in record.headers
    rekeyed = reply_record(EVENT, Reply.success(b"out", key=None, headers={"traceparent": "00-new"}))
    assert rekeyed.key is None
    assert dict(rekeyed.headers)["traceparent"] == b"00-new"


def test_forwarded_headers_follow_the_replys_own_but_streamcar_ones_and_those_it_sets() -> None:
    event = Event(
        "orders",
        0,
        1,
        0,
        b"k",
        b"v",
        (("origin", b"acc"), ("tenant", b"t1"), ("tenant", b"t2"), ("streamcar-error", b"old"), ("cmd", b"in")),
    )
    record = reply_record(event, Reply.success(b"out", headers={"cmd": "out"}), forward=True)
    assert list(record.headers) == [("cmd", b"out"), ("origin", b"acc"), ("tenant", b"t1"), ("tenant", b"t2")]
    typed = reply_record(event, Reply.success(b"out", content_type="text/csv"), forward=True)
    assert [v for k, v in typed.headers if k == "content-type"] == [b"text/csv"]
    plain = reply_record(event, Reply.success(b"out"), forward=False)
    assert plain.headers == ()  # publish.headers: none -- only the trace context would travel


@given(st.lists(st.sampled_from(["a", "b", "c", "streamcar-x"]), max_size=8), st.sets(st.sampled_from(["a", "b"])))
def test_a_forwarded_header_never_shadows_one_the_reply_sets(inputs: list[str], own: set[str]) -> None:
    event = Event("t", 0, 0, 0, None, b"v", tuple((name, b"in") for name in inputs))
    record = reply_record(event, Reply.success(b"out", headers={name: "own" for name in own}), forward=True)
    for name, value in record.headers:
        assert not (name in own and value == b"in")
        assert not name.startswith("streamcar-")
    assert sorted(n for n, v in record.headers if v == b"in") == sorted(
        n for n in inputs if n not in own and n != "streamcar-x"
    )


@given(
    initial=st.floats(0.001, 5),
    maximum=st.floats(0.001, 60),
    failures=st.integers(1, 60),
    r=st.floats(0, 1),
    retry_after=st.none() | st.floats(0, 10_000),
)
def test_backoff_stays_within_its_bounds(
    initial: float, maximum: float, failures: int, r: float, retry_after: float | None
) -> None:
    backoff = Backoff(initial, maximum)
    step = min(maximum, initial * 2 ** (failures - 1))
    delay = backoff.delay(failures, retry_after, rand=lambda: r)
    assert step / 2 <= delay or retry_after is not None
    if retry_after is None:
        assert step / 2 <= delay <= step
    else:
        assert delay >= min(retry_after, MAX_RETRY_AFTER)
        assert delay <= max(step, MAX_RETRY_AFTER)


def test_backoff_grows_exponentially_then_caps() -> None:
    backoff = Backoff(0.1, 1.0)
    mid = [backoff.delay(n, rand=lambda: 1.0) for n in range(1, 7)]
    assert mid == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
