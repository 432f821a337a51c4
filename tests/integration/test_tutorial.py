"""docs/tutorial.md runs as written: its files are saved as the page says, its ``sh`` blocks run in order in one
shell (``bash -e``: a failing command fails the test), on a broker the page's own first command starts.

The page's commands take their ports from the environment where it says so; the test sets free ones and a
data directory of its own, and changes nothing else. What the page shows of ``tail`` is checked against what
its commands printed, and the last ``tail`` (every reply) against the invariant: each word has its replies, in
per-key order.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from streamcar.devkafka import LocalKafka
from streamcar.devkafka.layout import free_ports

PAGE = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
_SAVE = re.compile(r"Save this as `([^`]+)`:\s*$")
_TAILED = re.compile(r"^(\d+):(\d+)  key=(\S+)  (\S+)$", re.M)


def tutorial() -> tuple[dict[str, str], str, list[str]]:
    """The files the page has saved, its shell commands in order, and the ``text`` blocks it shows."""
    text = PAGE.read_text(encoding="utf-8")
    files: dict[str, str] = {}
    commands: list[str] = []
    shown: list[str] = []
    for block in _BLOCK.finditer(text):
        language, body = block[1], block[2]
        before = text[: block.start()].rstrip().splitlines()[-1]
        if (save := _SAVE.search(before)) is not None:
            files[save[1]] = body
        elif language == "sh":
            commands.append(body)
        elif language == "text":
            shown.append(body)
    return files, "".join(commands), shown


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    files, script, shown = tutorial()
    assert set(files) == {"service.py", "streamcar.yaml"}
    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    (tmp_path / "tutorial.sh").write_text(script, encoding="utf-8")

    kafka_port, service_port, admin_port = free_ports(3)
    data_dir = tmp_path / "kafka"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMCAR_", "KAFKA_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}",
        STREAMCAR_KAFKA_PORT=str(kafka_port),
        STREAMCAR_KAFKA_DIR=str(data_dir),
        PORT=str(service_port),
        ADMIN_PORT=str(admin_port),
    )
    shell = subprocess.Popen(
        ["bash", "-e", "tutorial.sh"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = shell.communicate(timeout=300)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.communicate()
        with_leftovers = subprocess.run(["pgrep", "-s", str(shell.pid)], capture_output=True, text=True).stdout
        if with_leftovers.strip():
            os.killpg(shell.pid, signal.SIGKILL)
        LocalKafka(data_dir).stop(timeout=20)  # a no-op once the page's own `kafka stop` ran
    assert shell.returncode == 0, output[-6000:]
    assert with_leftovers.strip() == "", f"the page's clean-up left processes behind:\n{with_leftovers}"
    assert "Kafka not running" not in output.splitlines()[-1]
    assert output.splitlines()[-1].startswith("stopped Kafka node(s)"), output[-2000:]

    # what the page shows of tail is what tail printed (across partitions, in any order)
    printed = set(output.splitlines())
    for block in shown:
        lines = [line for line in block.splitlines() if _TAILED.fullmatch(line)]
        assert set(lines) <= printed, f"the page shows {lines}, tail printed:\n{output[-6000:]}"

    # the last tail read every reply: each input has its outcome, in per-key order
    replies = [m.groups() for m in _TAILED.finditer(output.rpartition("reset consumer group shouter")[2])]
    assert len(replies) == 9, output[-4000:]
    by_key: dict[str, list[tuple[int, str]]] = defaultdict(list)
    partition_of: dict[str, str] = {}
    for partition, offset, key, value in replies:
        assert partition_of.setdefault(key, partition) == partition  # one key, one partition
        by_key[key].append((int(offset), value))
    in_order = {key: [value for _, value in sorted(values)] for key, values in by_key.items()}
    # ann and bob: the first run, then the replay; cat: r2d2 redriven, then the replay of both its records
    assert in_order == {
        "ann": ["HELLO", "AGAIN", "HELLO", "AGAIN"],
        "bob": ["WORLD", "WORLD"],
        "cat": ["R2D2", "R2D2", "R2D2"],
    }
    assert "1 dead letter in words-dlq: rejected 1" in output
    assert "reset consumer group shouter on 3 partitions of words" in output
