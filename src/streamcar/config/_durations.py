"""Durations: ``250ms``, ``5s``, ``1.5s``, ``2m`` in the config, seconds (a float) in the code.

A config document (a file, or a mapping given to ``load_config``) must say the unit: a bare number there is
how timeouts end up 1000x off. Code building the models passes seconds, the type the fields have, or a
``timedelta``; the loader tells the two apart with the validation context :data:`DOCUMENT`.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, ValidationInfo, WithJsonSchema

DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|\.\d+)(ms|s|m)\s*$"

_DURATION = re.compile(DURATION_PATTERN)
_SIGNED = re.compile(r"^\s*([+-]?)(\d+(\.\d+)?|\.\d+)\s*$")
_UNIT_HINT = "a duration needs a unit: ms, s or m (e.g. 5s)"
DOCUMENT: dict[str, Any] = {"streamcar_document": True}
"""The validation context of a config document, where a duration without a unit is refused."""


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"5s"`` or ``"2m"``; a :class:`timedelta` is accepted from Python callers."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        return seconds
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a duration must be a string such as 5s, 250ms or 2m, not {type(value).__name__}")
    if isinstance(value, int | float):
        # A bare number is ambiguous (seconds? milliseconds?), which is exactly how timeouts end up 1000x off.
        raise ValueError(_UNIT_HINT)
    match = _DURATION.match(value)
    if match is None:
        bare = _SIGNED.match(value)
        if bare is not None and bare[1] != "-":
            raise ValueError(_UNIT_HINT)
        if value.strip().startswith("-"):
            raise ValueError("a duration cannot be negative")
        raise ValueError(f"invalid duration {value.strip()!r}: use a number with a unit ms, s or m (e.g. 5s)")
    number, unit = float(match[1]), match[3]
    # Dividing (not multiplying by 0.001) keeps "250ms" exactly equal to 0.25, so durations round-trip.
    seconds = number / 1000 if unit == "ms" else number * 60 if unit == "m" else number
    if not math.isfinite(seconds):
        raise ValueError(f"duration {value.strip()!r} is too large")
    return seconds


def _validate(value: object, info: ValidationInfo) -> float:
    in_code = not (info.context or {}).get("streamcar_document")
    if in_code and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration must be a finite number of seconds, at least 0 (got {value!r})")
        return float(value)
    return parse_duration(value)


def _plain(number: float) -> str:
    """The shortest decimal that round-trips, never in exponent notation (the pattern has none)."""
    return format(Decimal(repr(number)), "f").removesuffix(".0")


def format_duration(seconds: float) -> str:
    """The most readable string that parses back to exactly ``seconds``: ``2m``, ``1.5s``, ``250ms``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    candidates = []
    if seconds >= 60 and seconds % 60 == 0:
        candidates.append(f"{_plain(seconds / 60)}m")
    if 0 < seconds < 1:
        candidates.append(f"{_plain(seconds * 1000)}ms")
    for text in candidates:
        if parse_duration(text) == seconds:
            return text
    return f"{_plain(seconds)}s"


Duration = Annotated[
    float,
    BeforeValidator(_validate),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a duration with a unit: ms, s or m",
            "examples": ["250ms", "5s", "2m"],
        }
    ),
]
"""Seconds as a float; written as ``250ms``, ``5s`` or ``2m`` in YAML and in dumps, and taken as seconds (or a
``timedelta``) from code."""
