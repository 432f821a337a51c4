"""The CLI's contract: every DESIGN.md command is listed, bad usage is one line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

import streamcar
from streamcar.cli import main

COMMANDS = ["run", "check", "schema", "offsets", "replay", "dlq", "tail", "produce", "kafka"]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out


@pytest.mark.parametrize(
    ("group", "subcommands"),
    [("kafka", ["start", "stop", "status"]), ("offsets", ["show", "reset"]), ("dlq", ["show", "redrive"])],
)
def test_help_lists_subcommands(group: str, subcommands: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([group, "--help"])
    out = capsys.readouterr().out
    for sub in subcommands:
        assert sub in out


@pytest.mark.parametrize(
    "argv",
    [
        ["bogus"],
        [],
        ["kafka", "start", "--nodes", "2"],
        ["kafka", "start", "--port", "abc"],
        ["offsets", "reset", "--group", "g"],
        ["tail"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("streamcar: ")
    assert "--help" in lines[0]
    assert "Traceback" not in captured.err


def test_python_dash_m_matches_the_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamcar", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"streamcar {streamcar.__version__}"


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from streamcar.devkafka import cli as devkafka_cli

    def boom(_args: object) -> int:
        raise RuntimeError("surprise")

    monkeypatch.setattr(devkafka_cli, "status", boom)
    monkeypatch.delenv("STREAMCAR_DEBUG", raising=False)
    assert main(["kafka", "status"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "streamcar: internal error: RuntimeError: surprise (STREAMCAR_DEBUG=1 shows the traceback)"
    ]


def test_run_with_a_bad_config_is_exit_2_without_a_traceback(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kafka: {bootstrap_servers: 127.0.0.1:9092}\n"
        "pipelines:\n  p:\n    consume: {topics: [a], group: g}\n    call: {url: http://x/y, timeout: 5}\n"
    )
    assert main(["run", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pipelines.p.call.timeout" in err
    assert "Traceback" not in err
    assert main(["run", "-c", str(tmp_path / "missing.yaml")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
