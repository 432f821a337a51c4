"""The HTML status page at / in a real browser (headless Chromium): what a person sees, after the script ran.

Chromium's ``--virtual-time-budget`` lets the page's timers run (the script polls /status every second) without
waiting in real time; ``--dump-dom`` prints the document as the script left it and ``--screenshot`` draws it.
The screenshot stays in the test's ``tmp_path`` (kept when the test fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streamcar.admin.page import content_security_policy, render_page

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 1280, 1000
CHROMIUM_TIMEOUT = 45.0

# Untrusted text that reaches the page through dead letters: if any of it became markup, the dumped DOM would
# hold an <img> or a third <script>, and (CSP aside) the handlers would mark <body data-pwned>.
IMG = "<img src=x onerror=\"document.body.dataset.pwned='img'\">"
SCRIPT = "<script>document.body.dataset.pwned='script'</script>"


# -- a browser ------------------------------------------------------------------------------------------------
def chromium_binary() -> str:
    found = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if found is None:
        message = (
            "headless Chromium is needed for the status page test: run scripts/ensure-test-tools.sh (Debian: chromium)"
        )
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


async def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 3000) -> str:
    """The DOM of ``url`` after ``budget_ms`` of (virtual) time, optionally drawn to ``screenshot``; bounded."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="streamcar-chromium-") as profile:
        args = [
            "--headless",
            "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",  # loopback only: no update or safe-browsing checks
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--mute-audio",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
        ]
        if screenshot is not None:
            args.append(f"--screenshot={screenshot}")
        proc = await asyncio.create_subprocess_exec(
            binary,
            *args,
            url,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: the renderer and helpers go with it
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out.decode()


# -- reading what it shows ------------------------------------------------------------------------------------
@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        def matches(n: Node) -> bool:
            wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
            classes = n.attrs.get("class", "").split()
            cls = wanted.pop("class", None)
            return (
                (tag is None or n.tag == tag)
                and (cls is None or cls in classes)
                and all(n.attrs.get(k) == v for k, v in wanted.items())
            )

        return [n for n in self.walk() if matches(n)]

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one {tag} {attrs}, found {len(found)}"
        return found[0]

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        children = self.stack[-1].children
        if children and isinstance(children[-1], str):
            children[-1] += data
        else:
            children.append(data)


def parse(document: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(document)
    builder.close()
    return builder.root


def shape(node: Node | str, skip: Callable[[Node], bool]) -> Any:
    """A comparable form of a subtree (tags, attributes, text), leaving out the nodes ``skip`` names."""
    if isinstance(node, str):
        return node
    kept = [shape(c, skip) for c in node.children if isinstance(c, str) or not skip(c)]
    return (node.tag, sorted(node.attrs.items()), kept)


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """Width, height and the distinct colours of an 8-bit RGB(A), non-interlaced PNG (all Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert (depth, colour in (2, 6), interlace) == (8, True, 0), f"unexpected PNG format {header}"
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(idat)), width * bpp
    assert len(raw) == height * (stride + 1)
    colours: set[bytes] = set()
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):  # undo the row filter (PNG spec, section 9)
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return width, height, colours


# -- the sidecar's side ---------------------------------------------------------------------------------------
async def reject_bad(seen: Seen) -> web.StreamResponse:
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

    def tile(name: str) -> str:
        return card.one("div", data_field=name).one("div", **{"class": "value"}).text

    assert card.one("h2").text == "orders"
    assert tile("consumed") == "30"
    assert tile("dead_lettered") == "3"
    assert tile("lag") == str(status["lag"]) == "0"
    assert tile("in_flight") == "0"
    assert tile("throughput") == "0.0msg/s"  # two polls or more, nothing consumed in between
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

    # one row per dead letter, newest first, as the dead-letter topic recorded them
    rows = _rows(card, "data-offset")
    assert len(rows) == 3
    shown = {row.attrs["data-offset"]: [td.text for td in row.find_all("td")] for row in rows}
    for record in dead:
        h = {k: v.decode() for k, v in record.headers()}
        offset = h["streamcar-source-offset"]
        _, source_cell, key_cell, kind_cell, error_cell = shown[offset]
        assert source_cell == f"{source}[{h['streamcar-source-partition']}]@{offset}"
        assert key_cell == record.key().decode()
        assert kind_cell == h["streamcar-error-kind"] == "http-status"
        assert error_cell == h["streamcar-error"]
    errors = [row.find_all("td")[4].text for row in rows]
    assert f"HTTP 422: rejected: {IMG}" in errors
    assert f"HTTP 422: rejected: {SCRIPT}" in errors
    assert [row.find_all("td")[2].text for row in rows].count(SCRIPT) == 1
    times = [row.find_all("td")[0].attrs["title"] for row in rows]
    assert times == sorted(times, reverse=True)

    # the untrusted text stayed text: no element came out of it
    assert page.find_all("img") == []
    assert [s.attrs.get("id") for s in page.find_all("script")] == ["page-config", None]

    # the script draws what the server drew (the throughput needs two samples: the server shows none)
    def volatile(n: Node) -> bool:
        return n.attrs.get("data-field") == "throughput"

    main_served = parse(served).one("main")
    assert shape(page.one("main"), volatile) == shape(main_served, volatile)
    assert browser_seconds < CHROMIUM_TIMEOUT


def _rows(card: Node, attribute: str) -> list[Node]:
    return [n for n in card.walk() if n.tag == "tr" and attribute in n.attrs]


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
