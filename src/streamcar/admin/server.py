"""The admin HTTP server on ``admin.listen`` (loopback by default).

* ``/healthz`` -- 200 while the process serves requests (liveness);
* ``/readyz`` -- 200 when every pipeline's consumer reaches Kafka and its service answers; 503 with the reasons
  otherwise. A service counts as failing after several calls in a row could not get through (refused, timed out,
  5xx): a restart would not help it, but a load balancer or an operator should know;
* ``/metrics`` -- Prometheus text (see :mod:`streamcar.admin.metrics`);
* ``/status`` -- JSON: the version and uptime, and each pipeline's state, partitions, next offsets, lag, in-flight
  work, counts, rates and call latency percentiles over the last 10 s and 1 min (:mod:`streamcar.admin.window`),
  trends, the topics it reads and writes, dead letters by kind and error and last errors;
* ``/`` -- the same for a person: an HTML page that refreshes itself from ``/status`` (see
  :mod:`streamcar.admin.page`). It is self-contained, and its CSP lets only its own inlined style and script run;
* ``/overview`` (and ``/overview.json``) -- the graph of topics and pipelines across this sidecar and those of
  ``admin.peers`` (:mod:`streamcar.admin.overview`), their /status asked at the same time, two seconds at most.

What it shows goes through the pipeline's redactor (:mod:`streamcar.redact`). What it accepts is limited
(:mod:`streamcar.admin.guard`): a cap on connections, a timeout on request heads, known ``Host`` values only,
and with ``admin.token`` a bearer token for everything but the probes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from streamcar._version import __version__
from streamcar.admin.connections import IDLE_TIMEOUT, Gate, guarded
from streamcar.admin.guard import default_hosts, host_allowed
from streamcar.admin.metrics import exposition, registry_for
from streamcar.admin.overview import Answer, Peer, build, gather
from streamcar.admin.overview_page import render_overview
from streamcar.admin.page import content_security_policy, render_page
from streamcar.admin.states import state_of
from streamcar.admin.window import TICK, Recorder
from streamcar.engine.view import PipelineView
from streamcar.errors import StreamcarError
from streamcar.redact import NOTHING, Redactor

log = logging.getLogger("streamcar.admin")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""What answers without the token: the kubelet's probes carry none."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def version() -> str:
    return __version__


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        pipelines: Callable[[], Mapping[str, PipelineView]],
        *,
        allowed_hosts: list[str] | None = None,
        token: str | None = None,
        redactor: Redactor = NOTHING,
        peers: list[Peer] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._pipelines = pipelines
        self._registry = registry_for(pipelines, version())
        self._allowed = set(allowed_hosts) if allowed_hosts is not None else default_hosts(host)
        self._token = token.encode() if token else None
        self._redactor = redactor
        self.gate = Gate()
        self.recorder = Recorder()
        self.peers = list(peers or [])
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/", self._page)
        app.router.add_get("/overview", self._overview)
        app.router.add_get("/overview.json", self._overview_json)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=IDLE_TIMEOUT)
        await self._runner.setup()
        loop = asyncio.get_running_loop()
        try:
            assert self._runner.server is not None
            self._server = await loop.create_server(
                guarded(self._runner.server, self.gate), self.host, self.port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            await self._runner.cleanup()
            raise StreamcarError(f"admin.listen {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._sampler = asyncio.create_task(self._sample(), name="admin-sampler")
        log.info("admin endpoints on http://%s:%d (/ /healthz /readyz /metrics /status)", self.host, self.port)

    async def _sample(self) -> None:
        """Snapshot every pipeline's counters once a second: what rates and recent percentiles are taken from."""
        while True:
            try:
                self.recorder.tick(self._pipelines())
            except Exception:  # what /status shows must never end the sidecar
                log.exception("sampling the pipelines' counters failed")
            await asyncio.sleep(TICK)

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Known hosts only (DNS rebinding), and the token for all but the probes."""
        if not host_allowed(request.headers.get("Host"), self._allowed):
            return web.Response(status=403, text="403: unknown Host (admin.allowed_hosts)\n")
        if self._token is not None and request.path not in OPEN_PATHS and not self._authorized(request):
            return web.Response(
                status=401,
                text="401: the admin token is needed (Authorization: Bearer ..., or Basic with it as password)\n",
                headers={"WWW-Authenticate": 'Basic realm="streamcar", charset="UTF-8"'},
            )
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        token = self._token
        assert token is not None
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        given = credentials.strip().encode()
        if scheme.lower() == "basic":  # a browser's login dialog: any user name, the token as password
            try:
                given = base64.b64decode(given, validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given, token)

    def problems(self, *, detailed: bool = True) -> list[str]:
        """Why the sidecar is not ready; empty when it is. Not ``detailed``: without what the service said (its
        error bodies may echo record data), for a /readyz caller without the admin token."""
        found = []
        for name, pipeline in sorted(self._pipelines().items()):
            if pipeline.kafka_error is not None:
                found.append(f"pipeline {name}: Kafka does not answer: {pipeline.kafka_error}")
            found.extend(f"pipeline {name}: {problem}" for problem in pipeline.topic_problems)
            if (producer := pipeline.producer_problem) is not None:
                found.append(f"pipeline {name}: {producer}")
            if _idle(pipeline):
                continue  # its last calls failed, but nothing waits for the service: nothing is held up
            if (circuit := pipeline.circuit_open) is not None:
                found.append(f"pipeline {name}: the circuit to the service is {circuit}")
            if pipeline.stats.service_failing:
                error = pipeline.stats.last_call_error if detailed else pipeline.stats.last_call_failure
                found.append(
                    f"pipeline {name}: the service is failing ({pipeline.stats.failed_calls_in_a_row} calls "
                    f"in a row did not get through; last: {error})"
                )
        return found

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        detailed = self._token is None or self._authorized(request)
        problems = [self._redactor.scrub(problem) for problem in self.problems(detailed=detailed)]
        body = json.dumps({"ready": not problems, "problems": problems}) + "\n"
        return web.Response(status=503 if problems else 200, text=body, content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=exposition(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _document(self) -> dict[str, object]:
        """What /status and the page show: every string through the redactor (error bodies echo secrets)."""
        pipelines = []
        for name, pipeline in sorted(self._pipelines().items()):
            entry = {**pipeline.status(), **self.recorder.describe(name, pipeline)}
            entry["state"], entry["state_reason"] = state_of(entry)
            pipelines.append(entry)
        now = time.time()
        document: dict[str, object] = self._redactor.scrub_all(
            {
                "ready": not self.problems(),
                "version": version(),
                "host": socket.gethostname(),
                "started_at": self.recorder.started_at,
                "uptime_s": int(now - self.recorder.started_at),
                "at": now,
                "pipelines": pipelines,
            }
        )
        return document

    async def _status(self, request: web.Request) -> web.Response:
        body = json.dumps(self._document(), indent=2) + "\n"
        return web.Response(text=body, content_type="application/json")

    async def _page(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(18)
        body = render_page(self._document(), nonce=nonce, now=time.time(), overview=True)
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=_page_headers(nonce))

    async def graph(self) -> dict[str, object]:
        """The overview of this sidecar and its peers (each peer asked at the same time, briefly)."""
        own = Answer(f"http://{self.host}:{self.port}/", self._document(), own=True)
        return build([own, *await gather(self.peers)])

    async def _overview(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(18)
        body = render_overview(await self.graph(), nonce=nonce)
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=_page_headers(nonce))

    async def _overview_json(self, request: web.Request) -> web.Response:
        body = json.dumps(await self.graph(), indent=2) + "\n"
        return web.Response(text=body, content_type="application/json", headers={"Cache-Control": "no-store"})


def _idle(pipeline: PipelineView) -> bool:
    """Nothing in flight and no lag (an unknown lag is not none): see :mod:`streamcar.admin.states`."""
    return pipeline.in_flight == 0 and all(lag == 0 for lag in pipeline.lag().values())


def _page_headers(nonce: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": content_security_policy(nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
