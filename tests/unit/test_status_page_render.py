"""The status page as the server renders it (before its script runs, or without JavaScript), and its headers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources
from typing import Any

import aiohttp
import pytest

from streamcar.admin import AdminServer
from streamcar.admin.page import UNKNOWN, content_security_policy, fmt, render_page

NOW = 1_764_072_000.0  # 2025-11-25 12:00:00 UTC
HOSTILE_KEY = "</script><script>alert('key')</script>"
HOSTILE_ERROR = "HTTP 422: <img src=x onerror=alert(1)> & <b>bold</b>"


def pipeline_status(**overrides: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "orders",
        "group": "orders-service",
        "topics": ["orders"],
        "call": {"url": "http://127.0.0.1:8080/orders", "timeout": "5s", "batch": {"max_messages": 1}},
        "kafka_error": None,
        "service_failing": False,
        "circuit": "closed",
        "circuit_reason": None,
        "circuit_opened": 0,
        "last_call_error": None,
        "partitions": [
            {"topic": "orders", "partition": 0, "next_offset": 1200, "lag": 0},
            {"topic": "orders", "partition": 1, "next_offset": 1234567, "lag": 17},
        ],
        "lag": 17,
        "in_flight": 3,
        "buffered": 12,
        "consumed": 1235767,
        "results": {"dead-letter": 2, "success": 1235750, "drop": 1},
        "published": 1235750,
        "dead_lettered": 2,
        "retries": 5,
        "calls": 1235760,
        "last_errors": [],
        "recent_dead_letters": [
            {
                "topic": "orders",
                "partition": 0,
                "offset": 41,
                "key": "k41",
                "kind": "http-status",
                "error": "HTTP 422: x",
            },
            {
                "topic": "orders",
                "partition": 1,
                "offset": 7,
                "key": HOSTILE_KEY,
                "kind": "rejected",
                "error": HOSTILE_ERROR,
            },
        ],
    }
    for dead in status["recent_dead_letters"]:
        dead["at"] = NOW - 60
    status.update(overrides)
    return status


class Page(HTMLParser):
    """The elements (tag, attributes) and the text of a page, in document order."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def tags(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.elements if t == tag]

    def with_class(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for _, attrs in self.elements if name in (attrs.get("class") or "").split()]


def render(*pipelines: dict[str, Any], ready: bool = True) -> str:
    return render_page({"ready": ready, "pipelines": list(pipelines)}, nonce="abc123", now=NOW)


def test_untrusted_text_is_escaped_and_only_the_pages_own_scripts_exist() -> None:
    document = render(pipeline_status())
    page = Page(document)
    assert page.tags("img") == []
    assert page.tags("b") == [{}, {}, {}, {}, {}]  # group and timeout, published/retries/calls: not the error's
    assert [a.get("id") or a.get("nonce") for a in page.tags("script")] == ["page-config", "abc123"]
    text = "".join(page.texts)
    assert HOSTILE_KEY in text
    assert HOSTILE_ERROR in text
    assert 'title="HTTP 422: &lt;img src=x onerror=alert(1)&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"' in document


def test_the_inlined_assets_cannot_end_their_element_early() -> None:
    for name, closing in (("status.js", "</script"), ("status.css", "</style")):
        text = resources.files("streamcar.admin").joinpath(name).read_text(encoding="utf-8")
        assert closing not in text.lower(), name


def test_style_and_script_run_under_the_nonce_of_the_policy() -> None:
    page = Page(render(pipeline_status()))
    assert [a.get("nonce") for a in page.tags("style")] == ["abc123"]
    policy = content_security_policy("abc123")
    assert "script-src 'nonce-abc123'" in policy
    assert "style-src 'nonce-abc123'" in policy
    assert "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    (config,) = [attrs for attrs in page.tags("script") if attrs.get("id") == "page-config"]
    assert config["type"] == "application/json"


