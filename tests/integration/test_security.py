"""SASL_SSL (SCRAM-SHA-512 over TLS with a self-made CA) against a real broker started by ``LocalKafka``.

The right credentials carry a real ``streamcar run`` and the tools; a wrong password or an untrusted CA stops
them within seconds with one line and exit code 1, after a handful of attempts the broker can count in its log;
the password shows up in no output and on no admin page.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streamcar.config import Config
from streamcar.devkafka.cluster import Layout
from streamcar.devkafka.security import Security, make_ca
from streamcar.kafka.consumer import ConsumerBridge
from streamcar.kafka.errors import Said, Trouble
from streamcar.kafka.records import TP, CommitPoint, Incoming

from service import TestService
from sidecar import SidecarProcess, make_config, pipeline
from support import KafkaHandle, TopicFactory, wait_for

pytestmark = pytest.mark.integration

MAX_FAILED_LOGINS = 5  # what "no retry storm" means: librdkafka alone would try a few times a second, forever


def layout_of(handle: KafkaHandle) -> tuple[Layout, Security]:
    layout = handle.cluster.layout()
    assert layout is not None
    assert layout.security is not None
    return layout, layout.security


def secure_client(handle: KafkaHandle, **extra: Any) -> dict[str, Any]:
    layout, security = layout_of(handle)
    return {"bootstrap.servers": layout.secure_bootstrap, **security.client_config(), **extra}


def secure_config(handle: KafkaHandle, pipelines: dict[str, Any], **security: str) -> Config:
    """A sidecar config on the SASL_SSL listener; ``security`` overrides the dev user's settings."""
    layout, dev = layout_of(handle)
    assert layout.secure_bootstrap is not None
    return make_config(layout.secure_bootstrap, pipelines, security={**dev.kafka_security(), **security})


def config_file(config: Config, path: Path) -> Path:
    """The config as YAML with the password as ``${KAFKA_PASSWORD}``, as a deployment passes it (and since a
    dumped Config masks it)."""
    raw = config.model_dump(mode="json", by_alias=True)
    raw["kafka"]["security"]["password"] = "${KAFKA_PASSWORD}"
    path.write_text(yaml.safe_dump(raw))
    return path


def sidecar_process(config: Config, workdir: Path, password: str) -> SidecarProcess:
    sidecar = SidecarProcess(config, workdir, env={"KAFKA_PASSWORD": password})
    config_file(config, sidecar.config_file)
    return sidecar


def streamcar(*args: str, password: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamcar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KAFKA_PASSWORD": password},
        check=False,
    )


def failed_logins(handle: KafkaHandle) -> int:
    """Failed authentications (SASL or TLS) the broker logged so far."""
    return (handle.cluster.node_dir(1) / "kafka.log").read_text(errors="replace").count("Failed authentication")


