"""The trivial gRPC service of the benchmarks: ``/bench.Echo/Echo`` returns the request bytes.

Run: python -m bench.echo_grpc PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc


async def echo(request: bytes, context: Any) -> bytes:
    return request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)  # no (de)serializers: bytes in, bytes out
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
