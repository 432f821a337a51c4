"""The 3-node cluster (replication 3, min.insync.replicas 2) loses a partition leader to SIGKILL mid-run: the
sidecar's acks=all replies keep being acknowledged by the two survivors, input produced meanwhile flows too,
every input ends with one reply in order, an exactly-once pipeline beside it publishes nothing twice, and the
killed node comes back into the in-sync replicas."""

from __future__ import annotations

import asyncio
import signal

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from invariants import reply_with_id
from scenario import ScenarioFactory
from service import TestService
from sidecar import make_config, running
from support import KafkaHandle, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.faults]


def partitions(admin: AdminClient, topic: str) -> dict[int, tuple[int, list[int], list[int]]]:
    """partition -> (leader, replicas, in-sync replicas); empty while the metadata request fails."""
    try:
        meta = admin.list_topics(topic=topic, timeout=5).topics[topic].partitions
    except KafkaException:  # the request went to the dead node and timed out: ask again
        return {}
    return {p: (m.leader, sorted(m.replicas), sorted(m.isrs)) for p, m in meta.items()}


async def test_partition_leader_killed_with_acks_all(
    kafka_cluster: KafkaHandle, scenario_factory: ScenarioFactory
) -> None:
    kafka = kafka_cluster
    scenario = scenario_factory(3, replication=3, on=kafka)
    source, out = scenario.source, scenario.out
    n = 4000
    admin = kafka.admin()
    before = partitions(admin, source)
    assert all(replicas == [1, 2, 3] == isrs for _, replicas, isrs in before.values()), before
    victim = before[0][0]
    service = TestService(reply_with_id).start()
    # beside it, an exactly-once pipeline on topics of its own: its transactions go on through the survivors
    # (or abort and are redone), and read_committed sees each reply once
    exactly, exactly_service = scenario_factory(3, replication=3, on=kafka), TestService(reply_with_id).start()
    records = [(f"k{i % 97}".encode(), b"v") for i in range(n)]
    try:
        spec = scenario.spec(service.url, max_in_flight=64)
        exactly_spec = exactly.spec(exactly_service.url, max_in_flight=64)
        exactly_spec["publish"]["exactly_once"] = True
        await asyncio.to_thread(produce_records, kafka, source, records[: n // 2])
        await asyncio.to_thread(produce_records, kafka, exactly.source, records)
        async with running(make_config(kafka.bootstrap, {"p": spec, "x": exactly_spec})):
            await asyncio.to_thread(wait_for, lambda: service.count() >= n // 8, timeout=60, what="progress")
            await asyncio.to_thread(kafka.cluster.kill_node, victim, signal.SIGKILL)
            assert kafka.cluster.pid(victim) is None
            assert service.count() < n // 2, "the leader should die while input is left"
            # acks=all input while a replica is gone: min.insync.replicas 2 still holds
            await asyncio.to_thread(produce_records, kafka, source, records[n // 2 :])
            await asyncio.to_thread(
                wait_for,
                lambda: partitions(admin, source).get(0, (-1,))[0] not in (-1, victim),
                timeout=60,
                what="a new leader for partition 0",
            )
            await asyncio.to_thread(scenario.check, service.requests)
            # the service may be called again for redone work; the topics must not show it
            verdict = await asyncio.to_thread(exactly.check, exactly_service.requests, crashes=True)
            print(f"leader {victim} killed, exactly once: {verdict.duplicates} duplicates")
    finally:
        service.stop()
        exactly_service.stop()

    # the killed node comes back and rejoins the in-sync replicas of what was written without it. Started from
    # this (the main) thread: die_with_parent ties the JVM to the thread that forks it, and a worker thread of
    # asyncio.to_thread ends with the test's loop.
    kafka.cluster.start(nodes=3, timeout=120, die_with_parent=True)
    for topic in (source, out):
        await asyncio.to_thread(
            wait_for,
            lambda topic=topic: all(len(isrs) == 3 for _, _, isrs in partitions(admin, topic).values()),  # type: ignore[misc]
            timeout=90,
            what=f"node {victim} back in sync for {topic}",
        )
