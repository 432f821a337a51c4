"""The only broker dies (SIGKILL) mid-run and comes back a few seconds later on the same ports: ``streamcar run``
rides it out without a restart of its own, every input, before and after, ends with exactly one reply, in order,
and SIGTERM still drains and exits 0.

The broker is this module's own (the session broker serves every other test and must not be disturbed). It is
started and restarted from the main thread: ``die_with_parent`` ties a JVM to the thread that forks it.
"""

from __future__ import annotations

import atexit
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamcar.devkafka import LocalKafka
from streamcar.devkafka.cluster import port_is_free

from invariants import reply_with_id
from scenario import ScenarioFactory
from service import TestService
from sidecar import SidecarProcess, make_config
from support import KafkaHandle, produce_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
HEAP = "384m"


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    cluster = LocalKafka(tmp_path_factory.mktemp("kafka-restart"))
    atexit.register(cluster.stop, timeout=10)
    # A node restarted after SIGKILL cannot register again until its previous incarnation's session expires
    # (broker.session.timeout.ms, 9 s by default): a short session keeps the outage at a few seconds.
    quick = {"broker.session.timeout.ms": "2000", "broker.heartbeat.interval.ms": "500"}
    layout = cluster.start(nodes=1, port=0, heap=HEAP, timeout=180, die_with_parent=True, extra_properties=quick)
    handle = KafkaHandle(cluster, layout.bootstrap)
    try:
        yield handle
    finally:
        handle.close_clients()
        cluster.stop(timeout=20)


def test_broker_restart_mid_run(
    own_kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    tmp_path: Path,
) -> None:
    kafka = own_kafka
    scenario = scenario_factory(3, on=kafka)
    source = scenario.source
    n, outage = 4000, 3.0
    service = TestService(reply_with_id).start()
    records = [(f"k{i % 97}".encode(), b"v") for i in range(n)]
    process: SidecarProcess | None = None
    try:
        spec = scenario.spec(service.url, max_in_flight=64)
        produce_records(kafka, source, records[: n // 2])
        # The member's session outlives the outage: this test is about a restart the group does not notice. On a
        # loaded two-core CI machine the restarted JVM took over 45 s (librdkafka's default session timeout), the
        # client gave its session up, and the rebalance redelivered what was done but not yet committed (149
        # duplicates), as a rebalance does (docs/delivery.md).
        config = make_config(kafka.bootstrap, {"p": spec}, librdkafka={"session.timeout.ms": 180_000})
        process = SidecarProcess(config, tmp_path).start()
        wait_for(lambda: service.count() >= n // 8, timeout=60, what="progress")
        layout = kafka.cluster.layout()
        assert layout is not None
        kafka.cluster.kill_node(1, signal.SIGKILL)
        assert kafka.cluster.pid(1) is None
        assert service.count() < n // 2, "the broker should die while input is left"
        time.sleep(outage)  # the outage itself, not a synchronisation
        # the JVM's pid is gone a moment before the kernel has closed its listening sockets
        ports = [p for node in layout.nodes for p in (node.port, node.controller_port)]
        wait_for(lambda: all(map(port_is_free, ports)), timeout=10, what="the dead broker's ports")
        kafka.cluster.start(nodes=1, heap=HEAP, timeout=120, die_with_parent=True)
        produce_records(kafka, source, records[n // 2 :])  # input produced after the restart flows too
        scenario.check(service.requests)
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
    finally:
        if process is not None:
            process.kill()
        service.stop()
