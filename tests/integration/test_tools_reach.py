"""Every tool against a Kafka it cannot reach fails within seconds, in one line naming the address and the likely
cause: nothing listening (refused), a listener that does not answer as Kafka, a name that does not resolve, and
a security protocol that does not match the listener (TLS client at a PLAINTEXT port, and the other way round).

Before: ``Local: Timed out`` (or ``Broker transport failure``) after about 16 s, whatever the cause.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamcar.cli import main
from streamcar.devkafka.layout import free_ports

from support import KafkaHandle

pytestmark = pytest.mark.integration

BOUND = 5.0  # seconds: the tools promise 3 (REACH + PROBE), with room for a loaded machine

TOOLS = [
    ["offsets", "show", "--group", "g"],
    ["offsets", "reset", "--group", "g", "--topic", "t", "--to", "-10m"],
    ["replay", "--topic", "t", "--from", "earliest", "--to-topic", "u"],
    ["dlq", "show", "--topic", "d"],
    ["dlq", "redrive", "--topic", "d", "--kind", "exhausted"],
    ["tail", "--topic", "t", "--no-follow"],
    ["produce", "--topic", "t"],
    ["topics", "create", "t"],
    ["topics", "list"],
    ["topics", "describe", "t"],
]


def timed(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, float, str]:
    started = time.monotonic()
    code = main(argv)
    return code, time.monotonic() - started, capsys.readouterr().err


@pytest.fixture
def closed_port() -> int:
    (port,) = free_ports(1)
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes TCP connections (the kernel's backlog) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("argv", TOOLS, ids=lambda argv: " ".join(argv[:2]))
def test_each_tool_fails_at_once_when_nothing_listens(
    argv: list[str], closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{closed_port}"
    code, seconds, err = timed([*argv, "-b", address], capsys)
    assert code == 1
    assert err == (
        f"streamcar: cannot reach Kafka at {address}: connection refused (is a broker running there?"
        " 'streamcar kafka status' shows the local one)\n"
    )
    assert seconds < BOUND, seconds


def test_a_listener_that_does_not_answer_as_kafka(silent_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{silent_port}"
    code, seconds, err = timed(["tail", "--topic", "t", "-b", address], capsys)
    assert code == 1
    assert err == (
        f"streamcar: cannot reach Kafka at {address}: a connection opens, but nothing answers as Kafka does within"
        " 2.5s (is it a Kafka listener? one of another security protocol?)\n"
    )
    assert seconds < BOUND, seconds


def test_a_name_that_does_not_resolve(capsys: pytest.CaptureFixture[str]) -> None:
    address = "no-such-broker.invalid:9092"  # .invalid never resolves (RFC 2606)
    code, seconds, err = timed(["topics", "list", "-b", address], capsys)
    assert code == 1
    assert err.startswith(f"streamcar: cannot reach Kafka at {address}: "), err
    # a resolver that answers at once says so; one that never answers leaves it to "no answer"
    assert "cannot resolve the host name 'no-such-broker.invalid'" in err or "no answer" in err, err
    assert len(err.splitlines()) == 1
    assert seconds < BOUND, seconds


def test_several_addresses_each_with_its_cause(closed_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{closed_port},no-such-broker.invalid:9092"
    code, seconds, err = timed(["offsets", "show", "--group", "g", "-b", address], capsys)
    assert code == 1
    assert err.startswith(f"streamcar: cannot reach Kafka at {address}: 127.0.0.1:{closed_port}: connection refused")
    assert "no-such-broker.invalid:9092: " in err
    assert seconds < BOUND, seconds


def test_the_whole_command_fails_within_seconds_too(closed_port: int) -> None:
    """As a person runs it: the interpreter's start and imports included."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamcar", "tail", "--topic", "t", "-b", f"127.0.0.1:{closed_port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 1
    assert done.stderr.startswith(f"streamcar: cannot reach Kafka at 127.0.0.1:{closed_port}: connection refused")
    assert len(done.stderr.splitlines()) == 1  # and no librdkafka log lines
    assert seconds < BOUND + 3, seconds


def kafka_yaml(path: Path, bootstrap: str, security: dict[str, str] | None) -> Path:
    kafka: dict[str, object] = {"bootstrap_servers": bootstrap}
    if security is not None:
        kafka["security"] = security
    pipelines = {"p": {"consume": {"topics": ["t"], "group": "g"}, "call": {"url": "http://127.0.0.1:9/x"}}}
    path.write_text(yaml.safe_dump({"kafka": kafka, "pipelines": pipelines}))
    return path


def test_a_tls_client_at_a_plaintext_listener_and_a_plaintext_client_at_a_tls_one(
    kafka_secure: KafkaHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = kafka_secure.cluster.layout()
    assert layout is not None
    assert layout.security is not None
    assert layout.secure_bootstrap is not None
    plaintext, secure = kafka_secure.bootstrap, layout.secure_bootstrap

    tls_at_plain = kafka_yaml(tmp_path / "tls.yaml", plaintext, layout.security.kafka_security())
    code, seconds, err = timed(["topics", "list", "-c", str(tls_at_plain)], capsys)
    assert code == 1
    assert err == (
        f"streamcar: cannot reach Kafka at {plaintext}: the TLS handshake found a listener that does not speak TLS"
        " (this client speaks SASL_SSL; is the port a PLAINTEXT listener?)\n"
    )
    assert seconds < BOUND, seconds
    assert layout.security.password not in err

    code, seconds, err = timed(["topics", "list", "-b", secure], capsys)
    assert code == 1
    assert err == (
        f"streamcar: cannot reach Kafka at {secure}: the broker closed the connection on the first request (a"
        " listener of another security protocol? this client speaks PLAINTEXT: see kafka.security)\n"
    )
    assert seconds < BOUND, seconds

    assert main(["topics", "list", "-b", plaintext]) == 0  # the right protocol at each port still works
    assert (
        main(["topics", "list", "-c", str(kafka_yaml(tmp_path / "ok.yaml", secure, layout.security.kafka_security()))])
        == 0
    )
