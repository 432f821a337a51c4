"""A small OTLP/HTTP traces receiver for the tests: it keeps every span it is sent, and every export's bytes."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from threaded import ThreadedServer


@dataclass(frozen=True)
class ExportedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    error: bool
    attributes: dict[str, object]
    resource: dict[str, object]


class Collector(ThreadedServer):
    """An OTLP/HTTP traces endpoint that keeps what it receives."""

    def __init__(self) -> None:
        super().__init__("otlp-collector")
        self.spans: list[ExportedSpan] = []
        self.bodies: list[bytes] = []  # every export as received (decompressed): what left the sidecar
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _up(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def _down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        with self._lock:
            self.bodies.append(body)
        message = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    found.append(
                        ExportedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            error=span.status.code == 2,  # STATUS_CODE_ERROR
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            resource=resource,
                        )
                    )
        with self._lock:
            self.spans.extend(found)
        return web.Response(content_type="application/x-protobuf", body=b"")

    def snapshot(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self.spans)


def _value(value: object) -> object:
    which = value.WhichOneof("value")  # type: ignore[attr-defined]
    return getattr(value, which) if which else None
