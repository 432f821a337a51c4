"""SIGKILL during a fan-out run: every record of every input is published at least once, and per key the inputs'
records keep the inputs' order in every topic.

Each input fans out to 0-5 records over two topics (``publish.topic`` and a routed one). The sidecar is SIGKILLed
three times mid-run, then runs to the end. A crash between an input's records redelivers the input, so its
records may repeat; none may be missing, and a key's inputs appear in each topic in offset order of their first
record (a repeat after a crash goes back, the first appearances never do).
"""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from streamcar import Record, Reply
from streamcar.service import aiohttp_response

from invariants import read_all
from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, crash_repeatedly, make_config
from support import KafkaHandle, committed_total, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

N = 4000


def fan(offset: int, partition: int) -> int:
    return (offset * 7 + partition) % 6


def fanning(review: str) -> Callable[[Seen], Awaitable[web.StreamResponse]]:
    async def handle(seen: Seen) -> web.StreamResponse:
        me = seen.headers["Idempotency-Key"].encode()
        records = [
            Record(me + b"#%d" % j, topic=review if j % 2 else None) for j in range(fan(seen.offset, seen.partition))
        ]
        return aiohttp_response(Reply.records(records))

    return handle


def test_sigkill_during_fan_out_loses_no_record_and_keeps_key_order(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(3)
    review = scenario_factory(2).out  # a second output topic
    service = TestService(fanning(review)).start()
    process: SidecarProcess | None = None
    try:
        produce_records(kafka, scenario.source, [(f"k{i % 50}".encode(), str(i).encode()) for i in range(N)])
        spec = scenario.spec(service.url, max_in_flight=64, commit_interval="500ms")
        spec["publish"]["allow"] = [review]
        spec["consume"]["instance_id"] = "fanout-0"  # static: each restart takes the partitions back at once
        config = make_config(
            kafka.bootstrap, {"p": spec}, librdkafka={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        )
        crash_repeatedly(config, tmp_path, service.count, total=N, kills=3, timeout=60)
        process = SidecarProcess(config, tmp_path).start()
        wait_for(lambda: committed_total(kafka, scenario.group) == N, timeout=120, what="every input committed")
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        if process is not None:
            process.kill()
        service.stop()

    inputs = {(r.partition, r.offset): r.key for r in read_all(kafka, scenario.source)}
    assert len(inputs) == N
    expected = {(p, o, j) for (p, o) in inputs for j in range(fan(o, p))}
    seen: set[tuple[int, int, int]] = set()
    repeats = 0
    for topic in (scenario.out, review):
        first: dict[bytes | None, list[int]] = defaultdict(list)  # per key: inputs' offsets in order of first record
        placed: set[tuple[int, int]] = set()
        for record in read_all(kafka, topic):
            name, part = (record.value or b"").rsplit(b"#", 1)
            _, partition, offset = name.decode().rsplit("-", 2)
            one = (int(partition), int(offset), int(part))
            assert (topic == review) == (one[2] % 2 == 1), f"record {one} in {topic}"
            repeats += one in seen
            seen.add(one)
            assert record.key == inputs[(one[0], one[1])]  # the input's key
            if one[:2] not in placed:
                placed.add(one[:2])
                first[record.key].append(one[1] + one[0] * 1_000_000)
        for key, seq in first.items():
            by_partition: dict[int, list[int]] = defaultdict(list)
            for code in seq:
                by_partition[code // 1_000_000].append(code % 1_000_000)
            for offsets in by_partition.values():
                assert offsets == sorted(offsets), f"{topic}: the inputs of {key!r} out of order"
    assert expected - seen == set(), f"{len(expected - seen)} records missing"
    assert seen <= expected
    print(f"{len(expected)} records of {N} inputs; {repeats} published again after the crashes")
