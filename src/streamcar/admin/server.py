"""The admin HTTP server on ``admin.listen`` (loopback by default).

* ``/healthz`` -- 200 while the process serves requests (liveness);
* ``/readyz`` -- 200 when every pipeline's consumer reaches Kafka and its service answers; 503 with the reasons
  otherwise. A service counts as failing after several calls in a row could not get through (refused, timed out,
  5xx): a restart would not help it, but a load balancer or an operator should know;
* ``/metrics`` -- Prometheus text (see :mod:`streamcar.admin.metrics`);
* ``/status`` -- JSON: each pipeline's partitions, next offsets, lag, in-flight work, counts and last errors;
* ``/`` -- the same for a person: an HTML page that refreshes itself from ``/status`` (see
  :mod:`streamcar.admin.page`). It is self-contained, and its CSP lets only its own inlined style and script run.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping

from aiohttp import web

from streamcar.admin.metrics import exposition, registry_for
from streamcar.admin.page import content_security_policy, render_page
from streamcar.engine.pipeline import Pipeline
from streamcar.errors import StreamcarError

log = logging.getLogger("streamcar.admin")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class AdminServer:
    def __init__(self, host: str, port: int, pipelines: Callable[[], Mapping[str, Pipeline]]) -> None:
        self.host = host
        self.port = port
        self._pipelines = pipelines
        self._registry = registry_for(pipelines)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._page)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise StreamcarError(f"admin.listen {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = int(self._runner.addresses[0][1])
        log.info("admin endpoints on http://%s:%d (/ /healthz /readyz /metrics /status)", self.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def problems(self) -> list[str]:
        """Why the sidecar is not ready; empty when it is."""
        found = []
        for name, pipeline in sorted(self._pipelines().items()):
            if pipeline.kafka_error is not None:
                found.append(f"pipeline {name}: Kafka does not answer: {pipeline.kafka_error}")
            if (circuit := pipeline.circuit_open) is not None:
                found.append(f"pipeline {name}: the circuit to the service is {circuit}")
            if pipeline.stats.service_failing:
                error = pipeline.stats.last_call_error
                found.append(
                    f"pipeline {name}: the service is failing ({pipeline.stats.failed_calls_in_a_row} calls "
                    f"in a row did not get through; last: {error})"
                )
        return found

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        problems = self.problems()
        body = json.dumps({"ready": not problems, "problems": problems}) + "\n"
        return web.Response(status=503 if problems else 200, text=body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=exposition(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _document(self) -> dict[str, object]:
        pipelines = [pipeline.status() for _, pipeline in sorted(self._pipelines().items())]
        return {"ready": not self.problems(), "pipelines": pipelines}

    async def _status(self, request: web.Request) -> web.Response:
        body = json.dumps(self._document(), indent=2) + "\n"
        return web.Response(text=body, content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(18)
        headers = {
            "Cache-Control": "no-store",
            "Content-Security-Policy": content_security_policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        body = render_page(self._document(), nonce=nonce, now=time.time())
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)
