"""The trivial service of the benchmarks: echoes the body back, 200. Run: python bench/echo_service.py PORT"""

from __future__ import annotations

import sys

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


def main() -> None:
    app = web.Application()
    app.router.add_post("/echo", echo)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
