"""Positions of the operator tools (``--from``, ``--until``, ``--to``) and moments (``--since``): every accepted
form, durations back from now included, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamcar.errors import UsageError
from streamcar.tools._positions import Position, duration_ms, parse_moment, parse_position, parse_time

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def millis(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("earliest", Position("earliest", 0, "earliest")),
        (" Beginning ", Position("earliest", 0, "Beginning")),
        ("latest", Position("latest", 0, "latest")),
        ("END", Position("latest", 0, "END")),
        ("0", Position("offset", 0, "0")),
        ("1234", Position("offset", 1234, "1234")),
        ("-10", Position("relative", 10, "-10")),
        ("-0", Position("relative", 0, "-0")),
    ],
)
def test_named_offset_and_relative_positions(text: str, expected: Position) -> None:
    assert parse_position(text, option="--from") == expected


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T11:00+01:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("2026-11-25T10:00:00.250Z", datetime(2026, 11, 25, 10, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_times_are_milliseconds_since_the_epoch(text: str, when: datetime) -> None:
    position = parse_position(text, option="--from")
    assert (position.kind, position.value, str(position)) == ("time", millis(when), text)


def test_a_time_converts_to_its_exact_millisecond() -> None:
    # 1081226293.876 * 1000 == 1081226293875.9999 in binary floating point
    assert parse_position("2004-04-06T04:38:13.876Z", option="--to").value == 1_081_226_293_876


@pytest.mark.parametrize(
    "text",
    ["", "soon", "+5", "1.5", "-", "--3", "2026-13-01", "earliest-1", "10M", "1w", "10 m", "m", "+10m", "PT", "-P"],
)
def test_anything_else_is_a_usage_error_naming_the_option(text: str) -> None:
    with pytest.raises(
        UsageError,
        match=r"^--until: .* is not earliest, latest, an offset, -N, a duration back from now \(10m, 2h\) or an ISO",
    ):
        parse_position(text, option="--until")


NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [
        ("10m", timedelta(minutes=10)),
        ("-10m", timedelta(minutes=10)),  # the sign changes nothing: a duration always counts back
        ("90s", timedelta(seconds=90)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("0.1s", timedelta(milliseconds=100)),
        ("PT10M", timedelta(minutes=10)),
        ("pt10m", timedelta(minutes=10)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2D", timedelta(days=2)),
        ("PT1.5S", timedelta(milliseconds=1500)),
        ("PT0,25S", timedelta(milliseconds=250)),
        ("-PT30S", timedelta(seconds=30)),
    ],
)
def test_a_duration_is_that_long_before_now(text: str, back: timedelta) -> None:
    position = parse_position(text, option="--to", now=NOW)
    assert (position.kind, position.value, str(position)) == ("time", millis(NOW - back), text)
    assert parse_moment(text, option="--since", now=NOW) == NOW - back


def test_minus_n_and_minus_n_with_a_unit_are_not_confused() -> None:
    assert parse_position("-10", option="--to", now=NOW) == Position("relative", 10, "-10")
    assert parse_position("-10m", option="--to", now=NOW).kind == "time"
    assert parse_position("10", option="--to", now=NOW) == Position("offset", 10, "10")


@given(st.integers(min_value=0, max_value=10**7), st.sampled_from(["ms", "s", "m", "h", "d"]), st.booleans())
def test_every_whole_duration_counts_back_exactly(n: int, unit: str, minus: bool) -> None:
    size = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    assert duration_ms(f"{'-' if minus else ''}{n}{unit}") == n * size
    position = parse_position(f"{n}{unit}", option="--from", now=NOW)
    assert position.value == max(millis(NOW) - n * size, 0)


@given(st.integers(0, 400), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_an_iso_duration_is_its_parts_added(d: int, h: int, m: int, s: int) -> None:
    assert duration_ms(f"P{d}DT{h}H{m}M{s}S") == (((d * 24 + h) * 60 + m) * 60 + s) * 1000


def test_a_moment_before_1970_is_the_epoch_not_a_kafka_sentinel() -> None:
    # ListOffsets reads -1 and -2 as latest and earliest
    assert parse_position("100000d", option="--from", now=NOW).value == 0
    assert parse_position("1960-01-01", option="--from").value == 0


def test_a_resolved_duration_shows_its_moment() -> None:
    assert parse_position("10m", option="--to", now=NOW).moment == "2026-11-25T09:50:00Z"
    assert parse_position("250ms", option="--to", now=NOW).moment == "2026-11-25T09:59:59.750Z"
    assert parse_position("-10", option="--to").moment is None


def test_to_datetime_takes_only_a_time() -> None:
    assert parse_time("2026-11-25T10:00:00Z", option="--to-datetime").value == millis(NOW)
    with pytest.raises(UsageError, match=r"^--to-datetime: '10m' is not an ISO 8601 time"):
        parse_time("10m", option="--to-datetime")


@pytest.mark.parametrize("text", ["yesterday", "5", "-5", "earliest", "10M"])
def test_since_takes_a_duration_or_a_time_only(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--since: .* is not a duration back from now \(30m, 2h, 1d\) or an ISO"):
        parse_moment(text, option="--since")
