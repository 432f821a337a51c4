"""Rates, percentiles, trends, stuck partitions and states from sampled counters (streamcar.admin.window, states)."""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamcar.admin.states import state_of
from streamcar.admin.window import SLICE, SLICES, STALL_AFTER, Series, quantile
from streamcar.engine.work import CALL_BUCKETS, LATENCY_BOUNDS, PipelineStats
from streamcar.event import Event
from streamcar.kafka.records import TP


class View:
    """What the sampler reads of a pipeline: counters, lag and next offsets, set by the test."""

    name = "p"

    def __init__(self) -> None:
        self.stats = PipelineStats()
        self.lags: dict[TP, int | None] = {}
        self.offsets: dict[TP, int | None] = {}
        self.in_flight = 0
        self.circuit_open = None
        self.circuit_opened = 0
        self.kafka_error = None
        self.topic_problems: list[str] = []
        self.producer_problem: str | None = None

    def lag(self) -> dict[TP, int | None]:
        return dict(self.lags)

    def next_offsets(self) -> dict[TP, int | None]:
        return dict(self.offsets)

    def status(self) -> dict[str, object]:
        return {}

    def consume(self, n: int, seconds: float = 0.01) -> None:
        self.stats.consumed += n
        self.stats.results["success"] += n
        self.stats.published += n
        for _ in range(n):
            self.stats.observe_call(seconds, None)


samples = st.lists(st.floats(min_value=1e-5, max_value=100.0), min_size=1, max_size=300)


@given(samples, st.sampled_from([0.5, 0.9, 0.99, 1.0]))
def test_a_percentile_is_within_the_bucket_of_the_true_one(values: list[float], q: float) -> None:
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    for v in values:
        counts[bisect_left(LATENCY_BOUNDS, v)] += 1
    estimate = quantile(q, counts)
    assert estimate is not None
    true = sorted(values)[math.ceil(q * len(values)) - 1]
    i = bisect_left(LATENCY_BOUNDS, true)
    low = LATENCY_BOUNDS[i - 1] if i else 0.0
    high = LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else LATENCY_BOUNDS[-1]
    assert low <= estimate <= high


def test_no_calls_no_percentile() -> None:
    assert quantile(0.99, [0] * (len(LATENCY_BOUNDS) + 1)) is None


def test_the_prometheus_buckets_are_sums_of_the_fine_ones() -> None:
    stats = PipelineStats()
    for seconds in (0.0004, 0.001, 0.0011, 0.0025, 0.7, 30.0, 31.0, 500.0):
        stats.observe_call(seconds, None)
    # le semantics: a call of exactly a bound counts in that bound's bucket
    expected = [0] * (len(CALL_BUCKETS) + 1)
    for seconds in (0.0004, 0.001, 0.0011, 0.0025, 0.7, 30.0, 31.0, 500.0):
        expected[bisect_left(CALL_BUCKETS, seconds)] += 1
    assert stats.call_buckets == expected
    assert set(CALL_BUCKETS) <= set(LATENCY_BOUNDS)


def run(series: Series, view: View, seconds: int, per_second: int, start: float = 0.0) -> float:
    """Tick ``series`` once a second for ``seconds``, ``per_second`` messages done in each; the last time."""
    now = start
    for _ in range(seconds):
        now += 1.0
        view.consume(per_second)
        series.tick(view, now, 1_700_000_000.0 + now)
    return now


def test_rates_are_over_the_named_window() -> None:
    view, series = View(), Series(0.0)
    series.tick(view, 0.0, 1_700_000_000.0)
    now = run(series, view, 70, 10)  # 10 msg/s for 70 s
    now = run(series, view, 10, 100, start=now)  # then 100 msg/s for 10 s
    found = series.windows(view.stats, now + 0.5)
    ten, minute = found["rates"]["10s"], found["rates"]["1m"]  # type: ignore[index]
    assert ten["span_s"] == 10.5  # the newest snapshot at least 10 s old: ten seconds of 100/s, and half an idle one
    assert ten["per_s"]["consumed"] == pytest.approx(1000 / 10.5, abs=0.001)
    assert minute["span_s"] == 60.5
    assert minute["count"]["consumed"] == 10 * 100 + 50 * 10
    assert found["latency"]["10s"]["calls"] == 1000  # type: ignore[index]
    assert 0.008 <= found["latency"]["10s"]["p50"] <= 0.01  # type: ignore[index]  # every call took 10 ms


def test_a_young_series_covers_what_there_is_and_a_new_one_nothing() -> None:
    view, series = View(), Series(0.0)
    assert series.windows(view.stats, 0.0)["rates"]["10s"] == {"span_s": 0.0, "per_s": None, "count": None}  # type: ignore[index]
    series.tick(view, 0.0, 1_700_000_000.0)
    now = run(series, view, 3, 4)
    ten = series.windows(view.stats, now)["rates"]["10s"]  # type: ignore[index]
    assert (ten["span_s"], ten["per_s"]["consumed"]) == (3.0, 4.0)


def test_replies_routed_lately_by_topic() -> None:
    view, series = View(), Series(0.0)
    view.stats.published_to["old"] = 5
    series.tick(view, 0.0, 1_700_000_000.0)
    now = run(series, view, 70, 0)
    view.stats.published_to["eu"] += 30
    view.stats.published_to["us"] += 6
    routed = series.windows(view.stats, now)["routed"]
    assert routed == [{"topic": "eu", "count": 30, "per_s": 0.5}, {"topic": "us", "count": 6, "per_s": 0.1}]


