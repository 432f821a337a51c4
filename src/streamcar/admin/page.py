"""The HTML status page at ``/``: every pipeline at a glance, refreshed live from ``/status``.

The page is self-contained: the stylesheet (``status.css``) and the script (``status.js``) are inlined under a
per-response CSP nonce, and nothing is fetched from anywhere else. The server renders the state it has into the
HTML, so the page reads correctly before the first refresh and without JavaScript; the script then polls
``/status`` every second and rebuilds each card with the same markup (plus the throughput, which needs two
samples). Keep :func:`render_page` and ``status.js`` in step: they mirror each other function by function.

Everything shown comes from the engine and, through dead letters, from message keys and service replies:
untrusted text. Here it is escaped; in the script it only ever goes through ``textContent`` and attributes.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

REFRESH_MS = 1000
"""How often the page polls /status."""

UNKNOWN = "\u2013"
"""Shown (an en dash) for a value not known yet, e.g. the lag before any partition is assigned."""

KNOWN_KINDS = ("success", "drop", "dead-letter", "retry")
"""Result kinds with their own colour (and their order in the legend); any other kind is drawn as ``other``."""


class Html(str):
    """Markup that is already escaped: :func:`el` inserts it as it is, and escapes any other ``str``."""


Child = str | int | Html | None | Sequence["Child"]


def el(tag: str, attrs: Mapping[str, object] | None = None, *children: Child) -> Html:
    """``<tag attrs>children</tag>``: attribute values and text children escaped; None and False attrs left out."""
    parts = [f"<{tag}"]
    for name, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        parts.append(f" {name}" if value is True else f' {name}="{html.escape(str(value))}"')
    parts.append(">")
    parts.extend(_children(children))
    parts.append(f"</{tag}>")
    return Html("".join(parts))


def _children(children: Sequence[Child]) -> list[str]:
    out: list[str] = []
    for child in children:
        if child is None:
            continue
        if isinstance(child, Html):
            out.append(child)
        elif isinstance(child, str | int):
            out.append(html.escape(str(child), quote=False))
        else:
            out.extend(_children(child))
    return out


@cache
def _asset(name: str) -> str:
    return resources.files("streamcar.admin").joinpath(name).read_text(encoding="utf-8")


def content_security_policy(nonce: str) -> str:
    """Only the inlined style and script of this response run; the script may only fetch from this server."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def render_page(document: Mapping[str, Any], nonce: str, now: float) -> str:
    """The whole page for a /status ``document`` (``{"ready": bool, "pipelines": [...]}``) taken at ``now``."""
    pipelines = document.get("pipelines") or []
    ready = bool(document.get("ready"))
    config = json.dumps({"refresh_ms": REFRESH_MS, "status_url": "status"})
    top = el(
        "header",
        {"class": "top"},
        el("div", {"class": "brand"}, "streamcar ", el("span", None, "status")),
        el("span", {"id": "ready", "class": f"badge {'ok' if ready else 'bad'}"}, "ready" if ready else "not ready"),
        el(
            "div",
            {"class": "conn"},
            el("span", {"class": "dot"}),
            el("span", {"id": "conn"}, f"snapshot at {_clock(now)} UTC"),
        ),
    )
    body = el(
        "body",
        {"data-state": "snapshot"},
        top,
        el("div", {"id": "banner", "class": "banner", "role": "status", "hidden": True}),
        Html(
            "<noscript>"
            + el(
                "div", {"class": "banner info"}, "Live refresh needs JavaScript: this is a snapshot; reload to update."
            )
            + "</noscript>"
        ),
        el(
            "main",
            {"id": "pipelines"},
            [card(p) for p in pipelines] or el("p", {"class": "empty-page"}, "No pipelines."),
        ),
        el(
            "footer",
            None,
            "Machine-readable: ",
            el("a", {"href": "status"}, "/status"),
            " · ",
            el("a", {"href": "metrics"}, "/metrics"),
            " · ",
            el("a", {"href": "readyz"}, "/readyz"),
        ),
        el("script", {"id": "page-config", "type": "application/json"}, Html(_script_json(config))),
        el("script", {"nonce": nonce}, Html(_asset("status.js"))),
    )
    head = el(
        "head",
        None,
        Html('<meta charset="utf-8">'),
        Html('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        Html('<link rel="icon" href="data:,">'),
        el("title", None, "streamcar status"),
        el("style", {"nonce": nonce}, Html(_asset("status.css"))),
    )
    return "<!DOCTYPE html>\n" + el("html", {"lang": "en"}, head, body) + "\n"


def _script_json(text: str) -> str:
    # inside <script>, "</" would end the element: JSON allows \u-escaping the characters that could
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- one pipeline (status.js: card, health, tiles, results, partitions, deadLetters) --------------------------
def card(p: Mapping[str, Any]) -> Html:
    level, badges, problems = health(p)
    return el(
        "section",
        {"class": f"card {level}".strip(), "data-pipeline": p.get("name")},
        el(
            "div",
            {"class": "card-head"},
            el(
                "div",
                None,
                el("h2", None, p.get("name")),
                el(
                    "div",
                    {"class": "route"},
                    ", ".join(p.get("topics") or []),
                    el("span", {"class": "arrow"}, " → "),
                    (p.get("call") or {}).get("url"),
                ),
                el("div", {"class": "meta"}, _meta(p)),
            ),
            el("div", {"class": "badges"}, [el("span", {"class": f"badge {c}"}, text) for c, text in badges]),
        ),
        el("ul", {"class": "problems"}, [el("li", {"class": c or None}, text) for c, text in problems])
        if problems
        else None,
        tiles(p),
        el("div", {"class": "grid2"}, results(p), partitions(p)),
        dead_letters(p),
    )


def _meta(p: Mapping[str, Any]) -> list[Child]:
    call = p.get("call") or {}
    batch = (call.get("batch") or {}).get("max_messages") or 1
    out: list[Child] = ["group ", el("b", None, p.get("group")), " · timeout ", el("b", None, call.get("timeout"))]
    if batch > 1:
        out += [" · batches of ", el("b", None, batch)]
    if p.get("circuit_opened"):
        out += [" · circuit opened ", el("b", None, f"{p['circuit_opened']}\u00d7")]
    return out


def health(p: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]], list[tuple[str, str]]]:
    """The card's level (``""``, ``degraded``, ``failing``), its badges and its problem lines: (class, text)."""
    badges: list[tuple[str, str]] = []
    problems: list[tuple[str, str]] = []
    circuit = p.get("circuit") or "closed"
    if p.get("kafka_error"):
        badges.append(("bad", "Kafka unreachable"))
        problems.append(("", f"Kafka does not answer: {p['kafka_error']}"))
    if p.get("topic_problems"):
        badges.append(("bad", "topic problem"))
        problems.extend(("", f"{problem[:1].upper()}{problem[1:]}") for problem in p["topic_problems"])
    if circuit != "closed":
        badges.append(("bad" if circuit == "open" else "warn", f"circuit {circuit}"))
        reason = p.get("circuit_reason")
        problems.append(("" if circuit == "open" else "warn", f"Circuit {circuit}" + (f": {reason}" if reason else "")))
    if p.get("service_failing"):
        badges.append(("bad", "service failing"))
    if (circuit != "closed" or p.get("service_failing")) and p.get("last_call_error"):
        problems.append(("", f"Last call error: {p['last_call_error']}"))
    if not badges:
        badges.append(("ok", "healthy"))
    if not p.get("partitions"):
        badges.append(("idle", "no partitions"))
    failing = any(c == "bad" for c, _ in badges)
    return ("failing" if failing else "degraded" if any(c == "warn" for c, _ in badges) else ""), badges, problems


