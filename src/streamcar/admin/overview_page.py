"""The page at ``/overview``: the graph of topics and pipelines across sidecars (:mod:`streamcar.admin.overview`)
as an inline SVG laid out in layers, then the pipelines and the sidecars as tables.

No script: the page reloads itself every :data:`REFRESH_S` seconds (a meta refresh), and its style is inlined
under the response's CSP nonce as the status page's is. Names, reasons and errors come from other processes:
everything goes through :func:`~streamcar.admin.html.el`, which escapes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamcar.admin.html import (
    UNKNOWN,
    Child,
    Html,
    clock,
    duration_text,
    el,
    fmt,
    head,
    rate_text,
    seconds_text,
)

REFRESH_S = 5
GAP = 84  # px between two layers: room for an edge's labels
ROW = 116  # px between the tops of two rows
MARGIN = 16
TOPIC_W, TOPIC_H = 156, 36  # topics are in the even layers
PIPE_W, PIPE_H = 200, 90  # pipelines in the odd ones
LONGEST = 26  # characters of a pipeline's name drawn in its box; the whole name is its tooltip
LONGEST_TOPIC = 20  # a topic's name is cut in the middle: names of one system often share their start


def render_overview(graph: Mapping[str, Any], nonce: str) -> str:
    sidecars = graph.get("sidecars") or []
    missing = [s for s in sidecars if not s.get("reachable")]
    banner = None
    if missing:
        banner = el(
            "div",
            {"class": "banner", "role": "status"},
            f"{len(missing)} of {len(sidecars)} sidecars did not answer: ",
            "; ".join(f"{s.get('url')} ({s.get('error')})" for s in missing),
        )
    refresh = Html(f'<meta http-equiv="refresh" content="{REFRESH_S}">')
    top = el(
        "header",
        {"class": "top"},
        el("div", {"class": "brand"}, "streamcar ", el("span", None, "overview")),
        el("div", {"class": "about"}, f"{len(sidecars)} sidecars · {len(graph.get('pipelines') or [])} pipelines"),
        el("div", {"class": "conn"}, el("span", None, f"at {clock(graph.get('at'))} UTC · every {REFRESH_S} s")),
    )
    body = el(
        "body",
        {"class": "overview"},
        top,
        banner,
        el(
            "main",
            None,
            el("section", {"class": "card graph"}, drawing(graph)),
            el("section", {"class": "card"}, el("h3", None, "Pipelines"), pipeline_table(graph)),
            el("section", {"class": "card"}, el("h3", None, "Sidecars"), sidecar_table(sidecars)),
        ),
        el(
            "footer",
            None,
            el("a", {"href": "./"}, "this sidecar's status"),
            " · machine-readable: ",
            el("a", {"href": "overview.json"}, "/overview.json"),
        ),
    )
    return "<!DOCTYPE html>\n" + el("html", {"lang": "en"}, head("streamcar overview", nonce, refresh), body) + "\n"


def _short(name: str) -> str:
    return name if len(name) <= LONGEST else name[: LONGEST - 1] + "\u2026"


def _middle(name: str) -> str:
    if len(name) <= LONGEST_TOPIC:
        return name
    head = (LONGEST_TOPIC - 1) * 2 // 5
    return f"{name[:head]}\u2026{name[len(name) - (LONGEST_TOPIC - 1 - head) :]}"


def _x(column: int) -> int:
    """The left edge of a layer: topics (even layers) and pipelines (odd ones) have boxes of their own width."""
    return MARGIN + (column // 2) * (TOPIC_W + PIPE_W + 2 * GAP) + (column % 2) * (TOPIC_W + GAP)


def _state_text(state: object) -> str:
    return str(state or "").replace("-", " ")


def _place(node: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """x, y, width and height of a node's box."""
    pipe = not str(node.get("id", "")).startswith("topic:")
    w, h = (PIPE_W, PIPE_H) if pipe else (TOPIC_W, TOPIC_H)
    x = _x(int(node.get("column") or 0))  # topics are in even layers, pipelines in odd ones (overview.build)
    y = MARGIN + int(node.get("row") or 0) * ROW + (PIPE_H - h) / 2
    return x, y, w, h


