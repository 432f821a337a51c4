"""One service behaviour, reachable in every call mode, for the conformance suite.

Each record carries a ``cmd`` header that says how the service answers it:

* ``ok`` (or none): success, the reply value is :func:`reply_value` of the input value;
* ``drop``: done, nothing published;
* ``flaky``: "retry" on the first :data:`FLAKY_FAILURES` calls, then success;
* ``fail``: "retry" forever (so the engine gives up: an ``exhausted`` dead letter);
* ``reject``: a permanent failure (dead letter at once);
* ``route``: success, to the topic the record's ``route-to`` header names, with a reply header ``cmd: done`` of its
  own (over the forwarded input header of that name).
* ``fanout``: success with as many records as the ``fan`` header says, the odd ones to the topic ``route-to``
  names, each with a header ``part`` (its index).

:class:`Behaviour` decides and records every call (in arrival order, with its concurrency). The modes reach it
through the streamcar.service helpers (HTTP single and batch, :class:`HttpBehaviourService`), through
``python:conformance:handle`` / ``handle_batch`` (in-process), and through the gRPC test server.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from streamcar import Event, Record, Reply
from streamcar.call import records_pb
from streamcar.event import Result
from streamcar.service import aiohttp_event, aiohttp_response, batch_reply, events_from_batch

from grpc_service import Handler as GrpcHandler
from grpc_service import Seen, echo_pb2
from threaded import ThreadedServer

FLAKY_FAILURES = 2
COMMANDS = ("ok", "drop", "flaky", "fail", "reject", "route", "fanout")


def reply_value(value: bytes | None) -> bytes:
    return b"done:" + (value or b"")


@dataclass(frozen=True)
class Call:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    cmd: str

    @property
    def id(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


class Behaviour:
    """Thread-safe: the HTTP and gRPC servers run it on their own threads."""

    def __init__(self, *, delay: tuple[float, float] = (0.0, 0.0), reply: Callable[[Event], bytes] | None = None):
        self.delay = delay
        self.reply = reply or (lambda event: reply_value(event.value))
        self.calls: list[Call] = []
        self.attempts: Counter[tuple[str, int, int]] = Counter()
        self.current = 0
        self.peak = 0
        self.batches: list[int] = []  # the size of every batch call, in arrival order (batch delivery only)
        self.grpc_fanout = False  # the sidecar's call.fanout: every gRPC success answers a Records message
        self._lock = threading.Lock()

    def enter(self, event: Event) -> str:
        cmd = (event.header("cmd") or b"ok").decode()
        with self._lock:
            call = Call(event.topic, event.partition, event.offset, event.key, event.value, cmd)
            self.calls.append(call)
            self.attempts[call.id] += 1
            self.current += 1
            self.peak = max(self.peak, self.current)
        return cmd

    def leave(self, event: Event, cmd: str) -> Reply:
        with self._lock:
            self.current -= 1
            attempt = self.attempts[(event.topic, event.partition, event.offset)]
        if cmd == "drop":
            return Reply.drop()
        if cmd == "fail" or (cmd == "flaky" and attempt <= FLAKY_FAILURES):
            return Reply.retry(error=f"{cmd} (attempt {attempt})")
        if cmd == "reject":
            return Reply.dead_letter("rejected by the service")
        if cmd == "fanout":
            topic = (event.header("route-to") or b"").decode()
            count = int(event.header("fan") or b"0")
            value = self.reply(event)
            return Reply.records(
                [Record(value, headers=(("part", b"%d" % j),), topic=topic if j % 2 else None) for j in range(count)]
            )
        if cmd == "route":
            topic = (event.header("route-to") or b"").decode()
            return Reply.success(self.reply(event), topic=topic, headers={"cmd": b"done"})
        return Reply.success(self.reply(event))

    async def answer(self, event: Event) -> Reply:
        cmd = self.enter(event)
        low, high = self.delay
        if high > 0:
            await asyncio.sleep(random.uniform(low, high))
        return self.leave(event, cmd)

    def answer_sync(self, event: Event) -> Reply:
        return self.leave(event, self.enter(event))

    def count(self) -> int:
        with self._lock:
            return len(self.calls)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)


# --- in-process Python (python:conformance:handle and python:conformance:handle_batch) ---------------------------

# A sidecar process imports this module afresh: CONFORMANCE_MAX_DELAY (seconds) gives its handlers a delay.
_installed = Behaviour(delay=(0.0, float(os.environ.get("CONFORMANCE_MAX_DELAY", "0"))))


def install(behaviour: Behaviour) -> None:
    """The behaviour the in-process handlers use from now on (a sidecar process starts with a fresh one)."""
    global _installed
    _installed = behaviour


async def handle(event: Event) -> Reply:
    return await _installed.answer(event)


async def handle_batch(events: list[Event]) -> list[Reply]:
    _installed.batches.append(len(events))
    return [await _installed.answer(event) for event in events]


# --- HTTP, single and batch delivery, written with streamcar.service ------------------------------------------------


class HttpBehaviourService(ThreadedServer):
    """An aiohttp service on its own thread and loop: ``/single`` and ``/batch`` answer through a behaviour."""

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__("conformance-http")
        self.behaviour = behaviour
        self._runner: web.AppRunner | None = None

    def url(self, batch: bool) -> str:
        return f"http://127.0.0.1:{self.port}/{'batch' if batch else 'single'}"

    async def _up(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/single", self._single)
        app.router.add_post("/batch", self._batch)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _single(self, request: web.Request) -> web.StreamResponse:
        return aiohttp_response(await self.behaviour.answer(await aiohttp_event(request)))

    async def _batch(self, request: web.Request) -> web.StreamResponse:
        events = events_from_batch(await request.read())
        self.behaviour.batches.append(len(events))
        replies: Sequence[Reply] = [await self.behaviour.answer(event) for event in events]
        return web.Response(body=batch_reply(replies), content_type="application/json")


# --- gRPC, through the test gRPC server ----------------------------------------------------------------------------


def event_from_grpc(seen: Seen) -> Event:
    """The event a gRPC call carried (record headers come as ``kafka-header-<name>-bin`` metadata)."""
    prefix, suffix = "kafka-header-", "-bin"
    headers = tuple(
        (name[len(prefix) : -len(suffix)], value)
        for name, value in seen.metadata.items()
        if name.startswith(prefix) and name.endswith(suffix) and isinstance(value, bytes)
    )
    return Event(seen.topic, seen.partition, seen.offset, -1, seen.key, seen.body, headers)


def receipt_for(event: Event) -> bytes:
    got = echo_pb2().Order.FromString(event.value or b"")
    return bytes(echo_pb2().Receipt(id=got.id, amount=got.amount, status="ok").SerializeToString())


def grpc_handler(behaviour: Behaviour) -> GrpcHandler:
    """Answers as the behaviour says: success returns the receipt, retry is UNAVAILABLE, dead letter
    INVALID_ARGUMENT, drop an empty response with the ``streamcar-result: drop`` trailer."""

    async def answer(seen: Seen, context: Any) -> bytes:
        reply = await behaviour.answer(event_from_grpc(seen))
        if reply.result is Result.SUCCESS and (reply.fanout is not None or behaviour.grpc_fanout):
            # the sidecar's call.fanout: true: a method that fans out answers Records, one record or many
            one = [Record(reply.value, key=reply.key, headers=reply.headers, topic=reply.topic)]
            return records_pb.encode(list(reply.fanout) if reply.fanout is not None else one)
        if reply.result is Result.SUCCESS:
            trailers: list[tuple[str, str | bytes]] = [(f"kafka-header-{n}-bin", v or b"") for n, v in reply.headers]
            if reply.topic is not None:
                trailers.append(("streamcar-topic", reply.topic))
            context.set_trailing_metadata(tuple(trailers))
            return reply.value or b""
        if reply.result is Result.DROP:
            context.set_trailing_metadata((("streamcar-result", "drop"),))
            return b""
        code = grpc.StatusCode.UNAVAILABLE if reply.result is Result.RETRY else grpc.StatusCode.INVALID_ARGUMENT
        await context.abort(code, reply.error or "")
        raise AssertionError("abort returns by raising")

    return answer
