"""The CLI's contract: every command of docs/cli.md is listed, bad usage is one line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

import streamcar
from streamcar.cli import main
from streamcar.devkafka.layout import free_ports

COMMANDS = ["run", "check", "schema", "offsets", "replay", "dlq", "tail", "produce", "topics", "kafka"]


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command} " in out


@pytest.mark.parametrize(
    ("group", "subcommands"),
    [
        ("kafka", ["start", "stop", "status"]),
        ("offsets", ["show", "reset"]),
        ("dlq", ["show", "redrive"]),
        ("topics", ["create", "list", "describe"]),
    ],
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
        ["offsets", "reset", "--group", "g", "--topic", "t"],  # no target
        ["offsets", "reset", "--group", "g", "--topic", "t", "--to", "earliest", "--shift-by", "-5"],
        ["offsets", "reset", "--group", "g", "--topic", "t", "--to-earliest", "--dry-run", "--execute"],
        ["offsets", "reset", "--group", "g", "--topic", "t", "--shift-by", "ten"],
        ["tail"],
        ["topics"],
        ["topics", "create"],
        ["topics", "create", "t", "--partitions", "many"],
        ["topics", "describe"],
        ["dlq", "redrive", "--topic", "d", "--kind"],
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


@pytest.mark.parametrize(
    "argv",
    [
        ["offsets", "reset", "--group", "g", "--topic", "t", "--to", "-10m"],
        ["offsets", "reset", "--group", "g", "--topic", "t", "--to", "-20"],
        ["offsets", "reset", "--group", "g", "--topic", "t", "--shift-by", "-5"],
        ["offsets", "reset", "--group", "g", "--topic", "t", "--by-duration", "PT10M"],
        ["tail", "--topic", "t", "--from", "-PT1H"],
        ["replay", "--topic", "t", "--from", "-2h", "--until", "-1h", "--to-topic", "u"],
        ["dlq", "redrive", "--topic", "d", "--since", "-1d", "--key", "k1"],
    ],
)
def test_values_that_start_with_a_minus_are_values(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``--to -10m`` as docs/cli.md writes it: argparse alone would take -10m for an unknown option. Parsed
    well, the tool gets as far as Kafka, which is not there."""
    (port,) = free_ports(1)
    assert main([*argv, "-b", f"127.0.0.1:{port}"]) == 1
    assert capsys.readouterr().err.startswith(f"streamcar: cannot reach Kafka at 127.0.0.1:{port}: connection refused")


def test_bad_positions_and_filters_are_refused_before_any_network_call(capsys: pytest.CaptureFixture[str]) -> None:
    # port 9 (discard) is never asked: the usage error comes first
    for argv, message in [
        (["offsets", "reset", "--group", "g", "--topic", "t", "--to", "-10x"], "--to: '-10x' is not earliest"),
        (["tail", "--topic", "t", "--from", "10 min"], "--from: '10 min' is not earliest"),
        (["dlq", "show", "--topic", "d", "--since", "soon"], "--since: 'soon' is not a duration back from now"),
        (["dlq", "redrive", "--topic", "d", "--grep", "x" * 5000], "the filter is too long"),
        (["topics", "create", "t", "--config", "nokey"], "--config 'nokey': expected a topic config KEY=VALUE"),
    ]:
        assert main([*argv, "-b", "127.0.0.1:9"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"streamcar: {message}"), err
        assert len(err.splitlines()) == 1
