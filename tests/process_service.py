"""A service in a process of its own, so a test can freeze it (SIGSTOP) as an operator's host would: the kernel
still accepts connections into the listen backlog, and nothing answers. It answers each call with its input's
``Idempotency-Key`` (the scenarios' reply). Run: python tests/process_service.py PORT_FILE"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from aiohttp import web


async def answer(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=request.headers["Idempotency-Key"].encode())


async def serve(sock: socket.socket) -> None:
    app = web.Application()
    app.router.add_post("/handle", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    await asyncio.Event().wait()


def main(port_file: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(sock.getsockname()[1]))
    os.replace(tmp, port_file)  # the port, once the socket listens
    asyncio.run(serve(sock))


if __name__ == "__main__":
    main(sys.argv[1])