def test_the_trend_has_a_point_per_slice_newest_last_and_keeps_five_minutes() -> None:
    view, series = View(), Series(0.0)
    view.lags = {("t", 0): 7}
    series.tick(view, 0.0, 1_700_000_000.0)
    now = run(series, view, SLICE * 3, 2)
    trend = series.trend()
    assert trend["consumed"] == [2.0, 2.0]  # the first slice closes once a full one is behind it
    assert trend["lag"] == [7, 7]
    run(series, view, SLICE * (SLICES + 5), 2, start=now)
    assert len(series.trend()["consumed"]) == SLICES  # type: ignore[arg-type]
    idle = Series(0.0)
    run(idle, View(), SLICE * 2, 0)
    assert idle.trend()["p99"] == [None]  # no call: no percentile, not zero


def test_a_partition_is_stuck_when_its_offset_stays_while_it_has_lag() -> None:
    view, series = View(), Series(0.0)
    view.offsets = {("t", 0): 10, ("t", 1): 5}
    view.lags = {("t", 0): 3, ("t", 1): 0}
    for now in range(int(STALL_AFTER) + 2):
        series.tick(view, float(now), 0.0)
    found = series.stuck(view.lags, STALL_AFTER + 1)
    assert found == [{"topic": "t", "partition": 0, "next_offset": 10, "lag": 3, "for_s": int(STALL_AFTER) + 1}]
    view.offsets[("t", 0)] = 11
    series.tick(view, STALL_AFTER + 2, 0.0)
    assert series.stuck(view.lags, STALL_AFTER + 2.5) == []


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "partitions": [{"topic": "t", "partition": 0}],
        "lag": 0,
        "circuit": "closed",
        "rates": {"10s": {"span_s": 10.0, "count": {"done": 5}}},
        "stuck": [],
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({}, "running"),
        ({"rates": {"10s": {"span_s": 10.0, "count": {"done": 0}}}}, "idle"),
        ({"lag": 40, "rates": {"10s": {"span_s": 10.2, "count": {"done": 0}}}}, "stalled"),
        ({"lag": 40, "rates": {"10s": {"span_s": 4.0, "count": {"done": 0}}}}, "running"),  # too soon to say
        ({"lag": 40, "circuit": "open", "circuit_reason": "5 failures"}, "circuit-open"),
        ({"circuit": "half-open", "in_flight": 2}, "circuit-half-open"),
        # issue 30: idle, its last calls failed (poison): nothing is held up, so not "not ready" for minutes
        ({"circuit": "half-open"}, "idle"),
        ({"circuit": "open", "service_failing": True, "rates": {"10s": {"span_s": 10.0}}}, "idle"),
        ({"kafka_error": "down", "circuit": "open"}, "kafka-unreachable"),
        ({"topic_problems": ["topic 'x' is missing"]}, "topic-problem"),
        ({"service_failing": True, "last_call_error": "HTTP 503", "lag": 3}, "service-failing"),
        ({"service_failing": True, "last_call_error": "HTTP 503"}, "running"),  # done lately, nothing waits
        ({"partitions": []}, "no-partitions"),
        # issue 30: exactly once, transactions aborted again and again were shown "running"
        ({"lag": 5, "transactions": {"aborted_in_a_row": 3, "last_abort": "refused"}}, "aborting"),
        ({"lag": 5, "transactions": {"aborted_in_a_row": 2, "last_abort": "refused"}}, "running"),
        (
            {"lag": 3, "stuck": [{"topic": "t", "partition": 0, "next_offset": 9, "lag": 3, "for_s": 12}]},
            "partly-stalled",
        ),
    ],
)
def test_states(fields: dict[str, Any], state: str) -> None:
    assert state_of(entry(**fields))[0] == state


def test_a_stalled_pipeline_says_why() -> None:
    assert state_of(entry(lag=1234, rates={"10s": {"span_s": 10.4, "count": {"done": 0}}})) == (
        "stalled",
        "lag 1,234 and no message finished in the last 10 s",
    )


def test_dead_letters_are_grouped_by_kind_and_error_most_recent_first() -> None:
    stats = PipelineStats()
    for offset, (kind, error) in enumerate(
        [("http-status", "HTTP 422"), ("timeout", "5s"), ("http-status", "HTTP 422")]
    ):
        stats.note_dead_letter(Event("t", 0, offset, 0, b"k%d" % offset, b"v", ()), kind, error)
    groups = stats.dead_letter_summary()
    assert [(g["kind"], g["error"], g["count"]) for g in groups] == [
        ("http-status", "HTTP 422", 2),
        ("timeout", "5s", 1),
    ]
    assert groups[0]["sample"] == {"topic": "t", "partition": 0, "offset": 2, "key": "k2"}
    for i in range(60):
        stats.note_dead_letter(Event("t", 0, 100 + i, 0, None, b"v", ()), "rejected", f"error {i}")
    assert len(stats.dead_letter_summary()) == 50  # the least recently seen went first
    assert stats.dead_letter_summary()[-1]["error"] == "error 10"
