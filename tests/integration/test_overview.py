"""The overview across sidecars, against three real sidecars chained through topics on the real broker:
a → s1 → b → s2 → c → s3 → d, with s2's service hanging (its calls neither answer nor fail), so s2 is stalled
with its lag growing, and a fourth admin URL where nothing listens. ``streamcar overview`` (the CLI, a separate
process) and ``/overview`` (in headless Chromium) must both show the chain and mark s2, with its lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from streamcar.config import Config

from browser import chromium, chromium_binary, png_pixels
from dom import parse
from service import Seen, TestService, echo_upper
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration
TOKEN = "s3-admin-token"


def with_admin(config: Config, **admin: Any) -> Config:
    return config.model_copy(update={"admin": config.admin.model_validate({**config.admin.model_dump(), **admin})})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


async def get_json(url: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, (url, response.status)
        return await response.json()


async def state_of(base: str, token: str | None = None) -> dict[str, Any]:
    (p,) = (await get_json(f"{base}/status", token))["pipelines"]
    return dict(p)


@contextlib.asynccontextmanager
async def chain_of_three(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], hang: threading.Event
) -> AsyncIterator[tuple[dict[str, str], dict[str, str]]]:
    """The three sidecars running; yields their admin URLs and the topics, by name."""
    topics = {name: topic_factory(1) for name in ("a", "b", "c", "d", "dlq")}

    async def hanging(seen: Seen) -> web.StreamResponse:
        await asyncio.to_thread(hang.wait, 120)  # neither an answer nor a failure: nothing for the circuit
        return await echo_upper(seen)

    services = [TestService().start(), TestService(hanging).start(), TestService().start()]
    specs = [
        pipeline(topics["a"], group_factory(), services[0].url, publish=topics["b"]),
        pipeline(topics["b"], group_factory(), services[1].url, publish=topics["c"], dead_letter=topics["dlq"])
        | {"call": {"url": services[1].url, "timeout": "60s"}},
        pipeline(topics["c"], group_factory(), services[2].url, publish=topics["d"]),
    ]
    try:
        s3_config = with_admin(make_config(kafka.bootstrap, {"s3": specs[2]}), token=TOKEN)
        async with running(make_config(kafka.bootstrap, {"s2": specs[1]})) as s2, running(s3_config) as s3:
            urls = {"s2": f"http://127.0.0.1:{s2.admin.port}", "s3": f"http://127.0.0.1:{s3.admin.port}"}
            urls["gone"] = f"http://127.0.0.1:{closed_port()}"
            peers = [urls["s2"], {"url": urls["s3"], "token": TOKEN}, urls["gone"]]
            async with running(with_admin(make_config(kafka.bootstrap, {"s1": specs[0]}), peers=peers)) as s1:
                urls["s1"] = f"http://127.0.0.1:{s1.admin.port}"
                yield urls, topics
                hang.set()
    finally:
        hang.set()
        for service in services:
            service.stop()


async def wait_state(base: str, state: str, within: float = 40.0, token: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        p = await state_of(base, token)
        if p["state"] == state:
            return p
        if time.monotonic() > deadline:
            raise TimeoutError(f"{base}: state {p['state']!r} ({p['state_reason']}), not {state!r} after {within}s")
        await asyncio.sleep(0.2)  # another component's view over HTTP: there is no event to await


async def test_the_overview_shows_where_a_chain_of_services_is_stuck(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    chromium_binary()
    hang = threading.Event()
    async with chain_of_three(kafka, topic_factory, group_factory, hang) as (urls, topics):
        await asyncio.to_thread(produce_records, kafka, topics["a"], [(f"k{i}".encode(), b"v") for i in range(20)])
        await asyncio.to_thread(read_topic, kafka, topics["b"], expect=20)  # s1 did its part
        stalled = await wait_state(urls["s2"], "stalled")  # no message done for 10 s, with lag
        assert stalled["lag"] == 20
        assert stalled["in_flight"] == 20
        await wait_state(urls["s3"], "idle", token=TOKEN)

        env = {**os.environ, "STREAMCAR_ADMIN_TOKEN": TOKEN}
        command = [sys.executable, "-m", "streamcar", "overview", "--admin", urls["s1"], urls["s2"], urls["s3"]]
        command.append(urls["gone"])
        text = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, env=env, timeout=30)
        as_json = await asyncio.to_thread(
            subprocess.run, [*command, "--json"], capture_output=True, text=True, env=env, timeout=30
        )
        graph = await get_json(f"{urls['s1']}/overview.json")
        screenshot = tmp_path / "overview.png"
        dom = await chromium(f"{urls['s1']}/overview", screenshot=screenshot, budget_ms=1500)

    # the terminal: the chain in order, s2 marked with its lag; the silent sidecar shown, not an error
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    a, b, c, d = (topics[n] for n in "abcd")
    # s1 finished its part: running, or idle once that is more than 10 s ago
    chain = rf"{a} → s1 \[(running|idle) [\d.]+/s lag 0\] → {b} → s2 \[stalled 0\.0/s lag 20\] → {c} "
    chain += rf"→ s3 \[idle 0\.0/s lag 0\] → {d}"
    assert re.search(chain, text.stdout), text.stdout
    assert "Needs a look: s2 (stalled: lag 20 and no message finished in the last" in text.stdout
    assert "4 sidecars (1 unreachable)" in text.stdout
    assert "unreachable: cannot connect: connection refused" in text.stdout

    # --json: the same graph for scripts
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    by_name = {p["name"]: p for p in found["pipelines"]}
    assert by_name["s1"]["state"] in ("running", "idle")
    assert {n: (p["state"], p["lag"]) for n, p in by_name.items() if n != "s1"} == {
        "s2": ("stalled", 20),
        "s3": ("idle", 0),
    }
    assert [p["column"] for p in (by_name["s1"], by_name["s2"], by_name["s3"])] == [1, 3, 5]
    assert [s["reachable"] for s in found["sidecars"]] == [True, True, True, False]

    # /overview from s1: itself and its peers (s3 through its token), the same graph
    assert {p["name"]: p["state"] for p in graph["pipelines"] if p["name"] != "s1"} == {"s2": "stalled", "s3": "idle"}
    answered = [(s["own"], s["reachable"]) for s in graph["sidecars"]]
    assert answered == [(True, True), (False, True), (False, True), (False, False)]
    assert TOKEN not in json.dumps(graph)

    page = parse(dom)
    svg = page.one("svg")
    s2 = svg.one("g", data_pipeline="s2")
    assert s2.attrs["class"] == "pipe bad"
    assert [t.text for t in s2.find_all("text")][1:3] == ["stalled", "0.0/s · lag 20 · err 0.0/s"]
    stuck_edge = svg.one("g", data_from=f"topic:{b}", data_to=by_name["s2"]["id"])
    assert stuck_edge.attrs["class"] == "edge input bad"
    assert stuck_edge.one("text", **{"class": "lag"}).text == "lag 20"
    assert {g.attrs["data-topic"] for g in svg.find_all("g", **{"class": "topic"})} >= {a, b, c, d}
    assert "1 of 4 sidecars did not answer" in page.one("div", **{"class": "banner"}).text
    assert TOKEN not in dom
    _, _, colours = png_pixels(screenshot.read_bytes())
    assert len(colours) > 50, f"only {len(colours)} colours in {screenshot}: blank page?"