def _tile(field: str, label: str, value: Child, *, alert: bool = False, extra: Child = None) -> Html:
    classes = " ".join(["tile", field.replace("_", "-")] + (["alert"] if alert else []))
    return el(
        "div",
        {"class": classes, "data-field": field},
        el("div", {"class": "label"}, label),
        el("div", {"class": "value"}, value),
        extra,
    )


def tiles(p: Mapping[str, Any]) -> Html:
    known = bool(p.get("partitions"))
    dead = int(p.get("dead_lettered") or 0)
    throughput = _tile(
        "throughput",
        "Throughput",
        [UNKNOWN, el("span", {"class": "unit"}, "msg/s")],
        extra=el(
            "svg",
            {"class": "spark", "viewBox": "0 0 60 20", "preserveAspectRatio": "none", "aria-hidden": "true"},
            el("line", {"class": "base", "x1": 0, "y1": 19.5, "x2": 60, "y2": 19.5}),
        ),
    )
    return el(
        "div",
        {"class": "tiles"},
        throughput,
        _tile("lag", "Lag", fmt(p.get("lag")) if known else UNKNOWN),
        _tile("in_flight", "In flight", fmt(p.get("in_flight"))),
        _tile("buffered", "Buffered", fmt(p.get("buffered"))),
        _tile("consumed", "Consumed", fmt(p.get("consumed"))),
        _tile("dead_lettered", "Dead-lettered", fmt(dead), alert=dead > 0),
    )


def kind_class(kind: str) -> str:
    return f"k-{kind}" if kind in KNOWN_KINDS else "k-other"