def drawing(graph: Mapping[str, Any]) -> Html:
    topics = graph.get("topics") or []
    pipelines = graph.get("pipelines") or []
    if not pipelines:
        return el("div", {"class": "none"}, "No pipelines: no sidecar answered, or none has pipelines.")
    nodes = {n["id"]: n for n in [*topics, *pipelines]}
    last = max(int(n.get("column") or 0) for n in nodes.values())
    rows = max(int(n.get("row") or 0) for n in nodes.values()) + 1
    width = _x(last) + (PIPE_W if last % 2 else TOPIC_W) + MARGIN
    height = 2 * MARGIN + (rows - 1) * ROW + PIPE_H
    marker = el(
        "marker",
        {"id": "arrow", "viewBox": "0 0 10 10", "refX": 9, "refY": 5, "markerWidth": 7, "markerHeight": 7}
        | {"orient": "auto"},
        el("path", {"d": "M0,0 L10,5 L0,10 z", "class": "head"}),
    )
    edges = [edge(e, nodes) for e in graph.get("edges") or [] if e.get("from") in nodes and e.get("to") in nodes]
    attrs = {"class": "graph", "viewBox": f"0 0 {width} {height}", "width": width, "height": height, "role": "img"}
    return el(
        "div",
        {"class": "graph-scroll"},
        el(
            "svg",
            {**attrs, "aria-label": "topics and pipelines across sidecars"},
            el("defs", None, marker),
            edges,
            [topic_box(t) for t in topics],
            [pipeline_box(p) for p in pipelines],
        ),
    )


def edge(e: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]]) -> Html:
    source, target = nodes[e["from"]], nodes[e["to"]]
    sx, sy, sw, sh = _place(source)
    tx, ty, _, th = _place(target)
    x1, y1, x2, y2 = sx + sw, sy + sh / 2, tx - 2, ty + th / 2
    bend = max((x2 - x1) / 2, 40)
    kind = str(e.get("kind"))
    level = target.get("level") if kind == "input" else None
    rate = f"{rate_text(e['rate'])}/s" if isinstance(e.get("rate"), int | float) else None
    lag = f"lag {fmt(e['lag'])}" if kind == "input" and isinstance(e.get("lag"), int) else None
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    labels = [
        el("text", {"class": "rate", "x": f"{mx:.1f}", "y": f"{my - 6:.1f}", "text-anchor": "middle"}, rate)
        if rate
        else None,
        el("text", {"class": "lag", "x": f"{mx:.1f}", "y": f"{my + 15:.1f}", "text-anchor": "middle"}, lag)
        if lag
        else None,
    ]
    curve = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    return el(
        "g",
        {"class": f"edge {kind} {level or ''}".strip(), "data-from": e["from"], "data-to": e["to"]},
        el("path", {"d": curve, "marker-end": "url(#arrow)"}),
        labels,
    )


def topic_box(t: Mapping[str, Any]) -> Html:
    x, y, w, h = _place(t)
    name = str(t.get("name"))
    classes = "topic" + (" dlq" if t.get("dead_letters") and not t.get("readers") else "")
    return el(
        "g",
        {"class": classes, "data-topic": name},
        el("title", None, name),
        el("rect", {"x": x, "y": y, "width": w, "height": h, "rx": h / 2}),
        el("text", {"x": x + w / 2, "y": y + h / 2 + 4, "text-anchor": "middle"}, _middle(name)),
    )