def test_a_healthy_pipeline_reads_at_a_glance() -> None:
    document = render(pipeline_status())
    page = Page(document)
    (card,) = page.tags("section")
    assert card == {"class": "card", "data-pipeline": "orders"}
    assert [a["class"] for a in page.with_class("badge")] == ["badge ok", "badge ok"]  # ready, healthy
    text = "".join(page.texts)
    for shown in ("1,235,767", "1,234,567", "orders → http://127.0.0.1:8080/orders", "group orders-service"):
        assert shown in text
    assert "snapshot at 12:00:00 UTC" in text
    assert page.with_class("dead-lettered")[0]["class"] == "tile dead-lettered alert"
    # results: the known kinds first, in their order, with integer segments filling the bar
    assert [a["data-kind"] for a in page.tags("li")] == ["success", "drop", "dead-letter"]
    rects = page.tags("rect")
    assert [int(r["width"] or 0) for r in rects] == [1000, 0, 0]
    assert "<1%" in text
    assert "100%" in text
    # partitions: lagging ones stand out
    assert [a["class"] for a in page.with_class("lagging")] == ["num lagging"]
    # dead letters: newest first, with the UTC time and the full date in the title
    assert [a["data-offset"] for a in page.tags("tr") if "data-offset" in a] == ["7", "41"]
    assert "11:59:00" in text
    assert 'title="2025-11-25 11:59:00 UTC"' in document


def test_a_pipeline_without_partitions_yet() -> None:
    page = Page(render(pipeline_status(partitions=[], lag=0, results={}, recent_dead_letters=[], dead_lettered=0)))
    text = "".join(page.texts)
    assert "No partitions assigned yet." in text
    assert "No results yet." in text
    assert "None." in text
    lag = text.split("Lag", 1)[1]
    assert lag.startswith(UNKNOWN)
    assert [a["class"] for a in page.with_class("badge")][1:] == ["badge ok", "badge idle"]


@pytest.mark.parametrize(
    ("overrides", "level", "badges", "problems"),
    [
        (
            {"circuit": "open", "circuit_reason": "5 calls in a row failed", "last_call_error": "refused"},
            "failing",
            ["circuit open"],
            ["Circuit open: 5 calls in a row failed", "Last call error: refused"],
        ),
        ({"circuit": "half-open"}, "degraded", ["circuit half-open"], ["Circuit half-open"]),
        (
            {"kafka_error": "all brokers down", "service_failing": True, "last_call_error": "HTTP 503"},
            "failing",
            ["Kafka unreachable", "service failing"],
            ["Kafka does not answer: all brokers down", "Last call error: HTTP 503"],
        ),
        ({"circuit": None}, "", ["healthy"], []),  # an engine without a circuit breaker
    ],
)
def test_problems_are_badges_and_lines(
    overrides: dict[str, Any], level: str, badges: list[str], problems: list[str]
) -> None:
    document = render(pipeline_status(**overrides), ready=not level)
    page = Page(document)
    (card,) = page.tags("section")
    assert card["class"] == f"card {level}".strip()
    assert re.findall(r'<span class="badge [a-z]+">([^<]*)</span>', document) == badges
    assert re.search(r'<span id="ready" class="badge [a-z]+">([^<]*)</span>', document)[1] == (  # type: ignore[index]
        "not ready" if level else "ready"
    )
    assert re.findall(r"<li(?: class=\"warn\")?>([^<]*)</li>", document) == problems


def test_no_pipelines_and_number_formatting() -> None:
    assert "No pipelines." in "".join(Page(render()).texts)
    assert (fmt(0), fmt(1234567), fmt(None), fmt(True)) == ("0", "1,234,567", UNKNOWN, UNKNOWN)


async def test_the_admin_server_serves_the_page_uncached_under_its_policy() -> None:
    server = AdminServer("127.0.0.1", 0, lambda: {})
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/") as response:
                status, headers, body = response.status, response.headers, await response.text()
            async with session.get(f"http://127.0.0.1:{server.port}/status") as response:
                document = await response.json()
    finally:
        await server.close()
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"
    (nonce,) = set(re.findall(r'nonce="([^"]+)"', body))
    assert len(nonce) >= 16
    assert headers["Content-Security-Policy"] == content_security_policy(nonce)
    assert document == {"ready": True, "pipelines": []}
    config = json.loads(re.search(r'<script id="page-config" type="application/json">(.*?)</script>', body)[1])  # type: ignore[index]
    assert config == {"refresh_ms": 1000, "status_url": "status"}
