"""Three ``streamcar run`` processes in one consumer group, members joining and leaving mid-run.

First the graceful part: one member works alone, two more join (cooperative rebalances hand partitions over
after a drain), one leaves on SIGTERM (drains, commits, exits 0); that input is checked with no crash allowed
for. Then more input and a SIGKILL of another member: its partitions go back to the survivor once its session
times out, and everything is checked again, this time with a crash's redeliveries allowed for.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from invariants import reply_with_id
from scenario import ScenarioFactory
from service import TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS = 6


def assignments(kafka: KafkaHandle, group: str) -> dict[str, set[int]]:
    """client.id -> the partitions it holds, for the group's current members."""
    admin = kafka.admin()
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return {
        m.client_id: {tp.partition for tp in (m.assignment.topic_partitions if m.assignment else [])}
        for m in description.members
    }


def spread_over(kafka: KafkaHandle, group: str, members: set[str]) -> bool:
    held = assignments(kafka, group)
    if set(held) != members or not all(held.values()):
        return False
    assert sum(map(len, held.values())) == len(set().union(*held.values())), f"a partition held twice: {held}"
    return set().union(*held.values()) == set(range(PARTITIONS))


def test_members_join_leave_and_crash(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    tmp_path: Path,
) -> None:
    scenario = scenario_factory(PARTITIONS, out_partitions=3)
    source, group = scenario.source, scenario.group
    part, max_in_flight = 2000, 64
    service = TestService(reply_with_id).start()
    records = [(f"k{i % 101}".encode(), b"v") for i in range(3 * part)]
    members: dict[str, SidecarProcess] = {}

    def member(name: str) -> SidecarProcess:
        # each member names itself to the service, so the test sees who does the work
        spec = scenario.spec(
            service.url,
            max_in_flight=max_in_flight,
            call={"headers": {"Member": name}},
        )
        # a killed member stays in the group until its session times out: keep that short
        config = make_config(
            kafka.bootstrap,
            {"p": spec},
            client_id=name,
            librdkafka={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        )
        workdir = tmp_path / name
        workdir.mkdir()
        members[name] = SidecarProcess(config, workdir).start()
        return members[name]

    def working(since: int) -> set[str]:
        return {seen.headers["Member"] for seen in service.requests()[since:]}

    try:
        a = member("a")
        produce_records(kafka, source, records[:part])
        wait_for(lambda: service.count() >= part // 4, timeout=60, what="the first member to work")
        b, c = member("b"), member("c")
        wait_for(lambda: spread_over(kafka, group, {"a-p", "b-p", "c-p"}), timeout=60, what="three members")
        since = service.count()
        produce_records(kafka, source, records[part : 2 * part])
        wait_for(lambda: working(since) == {"a", "b", "c"}, timeout=60, what="all three members at work")
        b.signal(signal.SIGTERM)
        assert b.wait(30) == 0, b.log_tail()
        graceful = scenario.check(
            service.requests,
            # a cooperative rebalance drains and commits before it releases a partition
            max_duplicates=2 * max_in_flight,
        )
        wait_for(lambda: spread_over(kafka, group, {"a-p", "c-p"}), timeout=60, what="two members")
        calls = service.count()
        produce_records(kafka, source, records[2 * part :])
        wait_for(lambda: service.count() >= calls + part // 4, timeout=60, what="progress before the crash")
        assert working(calls) == {"a", "c"}
        c.kill()  # SIGKILL
        assert service.count() < calls + part, "the crash should land while input is left"
        crashed = scenario.check(
            service.requests,
            # the crash redoes what was in flight, what completed since the last commit was triggered
            # (max_in_flight / 2) and what completed while that commit travelled
            crashes=True,
            max_duplicates=graceful.duplicates + 3 * max_in_flight,
        )
        print(f"duplicates: {graceful.duplicates} after joins and a leave, {crashed.duplicates} after the crash too")
        assert spread_over(kafka, group, {"a-p"})
        a.signal(signal.SIGTERM)
        assert a.wait(30) == 0, a.log_tail()
    finally:
        for process in members.values():
            process.kill()
        service.stop()
