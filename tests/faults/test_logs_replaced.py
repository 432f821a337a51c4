"""Offsets that go back and partitions that appear are never skipped (rows 12 and 13 of the hostile-input issue),
against ``streamcar run`` as its own process, with ``consume.from: latest`` (the harder case):

* row 12, the input topic deleted and created again while the sidecar runs: before, "went backwards; skipped",
  2,000 records lost; now it is read as a new log and every record is replied.
* row 13, partitions added to a running input topic: before, noticed after ~292 s and their first records skipped
  (200 of 200 lost); now found within seconds and read from their start.

``from: latest`` is about the group's first start: a partition the group never had (added, or created again)
is read from its beginning. And it holds for every partition of that first start (issue 30, finding 1: a
3-partition topic holding 300 records, a new group with ``from: latest``, then 30 new records: the service got
204 calls, as the first partition's start, committed at once, made the others look new to the group).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from aiohttp import web
from confluent_kafka import KafkaException
from confluent_kafka.cimpl import NewPartitions

from invariants import read_all, reply_with_id, wait_done
from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarFactory, make_config
from support import KafkaHandle, committed, create_topic, produce_records, topic_offsets, wait_for
from threaded import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RSS_BOUND_MIB = 250
FOUND_WITHIN = 30.0  # seconds for new partitions to be read: the 5 s metadata refresh, then a rebalance


async def echo(seen: Seen) -> web.StreamResponse:
    return web.Response(body=seen.body)  # the inputs' values are unique: the replies say which were done


def started(kafka: KafkaHandle, group: str, partitions: int) -> Callable[[], bool]:
    """Whether ``group`` committed a start for ``partitions`` partitions (a fresh broker's coordinator may still be
    loading: not yet)."""

    def done() -> bool:
        try:
            return len(committed(kafka, group)) == partitions
        except KafkaException:
            return False

    return done


def replied(kafka: KafkaHandle, out: str) -> set[bytes]:
    return {r.value or b"" for r in read_all(kafka, out)}


def wait_replied(kafka: KafkaHandle, out: str, values: set[bytes], timeout: float) -> None:
    missing: set[bytes] = set()

    def done() -> bool:
        missing.clear()
        missing.update(values - replied(kafka, out))
        return not missing

    try:
        wait_for(done, timeout=timeout, what=f"replies to {len(values)} inputs", interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {len(missing)} never replied, e.g. {sorted(missing)[:5]}") from None


def test_a_recreated_input_topic_is_read_as_a_new_log(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    # the invariant check cannot judge this one: the new log's offsets name the old log's inputs too
    scenario = scenario_factory(3, dead_letters=False)
    source, out, group = scenario.source, scenario.out, scenario.group
    service = service_factory(TestService(echo))
    spec = scenario.spec(service.url, consume={"from": "latest"})
    process = sidecar_factory(make_config(kafka.bootstrap, {"p": spec}))
    wait_for(started(kafka, group, 3), timeout=60, what="the group's start, committed")
    old = {b"old %d" % i for i in range(1000)}
    produce_records(kafka, source, [(f"k{i % 30}".encode(), b"old %d" % i) for i in range(1000)])
    wait_replied(kafka, out, old, timeout=60)

    admin = kafka.admin()
    admin.delete_topics([source], operation_timeout=30)[source].result(timeout=60)
    wait_for(lambda: source not in admin.list_topics(timeout=5).topics, timeout=30, what="the deletion")
    create_topic(kafka, source, 3, 1)
    new = {b"new %d" % i for i in range(2000)}
    produce_records(kafka, source, [(f"k{i % 30}".encode(), b"new %d" % i) for i in range(2000)])  # in order
    wait_replied(kafka, out, new, timeout=90)
    ends = {(source, p): o + 1 for p, o in topic_offsets(kafka, source)}
    wait_for(
        lambda: all(committed(kafka, group).get(tp, -1) >= end for tp, end in ends.items()),
        timeout=30,
        what="the new log committed to its end",
    )
    assert process.alive
    lines = process.log_lines()
    assert not [line for line in lines if "skipped" in line]
    restarted = [line for line in lines if "went back from offset" in line]
    assert 1 <= len(restarted) <= 3, restarted  # one line per partition whose offsets went back, at most
    replies = [r for r in read_all(kafka, out) if (r.value or b"").startswith(b"new ")]
    assert sorted(r.value or b"" for r in replies) == sorted(new)  # each once
    by_key: dict[bytes, list[int]] = {}
    for reply in sorted(replies, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(reply.key or b"", []).append(int((reply.value or b"").split()[1]))
    assert all(numbers == sorted(numbers) for numbers in by_key.values())  # per-key order held
    peak = process.peak_rss_mib()
    print(f"peak RSS {peak:.0f} MiB; {len(restarted)} log-restarted lines")
    assert peak < RSS_BOUND_MIB


def test_partitions_added_to_a_running_topic_are_read_from_their_start(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(2, out_partitions=3, dead_letters=False)
    source, group = scenario.source, scenario.group
    service = service_factory(TestService(reply_with_id))
    process = sidecar_factory(
        make_config(kafka.bootstrap, {"p": scenario.spec(service.url, consume={"from": "latest"})})
    )
    wait_for(started(kafka, group, 2), timeout=60, what="the group's start, committed")
    produce_records(kafka, source, [(None, b"before %d" % i) for i in range(100)])
    wait_done(kafka, group, source, timeout=30)

    admin = kafka.admin()
    admin.create_partitions([NewPartitions(source, 4)])[source].result(timeout=30)
    added = time.monotonic()
    for partition in (2, 3):  # at once, before the sidecar can have noticed the new partitions
        produce_records(kafka, source, [(None, b"added %d" % i) for i in range(100)], partition=partition)
    # every input, on the old partitions and the new, replied once: none of the new partitions' first records
    # skipped
    verdict = scenario.check(service.requests, timeout=FOUND_WITHIN)
    took = time.monotonic() - added
    assert sum(n for (_, partition, _), n in verdict.replies.items() if partition >= 2) == 200
    assert process.alive
    peak = process.peak_rss_mib()
    print(f"200 records on 2 new partitions replied within {took:.1f}s; peak RSS {peak:.0f} MiB")
    assert peak < RSS_BOUND_MIB


@pytest.mark.parametrize("partitions", [3, 6])
def test_from_latest_starts_every_partition_of_a_new_group_at_its_end(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
    partitions: int,
) -> None:
    scenario = scenario_factory(partitions, dead_letters=False)
    source, out, group = scenario.source, scenario.out, scenario.group
    produce_records(kafka, source, [(f"k{i % 30}".encode(), b"old %d" % i) for i in range(300)])
    service = TestService(echo)
    service_factory(service)
    process = sidecar_factory(
        make_config(kafka.bootstrap, {"p": scenario.spec(service.url, consume={"from": "latest"})})
    )
    wait_for(started(kafka, group, partitions), timeout=60, what="the group's start, committed")
    new = {b"new %d" % i for i in range(30)}
    produce_records(kafka, source, [(f"k{i % 30}".encode(), value) for i, value in enumerate(sorted(new))])
    wait_replied(kafka, out, new, timeout=60)
    ends = {(source, p): o + 1 for p, o in topic_offsets(kafka, source)}
    wait_for(
        lambda: all(committed(kafka, group).get(tp, -1) >= end for tp, end in ends.items()),
        timeout=30,
        what="the inputs committed to their end",
    )
    called = sorted(seen.body for seen in service.requests())
    assert called == sorted(new), f"{len(called)} calls for {len(new)} new records"
    assert sorted(r.value or b"" for r in read_all(kafka, out)) == sorted(new)
    starts = [line for line in process.log_lines() if "starts at offset" in line]
    assert len(starts) == partitions, starts
    assert all("the group's first start on it: consume.from latest" in line for line in starts), starts
