"""Sick messages are not a sick service (issue cases a-c, on the real broker):

* (a) about 1 in 13 messages gets a 503 twice, then succeeds: the circuit never opens, and the run is as fast as
  with the breaker off;
* (b) 10 of 200 keys stop answering in time while the other keys are answered: the fast keys keep their pace;
* (c) the service is frozen (SIGSTOP) with ``ordering: partition``: the circuit opens, nothing is dead-lettered,
  and it closes only once the service answers again.

Each ends with the invariant check on the topics: every input has its outcome, per-key order held.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, produce_records, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HERE = Path(__file__).resolve().parent.parent


def _pick(partition: int, offset: int, every: int, at: int) -> bool:
    return (partition * 7919 + offset * 104_729) % every == at


class FailsTwice:
    """About 1 in 13 messages: 503 twice, then a success."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        with self._lock:
            attempt = self.calls[seen.id] = self.calls.get(seen.id, 0) + 1
        if _pick(seen.partition, seen.offset, 13, 3) and attempt <= 2:
            return web.Response(status=503, text="busy")
        return web.Response(body=seen.headers["Idempotency-Key"].encode())


def _span(kafka: KafkaHandle, topic: str, expect: int) -> float:
    """Seconds from the first reply to the last, by the replies' own timestamps."""
    stamps: list[int] = sorted(msg.timestamp()[1] for msg in read_topic(kafka, topic, expect=expect))
    return (stamps[-1] - stamps[0]) / 1000


def test_messages_failing_twice_then_succeeding_never_open_the_circuit(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    records = [(f"k{i % 211}".encode(), str(i).encode()) for i in range(12_000)]
    spans: dict[str, float] = {}
    opened: dict[str, int] = {}
    for breaker in ("on", "off"):
        scenario = scenario_factory(6)
        produce_records(kafka, scenario.source, records)
        service = TestService(FailsTwice()).start()
        workdir = tmp_path / breaker
        workdir.mkdir()
        spec = scenario.spec(
            service.url,
            max_in_flight=128,
            retry={"attempts": 4, "initial_backoff": "200ms", "max_backoff": "2s"},
            circuit_breaker={"enabled": breaker == "on"},
        )
        process = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), workdir).start()
        try:
            scenario.check(service.requests, timeout=180)
            (pipeline,) = process.status()["pipelines"]
            opened[breaker] = pipeline["circuit_opened"]
        finally:
            process.kill()
            service.stop()
        spans[breaker] = _span(kafka, scenario.out, len(records))
    ratio = spans["off"] / spans["on"]
    print(f"breaker on: {spans['on']:.1f}s, opened {opened['on']}x; off: {spans['off']:.1f}s; ratio {ratio:.2f}")
    assert opened["on"] == 0
    # about as fast as without the breaker. The figure was 0.49, with the circuit opening (asserted above
    # not to happen). Two runs one after the other on a loaded machine differ: 0.67 on two workers.
    assert ratio >= 0.6


SLOW_KEYS = {f"k{i}".encode() for i in range(0, 200, 20)}  # 10 of 200


class SlowKeys:
    """The keys of SLOW_KEYS answer after ``call.timeout`` while ``slow`` is set; the rest at once."""

    def __init__(self) -> None:
        self.slow = threading.Event()

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        if seen.key in SLOW_KEYS and self.slow.is_set():
            await asyncio.sleep(3)
        return web.Response(body=seen.headers["Idempotency-Key"].encode())


