"""Queue mode (``consume.share_group``, KIP-932) on the real broker: more sidecars than partitions share one
topic, a crashed member's records come back after their lock, a retry is a release that reaches the dead-letter
topic after ``retry.attempts`` deliveries, and a stop releases what was not started at once.

Each test ends with the outcome check, read from the topics: every input has a reply or a dead letter, and the
outcomes beyond one per input stay within the bound the test claims. The inputs have no keys (a share group
keeps no order), so the order checks have nothing to hold."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from streamcar.config import Config, KafkaConfig
from streamcar.kafka.share_group import prepare_share_group

from invariants import Verdict, evaluate, letter_source, read_all, reply_source, reply_with_id
from scenario import Scenario, ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, produce_records, wait_for

pytestmark = pytest.mark.integration


def queue_spec(scenario: Scenario, url: str, **overrides: Any) -> dict[str, Any]:
    """The scenario's pipeline, reading its source as a share group (named like its consumer group)."""
    spec = scenario.spec(url, ordering="none", **overrides)
    spec["consume"] = {"topics": [scenario.source], "share_group": scenario.group}
    return spec


def set_group(kafka: KafkaHandle, group: str, **settings: str) -> None:
    """Share-group configs, e.g. a short ``share.record.lock.duration.ms``, before its first member starts."""
    entries = [
        ConfigEntry(k.replace("_", "."), v, incremental_operation=AlterConfigOpType.SET) for k, v in settings.items()
    ]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    admin = kafka.admin()  # kept: a client collected while its request is out fails it (_DESTROY)
    admin.incremental_alter_configs([resource])[resource].result(30)


def unanswered(scenario: Scenario, n: int) -> int:
    """How many of the ``n`` inputs have neither a reply nor a dead letter on the topics yet."""
    replies = {reply_source(r.value) for r in read_all(scenario.kafka, scenario.out)}
    letters = {letter_source(r) for r in read_all(scenario.kafka, scenario.dlq)}
    return n - len((replies | letters) - {None})


def outcomes(scenario: Scenario, n: int, *, timeout: float, max_duplicates: int, **expect: Any) -> Verdict:
    """Wait until each of the ``n`` inputs has a reply or a dead letter on the topics, then hold them to the
    invariants (see tests/invariants.py)."""
    kafka = scenario.kafka
    wait_for(lambda: unanswered(scenario, n) == 0, timeout=timeout, what=f"an outcome for each of {n}", interval=0.5)
    inputs = read_all(kafka, scenario.source)
    assert len(inputs) == n
    verdict = evaluate(
        inputs,
        read_all(kafka, scenario.out),
        read_all(kafka, scenario.dlq),
        [],
        max_duplicates=max_duplicates,
        crashes=True,
        **expect,
    )
    assert not verdict.violations, verdict.describe()
    return verdict


class Slow:
    """Answers after ``delay`` seconds with the input's id; counts the calls per input."""

    def __init__(self, delay: float, fail: set[int] | None = None) -> None:
        self.delay = delay
        self.fail = fail or set()
        self.calls: Counter[int] = Counter()
        self._lock = threading.Lock()

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        import asyncio

        with self._lock:
            self.calls[seen.offset] += 1
        await asyncio.sleep(self.delay)
        if seen.offset in self.fail:
            return web.Response(status=500, text="this one always fails")
        return await reply_with_id(seen)


def member(config: Config, workdir: Path) -> SidecarProcess:
    workdir.mkdir()
    return SidecarProcess(config, workdir).start()


def consumed(process: SidecarProcess) -> int:
    (pipeline,) = process.status()["pipelines"]
    return int(pipeline["consumed"])


