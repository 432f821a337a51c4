"""A real gRPC service for the tests, the twin of ``service.py``'s HTTP TestService.

It serves ``/streamcar.test.Orders/Handle`` (``tests/protos/echo.proto``, compiled with grpc_tools.protoc on first
use) on 127.0.0.1 from its own thread and loop, so it answers whatever the test code is doing. It records every
call (before answering) and answers through a handler the test can swap; the handler gets the raw request bytes
in :class:`Seen` and the grpc.aio context, to set metadata, a status or abort. It can go down (calls fail with
UNAVAILABLE) and come back on the same port, and can serve TLS, optionally requiring a client certificate.
"""

from __future__ import annotations

import functools
import importlib
import importlib.resources
import importlib.util
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from threaded import ThreadedServer

PROTOS = Path(__file__).parent / "protos"
SERVICE = "streamcar.test.Orders"
METHOD = "Handle"

Handler = Callable[["Seen", Any], Awaitable[bytes]]
"""``async def handler(seen, context) -> bytes``: the response bytes; ``context`` is a grpc.aio.ServicerContext."""


@dataclass(frozen=True)
class Seen:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    body: bytes
    metadata: dict[str, str | bytes]
    """The call's metadata by key (the last value where a key repeats); ``-bin`` values are bytes."""
    at: float

    @property
    def id(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class ServerTls:
    cert: bytes
    """The server's certificate chain (PEM)."""
    key: bytes
    client_ca: bytes | None = None
    """When set, clients must present a certificate signed by this CA (mutual TLS)."""


def compile_protos(out_dir: Path) -> ModuleType:
    """Compile ``echo.proto`` into ``out_dir`` and import the message module (``Order``, ``Receipt``)."""
    # imported by name: grpc_tools ships no type information and the mypy config does not list it
    protoc = importlib.import_module("grpc_tools.protoc")
    well_known = importlib.resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    status = protoc.main(["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out_dir}", "echo.proto"])
    if status != 0:
        raise RuntimeError(f"protoc failed on {PROTOS / 'echo.proto'} (exit {status})")
    spec = importlib.util.spec_from_file_location("echo_pb2", out_dir / "echo_pb2.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def echo_pb2() -> ModuleType:
    """The compiled messages, once per process; the generated source is not needed once imported."""
    with tempfile.TemporaryDirectory(prefix="streamcar-protos-") as out_dir:
        return compile_protos(Path(out_dir))


def order(id: str, amount: int, note: str = "") -> bytes:
    """A serialized ``Order``: what the records on the topic hold."""
    return bytes(echo_pb2().Order(id=id, amount=amount, note=note).SerializeToString())


def receipt_of(data: bytes) -> Any:
    """Parse a serialized ``Receipt``."""
    return echo_pb2().Receipt.FromString(data)


async def receipt(seen: Seen, context: Any) -> bytes:
    """The default handler: the order's id and amount with status ``ok``."""
    messages = echo_pb2()
    got = messages.Order.FromString(seen.body)
    return bytes(messages.Receipt(id=got.id, amount=got.amount, status="ok").SerializeToString())


class TestGrpcService(ThreadedServer):
    __test__ = False  # not a pytest test class

    def __init__(self, handler: Handler = receipt, *, tls: ServerTls | None = None) -> None:
        super().__init__("test-grpc-service")
        echo_pb2()  # compile before serving, not inside the first call
        self.handler = handler
        self.tls = tls
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server: Any = None

    @property
    def url(self) -> str:
        scheme = "grpcs" if self.tls is not None else "grpc"
        return f"{scheme}://127.0.0.1:{self.port}/{SERVICE}/{METHOD}"

    async def _up(self) -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._handle)  # no (de)serializers: bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        address = f"127.0.0.1:{self.port}"
        if self.tls is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(self.tls.key, self.tls.cert)],
                root_certificates=self.tls.client_ca,
                require_client_auth=self.tls.client_ca is not None,
            )
            port = server.add_secure_port(address, credentials)
        if port == 0:
            raise RuntimeError(f"the test gRPC service could not bind {address}")
        await server.start()
        self._server = server
        self.port = int(port)

    async def _down(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    async def _handle(self, request: bytes, context: Any) -> bytes:
        metadata: dict[str, str | bytes] = {key: value for key, value in context.invocation_metadata()}
        key = metadata.get("kafka-key-bin")
        seen = Seen(
            topic=str(metadata.get("kafka-topic", "")),
            partition=int(metadata.get("kafka-partition", -1)),
            offset=int(metadata.get("kafka-offset", -1)),
            key=key if isinstance(key, bytes) else None,
            body=request,
            metadata=metadata,
            at=time.monotonic(),
        )
        with self._lock:
            self.seen.append(seen)
        return await self.handler(seen, context)

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def count(self) -> int:
        with self._lock:
            return len(self.seen)