def test_slow_keys_beside_fast_ones_are_not_an_outage(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    """The fast keys' pace beside 10 slow keys, against the same fast keys alone, in one run."""
    fast = [(f"k{i % 200}".encode(), str(i).encode()) for i in range(8000) if f"k{i % 200}".encode() not in SLOW_KEYS]
    mixed = [(f"k{i % 200}".encode(), str(i).encode()) for i in range(8000)]
    spans: dict[str, float] = {}
    for run, records in (("alone", fast), ("beside slow keys", mixed)):
        scenario = scenario_factory(3)
        produce_records(kafka, scenario.source, records)
        handler = SlowKeys()
        handler.slow.set()
        service = TestService(handler).start()
        workdir = tmp_path / run.replace(" ", "-")
        workdir.mkdir()
        spec = scenario.spec(
            service.url,
            max_in_flight=128,
            call={"timeout": "1s"},
            retry={"attempts": 100, "initial_backoff": "200ms", "max_backoff": "1s"},
        )
        process = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), workdir).start()
        try:
            spans[run] = _fast_span(kafka, scenario.out, len(fast))
            (pipeline,) = process.status()["pipelines"]
            assert pipeline["circuit_opened"] == 0, pipeline["circuit_reason"]
            handler.slow.clear()  # the slow keys recover: everything gets its outcome
            scenario.check(service.requests, timeout=120)
        finally:
            process.kill()
            service.stop()
    ratio = spans["alone"] / spans["beside slow keys"]
    print(f"fast keys alone {spans['alone']:.1f}s, beside slow keys {spans['beside slow keys']:.1f}s: {ratio:.2f}")
    # the fast keys keep their pace, give or take a loaded machine's noise on spans of a few seconds (the issue's
    # figure: ~40 msg/s against ~3,000, a ratio near 0.01; runs here give 0.4 to 1.1)
    assert ratio >= 0.25


def _fast_span(kafka: KafkaHandle, out: str, count: int) -> float:
    """Seconds the middle 80% of the fast keys' replies took, once all ``count`` are there (the replies' own
    timestamps): a slow start (the group's coordinator still loading) or a straggler does not count."""
    stamps: list[int] = []

    def all_there() -> bool:
        stamps[:] = sorted(
            m.timestamp()[1] for m in read_topic(kafka, out, expect=0, timeout=0) if m.key() not in SLOW_KEYS
        )
        return len(stamps) >= count

    wait_for(all_there, timeout=120, what="every fast key's reply", interval=0.5)
    return (stamps[len(stamps) * 9 // 10] - stamps[len(stamps) // 10]) / 1000


def test_a_frozen_service_opens_the_circuit_dead_letters_nothing_and_closes_on_an_answer(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(3)
    port_file = tmp_path / "port"
    service = subprocess.Popen([sys.executable, str(HERE / "process_service.py"), str(port_file)])
    process: SidecarProcess | None = None
    try:
        wait_for(port_file.exists, timeout=30, what="the service's port")
        url = f"http://127.0.0.1:{port_file.read_text()}/handle"
        spec = scenario.spec(
            url,
            ordering="partition",
            call={"timeout": "1s"},
            retry={"attempts": 3, "initial_backoff": "100ms", "max_backoff": "500ms"},
        )
        process = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path).start()
        produce_records(kafka, scenario.source, [(f"k{i % 50}".encode(), str(i).encode()) for i in range(3000)])
        wait_for(lambda: _pipeline(process)["results"].get("success", 0) >= 300, timeout=60, what="progress")
        os.kill(service.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        states: list[str] = []
        try:
            wait_for(lambda: _pipeline(process)["circuit"] != "closed", timeout=30, what="the circuit to open")
            while time.monotonic() - frozen_at < 12:
                states.append(_pipeline(process)["circuit"])
                time.sleep(0.2)
        finally:
            os.kill(service.pid, signal.SIGCONT)
        assert "closed" not in states  # never "closed" while the service was frozen
        wait_for(lambda: _pipeline(process)["circuit"] == "closed", timeout=60, what="the circuit to close")
        scenario.check(lambda: [], timeout=120)  # nothing dead-lettered: every input replied
        assert _pipeline(process)["circuit_opened"] >= 1
    finally:
        if process is not None:
            process.kill()
        service.kill()
        service.wait(10)


def _pipeline(process: SidecarProcess) -> dict[str, Any]:
    (pipeline,) = process.status()["pipelines"]
    return dict(pipeline)