def produce_secure(handle: KafkaHandle, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(secure_client(handle, acks="all", **{"linger.ms": 5}))
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(30) == 0


def read_secure(handle: KafkaHandle, topic: str, *, expect: int, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic`` read over SASL_SSL, waiting (bounded) until ``expect`` arrived."""
    consumer = Consumer(secure_client(handle, **{"group.id": "secure-reader", "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            got += [m for m in consumer.consume(num_messages=1000, timeout=0.2) if m.error() is None]
        return got
    finally:
        consumer.close()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def test_the_sidecar_consumes_calls_and_publishes_over_sasl_ssl_and_never_shows_the_password(
    kafka_secure: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    _, security = layout_of(kafka_secure)
    source, out = topic_factory(2, on=kafka_secure), topic_factory(2, on=kafka_secure)
    service = TestService().start()
    config = secure_config(kafka_secure, {"p": pipeline(source, group_factory(), service.url, publish=out)})
    sidecar = sidecar_process(config, tmp_path, security.password).start()
    try:
        produce_secure(kafka_secure, source, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)])
        replies = read_secure(kafka_secure, out, expect=20)
        port = re.compile(r"admin endpoints on http://127\.0\.0\.1:(\d+)")
        wait_for(lambda: port.search(sidecar.log_file.read_text()) is not None, timeout=10, what="the admin port")
        match = port.search(sidecar.log_file.read_text())
        assert match is not None
        base = f"http://127.0.0.1:{match[1]}"
        pages = {path: get(base + path) for path in ("/status", "/", "/metrics", "/readyz")}
        sidecar.signal(signal.SIGTERM)
        code = sidecar.wait(30)
    finally:
        sidecar.kill()
        service.stop()

    assert code == 0, sidecar.log_tail()
    assert sorted((m.value() or b"").decode() for m in replies) == sorted(f"V{i}" for i in range(20))
    assert json.loads(pages["/status"])["pipelines"][0]["consumed"] == 20
    for path, text in pages.items():
        assert security.password not in text, path
    assert security.password not in sidecar.log_file.read_text()


def test_a_wrong_password_stops_the_sidecar_with_one_line_and_no_retry_storm(
    kafka_secure: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    wrong = "not-the-password-4711"
    config = secure_config(
        kafka_secure, {"p": pipeline(topic_factory(1, on=kafka_secure), group_factory(), "http://127.0.0.1:9/x")}
    )
    before = failed_logins(kafka_secure)
    sidecar = sidecar_process(config, tmp_path, wrong).start()
    try:
        code = sidecar.wait(30)
    finally:
        sidecar.kill()

    output = sidecar.log_file.read_text()
    assert code == 1, output
    assert output.splitlines() == [
        "streamcar: kafka: authentication failed for user 'streamcar' (SCRAM-SHA-512) at "
        f"{layout_of(kafka_secure)[0].secure_bootstrap}: invalid credentials"
    ]
    assert wrong not in output
    assert 1 <= failed_logins(kafka_secure) - before <= MAX_FAILED_LOGINS


def test_an_untrusted_broker_certificate_stops_the_sidecar_with_one_line(
    kafka_secure: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    _, security = layout_of(kafka_secure)
    other_ca = make_ca(tmp_path / "pki", "other-ca", common_name="not the broker's CA")
    config = secure_config(
        kafka_secure,
        {"p": pipeline(topic_factory(1, on=kafka_secure), group_factory(), "http://127.0.0.1:9/x")},
        ca_file=str(other_ca),
    )
    before = failed_logins(kafka_secure)
    sidecar = sidecar_process(config, tmp_path, security.password).start()
    try:
        code = sidecar.wait(30)
    finally:
        sidecar.kill()

    output = sidecar.log_file.read_text()
    assert code == 1, f"exit {code}: {output}"
    lines = output.splitlines()
    assert len(lines) == 1, output
    line = lines[0]
    assert line.startswith("streamcar: kafka: TLS handshake with 127.0.0.1:"), line
    assert f"certificate verify failed (not signed by a CA in ca_file {other_ca})" in line
    assert failed_logins(kafka_secure) - before <= MAX_FAILED_LOGINS


def test_the_tools_work_over_sasl_ssl_and_stop_at_once_on_a_wrong_password(
    kafka_secure: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    _, security = layout_of(kafka_secure)
    topic = topic_factory(1, on=kafka_secure)
    produce_secure(kafka_secure, topic, [(b"k1", b"one"), (b"k2", b"two"), (b"k3", b"three")])
    cfg = config_file(
        secure_config(kafka_secure, {"p": pipeline(topic, group_factory(), "http://127.0.0.1:9/x")}),
        tmp_path / "streamcar.yaml",
    )

    tail = streamcar(
        "tail", "-c", str(cfg), "--topic", topic, "--from", "earliest", "--no-follow", password=security.password
    )
    assert tail.returncode == 0, tail.stderr
    assert [line.split()[-1] for line in tail.stdout.splitlines()] == ["one", "two", "three"]
    assert tail.stderr == ""

    before = failed_logins(kafka_secure)
    started = time.monotonic()
    refused = streamcar("offsets", "show", "-c", str(cfg), "--group", "g", password="wrong-password-0815")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "streamcar: kafka: authentication failed for user 'streamcar' (SCRAM-SHA-512) at "
        f"{layout_of(kafka_secure)[0].secure_bootstrap}: invalid credentials"
    ]
    assert time.monotonic() - started < 15  # not the tools' 15 s request timeout: the failure is seen at once
    assert 1 <= failed_logins(kafka_secure) - before <= MAX_FAILED_LOGINS
    assert security.password not in tail.stdout + tail.stderr + refused.stdout + refused.stderr


class Errors:
    """A ConsumerListener that only collects errors (nothing is ever assigned with a rejected password)."""

    def __init__(self) -> None:
        self.errors: list[Said] = []

    def on_records(self, records: list[Incoming | Said]) -> None:
        raise AssertionError("no record can arrive")

    async def on_assigned(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        raise AssertionError("nothing can be assigned")

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, CommitPoint]:
        return {}

    async def on_lost(self, partitions: list[TP]) -> None:
        return None

    def on_rewound(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        raise AssertionError("nothing is transactional here")

    def on_error(self, said: Said) -> None:
        self.errors.append(said)


async def test_a_password_rejected_while_running_reaches_the_pipeline_once_and_in_words(
    kafka_secure: KafkaHandle, topic_factory: TopicFactory
) -> None:
    """The start-up check aside, the consumer itself (e.g. after a password rotation) tells its pipeline once."""
    listener = Errors()
    config = secure_client(kafka_secure, **{"sasl.password": "rotated-away", "group.id": "g-rotated"})
    before = failed_logins(kafka_secure)
    bridge = ConsumerBridge(config, [topic_factory(1, on=kafka_secure)], listener, asyncio.get_running_loop())
    bridge.start()
    try:
        await asyncio.to_thread(  # librdkafka keeps retrying: let it fail three times (the broker's log says so)
            wait_for, lambda: failed_logins(kafka_secure) - before >= 3, timeout=30, what="three failed logins"
        )
    finally:
        await bridge.stop()

    security_errors = [said.text for said in listener.errors if said.trouble is Trouble.FATAL]
    assert security_errors == [
        "kafka: authentication failed for user 'streamcar' (SCRAM-SHA-512) at "
        f"{layout_of(kafka_secure)[0].secure_bootstrap}: invalid credentials"
    ]


def test_a_restarted_node_keeps_its_user_and_certificates_and_status_shows_them(kafka_secure: KafkaHandle) -> None:
    cluster = kafka_secure.cluster
    layout, security = layout_of(kafka_secure)
    cluster.kill_node(1, signal.SIGTERM)
    assert cluster.status()[0].running is False
    cluster.start(nodes=1, timeout=120, die_with_parent=True)  # waits until the dev user gets in again

    status = subprocess.run(
        [sys.executable, "-m", "streamcar", "kafka", "status", "--data-dir", str(cluster.data_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["secure_bootstrap"] == layout.secure_bootstrap
    assert report["security"] == {
        **security.kafka_security(),
        "stored_in": str(cluster.data_dir / "layout.json"),
        "answering": True,
        "problem": None,
    }
    assert report["nodes"][0]["secure_port"] == layout.nodes[0].secure_port
