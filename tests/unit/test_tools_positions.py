"""Positions of the operator tools (``--from``, ``--until``, ``--to``): every accepted form, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamcar.errors import UsageError
from streamcar.tools._common import Position, parse_position

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


@pytest.mark.parametrize("text", ["", "soon", "+5", "1.5", "-", "--3", "2026-13-01", "earliest-1"])
def test_anything_else_is_a_usage_error_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError, match=r"^--until: .* is not earliest, latest, an offset, -N or an ISO 8601 time"):
        parse_position(text, option="--until")
