"""`streamcar kafka start|status|stop` as a person runs it: a separate process, twice in a row, nothing left over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamcar.devkafka import LocalKafka, jars_dir

pytestmark = pytest.mark.integration


def streamcar(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamcar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def jvms_of(data_dir: Path) -> list[str]:
    """Command lines of live processes that carry this data dir's node marker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if f"-Dstreamcar.node={data_dir}" in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_start_status_stop_twice_leaves_no_jvm(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    try:
        for round_ in range(2):
            started = streamcar("kafka", "start", "--data-dir", str(data_dir), "--port", "0")
            assert started.returncode == 0, started.stderr
            assert "running" in started.stdout

            status = streamcar("kafka", "status", "--data-dir", str(data_dir), "--json")
            assert status.returncode == 0, status.stderr
            report = json.loads(status.stdout)
            assert report["running"] is True
            assert [n["answering"] for n in report["nodes"]] == [True]
            assert len(jvms_of(data_dir.resolve())) == 1

            again = streamcar("kafka", "start", "--data-dir", str(data_dir))
            assert again.returncode == 0
            assert "already running" in again.stdout, f"round {round_}: {again.stdout}"

            stopped = streamcar("kafka", "stop", "--data-dir", str(data_dir))
            assert stopped.returncode == 0, stopped.stderr
            assert "stopped Kafka node(s) 1" in stopped.stdout
            assert jvms_of(data_dir.resolve()) == []

            status = streamcar("kafka", "status", "--data-dir", str(data_dir), "--json")
            assert status.returncode == 1
            assert json.loads(status.stdout)["running"] is False
    finally:
        LocalKafka(data_dir).stop(timeout=10)
    assert jvms_of(data_dir.resolve()) == []


def test_stop_when_nothing_runs_is_a_no_op(tmp_path: Path) -> None:
    result = streamcar("kafka", "stop", "--data-dir", str(tmp_path))
    assert result.returncode == 0
    assert "not running" in result.stdout


def _env_without(tool_dir_filter: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    # keep nothing on PATH: python runs by absolute path, java and mvn are then missing
    env["PATH"] = "/nonexistent"
    env.update(extra)
    return env


def test_missing_maven_is_one_clear_line(tmp_path: Path) -> None:
    env = _env_without(None, STREAMCAR_CACHE_DIR=str(tmp_path / "empty-cache"))
    result = streamcar("kafka", "start", "--data-dir", str(tmp_path / "k"), "--port", "0", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Maven" in lines[0]
    assert "install" in lines[0]


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    assert (jars_dir() / ".complete").exists(), "the session broker fetched the jars already"
    result = streamcar("kafka", "start", "--data-dir", str(tmp_path / "k"), "--port", "0", env=_env_without(None))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Java 17+" in lines[0]
    assert "JAVA_HOME" in lines[0]


def test_port_in_use_is_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = streamcar("kafka", "start", "--data-dir", str(tmp_path / "k"), "--port", str(port))
    assert result.returncode == 1
    assert f"port {port}" in result.stderr
    assert jvms_of((tmp_path / "k").resolve()) == []
