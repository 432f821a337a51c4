"""One record that breaks its calls never stalls the pipeline (rows 8, 9 and 15 of the hostile-input issue),
against ``streamcar run`` as its own process:

* row 9, the service drops the connection on one record among live traffic: before, 0 msg/s for 75 s+, the record
  never dead-lettered, and the lag shown as 4 of 40,000; now its attempts count, it is dead-lettered, the rest flows.
* row 8, a 1 MB input header, so the service refuses the request: before, the circuit opened and the key was stuck
  for good; now it is dead-lettered and its key goes on.
* row 15, that dead letter too large for the broker: before, retried forever with the commit frozen; now it is cut
  down to fit and dead-lettered.

A dropped connection used to count as "the service cannot be reached": the circuit opened at once, and attempts
made while it was open did not count, so the message was tried forever. The circuit now opens only when the
service fails for everyone (refused connections, or failures in a row or over half the calls).
"""

from __future__ import annotations

import time

import pytest

from hostile import HostileService, Script, drop, reply_with_id
from invariants import evaluate, read_all, wait_done
from invariants import reply_with_id as aiohttp_reply_with_id
from scenario import ScenarioFactory
from service import Seen, TestService
from sidecar import SidecarFactory, make_config
from support import KafkaHandle, produce_records, wait_for
from threaded import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RSS_BOUND_MIB = 250


def choose(seen: Seen) -> Script:
    return drop if seen.body.startswith(b"drop") else reply_with_id


def test_a_record_whose_connection_always_drops_is_dead_lettered_and_the_rest_flows(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(3)
    source, dlq = scenario.source, scenario.dlq
    service = service_factory(HostileService(choose))
    records = [(f"k{i % 50}".encode(), b"drop %d" % i if i % 500 == 250 else b"%d" % i) for i in range(3000)]
    produce_records(kafka, source, records)
    inputs = read_all(kafka, source)
    poison = {r.id for r in inputs if (r.value or b"").startswith(b"drop")}
    spec = scenario.spec(service.url, max_in_flight=64)
    process = sidecar_factory(make_config(kafka.bootstrap, {"p": spec}))
    started = time.monotonic()
    scenario.check(service.requests, dead_letters=dict.fromkeys(poison, "exhausted"), timeout=60)
    took = time.monotonic() - started
    status = process.status()["pipelines"][0]
    assert status["circuit_opened"] == 0, status["circuit_reason"]
    for letter in read_all(kafka, dlq):
        assert b"(disconnected)" in (letter.header("streamcar-error") or b"")
    assert process.alive
    peak = process.peak_rss_mib()
    print(f"{len(inputs)} records with {len(poison)} that drop their connection: {took:.1f}s, peak RSS {peak:.0f} MiB")
    assert peak < RSS_BOUND_MIB


BIG_HEADER = 1_100_000  # bytes: beyond the producer's message.max.bytes (1,000,000), within the input topic's


def test_a_huge_input_header_is_dead_lettered_cut_down_and_the_key_goes_on(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(1, source_config={"max.message.bytes": str(4 * 1024 * 1024)})
    source, out, dlq = scenario.source, scenario.out, scenario.dlq
    service = service_factory(TestService(aiohttp_reply_with_id))  # aiohttp refuses a header over 8 KiB
    producer = kafka.producer(**{"message.max.bytes": 4 * 1024 * 1024})
    for i in range(40):
        headers: list[tuple[str, str | bytes | None]] | None = [("huge", b"h" * BIG_HEADER)] if i == 10 else None
        producer.produce(source, value=b"%d" % i, key=b"same key", headers=headers)
    assert producer.flush(30) == 0
    inputs = read_all(kafka, source)
    huge = inputs[10].id
    process = sidecar_factory(make_config(kafka.bootstrap, {"p": scenario.spec(service.url)}))
    wait_for(lambda: len(read_all(kafka, dlq)) == 1, timeout=60, what="the dead letter of the huge record")
    (letter,) = read_all(kafka, dlq)
    assert letter.header("streamcar-source-offset") == str(huge[2]).encode()
    assert letter.header("huge") == b"<cut by streamcar: %d bytes>" % BIG_HEADER
    assert b"header 'huge' 1100000 bytes" in (letter.header("streamcar-cut") or b"")
    assert letter.value == b"10"  # small enough to keep
    wait_done(kafka, scenario.group, source, timeout=60)
    others = [r for r in inputs if r.id != huge]  # the letter is cut down by design: the rest is held to it all
    verdict = evaluate(
        others, read_all(kafka, out), [], service.requests(), max_duplicates=0, crashes=False, dead_letters={}
    )
    assert not verdict.violations, verdict.describe()
    assert process.alive
    peak = process.peak_rss_mib()
    print(f"dead letter cut to fit: {letter.header('streamcar-cut')!r}; peak RSS {peak:.0f} MiB")
    assert peak < RSS_BOUND_MIB


def test_the_lag_stays_true_while_consumption_is_paused(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(3, dead_letters=False)
    source, out = scenario.source, scenario.out
    service = service_factory(HostileService(lambda seen: reply_with_id))
    spec = scenario.spec(service.url, max_in_flight=16)
    process = sidecar_factory(make_config(kafka.bootstrap, {"p": spec}))
    produce_records(kafka, source, [(b"k%d" % (i % 9), b"%d" % i) for i in range(100)])
    wait_for(lambda: len(read_all(kafka, out)) == 100, timeout=30, what="the first replies")
    service.down()  # refused connections: the circuit opens and consumption pauses
    produce_records(kafka, source, [(b"k%d" % (i % 9), b"late %d" % i) for i in range(5000)])
    lags: list[int] = []

    def lag_is_true() -> bool:
        assert process is not None
        (status,) = process.status()["pipelines"]
        lags.append(status["lag"])
        return bool(status["circuit"] != "closed" and status["lag"] >= 5000 - 2 * 500 - 16)

    wait_for(lag_is_true, timeout=20, what="the lag while paused", interval=0.5)
    service.up()
    scenario.check(service.requests, timeout=60)
    print(f"lag while paused: {lags[-1]} of 5,000 records produced meanwhile")
