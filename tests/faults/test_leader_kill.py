"""The 3-node cluster (replication 3, min.insync.replicas 2) loses a partition leader to SIGKILL mid-run: the
sidecar's acks=all replies keep being acknowledged by the two survivors, input produced meanwhile flows too,
every input ends with one reply in order, and the killed node comes back into the in-sync replicas."""

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
    records = [(f"k{i % 97}".encode(), b"v") for i in range(n)]
    try:
        spec = scenario.spec(service.url, max_in_flight=64)
        await asyncio.to_thread(produce_records, kafka, source, records[: n // 2])
        async with running(make_config(kafka.bootstrap, {"p": spec})):
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
    finally:
        service.stop()

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


async def test_exactly_once_survives_a_killed_leader_with_nothing_published_twice(
    kafka_cluster: KafkaHandle, scenario_factory: ScenarioFactory
) -> None:
    """publish.exactly_once in the 3-node cluster: the leader of an output partition dies mid-run, transactions
    go on through the survivors (or abort and are redone), and read_committed sees each reply once."""
    kafka = kafka_cluster
    scenario = scenario_factory(3, replication=3, on=kafka)
    source, out = scenario.source, scenario.out
    n = 3000
    admin = kafka.admin()
    victim = partitions(admin, out)[0][0]
    service = TestService(reply_with_id).start()
    try:
        spec = scenario.spec(service.url, max_in_flight=64)
        spec["publish"]["exactly_once"] = True
        await asyncio.to_thread(produce_records, kafka, source, [(f"k{i % 97}".encode(), b"v") for i in range(n)])
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            await asyncio.to_thread(wait_for, lambda: service.count() >= n // 8, timeout=60, what="progress")
            await asyncio.to_thread(kafka.cluster.kill_node, victim, signal.SIGKILL)
            assert service.count() < n, "the leader should die while input is left"

            def new_leaders() -> bool:
                return all(
                    leader not in (-1, victim)
                    for topic in (source, out)
                    for leader, _, _ in partitions(admin, topic).values() or [(-1, [], [])]
                )

            await asyncio.to_thread(wait_for, new_leaders, timeout=60, what="new leaders for every partition")
            # the service may be called again for redone work; the topics must not show it
            verdict = await asyncio.to_thread(scenario.check, service.requests, crashes=True, max_duplicates=0)
            print(f"leader {victim} killed, exactly once: {verdict.duplicates} duplicates")
    finally:
        service.stop()
    kafka.cluster.start(nodes=3, timeout=120, die_with_parent=True)
    await asyncio.to_thread(
        wait_for,
        lambda: all(len(isrs) == 3 for _, _, isrs in partitions(admin, out).values()),
        timeout=90,
        what=f"node {victim} back in sync for {out}",
    )
