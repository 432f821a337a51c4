"""Ctrl-C ends a ``streamcar`` tool at any moment with exit 130 and the one line ``streamcar: interrupted``.

Before: a SIGINT in the first ~0.7 s of a command (while the package imported the engine) printed a
``KeyboardInterrupt`` traceback of 15 to 40 lines and the process died of the signal (-2). The package now
imports its public names on first use, the parser is built inside the command's error handling, and a SIGINT
that a library reported as its own exception (pydantic-core's import panic) is still "interrupted"; only a
signal during the interpreter's own start (site, ``.pth`` files: about 15 ms on a quiet machine) comes before any
code of ours. Such a signal is the interpreter's, so these tests send theirs once the tool runs.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration


def started(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the command runs its tool: librdkafka's Python extension is loaded (it imports it first)."""
    deadline = time.monotonic() + 30
    maps = Path(f"/proc/{proc.pid}/maps")
    while "confluent_kafka" not in maps.read_text():
        assert proc.poll() is None, f"exited with {proc.returncode} before running its tool"
        assert time.monotonic() < deadline, "the tool did not start within 30 s"
        time.sleep(0.01)


def interrupt(proc: subprocess.Popen[bytes], when: str) -> None:
    """Send SIGINT: the command ends within 2 s with exit 130 and one line (librdkafka's own lines aside)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    took = time.monotonic() - sent
    assert proc.stderr is not None
    lines = [line for line in proc.stderr.read().decode().splitlines() if not line.startswith("%")]
    print(f"SIGINT {when} -> exit {code} in {took:.2f}s: {lines}")
    assert (code, lines) == (130, ["streamcar: interrupted"])
    assert took < 2.0


@contextlib.contextmanager
def command(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcar", *args],
        stdin=subprocess.PIPE,  # held open: produce waits for lines
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("after", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("tool", ["tail", "produce"])
def test_ctrl_c_while_a_tool_starts(kafka: KafkaHandle, topic_factory: TopicFactory, tool: str, after: float) -> None:
    """The signal lands while the tool imports its modules (pydantic, the config) and connects."""
    topic = topic_factory(1)
    with command(tool, "--topic", topic, "-b", kafka.bootstrap) as proc:
        started(proc)
        time.sleep(after)  # the moment of the Ctrl-C within the start is what varies, not a wait for an event
        interrupt(proc, f"{after}s into {tool}'s start")


def test_ctrl_c_while_tail_follows(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    topic = topic_factory(1)
    with command("tail", "--topic", topic, "-b", kafka.bootstrap) as proc:
        produce_records(kafka, topic, [(b"k", b"v")])
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"0:0  key=k  v\n"  # it reads, and waits for more
        interrupt(proc, "while tail follows")


def test_ctrl_c_while_produce_reads_its_input(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    topic = topic_factory(1)
    with command("produce", "--topic", topic, "-b", kafka.bootstrap) as proc:
        assert proc.stdin is not None
        proc.stdin.write(b"first\n")
        proc.stdin.flush()
        assert len(read_topic(kafka, topic, expect=1, timeout=30)) == 1  # it produced, and waits for more
        interrupt(proc, "while produce reads its input")
