"""The HTML status page at ``/``: every pipeline at a glance, refreshed live from ``/status``.

The page is self-contained: the stylesheet (``status.css``) and the script (``status.js``) are inlined under a
per-response CSP nonce, and nothing is fetched from anywhere else. The server renders the state it has into the
HTML, so the page reads correctly before the first refresh and without JavaScript (rates, percentiles and
trends are the server's, see :mod:`streamcar.admin.window`); the script then polls ``/status`` every second and
rebuilds each card with the same markup. Keep :func:`render_page` and ``status.js`` in step: they mirror each
other function by function.

Everything shown comes from the engine and, through dead letters, from message keys and service replies:
untrusted text. Here it is escaped (:mod:`streamcar.admin.html`); in the script it only ever goes through
``textContent`` and attributes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from streamcar.admin.html import (
    UNKNOWN,
    Child,
    Html,
    asset,
    clock,
    content_security_policy,
    duration_text,
    el,
    fmt,
    head,
    iso,
    rate_text,
    script_json,
)
from streamcar.admin.panels import dead_letters, partitions, results, tiles
from streamcar.admin.states import LEVELS

__all__ = ["UNKNOWN", "content_security_policy", "fmt", "render_page"]

REFRESH_MS = 1000
"""How often the page polls /status."""

SHOWN_STATES = {"stalled": "stalled", "partly-stalled": "partly stalled", "aborting": "aborting"}
"""States with a badge of their own (the others have theirs from the problems they come from)."""


def render_page(document: Mapping[str, Any], nonce: str, now: float, *, overview: bool = False) -> str:
    """The whole page for a /status ``document`` taken at ``now``; ``overview``: link to /overview."""
    pipelines = document.get("pipelines") or []
    ready = bool(document.get("ready"))
    config = json.dumps({"refresh_ms": REFRESH_MS, "status_url": "status"})
    top = el(
        "header",
        {"class": "top"},
        el("div", {"class": "brand"}, "streamcar ", el("span", None, "status")),
        el("span", {"id": "ready", "class": f"badge {'ok' if ready else 'bad'}"}, "ready" if ready else "not ready"),
        el("div", {"id": "about", "class": "about"}, about(document)),
        el(
            "div",
            {"class": "conn"},
            el("span", {"class": "dot"}),
            el("span", {"id": "conn"}, f"snapshot at {clock(now)} UTC"),
        ),
    )
    links: list[Child] = [el("a", {"href": "overview"}, "overview"), " · "] if overview else []
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
            links,
            "Machine-readable: ",
            el("a", {"href": "status"}, "/status"),
            " · ",
            el("a", {"href": "metrics"}, "/metrics"),
            " · ",
            el("a", {"href": "readyz"}, "/readyz"),
        ),
        el("script", {"id": "page-config", "type": "application/json"}, Html(script_json(config))),
        el("script", {"nonce": nonce}, Html(asset("status.js"))),
    )
    return "<!DOCTYPE html>\n" + el("html", {"lang": "en"}, head("streamcar status", nonce), body) + "\n"


def about(document: Mapping[str, Any]) -> list[Child]:
    """The header's version, host and uptime (status.js: about)."""
    started = document.get("started_at")
    return [
        el("span", None, "v", document.get("version") or UNKNOWN),
        el("span", None, document.get("host")) if document.get("host") else None,
        el(
            "span",
            {"title": f"started {iso(started)}" if iso(started) else None},
            "up ",
            duration_text(document.get("uptime_s")),
        ),
    ]


# -- one pipeline (status.js: card, health, topics, tiles, results, partitions, deadLetters) -----------------
def card(p: Mapping[str, Any]) -> Html:
    level, badges, problems = health(p)
    call = p.get("call") or {}
    outputs = [el("span", {"class": "arrow"}, " → "), p["publish_topic"]] if p.get("publish_topic") else []
    return el(
        "section",
        {"class": f"card {level}".strip(), "data-pipeline": p.get("name"), "data-state": p.get("state")},
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
                    call.get("url"),
                    outputs,
                ),
                el("div", {"class": "meta"}, _meta(p)),
                el("div", {"class": "meta topics"}, topics(p)),
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


def topics(p: Mapping[str, Any]) -> list[Child]:
    """What the pipeline writes: its publish topic and allow-list, where replies went lately, its dead letters."""
    out: list[Child] = []
    publish = p.get("publish_topic")
    if publish:
        out += ["publishes to ", el("b", {"class": "topic"}, publish)]
        allow = p.get("publish_allow") or []
        if allow and allow != [publish]:
            out += [" (may route to ", el("span", {"class": "topic"}, ", ".join(allow)), ")"]
    else:
        out.append("publishes nothing")
    routed = p.get("routed") or []
    if routed:
        out.append(" · last minute: ")
        for i, r in enumerate(routed):
            out += [
                ", " if i else None,
                el("span", {"class": "topic"}, r.get("topic")),
                f" {rate_text(r.get('per_s'))}/s",
            ]
    dead = p.get("dead_letter_topic")
    out += [" · dead letters to ", el("b", {"class": "topic"}, dead)] if dead else [" · no dead-letter topic"]
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
    if p.get("producer_problem"):
        badges.append(("bad", "producer fenced"))
        problems.append(("", f"The producer's {p['producer_problem']}"))
    if circuit != "closed":
        badges.append(("bad" if circuit == "open" else "warn", f"circuit {circuit}"))
        reason = p.get("circuit_reason")
        problems.append(("" if circuit == "open" else "warn", f"Circuit {circuit}" + (f": {reason}" if reason else "")))
    if p.get("service_failing"):
        badges.append(("bad", "service failing"))
    if (circuit != "closed" or p.get("service_failing")) and p.get("last_call_error"):
        problems.append(("", f"Last call error: {p['last_call_error']}"))
    state = p.get("state") or ""
    if state in SHOWN_STATES:
        level = LEVELS[state]
        badges.append((level, SHOWN_STATES[state]))
        reason = str(p.get("state_reason") or "")
        problems.append(("" if level == "bad" else "warn", f"{SHOWN_STATES[state].capitalize()}: {reason}"))
    if not badges:
        badges.append(("ok", "healthy"))
    if not p.get("partitions"):
        badges.append(("idle", "no partitions"))
    failing = any(c == "bad" for c, _ in badges)
    return ("failing" if failing else "degraded" if any(c == "warn" for c, _ in badges) else ""), badges, problems
