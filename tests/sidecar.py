"""Running the sidecar in the test process, against the session broker and a :class:`TestService`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from streamcar import tether
from streamcar.app import Sidecar
from streamcar.config import Config

_ADMIN = re.compile(r"admin endpoints on (http://[0-9.]+:\d+)")


def make_config(bootstrap: str, pipelines: dict[str, dict[str, Any]], **kafka: Any) -> Config:
    return Config.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, **kafka}, "admin": {"listen": "127.0.0.1:0"}, "pipelines": pipelines}
    )


def pipeline(
    topic: str | list[str],
    group: str,
    url: str,
    *,
    publish: str | None = None,
    dead_letter: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "consume": {"topics": [topic] if isinstance(topic, str) else topic, "group": group},
        "call": {"url": url, "timeout": "5s"},
        "retry": {"attempts": 3, "initial_backoff": "20ms", "max_backoff": "200ms"},
        "commit_interval": "200ms",
        "shutdown_timeout": "10s",
    }
    if publish:
        spec["publish"] = {"topic": publish}
    if dead_letter:
        spec["dead_letter"] = {"topic": dead_letter}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@contextlib.asynccontextmanager
async def running(config: Config, *, assigned_within: float = 30.0) -> AsyncIterator[Sidecar]:
    """Run the sidecar until the block ends (then SIGTERM-like drain); waits until every pipeline has partitions."""
    stop = asyncio.Event()
    sidecar = Sidecar(config)
    task = asyncio.create_task(sidecar.run(stop))
    try:
        async with asyncio.timeout(assigned_within):
            await sidecar.started.wait()
            while not all(p.assigned for p in sidecar.pipelines.values()):
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield sidecar
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await task


class SidecarProcess:
    """``streamcar run`` as a separate process, as it runs in production (and as SIGKILL can hit it)."""

    def __init__(
        self, config: Config, workdir: Path, *, env: dict[str, str] | None = None, wrapper: list[str] | None = None
    ) -> None:
        self.env = None if env is None else {**os.environ, **env}
        self.wrapper = wrapper or []  # e.g. ["prlimit", "--nofile=1100", "--"]
        self.config_file = workdir / "streamcar.yaml"
        self.config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))
        self.log_file = workdir / "sidecar.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SidecarProcess:
        log = self.log_file.open("ab")
        self.proc = tether.popen(  # a test process that crashes must not leave sidecars behind
            [*self.wrapper, sys.executable, "-m", "streamcar", "run", "-c", str(self.config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        log.close()
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> list[str]:
        return self.log_file.read_text(errors="replace").splitlines()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin_url(self, timeout: float = 30.0) -> str:
        """The admin server's base URL, as the sidecar logged it when it started (admin.listen port 0)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _ADMIN.search(self.log_file.read_text(errors="replace"))
            if found is not None:
                return found[1]
            if not self.alive:
                raise AssertionError(f"the sidecar exited before serving: {self.log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"no admin endpoints after {timeout}s: {self.log_tail()}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET an admin endpoint: status and body."""
        try:
            with urllib.request.urlopen(self.admin_url() + path, timeout=timeout) as answer:
                return int(answer.status), bytes(answer.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        code, body = self.get("/status", timeout)
        assert code == 200, (code, body[:200])
        return dict(json.loads(body))

    def open_files(self) -> int:
        """How many file descriptors the process holds now."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")


class SidecarFactory(Protocol):
    """The ``sidecar_factory`` fixture: starts ``streamcar run`` with a config; killed when the test ends."""

    def __call__(self, config: Config, *, wrapper: list[str] | None = None) -> SidecarProcess: ...


def crash_repeatedly(
    config: Config, workdir: Path, calls: Callable[[], int], *, total: int, kills: int, timeout: float = 60
) -> None:
    """Run ``streamcar run`` and SIGKILL it ``kills`` times (no drain, no final commit), each time once the service
    got ``total / (kills + 2)`` more calls (``calls()``), so that every kill lands mid-run with input left."""
    for round_ in range(kills):
        process = SidecarProcess(config, workdir).start()
        target = calls() + total // (kills + 2)
        try:
            deadline = time.monotonic() + timeout
            while calls() < target:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no progress before kill {round_ + 1} within {timeout}s: {process.log_tail()}")
                time.sleep(0.1)
        finally:
            process.kill()
    assert calls() < total, "the kills should land while input is left"
