"""The JVMs of a local cluster as processes: launched to die with their parent, signalled only while their
command line still holds their node's marker (a pid can be reused), reaped so they never linger as zombies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

# Popen handles of the JVMs this process launched, so a killed child is reaped instead of left a zombie
# that would still look alive to os.kill(pid, 0).
children: dict[int, subprocess.Popen[bytes]] = {}


def cluster_id() -> str:
    # StorageTool random-uuid prints a base64url of 16 random bytes; so do we, without a JVM round trip. Like
    # Kafka's Uuid.randomUuid, never one starting with "-": the format command would read it as an option.
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def is_ours(pid: int, marker: str) -> bool:
    child = children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del children[pid]
            return False
        # launched by this process and not ended: ours, whatever /proc says now (the java launcher execs
        # itself again at start, and a cmdline read meanwhile lacks the marker: a loaded machine saw a second
        # `kafka start` call a JVM that went on to serve "exited during start-up")
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # the state letter follows the parenthesised command name; a zombie is not running
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker.encode() in cmdline


def wait_gone(pids: dict[int, int], pid_of: Callable[[int], int | None], timeout: float) -> bool:
    """Whether every node's process in ``pids`` (node id -> pid) ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(pid_of(node_id) != pid for node_id, pid in pids.items()):
            return True
        time.sleep(0.1)
    return all(pid_of(node_id) != pid for node_id, pid in pids.items())
