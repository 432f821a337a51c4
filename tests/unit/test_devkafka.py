"""Pure parts of the local Kafka tooling: the Maven project, ports, layouts, process identity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamcar.devkafka import LocalKafka, free_ports
from streamcar.devkafka.cluster import _is_our_process, port_is_free
from streamcar.devkafka.fetch import DEPENDENCY_PLUGIN, KAFKA_VERSION, cache_root, pom_text
from streamcar.errors import ToolingError


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
        assert _is_our_process(proc.pid, marker)
        assert not _is_our_process(proc.pid, "-Dstreamcar.node=/elsewhere")
        assert not _is_our_process(os.getpid(), marker)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert not _is_our_process(proc.pid, marker)


def test_status_of_an_empty_data_dir(tmp_path: Path) -> None:
    cluster = LocalKafka(tmp_path)
    assert cluster.status() == []
    assert cluster.is_running() is False
    assert cluster.stop() == []


def test_cluster_ids_never_start_with_a_dash() -> None:
    from streamcar.devkafka.cluster import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(not i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
