"""What happened lately: rates, call latency percentiles, trends and stuck partitions, from the counters.

The engine only counts (:class:`~streamcar.engine.work.PipelineStats`: totals that never go down, and calls per
latency bucket). Once a second the admin server takes a :class:`Snapshot` of each pipeline's counters; a rate
over a window is then the difference between the counters now and those of the snapshot at the window's start,
divided by the time between them, and a percentile comes from the difference of the two latency histograms
(interpolated in its bucket, as Prometheus' ``histogram_quantile`` does). So the engine pays nothing per message
for any of it, and a request costs a subtraction of two short lists, never a sort of samples.

Windows: :data:`WINDOWS` (``10s`` and ``1m``). Until a window has passed since the start, it covers what there is.
Trends (:data:`SLICE` seconds a point, :data:`SLICES` points) are kept for the sparklines.

A partition is *stuck* when it has lag and its next offset to commit did not move for :data:`STALL_AFTER`
seconds (a blocked key, a stopped service, an open circuit); a pipeline with lag that finished no message in
that time is *stalled* (see :mod:`streamcar.admin.states`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamcar.engine.view import PipelineView
from streamcar.engine.work import LATENCY_BOUNDS, PipelineStats
from streamcar.kafka.records import TP

TICK = 1.0
"""Seconds between two snapshots."""
WINDOWS = {"10s": 10.0, "1m": 60.0}
"""The windows rates and percentiles are given over, by their name in /status."""
SLICE = 5
"""Ticks (seconds) per point of a trend."""
SLICES = 60
"""Points of a trend: five minutes."""
STALL_AFTER = 10.0
"""Seconds a partition with lag may keep its next offset before it counts as stuck."""
COUNTERS = ("consumed", "done", "published", "dead_lettered", "retries", "call_errors", "calls")
"""The counters rates are given for (``done``: messages finished, whatever their result)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.monotonic()
    counts: tuple[int, ...]  # COUNTERS, in order
    latency: tuple[int, ...]
    routed: Mapping[str, int]

    @classmethod
    def of(cls, stats: PipelineStats, at: float) -> Snapshot:
        counts = (
            stats.consumed,
            stats.done,
            stats.published,
            stats.dead_lettered,
            stats.retries,
            stats.call_errors,
            stats.calls,
        )
        return cls(at, counts, tuple(stats.latency), dict(stats.published_to))


