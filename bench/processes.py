"""The processes a bench run starts (services, sidecars, Kafka's perf tools, py-spy) and its bounded waits.

A process's output goes to a file in the run's directory, not to /dev/null, and the process is watched: when one
exits while the bench waits on it, the bench fails at once with its exit code and the tail of that file. Every
wait has a deadline and, when it runs out, says what it waited for. (Issue 29: an echo service that died at
import left the bench waiting forever, and silently, on a sidecar whose circuit had opened.)

Children run from the checkout's root with its ``src/`` first on ``PYTHONPATH`` (:func:`python_env`), start with
SIGINT at its default (a bench started in the background inherits it ignored, and py-spy stops on it), and die
with the bench (``PR_SET_PDEATHSIG``), so even a SIGKILLed bench leaves none behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from streamcar import tether

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class BenchFailed(RuntimeError):
    """The run cannot go on: a process exited, a wait ran out, a tool failed. The message says which."""


class Watched(Protocol):
    """Something a wait depends on: ``check`` raises :class:`BenchFailed` once it is gone."""

    def check(self) -> None: ...


def pythonpath() -> str:
    """The bench's own checkout first (its src/ included): a bench run from another checkout (a worktree of an
    older commit) must time that checkout's sidecar, not the one the virtualenv was installed from."""
    parts = (str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", ""))
    return os.pathsep.join(p for p in parts if p)


def python_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": pythonpath(), **extra}


class Child:
    """A process the bench started; its stdout and stderr go to ``log``."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path, *, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = tether.popen(  # dies with the bench's main thread, which starts it
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env if env is not None else python_env(),
                cwd=ROOT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise BenchFailed(f"{self.name} (pid {self.pid}) exited with {code}; its output ends:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(no output: {exc})"
        return "\n".join(f"  | {line}" for line in text.splitlines()[-lines:]) or "  (nothing)"

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """Ends the process with ``sig``, and SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def finish(self, timeout: float) -> str:
        """Waits (at most ``timeout`` seconds) for a tool to end by itself; its output. Fails unless it exits 0."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(timeout=5)
            tail = self.tail()
            raise BenchFailed(f"{self.name} did not finish within {timeout:.0f} s; its output ends:\n{tail}") from None
        if code != 0:
            raise BenchFailed(f"{self.name} exited with {code}; its output ends:\n{self.tail()}")
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def started(
    name: str,
    cmd: Sequence[str],
    logs: Path,
    *,
    env: dict[str, str] | None = None,
    stop: signal.Signals = signal.SIGTERM,
) -> Iterator[Child]:
    """``cmd`` running until the block ends (then ended with ``stop``), its output in a file of ``logs``."""
    child = Child(name, cmd, logs / f"{name.replace(' ', '-')}-{uuid.uuid4().hex[:6]}.log", env=env)
    try:
        yield child
    finally:
        child.stop(stop)


def run_tool(name: str, cmd: Sequence[str], logs: Path, *, timeout: float, env: dict[str, str] | None = None) -> str:
    """Runs a tool to its end (bounded); its output. Fails with the output's tail unless it exits 0."""
    with started(name, cmd, logs, env=env) as tool:
        return tool.finish(timeout)


def check_all(watch: Iterable[Watched]) -> None:
    for watched in watch:
        watched.check()


def wait_until(
    what: str, ready: Callable[[], T | None], *, timeout: float, watch: Iterable[Watched] = (), every: float = 0.05
) -> T:
    """``ready()``'s first answer that is not None (nor False), asked every ``every`` seconds; fails as soon as a
    watched process is gone, or with "no <what>" after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        check_all(watch)
        answer = ready()
        if answer is not None and answer is not False:
            return answer
        if time.monotonic() > deadline:
            raise BenchFailed(f"no {what} within {timeout:.0f} s")
        time.sleep(every)


def http_json(url: str, body: dict[str, Any] | None = None, *, watch: Iterable[Watched] = ()) -> Any:
    """GET ``url`` (POST ``body``, as JSON) and its JSON answer, within 10 s. Where it fails, a watched process that
    exited is the cause to tell, with its output."""
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
            return json.loads(response.read())
    except OSError:
        check_all(watch)
        raise


def listening(child: Child, port: int, timeout: float = 30) -> None:
    """Until ``child`` accepts connections on 127.0.0.1:``port``."""

    def connects() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_until(f"{child.name} listening on 127.0.0.1:{port}", connects, timeout=timeout, watch=[child])
