"""The soak's processes: the sidecars (``streamcar run``, one per member name) and the service.

Each is started from the main thread to die with the soak (PR_SET_PDEATHSIG, which the kernel ties to the
thread that forked it), in a session of its own (a Ctrl-C at the terminal reaches the soak alone, which then
stops everything in order), with SIGINT and SIGTERM at their defaults (a soak started as a background job
inherits SIGINT ignored, and an ignored signal stays ignored across exec).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from streamcar import tether

ROOT = Path(__file__).resolve().parents[1]


def spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return tether.popen(  # dies with the soak, SIGINT and SIGTERM at their defaults
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )


def tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


class Process:
    """A child that can be frozen (SIGSTOP), thawed, terminated and killed; ``frozen`` is its own record."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def freeze(self) -> None:
        if self.alive:
            self._send(signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._send(signal.SIGCONT)
            self.frozen = False

    def terminate(self) -> None:
        self.thaw()
        self._send(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL (a frozen process too) and reap it."""
        if self.alive and self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        self.frozen = False

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it did not end within ``timeout``."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _send(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)  # nothing once it has been reaped: a pid reused meanwhile is not hit


class Member(Process):
    """One ``streamcar run`` of the soak's groups under a fixed name, its ``client_id``: started again, it takes
    the same transactional ids and fences the producers it left behind."""

    def __init__(self, name: str, config: dict[str, Any], workdir: Path) -> None:
        super().__init__(workdir / f"member-{name}.log")
        self.name = name
        self.config_file = workdir / f"member-{name}.yaml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.proc = spawn([sys.executable, "-m", "streamcar", "run", "-c", str(self.config_file)], self.log)
        self.frozen = False


class Service(Process):
    """The soak's service (soak/service.py) in a process of its own. A latency set while it is frozen is sent
    once it is thawed: a request to a frozen process would only wait out its timeout."""

    def __init__(self, workdir: Path, settings: dict[str, Any]) -> None:
        super().__init__(workdir / "service.log")
        self._settings = workdir / "service.json"
        self._settings.write_text(json.dumps(settings))
        self._port_file = workdir / "service.port"
        self._port = 0
        self._pending: tuple[float, float] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self, timeout: float = 30.0) -> None:
        self.proc = spawn([sys.executable, "-m", "soak.service", str(self._settings), str(self._port_file)], self.log)
        deadline = time.monotonic() + timeout
        while not self._port_file.exists():
            if not self.alive or time.monotonic() > deadline:
                raise RuntimeError(f"the soak's service did not start: {tail(self.log)}")
            time.sleep(0.05)
        self._port = int(self._port_file.read_text())

    def thaw(self) -> None:
        super().thaw()
        if self._pending is not None:
            latency, self._pending = self._pending, None
            self.set_latency(*latency)

    def set_latency(self, low: float, high: float) -> bool:
        """Whether the service took it (or will, once thawed)."""
        if self.frozen:
            self._pending = (low, high)
            return True
        return bool(self._ask("/control", {"latency": [low, high]}))

    def stats(self) -> dict[str, Any]:
        """What it answered so far; empty while it cannot say (frozen)."""
        return {} if self.frozen else self._ask("/stats")

    def _ask(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return dict(json.loads(answer.read()))
        except (OSError, urllib.error.URLError, ValueError):
            return {}