def test_three_sidecars_share_one_partition_and_each_record_has_one_outcome(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(1)
    service = TestService(Slow(0.02)).start()
    config = make_config(kafka.bootstrap, {"p": queue_spec(scenario, service.url, max_in_flight=8)})
    members = [member(config, tmp_path / f"m{i}") for i in range(3)]
    produced = 0
    try:
        # a steady trickle until every member has been given records: the first to join would take a backlog
        deadline = time.monotonic() + 60
        while not all(consumed(m) >= 20 for m in members):
            assert time.monotonic() < deadline, [consumed(m) for m in members]
            produce_records(kafka, scenario.source, [(None, str(produced + i).encode()) for i in range(50)])
            produced += 50
            behind = produced - 100
            wait_for(lambda: sum(consumed(m) for m in members) >= behind, timeout=30, what="catching up")  # noqa: B023
        verdict = outcomes(scenario, produced, timeout=60, max_duplicates=0, dead_letters={})
        shares = [consumed(m) for m in members]
        print(f"{produced} records; consumed per member: {shares}; duplicates {verdict.duplicates}")
        assert sum(shares) == produced  # no crash, no lock ran out: each record was delivered once
        for m in members:
            m.signal(signal.SIGTERM)
        assert [m.wait(30) for m in members] == [0, 0, 0]
    finally:
        for m in members:
            m.kill()
        service.stop()


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_a_lost_members_records_go_to_the_others_and_nothing_is_lost(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path, fault: str
) -> None:
    """SIGKILL: the broker releases what the member held as its connection drops. SIGSTOP: the connection
    stays, and what it held comes back only when the locks (4 s here) run out; once it is let go on, what it
    had in a call may be published again (bounded by what it held), and its late acknowledgements are refused."""
    scenario = scenario_factory(1)
    lock = 4.0
    set_group(kafka, scenario.group, share_record_lock_duration_ms=str(int(lock * 1000)))
    n, in_flight = 400, 16
    produce_records(kafka, scenario.source, [(None, str(i).encode()) for i in range(n)])
    service = TestService(Slow(0.05)).start()
    spec = queue_spec(scenario, service.url, max_in_flight=in_flight, call={"timeout": "2s"})  # below the lock
    config = make_config(kafka.bootstrap, {"p": spec})
    victim = member(config, tmp_path / "victim")
    other: SidecarProcess | None = None
    try:
        wait_for(lambda: consumed(victim) > 0, timeout=60, what="the first member to be given records")
        other = member(config, tmp_path / "other")
        wait_for(lambda: service.count() >= 100, timeout=60, what="100 calls")
        (pipeline,) = victim.status()["pipelines"]
        held = pipeline["in_flight"] + pipeline["buffered"]
        assert held > 0, pipeline
        victim.signal(signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        lost_at = time.monotonic()
        wait_for(lambda: unanswered(scenario, n) == 0, timeout=90, what="an outcome for every input", interval=0.5)
        took = time.monotonic() - lost_at
        if fault == "frozen":
            assert took >= lock - 0.5, took  # its records were locked until then
            victim.signal(signal.SIGCONT)
            victim.signal(signal.SIGTERM)
            assert victim.wait(30) == 0, victim.log_tail()
        verdict = outcomes(scenario, n, timeout=30, max_duplicates=held, dead_letters={})
        print(f"{fault}: {held} records held; all done {took:.1f}s later; duplicates {verdict.duplicates}")
        other.signal(signal.SIGTERM)
        assert other.wait(30) == 0, other.log_tail()
    finally:
        for process in (victim, other):
            if process is not None and process.alive:
                process.signal(signal.SIGCONT)  # a frozen process must be let go on to die
                process.kill()
        service.stop()


def test_a_retry_is_a_release_and_reaches_the_dead_letter_topic_after_its_attempts(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(1)
    n, bad = 60, {7, 23, 41}
    produce_records(kafka, scenario.source, [(None, str(i).encode()) for i in range(n)])
    slow = Slow(0.005, fail=bad)
    service = TestService(slow).start()
    config = make_config(kafka.bootstrap, {"p": queue_spec(scenario, service.url)})  # retry.attempts: 3
    process = SidecarProcess(config, tmp_path).start()
    try:
        expected = {(scenario.source, 0, offset): "exhausted" for offset in bad}
        outcomes(scenario, n, timeout=60, max_duplicates=0, dead_letters=expected)
        letters = read_all(kafka, scenario.dlq)
        assert sorted(int(r.header("streamcar-attempts") or b"0") for r in letters) == [3, 3, 3]
        assert {offset: slow.calls[offset] for offset in bad} == dict.fromkeys(bad, 3)  # one call per delivery
        (pipeline,) = process.status()["pipelines"]
        assert pipeline["results"].get("released") == 2 * len(bad)  # released twice, dead-lettered at the third
        assert pipeline["consumed"] == n + 2 * len(bad)  # each release came back as a delivery
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        process.kill()
        service.stop()


def test_a_stopping_member_releases_what_it_did_not_start_at_once(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    scenario = scenario_factory(1)
    set_group(kafka, scenario.group, share_record_lock_duration_ms="60000")  # no lock watch within the test
    n = 600
    produce_records(kafka, scenario.source, [(None, str(i).encode()) for i in range(n)])
    service = TestService(Slow(0.1)).start()
    # 4 calls at once of 100 ms: the first member sits on most of what it fetched (its lock: 60 s)
    slow_spec = queue_spec(scenario, service.url, max_in_flight=4, shutdown_timeout="2s")
    first = member(make_config(kafka.bootstrap, {"p": slow_spec}), tmp_path / "first")
    fast = make_config(kafka.bootstrap, {"p": queue_spec(scenario, service.url, max_in_flight=64)})
    second: SidecarProcess | None = None
    try:
        wait_for(lambda: consumed(first) >= 200, timeout=60, what="the first member to fetch a backlog")
        (pipeline,) = first.status()["pipelines"]
        assert pipeline["buffered"] >= 100, pipeline  # fetched, not started
        second = member(fast, tmp_path / "second")
        first.signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        assert first.wait(30) == 0, first.log_tail()
        assert any("released" in line and "records to the share group (stopping)" in line for line in first.log_lines())
        outcomes(scenario, n, timeout=60, max_duplicates=0, dead_letters={})
        took = time.monotonic() - stopped_at
        print(f"every record done {took:.1f}s after the stop")
        assert took < 15, took  # not when the first member's locks would have run out (60 s), nor half of it
        second.signal(signal.SIGTERM)
        assert second.wait(30) == 0, second.log_tail()
    finally:
        first.kill()
        if second is not None:
            second.kill()
        service.stop()


class Timed(Slow):
    """:class:`Slow`, also noting when each call began."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.started: list[float] = []

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        self.started.append(time.monotonic())
        return await super().__call__(seen)

    def rate(self, since: float, until: float) -> float:
        """Calls begun per second between two moments."""
        return sum(1 for t in self.started if since <= t < until) / max(until - since, 1e-9)


def produce_in_large_batches(kafka: KafkaHandle, topic: str, n: int) -> None:
    """``n`` records written as a bulk load writes them: librdkafka's defaults let a batch hold up to 10,000."""
    producer = kafka.producer(**{"linger.ms": 1000, "batch.num.messages": 10000, "enable.idempotence": True})
    for i in range(n):
        producer.produce(topic, value=str(i).encode())
    assert producer.flush(60) == 0


def test_a_backlog_in_large_batches_keeps_a_lone_member_busy(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, tmp_path: Path
) -> None:
    """The broker hands a producer's batch out whole, whatever the member asked for: one member with 4 calls at
    once of 20 ms fetches 2,000 when it can start about 500 within its lock (4 s here). What it cannot start
    goes back, and each time it comes back costs a delivery; the broker then hands out such records in halves,
    and one by one on their last deliveries. It must not collapse to one call at a time, nor dead-letter healthy
    records because they waited."""
    scenario = scenario_factory(1)
    lock, n = 4.0, 2000
    set_group(kafka, scenario.group, share_record_lock_duration_ms=str(int(lock * 1000)))
    produce_in_large_batches(kafka, scenario.source, n)
    timed = Timed(0.02)
    service = TestService(timed).start()
    spec = queue_spec(scenario, service.url, max_in_flight=4, call={"timeout": "500ms"})
    process = member(make_config(kafka.bootstrap, {"p": spec}), tmp_path / "m")
    try:
        began = time.monotonic()
        verdict = outcomes(scenario, n, timeout=240, max_duplicates=0, dead_letters={})
        took = time.monotonic() - began
        first = min(timed.started)
        half = first + (max(timed.started) - first) / 2
        early, late = timed.rate(first, half), timed.rate(half, max(timed.started))
        (pipeline,) = process.status()["pipelines"]
        print(
            f"{n} records in {took:.1f}s: {early:.0f} calls/s in the first half, {late:.0f} in the second;"
            f" deliveries {pipeline['consumed']}, released {pipeline['results'].get('released', 0)},"
            f" calls {sum(timed.calls.values())}, duplicates {verdict.duplicates}"
        )
        seconds = Counter(int(t - first) for t in timed.started)
        print("calls per second:", [seconds[i] for i in range(int(max(timed.started) - first) + 1)])
        assert sum(timed.calls.values()) == n  # each record called once: no healthy record given up
        assert late >= early / 2, (early, late)  # no collapse to one call at a time
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        process.kill()
        service.stop()


def group_limit(kafka: KafkaHandle, group: str) -> tuple[str, bool]:
    """The group's share.delivery.count.limit, and whether it is Kafka's default rather than the group's own."""
    resource = ConfigResource(ResourceType.GROUP, group)
    admin = kafka.admin()
    entry = admin.describe_configs([resource])[resource].result(30)["share.delivery.count.limit"]
    return str(entry.value), bool(entry.is_default)


def test_the_delivery_limit_is_kafkas_most_unless_the_group_has_its_own(kafka: KafkaHandle) -> None:
    """Deliveries are spent by records given back unstarted, not only by attempts: a group with no limit of its
    own gets 10; one with its own keeps it, raised to ``retry.attempts + 1`` when lower."""
    settings = KafkaConfig(bootstrap_servers=kafka.bootstrap)
    tag = uuid.uuid4().hex[:8]
    fresh, low, high = (f"limit-{name}-{tag}" for name in ("fresh", "low", "high"))
    set_group(kafka, low, share_delivery_count_limit="3")
    set_group(kafka, high, share_delivery_count_limit="8")
    assert prepare_share_group(settings, fresh, start_from="earliest", attempts=3).deliveries == 10
    assert prepare_share_group(settings, low, start_from="earliest", attempts=5).deliveries == 6
    assert prepare_share_group(settings, high, start_from="earliest", attempts=5).deliveries == 8
    assert group_limit(kafka, fresh) == ("10", False)
    assert group_limit(kafka, low) == ("6", False)
    assert group_limit(kafka, high) == ("8", False)
