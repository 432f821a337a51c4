"""Static membership (``consume.instance_id``): a SIGKILLed member restarted under the same id takes its
partitions back at once, and the other members see no rebalance at all. Without it, the restarted member waits
for the dead one's session to time out, and the others are rebalanced.

Both ways are run and timed: from the restart to the restarted member's first published reply.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import web

from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS, RECORDS, SESSION_MS = 4, 4000, 6000


async def slowish(seen: Seen) -> web.StreamResponse:
    await asyncio.sleep(0.005)  # so that input is left when the member is killed
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_a_restarted_member_takes_its_partitions_back(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path, static: bool
) -> None:
    scenario = scenario_factory(PARTITIONS)
    service = TestService(slowish).start()
    members: dict[str, SidecarProcess] = {}

    def member(name: str, run: int = 1) -> SidecarProcess:
        consume = {"instance_id": f"{name}-0"} if static else {}
        spec = scenario.spec(service.url, max_in_flight=8, consume=consume, call={"headers": {"Member": name}})
        config = make_config(
            kafka.bootstrap,
            {"p": spec},
            client_id=name,
            librdkafka={"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 1000},
        )
        workdir = tmp_path / f"{name}{run}"  # a log of its own: the admin port is read from it
        workdir.mkdir()
        members[f"{name}{run}"] = SidecarProcess(config, workdir).start()
        return members[f"{name}{run}"]

    def calls_by(name: str) -> int:
        return sum(1 for seen in service.requests() if seen.headers["Member"] == name)

    try:
        produce_records(kafka, source := scenario.source, [(f"k{i % 53}".encode(), b"v") for i in range(RECORDS)])
        a, b = member("a"), member("b")
        wait_for(lambda: calls_by("a") > 50 and calls_by("b") > 50, timeout=60, what="both members at work")
        b.kill()  # SIGKILL: it does not leave the group
        rebalances = sum("revoking" in line or "assigned" in line for line in a.log_lines())
        restarted = time.monotonic()
        b = member("b", 2)
        # fresh input on every partition: whatever the restarted member is given has work in it
        produce_records(kafka, source, [(f"k{i % 53}".encode(), b"w") for i in range(RECORDS // 4)])
        wait_for(lambda: _published(b) > 0, timeout=60, what="the restarted member's first reply", interval=0.05)
        took = time.monotonic() - restarted
        print(f"{'static' if static else 'dynamic'} membership: restart to first reply {took:.2f} s")
        # one crash: what was in flight, and what completed since the last commit the broker took, which at this
        # rate and max_in_flight is mostly what completes during a commit's round trip (test_crash_redoes_in_flight
        # holds the bound to account)
        scenario.check(service.requests, crashes=True, max_duplicates=100)
        after = sum("revoking" in line or "assigned" in line for line in a.log_lines())
        # kafka.librdkafka's consumer settings went to the consumers only: no producer warned about them
        assert not any("is a consumer property" in line for line in a.log_lines() + b.log_lines())
        if static:
            assert after == rebalances, "the other member was rebalanced"
            assert took < SESSION_MS / 1000, "the restarted member waited for the old session to time out"
        assert source
    finally:
        for process in members.values():
            process.kill()
        service.stop()


def _published(process: SidecarProcess) -> int:
    try:
        (pipeline,) = process.status(timeout=1)["pipelines"]
    except (OSError, TimeoutError):
        return 0
    return int(pipeline["published"])
