"""Pure parts of the local Kafka tooling: the Maven project, ports, layouts, process identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamcar.devkafka import LocalKafka, free_ports
from streamcar.devkafka.cluster import port_is_free
from streamcar.devkafka.fetch import DEPENDENCY_PLUGIN, KAFKA_VERSION, cache_root, pom_text
from streamcar.devkafka.processes import is_ours
from streamcar.devkafka.security import Security, ensure_broker_pki
from streamcar.errors import ToolingError

from support import wait_for


def test_pom_pins_kafka_and_the_log_binding() -> None:
    pom = pom_text()
    assert f"<artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version>" in pom
    assert f"<artifactId>kafka-tools</artifactId><version>{KAFKA_VERSION}</version>" in pom
    assert "log4j-slf4j2-impl" in pom
    assert "log4j-core" in pom
    assert DEPENDENCY_PLUGIN.endswith(":3.8.1")


def test_cache_root_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMCAR_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("STREAMCAR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "streamcar"


def test_free_ports_are_distinct_and_free() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    assert all(port_is_free(p) for p in ports)


def test_a_planned_three_node_layout_is_saved_and_reloaded(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path)
    layout = cluster._plan(3, 0)
    cluster._save_layout(layout)
    again = cluster.layout()
    assert again == layout
    assert [n.node_id for n in layout.nodes] == [1, 2, 3]
    ports = [p for n in layout.nodes for p in (n.port, n.controller_port)]
    assert len(set(ports)) == 6
    assert layout.bootstrap.count("127.0.0.1:") == 3


def test_wrong_node_count_for_an_existing_data_dir_is_refused(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path)
    cluster._save_layout(cluster._plan(1, 0))
    with pytest.raises(ToolingError, match="1-node cluster"):
        cluster.start(nodes=3)


def test_a_pid_is_ours_only_while_it_carries_our_marker(tmp_path: Path) -> None:
    marker = f"-Dstreamcar.node={tmp_path}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        # Popen can return while the kernel is still inside the child's exec (its /proc cmdline still empty)
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        wait_for(lambda: bool(cmdline.read_bytes()), timeout=10, what="the child's exec", interval=0.01)
        assert is_ours(proc.pid, marker)
        assert not is_ours(proc.pid, "-Dstreamcar.node=/elsewhere")
        assert not is_ours(os.getpid(), marker)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not is_ours(proc.pid, marker)


def test_status_of_an_empty_data_dir(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path)
    assert cluster.status() == []
    assert cluster.is_running() is False
    assert cluster.stop() == []


def test_cluster_ids_never_start_with_a_dash() -> None:
    from streamcar.devkafka.processes import cluster_id as _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(not i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)


# --- the SASL_SSL listener ---------------------------------------------------------------------------------------


def test_a_secure_layout_puts_the_sasl_ssl_ports_after_the_client_ports(tmp_path: Path) -> None:
    one = LocalKafka(tmp_path / "one")._plan(1, 9092, "sasl-ssl")
    assert [(n.port, n.secure_port) for n in one.nodes] == [(9092, 9093)]
    assert one.secure_bootstrap == "127.0.0.1:9093"
    three = LocalKafka(tmp_path / "three")._plan(3, 19092, "sasl-ssl")
    assert [(n.port, n.secure_port) for n in three.nodes] == [(19092, 19095), (19093, 19096), (19094, 19097)]
    assert all(n.controller_port not in range(19092, 19098) for n in three.nodes)
    free = LocalKafka(tmp_path / "free")._plan(3, 0, "sasl-ssl")
    ports = [p for n in free.nodes for p in (n.port, n.controller_port, n.secure_port)]
    assert len(set(ports)) == 9
    assert LocalKafka(tmp_path / "plain")._plan(1, 0).secure_bootstrap is None


def test_a_secure_layout_keeps_its_user_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path)
    layout = cluster._plan(1, 0, "sasl-ssl")
    cluster._save_layout(layout)
    assert cluster.layout() == layout
    assert layout.security is not None
    assert layout.security.username == "streamcar"
    assert layout.security.ca_file == str(tmp_path.resolve() / "tls" / "ca.pem")
    assert len(layout.security.password) >= 20
    assert (tmp_path / "layout.json").stat().st_mode & 0o777 == 0o600
    assert LocalKafka(tmp_path / "other")._plan(1, 0, "sasl-ssl").security != layout.security  # a new password


def test_the_security_of_an_existing_data_dir_cannot_change(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path)
    cluster._save_layout(cluster._plan(1, 0))
    with pytest.raises(ToolingError, match="created with --security plaintext"):
        cluster.start(security="sasl-ssl")
    with pytest.raises(ToolingError, match="--security must be one of plaintext, sasl-ssl"):
        cluster.start(security="ssl")


def test_the_broker_side_of_scram_over_tls(tmp_path: Path) -> None:
    security = Security("dev", "pw-1_x", str(tmp_path / "ca.pem"))
    assert security.format_args() == ["--add-scram", "SCRAM-SHA-512=[name=dev,password=pw-1_x]"]
    props = security.listener_properties(tmp_path)
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"].endswith("ScramLoginModule required;")
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(tmp_path / "broker.pem")
    assert security.client_config()["sasl.password"] == "pw-1_x"
    assert set(security.kafka_security()) == {"protocol", "sasl_mechanism", "username", "password", "ca_file"}


def test_the_self_made_ca_signs_a_loopback_certificate_once(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    pki = ensure_broker_pki(tls)
    keystore = pki.keystore.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8: what Kafka's PEM keystore reads
    assert keystore.count("-----BEGIN CERTIFICATE-----") == 2  # the broker's, then the CA's
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki.ca), str(pki.keystore)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    names = subprocess.run(
        ["openssl", "x509", "-in", str(pki.keystore), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in names
    assert "DNS:localhost" in names
    assert {p.name: p.stat().st_mode & 0o777 for p in (pki.keystore, tls / "ca.key")} == {
        "broker.pem": 0o600,
        "ca.key": 0o600,
    }
    assert ensure_broker_pki(tls) == pki
    assert pki.keystore.read_text() == keystore  # still valid: not made again


def test_kafka_start_takes_a_security_mode() -> None:
    from streamcar.cli import build_parser

    assert build_parser().parse_args(["kafka", "start", "--security", "sasl-ssl"]).security == "sasl-ssl"
    assert build_parser().parse_args(["kafka", "start"]).security is None


def test_start_and_status_print_a_kafka_section_that_streamcar_accepts(tmp_path: Path) -> None:
    import yaml

    from streamcar.config import KafkaConfig
    from streamcar.devkafka.cli import _secure_lines

    cluster = LocalKafka(tmp_path)
    layout = cluster._plan(1, 0, "sasl-ssl")
    assert layout.security is not None
    first, *snippet = _secure_lines(cluster, layout)
    assert str(tmp_path.resolve() / "layout.json") in first
    kafka = KafkaConfig.model_validate(yaml.safe_load("\n".join(snippet))["kafka"])
    assert kafka.client_config() == {
        "bootstrap.servers": layout.secure_bootstrap,
        "client.id": "streamcar",
        **layout.security.client_config(),
    }
    assert _secure_lines(cluster, cluster._plan(1, 0)) == []
