"""Positions in a topic (the tools' ``--from``, ``--until``, ``--to``) and moments back from now (``--since``).

A position is one of:

* ``earliest`` / ``latest`` -- the partition's low / high watermark;
* ``<offset>`` -- an absolute offset (clamped to the partition's range);
* ``-<N>`` -- N records before the high watermark (clamped to the low one);
* a duration back from now -- ``90s``, ``10m``, ``2h``, ``1d``, ``500ms`` (``-10m`` is the same as ``10m``: a
  duration always counts back), or an ISO 8601 duration as Kafka's own tools take it (``PT10M``, ``P1DT2H``);
* an ISO 8601 time (``2026-11-25T10:00:00Z``, ``2026-11-25T11:00+01:00``, ``2026-11-25``; a time without a zone
  is UTC).

A duration or a time is the first offset whose record timestamp is at or after that moment
(``offsets_for_times``), else the high watermark. ``-10`` and ``-10m`` cannot be confused: a duration always
has a unit and a record count never has one. The units are the config's (``ms``, ``s``, ``m``) plus ``h`` and
``d`` (24 hours) for the longer looks back an operator takes; anything else (``10M``, ``1w``, ``10 m``) is
refused rather than guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamcar.errors import KafkaError, UsageError
from streamcar.tools._common import TIMEOUT


@dataclass(frozen=True)
class Position:
    kind: Literal["earliest", "latest", "offset", "relative", "time"]
    value: int = 0
    """The offset, the N of ``-N``, or the time in ms since the epoch."""
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.kind

    @property
    def moment(self) -> str | None:
        """The time of a ``time`` position (a duration resolved), ISO 8601 in UTC; None for the other kinds."""
        if self.kind != "time":
            return None
        when = _EPOCH + timedelta(milliseconds=self.value)
        spec = "seconds" if self.value % 1000 == 0 else "milliseconds"
        return when.isoformat(timespec=spec).replace("+00:00", "Z")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RELATIVE = re.compile(r"-(\d+)")
_OFFSET = re.compile(r"\d+")
_DURATION = re.compile(r"-?(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")
# java.time.Duration.parse's grammar (what kafka-consumer-groups --by-duration takes), without per-field signs
_ISO_DURATION = re.compile(
    r"-?P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)(?:[.,](?P<f>\d{1,9}))?S)?)?",
    re.IGNORECASE,
)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_FORMS = "earliest, latest, an offset, -N, a duration back from now (10m, 2h) or an ISO 8601 time"


def duration_ms(text: str) -> int | None:
    """Milliseconds of a duration back from now (``10m``, ``-10m``, ``PT10M``); None if ``text`` is not one."""
    raw = text.strip()
    if match := _DURATION.fullmatch(raw):
        # Decimal: "0.1s" is exactly 100 ms, as the config's durations are
        return int(Decimal(match[1]) * _UNIT_MS[match[2]])
    match = _ISO_DURATION.fullmatch(raw)
    if match is None or not any(match.group(k) for k in "dhms"):
        return None
    d, h, m, s = (int(match.group(k) or 0) for k in "dhms")
    fraction = (match["f"] or "").ljust(9, "0")
    return ((d * 24 + h) * 60 + m) * 60_000 + s * 1000 + int(fraction) // 1_000_000


def parse_position(text: str, *, option: str, now: datetime | None = None) -> Position:
    """A position from the command line; UsageError naming ``option`` if it is none of the accepted forms.
    ``now``: the moment durations count back from (default: the current time)."""
    raw = text.strip()
    lowered = raw.lower()
    if lowered in ("earliest", "beginning", "start"):
        return Position("earliest", text=raw)
    if lowered in ("latest", "end"):
        return Position("latest", text=raw)
    if _OFFSET.fullmatch(raw):
        return Position("offset", int(raw), raw)
    if match := _RELATIVE.fullmatch(raw):
        return Position("relative", int(match[1]), raw)
    back = duration_ms(raw)
    if back is not None:
        return Position("time", _at_least_epoch(_millis(now or datetime.now(UTC)) - back), raw)
    when = _iso_time(raw)
    if when is None:
        raise UsageError(f"{option}: {text!r} is not {_FORMS} (e.g. 2026-11-25T10:00:00Z)")
    return Position("time", _at_least_epoch(_millis(when)), raw)


def parse_time(text: str, *, option: str) -> Position:
    """An ISO 8601 time only (``--to-datetime``)."""
    when = _iso_time(text.strip())
    if when is None:
        raise UsageError(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-11-25T10:00:00Z)")
    return Position("time", _at_least_epoch(_millis(when)), text.strip())


def parse_moment(text: str, *, option: str, now: datetime | None = None) -> datetime:
    """A moment: an ISO 8601 time, or a duration back from ``now`` (``--since 1h``)."""
    raw = text.strip()
    back = duration_ms(raw)
    if back is not None:
        return (now or datetime.now(UTC)) - timedelta(milliseconds=back)
    when = _iso_time(raw)
    if when is None:
        raise UsageError(
            f"{option}: {text!r} is not a duration back from now (30m, 2h, 1d) or an ISO 8601 time"
            " (e.g. 2026-11-25T10:00:00Z)"
        )
    return when


def _iso_time(raw: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _millis(when: datetime) -> int:
    # integer arithmetic: float seconds * 1000 can land 1 ms low; a sub-ms time rounds up ("at or after")
    return -((_EPOCH - when) // timedelta(milliseconds=1))


def _at_least_epoch(ms: int) -> int:
    # ListOffsets reads a negative timestamp as a sentinel (-1 latest, -2 earliest), never as a time: a moment
    # before 1970 means "from the first record", which timestamp 0 says
    return max(ms, 0)


def resolve(
    consumer: Consumer, topic: str, partitions: Iterable[int], position: Position, marks: dict[int, tuple[int, int]]
) -> dict[int, int]:
    """The concrete offset of ``position`` in each partition, within [low, high]."""
    chosen = list(partitions)
    if position.kind == "time":
        query = [TopicPartition(topic, p, position.value) for p in chosen]
        try:
            found = consumer.offsets_for_times(query, timeout=TIMEOUT)
        except KafkaException as exc:
            raise KafkaError(f"{topic}: cannot look up offsets for {position}: {exc.args[0].str()}") from None
        for tp in found:
            if tp.error is not None:
                raise KafkaError(f"{topic}[{tp.partition}]: cannot look up offsets for {position}: {tp.error.str()}")
        # -1: no record at or after that time in the partition, i.e. the end
        return {tp.partition: marks[tp.partition][1] if tp.offset < 0 else tp.offset for tp in found}
    result = {}
    for p in chosen:
        low, high = marks[p]
        if position.kind == "earliest":
            result[p] = low
        elif position.kind == "latest":
            result[p] = high
        elif position.kind == "offset":
            result[p] = min(max(position.value, low), high)
        else:
            result[p] = max(high - position.value, low)
    return result
