"""A tethered process dies with the thread that started it, with SIGINT and SIGTERM at their defaults, and no
Python runs between fork and exec (streamcar.tether)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from streamcar.tether import tethered


def _ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn line")


def _wait_exec(pid: int, program: str) -> None:
    deadline = time.monotonic() + 10
    while program not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[0]:
        assert time.monotonic() < deadline, "the tethered command was not executed within 10 s"
        time.sleep(0.01)


def test_a_tethered_process_dies_when_the_thread_that_started_it_ends() -> None:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        started.append(subprocess.Popen(tethered(["sleep", "60"])))
        _wait_exec(started[0].pid, "sleep")  # the tether set the signal before it executed the command

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (child,) = started
    try:
        assert child.wait(10) == -9  # SIGKILL: the thread that forked it ended
    finally:
        child.kill()


def test_signals_the_parent_ignores_are_back_at_their_defaults() -> None:
    script = (
        "import signal, subprocess, sys, time;"
        "signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "from streamcar.tether import tethered;"
        "child = subprocess.Popen(tethered(['sleep', '30'])); print(child.pid, flush=True); time.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        _wait_exec(pid, "sleep")
        assert _ignored_signals(pid) & ((1 << 1) | (1 << 14)) == 0  # SIGINT (2) and SIGTERM (15), bits 1 and 14
    finally:
        parent.kill()  # the sleep goes with it
        parent.wait(10)
