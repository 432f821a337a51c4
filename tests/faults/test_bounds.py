"""In flight stays bounded whatever happens downstream, pipelines isolate each other, and stopping takes
``shutdown_timeout`` plus a stated grace (rows 10, 11 and 16 of the hostile-input issue), against
``streamcar run`` as its own process:

* row 10, the publish topic missing (auto-create off), null keys, a backlog: before, 65,000 in flight and
  756 MB RSS, and stopping took 66-85 s; now in flight stays <= 2 x max_in_flight and stopping is within the bound.
* row 11, the same in one of two pipelines: before, the other stalled, /status timed out, 2.5 M log lines and
  SIGTERM was ignored; now the other flows, /status answers, and failures cost one log line per interval.
* row 16, ``shutdown_timeout: 10s`` with calls that do not end: before, exit after 20.1 s; now within 10 s + 5 s.

Once the topic exists (and the sidecar is started again), every input has its reply: nothing was lost.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from aiohttp import web

from hostile import HostileService, Script, reply_with_id
from invariants import read_all
from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarFactory, SidecarProcess, make_config, pipeline
from support import KafkaHandle, TopicFactory, create_topic, produce_records, wait_for
from threaded import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MAX_IN_FLIGHT = 64
SHUTDOWN = 10.0
STOP_GRACE = 5.0  # streamcar.engine.stopping.STOP_GRACE: the stated bound beyond shutdown_timeout
RSS_BOUND_MIB = 300
FANOUT_RSS_BOUND_MIB = 500  # one reply's JSON parsed (at most 16 MiB, 1,000,000 records), and 16 of 10,000
# auto-create off, and undeliverable records fail fast (as they would after message.timeout.ms in production)
LIBRDKAFKA = {
    "allow.auto.create.topics": False,
    "message.timeout.ms": 3000,
    "topic.metadata.propagation.max.ms": 1000,
}


async def stall(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """A call that never ends (until the connection does)."""
    await asyncio.sleep(3600)
    return False


def choose(seen: Seen) -> Script:
    return stall if seen.body.startswith(b"stall") else reply_with_id


def watch(process: SidecarProcess, seconds: float, pipeline_name: str) -> tuple[int, int, float]:
    """Sample /status for ``seconds``: the most in flight and buffered seen, and the slowest answer."""
    most_in_flight = most_buffered = 0
    slowest = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        status = process.status(timeout=10)
        slowest = max(slowest, time.monotonic() - started)
        (mine,) = [p for p in status["pipelines"] if p["name"] == pipeline_name]
        most_in_flight = max(most_in_flight, mine["in_flight"])
        most_buffered = max(most_buffered, mine["buffered"])
        time.sleep(0.2)
    return most_in_flight, most_buffered, slowest


def test_a_missing_publish_topic_keeps_in_flight_bounded_and_stopping_prompt(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    made = scenario_factory(3)
    out = f"{made.source}-out-missing"  # created later, once the bounds have been seen
    scenario = replace(made, out=out)
    source = scenario.source
    service = service_factory(HostileService(choose))
    records = [(None, b"%d" % i) for i in range(20_000)]
    records += [(None, b"stall %d" % i) for i in range(5)]
    produce_records(kafka, source, records)
    spec = scenario.spec(
        service.url,
        max_in_flight=MAX_IN_FLIGHT,
        shutdown_timeout=f"{SHUTDOWN:g}s",
        call={"timeout": "60s"},
    )
    config = make_config(kafka.bootstrap, {"p": spec}, librdkafka=LIBRDKAFKA)
    process = sidecar_factory(config)
    wait_for(lambda: service.count() >= MAX_IN_FLIGHT, timeout=30, what="the first calls")
    most_in_flight, most_buffered, slowest = watch(process, 8, "p")
    peak = process.peak_rss_mib()
    print(f"in flight <= {most_in_flight}, buffered <= {most_buffered}, peak RSS {peak:.0f} MiB")
    assert most_in_flight <= 2 * MAX_IN_FLIGHT
    # the buffer's bound, plus the two batches the consumer may hand over, plus two more a stall's pause may not stop
    assert most_buffered <= 2000 + 4 * 500
    assert peak < RSS_BOUND_MIB
    assert slowest < 1.5
    failures = [line for line in process.log_lines() if "producing to" in line]
    assert 1 <= len(failures) <= 3, failures  # one line per interval, not one per record

    started = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait(SHUTDOWN + STOP_GRACE + 5) == 0, process.log_tail()
    took = time.monotonic() - started
    print(f"stopped in {took:.1f}s (shutdown_timeout {SHUTDOWN:g}s)")
    assert took <= SHUTDOWN + STOP_GRACE

    create_topic(kafka, out, 3, 1)
    service.choose = lambda seen: reply_with_id  # the stalled ones answer now too
    process = sidecar_factory(config)
    scenario.check(
        service.requests,
        max_duplicates=4 * MAX_IN_FLIGHT,  # what the stop abandoned is redone,
        crashes=True,
        timeout=120,
    )


def test_one_pipelines_missing_topic_never_stalls_another_or_the_admin_server(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(3)
    source, dlq = scenario.source, scenario.dlq
    stuck_source, stuck_group = topic_factory(3), group_factory()
    missing = f"{stuck_source}-out-missing"
    service = service_factory(HostileService(lambda seen: reply_with_id))
    produce_records(kafka, stuck_source, [(None, b"%d" % i) for i in range(30_000)])
    stuck = pipeline(stuck_source, stuck_group, service.url, publish=missing, max_in_flight=256)
    healthy = scenario.spec(service.url, max_in_flight=64)
    config = make_config(kafka.bootstrap, {"stuck": stuck, "healthy": healthy}, librdkafka=LIBRDKAFKA)
    process = sidecar_factory(config)
    wait_for(lambda: service.count() >= 256, timeout=30, what="the stuck pipeline's first calls")

    def feed() -> None:  # the healthy pipeline's input arrives while the other one is stuck, at ~600/s
        for round_ in range(10):
            produce_records(kafka, source, [(f"k{i % 20}".encode(), b"%d-%d" % (round_, i)) for i in range(300)])
            time.sleep(0.5)  # pacing the input, not waiting for anything

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    most_in_flight, _, slowest = watch(process, 6, "stuck")
    feeder.join(30)
    verdict = scenario.check(lambda: [c for c in service.requests() if c.topic == source], timeout=30)
    assert verdict.replies.total() == 3000
    print(f"stuck pipeline: in flight <= {most_in_flight}; slowest /status {slowest:.3f}s")
    assert most_in_flight <= 2 * 256
    assert slowest < 1.5
    failures = [line for line in process.log_lines() if "producing to" in line]
    assert len(failures) <= 4, failures[:5]
    assert not read_all(kafka, dlq)

    assert process.peak_rss_mib() < RSS_BOUND_MIB
    started = time.monotonic()
    process.signal(signal.SIGTERM)
    assert process.wait(10 + STOP_GRACE + 5) == 0, process.log_tail()
    assert time.monotonic() - started <= 10 + STOP_GRACE  # pipeline()'s shutdown_timeout is 10s


def test_fan_out_replies_are_capped_and_count_against_max_in_flight(
    kafka: KafkaHandle, scenario_factory: ScenarioFactory, sidecar_factory: SidecarFactory
) -> None:
    """Issue 30, finding 10: a fan-out reply of 1,000,000 small records (14 MB) took 905 MiB, three at once
    2,076 MiB, bounded only by max_in_flight. Now a reply may fan out to at most 10,000 records (a larger one is
    dead-lettered, kind ``publish``, nothing of it published), and the records being published count against
    max_in_flight, 1,000 to a call slot."""
    scenario = scenario_factory(1)
    huge = b'{"records":[' + b",".join([b'{"value":"x"}'] * 1_000_000) + b"]}"
    allowed = b'{"records":[' + b",".join([b'{"value":"y"}'] * 10_000) + b"]}"

    async def fan_out(seen: Seen) -> web.StreamResponse:
        body = huge if seen.body.startswith(b"huge") else allowed
        return web.Response(body=body, content_type="application/vnd.streamcar.records+json")

    service = TestService(fan_out).start()
    try:
        inputs = [(None, b"huge %d" % i) for i in range(3)] + [(None, b"ok %d" % i) for i in range(20)]
        produce_records(kafka, scenario.source, inputs)
        config = make_config(kafka.bootstrap, {"p": scenario.spec(service.url, max_in_flight=16)})
        process = sidecar_factory(config)

        def all_done() -> bool:
            try:
                return bool(sum(process.status(timeout=30)["pipelines"][0]["results"].values()) >= len(inputs))
            except TimeoutError:  # a loop busy with a huge reply (before the cap)
                return False

        wait_for(all_done, timeout=300, what="an outcome for every input", interval=1.0)
        peak = process.peak_rss_mib()
        print(f"peak RSS {peak:.0f} MiB")
        wait_for(lambda: len(read_all(kafka, scenario.dlq)) >= 3, timeout=30, what="the 3 huge replies' letters")
        letters = read_all(kafka, scenario.dlq)
        published = len(read_all(kafka, scenario.out))
        print(f"peak RSS {peak:.0f} MiB; {published} records published; {len(letters)} dead letters")
        assert sorted(r.value or b"" for r in letters) == [b"huge 0", b"huge 1", b"huge 2"]
        assert {r.header("streamcar-error-kind") for r in letters} == {b"publish"}
        assert published == 20 * 10_000
        assert peak < FANOUT_RSS_BOUND_MIB
    finally:
        service.stop()
