"""How hard a pipeline may hit its service: an adaptive ``max_in_flight`` and a ``rate_limit``.

``max_in_flight: auto`` (or ``{auto: {min: 4, max: 512, initial: 32}}``) makes the limit on calls in flight
adaptive (see :mod:`streamcar.engine.limit`); ``rate_limit: 500/s`` (or ``{rate: 500/s, burst: 50}``) caps the
calls per second (messages per second with batch delivery).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Annotated, Any, Self

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from streamcar.config._fields import PROBLEMS_ERROR, _Model, _raise_problems

RATE_PATTERN = r"^\s*\d+(\.\d+)?\s*/\s*(s|m|min|h)\s*$"
_RATE = re.compile(RATE_PATTERN, re.I)
_PER = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_rate(value: object) -> float:
    """Per second from ``"500/s"``, ``"30/m"``, ``"1000/h"`` or a number (per second)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"a rate must be a string such as 500/s, not {type(value).__name__}")
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"invalid rate {value.strip()!r}: use calls per unit, e.g. 500/s, 30/m or 1000/h")
        number, unit = value.split("/")
        value = float(number) / _PER[unit.strip().lower()]
    if not value > 0 or math.isinf(value):
        raise ValueError("a rate must be above 0")
    return float(value)


def format_rate(rate: float) -> str:
    return f"{rate:g}/s"


Rate = Annotated[
    float,
    BeforeValidator(parse_rate),
    PlainSerializer(format_rate, return_type=str),
    WithJsonSchema({"type": "string", "pattern": RATE_PATTERN, "examples": ["500/s", "30/m"]}),
]


class AutoLimits(_Model):
    """The bounds of an adaptive limit."""

    min: int = Field(default=4, ge=1, le=100_000)
    """The fewest calls in flight it goes down to; also the concurrency at which the service's no-load latency
    is measured (keep it below what the service serves at once without queueing)."""
    max: int = Field(default=512, ge=1, le=100_000)
    """The most calls in flight it goes up to; the engine's other bounds (the buffer, what a crash redoes)
    are those of a fixed ``max_in_flight`` of this value."""
    initial: int = Field(default=32, ge=1, le=100_000)
    """Where it starts, once the first no-load latency was measured."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            _raise_problems([(("min",), f"must be at most max ({self.max})")])
        if not self.min <= self.initial <= self.max:
            _raise_problems([(("initial",), f"must be between min ({self.min}) and max ({self.max})")])
        return self


class AutoInFlight(_Model):
    """``max_in_flight: auto``: the limit adapts to the service's latency and overload answers."""

    auto: AutoLimits = AutoLimits()


MOST_IN_FLIGHT = 100_000


def _in_flight(value: Any) -> int | AutoInFlight:
    """A whole number, ``auto``, or ``{auto: {...}}``, each with its own one error (not a union's two)."""
    if isinstance(value, AutoInFlight):
        return value
    if value == "auto":
        return AutoInFlight()
    if isinstance(value, str) and value.strip().isdigit():  # ${MAX_IN_FLIGHT:-256}
        value = int(value)
    if isinstance(value, dict):
        try:
            return AutoInFlight.model_validate(value)
        except ValidationError as exc:
            _raise_problems(_nested(exc))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MOST_IN_FLIGHT:
        raise ValueError(f"must be a whole number from 1 to {MOST_IN_FLIGHT:,}, or auto (got {value!r})")
    return value


def _nested(exc: ValidationError) -> Iterator[tuple[tuple[str, ...], str]]:
    """``exc``'s errors as problems at their paths below the field (as the loader reports them)."""
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        if error["type"] == PROBLEMS_ERROR:
            for sub, message in error["ctx"]["problems"]:
                yield (*loc, *sub), message
        elif error["type"] == "extra_forbidden":
            yield loc, "unknown key"
        else:
            yield loc, error["msg"].removeprefix("Value error, ")


_AUTO_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "auto": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: {"type": "integer", "minimum": 1, "maximum": MOST_IN_FLIGHT, "default": default}
                for name, default in (("min", 4), ("max", 512), ("initial", 32))
            },
        }
    },
    "required": ["auto"],
}


def _dump_in_flight(value: int | AutoInFlight) -> int | dict[str, Any]:
    return value if isinstance(value, int) else value.model_dump(mode="json")


InFlight = Annotated[
    int | AutoInFlight,
    PlainValidator(_in_flight),
    PlainSerializer(_dump_in_flight),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MOST_IN_FLIGHT},
                {"const": "auto"},
                _AUTO_SCHEMA,
            ],
            "default": 256,
        }
    ),
]


class RateLimitConfig(_Model):
    """A ceiling on calls per second (messages per second with batch delivery), as a token bucket."""

    rate: Rate
    """Calls per second at most, e.g. ``500/s`` (``/m`` and ``/h`` too)."""
    burst: int | None = Field(default=None, ge=1, le=1_000_000)
    """Calls that may start at once after an idle spell (the bucket's size); default: a tenth of a second's
    worth, and at least one batch."""

    def bucket(self, batch: int) -> int:
        """The bucket's size for batches of ``batch`` messages."""
        return max(batch, self.burst or math.ceil(self.rate / 10))


def _rate_limit(value: Any) -> Any:
    return {"rate": value} if isinstance(value, str | int | float) and not isinstance(value, bool) else value


RateLimit = Annotated[RateLimitConfig | None, BeforeValidator(_rate_limit)]
