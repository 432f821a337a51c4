"""A tethered process dies with the thread that started it, with SIGINT and SIGTERM at their defaults, no Python
running between fork and exec, and :func:`popen` returning once the command runs (streamcar.tether)."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

from streamcar import tether


def _ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn line")


def _program(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def test_popen_returns_once_the_command_runs() -> None:
    child = tether.popen(["sleep", "60"])
    try:
        assert _program(child.pid).endswith("sleep")  # not the tether any more
    finally:
        child.kill()
        child.wait(10)


def test_a_tethered_process_dies_when_the_thread_that_started_it_ends() -> None:
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(tether.popen(["sleep", "60"])))
    thread.start()
    thread.join()
    (child,) = started
    try:
        assert child.wait(10) == -signal.SIGKILL  # the thread that forked it ended
    finally:
        child.kill()


def test_signals_the_parent_ignores_are_back_at_their_defaults() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's, inherited
    try:
        child = tether.popen(["sleep", "60"])
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert _ignored_signals(child.pid) & ((1 << 1) | (1 << 14)) == 0  # SIGINT (2), SIGTERM (15): bits 1, 14
        child.send_signal(signal.SIGINT)  # at once: it reaches the command, not the tether
        assert child.wait(10) == -signal.SIGINT
    finally:
        child.kill()


def test_a_command_that_cannot_be_run_ends_the_tether() -> None:
    child = tether.popen(["/nonexistent/program"], stderr=subprocess.DEVNULL)
    assert child.wait(10) == 1
