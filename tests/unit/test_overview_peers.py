"""What the overview makes of what peers answer (issue 30, findings 7 and 8): a peer with an unexpected /status
shape is shown as unreadable and the rest drawn (before: /overview and /overview.json answered 500 for everyone);
a valid /status that arrives in several writes is read whole (before: "not JSON")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web
from test_overview_graph import entry

from streamcar.admin.overview import MAX_STATUS_BYTES, Answer, Peer, build, gather
from streamcar.admin.overview_page import render_overview

Handler = Callable[[web.Request], Coroutine[Any, Any, web.StreamResponse]]

GOOD = {"ready": True, "version": "0.1.0", "pipelines": [entry("good", "a", "b")]}


def raw(body: bytes) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return handle


def in_pieces(body: bytes, pieces: int, *, length: bool) -> Handler:
    """``body`` in ``pieces`` writes with a pause between, with a Content-Length or chunked."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if length:
            response.content_length = len(body)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            await response.write(body[start : start + step])
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    return handle


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Coroutine[Any, Any, Peer]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Peer:
        app = web.Application()
        app.router.add_get("/status", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return Peer(f"http://127.0.0.1:{runner.addresses[0][1]}/")

    yield start
    for runner in runners:
        await runner.cleanup()


def deep(levels: int) -> bytes:
    return b'{"pipelines": [' + b"[" * levels + b"]" * levels + b"]}"


HOSTILE_SHAPES = {
    "wrong types": json.dumps(
        {"pipelines": [{"name": "x", "group": "g", "lag": "lots", "partitions": "p", "topics": 5, "rates": [1]}]}
    ).encode(),
    "infinity": b'{"pipelines": [{"name": "x", "group": "g", "topics": ["t"], "lag": Infinity}]}',
    "nan rate": b'{"pipelines": [{"name": "x", "group": "g", "topics": ["t"], "latency": {"10s": {"p99": NaN}}}]}',
    "deep nesting": deep(100_000),
    "objects for lists": json.dumps({"pipelines": [{"name": "x", "topics": {"t": 1}, "routed": {"a": 1}}]}).encode(),
}


@pytest.mark.parametrize("shape", sorted(HOSTILE_SHAPES))
async def test_a_peer_with_an_unexpected_shape_is_unreadable_and_the_rest_is_drawn(
    serve: Callable[[Handler], Coroutine[Any, Any, Peer]], shape: str
) -> None:
    good = await serve(raw(json.dumps(GOOD).encode()))
    bad = await serve(raw(HOSTILE_SHAPES[shape]))
    answers = await gather([good, bad])
    assert answers[0].document is not None
    assert answers[1].document is None, answers[1]
    assert answers[1].error is not None
    assert "its /status" in answers[1].error, answers[1].error
    graph = build(answers)
    assert [p["name"] for p in graph["pipelines"]] == ["good"]
    json.dumps(graph, allow_nan=False)  # /overview.json is strict JSON
    assert "good" in render_overview(graph, nonce="n")


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_a_status_in_several_writes_is_read_whole(
    serve: Callable[[Handler], Coroutine[Any, Any, Peer]], length: bool
) -> None:
    body = json.dumps(GOOD).encode()
    (answer,) = await gather([await serve(in_pieces(body, 4, length=length))])
    assert answer.error is None, answer.error
    assert answer.document == GOOD


async def test_a_status_larger_than_the_cap_is_refused_without_reading_it_all(
    serve: Callable[[Handler], Coroutine[Any, Any, Peer]],
) -> None:
    body = b'{"pipelines": [], "pad": "' + b"x" * (MAX_STATUS_BYTES + 10) + b'"}'
    (answer,) = await gather([await serve(in_pieces(body, 16, length=False))], within=10)
    assert answer.document is None
    assert answer.error == "its /status is larger than 8 MiB"


def test_an_own_document_is_never_judged() -> None:
    own = Answer("http://127.0.0.1:1/", GOOD, own=True)
    assert [p["name"] for p in build([own])["pipelines"]] == ["good"]
