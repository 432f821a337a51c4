"""A broken setup is neither a sick service nor poison (issue cases d, on the real broker).

* (d) a typo in the call URL's path: every call is answered 404. A few messages are dead-lettered (each could be
  poison), then the pipeline pauses with the refusal named on /readyz and /status, instead of draining the topic
  into the dead-letter topic. Restarted with the right URL, the sidecar gives every input its outcome.

Each ends with the invariant check on the topics: every input has its outcome, per-key order held.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from aiohttp import web

from streamcar.engine.breaker import REFUSALS

from invariants import SOURCE_HEADERS, Id
from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, produce_records, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def echo_id(seen: Seen) -> web.StreamResponse:
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


def test_a_wrong_path_pauses_after_a_few_dead_letters_instead_of_draining_the_topic(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(3)
    records = [(f"k{i % 50}".encode(), str(i).encode()) for i in range(2000)]
    produce_records(kafka, scenario.source, records)
    service = TestService(echo_id).start()
    typo = service.url.replace("/handle", "/typo")
    spec = scenario.spec(typo, max_in_flight=64, circuit_breaker={"open_for": "200ms", "max_open": "400ms"})
    (tmp_path / "wrong").mkdir()
    (tmp_path / "fixed").mkdir()
    wrong = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path / "wrong").start()
    try:
        expected = "the service rejects everything: HTTP 404 on POST /typo"

        def paused() -> bool:
            code, body = wrong.get("/readyz")
            return code == 503 and any(expected in problem for problem in json.loads(body)["problems"])

        wait_for(paused, timeout=60, what="/readyz to name the reject storm")
        (pipeline,) = wrong.status()["pipelines"]
        assert pipeline["circuit_reason"] == expected
        calls = pipeline["calls"]
        wait_for(lambda: wrong.status()["pipelines"][0]["calls"] >= calls + 5, timeout=30, what="refused probes")
        wrong.signal(signal.SIGTERM)
        assert wrong.wait(30) == 0
    finally:
        wrong.kill()
    letters = read_topic(kafka, scenario.dlq, expect=REFUSALS - 1, timeout=10)
    assert len(letters) <= REFUSALS - 1, f"{len(letters)} dead-lettered by a typo"
    lettered: dict[Id, str] = {}
    for letter in letters:
        headers = {name: (value or b"").decode() for name, value in letter.headers()}
        assert headers["streamcar-error-kind"] == "http-status"
        source = tuple(headers[name] for name in SOURCE_HEADERS)
        lettered[(source[0], int(source[1]), int(source[2]))] = "http-status"
    assert sum("circuit open" in line for line in wrong.log_lines()) == 1  # one line, not one per record

    fixed = SidecarProcess(make_config(kafka.bootstrap, {"p": scenario.spec(service.url)}), tmp_path / "fixed").start()
    try:
        scenario.check(service.requests, dead_letters=lettered)  # those few dead letters, and a reply for the rest
    finally:
        fixed.kill()
        service.stop()