def ordered_results(results: Mapping[str, int]) -> list[tuple[str, int]]:
    rank = {kind: i for i, kind in enumerate(KNOWN_KINDS)}
    return sorted(results.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def results(p: Mapping[str, Any]) -> Html:
    counts = ordered_results(p.get("results") or {})
    total = sum(n for _, n in counts)
    rects, done = [], 0
    for kind, n in counts:
        # segment ends rounded half up on a 0..1000 scale, integers: no gaps, and the same numbers as status.js
        x, done = _per_mille(done, total), done + n
        rects.append(
            el("rect", {"class": kind_class(kind), "x": x, "y": 0, "width": _per_mille(done, total) - x, "height": 12})
        )
    legend = [
        el(
            "li",
            {"data-kind": kind},
            el("span", {"class": f"swatch {kind_class(kind)}"}),
            el("span", None, kind),
            el("span", {"class": "n"}, fmt(n)),
            el("span", {"class": "pct"}, _percent(n, total)),
        )
        for kind, n in counts
    ]
    minor = el(
        "div",
        {"class": "minor"},
        [el("span", {"data-field": f}, f"{label} ", el("b", None, fmt(p.get(f)))) for f, label in _MINOR],
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
    )


_MINOR = (("published", "published"), ("retries", "retries"), ("calls", "calls"))


def partitions(p: Mapping[str, Any]) -> Html:
    parts = p.get("partitions") or []
    title = el("h3", None, "Partitions", el("span", {"class": "count"}, len(parts)))
    if not parts:
        return el(
            "div", {"class": "panel partitions"}, title, el("div", {"class": "none"}, "No partitions assigned yet.")
        )
    head = el(
        "tr",
        None,
        el("th", None, "Topic"),
        el("th", {"class": "num c-part"}, "Partition"),
        el("th", {"class": "num c-offset"}, "Next offset"),
        el("th", {"class": "num c-lag"}, "Lag"),
    )
    rows = [
        el(
            "tr",
            {"data-partition": f"{part.get('topic')}[{part.get('partition')}]"},
            el("td", {"class": "mono"}, part.get("topic")),
            el("td", {"class": "num"}, part.get("partition")),
            el("td", {"class": "num"}, fmt(part.get("next_offset"))),
            el("td", {"class": "num lagging" if (part.get("lag") or 0) > 0 else "num"}, fmt(part.get("lag"))),
        )
        for part in parts
    ]
    table = el("table", None, el("thead", None, head), el("tbody", None, rows))
    return el("div", {"class": "panel partitions"}, title, el("div", {"class": "parts"}, table))


def dead_letters(p: Mapping[str, Any]) -> Html:
    recent = list(reversed(p.get("recent_dead_letters") or []))
    title = el("h3", None, "Recent dead letters", el("span", {"class": "count"}, len(recent)))
    if not recent:
        return el("div", {"class": "panel dlq"}, title, el("div", {"class": "none"}, "None."))
    head = el(
        "tr",
        None,
        el("th", {"class": "c-time"}, "Time (UTC)"),
        el("th", {"class": "c-source"}, "Source"),
        el("th", {"class": "c-key"}, "Key"),
        el("th", {"class": "c-kind"}, "Kind"),
        el("th", None, "Error"),
    )
    rows = []
    for d in recent:
        key = d.get("key")
        at = d.get("at")
        rows.append(
            el(
                "tr",
                {"data-offset": d.get("offset")},
                el("td", {"class": "mono", "title": _iso(at)}, _clock(at)),
                el("td", {"class": "mono"}, f"{d.get('topic')}[{d.get('partition')}]@{d.get('offset')}"),
                el("td", {"class": "mono"}, el("span", {"class": "null"}, "null") if key is None else key),
                el("td", None, el("span", {"class": "kind"}, d.get("kind"))),
                el("td", {"class": "error"}, el("span", {"title": d.get("error")}, d.get("error"))),
            )
        )
    table = el("table", None, el("thead", None, head), el("tbody", None, rows))
    return el("div", {"class": "panel dlq"}, title, table)


# -- formatting (status.js: fmt, percent, clock) --------------------------------------------------------------
def fmt(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else UNKNOWN


def _per_mille(n: int, total: int) -> int:
    return (2000 * n + total) // (2 * total) if total else 0


def _percent(n: int, total: int) -> str:
    if not total:
        return ""
    share = 100.0 * n / total
    return f"{math.floor(share + 0.5)}%" if share >= 1 or share == 0 else "<1%"  # rounds like Math.round


def _utc(at: object) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(at, dt.UTC) if isinstance(at, int | float) else None


def _clock(at: object) -> str:
    moment = _utc(at)
    return UNKNOWN if moment is None else moment.strftime("%H:%M:%S")


def _iso(at: object) -> str | None:
    moment = _utc(at)
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")
