"""A crash redoes only what was in flight, even while retries hold a partition's watermark back.

A retry-heavy service (some messages fail twice then succeed, some are refused for good, some first calls time
out) and a sidecar SIGKILLed three times mid-run. A message waiting for its retry holds its partition's contiguous
watermark back while thousands of later messages of other keys complete; the commit carries those done-ahead
offsets in its metadata, and the restarted sidecar skips them instead of calling and publishing them again.

The bound on duplicates per crash, counted by reading the output topic: a reply is published again only for an
input that was not in the last commit the broker took, i.e.

* one whose call or publishing was under way (at most ``max_in_flight`` calls, and what was being published),
* or one completed since that commit: the checkpoint commits once ``max_in_flight / 2`` completions accumulated,
  and a commit is taken while the next ones complete, so at most two such batches (``max_in_flight``).

So at most ``2 * max_in_flight`` per crash.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from streamcar.config import KafkaConfig
from streamcar.tools.offsets import group_offsets

from invariants import Id, read_all
from scenario import Scenario, ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, crash_repeatedly, make_config
from support import KafkaHandle, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PARTITIONS, RECORDS, MAX_IN_FLIGHT, KILLS = 6, 20_000, 128, 3


def _pick(partition: int, offset: int, every: int, at: int) -> bool:
    return (partition * 7919 + offset * 104_729) % every == at


def refused(partition: int, offset: int) -> bool:
    """About 1 in 97 messages: 400, dead-lettered at once."""
    return _pick(partition, offset, 97, 5)


def flaky(partition: int, offset: int) -> bool:
    """About 1 in 13: 503 twice, then a success."""
    return _pick(partition, offset, 13, 3)


def slow_first(partition: int, offset: int) -> bool:
    """About 1 in 211: the first call outlasts call.timeout (3.5 s against 3 s)."""
    return _pick(partition, offset, 211, 7)


class RetryHeavy:
    def __init__(self) -> None:
        self.calls: dict[Id, int] = {}
        self._lock = threading.Lock()

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        with self._lock:
            attempt = self.calls[seen.id] = self.calls.get(seen.id, 0) + 1
        p, o = seen.partition, seen.offset
        if refused(p, o):
            return web.Response(status=400, text="refused")
        if slow_first(p, o) and attempt == 1:
            await asyncio.sleep(3.5)
        if flaky(p, o) and attempt - slow_first(p, o) <= 2:
            return web.Response(status=503, text="busy")
        return web.Response(body=seen.headers["Idempotency-Key"].encode())


SHORT_SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
"""A SIGKILLed member's partitions come back within seconds."""


def keyed(count: int) -> list[tuple[bytes, bytes]]:
    """The scenario's inputs: 211 keys, values numbered."""
    return [(f"k{i % 211}".encode(), str(i).encode()) for i in range(count)]


def retry_heavy_spec(scenario: Scenario, url: str, *, commit_interval: str = "1s") -> dict[str, Any]:
    """The scenario's pipeline in front of :class:`RetryHeavy` (also run exactly once, in test_exactly_once)."""
    return scenario.spec(
        url,
        max_in_flight=MAX_IN_FLIGHT,
        # 3 s: at 1 s, a CI run beside a 3-node soak (load average 25) had the test service answer 55 plain calls
        # after the timeout four times in a row, and dead-lettered them
        call={"timeout": "3s"},
        retry={"attempts": 4, "initial_backoff": "200ms", "max_backoff": "2s"},
        commit_interval=commit_interval,
        # one in ten calls fails: the breaker's way with that is another scenario's subject (it opens)
        circuit_breaker={"enabled": False},
    )


def test_a_crash_amid_retries_redoes_only_what_was_in_flight(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(PARTITIONS)
    source = scenario.source
    service = TestService(RetryHeavy()).start()
    process: SidecarProcess | None = None
    try:
        produce_records(kafka, source, keyed(RECORDS))
        config = make_config(kafka.bootstrap, {"p": retry_heavy_spec(scenario, service.url)}, librdkafka=SHORT_SESSION)
        crash_repeatedly(config, tmp_path, service.count, total=RECORDS, kills=KILLS, timeout=120)
        process = SidecarProcess(config, tmp_path).start()
        letters = {r.id: "http-status" for r in read_all(kafka, source) if refused(r.partition, r.offset)}
        verdict = scenario.check(
            service.requests,
            crashes=True,
            max_duplicates=KILLS * 2 * MAX_IN_FLIGHT,
            dead_letters=letters,
            timeout=180,
        )
        print(f"duplicates after {KILLS} SIGKILLs: {verdict.duplicates} ({verdict.duplicates / KILLS:.0f} per crash)")
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        if process is not None:
            process.kill()
        service.stop()


def test_a_partition_handed_over_in_a_rebalance_is_not_redone_by_its_next_owner(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    """Key k0 is refused (503) while the rest complete: each partition's watermark stays at its first k0
    message, and everything else is done ahead of it. A second member joins; the partition it is handed must
    come with those offsets, which it skips: the only calls it makes are k0's."""
    scenario = scenario_factory(2)
    source = scenario.source
    stuck = threading.Event()
    stuck.set()

    async def answer(seen: Seen) -> web.StreamResponse:
        if seen.key == b"k0" and stuck.is_set():
            return web.Response(status=503, text="not now")
        return web.Response(body=seen.headers["Idempotency-Key"].encode())

    service = TestService(answer).start()
    first: SidecarProcess | None = None
    second: SidecarProcess | None = None
    try:
        for partition in (0, 1):
            records = [(f"k{i % 10}".encode(), f"{partition}-{i}".encode()) for i in range(100)]
            produce_records(kafka, source, records, partition=partition)
        spec = scenario.spec(
            service.url,
            retry={"attempts": 1000, "initial_backoff": "50ms", "max_backoff": "200ms"},
            circuit_breaker={"enabled": False},  # only k0 fails, and fails on purpose
        )
        config = make_config(kafka.bootstrap, {"p": spec})
        (tmp_path / "first").mkdir()
        (tmp_path / "second").mkdir()
        first = SidecarProcess(config, tmp_path / "first").start()
        others = {(source, p, o) for p in (0, 1) for o in range(100) if o % 10}
        wait_for(lambda: others <= {s.id for s in service.requests()}, timeout=60, what="every key but k0 called")

        def all_done_ahead() -> bool:
            rows = group_offsets(KafkaConfig(bootstrap_servers=kafka.bootstrap), scenario.group).partitions
            return [(r.committed, r.done_ahead) for r in rows] == [(0, 90), (0, 90)]

        wait_for(all_done_ahead, timeout=30, what="offsets show: committed 0 with 90 done ahead, per partition")
        second = SidecarProcess(config, tmp_path / "second").start()
        wait_for(lambda: _pipeline(second)["partitions"] != [], timeout=60, what="the second member's partition")
        (moved,) = [row["partition"] for row in _pipeline(second)["partitions"]]
        wait_for(lambda: _pipeline(second)["skipped"] == 90, timeout=30, what="the second member to skip 90")
        stuck.clear()
        verdict = scenario.check(service.requests, max_duplicates=0)
        called = Counter(s.id for s in service.requests() if s.key != b"k0")
        assert set(called.values()) == {1}, "a record done ahead was called again"
        print(f"partition {moved} handed over; {verdict.duplicates} duplicates")
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
        service.stop()


def _pipeline(process: SidecarProcess) -> dict[str, Any]:
    (pipeline,) = process.status()["pipelines"]
    return dict(pipeline)
