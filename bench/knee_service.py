"""The service with a capacity knee of the pacing bench: ``capacity`` requests served at once, each taking
``delay`` seconds, the rest waiting inside it (FIFO). Run: python -m bench.knee_service PORT.

``POST /echo`` echoes the body; ``POST /control`` with JSON ``{"delay": 0.04, "reject": 0.3, "capacity": 16}``
changes it on the fly (``reject``: that share of requests gets a quick 429); ``GET /stats`` gives the requests'
arrival times and durations (arrival to answer, the wait inside included) since the last ``POST /reset``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

from aiohttp import web

STATE = {"delay": 0.010, "reject": 0.0, "capacity": 16}
SERVERS = {"lock": asyncio.Semaphore(16)}
SEEN: list[tuple[float, float, int]] = []  # (arrival, seconds, status)


async def echo(request: web.Request) -> web.Response:
    arrived = time.time()
    body = await request.read()
    if STATE["reject"] and random.random() < STATE["reject"]:
        SEEN.append((arrived, time.time() - arrived, 429))
        return web.Response(status=429, text="busy")
    async with SERVERS["lock"]:
        await asyncio.sleep(STATE["delay"])
    SEEN.append((arrived, time.time() - arrived, 200))
    return web.Response(body=body)


async def control(request: web.Request) -> web.Response:
    change = json.loads(await request.read())
    if "capacity" in change and change["capacity"] != STATE["capacity"]:
        SERVERS["lock"] = asyncio.Semaphore(int(change["capacity"]))
    STATE.update(change)
    return web.json_response(STATE)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(SEEN)


async def reset(request: web.Request) -> web.Response:
    SEEN.clear()
    return web.json_response({})


def main() -> None:
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/control", control)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
