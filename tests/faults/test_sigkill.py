"""Repeated SIGKILL of ``streamcar run``: no drain, no commit, replies in the producer's buffer gone, and yet
every input ends with a reply, in per-key order, with duplicates bounded by what a crash redoes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from invariants import reply_with_id
from scenario import ScenarioFactory
from service import TestService
from sidecar import SidecarProcess, crash_repeatedly, make_config, pipeline
from support import KafkaHandle, produce_records

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_repeated_sigkill_loses_nothing(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    tmp_path: Path,
) -> None:
    scenario = scenario_factory(3)
    source, out, dlq, group = scenario.source, scenario.out, scenario.dlq, scenario.group
    n, max_in_flight, kills = 6000, 128, 3
    service = TestService(reply_with_id).start()
    process: SidecarProcess | None = None
    try:
        produce_records(kafka, source, [(f"k{i % 97}".encode(), str(i).encode()) for i in range(n)])
        spec = pipeline(
            source, group, service.url, publish=out, dead_letter=dlq, max_in_flight=max_in_flight, commit_interval="1s"
        )
        # a killed member stays in the group until its session times out: keep that short so restarts are quick
        config = make_config(
            kafka.bootstrap, {"p": spec}, librdkafka={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        )
        crash_repeatedly(config, tmp_path, service.count, total=n, kills=kills, timeout=60)
        process = SidecarProcess(config, tmp_path).start()
        verdict = scenario.check(
            service.requests,
            # A crash redoes what was in flight (<= max_in_flight), what completed since the last commit was
            # triggered (max_in_flight / 2) and what completed while that commit travelled to the broker.
            crashes=True,
            max_duplicates=kills * 3 * max_in_flight,
        )
        print(f"duplicates after {kills} SIGKILLs: {verdict.duplicates}")
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        if process is not None:
            process.kill()
        service.stop()
