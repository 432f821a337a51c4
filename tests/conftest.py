"""Test fixtures: a real local Kafka per test session, started by the project's own tooling.

* ``kafka`` -- one single-node broker for the whole session (started on first use).
* ``kafka_cluster`` -- a 3-node cluster (replication 3, min.insync.replicas 2) for tests marked ``cluster``,
  started for the module that uses it and stopped after it.
* ``kafka_secure`` -- a single-node broker that also has a SASL_SSL listener (SCRAM-SHA-512, a self-made CA),
  for the module that uses it: ``handle.bootstrap`` is still PLAINTEXT (topic set-up), ``cluster.layout()``
  holds the secure bootstrap and the dev user's credentials.
* ``topic_factory`` / ``group_factory`` -- unique topic and group names per test, so tests never share state.
* ``scenario_factory`` -- a fault scenario's topics and group, and its closing invariant check (scenario.py).
* ``sidecar_factory`` / ``service_factory`` -- ``streamcar run`` processes and test services, started for the
  test and stopped (the sidecars killed) when it ends, whatever happened.

Every JVM is stopped at session end (and at interpreter exit, should the session be torn down abruptly).
"""

from __future__ import annotations

import atexit
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamcar.config import Config
from streamcar.devkafka import LocalKafka

from scenario import Scenario, ScenarioFactory
from sidecar import SidecarFactory, SidecarProcess
from support import KafkaHandle, TopicFactory, create_topic
from threaded import S, ServiceFactory, ThreadedServer


def pytest_configure(config: pytest.Config) -> None:
    """Children start with SIGINT's default disposition, whatever this run inherited.

    A shell starts a background job (``make test &``) with SIGINT ignored, an ignored signal stays ignored across
    exec, and Python leaves an ignored SIGINT ignored: the tests' ``streamcar`` processes would then not stop on the
    Ctrl-C they are sent. A handler of our own is reset to the default in each child.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _running_kafka(
    tmp_path_factory: pytest.TempPathFactory, name: str, nodes: int, security: str | None = None
) -> Iterator[KafkaHandle]:
    cluster = LocalKafka(tmp_path_factory.mktemp(name))
    atexit.register(cluster.stop, timeout=10)
    heap = "512m" if nodes == 1 else "384m"
    layout = cluster.start(nodes=nodes, port=0, heap=heap, timeout=180, die_with_parent=True, security=security)
    try:
        yield KafkaHandle(cluster, layout.bootstrap)
    finally:
        cluster.stop(timeout=20)


@pytest.fixture(scope="session")
def kafka_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    yield from _running_kafka(tmp_path_factory, "kafka", 1)


@pytest.fixture
def kafka(kafka_session: KafkaHandle) -> Iterator[KafkaHandle]:
    yield kafka_session
    kafka_session.close_clients()


# Module scope: three idle KRaft nodes cost a good share of two cores, so the cluster lives only while the
# cluster tests (one module) run, not for the rest of the session.
@pytest.fixture(scope="module")
def kafka_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    yield from _running_kafka(tmp_path_factory, "kafka3", 3)


@pytest.fixture(scope="module")
def kafka_secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaHandle]:
    yield from _running_kafka(tmp_path_factory, "kafka-secure", 1, security="sasl-ssl")


@pytest.fixture
def kafka_cluster(kafka_cluster_session: KafkaHandle) -> Iterator[KafkaHandle]:
    yield kafka_cluster_session
    kafka_cluster_session.close_clients()
    # a test may have killed a node: bring the cluster back whole for the next one
    kafka_cluster_session.cluster.start(nodes=3, timeout=180, die_with_parent=True)


def _slug(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")


@pytest.fixture
def topic_factory(request: pytest.FixtureRequest) -> TopicFactory:
    slug = _slug(request)

    def make(
        partitions: int = 3,
        *,
        replication: int = 1,
        config: dict[str, str] | None = None,
        on: KafkaHandle | None = None,
    ) -> str:
        name = f"{slug}-{uuid.uuid4().hex[:8]}"
        # the single broker starts only for tests that use it, not for cluster-only tests
        create_topic(on or request.getfixturevalue("kafka"), name, partitions, replication, config)
        return name

    return make


@pytest.fixture
def group_factory(request: pytest.FixtureRequest) -> Callable[[], str]:
    slug = _slug(request)
    return lambda: f"g-{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[SidecarFactory]:
    started: list[SidecarProcess] = []

    def start(config: Config, *, wrapper: list[str] | None = None) -> SidecarProcess:
        process = SidecarProcess(config, tmp_path, wrapper=wrapper).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def service_factory() -> Iterator[ServiceFactory]:
    started: list[ThreadedServer] = []

    def start(service: S) -> S:
        service.start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        service.stop()


@pytest.fixture
def scenario_factory(
    request: pytest.FixtureRequest, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> ScenarioFactory:
    def make(
        partitions: int = 3,
        *,
        out_partitions: int | None = None,
        dead_letters: bool = True,
        source_config: dict[str, str] | None = None,
        out_config: dict[str, str] | None = None,
        on: KafkaHandle | None = None,
        replication: int = 1,
    ) -> Scenario:
        kafka = on or request.getfixturevalue("kafka")
        source = topic_factory(partitions, replication=replication, config=source_config, on=kafka)
        out = topic_factory(out_partitions or partitions, replication=replication, config=out_config, on=kafka)
        dlq = topic_factory(1, replication=replication, on=kafka) if dead_letters else ""
        return Scenario(kafka, source, out, dlq, group_factory())

    return make