def quantile(q: float, counts: Sequence[int], bounds: Sequence[float] = LATENCY_BOUNDS) -> float | None:
    """The ``q`` quantile of a histogram (``counts[i]`` in ``(bounds[i-1], bounds[i]]``, the last one above every
    bound), linearly interpolated within its bucket; None for an empty histogram. A quantile in the last bucket
    is its lower bound: the histogram cannot say how far beyond it is."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return bounds[-1]
            low = bounds[i - 1] if i else 0.0
            return low + (bounds[i] - low) * max(rank - seen, 0.0) / count
        seen += count
    return bounds[-1]


def _round(value: float, digits: int) -> float:
    return round(value, digits) if math.isfinite(value) else 0.0


class Series:
    """One pipeline's snapshots, trend points and partition positions."""

    def __init__(self, started: float) -> None:
        self.started = started
        longest = max(WINDOWS.values())
        self._ticks: deque[Snapshot] = deque(maxlen=int(longest / TICK) + 2)
        self._points: deque[tuple[float, ...]] = deque(maxlen=SLICES)  # see trend()
        self._point_ends: deque[float] = deque(maxlen=SLICES)
        self._count = 0
        self._moved: dict[TP, tuple[int | None, float]] = {}  # next offset, and since when

    def tick(self, view: PipelineView, now: float, wall: float) -> None:
        snap = Snapshot.of(view.stats, now)
        self._ticks.append(snap)
        self._count += 1
        offsets = view.next_offsets()
        moved = self._moved
        for tp in [tp for tp in moved if tp not in offsets]:
            del moved[tp]
        for tp, offset in offsets.items():
            known = moved.get(tp)
            if known is None or known[0] != offset:
                moved[tp] = (offset, now)
        if self._count % SLICE == 0 and len(self._ticks) > SLICE:
            self._close_point(self._ticks[-SLICE - 1], snap, view, wall)

    def _close_point(self, before: Snapshot, after: Snapshot, view: PipelineView, wall: float) -> None:
        span = after.at - before.at
        if span <= 0:
            return
        latency = [b - a for a, b in zip(before.latency, after.latency, strict=True)]
        p50, p99 = quantile(0.5, latency), quantile(0.99, latency)
        consumed = (after.counts[0] - before.counts[0]) / span
        dead = (after.counts[3] - before.counts[3]) / span
        lag = sum(value for value in view.lag().values() if value is not None)
        self._points.append((consumed, dead, -1.0 if p50 is None else p50, -1.0 if p99 is None else p99, lag))
        self._point_ends.append(wall)

    def _start_of(self, window: float, now: float) -> Snapshot | None:
        """The newest snapshot at least ``window`` seconds old, else the oldest there is."""
        found = None
        for snap in reversed(self._ticks):
            found = snap
            if now - snap.at >= window:
                break
        return found

    def windows(self, stats: PipelineStats, now: float) -> dict[str, object]:
        """``rates``, ``latency`` and ``routed`` for /status, over :data:`WINDOWS` up to ``now``."""
        live = Snapshot.of(stats, now)
        rates: dict[str, object] = {}
        latency: dict[str, object] = {}
        routed: list[dict[str, object]] = []
        for name, window in WINDOWS.items():
            start = self._start_of(window, now)
            span = now - start.at if start is not None else 0.0
            if start is None or span <= 0:
                rates[name] = {"span_s": 0.0, "per_s": None, "count": None}
                latency[name] = {"calls": 0, "p50": None, "p99": None}
                continue
            counts = {c: b - a for c, a, b in zip(COUNTERS, start.counts, live.counts, strict=True)}
            rates[name] = {
                "span_s": _round(span, 2),
                "per_s": {c: _round(n / span, 3) for c, n in counts.items()},
                "count": counts,
            }
            histogram = [b - a for a, b in zip(start.latency, live.latency, strict=True)]
            p50, p99 = quantile(0.5, histogram), quantile(0.99, histogram)
            latency[name] = {
                "calls": sum(histogram),
                "p50": None if p50 is None else _round(p50, 6),
                "p99": None if p99 is None else _round(p99, 6),
            }
            if name == "1m":
                for topic, n in sorted(live.routed.items()):
                    count = n - start.routed.get(topic, 0)
                    if count > 0:
                        routed.append({"topic": topic, "count": count, "per_s": _round(count / span, 3)})
        return {"rates": rates, "latency": latency, "routed": routed}

    def trend(self) -> dict[str, object]:
        """The last :data:`SLICES` points, oldest first: consumed and dead-lettered per second, call latency p50
        and p99 (None: no call in that slice) and the lag at its end."""
        points = list(self._points)

        def column(i: int, digits: int) -> list[float | None]:
            return [None if p[i] < 0 else _round(p[i], digits) for p in points]

        return {
            "slice_s": SLICE * TICK,
            "end": self._point_ends[-1] if self._point_ends else None,
            "consumed": column(0, 3),
            "dead_lettered": column(1, 3),
            "p50": column(2, 6),
            "p99": column(3, 6),
            "lag": [int(p[4]) for p in points],
        }

    def stuck(self, lags: Mapping[TP, int | None], now: float) -> list[dict[str, object]]:
        """The partitions with lag whose next offset has not moved for :data:`STALL_AFTER` seconds."""
        found: list[dict[str, object]] = []
        for tp, lag in sorted(lags.items()):
            known = self._moved.get(tp)
            if known is None or not lag or now - known[1] < STALL_AFTER:
                continue
            found.append(
                {"topic": tp[0], "partition": tp[1], "next_offset": known[0], "lag": lag, "for_s": int(now - known[1])}
            )
        return found


class Recorder:
    """The series of every pipeline the admin server shows, ticked once a second (:meth:`tick`)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.started = time.monotonic()
        self._series: dict[str, Series] = {}

    def tick(self, pipelines: Mapping[str, PipelineView]) -> None:
        now, wall = time.monotonic(), time.time()
        for name in [name for name in self._series if name not in pipelines]:
            del self._series[name]
        for name, view in pipelines.items():
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = Series(now)
            series.tick(view, now, wall)

    def describe(self, name: str, view: PipelineView) -> dict[str, object]:
        """The recent fields of one pipeline's /status entry: rates, latency, routed, trend, stuck."""
        now = time.monotonic()
        series = self._series.get(name)
        if series is None:  # not ticked yet: its first second
            series = self._series[name] = Series(now)
            series.tick(view, now, time.time())
        return {**series.windows(view.stats, now), "trend": series.trend(), "stuck": series.stuck(view.lag(), now)}
