"""The HTML status page at / in a real browser (headless Chromium, see browser.py): what a person sees, after
the script ran. The screenshot stays in the test's ``tmp_path`` (kept when the test fails)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import streamcar
from streamcar.admin.page import content_security_policy, render_page

from browser import CHROMIUM_TIMEOUT, HEIGHT, WIDTH, chromium, chromium_binary, png_pixels
from dom import Node, parse, shape
from service import Seen, TestService
from sidecar import make_config, pipeline, running
from status_samples import document, healthy, pipeline_status
from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration

# Untrusted text that reaches the page through dead letters: if any of it became markup, the dumped DOM would
# hold an <img> or a third <script>, and (CSP aside) the handlers would mark <body data-pwned>.
IMG = "<img src=x onerror=\"document.body.dataset.pwned='img'\">"
SCRIPT = "<script>document.body.dataset.pwned='script'</script>"


# -- reading what it shows ------------------------------------------------------------------------------------
# -- the sidecar's side ---------------------------------------------------------------------------------------
SLOW = 0.2


async def reject_bad(seen: Seen) -> web.StreamResponse:
    if seen.offset % 10 == 5:
        await asyncio.sleep(SLOW)  # a tenth of the calls: p99 stands apart from p50
    if seen.body.startswith(b"bad "):
        return web.Response(status=422, text="rejected: " + seen.body[4:].decode())
    return web.Response(body=seen.body.upper())


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


async def settled(url: str, consumed: int, within: float = 30.0) -> dict[str, Any]:
    """/status once every record is done and the lag of every partition is known (watermarks refresh every 2 s)."""
    deadline = time.monotonic() + within
    while True:
        (p,) = (await get_json(url))["pipelines"]
        parts = p["partitions"]
        if (
            p["consumed"] == consumed
            and p["in_flight"] == p["buffered"] == 0
            and parts
            and all(part["lag"] == 0 for part in parts)
        ):
            return dict(p)
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for /status to settle: {json.dumps(p)[:800]}")
        await asyncio.sleep(0.1)  # another component's view over HTTP: there is no event to await


async def test_the_page_shows_each_pipeline_at_a_glance(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    chromium_binary()  # skip (or fail in CI) before starting anything
    source, out, dlq = topic_factory(3), topic_factory(3), topic_factory(1)
    records = [(f"k{i}".encode(), f"ok-{i}".encode()) for i in range(30)]
    records[7] = (b"k7", f"bad {IMG}".encode())
    records[14] = (SCRIPT.encode(), f"bad {SCRIPT}".encode())
    records[21] = (b"k21", b"bad plain & simple")
    service = TestService(reject_bad).start()
    try:
        spec = pipeline(source, group_factory(), service.url, publish=out, dead_letter=dlq)
        async with running(make_config(kafka.bootstrap, {"orders": spec})) as sidecar:
            base = f"http://127.0.0.1:{sidecar.admin.port}"
            await asyncio.to_thread(produce_records, kafka, source, records)
            dead = await asyncio.to_thread(read_topic, kafka, dlq, expect=3)
            status = await settled(f"{base}/status", consumed=30)
            async with aiohttp.ClientSession() as session, session.get(f"{base}/") as response:
                served, headers = await response.text(), response.headers
            screenshot = tmp_path / "status-page.png"
            started = time.monotonic()
            dom = await chromium(f"{base}/", screenshot=screenshot)
            browser_seconds = time.monotonic() - started
    finally:
        service.stop()

    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]

    # the screenshot: a real drawing of the page, not an empty frame
    width, height, colours = png_pixels(screenshot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(colours) > 50, f"only {len(colours)} colours in {screenshot}: blank page?"

    page = parse(dom)
    body = page.one("body")
    assert body.attrs["data-state"] == "live", f"the script did not take over: {body.attrs}"
    assert int(body.attrs["data-polls"]) >= 2
    assert "data-pwned" not in body.attrs
    card = page.one("section", data_pipeline="orders")

    def tile(name: str, part: str = "value", on: Node = card) -> str:
        return on.one("div", data_field=name).one("div", **{"class": part}).text

    assert card.one("h2").text == "orders"
    assert card.attrs["data-state"] == status["state"] == "running"  # messages done in the last 10 s
    assert tile("dead_lettered") == "3"  # in the last minute: red while recent
    assert card.one("div", data_field="dead_lettered").attrs["class"] == "tile dead-lettered alert"
    assert tile("dead_lettered", "sub").startswith("3 total · last ")
    assert tile("lag") == str(status["lag"]) == "0"
    assert tile("in_flight") == "0"
    assert tile("throughput", "sub").endswith(" · 30 consumed")
    # the server's rates, percentiles and trends, on the first paint already
    served_card = parse(served).one("section", data_pipeline="orders")
    served_rate = tile("throughput", on=served_card)
    assert re.fullmatch(r"\d+\.\dmsg/s|[1-9][\d,]*msg/s", served_rate), served_rate  # 10 and above: whole
    assert served_rate != "0.0msg/s"
    latency = status["latency"]["1m"]
    assert latency["calls"] == 30
    assert latency["p50"] < SLOW <= latency["p99"], latency  # every tenth call is slow
    assert re.fullmatch(r"\d+ ms", tile("latency")), tile("latency")
    assert status["rates"]["1m"]["count"] == {
        "consumed": 30,
        "done": 30,
        "published": 27,
        "dead_lettered": 3,
        "retries": 0,
        "call_errors": 0,
        "calls": 30,
    }
    assert status["routed"] == [{"topic": out, "count": 27, "per_s": status["routed"][0]["per_s"]}]
    assert (status["publish_topic"], status["publish_allow"], status["dead_letter_topic"]) == (out, [out], dlq)
    assert f"publishes to {out}" in card.one("div", **{"class": "topics"}).text
    assert f"last minute: {out} " in card.one("div", **{"class": "topics"}).text
    assert {li.attrs["data-kind"]: li.one("span", **{"class": "n"}).text for li in card.find_all("li")} == {
        "success": "27",
        "dead-letter": "3",
    }
    assert card.one("span", data_field="published").one("b").text == "27"
    partitions = {
        row.attrs["data-partition"]: [td.text for td in row.find_all("td")] for row in _rows(card, "data-partition")
    }
    assert partitions == {
        f"{source}[{p['partition']}]": [source, str(p["partition"]), f"{p['next_offset']:,}", "0"]
        for p in status["partitions"]
    }
    about = page.one("div", id="about").text
    assert about.startswith(f"v{streamcar.__version__}"), about
    assert re.search(r"up \d+s$", about), about

    # dead letters by kind and error (three errors: three groups of one), as the dead-letter topic recorded them
    rows = _rows(card, "data-kind")
    shown = {row.find_all("td")[2].text: [td.text for td in row.find_all("td")] for row in rows}
    assert len(rows) == len(shown) == 3
    for record in dead:
        h = {k: v.decode() for k, v in record.headers()}
        _, kind_cell, _, count_cell, sample_cell = shown[h["streamcar-error"]]
        assert kind_cell == h["streamcar-error-kind"] == "http-status"
        assert count_cell == "1"
        offset = h["streamcar-source-offset"]
        assert sample_cell == f"{source}[{h['streamcar-source-partition']}]@{offset} key {record.key().decode()}"
    assert f"HTTP 422: rejected: {IMG}" in shown
    assert f"HTTP 422: rejected: {SCRIPT}" in shown
    times = [row.find_all("td")[0].attrs["title"] for row in rows]
    assert times == sorted(times, reverse=True)

    # the untrusted text stayed text: no element came out of it
    assert page.find_all("img") == []
    assert [s.attrs.get("id") for s in page.find_all("script")] == ["page-config", None]

    # the script draws what the server drew; what moves with time aside (see the mirror test for all of it)
    def volatile(n: Node) -> bool:
        return n.attrs.get("data-field") in {"throughput", "latency", "lag", "dead_lettered"} or n.attrs.get(
            "class"
        ) in {"minor rates", "meta topics"}

    main_served = parse(served).one("main")
    assert shape(page.one("main"), volatile) == shape(main_served, volatile)
    assert browser_seconds < CHROMIUM_TIMEOUT


def _rows(card: Node, attribute: str) -> list[Node]:
    return [n for n in card.walk() if n.tag == "tr" and attribute in n.attrs]


# -- the script mirrors the server ----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def static_admin(first: dict[str, Any], then: dict[str, Any]) -> AsyncIterator[str]:
    """An admin server whose page is rendered from ``first`` and whose /status answers ``then``."""

    async def page(request: web.Request) -> web.Response:
        nonce = "n0nce"
        body = render_page(first, nonce=nonce, now=time.time())
        return web.Response(
            text=body, content_type="text/html", headers={"Content-Security-Policy": content_security_policy(nonce)}
        )

    async def status(request: web.Request) -> web.Response:
        return web.json_response(then)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


def nothing(node: Node) -> bool:
    return False


async def test_the_script_redraws_exactly_what_the_server_draws(tmp_path: Path) -> None:
    """Every part of a card (tiles, trends, rates, stuck partitions, dead-letter groups with hostile text), drawn
    by the script from /status, is what render_page draws from the same document; and it replaces the first
    paint (another document) with it."""
    chromium_binary()
    later = healthy(name="orders", consumed=2_000_000, lag=40)
    later["trend"] = {**later["trend"], "consumed": [float(i * 37 % 101) for i in range(60)], "lag": list(range(60))}
    later["rates"]["10s"]["per_s"]["consumed"] = 0.25  # a tie: rounded half up on both sides
    stuck = pipeline_status(name="payments", state="partly-stalled")
    then = document(later, stuck, ready=False)
    first = document(healthy(name="orders"), pipeline_status(name="payments"))
    screenshot = tmp_path / "mirror.png"
    async with static_admin(first, then) as url:
        page = parse(await chromium(url, screenshot=screenshot, budget_ms=2500))
    assert page.one("body").attrs["data-state"] == "live"
    assert page.find_all("img") == []
    expected = parse(render_page(then, nonce="n0nce", now=time.time()))
    assert shape(page.one("main"), lambda n: False) == shape(expected.one("main"), lambda n: False)
    assert shape(page.one("div", id="about"), lambda n: False) == shape(
        expected.one("div", id="about"), lambda n: False
    )
    card = page.one("section", data_pipeline="orders")
    assert card.one("div", data_field="throughput").one("div", **{"class": "value"}).text == "0.3msg/s"
    assert page.one("span", id="ready").text == "not ready"


# -- the server going away ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def flaky_admin(document: dict[str, Any], answers: int) -> AsyncIterator[str]:
    """An admin server whose /status answers ``answers`` times, then fails as a dying sidecar's would."""
    served = 0

    async def page(request: web.Request) -> web.Response:
        nonce = "n0nce"
        body = render_page(document, nonce=nonce, now=time.time())
        return web.Response(
            text=body, content_type="text/html", headers={"Content-Security-Policy": content_security_policy(nonce)}
        )

    async def status(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        if served > answers:
            raise web.HTTPServiceUnavailable()
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_the_page_says_when_it_loses_the_server_and_shows_a_pipeline_without_partitions() -> None:
    chromium_binary()
    idle = {
        "name": "payments",
        "group": "payments-service",
        "topics": ["payments"],
        "call": {"url": "http://127.0.0.1:1/pay", "timeout": "5s", "batch": {"max_messages": 1, "max_wait": "5ms"}},
        "kafka_error": None,
        "service_failing": True,
        "circuit": "open",
        "circuit_reason": "5 calls in a row could not get through",
        "circuit_opened": 2,
        "last_call_error": "connection error: refused",
        "partitions": [],
        "lag": 0,
        "in_flight": 0,
        "buffered": 0,
        "consumed": 0,
        "results": {},
        "published": 0,
        "dead_lettered": 0,
        "retries": 4,
        "calls": 4,
        "last_errors": [],
        "recent_dead_letters": [],
    }
    async with flaky_admin({"ready": False, "pipelines": [idle]}, answers=1) as url:
        page = parse(await chromium(url, budget_ms=2500))

    body = page.one("body")
    assert (body.attrs["data-state"], body.attrs["data-polls"]) == ("lost", "1")
    banner = page.one("div", id="banner")
    assert "hidden" not in banner.attrs
    assert banner.text.startswith("Connection lost (HTTP 503), retrying")
    assert page.one("span", id="ready").text == "unknown"
    card = page.one("section", data_pipeline="payments")
    assert card.attrs["class"] == "card failing"
    assert [b.text for b in card.one("div", **{"class": "badges"}).find_all("span")] == [
        "circuit open",
        "service failing",
        "no partitions",
    ]
    assert "No partitions assigned yet." in card.text
    assert card.one("div", data_field="lag").one("div", **{"class": "value"}).text == "\u2013"