def pipeline_box(p: Mapping[str, Any]) -> Html:
    x, y, w, h = _place(p)
    instances = p.get("instances") or []
    where = f"{len(instances)} sidecars" if len(instances) != 1 else str(instances[0].get("sidecar"))
    numbers = [
        f"{rate_text(p.get('rate'))}/s",
        f"lag {fmt(p.get('lag'))}",
        f"err {rate_text(p.get('error_rate'))}/s",
    ]
    return el(
        "g",
        {"class": f"pipe {p.get('level')}", "data-pipeline": p.get("name"), "data-state": p.get("state")},
        el("title", None, f"{p.get('name')} ({p.get('group')}): {p.get('state_reason')}"),
        el("rect", {"x": x, "y": y, "width": w, "height": h, "rx": 8}),
        el("text", {"class": "name", "x": x + 10, "y": y + 20}, _short(str(p.get("name")))),
        el("text", {"class": "state", "x": x + 10, "y": y + 39}, _state_text(p.get("state"))),
        el("text", {"class": "numbers", "x": x + 10, "y": y + 58}, " · ".join(numbers)),
        el("text", {"class": "where", "x": x + 10, "y": y + 77}, _short(where)),
    )


def pipeline_table(graph: Mapping[str, Any]) -> Html:
    pipelines = graph.get("pipelines") or []
    if not pipelines:
        return el("div", {"class": "none"}, "None.")
    head_row = el(
        "tr",
        None,
        [el("th", {"class": c}, t) for c, t in _PIPELINE_COLUMNS],
    )
    rows = []
    for p in sorted(pipelines, key=lambda n: (int(n.get("column") or 0), int(n.get("row") or 0))):
        outputs = sorted(p.get("outputs") or {})
        sidecars = ", ".join(str(i.get("sidecar")) for i in p.get("instances") or [])
        rows.append(
            el(
                "tr",
                {"data-pipeline": p.get("name")},
                el("td", None, el("b", None, p.get("name")), el("div", {"class": "sub"}, p.get("group"))),
                el(
                    "td",
                    None,
                    el("span", {"class": f"badge {_badge(p.get('level'))}"}, _state_text(p.get("state"))),
                    el("div", {"class": "sub"}, p.get("state_reason")),
                ),
                el("td", {"class": "num"}, f"{rate_text(p.get('rate'))}/s"),
                el("td", {"class": "num"}, fmt(p.get("lag"))),
                el("td", {"class": "num"}, f"{rate_text(p.get('error_rate'))}/s"),
                el("td", {"class": "num"}, seconds_text(p.get("p99"))),
                el("td", {"class": "mono"}, ", ".join(p.get("inputs") or []), " → ", ", ".join(outputs) or UNKNOWN),
                el("td", {"class": "mono"}, sidecars),
            )
        )
    return el("table", None, el("thead", None, head_row), el("tbody", None, rows))


_PIPELINE_COLUMNS = (
    ("c-name", "Pipeline (group)"),
    ("c-state", "State"),
    ("num c-rate", "Rate"),
    ("num c-lag", "Lag"),
    ("num c-rate", "Errors"),
    ("num c-rate", "p99"),
    (None, "Topics"),
    (None, "Sidecars"),
)


def _badge(level: object) -> str:
    return {"ok": "ok", "warn": "warn", "idle": "idle"}.get(str(level), "bad")


def sidecar_table(sidecars: Sequence[Mapping[str, Any]]) -> Html:
    head_row = el(
        "tr",
        None,
        [el("th", None, t) for t in ("Admin URL", "Answer", "Version", "Host", "Up", "Pipelines")],
    )
    rows = []
    for s in sidecars:
        if not s.get("reachable"):
            answer: Child = [
                el("span", {"class": "badge bad"}, "unreachable"),
                el("div", {"class": "sub"}, s.get("error")),
            ]
        else:
            answer = el(
                "span",
                {"class": f"badge {'ok' if s.get('ready') else 'warn'}"},
                "ready" if s.get("ready") else "not ready",
            )
        rows.append(
            el(
                "tr",
                {"data-sidecar": s.get("url"), "class": None if s.get("reachable") else "unreachable"},
                el("td", {"class": "mono"}, s.get("url"), " (this one)" if s.get("own") else None),
                el("td", None, answer),
                el("td", None, s.get("version") or UNKNOWN),
                el("td", None, s.get("host") or UNKNOWN),
                el("td", None, duration_text(s.get("uptime_s"))),
                el("td", {"class": "mono"}, ", ".join(s.get("pipelines") or []) or UNKNOWN),
            )
        )
    return el("table", None, el("thead", None, head_row), el("tbody", None, rows))
