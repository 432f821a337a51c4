"""The soak's service, a process of its own so that the nemesis can freeze it (SIGSTOP): the kernel still accepts
connections into the listen backlog, and nothing answers.

    python -m soak.service SETTINGS_FILE PORT_FILE

``SETTINGS_FILE`` (JSON): ``seed``, ``fail_rate``, ``refused`` (record numbers), ``latency`` ([low, high] s).
The port is written to ``PORT_FILE`` once the socket listens.

``POST /handle``: the body is the record's number (what soak.load produces). A refused number gets 422 (a
permanent failure: dead-lettered at once), every time; any other call fails with 503 (retried) at ``fail_rate``,
else it is answered after a latency drawn from the current range, with the call's ``Idempotency-Key`` as the
reply (the reply names its input) and the ``Soak-Member`` call header in a ``soak-member`` record header (the
reply names its publisher). ``POST /control`` ``{"latency": [low, high]}`` sets the range (a slow phase
and its end); ``GET /stats`` counts what it answered. Its draws come from a random source seeded by the soak.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
from collections import Counter
from pathlib import Path

from aiohttp import web


class Service:
    def __init__(self, seed: int, fail_rate: float, refused: set[int], latency: tuple[float, float]) -> None:
        self.rng = random.Random(seed)
        self.fail_rate = fail_rate
        self.refused = refused
        self.latency = latency
        self.stats: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.stats["calls"] += 1
        try:
            number = int(body)
        except ValueError:
            number = -1
        if number in self.refused:
            self.stats["refused"] += 1
            return web.Response(status=422, text=f"record {number} is always refused")
        if self.rng.random() < self.fail_rate:
            self.stats["failed"] += 1
            return web.Response(status=503, text="transient failure")
        low, high = self.latency
        await asyncio.sleep(self.rng.uniform(low, high))
        self.stats["answered"] += 1
        # the reply says who published it (the member names itself in a call header): duplicates tell their story
        member = {"Kafka-Header-soak-member": request.headers.get("Soak-Member", "")}
        return web.Response(body=request.headers["Idempotency-Key"].encode(), headers=member)

    async def control(self, request: web.Request) -> web.Response:
        low, high = (await request.json())["latency"]
        self.latency = (float(low), float(high))
        return web.json_response({"latency": self.latency})

    async def report(self, _request: web.Request) -> web.Response:
        return web.json_response({**self.stats, "latency": self.latency})


async def serve(service: Service, sock: socket.socket) -> None:
    app = web.Application()
    app.router.add_post("/handle", service.handle)
    app.router.add_post("/control", service.control)
    app.router.add_get("/stats", service.report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await asyncio.Event().wait()


def main(settings_file: str, port_file: str) -> None:
    settings = json.loads(Path(settings_file).read_text())
    low, high = settings["latency"]
    service = Service(settings["seed"], settings["fail_rate"], set(settings["refused"]), (low, high))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    tmp = port_file + ".tmp"
    Path(tmp).write_text(str(sock.getsockname()[1]))
    os.replace(tmp, port_file)  # the port, once the socket listens
    asyncio.run(serve(service, sock))


if __name__ == "__main__":
    main(*sys.argv[1:3])
