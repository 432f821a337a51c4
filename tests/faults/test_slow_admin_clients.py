"""1,000 slow clients on the admin port while traffic flows, with the process held to 1,000 open files
(``prlimit``) and a service that closes idle connections after 0.5 s (so the sidecar keeps opening new ones),
against ``streamcar run``.

Before: the slow connections stayed open and the process ran out of file descriptors. The sidecar could not
connect to its service (the circuit opened again and again), nothing was committed, and ``/healthz`` reset.
Now the admin server holds at most 64 connections, evicting the oldest slow head, and times heads out: the
pipeline keeps its throughput, ``/healthz`` answers throughout, and every input is replied.
"""

from __future__ import annotations

import asyncio
import resource
import threading
import time
import urllib.parse

import pytest

from invariants import reply_with_id, wait_done
from scenario import ScenarioFactory
from service import TestService
from sidecar import SidecarFactory, make_config
from support import KafkaHandle, produce_records
from threaded import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SLOW_CLIENTS = 1000
FILE_LIMIT = 1000
BATCH = 6000


class Slowloris:
    """``SLOW_CLIENTS`` connections that each send a request head one byte a second, opened again when closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Slowloris:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 4 * SLOW_CLIENTS:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * SLOW_CLIENTS), hard))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    async def _run(self) -> None:
        await asyncio.gather(*(self._client() for _ in range(SLOW_CLIENTS)))

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            self.connected += 1
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while not self._stop.is_set() and not reader.at_eof():
                    writer.write(b"X")  # a header that never ends
                    await writer.drain()
                    await asyncio.sleep(1.0)
            except OSError:
                pass
            finally:
                writer.close()


def test_a_thousand_slow_admin_clients_starve_neither_the_pipeline_nor_healthz(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(3, dead_letters=False)
    source, group = scenario.source, scenario.group
    service = service_factory(TestService(reply_with_id, keepalive_timeout=0.5))  # it reconnects: new sockets
    spec = scenario.spec(service.url, max_in_flight=64)
    process = sidecar_factory(
        make_config(kafka.bootstrap, {"p": spec}), wrapper=["prlimit", f"--nofile={FILE_LIMIT}", "--"]
    )
    port = urllib.parse.urlsplit(process.admin_url()).port
    assert port is not None

    produce_records(kafka, source, [(b"k%d" % (i % 50), b"warm-up %d" % i) for i in range(500)])
    wait_done(kafka, group, source, timeout=60)  # the group joined, the connections are up
    started = time.monotonic()
    produce_records(kafka, source, [(b"k%d" % (i % 50), b"before %d" % i) for i in range(BATCH)])
    wait_done(kafka, group, source, timeout=60)
    calm = time.monotonic() - started

    with Slowloris(port) as attack:
        deadline = time.monotonic() + 20
        while attack.connected < SLOW_CLIENTS and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        produce_records(kafka, source, [(b"k%d" % (i % 50), b"during %d" % i) for i in range(BATCH)])
        slowest = 0.0
        files = 0
        done = threading.Event()

        def finished() -> None:
            wait_done(kafka, group, source, timeout=90)
            done.set()

        waiter = threading.Thread(target=finished)
        waiter.start()
        while not done.wait(0.5):
            asked = time.monotonic()
            code, _ = process.get("/healthz", timeout=5)
            slowest = max(slowest, time.monotonic() - asked)
            assert code == 200
            files = max(files, process.open_files())
        waiter.join(5)
        attacked = time.monotonic() - started
        connected = attack.connected
    print(
        f"{BATCH} records in {calm:.1f}s calm, {attacked:.1f}s under {SLOW_CLIENTS} slow clients "
        f"({connected} connections made); slowest /healthz {slowest:.3f}s; at most {files} open files"
    )
    assert connected >= SLOW_CLIENTS
    assert attacked < 2 * calm + 2
    assert slowest < 2.0
    assert files < FILE_LIMIT - 200
    scenario.check(service.requests)
