"""The numbers of a pipeline's card on the status page: its tiles (with their trends), results, partitions and
dead letters. ``status.js`` mirrors each function here (tiles, sparkline, results, partitions, deadLetters); see
:mod:`streamcar.admin.page`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamcar.admin.html import (
    UNKNOWN,
    Child,
    Html,
    clock,
    el,
    fixed,
    fmt,
    iso,
    per_mille,
    percent,
    rate_text,
    seconds_text,
)
from streamcar.admin.window import SLICES

KNOWN_KINDS = ("success", "drop", "dead-letter", "retry")
"""Result kinds with their own colour (and their order in the legend); any other kind is drawn as ``other``."""


def _tile(field: str, label: str, value: Child, *, alert: bool = False, sub: Child = None, extra: Child = None) -> Html:
    classes = " ".join(["tile", field.replace("_", "-")] + (["alert"] if alert else []))
    return el(
        "div",
        {"class": classes, "data-field": field},
        el("div", {"class": "label"}, label),
        el("div", {"class": "value"}, value),
        extra,
        el("div", {"class": "sub"}, sub) if sub else None,
    )


def _limit_text(p: Mapping[str, Any]) -> list[Child]:
    """`` · limit 24 (auto)`` beside an adaptive max_in_flight, and the rate limit if there is one."""
    found: list[Child] = []
    if p.get("concurrency_limit") is not None:
        found += [" · limit ", el("b", {"data-field": "concurrency_limit"}, fmt(p["concurrency_limit"])), " (auto)"]
    rate = p.get("rate_limit")
    if isinstance(rate, Mapping) and rate.get("rate"):
        found.append(f" · at most {rate['rate']}")
    return found


def _window(p: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return ((p.get("rates") or {}).get(name)) or {}


def _per_s(p: Mapping[str, Any], name: str, counter: str) -> object:
    return (_window(p, name).get("per_s") or {}).get(counter)


def tiles(p: Mapping[str, Any]) -> Html:
    known = bool(p.get("partitions"))
    trend = p.get("trend") or {}
    latency = (p.get("latency") or {}).get("10s") or {}
    minute = (p.get("latency") or {}).get("1m") or {}
    recent_dead = (_window(p, "1m").get("count") or {}).get("dead_lettered")
    last_dead = max((g.get("last_at") or 0 for g in p.get("dead_letter_groups") or []), default=None)
    stuck = len(p.get("stuck") or [])
    return el(
        "div",
        {"class": "tiles"},
        _tile(
            "throughput",
            "Throughput",
            [rate_text(_per_s(p, "10s", "consumed")), el("span", {"class": "unit"}, "msg/s")],
            sub=[
                "1 min ",
                el("b", None, rate_text(_per_s(p, "1m", "consumed"))),
                "/s · ",
                fmt(p.get("consumed")),
                " consumed",
            ],
            extra=sparkline([trend.get("consumed") or []], 1),
        ),
        _tile(
            "latency",
            "Call latency p99",
            seconds_text(latency.get("p99")),
            sub=[
                "p50 ",
                el("b", None, seconds_text(latency.get("p50"))),
                " · 1 min p99 ",
                seconds_text(minute.get("p99")),
            ],
            extra=sparkline([trend.get("p50") or [], trend.get("p99") or []], 0.001),
        ),
        _tile(
            "lag",
            "Lag",
            fmt(p.get("lag")) if known else UNKNOWN,
            sub=f"{stuck} partition{'s' if stuck != 1 else ''} stuck" if stuck else None,
            extra=sparkline([trend.get("lag") or []], 1),
        ),
        _tile(
            "in_flight",
            "In flight",
            fmt(p.get("in_flight")),
            sub=[fmt(p.get("buffered")), " buffered", *_limit_text(p)],
        ),
        _tile(
            "dead_lettered",
            "Dead letters / min",
            fmt(recent_dead),
            alert=isinstance(recent_dead, int) and recent_dead > 0,
            sub=[fmt(p.get("dead_lettered")), " total", f" · last {clock(last_dead)}" if last_dead else None],
        ),
    )


def sparkline(series: Sequence[Sequence[float | int | None]], floor: float) -> Html:
    """Trend lines over the last :data:`~streamcar.admin.window.SLICES` points, newest at the right, on one scale
    (at least ``floor`` high); a gap where a point is None. The first line gets an area when it has no gap."""
    values = [v for line in series for v in line if v is not None]
    top = max([*values, floor])
    step = 60 / (SLICES - 1)
    drawn: list[Child] = [el("line", {"class": "base", "x1": 0, "y1": 19.5, "x2": 60, "y2": 19.5})]
    for index, line in enumerate(series):
        segments: list[list[str]] = [[]]
        for i, v in enumerate(line):
            if v is None:
                segments.append([])
                continue
            x = 60 - (len(line) - 1 - i) * step
            segments[-1].append(f"{fixed(x, 2)},{fixed(19 - (17 * v) / top, 2)}")
        segments = [s for s in segments if s]
        if index == 0 and len(segments) == 1 and len(segments[0]) == len(line) > 1:
            x0 = segments[0][0].split(",")[0]
            drawn.append(el("polygon", {"class": "area", "points": f"{x0},19.5 {' '.join(segments[0])} 60,19.5"}))
        for points in segments:
            # a point alone (its neighbours have no value) is drawn as a dot: a zero-length line with round caps
            shown = points * 2 if len(points) == 1 else points
            drawn.append(el("polyline", {"class": f"line l{index}", "points": " ".join(shown)}))
    attrs = {"class": "spark", "viewBox": "0 0 60 20", "preserveAspectRatio": "none", "aria-hidden": "true"}
    return el("svg", attrs, drawn)


def kind_class(kind: str) -> str:
    return f"k-{kind}" if kind in KNOWN_KINDS else "k-other"


def ordered_results(results: Mapping[str, int]) -> list[tuple[str, int]]:
    rank = {kind: i for i, kind in enumerate(KNOWN_KINDS)}
    return sorted(results.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


_MINOR = (("published", "published"), ("retries", "retries"), ("calls", "calls"))
_RATES = (("published", "published"), ("retries", "retries"), ("call_errors", "call errors"))


def results(p: Mapping[str, Any]) -> Html:
    counts = ordered_results(p.get("results") or {})
    total = sum(n for _, n in counts)
    rects, done = [], 0
    for kind, n in counts:
        # segment ends rounded half up on a 0..1000 scale, integers: no gaps, and the same numbers as status.js
        x, done = per_mille(done, total), done + n
        rects.append(
            el("rect", {"class": kind_class(kind), "x": x, "y": 0, "width": per_mille(done, total) - x, "height": 12})
        )
    legend = [
        el(
            "li",
            {"data-kind": kind},
            el("span", {"class": f"swatch {kind_class(kind)}"}),
            el("span", None, kind),
            el("span", {"class": "n"}, fmt(n)),
            el("span", {"class": "pct"}, percent(n, total)),
        )
        for kind, n in counts
    ]
    minor = el(
        "div",
        {"class": "minor"},
        [el("span", {"data-field": f}, f"{label} ", el("b", None, fmt(p.get(f)))) for f, label in _MINOR],
    )
    rates = el(
        "div",
        {"class": "minor rates"},
        "last 10 s: ",
        [
            el("span", {"data-rate": f}, f"{label} ", el("b", None, rate_text(_per_s(p, "10s", f))), "/s")
            for f, label in _RATES
        ],
    )
    return el(
        "div",
        {"class": "panel results"},
        el("h3", None, "Results", el("span", {"class": "count"}, fmt(total))),
        el(
            "svg",
            {"class": "bar", "viewBox": "0 0 1000 12", "preserveAspectRatio": "none", "aria-hidden": "true"},
            rects,
        ),
        el("ul", {"class": "legend"}, legend) if legend else el("div", {"class": "none"}, "No results yet."),
        minor,
        rates,
    )


def partitions(p: Mapping[str, Any]) -> Html:
    parts = p.get("partitions") or []
    title = el("h3", None, "Partitions", el("span", {"class": "count"}, len(parts)))
    if not parts:
        return el(
            "div", {"class": "panel partitions"}, title, el("div", {"class": "none"}, "No partitions assigned yet.")
        )
    stuck = {f"{s.get('topic')}[{s.get('partition')}]": s.get("for_s") for s in p.get("stuck") or []}
    head_row = el(
        "tr",
        None,
        el("th", None, "Topic"),
        el("th", {"class": "num c-part"}, "Partition"),
        el("th", {"class": "num c-offset"}, "Next offset"),
        el("th", {"class": "num c-lag"}, "Lag"),
    )
    rows = []
    for part in parts:
        name = f"{part.get('topic')}[{part.get('partition')}]"
        lag_class = "num lagging" if (part.get("lag") or 0) > 0 else "num"
        rows.append(
            el(
                "tr",
                {"data-partition": name, "class": "stuck" if name in stuck else None},
                el("td", {"class": "mono"}, part.get("topic")),
                el("td", {"class": "num"}, part.get("partition")),
                el("td", {"class": "num"}, fmt(part.get("next_offset"))),
                el(
                    "td",
                    {"class": lag_class, "title": f"stuck for {stuck[name]} s" if name in stuck else None},
                    fmt(part.get("lag")),
                ),
            )
        )
    table = el("table", None, el("thead", None, head_row), el("tbody", None, rows))
    return el("div", {"class": "panel partitions"}, title, el("div", {"class": "parts"}, table))


def dead_letters(p: Mapping[str, Any]) -> Html:
    groups = p.get("dead_letter_groups") or []
    title = el("h3", None, "Dead letters by kind and error", el("span", {"class": "count"}, len(groups)))
    if not groups:
        return el("div", {"class": "panel dlq"}, title, el("div", {"class": "none"}, "None."))
    head_row = el(
        "tr",
        None,
        el("th", {"class": "c-time"}, "Last (UTC)"),
        el("th", {"class": "c-kind"}, "Kind"),
        el("th", None, "Error"),
        el("th", {"class": "num c-count"}, "Count"),
        el("th", {"class": "c-source"}, "Last one"),
    )
    rows = []
    for g in groups:
        sample = g.get("sample") or {}
        key = sample.get("key")
        source = f"{sample.get('topic')}[{sample.get('partition')}]@{sample.get('offset')}"
        rows.append(
            el(
                "tr",
                {"data-kind": g.get("kind")},
                el("td", {"class": "mono", "title": iso(g.get("last_at"))}, clock(g.get("last_at"))),
                el("td", None, el("span", {"class": "kind"}, g.get("kind"))),
                el("td", {"class": "error"}, el("span", {"title": g.get("error")}, g.get("error"))),
                el("td", {"class": "num", "title": f"since {clock(g.get('first_at'))} UTC"}, fmt(g.get("count"))),
                el(
                    "td",
                    {"class": "mono"},
                    el("span", {"class": "source"}, source),
                    " key ",
                    el("span", {"class": "null"}, "null") if key is None else el("span", {"class": "key"}, key),
                ),
            )
        )
    table = el("table", None, el("thead", None, head_row), el("tbody", None, rows))
    return el("div", {"class": "panel dlq"}, title, table)
