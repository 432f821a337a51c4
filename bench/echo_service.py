"""The trivial HTTP service of the benchmarks: ``/echo`` echoes the body back (200); ``/batch`` answers a batch
envelope with every value echoed. Run: python -m bench.echo_service PORT [DELAY_MS] (the slow service: each
call waits DELAY_MS first)."""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from streamcar import Reply
from streamcar.service import batch_reply, events_from_batch

DELAY = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    if DELAY:
        await asyncio.sleep(DELAY)
    return web.Response(body=body)


async def echo_batch(request: web.Request) -> web.Response:
    events = events_from_batch(await request.read())
    body = batch_reply([Reply.success(event.value) for event in events])
    return web.Response(body=body, content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_post("/batch", echo_batch)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
