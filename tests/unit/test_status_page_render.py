"""The status page as the server renders it (before its script runs, or without JavaScript), and its headers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources
from typing import Any

import aiohttp
import pytest

import streamcar
from streamcar.admin import AdminServer
from streamcar.admin.html import rate_text, seconds_text
from streamcar.admin.page import UNKNOWN, content_security_policy, fmt, render_page

from dom import Node, parse
from status_samples import HOSTILE_ERROR, HOSTILE_KEY, NOW, document, healthy, pipeline_status


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
    return render_page(document(*pipelines, ready=ready), nonce="abc123", now=NOW)


def test_untrusted_text_is_escaped_and_only_the_pages_own_scripts_exist() -> None:
    document = render(pipeline_status())
    page = Page(document)
    assert page.tags("img") == []
    assert "<b>bold</b>" not in document
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
    document = render(healthy())
    page = Page(document)
    (card,) = page.tags("section")
    assert card == {"class": "card", "data-pipeline": "orders", "data-state": "running"}
    assert [a["class"] for a in page.with_class("badge")] == ["badge ok", "badge ok"]  # ready, healthy
    text = "".join(page.texts)
    for shown in (
        "1,235,767",
        "1,234,567",
        "orders → http://127.0.0.1:8080/orders → orders-enriched",
        "group orders-service",
        "publishes to orders-enriched (may route to orders-*)",
        "last minute: orders-enriched 1,083/s, orders-eu 1.0/s",
        "dead letters to orders-dlq",
        "v0.1.0",
        "pod-7",
        "up 1h 2m",
    ):
        assert shown in text
    assert "snapshot at 12:00:00 UTC" in text
    # results: the known kinds first, in their order, with integer segments filling the bar
    assert [a["data-kind"] for a in page.tags("li")] == ["success", "drop", "dead-letter"]
    rects = page.tags("rect")
    assert [int(r["width"] or 0) for r in rects] == [1000, 0, 0]
    assert "<1%" in text
    assert "100%" in text
    # partitions: lagging ones stand out
    assert [a["class"] for a in page.with_class("lagging")] == ["num lagging"]
    assert page.with_class("stuck") == []


def test_rates_and_latency_are_the_servers_on_the_first_paint() -> None:
    card = parse(render(healthy())).one("section")

    def tile(field: str) -> Node:
        return card.one("div", data_field=field)

    assert tile("throughput").one("div", **{"class": "value"}).text == "1,235msg/s"  # 1234.5 rounds half up
    assert tile("throughput").one("div", **{"class": "sub"}).text == "1 min 1,100/s · 1,235,767 consumed"
    assert tile("latency").one("div", **{"class": "value"}).text == "45 ms"
    assert tile("latency").one("div", **{"class": "sub"}).text == "p50 4.2 ms · 1 min p99 1.50 s"
    assert tile("in_flight").one("div", **{"class": "sub"}).text == "12 buffered"
    rates = [span.text for span in card.one("div", **{"class": "rates"}).find_all("span")]
    assert rates == ["published 1,230/s", "retries 0.3/s", "call errors 0.1/s"]
    # trends: consumed with its area; p50 and p99 broken where a slice had no call; lag
    spark = tile("throughput").one("svg")
    (line,) = spark.find_all("polyline")
    points = [tuple(map(float, p.split(","))) for p in line.attrs["points"].split()]
    assert [x for x, _ in points] == [57.97, 58.98, 60.0]
    assert min(y for _, y in points) == 2.0  # the highest point is the top of the scale
    assert len(spark.find_all("polygon")) == 1
    latency_lines = tile("latency").one("svg").find_all("polyline")
    assert [len(p.attrs["points"].split()) for p in latency_lines] == [2, 2, 2, 2]  # dots: a point alone
    assert [p.attrs["class"] for p in latency_lines] == ["line l0", "line l0", "line l1", "line l1"]
    assert len(tile("lag").one("svg").find_all("polyline")) == 1


def test_dead_letters_show_a_recent_count_and_are_grouped_by_kind_and_error() -> None:
    card = parse(render(healthy())).one("section")
    dead = card.one("div", data_field="dead_lettered")
    assert dead.attrs["class"] == "tile dead-lettered alert"  # 3 in the last minute
    assert dead.one("div", **{"class": "value"}).text == "3"
    assert dead.one("div", **{"class": "sub"}).text == "2 total · last 11:59:00"
    rows = [n for n in card.walk() if n.tag == "tr" and "data-kind" in n.attrs]
    cells = [[td.text for td in row.find_all("td")] for row in rows]
    assert cells == [
        ["11:59:00", "rejected", HOSTILE_ERROR, "3", f"orders[1]@7 key {HOSTILE_KEY}"],
        ["11:45:00", "http-status", "HTTP 422: x", "1", "orders[0]@41 key null"],
    ]
    assert rows[0].find_all("td")[0].attrs["title"] == "2025-11-25 11:59:00 UTC"


def test_dead_letters_long_ago_are_not_red() -> None:
    status = healthy()
    status["rates"]["1m"]["count"]["dead_lettered"] = 0
    dead = parse(render(status)).one("div", data_field="dead_lettered")
    assert dead.attrs["class"] == "tile dead-lettered"
    assert dead.one("div", **{"class": "value"}).text == "0"


def test_a_stuck_partition_is_marked_and_named() -> None:
    page = parse(render(pipeline_status()))
    card = page.one("section")
    assert card.attrs["class"] == "card degraded"
    assert [b.text for b in card.one("div", **{"class": "badges"}).find_all("span")] == ["partly stalled"]
    assert card.one("ul", **{"class": "problems"}).text == (
        "Partly stalled: orders[1] stuck at offset 1234567 for 42 s (lag 17)"
    )
    (row,) = [n for n in card.walk() if n.tag == "tr" and n.attrs.get("class") == "stuck"]
    assert row.attrs["data-partition"] == "orders[1]"
    assert row.find_all("td")[3].attrs["title"] == "stuck for 42 s"
    assert card.one("div", data_field="lag").one("div", **{"class": "sub"}).text == "1 partition stuck"


def test_before_the_first_second_nothing_is_made_up() -> None:
    empty = {"span_s": 0.0, "per_s": None, "count": None}
    status = healthy(
        rates={"10s": empty, "1m": empty},
        latency={"10s": {"calls": 0, "p50": None, "p99": None}, "1m": {"calls": 0, "p50": None, "p99": None}},
        trend={"slice_s": 5.0, "end": None, "consumed": [], "dead_lettered": [], "p50": [], "p99": [], "lag": []},
        routed=[],
    )
    card = parse(render(status)).one("section")
    assert card.one("div", data_field="throughput").one("div", **{"class": "value"}).text == f"{UNKNOWN}msg/s"
    assert card.one("div", data_field="latency").one("div", **{"class": "value"}).text == UNKNOWN
    assert card.one("div", data_field="dead_lettered").attrs["class"] == "tile dead-lettered"
    assert card.one("div", data_field="throughput").one("svg").find_all("polyline") == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.00042, "420 µs"),
        (0.0042, "4.2 ms"),
        (0.00425, "4.3 ms"),
        (0.045, "45 ms"),
        (1.5, "1.50 s"),
        (12.25, "12.3 s"),
    ],
)
def test_durations_read_in_their_unit(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


@pytest.mark.parametrize(
    ("rate", "text"), [(0.25, "0.3"), (0.05, "0.1"), (9.96, "10.0"), (10.5, "11"), (1234.5, "1,235")]
)
def test_rates_round_half_up_as_the_script_does(rate: float, text: str) -> None:
    assert rate_text(rate) == text


def test_a_pipeline_without_partitions_yet() -> None:
    page = Page(render(healthy(partitions=[], lag=0, results={}, dead_letter_groups=[], dead_lettered=0)))
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
    document = render(healthy(**overrides), ready=not level)
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
    assert (document["ready"], document["pipelines"], document["version"]) == (True, [], streamcar.__version__)
    assert 0 <= document["uptime_s"] <= 5
    assert document["started_at"] <= document["at"]
    config = json.loads(re.search(r'<script id="page-config" type="application/json">(.*?)</script>', body)[1])  # type: ignore[index]
    assert config == {"refresh_ms": 1000, "status_url": "status"}


def test_an_adaptive_limit_and_a_rate_limit_show_beside_in_flight() -> None:
    def shown(status: dict[str, Any]) -> str:
        return "".join(Page(re.sub(r"<script.*?</script>", "", render(status), flags=re.S)).texts)

    text = shown(healthy(concurrency_limit=24, rate_limit={"rate": "500/s", "burst": None}))
    assert "limit 24 (auto)" in text
    assert "at most 500/s" in text
    fixed = shown(healthy())
    assert "(auto)" not in fixed
    assert "at most" not in fixed
